"""Any source into ArrayRecord shards (msgpack records, no pickle, no TensorFlow) and back."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Sequence, SupportsIndex

import msgpack
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from geojax import fileio
from geojax.geo import sphere
from geojax.data.sources.common import ReadReport, _check_index
from geojax.data.sources.images import ImageDecodeError, decode_image, encode_image

# ----------------------------------------------------------------------------------
# 4. ArrayRecord
# ----------------------------------------------------------------------------------

_DATASET_FORMAT = "geojax.array_record"
_DATASET_VERSION = 1
COORDINATES_FILE = "coordinates.npy"
_NDARRAY_EXT = 1  # msgpack ext type of a numeric numpy array: [dtype.str, shape, raw bytes]
_WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk; JPEG/PNG do not compress


def _plain(value: Any, field: str) -> Any:
    """A record value as a msgpack-native value (or an ndarray ext); never pickle."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        payload = msgpack.packb([value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()])
        return msgpack.ExtType(_NDARRAY_EXT, payload)
    if isinstance(value, (list, tuple)):
        return [_plain(v, field) for v in value]
    raise TypeError(f"field {field!r}: a {type(value).__name__} cannot be stored; records hold "
                    "bytes, str, int, float, bool, None, lists of them and numeric numpy arrays.")


def _serialize_record(record: Mapping[str, Any], image_format: str) -> tuple[bytes, dict[str, str]]:
    """msgpack bytes of one record and its field types.

    A decoded ``image`` is encoded into ``image_bytes`` when the record has none, and
    dropped when it has (the encoded bytes are the original).
    """
    record = dict(record)
    image = record.pop("image", None)
    if "image_bytes" not in record and image is not None:
        record["image_bytes"] = encode_image(image, image_format)
    missing = [k for k in ("image_bytes", "lat", "lng", "id") if k not in record]
    if missing:
        raise ValueError(f"record {record.get('id')!r} lacks {missing}; an Example needs image_bytes "
                         "(or image), lat, lng and id.")
    plain = {str(k): _plain(v, k) for k, v in record.items()}
    plain["id"] = str(plain["id"])
    lat, lng = sphere.validate_latlng(plain["lat"], plain["lng"], name=f"record {plain['id']!r}")
    plain["lat"], plain["lng"] = float(lat), float(lng)
    types = {k: "ndarray" if isinstance(v, msgpack.ExtType) else type(v).__name__ for k, v in plain.items()}
    return msgpack.packb(plain, use_bin_type=True), types


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _NDARRAY_EXT:
        raise ValueError(f"unknown msgpack ext type {code} in a geojax record.")
    dtype, shape, raw = msgpack.unpackb(data, raw=False)
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()


