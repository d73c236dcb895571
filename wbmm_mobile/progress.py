"""``ProgressBar``: the one progress bar of long work (conversion, rewriting, timing, profiling).

A rich bar on stderr (so piped stdout stays clean) when asked for, a callback per step
when given one, nothing otherwise; the same object either way, so the work never checks
which. Thread-safe: profile's device workers advance one bar from several threads.
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["ProgressBar"]


class ProgressBar:
    """``show``: draw a bar. ``callback(done, total, label)``: called after each step.
    ``transient``: the bar disappears when closed (else its last state stays on screen)."""

    def __init__(self, show: bool, total: int, description: str = "working", *,
                 callback: Callable[[int, int, str | None], None] | None = None, transient: bool = True):
        self.total, self.done = total, 0
        self._stages = 0
        self.callback = callback
        self._lock = threading.Lock()
        self._bar = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=transient)
            self._task = self._bar.add_task(description, total=max(total, 1))
            self._bar.start()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def advance(self, label: str | None = None) -> None:
        """One step done; ``label`` (if any) becomes the bar's description."""
        with self._lock:
            self.done += 1
            if self._bar is not None:
                # The total grows when the work turns out longer (timing runs for at least min_secs).
                self._bar.update(self._task, completed=self.done, total=max(self.total, self.done),
                                 **({"description": label[:60]} if label else {}))
            if self.callback is not None:
                self.callback(self.done, self.total, label)

    def stage(self, description: str, total: int) -> None:
        """Start the next stage of the work (building, then timing...) as a new line of the bar; the
        previous line is shown complete."""
        with self._lock:
            if self._bar is not None:
                if self._stages or self.done:
                    self._bar.update(self._task, completed=max(self.total, self.done, 1))
                    self._task = self._bar.add_task(description, total=max(total, 1))
                else:   # the first stage takes over the bar's first line
                    self._bar.update(self._task, description=description, total=max(total, 1), completed=0)
            self._stages += 1
            self.total, self.done = total, 0

    def describe(self, text: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(self._task, description=text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
