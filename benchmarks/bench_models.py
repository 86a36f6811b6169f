"""Benchmark (SIMULATION, exact truth): any centring networks beside the classical fits on
bench_generalist's held-out stores (whole chip, field-varying PSF, epochs no network trained on).

Each store is copied into ``--workdir``; each model (``NAME=PATTERN``, ``{chip}`` in PATTERN is
the chip; ``NAME=shipped``: the shipped generalist) centres the copy's rasters with ``starcenter
predict``; the classical fit with each exposure's fitted ePSF (the store's detections) and the same
fit with 2 neighbour passes (bench_neighbours.classical_passes) are scored on the same raster stars;
with ``--passes-input`` every model also centres a copy whose classical centres (the networks'
``classical_x/y`` inputs) are the 2-pass fits, as after ``detect --neighbour-passes 2``.
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

import numpy as np

#: The classical methods every network is scored beside (the best of them per flux bin).
CLASSICAL = ("classical fitted", "classical fitted, 2 neighbour passes")


def predicted_copy(store: Path, workdir: Path, models: dict, into: Path | None = None) -> Path:
    """A copy of ``store`` (or ``into`` itself) with ``centers/NAME`` of every model (skipped where
    already there)."""
    from starcenter.cubes import pipeline
    from starcenter.cubes import store as st

    out = into or workdir / f"{store.parent.name}-{store.stem}.zarr"
    if not out.exists():
        shutil.copytree(store, out)
    chips = [str(c) for c in st.open_group(out, "rasters")["chip"].values]
    for name, pattern in models.items():
        if st.has_group(out, f"centers/{name}"):
            continue
        for chip in chips:  # a chip without its model file is left out (NaN: not scored)
            path = None if pattern == "shipped" else pattern.format(chip=chip)
            if path is not None and not Path(path).exists():
                print(f"{name}: no {path}; {chip} left out")
                continue
            pipeline.run_stage("predict", out, progress=False, model_path=path, name=name, chip=chip)
    return out


def takes_classical(pattern: str, store: Path) -> bool:
    """Whether the model ``pattern`` of every chip of ``store`` takes the classical centre as input."""
    from starcenter.cubes import store as st
    from starcenter.model.bridge import SKIP
    from starcenter.model.predict import shipped_model
    from starcenter.model.train import load_metadata

    filt = st.open_group(store, "exposures").attrs.get("filter", "F555W")
    paths = [shipped_model(str(c), filt) if pattern == "shipped" else pattern.format(chip=str(c))
             for c in st.open_group(store, "rasters")["chip"].values]
    return any(Path(p).exists() for p in paths) and all(
        set(SKIP) <= set(load_metadata(p).get("features") or ()) for p in paths if Path(p).exists())


def passes_input_copy(copy: Path, passes, models: dict) -> Path:
    """A copy of ``copy`` whose rasters' classical centres (``prelim``, the ``classical_x/y`` inputs)
    are the fits with 2 neighbour passes, as ``detect --neighbour-passes 2`` would give, with every
    model's ``centers/NAME`` again (the rasters as cut stay)."""
    import zarr

    out = copy.with_name(copy.stem + "-passes.zarr")
    if not out.exists():
        work = out.with_name(out.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(copy, work)
        shutil.rmtree(work / "centers", ignore_errors=True)  # centred from the fits without passes
        g = zarr.open_group(str(work), mode="r+")["rasters"]
        pre = np.asarray(g["prelim"][:])
        ok = np.all(np.isfinite(passes), axis=-1) & np.all(np.isfinite(pre), axis=-1)
        pre[ok] = passes[ok]
        g["prelim"][:] = pre
        work.rename(out)
    return predicted_copy(out, out.parent, models, into=out)


def row(store: Path, workdir: Path, models: dict, passes_input: bool = False) -> dict:
    """bench_generalist.scores of the classical fits and every model on one held-out store (and,
    with ``passes_input``, every model given the 2-pass classical centres)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_generalist import scores
    from bench_neighbours import classical_passes

    from starcenter.evaluation.metrics import method_positions

    copy = predicted_copy(store, workdir, models)
    cached = copy.with_suffix(".passes.npy")  # the refit takes minutes; the copy's detections never change
    if not cached.exists():
        np.save(cached, classical_passes(copy))
    passes = np.load(cached)
    pos = dict(zip(CLASSICAL, (method_positions(copy, "classical"), passes)))
    pos.update({name: method_positions(copy, name) for name in models})
    if passes_input:
        models = {n: p for n, p in models.items() if takes_classical(p, copy)}
        other = passes_input_copy(copy, passes, models)
        pos.update({f"{name}, 2-pass input": method_positions(other, name) for name in models})
    return scores(copy, pos)


def print_row(store: Path, rep: dict) -> None:
    """bench_neighbours' table, then each network's robust error over the best classical method's."""
    from bench_neighbours import print_row as table

    table(store, rep)
    for chip, res in rep.items():
        if "no_stars" in res:
            continue
        best = {}
        for m in CLASSICAL:
            for b in res[m]["bins"]:
                best[b["flux_e"][0]] = min(best.get(b["flux_e"][0], np.inf), b["robust_mpix"])
        for m in (m for m in res if m not in CLASSICAL):
            cells = ", ".join(f"{b['flux_e'][0]:.0e}: {b['robust_mpix'] / best[b['flux_e'][0]]:.3f}"
                              for b in res[m]["bins"] if b["flux_e"][0] in best)
            print(f"{chip} {m} over the best classical (robust error, every raster star): {cells}; error in the "
                  f"outer two thirds over the centre {res[m]['outer_over_centre']} (the bound's "
                  f"{res[m].get('bound_outer_over_centre')})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", type=Path, help="held-out stores of bench_generalist")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATTERN",
                    help="a network per chip ({chip} in PATTERN), or NAME=shipped")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_models"))
    ap.add_argument("--passes-input", action="store_true",
                    help="also give every model the classical fit with 2 neighbour passes as its classical "
                         "input (networks with classical_x/y; `detect --neighbour-passes 2`)")
    args = ap.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for store in args.stores:
        print_row(store, row(store, args.workdir, models, args.passes_input))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
