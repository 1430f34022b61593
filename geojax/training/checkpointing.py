"""Orbax checkpoints of the train state together with the input pipeline's position.

One :class:`Checkpointer` per training stage wraps one ``orbax.checkpoint.CheckpointManager``
whose checkpoints hold two items:

* ``state`` — the train state pytree (``StandardSave``: sharded arrays, every process
  writes its shards);
* ``data`` — the grain iterator's position (``grain.checkpoint.CheckpointSave``: one
  ``process_<i>-of-<n>.json`` per process), so a resumed run reads exactly the batches the
  uninterrupted run would have read.

Saves are asynchronous (the train loop goes on while the arrays are written; the iterator
state is taken synchronously at save time) and keep the last ``keep`` checkpoints. Orbax
writes each checkpoint into a temporary directory and renames it once every process has
finished, so a process killed at any moment — ``kill -9`` during a write included — leaves
either a complete checkpoint or a temporary directory that is ignored (and removed) on the
next start: the latest *complete* checkpoint is what :meth:`Checkpointer.latest_step` sees.

A complete checkpoint can still be unreadable (a file truncated or damaged on disk after the
write). :meth:`Checkpointer.restore_latest` then falls back, newest first, to the first step
that restores, and moves each newer unreadable step directory aside to
``<stage dir>/<step>.unreadable-<n>`` (never deleted; Orbax ignores the name: it is neither a
step nor one of its temporary directories); when no step restores it raises
:class:`CheckpointError`, naming the directory to remove, and moves nothing.

:class:`PreemptionFlag` turns SIGTERM (how schedulers and TPU / cloud VMs announce a
preemption) and a first Ctrl-C (SIGINT) into a flag the train loop polls; the loop then
saves and exits cleanly. A second Ctrl-C gets SIGINT's previous handling back: in
``python -m geojax.main``, :func:`exit_at_once` (the process ends at once, by SIGINT, with one
line; like ``kill -9`` it loses at most the steps since the last complete checkpoint), in a
notebook or another host, its own (Python's ``KeyboardInterrupt``, a kernel's interrupt).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from geojax import fileio

_ITEMS = ("state", "data")
_REASON_CHARS = 300  # an unreadable step's reason is cut to this length in the log line


class CheckpointError(RuntimeError):
    """No checkpoint of a stage directory can be restored; the message names the directory."""


class Restored(NamedTuple):
    """What :meth:`Checkpointer.restore_latest` found: the step restored (None: the directory
    holds no checkpoint), its state, and where newer unreadable steps were moved."""

    step: int | None
    state: Any
    set_aside: tuple[str, ...] = ()


def _reason(err: BaseException) -> str:
    """``"<type>: <first line>"`` of the exception that caused ``err`` (Orbax wraps the
    TensorStore / JSON error that names the damaged file in its own long message)."""
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    lines = str(root).strip().splitlines()
    text = f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def _all_processes(ok: bool) -> bool:
    """Whether ``ok`` holds on every process (a collective in a multi-process job)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


