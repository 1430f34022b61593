"""Tests for geojax.data.pipeline: order, resume, process slices, bad records, labels, devices."""

import io
import os
import subprocess
import sys
import textwrap

import grain
import numpy as np
import pytest
from PIL import Image

from geojax.data import pipeline
from geojax.partitions.s2_adaptive import build_s2_partition

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _coords(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-70, 70, n), rng.uniform(-180, 180, n)


def _records(n: int, *, size: int = 12, seed: int = 0, encoded: bool = False) -> list[dict]:
    """Records shaped like GeoWorld's (``image``) or the on-disk readers' (``image_bytes``)."""
    lat, lng = _coords(n, seed)
    rng = np.random.default_rng(seed + 1)
    records = []
    for i in range(n):
        image = rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)
        record = dict(lat=float(lat[i]), lng=float(lng[i]), id=f"img{i:04d}", user=f"u{i % 5}",
                      timestamp=1_600_000_000 + i)
        if encoded:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG" if i % 2 else "JPEG")
            record["image_bytes"] = buf.getvalue()
        else:
            record["image"] = image
        records.append(record)
    return records


def _dataset(records, **kwargs):
    args = dict(train=True, global_batch_size=4, image_size=8, seed=42, process_index=0,
                process_count=1)
    args.update(kwargs)
    return pipeline.make_dataset(pipeline.InMemorySource(records), **args)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]), err_msg=key)
            assert np.asarray(x[key]).dtype == np.asarray(y[key]).dtype, key


def _ids(batches):
    return [i for b in batches for i, v in zip(b["id"], b["valid"]) if v]


# ---------------------------------------------------------------------------- resume
@pytest.mark.parametrize("worker_count", [0, 2])
def test_restore_mid_epoch_is_bit_identical(worker_count, tmp_path):
    records = _records(40, encoded=True)
    ds = _dataset(records, num_epochs=3, worker_count=worker_count)
    it = iter(ds)
    _take(it, 3)
    state = it.get_state()
    pipeline.save_iterator_state(it, tmp_path)
    expected = _take(it, 12)  # runs across the epoch boundary (10 batches per epoch)
    it.close()

    fresh = iter(ds)
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 12), expected)
    fresh.close()

    from_file = pipeline.restore_iterator_state(iter(ds), tmp_path)
    _assert_batches_equal(_take(from_file, 12), expected)
    from_file.close()


def test_restore_through_orbax_checkpoint_manager(tmp_path):
    import orbax.checkpoint as ocp

    ds = _dataset(_records(30), num_epochs=None)
    it = iter(ds)
    _take(it, 4)
    manager = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",),
                                    item_handlers={"data": grain.checkpoint.CheckpointHandler()})
    manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = _take(it, 5)

    restored = iter(ds)
    manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    _assert_batches_equal(_take(restored, 5), expected)
    manager.close()


def test_restore_into_a_different_pipeline_is_refused():
    it = iter(_dataset(_records(20)))
    next(it)
    state = it.get_state()
    other = iter(_dataset(_records(20), global_batch_size=8))
    with pytest.raises(pipeline.PipelineError, match="global_batch_size"):
        other.set_state(state)
    # Extending the run (more epochs) keeps the position.
    expected = _take(it, 3)
    longer = iter(_dataset(_records(20), num_epochs=50))
    longer.set_state(state)
    _assert_batches_equal(_take(longer, 3), expected)


# ---------------------------------------------------------------------------- order
def test_every_record_once_per_epoch_and_epochs_reshuffled():
    n = 24
    batches = list(iter(_dataset(_records(n), num_epochs=3)))
    ids = _ids(batches)
    assert len(ids) == 3 * n
    epochs = [ids[k * n:(k + 1) * n] for k in range(3)]
    every = sorted(f"img{i:04d}" for i in range(n))
    for epoch in epochs:
        assert sorted(epoch) == every
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
    assert epochs[0] != every  # shuffled


