"""002 Appendix A.1's staged class-balanced sampling, as the training stream of the pipeline.

002 trains its mesh classifier (M1) on large meshes with a staged procedure (Appendix A.1):
"the number of training examples were increased each epoch by 6%, with the initial number of
examples equal to the number of cells times 200.  Third, the classes were biased by
oversampling minority classes, such that all classes were initially equally represented ...
Fourth, the class bias was reduced after each model had completed a training cycle —
previous weights loaded and the model re-trained with a reduced bias."

:class:`StagedBalancedSampler` is that schedule as a ``grain.MapDataset`` of source indices:
element ``g`` of the endless global stream is the record read at position ``g``, exactly
where the uniform pipeline puts its shuffled, repeated range (``pipeline.make_dataset``'s
``sampler``).  So everything the pipeline guarantees carries over: every process reads its
own share of each global batch, the global batches do not depend on the process layout, and
a resumed iterator yields the same indices as an uninterrupted one (the stream is a pure
function of ``g``, the labels and the seed).

The schedule (``K``: classes holding at least one training record; ``n_k``: records of
class ``k``; records without a class, label −1, are never drawn):

* **cycles**: epoch ``e`` belongs to cycle ``c = min(e // cycle_epochs, len(biases) − 1)``
  (the last cycle runs on) and is epoch ``j = e − c · cycle_epochs`` of it;
* **epoch size** ``S_e = round(examples_per_class · K · (1 + growth)^j)``: 200 · K and +6 %
  per epoch with the defaults (A.1); it starts again at 200 · K in each cycle, which is a
  re-training from the previous cycle's weights;
* **class bias** ``β = biases[c]``: class ``k`` is drawn with probability
  ``π_k ∝ n_k^(1 − β)`` — ``β = 1`` represents every class equally (A.1's first cycle),
  ``β = 0`` is the data's own class frequencies (no class biasing, A.1's final model);
  A.1 says only that the bias is "reduced" in later cycles, so the per-cycle values are a
  setting (default 1, 0.5, 0);
* **exact counts**: epoch ``e`` holds ``c_k`` records of class ``k``, ``c_k`` the
  largest-remainder rounding of ``S_e · π_k`` (ties to the lower class index), so
  ``Σ c_k = S_e``; a class's records are taken in a fresh random order each epoch and
  cycled, so a majority class contributes ``c_k ≤ n_k`` distinct records and a minority
  class repeats each record ``⌊c_k / n_k⌋`` or ``⌈c_k / n_k⌉`` times; the epoch is then
  shuffled.

Choose it in a training config with ``--config.data.sampler=staged_balanced`` and the
settings ``config.data.balanced`` (:data:`DEFAULTS`; ``head``: the partition whose classes
are balanced, default the stage's first head).
"""

from __future__ import annotations

import bisect
import hashlib
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

__all__ = ["DEFAULTS", "SAMPLERS", "SamplerConfigError", "StagedBalancedSampler",
           "check_config", "sampler_for_stage"]

SAMPLERS = ("uniform", "staged_balanced")
# config.data.balanced: the settings of the "staged_balanced" sampler (002 A.1).
DEFAULTS: dict[str, Any] = dict(head="", examples_per_class=200, growth=0.06, cycle_epochs=5,
                                biases=(1.0, 0.5, 0.0))


