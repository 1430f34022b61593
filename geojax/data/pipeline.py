"""The grain input pipeline: source → decode → augment → label → batch → device.

Use::

    ds = pipeline.make_dataset(source, partitions={"s2": partition}, train=True,
                               global_batch_size=256, image_size=224, seed=0)
    iterator = iter(ds)                                   # a PipelineIterator
    for arrays, batch in pipeline.iterate_global(iterator, mesh):
        ...                                               # arrays: global jax.Arrays

:func:`make_dataset` builds one process's input for a (possibly multi-host) job; each batch
holds ``image`` (uint8), ``lat``, ``lng``, ``id``, ``valid``, one ``label_<name>`` per
partition (−1 where a point is in no class), the records' other fields and the counts of bad
records skipped. What it guarantees:

* **Global batches do not depend on the process layout**: the concatenation of the
  processes' k-th batches is the k-th batch of a one-process run with the same seed and
  global batch size, for any ``process_count``, ``worker_count`` and ``read_chunk_size``
  (always for evaluation streams; for training streams until a bad record is dropped).
* **Exact resume**: ``iterator.get_state()`` / ``set_state()`` — or
  :func:`save_iterator_state` / :func:`restore_iterator_state`, or grain's Orbax
  ``CheckpointHandler`` next to the model — capture the position and the skip counts, and a
  resumed run yields bit-identical batches.
* **Finite streams end together**: with ``num_epochs``, every process yields
  :func:`batches_per_process` batches; evaluation streams (``drop_remainder=False``) pad the
  last batch and put every good record in exactly one ``valid`` row per epoch.
* **Bad records are counted, never fatal alone**: undecodable or missing images and invalid
  coordinates are skipped and counted (``iterator.stats``), and :class:`PipelineError` stops
  the job once more than ``max_bad_fraction`` of the records are bad.

The stages live in :mod:`geojax.data.records` (reading, per-record preparation),
:mod:`geojax.data.batching` (batches, counts, the iterator) and
:mod:`geojax.data.global_arrays` (to the devices), and are re-exported here.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from absl import flags
import grain
import jax
import numpy as np

from geojax import fileio
from geojax.data import augment as augment_lib
from geojax.data.batching import (STATE_VERSION, BatchAndCountDataset, PipelineDataset,
                                  PipelineError, PipelineIterator, PipelineStats, make_batch)
from geojax.data.global_arrays import batch_sharding, iterate_global, to_global_arrays
from geojax.data.records import InMemorySource, LocalBatches, Prepare, Template
from geojax.data.sources.common import DEFAULT_MAX_BAD_FRACTION

__all__ = [
    "DEFAULT_READ_CHUNK_SIZE", "STATE_VERSION", "InMemorySource", "PipelineError",
    "PipelineIterator", "PipelineStats", "batch_sharding", "batches_per_process",
    "ensure_absl_flags_parsed", "iterate_global", "iterator_state_path", "make_dataset",
    "restore_iterator_state", "save_iterator_state", "to_global_arrays",
]

DEFAULT_READ_CHUNK_SIZE = 128


# ---------------------------------------------------------------------------- the builder
def ensure_absl_flags_parsed() -> None:
    """grain's ``mp_prefetch`` reads absl flags; outside ``absl.app.run`` mark them parsed."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if process_count < 1 or not 0 <= process_index < process_count:
        raise PipelineError(f"need 0 <= process_index < process_count, got {process_index} "
                            f"and {process_count}.")
    return int(process_index), int(process_count)


def _derived_seed(seed: int, *salt: int) -> int:
    """A 32-bit seed (grain's shuffle takes < 2**32) mixed from ``seed`` and ``salt``."""
    return int(np.random.SeedSequence([int(seed), *salt]).generate_state(1, np.uint32)[0])


