"""Benchmark (SIMULATION, exact truth): any centring networks beside the classical fits on
bench_generalist's held-out stores (whole chip, field-varying PSF, epochs no network trained on).

Each store is copied into ``--workdir``; each model (``NAME=PATTERN``, ``{chip}`` in PATTERN is
the chip; ``NAME=shipped``: the shipped generalist) centres the copy's rasters with ``starcenter
predict``; the classical fit with each exposure's fitted ePSF (the store's detections) and the same
fit with 2 neighbour passes (bench_neighbours.classical_passes) are scored on the same raster stars.
Printed per store and chip: error over each star's Cramér–Rao bound (robust, honest ratio,
bench_generalist.scores) by flux bin for every raster star [isolated ones], the phase bias, and
each network's error over the best classical method's per flux bin (the #13 floor "no worse
than the best classical method").

    python benchmarks/bench_models.py /tmp/bgw/held-out-12.0.zarr --model shipped=shipped \\
        --model residual=/tmp/res21/res-{chip}-F555W.keras
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def predicted_copy(store: Path, workdir: Path, models: dict) -> Path:
    """A copy of ``store`` with ``centers/NAME`` of every model (skipped where already there)."""
    from starcenter.cubes import pipeline
    from starcenter.cubes import store as st

    out = workdir / f"{store.parent.name}-{store.stem}.zarr"
    if not out.exists():
        shutil.copytree(store, out)
    chips = [str(c) for c in st.open_group(out, "rasters")["chip"].values]
    for name, pattern in models.items():
        if st.has_group(out, f"centers/{name}"):
            continue
        for chip in chips:
            path = None if pattern == "shipped" else pattern.format(chip=chip)
            pipeline.run_stage("predict", out, progress=False, model_path=path, name=name, chip=chip)
    return out


def row(store: Path, workdir: Path, models: dict) -> dict:
    """bench_generalist.scores of the classical fits and every model on one held-out store."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_generalist import scores
    from bench_neighbours import classical_passes

    from starcenter.evaluation.metrics import method_positions

    copy = predicted_copy(store, workdir, models)
    pos = {"classical fitted": method_positions(copy, "classical"),
           "classical fitted, 2 neighbour passes": classical_passes(copy)}
    pos.update({name: method_positions(copy, name) for name in models})
    return scores(copy, pos)


def print_row(store: Path, rep: dict, models) -> None:
    for chip, res in rep.items():
        if "no_stars" in res:
            print(f"\n{store} {chip}: not scored ({res['no_stars']} common raster stars)")
            continue
        print(f"\n== SIMULATION {store} {chip}: error over the bound (honest) by flux bin (its lower edge, "
              "e-) ==\n| method | every raster star | isolated | phase p2p x / y mpix |\n|---|---|---|---|")
        for m, r in res.items():
            cells = [", ".join(f"{b['flux_e'][0]:.0e}: {b['ratio']:.3f}" for b in r[k])
                     for k in ("bins", "bins_isolated")]
            print(f"| {m} | {cells[0]} | {cells[1]} | {r['phase_p2p_mpix'][0]} / {r['phase_p2p_mpix'][1]} |")
        best = {}
        for m in ("classical fitted", "classical fitted, 2 neighbour passes"):
            for b in res[m]["bins"]:
                best[b["flux_e"][0]] = min(best.get(b["flux_e"][0], 9e9), b["robust_mpix"])
        for m in models:
            cells = ", ".join(f"{b['flux_e'][0]:.0e}: {b['robust_mpix'] / best[b['flux_e'][0]]:.3f}"
                              for b in res[m]["bins"] if b["flux_e"][0] in best)
            print(f"{m} over the best classical (robust error, every raster star): {cells}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", type=Path, help="held-out stores of bench_generalist")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATTERN",
                    help="a network per chip ({chip} in PATTERN), or NAME=shipped")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_models"))
    args = ap.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for store in args.stores:
        print_row(store, row(store, args.workdir, models), models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
