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

:class:`PreemptionFlag` turns SIGTERM (how schedulers and TPU / cloud VMs announce a
preemption) into a flag the train loop polls; the loop then saves and exits cleanly.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ("state", "data")


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
        self.directory = os.path.abspath(os.fspath(directory))
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


class PreemptionFlag:
    """Set by SIGTERM while installed (context manager); the train loop polls :meth:`is_set`.

    Only the main thread can install signal handlers; elsewhere (e.g. a notebook worker
    thread) this is a flag that is never set by a signal. In a multi-process job
    :meth:`agreed` makes every process see the flag of any process.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: Any = None
        self.signal_received: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:  # pylint: disable=unused-argument
        self.signal_received = signum
        self._event.set()

    def __enter__(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

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
