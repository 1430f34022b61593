"""geojax.data.balanced: 002 A.1's staged class-balanced sampler and its pipeline / config hooks."""

from __future__ import annotations

import importlib.util
import os
import pickle

import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from geojax import configlib
from geojax.data import balanced, pipeline
from geojax.training import train as train_lib

# 16 records: class 0 has 10, class 1 has 3, class 2 has 1, two records in no class.
LABELS = np.array([0, 1, 0, 0, -1, 2, 0, 1, 0, 0, 0, -1, 1, 0, 0, 0])
MEMBERS = {k: np.flatnonzero(LABELS == k) for k in range(3)}


def _sampler(**kwargs):
    args = dict(seed=7, examples_per_class=2, growth=0.5, cycle_epochs=2, biases=(1.0, 0.5, 0.0))
    args.update(kwargs)
    return balanced.StagedBalancedSampler(LABELS, **args)


# Worked by hand (K = 3 classes; n = (10, 3, 1)):
# epoch 0: cycle 0, j 0, beta 1: S = 2 * 3 = 6, classes equal: (2, 2, 2)
# epoch 1: cycle 0, j 1:          S = 6 * 1.5 = 9: (3, 3, 3)
# epoch 2: cycle 1, j 0, beta .5: S = 6, weights sqrt(10), sqrt(3), 1 = 3.1623, 1.7321, 1;
#          quotas 6 w / 5.8944 = 3.219, 1.763, 1.018 -> floors (3, 1, 1), +1 to the largest
#          remainder (class 1): (3, 2, 1)
# epoch 3: cycle 1, j 1: S = 9, quotas 4.828, 2.645, 1.527 -> (4, 2, 1) + 2: classes 0, 1 -> (5, 3, 1)
# epoch 4: cycle 2, j 0, beta 0: S = 6, quotas 6 (10, 3, 1) / 14 = 4.286, 1.286, 0.429
#          -> (4, 1, 0) + 1 to class 2 -> (4, 1, 1)
# epoch 5: the last cycle runs on, j 1: S = 9, quotas 6.429, 1.929, 0.643 -> (6, 1, 0) + 2:
#          classes 1, 2 -> (6, 2, 1)
SCHEDULE = [(6, (2, 2, 2)), (9, (3, 3, 3)), (6, (3, 2, 1)), (9, (5, 3, 1)), (6, (4, 1, 1)),
            (9, (6, 2, 1))]


def test_epoch_sizes_and_class_counts_follow_the_schedule():
    sampler = _sampler()
    assert sampler.num_classes == 3
    stream = np.array([sampler[g] for g in range(sum(size for size, _ in SCHEDULE))])
    start = 0
    for epoch, (size, counts) in enumerate(SCHEDULE):
        assert sampler.epoch_size(epoch) == size
        assert tuple(sampler.class_counts(epoch)) == counts
        indices = stream[start:start + size]
        np.testing.assert_array_equal(indices, sampler.epoch_indices(epoch))
        assert sampler.locate(start) == (epoch, 0) and sampler.locate(start + size - 1) == (epoch, size - 1)
        assert (LABELS[indices] >= 0).all()  # records in no class are never drawn
        assert tuple(np.bincount(LABELS[indices], minlength=3)) == counts
        # A class's records are cycled: each appears floor or ceil(c_k / n_k) times.
        for k, c in enumerate(counts):
            times = np.array([np.sum(indices == i) for i in MEMBERS[k]])
            assert times.sum() == c
            assert set(times) <= {c // MEMBERS[k].size, -(-c // MEMBERS[k].size)}
        start += size


def test_paper_schedule_starts_at_200_per_class_and_grows_6_percent():
    sampler = balanced.StagedBalancedSampler(LABELS, seed=0)  # the defaults: 002 A.1
    # 200 * 3 = 600, then round(600 * 1.06^j): 636, 674.16 -> 674, 714.61 -> 715, 757.49 -> 757;
    # the second cycle (epoch 5) starts again at 600 with a reduced bias.
    assert [sampler.epoch_size(e) for e in range(6)] == [600, 636, 674, 715, 757, 600]
    assert tuple(sampler.class_counts(0)) == (200, 200, 200)  # all classes equally represented
    assert [sampler.bias(e) for e in (0, 4, 5, 9, 10, 50)] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    # Bias 0: the data's own frequencies, 600 * (10, 3, 1) / 14 = 428.57, 128.57, 42.86
    # -> floors (428, 128, 42) = 598, + 1 to classes 2 and 0 (remainders .857, .571): (429, 128, 43).
    assert tuple(sampler.class_counts(10)) == (429, 128, 43)


def test_stream_is_a_function_of_the_seed():
    a, b = _sampler(), _sampler()
    np.testing.assert_array_equal([a[g] for g in range(45)], [b[g] for g in range(45)])
    # Out-of-order reads (several reader threads) give the same elements.
    assert [b[g] for g in (40, 3, 17, 0)] == [a[g] for g in (40, 3, 17, 0)]
    other = _sampler(seed=8)
    assert [other[g] for g in range(45)] != [a[g] for g in range(45)]


def _records(n):
    rng = np.random.default_rng(0)
    return [dict(image=rng.integers(0, 256, (10, 10, 3), dtype=np.uint8),
                 lat=float(i), lng=float(-i), id=f"img{i:02d}") for i in range(n)]


def _dataset(sampler, **kwargs):
    args = dict(train=True, global_batch_size=4, image_size=8, seed=7, process_index=0,
                process_count=1, sampler=sampler)
    args.update(kwargs)
    return pipeline.make_dataset(pipeline.InMemorySource(_records(LABELS.size)), **args)


def _ids(batches):
    return [list(b["id"]) for b in batches]


def test_pipeline_reads_the_sampler_stream_and_resumes_exactly(tmp_path):
    sampler = _sampler()
    it = iter(_dataset(sampler))
    first = [next(it) for _ in range(3)]
    pipeline.save_iterator_state(it, tmp_path)
    rest = [next(it) for _ in range(8)]  # across several epochs of the schedule
    expected = [f"img{sampler[g]:02d}" for g in range(44)]
    assert sum(_ids(first + rest), []) == expected
    resumed = pipeline.restore_iterator_state(iter(_dataset(_sampler())), tmp_path)
    assert _ids([next(resumed) for _ in range(8)]) == _ids(rest)
    # A different schedule cannot take the saved position.
    with pytest.raises(pipeline.PipelineError, match="sampler"):
        pipeline.restore_iterator_state(iter(_dataset(_sampler(growth=0.25))), tmp_path)


def test_resume_through_the_trainers_orbax_checkpoint(tmp_path):
    """The trainer saves the iterator with grain's Orbax handler next to the model."""
    it = iter(_dataset(_sampler()))
    for _ in range(5):
        next(it)
    manager = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",),
                                    item_handlers={"data": grain.checkpoint.CheckpointHandler()})
    manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = _ids([next(it) for _ in range(6)])
    restored = iter(_dataset(_sampler()))
    manager.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    assert _ids([next(restored) for _ in range(6)]) == expected
    manager.close()


