"""Peak resident memory of this process and its children (dask workers), sampled in a thread."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """Context manager: samples RSS every ``dt`` s; ``.client`` and ``.workers`` peaks (bytes)."""

    def __init__(self, dt: float = 0.2):
        self.dt = dt
        self.client = 0
        self.workers: dict[int, int] = {}
        self._stop = threading.Event()

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.client = max(self.client, me.memory_info().rss)
                for ch in me.children(recursive=True):
                    try:
                        self.workers[ch.pid] = max(self.workers.get(ch.pid, 0), ch.memory_info().rss)
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                pass
            time.sleep(self.dt)

    def __enter__(self):
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        return False

    def report(self) -> str:
        w = max(self.workers.values(), default=0)
        return (f"peak RSS: client {self.client / 2**30:.2f} GiB, largest worker {w / 2**30:.2f} GiB "
                f"({len(self.workers)} child processes)")
