"""The grain input pipeline: source → decode → augment → label → batch → device.

:func:`make_dataset` builds, for one process of a (possibly multi-host) job::

    grain.MapDataset.source(source)
      [process_index::process_count]        every process reads a disjoint 1/P of the records
      .shuffle(seed)  .repeat(num_epochs)    a fresh permutation each epoch (reseeded per epoch)
      .random_map(prepare)                   decode ``image_bytes`` / take ``image``; validate
                                             lat/lng; train augmentation or eval crops
      .to_iter_dataset(read_options)         reader threads (PIL releases the GIL)
      → batch + count                        drop and count bad records, stack the good ones,
                                             labels ``label_<name>`` = partition.assign(lat, lng)
                                             once per batch (vectorised)
      .mp_prefetch(worker_count workers)     optional: the stages above run in worker processes
      → stats                                in the main process: PipelineStats, the fault rule;
                                             a finite stream ends after the same number of
                                             batches on every process (below)

**Batched reads.** A source with grain's batched read ``_getitems(indices) ->
list[record]`` (GeoWorld renders them vectorised) is read in chunks of
``read_chunk_size`` (default 128) stream positions: the sliced, shuffled,
repeated *index* range is cut into chunks, each chunk is one ``_getitems`` call
and ``prepare`` runs on its records with the generator ``random_map`` would
have given each position.  The batches are therefore bit-identical to the
per-record path (``read_chunk_size=0``, the default for sources without
``_getitems``); only the read pattern and the iterator state differ (the state
is the chunk plus the offset in it; a restore re-reads that one chunk).

and returns an ``IterDataset``; ``iter()`` of it is a :class:`PipelineIterator`
(a grain ``DatasetIterator``) whose ``get_state()`` / ``set_state()`` capture
the exact position (and the skip counts), so a resumed run yields bit-identical
batches.  :func:`to_global_arrays` turns each per-process numpy batch into
global ``jax.Array``s sharded over the mesh's ``"data"`` axis.

**A batch** (per process, ``B = global_batch_size / process_count`` rows)::

    image          uint8 (B, S, S, 3), or (B, 5|10, S, S, 3) for eval five/ten crops
    lat, lng       float64 (B,) degrees
    id             str (B,)
    valid          bool (B,)   False on padding rows and, in a finite stream without
                               drop_remainder, on rows of bad records (below)
    label_<name>   int32 (B,)  partition.assign(lat, lng); −1 where the point is in no
                               class (the loss must mask it) and on padding rows
    <extras>       every other record field (user, timestamp, scene, ...), stacked
    num_skipped    int64 ()    bad records dropped while this batch was filled
    skipped_ids, skipped_reasons   str (num_skipped,)  which records, and why

Batches run across epoch boundaries (the stream is epoch 1's permutation, then
epoch 2's, ...); with ``drop_remainder`` only the very end of a finite stream
is dropped.

**Finite streams on many processes** (``num_epochs`` set).  Processes hold
``ceil`` or ``floor`` of ``len(source) / process_count`` records and may meet
different numbers of bad records, yet a step on global arrays needs every
process to yield the same number of batches.  So every process yields exactly
:func:`batches_per_process` batches, computed up front from ``len(source)``,
``process_count``, ``num_epochs``, the local batch size, ``worker_count`` and
``read_chunk_size`` alone:

* ``drop_remainder=False`` (evaluation): batches are *positional* — batch ``k``
  holds the next ``B`` stream positions, a bad record is an invalid row
  (``valid`` False, zeros, labels −1) instead of pulling the next record
  forward, the last batch is padded, and a process with fewer positions ends
  with all-padding batches.  Every record is in exactly one valid row.
* ``drop_remainder=True`` (training on a finite stream): every process stops
  at the smallest count over the processes (``floor(positions / B)`` per
  process); batches are full unless bad records ran a process short, whose
  last batches are then padded (``valid`` False, labels −1).

Endless streams (``num_epochs=None``) always drop bad records and refill.

**Bad records** (per-example faults: ``image_bytes`` that do not decode, a
missing image, an image of the wrong shape, missing / non-numeric / non-finite
coordinates, |lat| > 90 or |lng| > 180) are dropped and counted, never fatal
alone.  The counts travel *with the batches* (``num_skipped``, ``skipped_ids``,
``skipped_reasons``; bad records read while filling a final batch that is then
dropped travel in a row-less element that is counted, not yielded), so they
reach the main process whether the batching ran there or in ``mp_prefetch``
workers; the main process folds them into the
iterator's :class:`PipelineStats` (``iterator.stats``: counts by reason, a few
example ids each, ``summary()``), logs a warning the first time each reason is
seen and whenever the bad count doubles, and keeps the stats in the iterator
state, so they survive a resume.  The fault rule: once at least
``bad_check_after`` records have been seen, more than ``max_bad_fraction`` of
them bad raises :class:`PipelineError` naming the counts and example ids —
checked in the main process over all workers, and inside each worker on its own
share (so a stream of nothing but bad records fails fast instead of searching
the whole dataset for a good one).

**Checkpointing the position.** ``iterator.get_state()`` is a JSON-able dict.
:func:`save_iterator_state` / :func:`restore_iterator_state` write / read it as
``process_<i>-of-<n>.json`` in a directory, atomically — the same file layout
as grain's Orbax handler, ``grain.checkpoint.CheckpointHandler``, which the
trainer uses to put the iterator into its ``CheckpointManager`` next to the
model state::

    manager = ocp.CheckpointManager(workdir, item_names=("state", "data"), ...)
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(iterator)))
    manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(iterator)))

(the handler names files by ``jax.process_index()``; the helpers here by the
pipeline's own ``process_index``, which is the same thing in a real job).

The state depends on ``worker_count`` (each worker reads every
``worker_count``-th element) and ``read_chunk_size``, so resume with the same
``worker_count`` and ``read_chunk_size`` — and
the same source, batch size, seed and process layout — as the saved run;
:meth:`PipelineIterator.set_state` checks and says which setting differs.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import logging
import grain
import numpy as np
from PIL import Image

from geojax import fileio
from geojax.data import augment as augment_lib

STATE_VERSION = 1
_MAX_EXAMPLE_IDS = 5
_IMAGE_KEYS = ("image", "image_bytes")
_SKIP_ONLY = "_skip_only"  # marks an element that carries skip counts and no rows
DEFAULT_READ_CHUNK_SIZE = 128


class PipelineError(ValueError):
    """A configuration error, or too many bad records."""


# ---------------------------------------------------------------------------- sources
class InMemorySource:
    """A grain random-access source over a list of record dicts (tests, benchmarks, notebooks)."""

    def __init__(self, records: Sequence[Mapping[str, Any]]):
        self._records = list(records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self._records[index])

    def __repr__(self) -> str:
        return f"InMemorySource({len(self)} records)"


def _pil_decode(image_bytes: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(image_bytes)) as img:
        img.load()
        return np.array(img.convert("RGB"), dtype=np.uint8)


def _decoder() -> Callable[[bytes], np.ndarray]:
    """``geojax.data.sources.decode_image`` when it exists, else a PIL decode to RGB."""
    try:
        from geojax.data.sources import decode_image  # pylint: disable=import-outside-toplevel
    except ImportError:
        return _pil_decode
    return decode_image


# ---------------------------------------------------------------------------- statistics
@dataclasses.dataclass
class PipelineStats:
    """Records seen and bad records dropped, by reason, with a few example ids each."""

    seen: int = 0
    bad: dict[str, int] = dataclasses.field(default_factory=dict)
    example_ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def num_bad(self) -> int:
        return sum(self.bad.values())

    @property
    def bad_fraction(self) -> float:
        return self.num_bad / self.seen if self.seen else 0.0

    def add_good(self, n: int) -> None:
        self.seen += int(n)

    def add_bad(self, reason: str, record_id: str) -> bool:
        """Counts one bad record; True if this is the first one with this reason."""
        self.seen += 1
        first = reason not in self.bad
        self.bad[reason] = self.bad.get(reason, 0) + 1
        ids = self.example_ids.setdefault(reason, [])
        if len(ids) < _MAX_EXAMPLE_IDS and str(record_id) not in ids:
            ids.append(str(record_id))
        return first

    def summary(self) -> str:
        if not self.bad:
            return f"{self.seen} records read, none skipped."
        parts = [f"{n} {reason} (e.g. {', '.join(self.example_ids.get(reason, []))})"
                 for reason, n in sorted(self.bad.items())]
        return (f"{self.num_bad} of {self.seen} records skipped ({self.bad_fraction:.2%}): "
                + "; ".join(parts) + ".")

    def check(self, max_bad_fraction: float, bad_check_after: int, where: str = "") -> None:
        """Raises :class:`PipelineError` if the fault rule is broken (see the module docstring)."""
        if self.seen >= bad_check_after and self.num_bad > max_bad_fraction * self.seen:
            raise PipelineError(
                f"too many bad input records{where}: more than {max_bad_fraction:.2%} of the "
                f"records seen so far. {self.summary()} Fix the data or raise max_bad_fraction.")

    def to_state(self) -> dict[str, Any]:
        return {"seen": self.seen, "bad": dict(self.bad),
                "example_ids": {k: list(v) for k, v in self.example_ids.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "PipelineStats":
        return cls(seen=int(state["seen"]), bad={k: int(v) for k, v in state["bad"].items()},
                   example_ids={k: list(v) for k, v in state["example_ids"].items()})


# ---------------------------------------------------------------------------- per record
@dataclasses.dataclass(frozen=True)
class _Bad:
    """Marker for a dropped record (travels through grain like any element)."""

    record_id: str
    reason: str


class _Prepare:
    """record (+ rng) → example dict, or :class:`_Bad`.  Picklable, for mp_prefetch workers."""

    def __init__(self, *, train: bool, augment: augment_lib.TrainAugment | None, image_size: int,
                 resize: int, crops: str):
        self._train = train
        self._augment = augment
        self._image_size = image_size
        self._resize = resize
        self._crops = crops
        self._decode: Callable[[bytes], np.ndarray] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_decode"] = None  # re-resolved in the worker
        return state

    def __call__(self, record: Mapping[str, Any],
                 rng: np.random.Generator) -> dict[str, Any] | _Bad:
        record_id = str(record.get("id", "<no id>"))
        try:
            lat, lng = float(record["lat"]), float(record["lng"])
        except (KeyError, TypeError, ValueError):
            return _Bad(record_id, "records with missing or non-numeric coordinates")
        if not (math.isfinite(lat) and math.isfinite(lng)):
            return _Bad(record_id, "records with NaN/infinite coordinates")
        if abs(lat) > 90 or abs(lng) > 180:
            return _Bad(record_id,
                        "records with out-of-range coordinates (|lat| > 90 or |lng| > 180)")
        image = record.get("image")
        if image is None:
            image_bytes = record.get("image_bytes")
            if image_bytes is None:
                return _Bad(record_id, "records without image or image_bytes")
            if self._decode is None:
                self._decode = _decoder()
            try:
                image = self._decode(image_bytes)
            except (ValueError, OSError, SyntaxError, EOFError,
                    Image.DecompressionBombError):  # what PIL raises on bad bytes
                return _Bad(record_id, "records with undecodable image_bytes")
        try:
            image = augment_lib.as_rgb_uint8(image)
        except ValueError:
            return _Bad(record_id, "records with an invalid image array")
        if self._train:
            image = self._augment(image, rng)
        else:
            image = augment_lib.eval_crops(image, image_size=self._image_size, resize=self._resize,
                                           crops=self._crops)
        example = {k: v for k, v in record.items() if k not in _IMAGE_KEYS}
        example.update(image=image, lat=lat, lng=lng, id=record_id)
        return example


# ---------------------------------------------------------------------------- batched reads
def _record_rng(generator: np.random.Generator, position: int) -> np.random.Generator:
    """``generator`` (Philox, keyed by the seed) moved to the stream of stream ``position``.

    The same key and counter as the generator grain's ``random_map`` hands element
    ``position``, so the batched and the per-record paths draw the same augmentation.
    """
    state = generator.bit_generator.state
    state["state"]["counter"] = np.array([0, 0, 0, position], dtype=np.uint64)
    state["buffer"] = np.zeros(4, np.uint64)
    state["buffer_pos"] = 4
    state["has_uint32"] = 0
    state["uinteger"] = 0
    generator.bit_generator.state = state
    return generator


class _ReadChunks(grain.MapDataset):
    """Element ``c``: the prepared records at stream positions ``[c*C, (c+1)*C)``, as a list.

    ``positions`` maps a stream position to a source index (the sliced, shuffled,
    repeated range).  A chunk is read with one ``source._getitems(indices)`` call
    when the source has it (grain's batched-read convention; GeoWorld renders the
    chunk vectorised), else record by record.
    """

    def __init__(self, positions: grain.MapDataset, source: Any, prepare: _Prepare, seed: int,
                 chunk_size: int):
        super().__init__(positions)
        self._source = source
        self._prepare = prepare
        self._seed = seed
        self._chunk_size = chunk_size

    def __len__(self) -> int:
        return -(-len(self._parent) // self._chunk_size)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        start = index * self._chunk_size
        stream = range(start, min(start + self._chunk_size, len(self._parent)))
        indices = [int(self._parent[k]) for k in stream]
        if callable(getattr(self._source, "_getitems", None)):
            records = self._source._getitems(indices)  # pylint: disable=protected-access
        else:
            records = [self._source[i] for i in indices]
        generator = np.random.Generator(np.random.Philox(self._seed))
        return [self._prepare(record, _record_rng(generator, k))
                for record, k in zip(records, stream)]

    def __str__(self) -> str:
        return f"ReadChunks(chunk_size={self._chunk_size})"


class _Template:
    """One prepared example of this process's data: the shape of an all-padding batch."""

    def __init__(self, source: Any, prepare: _Prepare, indices: Sequence[int], resize: int):
        self._source = source
        self._prepare = prepare
        self._indices = list(indices)
        self._resize = resize
        self._example: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self._example is None:
            rng = np.random.default_rng(0)
            for i in self._indices:
                example = self._prepare(self._source[i], rng)
                if not isinstance(example, _Bad):
                    self._example = example
                    break
            else:  # no good record among the first few: the image and coordinates alone
                side = max(self._resize, 1)
                self._example = self._prepare(
                    dict(image=np.zeros((side, side, 3), np.uint8), lat=0.0, lng=0.0, id=""), rng)
        return self._example