def test_drop_remainder_and_padding():
    n = 26  # 2 epochs = 52 records = 13 batches of 4: no remainder; 1 epoch leaves 2
    dropped = list(iter(_dataset(_records(n), num_epochs=1)))
    assert len(dropped) == 6
    ids = _ids(dropped)
    assert len(ids) == len(set(ids)) == 24
    padded = list(iter(_dataset(_records(n), num_epochs=1, drop_remainder=False)))
    assert len(padded) == 7
    last = padded[-1]
    assert last["valid"].tolist() == [True, True, False, False]
    assert last["image"].shape == (4, 8, 8, 3) and not last["image"][2:].any()
    assert sorted(_ids(padded)) == sorted(f"img{i:04d}" for i in range(n))


def test_no_shuffle_keeps_source_order_and_seed_changes_order():
    records = _records(12)
    plain = _ids(iter(_dataset(records, num_epochs=1, shuffle=False, train=False)))
    assert plain == [f"img{i:04d}" for i in range(12)]
    a = _ids(iter(_dataset(records, num_epochs=1, seed=1)))
    b = _ids(iter(_dataset(records, num_epochs=1, seed=2)))
    assert a != b and sorted(a) == sorted(b)


def test_process_slices_are_disjoint_and_complete():
    n = 30
    records = _records(n)
    per_process = []
    for process_index in range(4):
        ds = _dataset(records, global_batch_size=8, process_index=process_index, process_count=4,
                      num_epochs=1, drop_remainder=False)
        batches = list(iter(ds))
        assert all(b["image"].shape[0] == 2 for b in batches)  # 8 / 4 per process
        per_process.append(set(_ids(batches)))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not per_process[i] & per_process[j]
    assert set().union(*per_process) == {f"img{i:04d}" for i in range(n)}


def test_configuration_errors():
    with pytest.raises(pipeline.PipelineError, match="multiple of process_count"):
        _dataset(_records(10), global_batch_size=6, process_count=4)
    with pytest.raises(pipeline.PipelineError, match="crops"):
        _dataset(_records(10), train=False, crops="seven")
    with pytest.raises(pipeline.PipelineError, match="no records"):
        _dataset([])
    # Fewer records than processes is fine: the global stream repeats the source.
    assert len(_take(iter(_dataset(_records(2), process_count=4, process_index=3)), 3)) == 3


# ---------------------------------------------------------------------------- contents
def test_batch_fields_and_eval_crops():
    batch = next(iter(_dataset(_records(8), train=False, crops="ten", shuffle=False)))
    assert batch["image"].shape == (4, 10, 8, 8, 3) and batch["image"].dtype == np.uint8
    assert batch["lat"].dtype == np.float64 and batch["lng"].dtype == np.float64
    assert batch["id"].tolist() == ["img0000", "img0001", "img0002", "img0003"]
    assert batch["user"].tolist() == ["u0", "u1", "u2", "u3"]
    assert batch["timestamp"].tolist() == [1_600_000_000 + i for i in range(4)]
    assert batch["num_skipped"] == 0
    np.testing.assert_array_equal(batch["image"][:, 5:], batch["image"][:, :5, :, ::-1])


def test_labels_equal_partition_assign():
    records = _records(200, seed=3)
    lat = np.array([r["lat"] for r in records])
    lng = np.array([r["lng"] for r in records])
    coarse = build_s2_partition(lat, lng, t_max=60, t_min=5, name="coarse")
    fine = build_s2_partition(lat, lng, t_max=15, t_min=5, name="fine")
    expected = {name: dict(zip([r["id"] for r in records], p.assign(lat, lng)))
                for name, p in (("coarse", coarse), ("fine", fine))}
    ds = _dataset(records, partitions={"coarse": coarse, "fine": fine}, num_epochs=1,
                  global_batch_size=16, drop_remainder=False)
    for batch in iter(ds):
        for name, p in (("coarse", coarse), ("fine", fine)):
            labels = batch[f"label_{name}"]
            assert labels.dtype == np.int32
            valid = batch["valid"]
            np.testing.assert_array_equal(labels[valid], p.assign(batch["lat"][valid],
                                                                  batch["lng"][valid]))
            assert (labels[~valid] == -1).all()
            assert [expected[name][i] for i in batch["id"][valid]] == labels[valid].tolist()