def test_processes_read_their_share_of_every_global_batch():
    one = iter(_dataset(_sampler()))
    shares = [iter(_dataset(_sampler(), process_index=p, process_count=2)) for p in range(2)]
    for _ in range(6):
        assert list(next(one)["id"]) == [i for it in shares for i in next(it)["id"]]


def test_sampler_pickles_for_worker_processes():
    """grain's mp_prefetch workers receive the dataset pickled: the copy (no lock, no cache)
    streams the same indices."""
    sampler = _sampler()
    _ = sampler[20]  # a cached epoch and a lock, which the copy must not carry
    copy = pickle.loads(pickle.dumps(sampler))
    assert [copy[g] for g in range(45)] == [sampler[g] for g in range(45)]


def test_sampler_errors_are_clear():
    with pytest.raises(pipeline.PipelineError, match="endless; num_epochs must be None"):
        _dataset(_sampler(), num_epochs=1)
    with pytest.raises(pipeline.PipelineError, match="draws from 16 records but the source has 5"):
        pipeline.make_dataset(pipeline.InMemorySource(_records(5)), train=True, global_batch_size=4,
                              image_size=8, seed=0, process_index=0, process_count=1,
                              sampler=_sampler())
    with pytest.raises(balanced.SamplerConfigError, match="no training record lies in a class"):
        balanced.StagedBalancedSampler(np.full(4, -1), seed=0)
    with pytest.raises(balanced.SamplerConfigError, match="biases must be"):
        _sampler(biases=(1.0, 1.5))


def _data_config(**updates):
    config = configlib.data_config(runlocal=True)
    config.update(updates)
    return config


class _Halves:
    """A two-class partition: class 0 north of the equator, 1 south."""

    def assign(self, lat, lng):
        del lng
        return (np.asarray(lat) < 0).astype(np.int32)


def test_config_selects_the_sampler():
    coords = (np.array([10.0, 20.0, 30.0, -5.0]), np.zeros(4))
    assert balanced.sampler_for_stage(_data_config(), {"p": _Halves()}, coords, seed=0) is None
    config = _data_config(sampler="staged_balanced")
    config.balanced.update(examples_per_class=3, cycle_epochs=1, biases=(1.0,))
    sampler = balanced.sampler_for_stage(config, {"p": _Halves()}, coords, seed=0)
    assert sampler.describe()["examples_per_class"] == 3 and sampler.num_classes == 2
    assert tuple(sampler.class_counts(0)) == (3, 3)  # 3 north records, 1 south, balanced
    config.balanced.head = "q"
    with pytest.raises(balanced.SamplerConfigError, match=r"head='q' is not a head of this stage \(\['p'\]\)"):
        balanced.sampler_for_stage(config, {"p": _Halves()}, coords, seed=0)


def test_unknown_sampler_names_and_settings_are_refused_before_training():
    with pytest.raises(balanced.SamplerConfigError,
                       match=r"config.data.sampler='balanced'; use one of \('uniform', 'staged_balanced'\)"):
        balanced.check_config(_data_config(sampler="balanced"))
    bad = ml_collections.ConfigDict(dict(sampler="staged_balanced", balanced=dict(cycles=3)))
    with pytest.raises(balanced.SamplerConfigError, match=r"unknown keys \['cycles'\]"):
        balanced.check_config(bad)
    # The trainer's config check (before any data or compute) says the same.
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "planet.py")
    spec = importlib.util.spec_from_file_location("planet_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal")
    train_lib.check_config(config)
    config.data.sampler = "staged-balanced"
    with pytest.raises(train_lib.ConfigError, match="config.data.sampler='staged-balanced'"):
        train_lib.check_config(config)

