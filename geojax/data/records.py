"""Reading and preparing records for :mod:`geojax.data.pipeline`.

The global stream of a pipeline is the source's indices, shuffled per epoch and
repeated; a *stream position* ``g`` is an index into it.  :class:`LocalBatches`
is the ``MapDataset`` whose element ``k`` is the list of prepared records at the
stream positions of this process's share of global batch ``k`` (see
:func:`local_positions`); :class:`Prepare` turns one record into an example (or
a :class:`Bad` marker) with a random generator that depends only on the seed
and the stream position (:func:`record_rng`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from PIL import Image

from geojax.data import augment as augment_lib
from geojax.data.sources.images import decode_image

_IMAGE_KEYS = ("image", "image_bytes")


# ---------------------------------------------------------------------------- sources
class InMemorySource:
    """A grain random-access source over a list of record dicts (tests, benchmarks, notebooks)."""

    def __init__(self, records: Sequence[Mapping[str, Any]]):
        self._records = list(records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self._records[index])

    @property
    def lat(self) -> np.ndarray:
        """Latitudes of the records, in order."""
        return np.asarray([r["lat"] for r in self._records], np.float64)

    @property
    def lng(self) -> np.ndarray:
        """Longitudes of the records, in order."""
        return np.asarray([r["lng"] for r in self._records], np.float64)

    def __repr__(self) -> str:
        return f"InMemorySource({len(self)} records)"


class RecordRange:
    """Records ``[start, stop)`` of a source, as a source: row ``i`` is ``source[start + i]``.

    Keeps the source's batched read (``_getitems``) when it has one; ``lat`` / ``lng`` are
    views of the source's arrays."""

    def __init__(self, source: Any, start: int, stop: int):
        if not 0 <= start <= stop <= len(source):
            raise ValueError(f"records [{start}, {stop}) are not a range of a source of "
                             f"{len(source)} records.")
        self.source, self.start, self.stop = source, int(start), int(stop)
        self.lat = np.asarray(source.lat)[start:stop]
        self.lng = np.asarray(source.lng)[start:stop]
        if callable(getattr(source, "_getitems", None)):
            self._getitems = self._read_many

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of a range of {len(self)}")
        return self.source[self.start + index]

    def _read_many(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return self.source._getitems(  # pylint: disable=protected-access
            [self.start + int(i) for i in indices])

    def __repr__(self) -> str:
        return f"RecordRange({self.source!r}, {self.start}, {self.stop})"


# ---------------------------------------------------------------------------- per record
@dataclasses.dataclass(frozen=True)
class Bad:
    """Marker for a dropped record (travels through grain like any element)."""

    record_id: str
    reason: str


class Prepare:
    """record (+ rng) → example dict, or :class:`Bad`.  Picklable, for mp_prefetch workers."""

    def __init__(self, *, train: bool, augment: augment_lib.TrainAugment | None, image_size: int,
                 resize: int, crops: str):
        self._train = train
        self._augment = augment
        self._image_size = image_size
        self._resize = resize
        self._crops = crops

    def __call__(self, record: Mapping[str, Any],
                 rng: np.random.Generator) -> dict[str, Any] | Bad:
        record_id = str(record.get("id", "<no id>"))
        try:
            lat, lng = float(record["lat"]), float(record["lng"])
        except (KeyError, TypeError, ValueError):
            return Bad(record_id, "records with missing or non-numeric coordinates")
        if not (math.isfinite(lat) and math.isfinite(lng)):
            return Bad(record_id, "records with NaN/infinite coordinates")
        if abs(lat) > 90 or abs(lng) > 180:
            return Bad(record_id,
                       "records with out-of-range coordinates (|lat| > 90 or |lng| > 180)")
        image, view = record.get("image"), None
        if image is None:
            image_bytes = record.get("image_bytes")
            if image_bytes is None:
                return Bad(record_id, "records without image or image_bytes")
            try:
                if self._train:  # the view, from a JPEG decoded at reduced scale where it allows
                    view = self._augment.decode_and_augment(image_bytes, rng, record_id=record_id)
                else:
                    image = decode_image(image_bytes, record_id=record_id)
            except (ValueError, OSError, SyntaxError, EOFError,
                    Image.DecompressionBombError):  # what PIL raises on bad bytes
                return Bad(record_id, "records with undecodable image_bytes")
        if view is None:
            try:
                image = augment_lib.as_rgb_uint8(image)
            except ValueError:
                return Bad(record_id, "records with an invalid image array")
            if self._train:
                view = self._augment(image, rng)
            else:
                view = augment_lib.eval_crops(image, image_size=self._image_size,
                                              resize=self._resize, crops=self._crops)
        example = {k: v for k, v in record.items() if k not in _IMAGE_KEYS}
        example.update(image=view, lat=lat, lng=lng, id=record_id)
        return example


def rng_key(seed: int) -> np.ndarray:
    """The Philox key of the augmentation generators: a function of ``seed`` alone."""
    return np.random.SeedSequence([int(seed), 1]).generate_state(2, np.uint64)


def record_rng(key: np.ndarray, position: int) -> np.random.Generator:
    """The augmentation generator of global stream ``position``: Philox(``key``), counter
    ``position * 2**192`` (a stream of its own for every position, so epochs differ)."""
    return np.random.Generator(np.random.Philox(
        key=key, counter=np.array([0, 0, 0, position], dtype=np.uint64)))


# ---------------------------------------------------------------------------- positions
def local_positions(k: int, *, process_index: int, local_batch: int, global_batch: int,
                    length: int) -> range:
    """The global stream positions of process ``p``'s share of global batch ``k``:
    ``[k*B + p*b, k*B + (p+1)*b)``, cut at the stream ``length``."""
    start = k * global_batch + process_index * local_batch
    return range(start, min(start + local_batch, length))


def num_local_batches(length: int, *, process_index: int, local_batch: int,
                      global_batch: int) -> int:
    """How many ``k`` give a non-empty :func:`local_positions` in a stream of ``length``."""
    first = process_index * local_batch
    return 0 if length <= first else (length - first - 1) // global_batch + 1


class LocalBatches(grain.MapDataset):
    """Element ``k``: the prepared records at :func:`local_positions` ``(k)``, as a list.

    ``stream`` maps a global stream position to a source index (the shuffled,
    repeated range of the whole source).  The records are read with
    ``source._getitems(indices)`` in calls of at most ``read_chunk_size``
    indices when ``read_chunk_size`` > 0 and the source has it (grain's
    batched-read convention; GeoWorld renders them vectorised), else one by one;
    either way the same records, prepared with :func:`record_rng` of their
    position, so the same examples.
    """

    def __init__(self, stream: grain.MapDataset, source: Any, prepare: Prepare, *, seed: int,
                 process_index: int, local_batch: int, global_batch: int, read_chunk_size: int):
        super().__init__(stream)
        self._source = source
        self._prepare = prepare
        self._key = rng_key(seed)
        self._layout = dict(process_index=process_index, local_batch=local_batch,
                            global_batch=global_batch)
        self._chunk = read_chunk_size if callable(getattr(source, "_getitems", None)) else 0

    def __len__(self) -> int:
        return num_local_batches(len(self._parent), **self._layout)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        positions = local_positions(index, length=len(self._parent), **self._layout)
        indices = [int(self._parent[g]) for g in positions]
        if self._chunk:
            records = []
            for start in range(0, len(indices), self._chunk):
                records.extend(self._source._getitems(  # pylint: disable=protected-access
                    indices[start:start + self._chunk]))
        else:
            records = [self._source[i] for i in indices]
        return [self._prepare(record, record_rng(self._key, g))
                for record, g in zip(records, positions)]

    def __str__(self) -> str:
        return f"LocalBatches({self._layout}, read_chunk_size={self._chunk})"


class Template:
    """One prepared example of the source: the shape of an all-padding batch.

    The first good record among ``source[:16]`` (the same on every process), else
    a black image at the eval resize with coordinates (0, 0).
    """

    def __init__(self, source: Any, prepare: Prepare, resize: int):
        self._source = source
        self._prepare = prepare
        self._resize = resize
        self._example: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self._example is None:
            rng = np.random.default_rng(0)
            for i in range(min(16, len(self._source))):
                example = self._prepare(self._source[i], rng)
                if not isinstance(example, Bad):
                    self._example = example
                    break
            else:  # no good record among the first few: the image and coordinates alone
                side = max(self._resize, 1)
                self._example = self._prepare(
                    dict(image=np.zeros((side, side, 3), np.uint8), lat=0.0, lng=0.0, id=""), rng)
        return self._example
