"""Benchmark (#17): training throughput on this machine's cores, V1 and V2.

On one store's rasters (SIMULATION), ``--epochs`` epochs of the fast recipe per run, samples/s
= training rasters x epochs / training seconds:

1. one training, TensorFlow limited to 1 thread (one core's worth);
2. one training, TensorFlow's own thread pools (all cores);
3. two trainings at once, one thread each (``starcenter.model.parallel``, what the demo does):
   the summed samples/s of the pair.

    python benchmarks/bench_train_cores.py STORE [--chip WF3] [--epochs 3]

Prints the samples/s and the ratios 2/1 and 3/1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE = r"""
import json, sys
from starcenter.model import set_tensorflow_threads
threads = int(sys.argv[6])
if threads:
    set_tensorflow_threads(threads)
from starcenter.model.train import train
m = train(sys.argv[1], sys.argv[2], sys.argv[3], "fast", int(sys.argv[4]), sys.argv[5], verbose=0)
print(json.dumps({"n": m["n_train"], "epochs": m["epochs"], "s": m["train_seconds"]}))
"""


def run(store, chip, arch, epochs, out: Path, threads: int):
    """A subprocess training; returns (samples/s, its Popen) once started (call .wait())."""
    return subprocess.Popen([sys.executable, "-c", ONE, str(store), chip, arch, str(epochs), str(out),
                             str(threads)], stdout=subprocess.PIPE, text=True)


def rate(proc) -> float:
    out, _ = proc.communicate()
    r = json.loads(out.strip().splitlines()[-1])
    return r["n"] * r["epochs"] / r["s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--chip", default="WF3")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args(argv)
    print(f"SIMULATION rasters of {a.store} ({a.chip}), fast recipe, {a.epochs} epochs, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("v1", "v2"):
            one = rate(run(a.store, a.chip, arch, a.epochs, Path(tmp) / f"{arch}-1.keras", 1))
            own = rate(run(a.store, a.chip, arch, a.epochs, Path(tmp) / f"{arch}-n.keras", 0))
            t0 = time.perf_counter()
            pair = [run(a.store, a.chip, arch, a.epochs, Path(tmp) / f"{arch}-p{k}.keras", 1) for k in (0, 1)]
            both = sum(rate(p) for p in pair)
            print(f"{arch}: 1 thread {one:8.0f} samples/s | TensorFlow's pools {own:8.0f} ({own / one:.2f}x) | "
                  f"two trainings of 1 thread {both:8.0f} ({both / one:.2f}x; pair wall {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
