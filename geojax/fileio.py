"""Crash-safe file writing shared by every layer.

A file written with :func:`atomic_write` is either the old one or the complete
new one, whatever happens during the write (exception, ``kill -9``, power
loss after the rename): the bytes go to a temporary file in the same
directory, are flushed and fsynced, and only then replace the target with
``os.replace`` (an atomic rename on POSIX).
"""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str | os.PathLike, payload: bytes | str, *, mode: int = 0o644) -> None:
    """Writes ``payload`` (bytes, or str as UTF-8) to ``path`` atomically; creates the directory."""
    path = os.fspath(path)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