def _deserialize_record(payload: bytes) -> dict[str, Any]:
    record = msgpack.unpackb(payload, raw=False, ext_hook=_ext_hook)
    for key, value in record.items():  # the same scalar types the readers return
        if isinstance(value, float):
            record[key] = np.float64(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            record[key] = np.int64(value)
    return record


# ---------------------------------------------------------------------------- conversion plan
# A conversion is cut into output shards; shard s holds the source's records
# [s * n // S, (s + 1) * n // S) (less the undecodable ones), so its content does not depend on
# which process or host writes it. A share (one host's part of a conversion over hosts) is the
# contiguous run of shards [i * S // N, (i + 1) * S // N).

PARTS_DIR = "parts"  # a conversion over hosts: plan.json and one manifest per finished shard
_PLAN_FILE = "plan.json"
_PLAN_KEYS = ("format", "version", "name", "num_records", "num_shards", "num_shares",
              "image_format", "check_images", "source_fingerprint")  # what every share must agree on


def _shard_file(name: str, s: int, num_shards: int) -> str:
    return f"{name}-{s:05d}-of-{num_shards:05d}.array_record"


def share_shards(share_index: int, num_shares: int, num_shards: int) -> range:
    """The output shards written by share ``share_index`` of ``num_shares``."""
    return range(share_index * num_shards // num_shares, (share_index + 1) * num_shards // num_shares)


def _source_fingerprint(source: Any) -> str | None:
    """sha256 of the source's record count and coordinates (None for a source without
    ``lat`` / ``lng``): shares of one conversion must read the same input."""
    lat, lng = getattr(source, "lat", None), getattr(source, "lng", None)
    if lat is None or lng is None:
        return None
    digest = hashlib.sha256(str(len(source)).encode())
    digest.update(np.ascontiguousarray(lat, np.float64).tobytes())
    digest.update(np.ascontiguousarray(lng, np.float64).tobytes())
    return digest.hexdigest()


def _make_plan(source: Any, *, name: str, num_shards: int, num_shares: int, image_format: str,
               check_images: bool) -> dict[str, Any]:
    source_report = getattr(source, "report", None)
    return {"format": _DATASET_FORMAT, "version": _DATASET_VERSION, "name": name,
            "num_records": len(source), "num_shards": num_shards, "num_shares": num_shares,
            "image_format": image_format, "check_images": bool(check_images),
            "source_fingerprint": _source_fingerprint(source), "source": repr(source),
            "source_report": source_report.to_json() if isinstance(source_report, ReadReport) else None}


# ---------------------------------------------------------------------------- writing shards
def _write_shard(source: Any, folder: str, s: int, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Writes output shard ``s`` into ``folder`` (atomically: a hidden temporary file, fsync,
    rename; on an object store one upload) and returns its manifest: file, count, rows read,
    field types, the ids it dropped and the (lat, lng) of its records in order."""
    n, num_shards = plan["num_records"], plan["num_shards"]
    filename = _shard_file(plan["name"], s, num_shards)
    local = fileio.is_local(folder)
    staging = folder if local else tempfile.mkdtemp(prefix="geojax-shard-")
    tmp = os.path.join(staging, f".{filename}.tmp-{uuid.uuid4().hex[:12]}")
    report = ReadReport(filename)
    fields: dict[str, str] = {}
    lat, lng = [], []
    try:
        writer = ArrayRecordWriter(tmp, _WRITER_OPTIONS)
        try:
            for i in range(s * n // num_shards, (s + 1) * n // num_shards):
                record = source[i]
                report.rows += 1
                if plan["check_images"] and "image_bytes" in record:
                    try:
                        decode_image(record["image_bytes"], record_id=str(record.get("id")))
                    except ImageDecodeError:
                        report.skip("undecodable images", str(record.get("id")))
                        continue
                payload, types = _serialize_record(record, plan["image_format"])
                writer.write(payload)
                lat.append(float(record["lat"]))
                lng.append(float(record["lng"]))
                fields.update(types)
        finally:
            writer.close()
        fileio.fsync_path(tmp)
        if local:
            os.replace(tmp, os.path.join(folder, filename))
        else:
            fileio.upload_file(tmp, fileio.join(folder, filename))
    finally:
        if local:
            if os.path.exists(tmp):
                os.unlink(tmp)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    return {"shard": s, "file": filename, "count": len(lat), "rows": report.rows, "fields": fields,
            "skipped": report.skipped, "lat": lat, "lng": lng}


_WORKER_SOURCE: Any = None  # the source of a conversion worker process


def _init_worker(source: Any) -> None:
    global _WORKER_SOURCE  # pylint: disable=global-statement
    _WORKER_SOURCE = source


def _write_shard_in_worker(folder: str, s: int, plan: Mapping[str, Any]) -> dict[str, Any]:
    return _write_shard(_WORKER_SOURCE, folder, s, plan)


def _write_shards(source: Any, folder: str, shards: Sequence[int], plan: Mapping[str, Any],
                  workers: int, done: Callable[[dict[str, Any]], None],
                  log: Callable[[str], None]) -> None:
    """Writes ``shards`` into ``folder`` with ``workers`` processes, calling ``done(manifest)``
    in the calling process as each shard is complete.

    Worker processes are started with ``spawn`` (no fork of a process that may hold threads)
    and receive the source once, pickled (every geojax reader pickles its index, not its
    open files). A failure in any shard cancels the shards not yet started and is raised.
    """
    step = max(1, len(shards) // 20)
    finished = 0

    def complete(manifest: dict[str, Any]) -> None:
        nonlocal finished
        done(manifest)
        finished += 1
        if len(shards) > 1 and (finished % step == 0 or finished == len(shards)):
            log(f"{finished} of {len(shards)} shards written")

    if workers <= 1 or len(shards) <= 1:
        for s in shards:
            complete(_write_shard(source, folder, s, plan))
        return
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(shards)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(source,))
    try:
        futures = [pool.submit(_write_shard_in_worker, folder, s, plan) for s in shards]
        for future in concurrent.futures.as_completed(futures):
            complete(future.result())
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# ---------------------------------------------------------------------------- finishing
def _write_dataset_files(folder: str, plan: Mapping[str, Any], manifests: Sequence[Mapping[str, Any]],
                         log: Callable[[str], None]) -> dict[str, Any]:
    """Writes ``coordinates.npy``, ``report.json`` and, last, ``metadata.json`` (each atomically)
    from the shard manifests; returns the metadata."""
    manifests = sorted(manifests, key=lambda m: m["shard"])
    report = ReadReport(f"conversion of {plan['source']}")
    fields: dict[str, str] = {}
    for m in manifests:
        report.rows += m["rows"]
        report.kept += m["count"]
        fields.update(m["fields"])
        for reason, ids in m["skipped"].items():
            report.skipped.setdefault(reason, []).extend(ids)
    if report.kept == 0:
        raise ValueError(f"no record left to write: {report.summary()}")
    source_report = (ReadReport(**plan["source_report"]) if plan.get("source_report") is not None
                     else None)
    summary = _conversion_summary(source_report, report)
    num_shards = plan["num_shards"]
    metadata = {
        "format": _DATASET_FORMAT, "version": _DATASET_VERSION, "name": plan["name"],
        "count": report.kept, "num_shards": num_shards,
        "shards": [{"file": m["file"], "count": m["count"]} for m in manifests],
        "fields": dict(sorted(fields.items())), "writer_options": _WRITER_OPTIONS,
        "decoded_images_encoded_as": plan["image_format"], "source": plan["source"],
        "source_report": source_report.summary() if source_report is not None else None,
        "conversion_report": report.summary(), "summary": summary,
        "checked_images": plan["check_images"], "created_unix_s": time.time(),
    }
    full_report = {"source": source_report.to_json() if source_report is not None else None,
                   "conversion": report.to_json()}
    coords = np.stack([np.concatenate([np.asarray(m["lat"], np.float64) for m in manifests]),
                       np.concatenate([np.asarray(m["lng"], np.float64) for m in manifests])], axis=1)
    buf = io.BytesIO()
    np.save(buf, coords)
    fileio.atomic_write(fileio.join(folder, COORDINATES_FILE), buf.getvalue())
    fileio.atomic_write(fileio.join(folder, "report.json"), json.dumps(full_report, indent=1))
    fileio.atomic_write(fileio.join(folder, "metadata.json"), json.dumps(metadata, indent=1))
    log(f"wrote {report.kept} records in {num_shards} shard(s) to {folder}. {summary}")
    return metadata


def _read_plan(out_dir: str) -> dict[str, Any] | None:
    path = fileio.join(out_dir, PARTS_DIR, _PLAN_FILE)
    return json.loads(fileio.read_text(path)) if fileio.isfile(path) else None


def _finished_shards(out_dir: str, plan: Mapping[str, Any]) -> set[int]:
    names = set(fileio.listdir(fileio.join(out_dir, PARTS_DIR)))
    return {s for s in range(plan["num_shards"])
            if _shard_file(plan["name"], s, plan["num_shards"]) + ".json" in names}


def _missing_shares(plan: Mapping[str, Any], finished: set[int]) -> list[int]:
    return [i for i in range(plan["num_shares"])
            if not set(share_shards(i, plan["num_shares"], plan["num_shards"])) <= finished]


def _shares(indices: Sequence[int]) -> str:
    return ("share " if len(indices) == 1 else "shares ") + ", ".join(map(str, indices))


def incomplete_conversion_message(out_dir: str | os.PathLike) -> str | None:
    """What is missing from a conversion over hosts that has not finished (None if ``out_dir``
    holds no such conversion)."""
    out_dir = os.fspath(out_dir)
    plan = _read_plan(out_dir)
    if plan is None:
        return None
    finished = _finished_shards(out_dir, plan)
    missing = _missing_shares(plan, finished)
    n = plan["num_shares"]
    if not missing:
        return (f"{out_dir} is a conversion whose {n} shares are all done but whose metadata.json "
                f"was never written; run `python -m geojax.data.sources finalize --out={out_dir}`.")
    return (f"{out_dir} is not a complete geojax ArrayRecord dataset: an unfinished conversion over "
            f"{n} shares ({len(finished)} of {plan['num_shards']} output shards written; "
            f"{_shares(missing)} not finished). Run the convert command again with "
            f"--shard_index=I --num_shards={n} for each unfinished share I (finished shards are "
            "kept); the last share to finish writes metadata.json.")


def finalize_array_record(out_dir: str | os.PathLike, *, log: Callable[[str], None] = print
                          ) -> dict[str, Any]:
    """Writes ``metadata.json`` (with ``coordinates.npy`` and ``report.json``) of a conversion
    over hosts whose shares are all finished; the last share does this itself, so this is for a
    last share that died after writing its shards. Idempotent.

    Raises:
      FileNotFoundError: ``out_dir`` holds no conversion over hosts.
      ValueError: some shares are not finished (the message names them).
    """
    out_dir = fileio.absolute(out_dir)
    plan = _read_plan(out_dir)
    if plan is None:
        raise FileNotFoundError(f"{out_dir} holds no conversion over hosts ({PARTS_DIR}/{_PLAN_FILE} "
                                "is missing).")
    finished = _finished_shards(out_dir, plan)
    if len(finished) < plan["num_shards"]:
        raise ValueError(incomplete_conversion_message(out_dir))
    manifests = [json.loads(fileio.read_text(fileio.join(
        out_dir, PARTS_DIR, _shard_file(plan["name"], s, plan["num_shards"]) + ".json")))
        for s in range(plan["num_shards"])]
    return _write_dataset_files(out_dir, plan, manifests, log)


def _convert_share(source: Any, out_dir: str, plan: dict[str, Any], share_index: int, workers: int,
                   log: Callable[[str], None]) -> dict[str, Any] | None:
    """One share of a conversion over hosts, written straight into ``out_dir`` (see
    :func:`convert_to_array_record`)."""
    num_shares = plan["num_shares"]
    theirs = _read_plan(out_dir)
    if theirs is None:
        if fileio.isfile(fileio.join(out_dir, "metadata.json")):
            raise FileExistsError(f"{out_dir} already holds a dataset; remove it (a conversion over "
                                  "hosts does not overwrite) or choose another --out.")
        fileio.atomic_write(fileio.join(out_dir, PARTS_DIR, _PLAN_FILE), json.dumps(plan, indent=1))
    else:
        differ = [k for k in _PLAN_KEYS if theirs.get(k) != plan[k]]
        if differ:
            raise ValueError(f"{out_dir} holds a conversion with other settings ("
                             + "; ".join(f"{k}: {theirs.get(k)!r} there, {plan[k]!r} here" for k in differ)
                             + "). Every share must read the same input with the same options; "
                             "remove the folder or choose another --out.")
        if fileio.isfile(fileio.join(out_dir, "metadata.json")):
            log(f"{out_dir} is already complete; nothing to do for share {share_index} of {num_shares}.")
            return json.loads(fileio.read_text(fileio.join(out_dir, "metadata.json")))
    mine = share_shards(share_index, num_shares, plan["num_shards"])
    finished = _finished_shards(out_dir, plan)
    todo = [s for s in mine if s not in finished]
    if len(todo) < len(mine):
        log(f"share {share_index} of {num_shares}: {len(mine) - len(todo)} of {len(mine)} shards "
            "already written; resuming with the rest.")
    if fileio.is_local(out_dir):  # temporary files of this share's shards left by a killed run
        for s in todo:
            prefix = f".{_shard_file(plan['name'], s, plan['num_shards'])}.tmp-"
            for leftover in (f for f in os.listdir(out_dir) if f.startswith(prefix)):
                os.unlink(os.path.join(out_dir, leftover))

    def done(manifest: dict[str, Any]) -> None:
        fileio.atomic_write(fileio.join(out_dir, PARTS_DIR, manifest["file"] + ".json"),
                            json.dumps(manifest))

    _write_shards(source, out_dir, todo, plan, workers, done,
                  lambda line: log(f"share {share_index} of {num_shares}: {line} to {out_dir}"))
    missing = _missing_shares(plan, _finished_shards(out_dir, plan))
    if missing:
        log(f"share {share_index} of {num_shares} is done; {_shares(missing)} not finished yet (the "
            "last share to finish writes metadata.json).")
        return None
    if fileio.isfile(fileio.join(out_dir, "metadata.json")):  # another share finished at the same time
        return json.loads(fileio.read_text(fileio.join(out_dir, "metadata.json")))
    return finalize_array_record(out_dir, log=log)


def convert_to_array_record(source: Any, out_dir: str | os.PathLike, *, num_shards: int | None = None,
                            name: str = "geojax", overwrite: bool = False, image_format: str = "png",
                            check_images: bool = True, workers: int = 1, share_index: int = 0,
                            num_shares: int = 1, log: Callable[[str], None] = print
                            ) -> dict[str, Any] | None:
    """Writes every record of ``source`` into ArrayRecord shards under ``out_dir``.

    Records keep their order (global index i of the dataset is ``source[i]``), split into
    ``num_shards`` contiguous output shards ``{name}-00000-of-0000N.array_record`` (default:
    one per 10,000 records, at least ``num_shares``) written with ``group_size:1`` for random
    access; output shard s holds ``source[s * n // N : (s + 1) * n // N]`` less the
    undecodable images, whoever writes it. Each record is a msgpack map of plain values (no
    pickle); a decoded ``image`` array (a GeoWorld split) is stored as PNG by default
    (lossless: decoding gives back the exact pixels) or JPEG quality 95
    (``image_format="jpeg"``, ~5x smaller, not exact). ``metadata.json`` holds the count,
    shards, field types and the source's description and report summary;
    ``report.json`` the full list of skipped ids; ``coordinates.npy`` the ``(count, 2)``
    float64 (lat, lng) of every record, so that partitions can be built without reading
    the images.

    Parallel: ``workers`` processes on this machine each write whole output shards (the
    source is pickled to them once). Over hosts: each host runs the same conversion with its
    ``share_index`` in ``[0, num_shares)`` and the same ``out_dir`` (a shared file system or a
    ``gs://`` folder), and writes output shards ``share_shards(share_index, num_shares,
    num_shards)``; the result does not depend on ``workers`` nor on ``num_shares``: the same
    records in the same order, the same ``coordinates.npy``.

    Crash safety, one host (``num_shares=1``): everything is written and fsynced under a
    hidden temporary folder next to ``out_dir``, which is renamed to ``out_dir`` only when
    complete, so ``out_dir`` either does not exist or is a complete dataset. An existing
    ``out_dir`` is refused unless ``overwrite=True``, in which case it is replaced only after
    the new one is complete. On an object store (``out_dir`` a ``gs://`` URL), where a rename
    is a copy, the dataset is written into a local temporary folder, then (after removing an
    existing ``out_dir`` when overwriting) uploaded file by file with ``metadata.json`` last
    (:func:`geojax.fileio.upload_tree`): a folder without it is refused by
    :class:`ArrayRecordSource` as incomplete.

    Crash safety, over hosts (``num_shares > 1``): the shares write into ``out_dir`` itself:
    ``parts/plan.json`` (the settings every share must agree on, checked by each), each
    output shard atomically and then its manifest ``parts/<shard file>.json``. The share that
    finds every manifest present once its own shards are written (the last to finish) writes
    ``coordinates.npy``, ``report.json`` and ``metadata.json`` last; until then
    :class:`ArrayRecordSource` refuses the folder, naming the unfinished shares. Running a
    share again resumes it (its written shards are kept); :func:`finalize_array_record`
    completes a folder whose last share died after writing its shards.

    The conversion's one summary (passed once to ``log``, and ``summary`` in
    ``metadata.json``) counts the rows the source skipped and the records the conversion
    dropped together, e.g. ``meta.csv: 45 of 47 rows read; skipped 2 undecodable images
    (e.g. a.jpg, b.jpg).``

    Args:
      check_images: decode each record's ``image_bytes`` (one full PIL decode) and drop the
        undecodable ones, counted in the summary and ``report.json``. False stores the bytes
        unchecked (the pipeline then skips, and counts, what fails to decode).
      workers: processes writing shards on this machine.
      share_index, num_shares: this host's share of a conversion over ``num_shares`` hosts
        (``--shard_index`` / ``--num_shards`` of the command line).

    Returns:
      The metadata written to ``metadata.json``; None for a share that finished while other
      shares were still running.
    """

    out_dir = fileio.absolute(out_dir)
    local = fileio.is_local(out_dir)
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    if num_shares < 1 or not 0 <= share_index < num_shares:
        raise ValueError(f"share {share_index} of {num_shares}: need num_shares >= 1 (--num_shards) "
                         "and 0 <= share_index < num_shares (--shard_index).")
    n = len(source)
    if n == 0:
        raise ValueError(f"{source!r} has no records to convert.")
    num_shards = max(math.ceil(n / 10_000), num_shares) if num_shards is None else num_shards
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    num_shards = min(num_shards, n)
    if num_shards < num_shares:
        raise ValueError(f"{num_shards} output shard(s) cannot be split over {num_shares} shares; "
                         f"give at least {num_shares} output shards (and at least one record each).")
    plan = _make_plan(source, name=name, num_shards=num_shards, num_shares=num_shares,
                      image_format=image_format, check_images=check_images)
    if num_shares > 1:
        if overwrite:
            raise ValueError("overwrite is not available for a conversion over hosts; remove "
                             f"{out_dir} first.")
        if not local and not out_dir.startswith("gs://"):
            raise ValueError(f"{out_dir}: a conversion over hosts writes to a shared local folder "
                             "or gs:// only.")
        return _convert_share(source, out_dir, plan, share_index, workers, log)
    if fileio.exists(out_dir) and not overwrite:
        message = incomplete_conversion_message(out_dir) if local or out_dir.startswith("gs://") else None
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it."
                              + (f" ({message})" if message else ""))
    parent, base = os.path.split(out_dir)
    if local:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex[:12]}")
        os.makedirs(tmp)
    else:
        tmp = tempfile.mkdtemp(prefix=f"geojax-{base}.tmp-")
    try:
        manifests: list[dict[str, Any]] = []
        _write_shards(source, tmp, range(num_shards), plan, workers, manifests.append,
                      lambda line: log(f"{line} (of {out_dir})"))
        metadata = _write_dataset_files(tmp, plan, manifests, lambda _: None)
        fileio.fsync_path(tmp)
        fileio.publish_folder(tmp, out_dir, last="metadata.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {metadata['count']} records in {num_shards} shard(s) to {out_dir}. {metadata['summary']}")
    return metadata


def _conversion_summary(source_report: ReadReport | None, conversion: ReadReport) -> str:
    """One summary of a conversion: the source's skipped rows and notes plus the records the
    conversion dropped, over the source's rows (the conversion's records without a report)."""
    if source_report is None:
        return conversion.summary()
    merged = ReadReport(source_report.path, rows=source_report.rows, kept=conversion.kept,
                        skipped={k: list(v) for k, v in source_report.skipped.items()},
                        notes={k: list(v) for k, v in source_report.notes.items()})
    for reason, ids in conversion.skipped.items():
        merged.skipped.setdefault(reason, []).extend(ids)
    return merged.summary()


class ArrayRecordSource:
    """Random-access reader of a dataset written by :func:`convert_to_array_record`.

    Reads with array_record's ``ArrayRecordDataSource`` (no TensorFlow, no TFDS) and
    returns the same record dicts as the source it was converted from (numbers as numpy
    float64 / int64). ``metadata`` holds ``metadata.json``. In a ``gs://`` folder,
    ``metadata.json`` and ``coordinates.npy`` are read through epath and the shards by
    array_record's own reader, which opens ``gs://`` paths itself; it reads no other
    object store.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = os.fspath(out_dir)
        if not fileio.is_local(self.out_dir) and not self.out_dir.startswith("gs://"):
            raise ValueError(f"{self.out_dir}: array_record reads shards from local folders and "
                             "gs:// only; copy the dataset to one of them.")
        meta_path = os.path.join(self.out_dir, "metadata.json")
        if not fileio.isfile(meta_path):
            raise FileNotFoundError(incomplete_conversion_message(self.out_dir) or (
                f"{self.out_dir} is not a complete geojax ArrayRecord dataset (no metadata.json); "
                "convert it again with convert_to_array_record."))
        self.metadata = json.loads(fileio.read_text(meta_path))
        if self.metadata.get("format") != _DATASET_FORMAT or self.metadata.get("version") != _DATASET_VERSION:
            raise ValueError(f"{meta_path}: format {self.metadata.get('format')!r} version "
                             f"{self.metadata.get('version')!r}, expected {_DATASET_FORMAT!r} {_DATASET_VERSION}.")
        paths = [os.path.join(self.out_dir, s["file"]) for s in self.metadata["shards"]]
        missing = [p for p in paths if not fileio.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{self.out_dir}: shard files missing: {missing}.")
        self._paths = paths
        self._pid, self._data, self._coords = None, None, None
        if len(self._reader()) != self.metadata["count"]:
            raise ValueError(f"{self.out_dir}: shards hold {len(self._data)} records, metadata.json "
                             f"says {self.metadata['count']}; the dataset is damaged, convert it again.")

    def _reader(self) -> Any:
        """This process's ArrayRecordDataSource; a forked child opens its own readers."""
        if self._data is None or os.getpid() != self._pid:
            # Loaded on first read (the data source module takes about 0.5 s to import).
            from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel

            self._data = array_record_data_source.ArrayRecordDataSource(self._paths)
            self._pid = os.getpid()
        return self._data

    def __len__(self) -> int:
        return self.metadata["count"]

    def coordinates(self) -> np.ndarray:
        """``(len, 2)`` float64 (lat, lng) of every record, from ``coordinates.npy``
        (memory-mapped); a dataset converted without that file is read record by record."""
        if self._coords is None:
            path = os.path.join(self.out_dir, COORDINATES_FILE)
            if fileio.is_local(path) and os.path.isfile(path):
                coords = np.load(path, mmap_mode="r")
            elif not fileio.is_local(path) and fileio.isfile(path):
                coords = np.load(io.BytesIO(fileio.read_bytes(path)), allow_pickle=False)
            else:
                coords = np.asarray([(r["lat"], r["lng"]) for r in self], np.float64).reshape(-1, 2)
            if coords.shape != (len(self), 2):
                raise ValueError(f"{path}: coordinates of shape {coords.shape}, expected "
                                 f"({len(self)}, 2); the dataset is damaged, convert it again.")
            self._coords = coords
        return self._coords

    @property
    def lat(self) -> np.ndarray:
        return np.asarray(self.coordinates()[:, 0])

    @property
    def lng(self) -> np.ndarray:
        return np.asarray(self.coordinates()[:, 1])

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        return _deserialize_record(self._reader()[_check_index(i, len(self))])

    def __getitems__(self, indices: Sequence[SupportsIndex]) -> list[dict[str, Any]]:
        keys = [_check_index(i, len(self)) for i in indices]
        return [_deserialize_record(p) for p in self._reader().__getitems__(keys)]

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _pid=None, _data=None, _coords=None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"ArrayRecordSource({self.out_dir!r}, {len(self)} records)"
