"""TFDS ArrayRecord datasets: geojax sources written as one, and one read as a geojax source.

Needs the ``tfds`` extra (``pip install 'geojax[tfds]'``: ``tensorflow-datasets`` without
TensorFlow). Both directions run without TensorFlow: TFDS serializes its ``tf.train.Example``
records with its own protobuf classes and reads ArrayRecord files with ``array_record``.

* :func:`convert_to_tfds` writes one or more sources (``{"train": ..., "im2gps3k": ...}``)
  into ``<data_dir>/<name>/<version>/``, a TFDS dataset in the ArrayRecord file format that
  ``tfds.builder_from_directory(path)`` and ``tfds.data_source(name, data_dir=data_dir)``
  open as they open a dataset TFDS built itself.
* :class:`TfdsSource` reads one split of any TFDS ArrayRecord dataset with an image feature
  and latitude / longitude features (their names are arguments) as a geojax random-access
  source of Example records (``config.data.source="tfds"``).

The features :func:`convert_to_tfds` writes::

    image      tfds.features.Image   the record's encoded bytes as they are (a decoded
                                     ``image`` is encoded as PNG, or JPEG quality 95)
    latitude   float64 Tensor, ()    degrees, stored as raw float64 bytes
    longitude  float64 Tensor, ()    (``encoding=BYTES``: a tf.train.Example float_list
                                     holds float32, which would move points by up to 1 m)
    id         tfds.features.Text
    <field>    every other field of the records: str as Text, int as an int64 Scalar,
               bool as a bool Scalar, float and numeric arrays as float64 / their dtype
               Tensors with ``encoding=BYTES`` (exact)

Record ``i`` of shard ``s`` is ``source[s * n // num_shards + i]`` minus the dropped
records, in order (TFDS's ``disable_shuffling``). Next to the TFDS files,
``geojax_coordinates-<split>.npy`` holds every record's ``(lat, lng)`` so that partitions
are built without reading the records; TFDS ignores it.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Sequence, SupportsIndex

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from geojax import fileio
from geojax.data.sources.array_record import _conversion_summary
from geojax.data.sources.common import ReadReport, _check_index
from geojax.data.sources.images import ImageDecodeError, decode_image, encode_image
from geojax.geo import sphere

GEOJAX_FORMAT = "geojax.tfds"
GEOJAX_VERSION = 1
COORDINATES_FILE = "geojax_coordinates-{split}.npy"
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
DEFAULT_FEATURES = {"image": "image", "lat": "latitude", "lng": "longitude", "id": "id"}
_WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk; JPEG/PNG do not compress
_CORE_FIELDS = ("image", "image_bytes", "lat", "lng", "id")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SPLIT = re.compile(r"[a-z0-9_]+")
_INSTALL = "pip install 'geojax[tfds]' (tensorflow-datasets; TensorFlow is not needed)"


def import_tfds() -> Any:
    """``tensorflow_datasets``, imported on first use (about 1 s), or an ImportError that
    says how to install it."""
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(f"reading or writing TFDS datasets needs tensorflow-datasets: {_INSTALL}."
                          ) from e
    return tfds


# ---------------------------------------------------------------------------------- writing
def _image_bytes(record: Mapping[str, Any], image_format: str) -> bytes:
    if record.get("image_bytes") is not None:
        return bytes(record["image_bytes"])
    if record.get("image") is None:
        raise ValueError(f"record {record.get('id')!r} has neither image_bytes nor image.")
    return encode_image(record["image"], image_format)


def _image_format_of(payload: bytes) -> str:
    return "jpeg" if payload[:3] == b"\xff\xd8\xff" else "png"


def _extra_feature(tfds: Any, field: str, value: Any) -> Any:
    """The TFDS feature that stores ``value`` of record field ``field`` exactly."""
    if isinstance(value, str):
        return tfds.features.Text()
    if isinstance(value, (bool, np.bool_)):
        return tfds.features.Scalar(np.bool_)
    if isinstance(value, (int, np.integer)):
        return tfds.features.Scalar(np.int64)
    if isinstance(value, float):
        value = np.float64(value)
    if isinstance(value, (np.generic, np.ndarray)) and np.asarray(value).dtype.kind in "iuf":
        array = np.asarray(value)
        return tfds.features.Tensor(shape=array.shape, dtype=array.dtype,
                                    encoding=tfds.features.Encoding.BYTES)
    raise TypeError(f"field {field!r}: a {type(value).__name__} cannot be stored in a TFDS "
                    "dataset by geojax; records hold str, bool, int, float and numeric numpy arrays "
                    "besides the image.")


def _features(tfds: Any, first: Mapping[str, Any], image_format: str) -> Any:
    """The ``FeaturesDict`` of records like ``first`` (the first good record)."""
    lat = tfds.features.Tensor(shape=(), dtype=np.float64, encoding=tfds.features.Encoding.BYTES)
    lng = tfds.features.Tensor(shape=(), dtype=np.float64, encoding=tfds.features.Encoding.BYTES)
    spec = {"image": tfds.features.Image(shape=(None, None, 3), encoding_format=image_format),
            "latitude": lat, "longitude": lng, "id": tfds.features.Text()}
    for field, value in sorted(first.items()):
        if field in _CORE_FIELDS:
            continue
        if field in spec:
            raise ValueError(f"record field {field!r} has the name of a geojax TFDS feature; "
                             "rename it before converting.")
        spec[field] = _extra_feature(tfds, field, value)
    return tfds.features.FeaturesDict(spec)


def _example(record: Mapping[str, Any], image: bytes, fields: Sequence[str]) -> dict[str, Any]:
    record_id = str(record["id"])
    present = set(record) - set(_CORE_FIELDS)
    if present != set(fields):
        raise ValueError(f"record {record_id!r} has fields {sorted(present)}, the first record "
                         f"{sorted(fields)}; a TFDS dataset has one set of features for all its "
                         "records and splits.")
    lat, lng = sphere.validate_latlng(record["lat"], record["lng"], name=f"record {record_id!r}")
    example = {"image": image, "latitude": np.float64(lat), "longitude": np.float64(lng),
               "id": record_id}
    example.update({f: record[f] for f in fields})
    return example


def _checked_image(record: Mapping[str, Any], image_format: str, check_images: bool,
                   report: ReadReport) -> bytes | None:
    """The record's encoded image, or None (counted in ``report``) when it does not decode."""
    image = _image_bytes(record, image_format)
    if check_images:
        try:
            decode_image(image, record_id=str(record.get("id")))
        except ImageDecodeError:
            report.skip("undecodable images", str(record.get("id")))
            return None
    return image


