"""Several trainings at once, one process and one TensorFlow thread each.

A 2-core machine trains one VGG6 at about one core's speed whatever TensorFlow's thread pools
(batch 64: the per-batch work is too small to split), so independent trainings (the demo's four
networks) run side by side instead, ``workers`` at a time, each in a fresh process (spawned:
TensorFlow's threads are set before it starts) with ``STARCENTER_TF_THREADS=1``. Each training is
deterministic under its seed; one thread makes it bit-identical run to run. Each worker ends
itself when the process that started it is gone (killed: SIGKILL or SIGTERM leave a pool no time to
stop its workers), so no orphan trains on beside later runs.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

#: How often a worker checks that its parent is alive (seconds).
WATCH_EVERY_S = 2.0


def _watch_parent(parent: int, every_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)  # the parent is gone: nobody will read this worker's result


def start_watchdog(parent: int, every_s: float = WATCH_EVERY_S) -> None:
    """In a pool worker: end the worker (exit 1) within ``every_s`` seconds of ``parent`` dying."""
    watchdog = threading.Thread(target=_watch_parent, args=(parent, every_s), daemon=True, name="parent-watchdog")
    watchdog.start()


def _init_worker(parent: int) -> None:
    start_watchdog(parent)
    _one_thread()


def _one_thread() -> None:
    os.environ["STARCENTER_TF_THREADS"] = "1"
    from starcenter.model import set_tensorflow_threads

    set_tensorflow_threads(1)


def _train(kwargs: dict) -> dict:
    from starcenter.model.train import train

    return train(**kwargs)


def train_many(jobs: list[dict], workers: int | None = None, progress=None) -> list[dict]:
    """Run ``model.train.train(**job)`` for every job, ``workers`` at a time (default: one per
    core, at most the number of jobs); returns their metadata in the jobs' order.
    ``progress(job)`` is called as each finishes."""
    import multiprocessing

    if not jobs:
        return []
    n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    out: list[dict | None] = [None] * len(jobs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_train, job): i for i, job in enumerate(jobs)}
        for f in as_completed(futures):
            out[futures[f]] = f.result()
            if progress is not None:
                progress(jobs[futures[f]])
    return out