class Checkpointer:
    """Save / restore ``(train state, iterator position)`` at integer steps.

    Args:
      directory: where the checkpoints of this stage live (created).
      keep: how many of the latest checkpoints to keep.
      async_save: write the arrays in a background thread.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}.")
        self.directory = fileio.absolute(directory)  # a gs:// URL goes to Orbax as it is
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, item_names=_ITEMS, options=options)

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, iterator: Any | None = None, *,
             force: bool = False) -> bool:
        """Starts saving ``state`` (and ``iterator``'s position) as checkpoint ``step``."""
        items = {"state": ocp.args.StandardSave(state)}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(iterator)
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: Any, iterator: Any | None = None) -> Any:
        """The state of checkpoint ``step``, laid out as ``abstract_state`` (shapes, dtypes,
        shardings); moves ``iterator`` to the saved position when given."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))
        return restored["state"]

    def step_directory(self, step: int) -> str:
        """The directory of checkpoint ``step``."""
        return os.path.join(self.directory, str(int(step)))

    def restore_latest(self, abstract_state: Any, iterator: Any | None = None, *,
                       log: Callable[[str], None] = print) -> Restored:
        """Restores the newest checkpoint that can be read (see :meth:`restore`).

        A step whose restore raises is skipped for the next newest. Once one restores, every
        newer (unreadable) step directory is moved aside to ``<step>.unreadable-<n>`` in this
        directory, with one ``log`` line naming it and the reason (the first line of the
        error that caused the failure). When none restores, raises :class:`CheckpointError`
        and moves nothing (a config whose model or optimizer differs from the one that wrote
        the checkpoints fails on every step the same way). In a multi-process job a step
        counts as restored only when it restores on every process; an iterator file
        unreadable on some processes only is found before Orbax's restore (which has
        barriers), damaged array data read by some processes only is not.
        """
        failed: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            # This process's iterator file first, without Orbax: a restore that fails on one
            # process only would leave the others waiting in Orbax's barriers.
            reason = self._iterator_file_error(step) if iterator is not None else None
            if not _all_processes(reason is None):
                failed.append((step, reason or "unreadable on another process"))
                continue
            try:
                state, reason = self.restore(step, abstract_state, iterator), None
            except Exception as err:  # pylint: disable=broad-exception-caught
                state, reason = None, _reason(err)
            if not _all_processes(reason is None):
                failed.append((step, reason or "unreadable on another process"))
                continue
            moved = tuple(self._set_aside(s) for s, _ in failed)
            for (bad, why), path in zip(failed, moved):
                log(f"checkpoint {self.step_directory(bad)} is unreadable ({why}); moved aside "
                    f"to {path}, resuming from step {step}")
            return Restored(step, state, moved)
        if not failed:
            return Restored(None, None)
        steps = "; ".join(f"step {s}: {why}" for s, why in failed)
        raise CheckpointError(
            f"no checkpoint in {self.directory} can be restored ({steps}). Remove that "
            "directory to train this stage from its start (or restore its files).")

    def _iterator_file_error(self, step: int) -> str | None:
        """Why this process's iterator position of checkpoint ``step`` (grain's
        ``data/process_<i>-of-<n>.json``) is not JSON, or None (readable, or not there)."""
        path = os.path.join(self.step_directory(step), "data",
                            f"process_{jax.process_index()}-of-{jax.process_count()}.json")
        try:
            json.loads(fileio.read_text(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            return _reason(err)
        return None

    def _set_aside(self, step: int) -> str:
        """Renames step directory ``step`` to ``<step>.unreadable-<n>`` (the first ``n`` free)
        on process 0 and refreshes the manager's list of steps; returns the new path."""
        source = self.step_directory(step)
        n = 1
        while fileio.exists(f"{source}.unreadable-{n}"):
            n += 1
        target = f"{source}.unreadable-{n}"
        if jax.process_count() > 1:  # every process has chosen the name before the rename
            multihost_utils.sync_global_devices(f"geojax set aside {source}: named")
        if jax.process_index() == 0:
            fileio.path(source).rename(target)  # on an object store: a copy, then a delete
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"geojax set aside {source}: moved")
        self._manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are complete."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def abstract_like(state: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct``s with shardings, the layout ``Checkpointer.restore`` needs."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
                        state, shardings)


_EXIT_NOTE = (b"\ninterrupted (Ctrl-C): stopped at once; re-run the same command to resume from "
              b"the last checkpoint.\n")


def exit_at_once(signum: int, frame: Any) -> None:  # pylint: disable=unused-argument
    """A SIGINT handler for the command line: one line on stderr, then the process ends by
    SIGINT's default action (exit status 130 in a shell), even while the main thread waits in
    native code. Checkpoints and the partition files are written atomically, so this is as
    safe as ``kill -9``; the run resumes from the last complete checkpoint."""
    try:
        os.write(sys.stderr.fileno(), _EXIT_NOTE)
    except (OSError, ValueError, AttributeError):  # stderr closed or not a file
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


_INTERRUPT_NOTE = (b"\nCtrl-C: stopping after this step with a checkpoint; press Ctrl-C again "
                   b"to stop at once (losing the steps since the last checkpoint).\n")


class PreemptionFlag:
    """Set by SIGTERM or a first Ctrl-C (SIGINT) while installed (context manager); the train
    loop polls :meth:`is_set`.

    The first SIGINT also writes a one-line note to stderr and puts SIGINT's previous
    handler back, so that a second Ctrl-C interrupts as Ctrl-C did before
    (:func:`exit_at_once` under ``geojax.main``; Python's ``KeyboardInterrupt`` or a notebook
    kernel's interrupt elsewhere). SIGINT is left alone when it was ignored (a job started with
    ``nohup`` or in the background). Leaving the context restores the previous handlers.
    Only the main thread can install signal handlers; elsewhere (e.g. a notebook worker
    thread) this is a flag that is never set by a signal. In a multi-process job
    :meth:`agreed` makes every process see the flag of any process.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signal_received: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:  # pylint: disable=unused-argument
        self.signal_received = signum
        self._event.set()
        if signum == signal.SIGINT:
            previous = self._previous.pop(signal.SIGINT, None)  # None: not set from Python
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
            try:  # unbuffered: a print here could re-enter a print the handler interrupted
                os.write(sys.stderr.fileno(), _INTERRUPT_NOTE)
            except (OSError, ValueError, AttributeError):  # stderr closed or not a file
                pass

    def __enter__(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handler)
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():  # None: not set from Python
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    @property
    def signal_name(self) -> str | None:
        """How the stop was asked for, for messages ("Ctrl-C (SIGINT)", "SIGTERM"), or None."""
        if self.signal_received is None:
            return None
        if self.signal_received == signal.SIGINT:
            return "Ctrl-C (SIGINT)"
        return signal.Signals(self.signal_received).name

    def set(self) -> None:
        """Raises the flag by hand (tests, or a caller's own stop condition)."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether this process has been asked to stop."""
        return self._event.is_set()

    def agreed(self) -> bool:
        """Whether any process has been asked to stop (a collective: call it on every process
        at the same step)."""
        local = self._event.is_set()
        if jax.process_count() == 1:
            return local
        flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
        return bool(np.any(flags))