def _first_features(tfds: Any, splits: Mapping[str, Any], image_format: str,
                    check_images: bool) -> Any:
    """The features of the first record of the first split whose image decodes."""
    report = ReadReport("first records")
    for source in splits.values():
        for i in range(len(source)):
            record = source[i]
            image = _checked_image(record, image_format, check_images, report)
            if image is not None:
                return _features(tfds, record, _image_format_of(image))
    raise ValueError(f"no record to convert: every image is undecodable ({report.summary()}).")


def _write_shard(source: Any, path: str, start: int, stop: int, features: Any,
                 image_format: str, check_images: bool) -> dict[str, Any]:
    """Writes records ``[start, stop)`` of ``source`` into the ArrayRecord file ``path``;
    returns the rows read, the ids dropped and the ``(lat, lng)`` of the records written."""
    tfds = import_tfds()
    serializer = tfds.core.example_serializer.ExampleSerializer(features.get_serialized_info())
    fields = [f for f in features.keys() if f not in ("image", "latitude", "longitude", "id")]
    report = ReadReport(os.path.basename(path))
    coords = []
    writer = ArrayRecordWriter(path, _WRITER_OPTIONS)
    try:
        for i in range(start, stop):
            record = source[i]
            report.rows += 1
            image = _checked_image(record, image_format, check_images, report)
            if image is None:
                continue
            example = _example(record, image, fields)
            writer.write(serializer.serialize_example(features.encode_example(example)))
            coords.append((example["latitude"], example["longitude"]))
    finally:
        writer.close()
    fileio.fsync_path(path)
    return {"rows": report.rows, "skipped": report.skipped,
            "coords": np.asarray(coords, np.float64).reshape(-1, 2)}


