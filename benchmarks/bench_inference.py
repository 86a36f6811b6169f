"""Benchmark: inference speed of the registered architectures on this machine's CPU.

Stars per second of ``starcenter.model.predict.forward`` (what ``starcenter predict`` runs) on
6x6 rasters (batch 8192, the batch ``starcenter predict`` uses), for VGG6 V1, V2 and the small
ResNet, with and without the per-star features and uncertainty outputs, at TensorFlow's default
threads (one per core); parameters beside. Random weights: speed does not depend on them. ``--shipped``: the shipped generalist models too
(an ensemble runs each of its members: its speed is a member's over their number).

    python benchmarks/bench_inference.py [--stars 65536] [--repeats 3] [--shipped]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def stars_per_second(model, n: int, repeats: int, n_features: int) -> float:
    from starcenter.model.predict import forward

    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, (n, 6, 6, 1)).astype(np.float32)
    r /= r.sum(axis=(1, 2, 3), keepdims=True)
    f = rng.normal(size=(n, n_features)).astype(np.float32)

    def first(k):
        return (r[:k], f[:k]) if n_features else r[:k]

    x = first(n)
    forward(model, first(8192))  # warm-up: graph tracing
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(model, x)
        best = min(best, time.perf_counter() - t0)
    return n / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stars", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shipped", action="store_true", help="also time the shipped generalist models")
    args = ap.parse_args(argv)
    import os

    from starcenter.model.architectures import ARCHITECTURES, build

    print(f"CPU cores: {os.cpu_count()}; {args.stars} rasters of 6x6, batch 8192, best of {args.repeats}")
    print("| architecture | outputs | parameters | stars/s |")
    print("|---|---|---|---|")
    for arch in ARCHITECTURES:
        for label, opts in (("x, y", {}), ("x, y, sigma, flux (+2 features)",
                                           {"n_features": 2, "uncertainty": True, "flux": True})):
            m = build(arch, 6, **opts)
            sps = stars_per_second(m, args.stars, args.repeats, opts.get("n_features", 0))
            print(f"| {arch} | {label} | {m.count_params():,} | {sps:,.0f} |", flush=True)
    if args.shipped:
        from starcenter.model.predict import SHIPPED, load_model
        from starcenter.model.train import load_metadata

        for path in sorted(SHIPPED.glob("generalist-*.keras")):
            meta, m = load_metadata(path), load_model(str(path))
            sps = stars_per_second(m, args.stars, args.repeats, len(meta.get("features") or ()))
            print(f"| shipped {path.stem} ({meta['architecture']}) | {meta['outputs']} (+{len(meta['features'])} "
                  f"features) | {m.count_params():,} | {sps:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
