"""The batching stages of :mod:`geojax.data.pipeline`: batch + count, and the main-process iterator.

:class:`BatchAndCountDataset` turns the stream of local batches' records (lists
from :class:`geojax.data.records.LocalBatches`) into batches, dropping and
counting bad records; it runs in the main process or in each ``mp_prefetch``
worker.  :class:`PipelineDataset` is the last stage, always in the main
process: its iterator, :class:`PipelineIterator`, folds the skip counts into
:class:`PipelineStats`, applies the fault rule, makes every process yield the
same number of batches of a finite stream, and owns the checkpointable state.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import grain
import numpy as np

from geojax.data.records import Bad, Template
from geojax.data.sources.common import bad_fraction_fix

STATE_VERSION = 2  # 2: the global-stream order (process-count independent batches)
_MAX_EXAMPLE_IDS = 5
_SKIP_ONLY = "_skip_only"  # marks an element that carries skip counts and no rows


class PipelineError(ValueError):
    """A configuration error, or too many bad records."""


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
                f"records seen so far. {self.summary()} {bad_fraction_fix(self.bad_fraction)}")

    def to_state(self) -> dict[str, Any]:
        return {"seen": self.seen, "bad": dict(self.bad),
                "example_ids": {k: list(v) for k, v in self.example_ids.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "PipelineStats":
        return cls(seen=int(state["seen"]), bad={k: int(v) for k, v in state["bad"].items()},
                   example_ids={k: list(v) for k, v in state["example_ids"].items()})


# ---------------------------------------------------------------------------- batches
def _stack(values: list[Any]) -> np.ndarray:
    if values and isinstance(values[0], str):
        return np.array(values, dtype=str)
    return np.asarray(values)


def make_batch(rows: Sequence[dict[str, Any] | None], batch_size: int,
               partitions: Mapping[str, Any], skipped: Sequence[Bad],
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


def _skip_counts(skipped: Sequence[Bad]) -> dict[str, np.ndarray]:
    return {"num_skipped": np.int64(len(skipped)),
            "skipped_ids": np.array([b.record_id for b in skipped], dtype=str),
            "skipped_reasons": np.array([b.reason for b in skipped], dtype=str)}


# ---------------------------------------------------------------------------- batch + count stage
class BatchAndCountIterator(grain.DatasetIterator):
    """Fills batches, counting the bad records: dropped and refilled, or (positional) invalid rows.

    The parent yields lists (one local batch's records each); the state is the
    parent's state before the current list plus the offset in it (a restore
    re-reads that one list).  Bad records read while filling a final batch that
    is dropped still reach the main process: as a skip-only element (no rows),
    which :class:`PipelineIterator` counts and does not yield.
    """

    def __init__(self, parent: grain.DatasetIterator, dataset: "BatchAndCountDataset"):
        super().__init__(parent)
        self._ds = dataset
        self._counts = PipelineStats()
        self._exhausted = False
        self._list: list[Any] | None = None
        self._list_pos = 0
        self._list_state: Any = None  # the parent's state before the current list
        self._skip = 0  # after set_state: elements of the next list already consumed

    def _next_element(self) -> Any:
        while self._list is None or self._list_pos >= len(self._list):
            state = copy.deepcopy(self._parent.get_state())
            self._list = next(self._parent)
            self._list_state, self._list_pos, self._skip = state, self._skip, 0
        element = self._list[self._list_pos]
        self._list_pos += 1
        return element

    def __next__(self) -> dict[str, Any]:
        ds = self._ds
        rows: list[dict[str, Any] | None] = []
        skipped: list[Bad] = []
        num_good = 0
        while (len(rows) if ds.positional else num_good) < ds.batch_size and not self._exhausted:
            try:
                element = self._next_element()
            except StopIteration:
                self._exhausted = True
                break
            if isinstance(element, Bad):
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
        return make_batch(rows, ds.batch_size, ds.partitions, skipped, ds.template)

    def get_state(self) -> dict[str, Any]:
        if self._list is not None and self._list_pos < len(self._list):
            parent, offset = self._list_state, self._list_pos
        else:
            parent, offset = self._parent.get_state(), self._skip
        return {"parent": parent, "offset": offset, "exhausted": self._exhausted,
                "stats": self._counts.to_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        # Not restored: a state saved at the end of the stream must still resume when
        # num_epochs was raised; an exhausted parent simply ends again.
        self._exhausted = False
        self._list, self._list_pos, self._list_state = None, 0, None
        self._skip = int(state.get("offset", 0))
        self._counts = PipelineStats.from_state(state["stats"])


class BatchAndCountDataset(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, *, batch_size: int, drop_remainder: bool,
                 positional: bool, partitions: Mapping[str, Any],
                 template: Template, max_bad_fraction: float, bad_check_after: int, where: str):
        super().__init__(parent)
        self.where = where
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.positional = positional
        self.partitions = dict(partitions)
        self.template = template
        self.max_bad_fraction = max_bad_fraction
        self.bad_check_after = bad_check_after

    def __iter__(self) -> BatchAndCountIterator:
        return BatchAndCountIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return (f"BatchAndCount(batch_size={self.batch_size}, drop_remainder="
                f"{self.drop_remainder}, positional={self.positional})")


# ---------------------------------------------------------------------------- main-process stage
class PipelineIterator(grain.DatasetIterator):
    """The iterator :func:`make_dataset`'s dataset yields: batches, ``stats``, checkpointable state.

    Attributes:
      stats: the :class:`PipelineStats` of this process (all workers together).
      process_index, process_count: which share of every global batch this iterator yields.
    """

    def __init__(self, parent: grain.DatasetIterator, dataset: "PipelineDataset"):
        super().__init__(parent)
        self._ds = dataset
        self.stats = PipelineStats()
        self._next_warning_at = 1
        self._batches = 0  # batches yielded (counted against dataset.num_batches)
        self._end_state: dict[str, Any] | None = None  # the state after the last batch
        self.process_index = dataset.config["process_index"]
        self.process_count = dataset.config["process_count"]

    def __next__(self) -> dict[str, Any]:
        target = self._ds.num_batches
        if target is not None and self._batches >= target:
            # The state stays the one after the last batch, so a run that raises num_epochs
            # resumes at the dropped remainder's positions (a restore with the same num_epochs
            # reads and counts the remainder again).
            if self._end_state is None:
                self._end_state = self.get_state()
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
        if self._end_state is not None:
            return copy.deepcopy(self._end_state)
        return {"version": STATE_VERSION, "config": dict(self._ds.config),
                "stats": self.stats.to_state(), "next_warning_at": self._next_warning_at,
                "batches": self._batches, "pipeline": self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise PipelineError(f"input pipeline state version {state.get('version')} is not "
                                f"{STATE_VERSION}; it was saved by another geojax version "
                                "(version 1: the per-process record order used before batches "
                                "were made independent of the process count).")
        saved, current = state["config"], self._ds.config
        # num_epochs may change (extending a run keeps every position and permutation).
        diff = [f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in current
                if k != "num_epochs" and saved.get(k) != current[k]]
        if diff:
            raise PipelineError("cannot restore the input pipeline position: the pipeline differs "
                                "from the saved one (" + "; ".join(diff) + ").")
        self._parent.set_state(state["pipeline"])
        self.stats = PipelineStats.from_state(state["stats"])
        self._next_warning_at = int(state["next_warning_at"])
        self._batches = int(state.get("batches", 0))
        self._end_state = None


class PipelineDataset(grain.IterDataset):
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