_WORKER_SPLITS: Mapping[str, Any] = {}  # the sources of a conversion worker process


def _init_worker(splits: Mapping[str, Any]) -> None:
    global _WORKER_SPLITS  # pylint: disable=global-statement
    _WORKER_SPLITS = splits


def _write_shard_in_worker(split: str, *args: Any) -> dict[str, Any]:
    return _write_shard(_WORKER_SPLITS[split], *args)


def _write_shards(splits: Mapping[str, Any], tasks: Sequence[tuple], workers: int,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Runs the shard ``tasks`` (``(split, path, start, stop, features, image_format,
    check_images)``) in this process or in ``workers`` processes (``spawn``: no fork of a
    process that may hold threads; each receives the sources once, pickled). Returns the
    shards' results in task order; a failure cancels the shards not yet started."""
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    step = max(1, len(tasks) // 20)
    if workers <= 1 or len(tasks) <= 1:
        for k, (split, *args) in enumerate(tasks):
            results[k] = _write_shard(splits[split], *args)
            if len(tasks) > 1 and ((k + 1) % step == 0 or k + 1 == len(tasks)):
                log(f"{k + 1} of {len(tasks)} shards written")
        return results
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(dict(splits),))
    try:
        futures = {pool.submit(_write_shard_in_worker, *task): k for k, task in enumerate(tasks)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[future]] = future.result()
            if done % step == 0 or done == len(tasks):
                log(f"{done} of {len(tasks)} shards written")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _split_info(tfds: Any, split: str, source: Any, template: Any,
                results: Sequence[dict[str, Any]]) -> tuple[Any, ReadReport, np.ndarray]:
    """TFDS's SplitInfo of a written split, its conversion report and coordinates."""
    report = ReadReport(f"conversion of {source!r}", rows=sum(r["rows"] for r in results))
    for r in results:
        for reason, ids in r["skipped"].items():
            report.skipped.setdefault(reason, []).extend(ids)
    lengths = [len(r["coords"]) for r in results]
    report.kept = sum(lengths)
    if report.kept == 0:
        raise ValueError(f"split {split!r}: no record left to write: {report.summary()}")
    paths = [template.sharded_filepath(shard_index=s, num_shards=len(results))
             for s in range(len(results))]
    info = tfds.core.SplitInfo(name=split, shard_lengths=lengths,
                               num_bytes=sum(os.path.getsize(os.fspath(p)) for p in paths),
                               filename_template=template)
    return info, report, np.concatenate([r["coords"] for r in results])


def convert_to_tfds(splits: Mapping[str, Any], data_dir: str | os.PathLike, *,
                    name: str = "geojax", version: str = "1.0.0",
                    num_shards: int | Mapping[str, int] | None = None,
                    image_format: str = "png", check_images: bool = True, workers: int = 0,
                    overwrite: bool = False, description: str = "",
                    log: Callable[[str], None] = print) -> str:
    """Writes the sources of ``splits`` (split name → source) as a TFDS ArrayRecord dataset.

    The dataset is ``<data_dir>/<name>/<version>/`` (the returned path): what
    ``tfds.builder_from_directory`` takes, and what ``tfds.data_source(name,
    data_dir=data_dir)`` finds. Records keep their order; each split is cut into
    ``num_shards`` contiguous shards (default ``ceil(len / 10000)``; an int for every split
    or a split → int mapping) named ``<name>-<split>.array_record-0000s-of-0000N``, written
    with ``group_size:1`` for random access. TFDS's ``dataset_info.json``, ``features.json``
    and ``metadata.json`` (geojax's conversion summaries) are written by TFDS's own
    ``tfds.folder_dataset.write_metadata``. Undecodable images are dropped, counted and
    listed in the summary (``check_images=False`` stores them unchecked). Every record must
    have the same fields (the features are those of the first good record); invalid
    coordinates are a ``ValueError`` naming the record.

    Crash safety: the dataset is written under a hidden temporary folder next to the
    version folder and renamed into place when complete (on an object store, written
    locally and uploaded with ``dataset_info.json`` last), so the version folder either
    does not exist or is complete. An existing one is refused unless ``overwrite=True``.

    Args:
      splits: split name (``[a-z0-9_]``, e.g. ``train``, ``im2gps3k``) → random-access source
        of geojax Example records (any reader of :mod:`geojax.data.sources`, a GeoWorld split,
        an :class:`~geojax.data.sources.ArrayRecordSource`).
      name: the TFDS dataset name (lower case, digits and ``_``).
      version: ``MAJOR.MINOR.PATCH``.
      image_format: how a decoded ``image`` (a GeoWorld split) is encoded: ``"png"`` (exact
        pixels) or ``"jpeg"`` (quality 95); encoded ``image_bytes`` are stored as they are.
      workers: shards written by this many processes (``spawn``ed; each receives the sources
        pickled, as every geojax reader allows); 0 or 1: in this process. The output does not
        depend on it.
    """
    tfds = import_tfds()
    if not splits:
        raise ValueError("no splits to convert; pass e.g. {'train': source}.")
    if not _NAME.fullmatch(name):
        raise ValueError(f"name={name!r} is not a TFDS dataset name (a lower-case letter, then "
                         "lower-case letters, digits and '_').")
    if not tfds.core.Version.is_valid(version):
        raise ValueError(f"version={version!r} is not MAJOR.MINOR.PATCH.")
    bad = [s for s in splits if not _SPLIT.fullmatch(s)]
    if bad:
        raise ValueError(f"split names {bad} are not TFDS split names (lower case, digits, '_').")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")
    out_dir = fileio.join(fileio.absolute(data_dir), name, version)
    if fileio.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to "
                              "replace it.")
    local = fileio.is_local(out_dir)
    parent = os.path.dirname(out_dir)
    if local:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{version}.tmp-{uuid.uuid4().hex[:12]}")
        os.makedirs(tmp)
    else:
        tmp = tempfile.mkdtemp(prefix=f"geojax-{name}-{version}.tmp-")
    try:
        features = _first_features(tfds, splits, image_format, check_images)
        tasks, templates = [], {}
        for split, source in splits.items():
            n = len(source)
            if n == 0:
                raise ValueError(f"split {split!r}: {source!r} has no records to convert.")
            shards = num_shards.get(split) if isinstance(num_shards, Mapping) else num_shards
            shards = max(1, math.ceil(n / 10_000)) if shards is None else int(shards)
            if shards < 1:
                raise ValueError(f"num_shards must be >= 1, got {shards} for split {split!r}.")
            shards = min(shards, n)
            templates[split] = tfds.core.ShardedFileTemplate(
                data_dir=tfds.core.Path(tmp), template=FILENAME_TEMPLATE, dataset_name=name,
                split=split, filetype_suffix="array_record")
            tasks += [(split, os.fspath(templates[split].sharded_filepath(shard_index=s,
                                                                           num_shards=shards)),
                       s * n // shards, (s + 1) * n // shards, features, image_format,
                       check_images) for s in range(shards)]
        t0 = time.perf_counter()
        results = _write_shards(splits, tasks, workers, log)
        rows = sum(r["rows"] for r in results)
        log(f"read {rows} records, {rows / max(time.perf_counter() - t0, 1e-9):.0f} records/s")
        infos, summaries = [], {}
        for split, source in splits.items():
            mine = [r for task, r in zip(tasks, results) if task[0] == split]
            info, report, coords = _split_info(tfds, split, source, templates[split], mine)
            infos.append(info)
            source_report = getattr(source, "report", None)
            summaries[split] = _conversion_summary(
                source_report if isinstance(source_report, ReadReport) else None, report)
            log(f"split {split!r}: {report.kept} records in {len(mine)} shard(s). "
                f"{summaries[split]}")
            with open(os.path.join(tmp, COORDINATES_FILE.format(split=split)), "wb") as f:
                np.save(f, coords)
        metadata = tfds.core.MetadataDict(format=GEOJAX_FORMAT, version=GEOJAX_VERSION,
                                          summaries=summaries, checked_images=bool(check_images),
                                          sources={s: repr(src) for s, src in splits.items()})
        tfds.folder_dataset.write_metadata(
            data_dir=tmp, features=features, split_infos=infos, version=version,
            filename_template=infos[0].filename_template.replace(split=None), check_data=False,
            description=description or f"geojax Example records ({', '.join(splits)}).",
            metadata=metadata, disable_shuffling=True)
        _check_readable(tfds, tmp, infos)  # write_metadata's check_data reads with TensorFlow
        for filename in fileio.files_under(tmp):
            fileio.fsync_path(os.path.join(tmp, filename))
        fileio.fsync_path(tmp)
        fileio.publish_folder(tmp, out_dir, last="dataset_info.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote TFDS dataset {name}:{version} to {out_dir}.")
    return out_dir