def make_dataset(source: Any, *, partitions: Mapping[str, Any] | None = None, train: bool,
                 global_batch_size: int, image_size: int, seed: int,
                 num_epochs: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, shuffle: bool = True, crops: str = "center",
                 drop_remainder: bool = True, worker_count: int = 0, worker_buffer_size: int = 2,
                 max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION, bad_check_after: int = 100,
                 augment: augment_lib.TrainAugment | None = None, resize: int | None = None,
                 read_options: grain.ReadOptions | None = None,
                 read_chunk_size: int | None = None,
                 sampler: grain.MapDataset | None = None) -> grain.IterDataset:
    """The input pipeline of one process; ``iter()`` of the result is a :class:`PipelineIterator`.

    The stages::

        grain.MapDataset.range(len(source))
          .shuffle(seed)  .repeat(num_epochs)    the global stream: a fresh permutation of the
                                                 whole source each epoch, the same on every
                                                 process
          → LocalBatches                         element k: this process's share of global
                                                 batch k, read (``_getitems`` or record by
                                                 record) and prepared — decode
                                                 ``image_bytes`` / take ``image``, validate
                                                 lat/lng, train augmentation or eval crops
          .to_iter_dataset(read_options)         reader threads (PIL releases the GIL)
          → batch + count                        drop and count bad records, stack the good
                                                 ones, labels ``label_<name>`` =
                                                 partition.assign(lat, lng) once per batch
          .mp_prefetch(worker_count workers)     optional: the stages above in worker processes
          → stats                                in the main process: PipelineStats, the fault
                                                 rule, the batch count of a finite stream

    **Order.**  The global stream is ``len(source) * num_epochs`` positions (endless without
    ``num_epochs``); position ``g = e * len(source) + i`` holds record ``perm_e(i)``, where
    ``perm_e`` is epoch ``e``'s permutation, a function of ``seed`` and ``e`` alone (the
    identity without ``shuffle``).  With ``B = global_batch_size``, ``P = process_count`` and
    ``b = B / P``, global batch ``k`` is the positions ``[k*B, (k+1)*B)`` and process ``p``
    yields, as its ``k``-th batch, the positions ``[k*B + p*b, k*B + (p+1)*b)``.  The train
    augmentation of a position draws from a generator keyed by ``seed`` and counted by ``g``
    (so it differs between epochs and is the same on any process layout).  Hence the
    concatenation of the processes' ``k``-th batches in process order — what
    ``jax.make_array_from_process_local_data`` builds — is the ``k``-th batch of a one-process
    run: the same ids, images, labels and ``valid`` rows.  This holds for training streams
    (endless, or finite with ``drop_remainder``) without bad records and for evaluation
    streams always, with any ``read_chunk_size`` and ``worker_count`` (``mp_prefetch`` hands
    whole local batches to its workers, round robin, and interleaves their batches back in
    order).  A bad record in a training stream pulls later records of the same process (and
    worker) forward, so from there on the batches depend on the process layout.  Batches run
    across epoch boundaries.

    **A batch** (per process, ``b = global_batch_size / process_count`` rows)::

        image          uint8 (b, S, S, 3), or (b, 5|10, S, S, 3) for eval five/ten crops
        lat, lng       float64 (b,) degrees
        id             str (b,)
        valid          bool (b,)   False on padding rows and, in a finite stream without
                                   drop_remainder, on rows of bad records
        label_<name>   int32 (b,)  partition.assign(lat, lng); −1 where the point is in no
                                   class (the loss must mask it) and on padding rows
        <extras>       every other record field (user, timestamp, scene, ...), stacked
        num_skipped    int64 ()    bad records dropped while this batch was filled
        skipped_ids, skipped_reasons   str (num_skipped,)  which records, and why

    Padding rows are zeros (``""`` for strings), ``valid`` False, labels −1.

    **Finite streams** (``num_epochs`` set) yield :func:`batches_per_process` batches on
    every process, so a step on global arrays never waits for a process that ended early:

    * ``drop_remainder=False`` (evaluation): batches are *positional* — batch ``k`` holds the
      positions above; a bad record is an invalid row (``valid`` False, zeros, labels −1)
      instead of pulling the next record forward; the last global batch is padded at its
      end, so a process whose share lies past the end of the stream gets padding rows or an
      all-padding batch.
    * ``drop_remainder=True`` (training on a finite stream): the last, partial global batch
      is dropped (its records are read, and appear only where bad records pulled them
      forward); a process that bad records ran short pads its last batches.

    Endless streams (``num_epochs=None``) always drop bad records and refill.

    **Bad records** (``image_bytes`` that do not decode, a missing image, an image of the
    wrong shape, missing / non-numeric / non-finite coordinates, |lat| > 90 or |lng| > 180)
    are dropped and counted.  The counts travel with the batches (bad records read while
    filling a final batch that is then dropped travel in a row-less element that is
    counted, not yielded), so they reach the main process from ``mp_prefetch`` workers too;
    the main process folds them into ``iterator.stats`` (:class:`PipelineStats`: counts by
    reason, a few example ids each, ``summary()``), logs a warning the first time each reason
    is seen and whenever the bad count doubles, and keeps the stats in the iterator state.
    The fault rule: once at least ``bad_check_after`` records have been seen, more than
    ``max_bad_fraction`` of them bad raises :class:`PipelineError` naming the counts and
    example ids — checked in the main process over all workers, and inside each worker on
    its own share (so a stream of nothing but bad records fails fast).

    **Batched reads.**  A source with grain's batched read ``_getitems(indices) ->
    list[record]`` (GeoWorld renders them vectorised) is read in calls of at most
    ``read_chunk_size`` indices per local batch; ``read_chunk_size=0`` reads record by
    record.  The records and their generators are the same either way, so are the batches.

    **Resume.**  The iterator state depends on ``worker_count`` (each worker reads every
    ``worker_count``-th local batch): resume with the same ``worker_count``, source, batch
    size, seed and process layout as the saved run (``num_epochs`` and ``read_chunk_size``
    may change); :meth:`PipelineIterator.set_state` checks and says which setting differs.

    Args:
      source: a random-access source (``__len__``, ``__getitem__(i) -> dict``, optionally
        ``_getitems(indices) -> list[dict]``)
        whose records hold ``image`` (uint8 HxWx3) or ``image_bytes``, ``lat``,
        ``lng``, ``id`` and optional extras.
      partitions: ``{name: Partition}``; each adds ``label_<name>``.
      train: train augmentation (``augment``) if True, else eval ``crops``.
      global_batch_size: batch size over all processes; must divide by ``process_count``.
      image_size: crop side ``S``.
      seed: shuffle and augmentation seed (the same batches on any process layout).
      num_epochs: passes over the data; ``None`` repeats forever.
      process_index, process_count: this process's share of every global batch; default
        ``jax.process_index()`` / ``jax.process_count()``.
      shuffle: reshuffle every epoch (a different permutation per epoch).
      crops: eval views, ``"center"``, ``"five"`` or ``"ten"``.
      drop_remainder: drop a last partial batch; otherwise pad it (``valid`` marks real rows).
      worker_count: ``mp_prefetch`` worker processes (0: everything in this process).
      worker_buffer_size: batches buffered per worker.
      max_bad_fraction, bad_check_after: the fault rule (``config.data.max_bad_fraction`` in
        training and evaluation).
      augment: train augmentation; default 003's recipe for ``image_size`` (resize ``S*256/224``).
      resize: eval shorter-side resize; default ``round(S * 256 / 224)`` (256 for 224).
      read_options: grain reader threads / buffer (counted in local batches); default 8
        threads in the main process, or ``cpu_count / worker_count`` (2 to 8) per worker.
      read_chunk_size: most records per batched read (``source._getitems``); 0 reads record by
        record; default :data:`DEFAULT_READ_CHUNK_SIZE` when the source has ``_getitems``,
        else 0.  Batches are the same either way.
      sampler: the global stream itself instead of the shuffled, repeated range — an
        endless ``grain.MapDataset`` from stream position to source index with
        ``num_records`` and ``describe()`` (kept in the iterator state), e.g.
        :class:`geojax.data.balanced.StagedBalancedSampler` (002 A.1); ``shuffle`` is then
        the sampler's business and ``num_epochs`` must be None.  Process shares, resume and
        augmentation work on its positions as above.

    Returns:
      a grain ``IterDataset``; ``iter()`` of it is a :class:`PipelineIterator`.
    """
    partitions = dict(partitions or {})
    process_index, process_count = _process_layout(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise PipelineError(f"global_batch_size {global_batch_size} is not a positive multiple "
                            f"of process_count {process_count}.")
    if crops not in augment_lib.CROPS:
        raise PipelineError(f"crops must be one of {augment_lib.CROPS}, got {crops!r}.")
    if num_epochs is not None and num_epochs < 1:
        raise PipelineError(f"num_epochs must be None or >= 1, got {num_epochs}.")
    if worker_count < 0:
        raise PipelineError(f"worker_count must be >= 0, got {worker_count}.")
    if not 0 <= max_bad_fraction <= 1:
        raise PipelineError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}.")
    for name, partition in partitions.items():
        if not callable(getattr(partition, "assign", None)):
            raise PipelineError(f"partition {name!r} has no assign(lat, lng) method.")
    local_batch = global_batch_size // process_count
    resize = resize if resize is not None else int(round(image_size * 256 / 224))
    if train and augment is None:
        augment = augment_lib.TrainAugment(image_size=image_size, resize=resize)
    if train and augment.image_size != image_size:
        raise PipelineError(f"augment.image_size {augment.image_size} != image_size {image_size}.")
    num_records = len(source)
    if num_records < 1:
        raise PipelineError("the source has no records.")
    if read_chunk_size is None:
        batched = callable(getattr(source, "_getitems", None))
        read_chunk_size = DEFAULT_READ_CHUNK_SIZE if batched else 0
    if read_chunk_size < 0:
        raise PipelineError(f"read_chunk_size must be >= 0, got {read_chunk_size}.")

    prepare = Prepare(train=train, augment=augment, image_size=image_size, resize=resize,
                      crops=crops)
    if sampler is not None:
        if num_epochs is not None:
            raise PipelineError(f"a sampler's stream is endless; num_epochs must be None, got "
                                f"{num_epochs}.")
        if sampler.num_records != num_records:
            raise PipelineError(f"the sampler draws from {sampler.num_records} records but the "
                                f"source has {num_records}.")
        stream = sampler
    else:
        stream = grain.MapDataset.range(num_records)  # the global stream: layout-independent
        if shuffle:
            stream = stream.shuffle(seed=_derived_seed(seed, 0))
        stream = stream.repeat(num_epochs)
    ds = LocalBatches(stream, source, prepare, seed=seed, process_index=process_index,
                      local_batch=local_batch, global_batch=global_batch_size,
                      read_chunk_size=read_chunk_size)
    if read_options is None:
        # Reader threads overlap decoding (PIL releases the GIL); with worker processes, share
        # the CPUs between them rather than oversubscribe.  The buffer counts local batches.
        threads = 8 if worker_count == 0 else max(2, min(8, (os.cpu_count() or 1) // worker_count))
        read_options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)
    template = Template(source, prepare, resize)
    it_ds = ds.to_iter_dataset(read_options)
    it_ds = BatchAndCountDataset(it_ds, batch_size=local_batch, drop_remainder=drop_remainder,
                                 positional=num_epochs is not None and not drop_remainder,
                                 partitions=partitions, template=template,
                                 max_bad_fraction=max_bad_fraction,
                                 bad_check_after=bad_check_after,
                                 where=(f" (process {process_index}, in one of its "
                                        f"{worker_count} input workers)" if worker_count
                                        else f" (process {process_index})"))
    if worker_count > 0:
        ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
    config = dict(num_records=num_records, process_index=process_index,
                  process_count=process_count, global_batch_size=global_batch_size,
                  image_size=image_size, seed=int(seed), num_epochs=num_epochs, shuffle=shuffle,
                  train=train, crops=crops, worker_count=worker_count,
                  partitions=sorted(partitions))
    if sampler is not None:
        config["sampler"] = sampler.describe()
    num_batches = batches_per_process(num_records, process_count=process_count,
                                      num_epochs=num_epochs, local_batch_size=local_batch,
                                      drop_remainder=drop_remainder)
    return PipelineDataset(
        it_ds, config=config, max_bad_fraction=max_bad_fraction,
        bad_check_after=bad_check_after, num_batches=num_batches,
        padding_batch=lambda: make_batch([], local_batch, partitions, [], template))


def batches_per_process(num_records: int, *, process_count: int, num_epochs: int | None,
                        local_batch_size: int, drop_remainder: bool, worker_count: int = 0,
                        read_chunk_size: int = 0) -> int | None:
    """How many batches every process yields from a finite stream (None: endless).

    With ``B = local_batch_size * process_count``: ``ceil(num_records *
    num_epochs / B)`` without ``drop_remainder`` (the last global batch padded),
    ``floor`` with it — the number of global batches, the same on every process
    (processes whose share of the last batch is empty, or that bad records ran
    short, add padding batches).  ``worker_count`` and ``read_chunk_size`` do not
    change it (accepted for callers of the per-process order's version).
    Deterministic, so all processes agree without talking.
    """
    del worker_count, read_chunk_size  # the count is a property of the global stream
    if num_epochs is None:
        return None
    positions = num_records * num_epochs
    global_batch_size = local_batch_size * process_count
    if drop_remainder:
        return positions // global_batch_size
    return -(-positions // global_batch_size)


# ---------------------------------------------------------------------------- iterator state files
def iterator_state_path(directory: str | os.PathLike, process_index: int,
                        process_count: int) -> str:
    """``<directory>/process_<i>-of-<n>.json`` (grain's Orbax handler uses the same names)."""
    return os.path.join(os.fspath(directory), f"process_{process_index}-of-{process_count}.json")


def save_iterator_state(iterator: PipelineIterator, directory: str | os.PathLike) -> str:
    """Writes this process's iterator position atomically; returns the file path.

    The file layout is that of grain's Orbax handler, ``grain.checkpoint.CheckpointHandler``
    (which names files by ``jax.process_index()``; these helpers by the pipeline's own
    ``process_index``, the same thing in a real job).  A trainer puts the iterator into its
    ``CheckpointManager`` next to the model state with that handler::

        manager = ocp.CheckpointManager(workdir, item_names=("state", "data"), ...)
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(iterator)))
        manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(iterator)))
    """
    path = iterator_state_path(directory, iterator.process_index, iterator.process_count)
    fileio.atomic_write(path, json.dumps(iterator.get_state(), indent=1))
    return path


def restore_iterator_state(iterator: PipelineIterator,
                           directory: str | os.PathLike) -> PipelineIterator:
    """Moves ``iterator`` to the position saved in ``directory`` by this process; returns it."""
    path = iterator_state_path(directory, iterator.process_index, iterator.process_count)
    if not fileio.exists(path):
        raise PipelineError(f"no input pipeline state for process {iterator.process_index} of "
                            f"{iterator.process_count} in {os.fspath(directory)} "
                            f"(looked for {path}).")
    iterator.set_state(json.loads(fileio.read_text(path)))
    return iterator