class SamplerConfigError(ValueError):
    """``config.data.sampler`` / ``config.data.balanced`` cannot run; says what to change."""


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (largest remainders)."""
    quota = total * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        # Remainders equal up to rounding noise (4/7 computed as 428.571... - 428 and as
        # 128.571... - 128) are ties, broken towards the lower class index.
        remainder = np.round(quota - counts, 9)
        counts[np.argsort(-remainder, kind="stable")[:short]] += 1
    return counts


class StagedBalancedSampler(grain.MapDataset):
    """Element ``g``: the source index at global stream position ``g`` (endless; see module).

    Args:
      labels: (N,) class of every source record (−1: no class, never drawn), e.g.
        ``partition.assign(lat, lng)`` of the training coordinates.
      seed: the stream's seed (the same on every process).
      examples_per_class, growth, cycle_epochs, biases: the schedule (:data:`DEFAULTS`).
    """

    def __init__(self, labels: Any, *, seed: int,
                 examples_per_class: int = DEFAULTS["examples_per_class"],
                 growth: float = DEFAULTS["growth"],
                 cycle_epochs: int = DEFAULTS["cycle_epochs"],
                 biases: Sequence[float] = DEFAULTS["biases"]):
        super().__init__()
        labels = np.asarray(labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise SamplerConfigError(f"labels must be a 1-d integer array (one class per record), "
                                     f"got dtype {labels.dtype} and shape {labels.shape}.")
        _check_settings(examples_per_class=examples_per_class, growth=growth,
                        cycle_epochs=cycle_epochs, biases=biases)
        labelled = np.flatnonzero(labels >= 0)
        if labelled.size == 0:
            raise SamplerConfigError("no training record lies in a class of the balanced "
                                     "partition: nothing to sample.")
        self.num_records = int(labels.size)
        self.seed = int(seed)
        self.examples_per_class = int(examples_per_class)
        self.growth = float(growth)
        self.cycle_epochs = int(cycle_epochs)
        self.biases = tuple(float(b) for b in biases)
        # Records grouped by class: class k is _members[_start[k] : _start[k] + _size[k]].
        classes, sizes = np.unique(labels[labelled], return_counts=True)
        self.classes = classes  # the K class ids that hold records, ascending
        self.class_sizes = sizes
        self._members = labelled[np.argsort(labels[labelled], kind="stable")]
        self._start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._labels_digest = hashlib.sha256(
            np.ascontiguousarray(labels, np.int64).tobytes()).hexdigest()[:16]
        self._ends: list[int] = []  # cumulative epoch ends, extended on demand
        self._init_cache()

    # -------------------------------------------------------------- the schedule
    @property
    def num_classes(self) -> int:
        """``K``: classes holding at least one record."""
        return int(self.classes.size)

    def cycle(self, epoch: int) -> tuple[int, int]:
        """``(cycle, epoch within the cycle)`` of global epoch ``epoch``."""
        c = min(epoch // self.cycle_epochs, len(self.biases) - 1)
        return c, epoch - c * self.cycle_epochs

    def bias(self, epoch: int) -> float:
        return self.biases[self.cycle(epoch)[0]]

    def epoch_size(self, epoch: int) -> int:
        """``S_e = round(examples_per_class · K · (1 + growth)^j)``."""
        j = self.cycle(epoch)[1]
        return int(round(self.examples_per_class * self.num_classes * (1.0 + self.growth) ** j))

    def class_probabilities(self, epoch: int) -> np.ndarray:
        """``π_k ∝ n_k^(1 − β)`` over :attr:`classes`."""
        weights = self.class_sizes.astype(np.float64) ** (1.0 - self.bias(epoch))
        return weights / weights.sum()

    def class_counts(self, epoch: int) -> np.ndarray:
        """Records of each class (of :attr:`classes`) in epoch ``epoch``; sums to its size."""
        weights = self.class_sizes.astype(np.float64) ** (1.0 - self.bias(epoch))
        return _largest_remainder(self.epoch_size(epoch), weights)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The source indices of epoch ``epoch``, in stream order (a fresh array)."""
        return self._epoch(epoch).copy()

    def _build_epoch(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xA1, epoch]))
        counts = self.class_counts(epoch)
        # A random order of each class's records: sort by (class, random key).
        keys = rng.random(self._members.size)
        class_of_member = np.repeat(np.arange(self.num_classes), self.class_sizes)
        order = self._members[np.lexsort((keys, class_of_member))]
        slot_class = np.repeat(np.arange(self.num_classes), counts)
        slot_rank = np.arange(slot_class.size) - np.repeat(np.cumsum(counts) - counts, counts)
        picked = order[self._start[slot_class] + slot_rank % self.class_sizes[slot_class]]
        return picked[rng.permutation(picked.size)]

    # -------------------------------------------------------------- grain MapDataset
    def _init_cache(self) -> None:
        self._lock = threading.Lock()  # grain's reader threads call __getitem__ concurrently
        self._cache: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:  # to grain's worker processes: no lock, no cache
        state = dict(self.__dict__)
        del state["_lock"], state["_cache"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def _epoch(self, epoch: int) -> np.ndarray:
        with self._lock:
            array = self._cache.get(epoch)
            if array is None:
                array = self._build_epoch(epoch)
                if len(self._cache) >= 2:  # the stream moves forward: keep this and the last
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = array
            return array

    def locate(self, position: int) -> tuple[int, int]:
        """``(epoch, offset in the epoch)`` of global stream position ``position``."""
        if position < 0:
            raise IndexError(f"stream position {position} < 0.")
        with self._lock:
            while not self._ends or self._ends[-1] <= position:
                start = self._ends[-1] if self._ends else 0
                self._ends.append(start + self.epoch_size(len(self._ends)))
            epoch = bisect.bisect_right(self._ends, position)
            start = self._ends[epoch - 1] if epoch else 0
        return epoch, position - start

    def __len__(self) -> int:
        return sys.maxsize  # endless, like the uniform stream's repeat(None)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, offset = self.locate(int(index))
        return int(self._epoch(epoch)[offset])

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings (kept in the pipeline's state: a resume must use the same)."""
        return dict(kind="staged_balanced", examples_per_class=self.examples_per_class,
                    growth=self.growth, cycle_epochs=self.cycle_epochs, biases=list(self.biases),
                    num_classes=self.num_classes, labels=self._labels_digest)

    def __str__(self) -> str:
        return f"StagedBalancedSampler({self.describe()})"


# ---------------------------------------------------------------------------- from the config
def _check_settings(*, examples_per_class: Any, growth: Any, cycle_epochs: Any,
                    biases: Any) -> None:
    where = "config.data.balanced"
    if int(examples_per_class) < 1:
        raise SamplerConfigError(f"{where}.examples_per_class must be >= 1, got "
                                 f"{examples_per_class}.")
    if not 0 <= float(growth) <= 10:
        raise SamplerConfigError(f"{where}.growth must be in [0, 10] (0.06: +6 % per epoch), got "
                                 f"{growth}.")
    if int(cycle_epochs) < 1:
        raise SamplerConfigError(f"{where}.cycle_epochs must be >= 1, got {cycle_epochs}.")
    if isinstance(biases, (str, bytes)) or not len(biases) or \
            any(not 0 <= float(b) <= 1 for b in biases):
        raise SamplerConfigError(f"{where}.biases must be a non-empty sequence of values in "
                                 f"[0, 1] (1: classes equally represented, 0: the data's "
                                 f"frequencies), one per cycle; got {biases!r}.")


def _settings(data_config: Any) -> dict[str, Any]:
    given = data_config.get("balanced", None) or {}
    given = given.to_dict() if hasattr(given, "to_dict") else dict(given)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise SamplerConfigError(f"config.data.balanced has unknown keys {unknown}; known keys: "
                                 f"{sorted(DEFAULTS)}.")
    return {**DEFAULTS, **given}


def check_config(data_config: Any) -> str:
    """Validates ``config.data.sampler`` and its settings before any compute; returns its name."""
    name = data_config.get("sampler", "uniform")
    if name not in SAMPLERS:
        raise SamplerConfigError(f"config.data.sampler={name!r}; use one of {SAMPLERS} "
                                 "('staged_balanced': 002 A.1's staged class-balanced sampling, "
                                 "settings in config.data.balanced).")
    if name == "staged_balanced":
        settings = _settings(data_config)
        _check_settings(**{k: v for k, v in settings.items() if k != "head"})
    return name


def sampler_for_stage(data_config: Any, partitions: Mapping[str, Any],
                      coords: tuple[np.ndarray, np.ndarray], *,
                      seed: int) -> StagedBalancedSampler | None:
    """The training stream's sampler of ``config.data`` for a stage (``None``: uniform).

    ``partitions``: the stage's heads (name → partition, in order); the classes balanced are
    those of ``config.data.balanced.head`` (default the first); ``coords``: the training
    records' ``(lat, lng)`` in source order; ``seed``: the stage's pipeline seed.
    """
    if check_config(data_config) == "uniform":
        return None
    settings = _settings(data_config)
    head = settings.pop("head") or next(iter(partitions), "")
    if head not in partitions:
        raise SamplerConfigError(f"config.data.balanced.head={head!r} is not a head of this "
                                 f"stage ({sorted(partitions)}).")
    labels = np.asarray(partitions[head].assign(*coords))
    return StagedBalancedSampler(labels, seed=seed, **settings)