def _check_readable(tfds: Any, folder: str, infos: Sequence[Any]) -> None:
    """TFDS opens the written dataset: every split has its records, first and last parse."""
    builder = tfds.builder_from_directory(folder)
    for info in infos:
        data = builder.as_data_source(info.name, decoders={"image": tfds.decode.SkipDecoding()})
        if len(data) != info.num_examples:
            raise RuntimeError(f"TFDS reads {len(data)} records in split {info.name!r} of "
                               f"{folder}, {info.num_examples} were written.")
        data.__getitems__([0, len(data) - 1])


# ---------------------------------------------------------------------------------- reading
def _builder(tfds_dir: str) -> Any:
    tfds = import_tfds()
    if not fileio.isfile(fileio.join(tfds_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{tfds_dir} is not a TFDS dataset folder (no dataset_info.json); "
                                "give the version folder, <data_dir>/<name>/<version>.")
    return tfds.builder_from_directory(tfds_dir)


class TfdsSource:
    """One split of a TFDS ArrayRecord dataset as a geojax random-access source.

    Record ``i`` is ``{"image_bytes", "lat", "lng", "id", ...}``: the image feature's
    encoded bytes (not decoded: the pipeline decodes, and counts what fails), the
    latitude and longitude features as float64 degrees, the id feature as ``str`` (no id
    feature: ``"<split>:<i>"``), and every other top-level scalar feature under its own
    name (Text as ``str``, numbers as numpy scalars). Reads with TFDS's
    ``as_data_source`` (no TensorFlow); the image feature is read with
    ``tfds.decode.SkipDecoding``.

    ``lat`` / ``lng`` come from the side file ``geojax_coordinates-<split>.npy`` when the
    folder has one (:func:`convert_to_tfds` writes it; :func:`write_coordinates` adds it to
    a dataset geojax did not write), otherwise from reading every record of the split
    once, on first access (:meth:`read_coordinates`).

    Args:
      tfds_dir: the dataset's version folder (``<data_dir>/<name>/<version>``, the folder
        holding ``dataset_info.json``).
      split: a split name, or TFDS's slicing syntax (``"train[:90%]"``).
      features: which feature holds what: keys ``image``, ``lat``, ``lng`` and ``id`` (``""``
        or absent: ``id`` when the dataset has it, else index ids); defaults
        :data:`DEFAULT_FEATURES`. Nested features are named with ``/`` (``"gps/lat"``).
    """

    def __init__(self, tfds_dir: str | os.PathLike, split: str,
                 features: Mapping[str, str] | None = None):
        self.tfds_dir = os.fspath(tfds_dir)
        self.split = str(split)
        builder = _builder(self.tfds_dir)
        info = builder.info
        if str(info.file_format.value if info.file_format else "") != "array_record":
            fmt = info.file_format.value if info.file_format else "unknown"
            raise ValueError(f"{self.tfds_dir}: TFDS dataset stored as {fmt}; geojax reads TFDS "
                             "datasets in the array_record format (random access). Convert it "
                             f"once with `tfds convert_format --dataset_version_dir={self.tfds_dir}"
                             " --out_file_format=array_record --out_dir=<new folder>` (reading "
                             "TFRecord files needs TensorFlow; the result does not).")
        keys = dict(DEFAULT_FEATURES, id="")
        unknown = sorted(set(features or {}) - set(keys))
        if unknown:
            raise ValueError(f"unknown feature roles {unknown}; name the features of "
                             f"{sorted(keys)}.")
        keys.update({k: v for k, v in (features or {}).items() if v is not None})
        flat = _flat_features(info.features)
        self._check_feature(flat, keys["image"], "image")
        self._check_feature(flat, keys["lat"], "lat")
        self._check_feature(flat, keys["lng"], "lng")
        if not keys["id"]:
            keys["id"] = "id" if _is_scalar(flat.get("id")) else ""
        elif keys["id"] not in flat:
            raise ValueError(f"{self.tfds_dir}: no feature {keys['id']!r} for the ids; features: "
                             f"{sorted(flat)}.")
        self.keys = keys
        used = {keys["image"], keys["lat"], keys["lng"], keys["id"]}
        self.fields = sorted(k for k, f in flat.items()
                             if "/" not in k and k not in used and k not in _CORE_FIELDS
                             and not k.startswith("label_") and _is_scalar(f))
        try:
            self._len = len(builder.as_data_source(self.split))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.tfds_dir}: no split {self.split!r}; splits: "
                             f"{sorted(info.splits)}.") from e
        if self._len == 0:
            raise ValueError(f"{self.tfds_dir}: split {self.split!r} has no records.")
        self.metadata = dict(info.metadata or {})
        self._pid, self._data, self._coords = None, None, None

    def _check_feature(self, flat: Mapping[str, Any], key: str, role: str) -> None:
        tfds = import_tfds()
        feature = flat.get(key)
        if feature is None:
            raise ValueError(f"{self.tfds_dir}: no feature {key!r} for the {role}; features: "
                             f"{sorted(flat)}. Name it with "
                             f"--config.data.tfds_features.{role}=<feature>.")
        if role == "image" and not isinstance(feature, tfds.features.Image):
            raise ValueError(f"{self.tfds_dir}: feature {key!r} is a {type(feature).__name__}, "
                             "not a tfds.features.Image.")
        if role in ("lat", "lng") and not (_is_scalar(feature)
                                           and np.dtype(feature.np_dtype).kind == "f"):
            raise ValueError(f"{self.tfds_dir}: feature {key!r} ({role}) is "
                             f"{feature!r}; it must be a scalar float (degrees).")

    def _reader(self) -> Any:
        """This process's TFDS data source; a forked child opens its own."""
        if self._data is None or os.getpid() != self._pid:
            tfds = import_tfds()
            decoders = _nest({self.keys["image"]: tfds.decode.SkipDecoding()})
            self._data = _builder(self.tfds_dir).as_data_source(self.split, decoders=decoders)
            self._pid = os.getpid()
        return self._data

    def __len__(self) -> int:
        return self._len

    def _record(self, i: int, example: Mapping[str, Any]) -> dict[str, Any]:
        flat = _flatten(example)
        record = {"image_bytes": bytes(flat[self.keys["image"]]),
                  "lat": np.float64(flat[self.keys["lat"]]),
                  "lng": np.float64(flat[self.keys["lng"]]),
                  "id": _text(flat[self.keys["id"]]) if self.keys["id"] else f"{self.split}:{i}"}
        for field in self.fields:
            value = flat[field]
            record[field] = (_text(value) if isinstance(value, (bytes, str))
                             or np.asarray(value).dtype.kind in "SOU" else np.asarray(value)[()])
        return record

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        i = _check_index(i, len(self))
        return self._record(i, self._reader()[i])

    def __getitems__(self, indices: Sequence[SupportsIndex]) -> list[dict[str, Any]]:
        keys = [_check_index(i, len(self)) for i in indices]
        return [self._record(i, ex) for i, ex in zip(keys, self._reader().__getitems__(keys))]

    _getitems = __getitems__  # grain's batched read (pipeline.make_dataset)

    def coordinates(self) -> np.ndarray:
        """``(len, 2)`` float64 (lat, lng) of every record, in record order."""
        if self._coords is None:
            path = (coordinates_path(self.tfds_dir, self.split) if _SPLIT.fullmatch(self.split)
                    else None)
            if path is not None and fileio.isfile(path):
                with fileio.open_file(path, "rb") as f:
                    coords = np.load(f, allow_pickle=False)
                if coords.shape != (len(self), 2):
                    raise ValueError(f"{path}: coordinates of shape {coords.shape}, expected "
                                     f"({len(self)}, 2); delete it and write it again "
                                     "(tfds_format.write_coordinates).")
            else:
                coords = self.read_coordinates()
            self._coords = coords
        return self._coords

    def read_coordinates(self, chunk: int = 1024) -> np.ndarray:
        """``(len, 2)`` float64 (lat, lng) read from every record: a full pass over the split
        (records/s: ``benchmarks/tfds_format.py``)."""
        data, n = self._reader(), len(self)
        out = np.empty((n, 2), np.float64)
        lat, lng = self.keys["lat"], self.keys["lng"]
        for start in range(0, n, chunk):
            rows = [_flatten(ex) for ex in data.__getitems__(range(start, min(start + chunk, n)))]
            out[start:start + len(rows), 0] = [r[lat] for r in rows]
            out[start:start + len(rows), 1] = [r[lng] for r in rows]
        return out

    @property
    def lat(self) -> np.ndarray:
        return self.coordinates()[:, 0]

    @property
    def lng(self) -> np.ndarray:
        return self.coordinates()[:, 1]

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _pid=None, _data=None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"TfdsSource({self.tfds_dir!r}, split={self.split!r}, {len(self)} records)"