# ---------------------------------------------------------------------------- bad records
def _with_bad_records(n: int, bad: dict[int, str]) -> list[dict]:
    records = _records(n, encoded=True)
    for index, kind in bad.items():
        r = records[index]
        if kind == "garbage":
            r["image_bytes"] = b"this is not an image"
        elif kind == "truncated":
            r["image_bytes"] = r["image_bytes"][: len(r["image_bytes"]) // 2]
        elif kind == "nan":
            r["lat"] = float("nan")
        elif kind == "range":
            r["lat"] = 123.0
        elif kind == "missing":
            del r["image_bytes"]
    return records


def test_bad_records_are_dropped_and_counted():
    bad = {3: "garbage", 10: "truncated", 17: "nan", 25: "range", 31: "missing"}
    records = _with_bad_records(40, bad)
    it = iter(_dataset(records, num_epochs=1, max_bad_fraction=0.5))
    batches = list(it)
    ids = _ids(batches)
    bad_ids = {f"img{i:04d}" for i in bad}
    assert not bad_ids & set(ids)
    assert len(ids) == 32 and len(set(ids)) == 32  # 35 good records, 8 full batches of 4
    assert it.stats.num_bad == 5 and sum(int(b["num_skipped"]) for b in batches) <= 5
    assert it.stats.seen >= 37
    by_reason = {reason: set(it.stats.example_ids[reason]) for reason in it.stats.bad}
    assert by_reason["records with undecodable image_bytes"] == {"img0003", "img0010"}
    assert by_reason["records with NaN/infinite coordinates"] == {"img0017"}
    out_of_range = "records with out-of-range coordinates (|lat| > 90 or |lng| > 180)"
    assert by_reason[out_of_range] == {"img0025"}
    assert by_reason["records without image or image_bytes"] == {"img0031"}
    assert "5 of" in it.stats.summary()
    # The counts survive a resume: they are part of the iterator state.
    restored = iter(_dataset(records, num_epochs=1, max_bad_fraction=0.5))
    restored.set_state(it.get_state())
    assert restored.stats == it.stats


def test_too_many_bad_records_raise():
    bad = {i: "garbage" for i in range(0, 200, 10)}  # 10 %
    records = _with_bad_records(200, bad)
    it = iter(_dataset(records, num_epochs=1, max_bad_fraction=0.05))
    message = r"too many bad input records.*records skipped.*e\.g\. img0"
    with pytest.raises(pipeline.PipelineError, match=message):
        list(it)
    # Under the threshold: no error, all counted.
    ok = iter(_dataset(_with_bad_records(200, {5: "nan"}), num_epochs=1))
    assert len(_ids(list(ok))) == 196 and ok.stats.num_bad == 1


def test_only_bad_records_fail_fast():
    records = _with_bad_records(400, {i: "nan" for i in range(400)})
    it = iter(_dataset(records, num_epochs=None))  # endless: must not search forever
    with pytest.raises(pipeline.PipelineError, match=r"100 of 100 records skipped"):
        next(it)


def test_too_many_bad_records_raise_from_workers():
    records = _with_bad_records(200, {i: "nan" for i in range(0, 200, 4)})  # 25 %
    it = iter(_dataset(records, num_epochs=1, worker_count=2))
    with pytest.raises(pipeline.PipelineError, match="too many bad input records"):
        list(it)
    it.close()


# ---------------------------------------------------------------------------- devices
_DEVICE_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np
    from geojax.data import pipeline

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    records = [dict(image=rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), lat=float(i % 80),
                    lng=float(i), id=f"r{i}") for i in range(64)]
    ds = pipeline.make_dataset(pipeline.InMemorySource(records), train=True, global_batch_size=16,
                               image_size=8, seed=0)
    batch = next(iter(ds))
    for axes, shape in ((("data",), (8,)), (("data", "model"), (4, 2))):
        mesh = jax.make_mesh(shape, axes)
        arrays = pipeline.to_global_arrays(batch, mesh)
        assert set(arrays) == {"image", "lat", "lng", "valid"}, sorted(arrays)
        assert arrays["lat"].dtype == np.float32
        for key, arr in arrays.items():
            host = np.asarray(batch[key]).astype(arr.dtype)
            assert arr.shape == host.shape == (16,) + host.shape[1:], (key, arr.shape)
            rows = []
            for shard in arr.addressable_shards:
                index = shard.index[0]
                np.testing.assert_array_equal(np.asarray(shard.data), host[index])
                rows.append((index.start, index.stop))
            distinct = sorted(set(rows))
            assert len(distinct) == shape[0], distinct  # one distinct slice per 'data' device
            assert len(rows) == 8  # replicated over 'model' where there is one
            covered = [i for start, stop in distinct for i in range(start, stop)]
            assert covered == list(range(16)), covered  # disjoint and complete
            np.testing.assert_array_equal(np.asarray(arr), host)
    print("OK")
