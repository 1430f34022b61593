"""What every stage and every evaluation of one run shares: :class:`RunContext`.

Built once by ``geojax.training.train.setup`` (config checked, device mesh, training source,
partitions) and passed to the stages, the feature extraction for CPlaNet's visual sets and
the evaluators. :class:`MetricsWriter` is the run's JSON-lines log, :func:`read_metrics` its
reader.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from geojax import fileio
from geojax.data.datasets import Coordinates, RecordSource
from geojax.partitions import base


class MetricsWriter:
    """Appends JSON lines to ``<workdir>/metrics.jsonl`` (process 0 only), with
    :class:`geojax.fileio.JsonLinesLog`: one appended file on a local disk; on an object store
    (a ``gs://`` workdir), which cannot append, segments ``metrics.jsonl.segments/*.jsonl``
    that :func:`read_metrics` reads back as one stream.

    The file is append-only across resumes, so it holds three kinds of record:

    * step records ``{"stage", "step", "loss", ...}``, one per log step; a run resumed from a
      checkpoint older than its last log step logs the steps in between again;
    * evaluation records ``{"stage": "eval", "tag", "split", ...}``;
    * events ``{"event": "resume", "stage", "step", "checkpoint", "set_aside"}``, written when
      a stage resumes from its checkpoint at ``step`` (``set_aside``: unreadable newer step
      directories moved aside first).

    :func:`read_metrics` keeps the last record of each step and evaluation.
    """

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._log = fileio.JsonLinesLog(self.path)

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (np.floating, np.integer, float)) or
                     (hasattr(v, "shape") and np.shape(v) == ()) else v) for k, v in record.items()}
        self._log.append(clean)


def _record_key(record: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What makes a record replace an earlier one: (stage, step) of a step record, (tag, split)
    of an evaluation record; None for events (all kept)."""
    if "event" in record:
        return None
    if record.get("stage") == "eval":
        return ("eval", record.get("tag"), record.get("split"))
    if "stage" in record and "step" in record:
        return ("step", record["stage"], record["step"])
    return None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a file, or a workdir holding one), one per step.

    After a resume the steps between the checkpoint and the last step logged before the stop
    appear twice in the file; this keeps the last record of each (stage, step) and of each
    evaluation (tag, split), at the place of that last record, and every event record
    (``{"event": "resume", ...}``). Lines that are not JSON (a write cut by ``kill -9``) are
    skipped. On an object store the log's segments are read as one stream
    (:func:`geojax.fileio.read_json_lines`).
    """
    path = os.fspath(path)
    if fileio.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    records = list(fileio.read_json_lines(path))
    last = {key: i for i, r in enumerate(records) if (key := _record_key(r)) is not None}
    return [r for i, r in enumerate(records)
            if (key := _record_key(r)) is None or last[key] == i]


@dataclasses.dataclass
class RunContext:
    """One run's shared state. ``log`` prints on process 0 only (a no-op elsewhere)."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    groups: dict[str, list[base.Partition]]  # partition group → partitions, built so far
    train_source: RecordSource
    train_coords: Coordinates
    writer: MetricsWriter
    log: Callable[[str], None]

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes files."""
        return jax.process_index() == 0

    def partitions_of(self, group_names: Sequence[str]) -> dict[str, base.Partition]:
        """Head name → partition for every partition of ``group_names``."""
        return {p.name: p for g in group_names for p in self.groups[g]}
