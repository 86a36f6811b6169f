"""Several trainings at once, one process and one TensorFlow thread each.

A 2-core machine trains one VGG6 at about one core's speed whatever TensorFlow's thread pools
(batch 64: the per-batch work is too small to split), so independent trainings (the demo's four
networks) run side by side instead, ``workers`` at a time, each in a fresh process (spawned:
TensorFlow's threads are set before it starts) with ``STARCENTER_TF_THREADS=1``. Each training is
deterministic under its seed; one thread makes it bit-identical run to run.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed


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
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_one_thread) as pool:
        futures = {pool.submit(_train, job): i for i, job in enumerate(jobs)}
        for f in as_completed(futures):
            out[futures[f]] = f.result()
            if progress is not None:
                progress(jobs[futures[f]])
    return out