""")


def test_to_global_arrays_on_8_fake_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run([sys.executable, "-c", _DEVICE_SCRIPT], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize("after_stop", [False, True])
def test_state_saved_at_end_of_stream_resumes_with_more_epochs(after_stop):
    # 10 records, batches of 4, drop_remainder: epoch 1 yields 2 batches (positions 0-7) and
    # drops positions 8-9.  Restored with num_epochs=2, the stream goes on exactly as an
    # uninterrupted 2-epoch run from its third batch: positions 8-11 (epoch 1's remainder,
    # then epoch 2's first two records), 12-15, 16-19 — the same ids, labels and images.
    # The state is saved right after the last batch, or after the StopIteration that read
    # (and dropped) the remainder.
    records = _records(10)
    lat = np.array([r["lat"] for r in records])
    lng = np.array([r["lng"] for r in records])
    partitions = {"s2": build_s2_partition(lat, lng, t_max=3, t_min=1, name="s2")}
    common = dict(global_batch_size=4, seed=3, partitions=partitions)
    uninterrupted = list(iter(_dataset(records, num_epochs=2, **common)))
    assert len(uninterrupted) == 5 and all(b["valid"].all() for b in uninterrupted)
    assert len(np.unique(np.concatenate([b["label_s2"] for b in uninterrupted]))) > 1

    it = iter(_dataset(records, num_epochs=1, **common))
    first = _take(it, 2)
    _assert_batches_equal(first, uninterrupted[:2])
    if after_stop:
        assert next(it, None) is None
    longer = iter(_dataset(records, num_epochs=2, **common))
    longer.set_state(it.get_state())
    rest = list(longer)
    _assert_batches_equal(rest, uninterrupted[2:])
    assert all(b["valid"].all() for b in rest)
    # Batch 2 starts with the two records epoch 1 dropped.
    dropped = {r["id"] for r in records} - set(_ids(first))
    assert set(rest[0]["id"][:2]) == dropped and len(dropped) == 2


# ---------------------------------------------------------------------------- batched reads
class _BatchedSource(pipeline.InMemorySource):
    """InMemorySource with grain's batched read, counting the calls."""

    def __init__(self, records):
        super().__init__(records)
        self.batched_calls = 0

    def _getitems(self, indices):
        self.batched_calls += 1
        return [self[i] for i in indices]


def _geoworld(size=60):
    from geojax.data.geoworld import GeoWorld
    return GeoWorld("train", size=size, seed=0, image_size=16)


@pytest.mark.parametrize("train", [True, False])
def test_batched_reads_equal_per_record_reads(train):
    # The contract: the same records in the same order with the same augmentation draws, so
    # bit-identical batches (chunks only change how records are read).
    world = _geoworld()
    common = dict(train=train, global_batch_size=8, image_size=16, seed=5, process_index=1,
                  process_count=2, num_epochs=2, drop_remainder=False)
    per_record = list(iter(pipeline.make_dataset(world, read_chunk_size=0, **common)))
    batched = list(iter(pipeline.make_dataset(world, read_chunk_size=7, **common)))
    default = list(iter(pipeline.make_dataset(world, **common)))  # GeoWorld: batched by default
    assert len(per_record) == 15  # 60 records x 2 epochs / 8 rows per global batch
    _assert_batches_equal(batched, per_record)
    _assert_batches_equal(default, per_record)


def test_batched_reads_use_getitems_and_keep_bad_record_counts():
    records = _with_bad_records(40, {3: "garbage", 17: "nan"})
    source = _BatchedSource(records)
    it = iter(pipeline.make_dataset(source, train=True, global_batch_size=4, image_size=8,
                                    seed=42, process_index=0, process_count=1, num_epochs=1,
                                    max_bad_fraction=0.5))
    batches = list(it)
    assert source.batched_calls >= 1  # chunks of 128: the whole epoch in one read
    assert len(_ids(batches)) == 36 and it.stats.num_bad == 2
    per_record = list(iter(_dataset(records, num_epochs=1, max_bad_fraction=0.5,
                                    read_chunk_size=0)))
    _assert_batches_equal(batches, per_record)


