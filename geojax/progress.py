"""A dependency-free progress bar: done/total, rate, ETA; drawn by process 0 only.

    bar = Progress(total=1000, desc="train", unit="step")
    for step in ...:
        bar.update(1, loss=0.31)
    bar.close()

On a terminal the line is redrawn in place (at most ``min_interval`` s apart); when
stderr is not a terminal (logs, CI) a full line is printed every ``log_interval`` s.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import jax


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Progress of a loop of known length, with a rate and an ETA."""

    def __init__(self, total: int, *, desc: str = "", unit: str = "it", initial: int = 0,
                 stream: TextIO | None = None, enabled: bool | None = None,
                 min_interval: float = 0.5, log_interval: float = 30.0):
        if enabled is None:
            enabled = jax.process_index() == 0
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self._start_n = int(initial)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = min_interval if self.tty else log_interval
        self._t0 = self._last = time.perf_counter()
        self._postfix = ""
        self._drawn = -1  # the n of the last line drawn

    @property
    def rate(self) -> float:
        """Items per second since the bar was created (resumed items excluded)."""
        elapsed = time.perf_counter() - self._t0
        return (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The current status line."""
        rate = self.rate
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        frac = self.n / self.total if self.total else 1.0
        width = 20
        filled = int(round(width * min(frac, 1.0)))
        eta_s = _duration(eta) if eta == eta else "?"
        return (f"{self.desc} |{'#' * filled}{'.' * (width - filled)}| {self.n}/{self.total} "
                f"[{_duration(time.perf_counter() - self._t0)}<{eta_s}, {rate:.1f} {self.unit}/s]"
                f"{self._postfix}")

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advances by ``n``; ``postfix`` values are shown after the bar."""
        self.n += n
        if postfix:
            self._postfix = " " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.n >= self.total):
            self._last = now
            self._draw()

    def _draw(self, end: str = "") -> None:
        self._drawn = self.n
        if self.tty:
            self.stream.write("\r" + self.line() + end)
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Draws the final line."""
        if self.enabled and (self.tty or self._drawn != self.n):
            self._draw("\n" if self.tty else "")