# ---------------------------------------------------------------------------- batches
def _stack(values: list[Any]) -> np.ndarray:
    if values and isinstance(values[0], str):
        return np.array(values, dtype=str)
    return np.asarray(values)


def _make_batch(rows: Sequence[dict[str, Any] | None], batch_size: int,
                partitions: Mapping[str, Any], skipped: Sequence[_Bad],
                template: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A batch of ``batch_size`` rows: ``rows[i]`` (None: a bad record) fills row ``i``;
    bad and missing rows are zeros with ``valid`` False and labels −1."""
    slots = [i for i, row in enumerate(rows) if row is not None]
    examples = [rows[i] for i in slots]
    shape_from = examples or [template()]
    keys: dict[str, None] = {}
    for ex in shape_from:
        keys.update(dict.fromkeys(ex))
    batch: dict[str, Any] = {}
    for key in keys:
        values = [ex.get(key) for ex in shape_from]
        if key == "lat" or key == "lng":
            arr = np.asarray(values, np.float64)
        elif key == "id":
            arr = np.array(values, dtype=str)
        else:
            arr = _stack(values)
        out = np.zeros((batch_size,) + arr.shape[1:], arr.dtype)
        if examples:
            out[slots] = arr
        batch[key] = out
    batch["valid"] = np.zeros(batch_size, bool)
    batch["valid"][slots] = True
    for name, partition in partitions.items():
        labels = np.full(batch_size, -1, np.int32)
        if slots:
            labels[slots] = np.asarray(partition.assign(batch["lat"][slots],
                                                        batch["lng"][slots]), np.int32)
        batch[f"label_{name}"] = labels
    batch.update(_skip_counts(skipped))
    return batch


def _skip_counts(skipped: Sequence[_Bad]) -> dict[str, np.ndarray]:
    return {"num_skipped": np.int64(len(skipped)),
            "skipped_ids": np.array([b.record_id for b in skipped], dtype=str),
            "skipped_reasons": np.array([b.reason for b in skipped], dtype=str)}


# ---------------------------------------------------------------------------- batch + count stage
class _BatchAndCountIterator(grain.DatasetIterator):
    """Fills batches, counting the bad records: dropped and refilled, or (positional) invalid rows.

    With chunked reads the parent yields lists; the state is then the parent's
    state before the current chunk plus the offset in it (a restore re-reads that
    one chunk).  Bad records read while filling a final batch that is dropped
    still reach the main process: as a skip-only element (no rows), which
    :class:`PipelineIterator` counts and does not yield.
    """

    def __init__(self, parent: grain.DatasetIterator, dataset: "_BatchAndCountDataset"):
        super().__init__(parent)
        self._ds = dataset
        self._counts = PipelineStats()
        self._exhausted = False
        self._chunk: list[Any] | None = None
        self._chunk_pos = 0
        self._chunk_state: Any = None  # the parent's state before the current chunk
        self._skip = 0  # after set_state: elements of the next chunk already consumed

    def _next_element(self) -> Any:
        if not self._ds.chunked:
            return next(self._parent)
        while self._chunk is None or self._chunk_pos >= len(self._chunk):
            state = copy.deepcopy(self._parent.get_state())
            self._chunk = next(self._parent)
            self._chunk_state, self._chunk_pos, self._skip = state, self._skip, 0
        element = self._chunk[self._chunk_pos]
        self._chunk_pos += 1
        return element

    def __next__(self) -> dict[str, Any]:
        ds = self._ds
        rows: list[dict[str, Any] | None] = []
        skipped: list[_Bad] = []
        num_good = 0
        while (len(rows) if ds.positional else num_good) < ds.batch_size and not self._exhausted:
            try:
                element = self._next_element()
            except StopIteration:
                self._exhausted = True
                break
            if isinstance(element, _Bad):
                skipped.append(element)
                self._counts.add_bad(element.reason, element.record_id)
                self._counts.check(ds.max_bad_fraction, ds.bad_check_after, ds.where)
                if ds.positional:
                    rows.append(None)
            else:
                rows.append(element)
                num_good += 1
                self._counts.add_good(1)
        if not rows or (not ds.positional and num_good < ds.batch_size and ds.drop_remainder):
            if skipped:
                return {_SKIP_ONLY: np.bool_(True), **_skip_counts(skipped)}
            raise StopIteration
        return _make_batch(rows, ds.batch_size, ds.partitions, skipped, ds.template)

    def get_state(self) -> dict[str, Any]:
        if self._chunk is not None and self._chunk_pos < len(self._chunk):
            parent, offset = self._chunk_state, self._chunk_pos
        else:
            parent, offset = self._parent.get_state(), self._skip
        return {"parent": parent, "offset": offset, "exhausted": self._exhausted,
                "stats": self._counts.to_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        # Not restored: a state saved at the end of the stream must still resume when
        # num_epochs was raised; an exhausted parent simply ends again.
        self._exhausted = False
        self._chunk, self._chunk_pos, self._chunk_state = None, 0, None
        self._skip = int(state.get("offset", 0))
        self._counts = PipelineStats.from_state(state["stats"])


class _BatchAndCountDataset(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, *, batch_size: int, drop_remainder: bool,
                 positional: bool, chunked: bool, partitions: Mapping[str, Any],
                 template: _Template, max_bad_fraction: float, bad_check_after: int, where: str):
        super().__init__(parent)
        self.where = where
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.positional = positional
        self.chunked = chunked
        self.partitions = dict(partitions)
        self.template = template
        self.max_bad_fraction = max_bad_fraction
        self.bad_check_after = bad_check_after

    def __iter__(self) -> _BatchAndCountIterator:
        return _BatchAndCountIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return (f"BatchAndCount(batch_size={self.batch_size}, drop_remainder="
                f"{self.drop_remainder}, positional={self.positional}, chunked={self.chunked})")


# ---------------------------------------------------------------------------- main-process stage
class PipelineIterator(grain.DatasetIterator):
    """The iterator :func:`make_dataset`'s dataset yields: batches, ``stats``, checkpointable state.

    Attributes:
      stats: the :class:`PipelineStats` of this process (all workers together).
      process_index, process_count: which 1/P slice of the source this iterator reads.
    """

    def __init__(self, parent: grain.DatasetIterator, dataset: "_PipelineDataset"):
        super().__init__(parent)
        self._ds = dataset
        self.stats = PipelineStats()
        self._next_warning_at = 1
        self._batches = 0  # batches yielded (counted against dataset.num_batches)
        self.process_index = dataset.config["process_index"]
        self.process_count = dataset.config["process_count"]

    def __next__(self) -> dict[str, Any]:
        target = self._ds.num_batches
        if target is not None and self._batches >= target:
            for batch in self._parent:  # what is left (dropped remainders): count, don't yield
                self._count(batch)
            raise StopIteration
        while True:
            try:
                batch = next(self._parent)
            except StopIteration:
                if target is None:
                    raise
                batch = self._ds.padding_batch()  # every process yields `target` batches
                break
            self._count(batch)
            if _SKIP_ONLY not in batch:
                break
        self._batches += 1
        return batch

    def _count(self, batch: Mapping[str, Any]) -> None:
        if "valid" in batch:
            self.stats.add_good(int(np.count_nonzero(batch["valid"])))
        first_reasons = []
        for record_id, reason in zip(batch["skipped_ids"], batch["skipped_reasons"]):
            if self.stats.add_bad(str(reason), str(record_id)):
                first_reasons.append((str(reason), str(record_id)))
        for reason, record_id in first_reasons:
            logging.warning("input pipeline (process %d): skipping %s, first: %s",
                            self.process_index, reason, record_id)
        if self.stats.num_bad >= self._next_warning_at:
            logging.warning("input pipeline (process %d): %s", self.process_index,
                            self.stats.summary())
            while self._next_warning_at <= self.stats.num_bad:
                self._next_warning_at *= 2
        if batch["num_skipped"]:
            self.stats.check(self._ds.max_bad_fraction, self._ds.bad_check_after,
                             f" (process {self.process_index})")

    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "config": dict(self._ds.config),
                "stats": self.stats.to_state(), "next_warning_at": self._next_warning_at,
                "batches": self._batches, "pipeline": self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise PipelineError(f"input pipeline state version {state.get('version')} is not "
                                f"{STATE_VERSION}; it was saved by another geojax version.")
        saved, current = state["config"], self._ds.config
        # num_epochs may change (extending a run keeps every position and permutation).
        saved = {"read_chunk_size": 0, **saved}  # states saved before batched reads existed
        diff = [f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in current
                if k != "num_epochs" and saved.get(k) != current[k]]
        if diff:
            raise PipelineError("cannot restore the input pipeline position: the pipeline differs "
                                "from the saved one (" + "; ".join(diff) + ").")
        self._parent.set_state(state["pipeline"])
        self.stats = PipelineStats.from_state(state["stats"])
        self._next_warning_at = int(state["next_warning_at"])
        self._batches = int(state.get("batches", 0))


class _PipelineDataset(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, *, config: dict[str, Any],
                 max_bad_fraction: float, bad_check_after: int, num_batches: int | None,
                 padding_batch: Callable[[], dict[str, Any]]):
        super().__init__(parent)
        self.config = config
        self.num_batches = num_batches
        self.padding_batch = padding_batch
        self.max_bad_fraction = max_bad_fraction
        self.bad_check_after = bad_check_after

    def __iter__(self) -> PipelineIterator:
        return PipelineIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return f"GeojaxPipeline({self.config})"


# ---------------------------------------------------------------------------- the builder
def ensure_absl_flags_parsed() -> None:
    """grain's ``mp_prefetch`` reads absl flags; outside ``absl.app.run`` mark them parsed."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # pylint: disable=import-outside-toplevel
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
                 max_bad_fraction: float = 0.01, bad_check_after: int = 100,
                 augment: augment_lib.TrainAugment | None = None, resize: int | None = None,
                 read_options: grain.ReadOptions | None = None,
                 read_chunk_size: int | None = None) -> grain.IterDataset:
    """The input pipeline of one process (see the module docstring).

    Args:
      source: a random-access source (``__len__``, ``__getitem__(i) -> dict``, optionally
        ``_getitems(indices) -> list[dict]``)
        whose records hold ``image`` (uint8 HxWx3) or ``image_bytes``, ``lat``,
        ``lng``, ``id`` and optional extras.
      partitions: ``{name: Partition}``; each adds ``label_<name>``.
      train: train augmentation (``augment``) if True, else eval ``crops``.
      global_batch_size: batch size over all processes; must divide by ``process_count``.
      image_size: crop side ``S``.
      seed: shuffle and augmentation seed.
      num_epochs: passes over the data; ``None`` repeats forever.
      process_index, process_count: this process's slice; default ``jax.process_index()``
        / ``jax.process_count()``.
      shuffle: reshuffle every epoch (a different permutation per epoch).
      crops: eval views, ``"center"``, ``"five"`` or ``"ten"``.
      drop_remainder: drop a last partial batch; otherwise pad it (``valid`` marks real rows).
        Finite streams yield :func:`batches_per_process` batches on every process
        (see the module docstring).
      worker_count: ``mp_prefetch`` worker processes (0: everything in this process).
      worker_buffer_size: batches buffered per worker.
      max_bad_fraction, bad_check_after: the fault rule.
      augment: train augmentation; default 003's recipe for ``image_size`` (resize ``S*256/224``).
      resize: eval shorter-side resize; default ``round(S * 256 / 224)`` (256 for 224).
      read_options: grain reader threads / buffer; default 8 threads in the main process, or
        ``cpu_count / worker_count`` (2 to 8) per worker.
      read_chunk_size: records per batched read (``source._getitems``); 0 reads record by
        record; default :data:`DEFAULT_READ_CHUNK_SIZE` when the source has ``_getitems``,
        else 0.  Batches are the same either way.

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
    if num_records < process_count:
        raise PipelineError(f"the source has {num_records} records, fewer than the "
                            f"{process_count} processes that share it.")

    if read_chunk_size is None:
        batched = callable(getattr(source, "_getitems", None))
        read_chunk_size = DEFAULT_READ_CHUNK_SIZE if batched else 0
    if read_chunk_size < 0:
        raise PipelineError(f"read_chunk_size must be >= 0, got {read_chunk_size}.")

    prepare = _Prepare(train=train, augment=augment, image_size=image_size, resize=resize,
                       crops=crops)
    prepare_seed = _derived_seed(seed, 1, process_index)
    if read_chunk_size:
        ds = grain.MapDataset.range(num_records)[process_index::process_count]
    else:
        ds = grain.MapDataset.source(source)[process_index::process_count]
    if shuffle:
        ds = ds.shuffle(seed=_derived_seed(seed, 0))
    ds = ds.repeat(num_epochs)
    if read_chunk_size:
        ds = _ReadChunks(ds, source, prepare, prepare_seed, read_chunk_size)
    else:
        ds = ds.random_map(prepare, seed=prepare_seed)
    if read_options is None:
        # Reader threads overlap decoding (PIL releases the GIL); with worker processes, share
        # the CPUs between them rather than oversubscribe.
        threads = 8 if worker_count == 0 else max(2, min(8, (os.cpu_count() or 1) // worker_count))
        buffer = max(64, 2 * local_batch)
        if read_chunk_size:  # the buffer counts chunks
            buffer = max(threads, -(-2 * local_batch // read_chunk_size))
        read_options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer)
    template = _Template(source, prepare, range(process_index, num_records, process_count)[:16],
                         resize)
    it_ds = ds.to_iter_dataset(read_options)
    it_ds = _BatchAndCountDataset(it_ds, batch_size=local_batch, drop_remainder=drop_remainder,
                                  positional=num_epochs is not None and not drop_remainder,
                                  chunked=bool(read_chunk_size), partitions=partitions,
                                  template=template, max_bad_fraction=max_bad_fraction,
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
                  partitions=sorted(partitions), read_chunk_size=int(read_chunk_size))
    num_batches = batches_per_process(
        num_records, process_count=process_count, num_epochs=num_epochs,
        local_batch_size=local_batch, drop_remainder=drop_remainder, worker_count=worker_count,
        read_chunk_size=read_chunk_size)
    return _PipelineDataset(
        it_ds, config=config, max_bad_fraction=max_bad_fraction,
        bad_check_after=bad_check_after, num_batches=num_batches,
        padding_batch=lambda: _make_batch([], local_batch, partitions, [], template))


def batches_per_process(num_records: int, *, process_count: int, num_epochs: int | None,
                        local_batch_size: int, drop_remainder: bool, worker_count: int = 0,
                        read_chunk_size: int = 0) -> int | None:
    """How many batches every process yields from a finite stream (None: endless).

    Process ``p`` reads ``len(range(p, num_records, process_count)) * num_epochs``
    stream positions; each of its ``max(worker_count, 1)`` batchers gets every
    ``worker_count``-th element below the batcher (a record, or a chunk of
    ``read_chunk_size`` records) and makes its own batches.  Without
    ``drop_remainder`` a batcher makes ``ceil(positions / B)`` batches (bad
    records are invalid rows, the last batch is padded) and every process yields
    the largest total over the processes, the others adding all-padding
    batches; with ``drop_remainder`` a batcher makes ``floor(positions / B)``
    and every process stops at the smallest total (padding only if bad records
    ran a process short).  Deterministic, so all processes agree without talking.
    """
    if num_epochs is None:
        return None
    unit = max(read_chunk_size, 1)
    totals = []
    for per_process in {num_records // process_count, -(-num_records // process_count)}:
        length = per_process * num_epochs
        if worker_count == 0:
            shares = [length]
        else:
            units = -(-length // unit)
            shares = []
            for w in range(worker_count):
                mine = len(range(w, units, worker_count)) * unit
                if units and (units - 1) % worker_count == w:
                    mine -= units * unit - length  # the short last chunk
                shares.append(mine)
        if drop_remainder:
            totals.append(sum(n // local_batch_size for n in shares))
        else:
            totals.append(sum(-(-n // local_batch_size) for n in shares))
    return min(totals) if drop_remainder else max(totals)


# ---------------------------------------------------------------------------- iterator state files
def iterator_state_path(directory: str | os.PathLike, process_index: int,
                        process_count: int) -> str:
    """``<directory>/process_<i>-of-<n>.json`` (grain's Orbax handler uses the same names)."""
    return os.path.join(os.fspath(directory), f"process_{process_index}-of-{process_count}.json")


def save_iterator_state(iterator: PipelineIterator, directory: str | os.PathLike) -> str:
    """Writes this process's iterator position atomically; returns the file path."""
    path = iterator_state_path(directory, iterator.process_index, iterator.process_count)
    fileio.atomic_write(path, json.dumps(iterator.get_state(), indent=1))
    return path


def restore_iterator_state(iterator: PipelineIterator,
                           directory: str | os.PathLike) -> PipelineIterator:
    """Moves ``iterator`` to the position saved in ``directory`` by this process; returns it."""
    path = iterator_state_path(directory, iterator.process_index, iterator.process_count)
    if not os.path.exists(path):
        raise PipelineError(f"no input pipeline state for process {iterator.process_index} of "
                            f"{iterator.process_count} in {os.fspath(directory)} "
                            f"(looked for {path}).")
    with open(path, encoding="utf-8") as f:
        iterator.set_state(json.load(f))
    return iterator


# ---------------------------------------------------------------------------- to the devices
def batch_sharding(mesh_or_sharding: Any, axis: str = "data") -> Any:
    """``NamedSharding(mesh, PartitionSpec(axis))`` for a ``Mesh``; a ``Sharding`` as it is."""
    import jax  # pylint: disable=import-outside-toplevel
    if isinstance(mesh_or_sharding, jax.sharding.Sharding):
        return mesh_or_sharding
    mesh = mesh_or_sharding
    if axis not in mesh.axis_names:
        raise PipelineError(f"the mesh has axes {mesh.axis_names}, no {axis!r} axis to shard the "
                            "batch over.")
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))