@pytest.mark.parametrize("worker_count", [0, 2])
def test_restore_in_the_middle_of_a_local_batch_is_bit_identical(worker_count):
    # A bad record pulls the next record forward, so batches stop lining up with the local
    # batches read (one list each): the state is a list plus the offset in it.
    records = _with_bad_records(40, {5: "nan", 22: "garbage", 23: "range"})
    ds = pipeline.make_dataset(_BatchedSource(records), train=True, global_batch_size=4,
                               image_size=8, seed=1, process_index=0, process_count=1,
                               num_epochs=3, read_chunk_size=3, worker_count=worker_count,
                               max_bad_fraction=0.5)
    it = iter(ds)
    _take(it, 4)
    state = it.get_state()
    assert any(s["offset"] for s in _batcher_states(state["pipeline"])), state
    expected = _take(it, 14)  # across the epoch boundary
    it.close()
    fresh = iter(ds)
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 14), expected)
    assert fresh.stats == it.stats
    fresh.close()


def _batcher_states(state):
    """The batch + count stages' states in a pipeline state (one per mp_prefetch worker)."""
    if isinstance(state, dict):
        if "offset" in state and "parent" in state:
            yield state
        for value in state.values():
            yield from _batcher_states(value)
    elif isinstance(state, list):
        for value in state:
            yield from _batcher_states(value)


# ---------------------------------------------------------------------------- multi-host finite streams
def _all_processes(records, process_count, global_batch_size, **kwargs):
    out = []
    for p in range(process_count):
        it = iter(_dataset(records, global_batch_size=global_batch_size, process_index=p,
                           process_count=process_count, **kwargs))
        out.append((list(it), it))
    return out


@pytest.mark.parametrize("read_chunk_size,worker_count", [(0, 0), (3, 0), (0, 2)])
def test_uneven_processes_yield_equal_batch_counts(read_chunk_size, worker_count):
    # 10 records over 3 processes: 4, 3, 3.  Global batch 3 = 1 row per process.
    records = _records(10)
    kwargs = dict(num_epochs=1, drop_remainder=False, read_chunk_size=read_chunk_size,
                  worker_count=worker_count)
    runs = _all_processes(records, 3, 3, **kwargs)
    expected = pipeline.batches_per_process(10, process_count=3, num_epochs=1,
                                            local_batch_size=1, drop_remainder=False,
                                            worker_count=worker_count,
                                            read_chunk_size=read_chunk_size)
    assert [len(batches) for batches, _ in runs] == [expected] * 3
    assert expected >= 4
    ids = [i for batches, _ in runs for i in _ids(batches)]
    assert sorted(ids) == [f"img{i:04d}" for i in range(10)]  # each record exactly once
    for batches, it in runs:
        for b in batches:
            assert b["image"].shape == (1, 8, 8, 3) and b["user"].shape == (1,)
            assert not b["image"][~b["valid"]].any()
        it.close()


def test_uneven_processes_with_bad_records_pad_instead_of_shifting():
    # Global batch 6 = 2 rows per process; bad records become invalid rows, and every
    # process yields ceil(4 / 2) = 2 batches.
    records = _with_bad_records(10, {0: "nan", 4: "garbage", 5: "missing"})
    runs = _all_processes(records, 3, 6, num_epochs=1, drop_remainder=False,
                          max_bad_fraction=1.0)
    assert [len(batches) for batches, _ in runs] == [2, 2, 2]
    ids = [i for batches, _ in runs for i in _ids(batches)]
    assert sorted(ids) == sorted(f"img{i:04d}" for i in range(10) if i not in (0, 4, 5))
    assert sum(it.stats.num_bad for _, it in runs) == 3
    for batches, _ in runs:
        for b in batches:
            assert not b["image"][~b["valid"]].any() and not b["id"][~b["valid"]].any()


