"""Benchmark: rasters without their neighbours' light (``starcenter catalog --neighbours subtract``).

SIMULATION, exact truth. On bench_generalist's held-out stores (whole chip, field-varying PSF,
crowded; the shipped generalist never saw them), a copy of each store gets its rasters cut again
from the image less the ePSF models of every other detected star (the detections' fits, fitted
ePSF), and the shipped generalist centres them. Printed beside the rasters as cut before (the
paper's) and the classical fits: error over each star's Cramér–Rao bound (robust, honest ratio,
bench_generalist.scores) by flux bin for every raster star [isolated ones], and the phase bias.
The classical fit with 2 neighbour passes (each star refitted on the image less all other fitted
stars, ``DetectParams(neighbour_passes=2)``) is fitted here on the same raster stars.

With ``--truth-min-flux 0,1e3,1e4`` the TRUE stars above each flux (the simulation's truth, the
detections' ePSF) are taken out instead: what a perfect neighbour model would give.

    python benchmarks/bench_neighbours.py /tmp/bgw/held-out-12.0.zarr /tmp/bgp/held-out-12.0.zarr
    python benchmarks/bench_neighbours.py /tmp/bgw/held-out-12.0.zarr --truth-min-flux 0,1e3,3e3,1e4
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np


def classical_passes(store: Path, passes: int = 2) -> np.ndarray:
    """(exposure, chip, star, 2) centres of the raster stars fitted with the detections' ePSF and
    ``passes`` neighbour passes (nearest new detection within 1 px of the raster's prelim)."""
    from scipy.spatial import cKDTree

    from starcenter.cubes import schema
    from starcenter.cubes import store as st
    from starcenter.cubes.lookup import chip_epsfs
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.stages.detections import detect_chunk

    ex, ras, det = (st.open_group(store, g) for g in ("exposures", "rasters", "detections"))
    dp = schema.read_params(det, DetectParams)
    chips, epsfs = chip_epsfs(store, dp)
    params = dataclasses.replace(dp, neighbour_passes=passes)
    prelim, mask = ras["prelim"].values, ras["mask"].values
    out = np.full(prelim.shape, np.nan)
    for c, chip in enumerate(chips):
        gain, rn = float(ex["gain"].values[c]), float(ex["read_noise"].values[c])
        for e in range(prelim.shape[0]):
            dq = ex["dq"].values[e, c] if "dq" in ex else None
            d = detect_chunk(ex["image"].values[e, c], dq, epsfs[chip](e), gain, rn, params,
                             ex.attrs.get("saturation_dn"))
            fin = np.isfinite(d["x"]) & np.isfinite(d["y"])
            s = np.flatnonzero(mask[e, c])
            dist, j = cKDTree(np.c_[d["x"][fin], d["y"][fin]]).query(prelim[e, c, s])
            near = dist < 1.0
            out[e, c, s[near]] = np.c_[d["x"][fin][j[near]], d["y"][fin][j[near]]]
    return out


def subtracted_copy(store: Path, workdir: Path) -> Path:
    """A copy of ``store`` where the shipped generalist centres its rasters as cut
    (``centers/generalist-keep``), then the rasters cut again without neighbours
    (``centers/generalist-subtract``)."""
    from starcenter.cubes import pipeline, schema
    from starcenter.cubes import store as st
    from starcenter.cubes.cluster import ClusterOptions
    from starcenter.cubes.params import RasterParams

    out = workdir / f"{store.parent.name}-{store.stem}-subtract.zarr"
    if st.has_group(out, "centers/generalist-subtract"):
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(store, out)
    _predict_shipped(out, "generalist-keep")
    cut = schema.read_params(st.open_group(out, "rasters"), RasterParams)
    without = dataclasses.replace(cut, neighbours="subtract")
    pipeline.run(out, "rasters", "rasters", {"rasters": {"params": without}},
                 ClusterOptions(scheduler="synchronous"), False)
    _predict_shipped(out, "generalist-subtract")
    return out


def _predict_shipped(store: Path, name: str) -> None:
    """The shipped generalist on every chip of ``store``'s rasters -> ``centers/NAME``."""
    from starcenter.cubes import pipeline
    from starcenter.cubes import store as st

    for chip in (str(c) for c in st.open_group(store, "rasters")["chip"].values):
        pipeline.run_stage("predict", store, progress=False, model_path=None, name=name, chip=chip)


def truth_subtracted(store: Path, workdir: Path, min_flux: float) -> np.ndarray:
    """The shipped generalist's centres of the raster stars (exposure, chip, star, 2) when every
    TRUE star of at least ``min_flux`` e- but the raster's own (the simulation's truth, drawn with
    the detections' ePSF) is taken out of its raster: what a perfect neighbour model would give."""
    import zarr

    from starcenter.cubes.classical.fieldpsf import neighbour_free
    from starcenter.cubes.stages.rasters import _detections_epsf
    from starcenter.evaluation.metrics import method_positions

    out = workdir / f"{store.parent.name}-{store.stem}-truth{min_flux:g}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(store, out)
    root = zarr.open_group(str(out), mode="r+")
    ras, tr = root["rasters"], root["truth"]
    for c in range(ras["raster"].shape[1]):
        epsf_for = _detections_epsf(str(out), c)
        gain = float(np.asarray(root["exposures/gain"])[c])
        flux = np.asarray(tr["flux"][c]) / gain
        own = np.asarray(ras["sim_index"][c])
        for e in range(ras["raster"].shape[0]):
            x, y = np.asarray(tr["x"][e, c]), np.asarray(tr["y"][e, c])
            use = np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & (flux * gain >= min_flux)
            s = np.flatnonzero(np.asarray(ras["mask"][e, c]))
            r, ok = neighbour_free(np.asarray(root["exposures/image"][e, c], float), x, y, flux, use, own[s],
                                   np.asarray(ras["corner"][e, c])[s], epsf_for(e), ras["raster"].shape[-1])
            block = np.asarray(ras["raster"][e, c])
            block[s[ok]] = r[ok]
            ras["raster"][e, c] = block
    _predict_shipped(out, "generalist-truth")
    return method_positions(out, "generalist-truth")


def row(store: Path, workdir: Path, truth_min_flux=()) -> dict:
    """The scores of one held-out store: classical (as cut, 2 neighbour passes), the shipped
    generalist on the rasters as cut and without neighbours."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_generalist import scores

    from starcenter.evaluation.metrics import method_positions

    sub = subtracted_copy(store, workdir)
    pos = {"classical fitted": method_positions(sub, "classical"),
           "classical fitted, 2 neighbour passes": classical_passes(sub),
           "generalist (shipped), rasters as cut": method_positions(sub, "generalist-keep"),
           "generalist (shipped), rasters without neighbours": method_positions(sub, "generalist-subtract")}
    for f in truth_min_flux:
        pos[f"generalist (shipped), true stars >= {f:g} e- taken out"] = truth_subtracted(store, workdir, f)
    return scores(sub, pos)


def print_row(store: Path, rep: dict) -> None:
    """Per chip: each method's error over the bound by flux bin, every raster star and isolated,
    and its phase bias (bench_generalist.scores of one store)."""
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", type=Path, help="held-out stores of bench_generalist")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_neighbours"))
    ap.add_argument("--truth-min-flux", default="", help="comma-separated e-: also take out the TRUE "
                    "stars above each (0: every true star), a perfect neighbour model")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    fluxes = [float(v) for v in args.truth_min_flux.split(",") if v]
    for store in args.stores:
        print_row(store, row(store, args.workdir, fluxes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
