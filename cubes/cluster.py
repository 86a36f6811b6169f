"""Where a stage's dask work runs: a LocalCluster sized to the machine, a running scheduler, or a
local dask scheduler; the one place a cluster is started (the pipeline driver uses it)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterOptions:
    """scheduler: 'local' (a LocalCluster: one single-threaded worker process per core, memory
    split between them), 'synchronous', 'threads', 'processes' (dask's local schedulers, no
    cluster) or the address of a running dask scheduler. dashboard_address: where a LocalCluster's
    dashboard listens (127.0.0.1 by default: this machine only). quiet: no dashboard line."""

    scheduler: str = "local"
    workers: int | None = None
    threads: int = 1
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"
    quiet: bool = False


LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")


@contextmanager
def cluster(options: ClusterOptions | None):
    """Run the enclosed dask work as ``options`` say (None: whatever scheduler is active).
    Prints the dashboard link of a distributed cluster unless quiet."""
    if options is None:
        yield None
        return
    if options.scheduler in LOCAL_SCHEDULERS:
        import dask

        with dask.config.set(scheduler=options.scheduler):
            yield None
        return
    from distributed import Client, LocalCluster

    if options.scheduler == "local":
        local = LocalCluster(n_workers=options.workers or os.cpu_count(),
                             threads_per_worker=options.threads, processes=True,
                             dashboard_address=options.dashboard_address,
                             memory_limit=options.memory_limit)
        client = Client(local)
    else:
        local, client = None, Client(options.scheduler)
    try:
        if not options.quiet:
            print(f"dask dashboard: {client.dashboard_link}", flush=True)
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()