def test_uneven_processes_drop_remainder_stop_together():
    # 10 records x 2 epochs = 20 positions, global batch 6: floor(20 / 6) = 3 batches on every
    # process; positions 18 and 19 (process 0's share of the partial 4th batch) are dropped.
    records = _records(10)
    runs = _all_processes(records, 3, 6, num_epochs=2, drop_remainder=True)
    assert [len(batches) for batches, _ in runs] == [3, 3, 3]
    assert all(b["valid"].all() for batches, _ in runs for b in batches)
    # A process run short by bad records pads its last batches instead of ending early.
    # Without shuffling position g is record g % 10; process 1 reads positions 2, 3, 8, 9,
    # 14, 15: records 2, 3, 8, 9, 4, 5, all bad.
    bad = _with_bad_records(10, {i: "nan" for i in (2, 3, 4, 5, 8, 9)})
    runs = _all_processes(bad, 3, 6, num_epochs=2, drop_remainder=True, max_bad_fraction=1.0,
                          shuffle=False)
    assert [len(batches) for batches, _ in runs] == [3, 3, 3]
    assert not any(b["valid"].any() for b in runs[1][0])
    assert runs[1][0][0]["image"].shape == (2, 8, 8, 3)
    # Processes 0 and 2 each hold 4 good records: two full batches, then one of padding.
    for p in (0, 2):
        assert [int(b["valid"].sum()) for b in runs[p][0]] == [2, 2, 0]


def test_bad_records_in_a_dropped_last_batch_are_counted():
    records = _with_bad_records(10, {9: "garbage"})
    it = iter(_dataset(records, num_epochs=1, shuffle=False, max_bad_fraction=0.5))
    batches = list(it)  # [0..3], [4..7]; 8 and the bad 9 are a dropped remainder
    assert len(batches) == 2
    assert it.stats.num_bad == 1
    assert it.stats.example_ids["records with undecodable image_bytes"] == ["img0009"]


# ---------------------------------------------------------------------------- any process count
_PER_BATCH_KEYS = ("num_skipped", "skipped_ids", "skipped_reasons")


def _global_batches(source, process_count, num_batches=None, **kwargs):
    """Every process's batches, concatenated in process order (what
    ``jax.make_array_from_process_local_data`` makes of them), batch by batch."""
    per_process = []
    for p in range(process_count):
        it = iter(pipeline.make_dataset(source, process_index=p, process_count=process_count,
                                        **kwargs))
        per_process.append(list(it) if num_batches is None else _take(it, num_batches))
        it.close()
    assert len({len(batches) for batches in per_process}) == 1  # the same count everywhere
    out = []
    for k in range(len(per_process[0])):
        parts = [batches[k] for batches in per_process]
        keys = [key for key in parts[0] if key not in _PER_BATCH_KEYS]
        assert all(sorted(part) == sorted(parts[0]) for part in parts)
        out.append({key: np.concatenate([part[key] for part in parts]) for key in keys})
    return out


def _assert_same_global_batches(a, b):
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b)):
        assert sorted(x) == sorted(y), k
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"batch {k}, {key}")
            assert x[key].dtype.kind == y[key].dtype.kind, (k, key)


@pytest.fixture(scope="module")
def world300():
    from geojax.data.geoworld import GeoWorld
    world = GeoWorld("train", 300, 0, image_size=16)
    partition = build_s2_partition(np.asarray(world.lat), np.asarray(world.lng), t_max=40,
                                   t_min=5)
    return world, {"s2": partition}


# Endless train stream: 300 records, global batch 12, 30 batches = 1.2 epochs.  Eval: two
# epochs of 300 = 600 positions, global batch 18: 34 batches, the last holding 6 records (all
# of process 0's share for 3 processes, 6 of its 9 rows for 2, and padding elsewhere).
_STREAMS = {
    "train": (dict(train=True, global_batch_size=12), 30),
    "eval": (dict(train=False, global_batch_size=18, num_epochs=2, drop_remainder=False), None),
}


@pytest.fixture(scope="module")
def one_process(world300):
    """The reference: one process, batched reads, no workers."""
    world, partitions = world300
    return {name: _global_batches(world, 1, n, partitions=partitions, image_size=16, seed=7,
                                  **kwargs)
            for name, (kwargs, n) in _STREAMS.items()}


