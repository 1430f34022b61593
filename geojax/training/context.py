"""What every stage and every evaluation of one run shares: :class:`RunContext`.

Built once by ``geojax.training.train.setup`` (config checked, device mesh, training source,
partitions) and passed to the stages, the feature extraction for CPlaNet's visual sets and
the evaluators. :class:`MetricsWriter` is the run's JSON-lines log.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from geojax.data.datasets import Coordinates, RecordSource
from geojax.partitions import base


class MetricsWriter:
    """Appends JSON lines to ``<workdir>/metrics.jsonl`` (process 0 only)."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (np.floating, np.integer, float)) or
                     (hasattr(v, "shape") and np.shape(v) == ()) else v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean, sort_keys=True) + "\n")


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