def to_global_arrays(batch: Mapping[str, Any], mesh_or_sharding: Any, *,
                     keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-process numpy batch → global ``jax.Array``s, batch dimension sharded over ``"data"``.

    Uses ``jax.make_array_from_process_local_data``: the global batch is the
    concatenation of every process's rows, in process order.  Converted are the
    per-example numeric / bool fields (leading dimension = the per-process batch
    size) or just ``keys``; strings (``id``) and the per-batch counters stay on
    the host.  64-bit types become jax's canonical 32-bit ones (float64 lat/lng →
    float32, ~1 m) unless ``jax_enable_x64`` is on.
    """
    import jax  # pylint: disable=import-outside-toplevel
    sharding = batch_sharding(mesh_or_sharding)
    local_batch = int(np.shape(batch["valid"])[0]) if "valid" in batch else None
    if keys is None:
        keys = [k for k, v in batch.items()
                if np.ndim(v) >= 1 and np.asarray(v).dtype.kind in "biuf"
                and (local_batch is None or np.shape(v)[0] == local_batch)]
    data_devices = sharding.mesh.shape.get("data", 1) if hasattr(sharding, "mesh") else None
    out = {}
    for key in keys:
        arr = np.asarray(batch[key])
        arr = arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype), copy=False)
        global_rows = arr.shape[0] * jax.process_count()
        if data_devices and global_rows % data_devices:
            raise PipelineError(f"global batch of {global_rows} rows cannot be split over "
                                f"{data_devices} devices on the 'data' axis.")
        out[key] = jax.make_array_from_process_local_data(sharding, arr)
    return out


def iterate_global(iterator: Iterator[Mapping[str, Any]], mesh_or_sharding: Any
                   ) -> Iterator[tuple[dict[str, Any], Mapping[str, Any]]]:
    """Yields ``(global_arrays, host_batch)`` pairs from a pipeline iterator."""
    for batch in iterator:
        yield to_global_arrays(batch, mesh_or_sharding), batch