def test_one_process_reference_streams(world300, one_process):
    world, _ = world300
    every = sorted(world[i]["id"] for i in range(300))
    train = one_process["train"]
    ids = [i for b in train[:25] for i in b["id"]]
    assert sorted(ids) == every and ids != every  # one shuffled epoch
    assert all(b["valid"].all() for b in train)
    assert np.mean(np.concatenate([b["label_s2"] for b in train]) >= 0) > 0.5  # labelled
    evaluation = one_process["eval"]
    assert len(evaluation) == 34 == pipeline.batches_per_process(
        300, process_count=3, num_epochs=2, local_batch_size=6, drop_remainder=False)
    last = evaluation[-1]
    assert last["valid"].tolist() == [True] * 6 + [False] * 12
    assert (last["label_s2"][6:] == -1).all() and not last["image"][6:].any()
    ids = [i for b in evaluation for i, v in zip(b["id"], b["valid"]) if v]
    assert sorted(ids[:300]) == sorted(ids[300:]) == every and ids[:300] != ids[300:]


# Every layout's global batches equal the reference: the process count, the read path and
# (without bad records) the worker count do not change them.
@pytest.mark.parametrize("stream", ["train", "eval"])
@pytest.mark.parametrize("read_chunk_size,worker_count,process_counts",
                         [(None, 0, (2, 3)), (0, 0, (1, 2, 3)), (None, 2, (3,))])
def test_global_batches_do_not_depend_on_the_process_count(world300, one_process, stream,
                                                           read_chunk_size, worker_count,
                                                           process_counts):
    world, partitions = world300
    kwargs, n = _STREAMS[stream]
    for process_count in process_counts:
        batches = _global_batches(world, process_count, n, partitions=partitions,
                                  image_size=16, seed=7, read_chunk_size=read_chunk_size,
                                  worker_count=worker_count, **kwargs)
        _assert_same_global_batches(batches, one_process[stream])


def test_bad_records_and_extras_in_eval_do_not_depend_on_the_process_count():
    # Invalid rows for bad records stay in place; string and integer extras are padded with
    # "" and 0 the same way on every layout.
    records = _with_bad_records(23, {2: "garbage", 11: "nan", 20: "missing"})
    source = pipeline.InMemorySource(records)
    common = dict(train=False, global_batch_size=6, image_size=8, seed=3, num_epochs=1,
                  drop_remainder=False, max_bad_fraction=1.0)
    one = _global_batches(source, 1, **common)
    assert len(one) == 4 and sum(int(b["valid"].sum()) for b in one) == 20
    for process_count in (2, 3, 6):
        _assert_same_global_batches(_global_batches(source, process_count, **common), one)


def test_augmentation_depends_on_the_position_not_the_process():
    # The same record at the same stream position gets the same crop on any process layout,
    # and a different one in the next epoch.
    records = _records(8, size=20)
    common = dict(train=True, global_batch_size=8, image_size=8, seed=5, shuffle=False)
    one = _global_batches(pipeline.InMemorySource(records), 1, 2, **common)
    four = _global_batches(pipeline.InMemorySource(records), 4, 2, **common)
    _assert_same_global_batches(four, one)
    assert one[0]["id"].tolist() == one[1]["id"].tolist()  # epoch 2, no shuffle
    assert not np.array_equal(one[0]["image"], one[1]["image"])


def test_multi_process_resume_is_bit_identical(world300, tmp_path):
    world, _ = world300
    ds = pipeline.make_dataset(world, train=True, global_batch_size=12, image_size=16, seed=2,
                               process_index=1, process_count=3)
    it = iter(ds)
    _take(it, 23)
    pipeline.save_iterator_state(it, tmp_path)
    expected = _take(it, 5)  # across the epoch boundary (25 batches per epoch)
    restored = pipeline.restore_iterator_state(iter(ds), tmp_path)
    _assert_batches_equal(_take(restored, 5), expected)
    assert os.path.basename(pipeline.iterator_state_path(tmp_path, 1, 3)) == "process_1-of-3.json"


def test_states_of_the_per_process_order_are_refused():
    it = iter(_dataset(_records(12)))
    state = it.get_state()
    state["version"] = 1
    with pytest.raises(pipeline.PipelineError, match="version 1"):
        iter(_dataset(_records(12))).set_state(state)
