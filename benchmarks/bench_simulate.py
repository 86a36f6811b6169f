"""Benchmark: simulate the gilliland preset (636 exposures x 4 chips) on a LocalCluster and
print exposures/s and peak RSS. Target (issue #2): < 15 min and < 2 GB peak RSS on 2 cores.

    python benchmarks/bench_simulate.py [--exposures N] [--store PATH]
    make bench            # runs it through pytest -m slow
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rss import PeakRSS  # noqa: E402


def run(exposures: int | None = None, store: str | None = None, workers: int = 2) -> dict:
    from distributed import Client, LocalCluster

    from starcenter.cubes.sim.simulate import make_config, simulate

    cfg = make_config("gilliland", n_exposures=exposures)
    tmp = None
    if store is None:
        tmp = tempfile.mkdtemp(prefix="bench-sim-")
        store = str(Path(tmp) / "gilliland.zarr")
    try:
        with PeakRSS() as rss:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address="127.0.0.1:0", memory_limit="4GiB") as cluster, \
                    Client(cluster) as client:
                print(f"dask dashboard: {client.dashboard_link}")
                t0 = time.perf_counter()
                summary = simulate(store, cfg, progress=True)
                wall = time.perf_counter() - t0
        nexp = cfg.n_exposures
        chunks = nexp * len(cfg.chips)
        print(f"simulate gilliland: {nexp} exposures x {len(cfg.chips)} chips = {chunks} chunks "
              f"in {wall:.1f} s: {nexp / wall:.2f} exposures/s, {chunks / wall:.2f} chip images/s")
        print(rss.report())
        print(f"stars per chip: {summary.stars_per_chip}")
        return {"wall_s": wall, "exposures_per_s": nexp / wall, "client_rss": rss.client,
                "worker_rss": max(rss.workers.values(), default=0)}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_bench_simulate_gilliland():
    out = run()
    print(f"targets: wall < 900 s ({out['wall_s']:.0f} s), peak RSS < 2 GiB "
          f"(client {out['client_rss'] / 2**30:.2f}, worker {out['worker_rss'] / 2**30:.2f})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exposures", type=int)
    ap.add_argument("--store")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    run(a.exposures, a.store, a.workers)