def coordinates_path(tfds_dir: str | os.PathLike, split: str) -> str:
    """The side file of a split's ``(lat, lng)``: ``<tfds_dir>/geojax_coordinates-<split>.npy``."""
    if not _SPLIT.fullmatch(split):
        raise ValueError(f"split {split!r}: a side file of coordinates is kept for whole splits "
                         "(lower case, digits, '_'), not slices.")
    return fileio.join(os.fspath(tfds_dir), COORDINATES_FILE.format(split=split))


def write_coordinates(tfds_dir: str | os.PathLike, split: str,
                      features: Mapping[str, str] | None = None) -> str:
    """Reads every record of ``split`` once and writes its ``(lat, lng)`` side file
    (atomically) into the dataset folder, so that later :class:`TfdsSource` s of a TFDS
    dataset that geojax did not write skip that pass. Returns the file's path."""
    source = TfdsSource(tfds_dir, split, features)
    path = coordinates_path(tfds_dir, split)
    buf = io.BytesIO()
    np.save(buf, source.read_coordinates())
    fileio.atomic_write(path, buf.getvalue())
    return path


def _flat_features(features: Any) -> dict[str, Any]:
    """``{"a/b": feature}`` of the (nested) ``FeaturesDict``'s leaf features."""
    tfds = import_tfds()
    out = {}
    for key, feature in features.items():
        if isinstance(feature, tfds.features.FeaturesDict):
            out.update({f"{key}/{k}": v for k, v in _flat_features(feature).items()})
        else:
            out[key] = feature
    return out


def _is_scalar(feature: Any) -> bool:
    tfds = import_tfds()
    return (isinstance(feature, tfds.features.Tensor)
            and not isinstance(feature, tfds.features.Image) and tuple(feature.shape) == ())


def _flatten(example: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in example.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _text(value: Any) -> str:
    value = np.asarray(value)[()] if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
