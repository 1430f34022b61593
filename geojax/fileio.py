"""Paths and crash-safe file writing shared by every layer, on local disks and object stores.

Every path geojax reads or writes (workdir, datasets, exports) goes through
:mod:`etils.epath` — what Orbax and grain use — so ``gs://bucket/run``, ``s3://bucket/run``
and a local folder behave alike: :func:`path` turns a string into an ``epath.Path``
(``gs://`` and ``s3://`` through fsspec's ``gcsfs`` / ``s3fs``, or TensorFlow's ``gfile``
where TensorFlow is installed), :func:`is_local` tells the two kinds apart, and
:func:`absolute` makes a local path absolute while leaving a URL as it is (``os.path.abspath``
would turn ``gs://b/run`` into ``./gs:/b/run``).

A file written with :func:`atomic_write` is either the old one or the complete new one,
whatever happens during the write (exception, ``kill -9``, power loss):

* **local filesystem**: the bytes go to a temporary file in the same directory, are flushed
  and fsynced, and only then replace the target with ``os.replace`` (an atomic rename on
  POSIX);
* **object store** (``gs://``, ``s3://``): a rename there is a copy, so the whole payload is
  sent as the final object in one upload. The store makes an object visible only when its
  upload completes, so a process killed mid-upload leaves the previous object (or none); an
  exception during the upload discards it (the file object is never closed, so nothing is
  committed).

Appending (``metrics.jsonl``) is not something object stores can do; see
:class:`JsonLinesLog`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
    """True for a path on the local filesystem, False for a URL (``gs://``, ``s3://``, ...)."""
    return "://" not in os.fspath(path)


def path(p: PathLike) -> epath.Path:
    """``p`` as an ``etils.epath.Path`` (the one way geojax opens files)."""
    return epath.Path(p)


def absolute(p: PathLike) -> str:
    """``p`` as a string: absolute if local, unchanged if a URL."""
    p = os.fspath(p)
    return os.path.abspath(p) if is_local(p) else p


def join(p: PathLike, *parts: str) -> str:
    """``p / parts`` as a string (a URL stays a URL)."""
    return os.fspath(path(p).joinpath(*parts))


def exists(p: PathLike) -> bool:
    return path(p).exists()


def isdir(p: PathLike) -> bool:
    return path(p).is_dir()


def isfile(p: PathLike) -> bool:
    """True for an existing file (an object, on a store)."""
    q = path(p)
    return q.exists() and not q.is_dir()


def makedirs(p: PathLike) -> None:
    """Creates the local folder ``p`` and its parents (a no-op where it exists). On an object
    store folders are only name prefixes: nothing to create, and no request is sent (fsspec's
    ``makedirs`` on ``gs://`` would create a missing bucket)."""
    if is_local(p):
        os.makedirs(p, exist_ok=True)


def listdir(p: PathLike) -> list[str]:
    """The names in folder ``p`` (sorted); [] for a folder that does not exist."""
    q = path(p)
    if not q.is_dir():
        return []
    return sorted(child.name for child in q.iterdir())


def read_bytes(p: PathLike) -> bytes:
    """The bytes of the file ``p`` (FileNotFoundError where it does not exist)."""
    return path(p).read_bytes()


def read_text(p: PathLike) -> str:
    """The text of the file ``p`` (UTF-8)."""
    return path(p).read_text(encoding="utf-8")


def open_file(p: PathLike, mode: str = "rb", **kwargs: Any) -> Any:
    """``p`` opened for reading (``"rb"`` or ``"r"``), as a file object."""
    if "r" not in mode:
        raise ValueError(f"open_file is for reading (mode {mode!r}); write with atomic_write.")
    return path(p).open(mode, **kwargs)


def remove(p: PathLike) -> None:
    """Removes the file ``p``; a missing file is no error."""
    path(p).unlink(missing_ok=True)


def rmtree(p: PathLike) -> None:
    """Removes the folder ``p`` and everything under it; a missing folder is no error."""
    q = path(p)
    if q.exists():
        q.rmtree()


def atomic_write(path_: PathLike, payload: bytes | memoryview | str, *, mode: int = 0o644) -> None:
    """Writes ``payload`` (bytes-like, or str as UTF-8) to ``path_`` atomically; creates the
    directory. Local: temporary file, fsync, ``os.replace``. Object store: one upload of the
    final object (``mode`` does not apply there)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if is_local(path_):
        _atomic_write_local(os.fspath(path_), payload, mode)
    else:
        _upload(path(path_), payload)


def _atomic_write_local(path_: str, payload: bytes | Iterable[bytes], mode: int) -> None:
    """``payload``: bytes, or an iterable of byte chunks written one after another."""
    directory = os.path.dirname(os.path.abspath(path_))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path_)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in ([payload] if isinstance(payload, (bytes, bytearray, memoryview))
                          else payload):
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path_)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def upload_file(local_path: PathLike, target: PathLike, *, chunk_bytes: int = 1 << 24) -> None:
    """Copies the local file ``local_path`` to ``target`` atomically: :func:`atomic_write`'s
    guarantee, streamed in ``chunk_bytes`` pieces (for files too large to hold in memory)."""
    with open(local_path, "rb") as f:
        chunks = iter(lambda: f.read(chunk_bytes), b"")
        if is_local(target):
            _atomic_write_local(os.fspath(target), chunks, 0o644)
        else:
            _upload(path(target), chunks)


def download_file(source: PathLike, local_path: PathLike, *, chunk_bytes: int = 1 << 24) -> None:
    """Copies ``source`` (local or on an object store) to the local file ``local_path``."""
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    with open_file(source, "rb") as f, open(local_path, "wb") as out:
        for piece in iter(lambda: f.read(chunk_bytes), b""):
            out.write(piece)


def files_under(folder: PathLike) -> list[str]:
    """Every file under ``folder`` (local or on an object store), as sorted ``/``-separated
    paths relative to it; [] where there is none."""
    folder = os.fspath(folder)
    if is_local(folder):
        return sorted(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                      for root, _, names in os.walk(folder) for name in names)
    base = folder.split("://", 1)[1].rstrip("/")
    out = []
    for root, _, names in path(folder).walk():
        # fsspec gives the folders without their scheme, gfile with it.
        rel = os.path.relpath(os.fspath(root).split("://", 1)[-1], base)
        out += [name if rel == "." else f"{rel}/{name}" for name in names]
    return sorted(out)


def upload_tree(local_folder: PathLike, target: PathLike, *, last: str | None = None) -> None:
    """Copies every file under ``local_folder`` to the same relative path under ``target``,
    each with :func:`upload_file`; ``last`` (a relative path) is copied after all the others
    (the manifest that makes the folder complete)."""
    names = files_under(local_folder)
    for name in sorted(names, key=lambda n: n == last):
        upload_file(os.path.join(local_folder, name), join(target, name))


def fsync_path(local_path: PathLike) -> None:
    """fsync of a local file or folder (a folder: its entries, after renames in it)."""
    fd = os.open(os.fspath(local_path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_folder(tmp: str, target: PathLike, *, last: str) -> None:
    """Makes the finished local folder ``tmp`` the folder ``target``, replacing any earlier one.

    Local (``tmp`` beside ``target``, on the same file system): an existing ``target`` is
    renamed aside to a hidden ``.<name>.old-*`` folder, ``tmp`` is renamed to ``target``, the old
    folder is removed and the parent fsynced. A kill leaves the old folder or the new one at
    ``target`` — or, between the two renames, none, the old one being under its hidden name.
    Object store (a rename is a copy there): the old ``target`` is removed, then the files are
    uploaded with ``last`` (the manifest that makes the folder complete) after the others, and
    ``tmp`` is removed; a kill leaves the old folder, none, or one without its manifest."""
    if not is_local(target):
        rmtree(target)
        upload_tree(tmp, target, last=last)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    target = os.fspath(target)
    old = None
    if os.path.lexists(target):
        old = os.path.join(os.path.dirname(target),
                           f".{os.path.basename(target)}.old-{uuid.uuid4().hex[:12]}")
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(os.path.dirname(os.path.abspath(target)))


def download_tree(source: PathLike, local_folder: PathLike) -> list[str]:
    """Copies every file under ``source`` to the same relative path under ``local_folder``;
    returns the relative paths."""
    names = files_under(source)
    for name in names:
        download_file(join(source, name), os.path.join(local_folder, name))
    return names


def _upload(target: epath.Path, payload: bytes | memoryview | Iterator[bytes]) -> None:
    """The object ``target`` := ``payload`` (bytes, or an iterator of pieces), in one upload,
    committed only by ``close()``.

    Not a ``with`` block: leaving one on an exception closes the file, and closing a store's
    file commits what was written so far. On an exception the upload is discarded (fsspec's
    ``discard`` aborts a multipart upload) and the file is marked closed so that its garbage
    collection commits nothing either.
    """
    pieces = [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    f = target.open("wb")  # no folder to create: an object store has name prefixes only
    try:
        for piece in pieces:
            f.write(piece)
    except BaseException:
        discard = getattr(f, "discard", None)
        if callable(discard):
            discard()
        try:
            f.closed = True
        except AttributeError:  # a file object whose ``closed`` is read-only
            pass
        raise
    f.close()


def sync_processes(tag: str) -> None:
    """A barrier over the processes of a multi-host job (no-op with one process): process 0
    writes a shared file, every process calls this, then the others read it."""
    import jax  # pylint: disable=import-outside-toplevel  (fileio stays importable without jax)

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

        multihost_utils.sync_global_devices(tag)


class JsonLinesLog:
    """An append-only log of JSON lines (``metrics.jsonl``) on a local disk or an object store.

    **Local**: lines are appended to the one file ``<name>`` (``open(..., "a")``); a line cut by
    ``kill -9`` is skipped by :func:`read_json_lines`, and the next writer starts on a line of
    its own.

    **Object store**: objects cannot be appended to, and rewriting one growing object costs
    O(n²) uploads over a run. The log is written as **segments** ``<name>.segments/NNNNNN.jsonl``:
    each writer (one per process start, so a resumed run gets new segments) buffers its lines
    and re-uploads its current segment whole (:func:`atomic_write`: one upload, so a reader sees
    the previous or the new version, never a cut line) after each line, and starts a new segment
    once the current one holds ``segment_bytes``; an upload per line is at most that size.
    :func:`read_json_lines` reads the local file, then the segments in name order, as one
    stream. Only one process (process 0) writes a log; segments of one writer are never
    touched by another.
    """

    def __init__(self, path_: PathLike, *, segment_bytes: int = 256 * 1024):
        self.path = os.fspath(path_)
        self.local = is_local(self.path)
        self.segment_bytes = int(segment_bytes)
        self._checked_end = False
        self._segment: str | None = None
        self._buffer = io.BytesIO()

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(dict(record), sort_keys=True) + "\n"
        if self.local:
            self._append_local(line)
        else:
            self._append_segment(line.encode("utf-8"))

    def _append_local(self, line: str) -> None:
        if not self._checked_end:  # a process killed mid-line: start on a line of our own
            self._checked_end = True
            if os.path.isfile(self.path) and os.path.getsize(self.path):
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        line = "\n" + line
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def _append_segment(self, line: bytes) -> None:
        if self._segment is None or self._buffer.tell() >= self.segment_bytes:
            folder = segments_folder(self.path)
            numbers = [int(n[:-len(".jsonl")]) for n in listdir(folder)
                       if n.endswith(".jsonl") and n[:-len(".jsonl")].isdigit()]
            self._segment = join(folder, f"{max(numbers, default=-1) + 1:06d}.jsonl")
            self._buffer = io.BytesIO()
        self._buffer.write(line)
        atomic_write(self._segment, self._buffer.getvalue())


def segments_folder(log_path: PathLike) -> str:
    """Where :class:`JsonLinesLog` keeps the segments of ``log_path`` on an object store."""
    return os.fspath(log_path) + ".segments"


def read_json_lines(log_path: PathLike) -> Iterator[dict[str, Any]]:
    """The JSON objects of a :class:`JsonLinesLog` in write order: the file ``log_path``, then
    its segments. Lines that are not JSON objects (a write cut by ``kill -9``) are skipped.

    Raises FileNotFoundError when there is neither the file nor a segment."""
    parts = [log_path] if exists(log_path) else []
    folder = segments_folder(log_path)
    parts += [join(folder, n) for n in listdir(folder) if n.endswith(".jsonl")]
    if not parts:
        raise FileNotFoundError(f"{os.fspath(log_path)} does not exist (nor its segments).")
    for part in parts:
        for line in read_text(part).splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
