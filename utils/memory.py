"""The course's one memory sampler: the peak resident memory of a block of code, sampled in a thread.

Used by the runner (the kernel that executes a chapter: this process's children) and by chapter 6's
streaming measurement (this process itself, :mod:`utils.scale`).
"""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """``with PeakMemory() as mem: ...`` then ``mem.peak`` (bytes); ``mem.start`` is the value on entry.

    ``children=False`` samples this process; ``children=True`` the sum over its child processes (a
    kernel and whatever it starts), which is what the runner reports per chapter. ``interval`` is the
    sampling period in seconds: a spike shorter than it can be missed.
    """

    def __init__(self, interval: float = 0.2, *, children: bool = False):
        self.interval = interval
        self.children = children
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._me = psutil.Process()

    def sample(self) -> int:
        """The resident memory now (bytes)."""
        if not self.children:
            return self._me.memory_info().rss
        total = 0
        for child in self._me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())
