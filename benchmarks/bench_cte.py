"""Benchmark (SIMULATION): what WFPC2's CTE does to centring, and what the transformations leave.

Two held-out WF3 sets with the same seed (the same stars, dithers and photon noise before the
readout), one read out without CTE and one with WFPC2's CTE (:mod:`starcenter.cubes.cte`,
calibrated on Dolphin 2002, at the set's 1999 dates): +4.5 um, 24 exposures, field-varying PSF,
whole chip, built as ``bench_generalist.py`` builds its sets; and the CTE set corrected
(``starcenter cte``, :mod:`starcenter.cubes.stages.cte_correct`; with ``--trap-scales``
also by models whose trap density is off by those factors) and run through the same pipeline. On each: the classical fit with the fitted ePSF and the shipped generalist, against the
exact truth. Printed per method: the median y error (mpix; + is away from the readout) by flux
bin and quarter of the chip in y, then the same after each exposure's error is fitted by a plane
in (x, y) over its stars of >= 3e3 e- and removed (a stand-in for what the exposure-to-reference
transformation absorbs: a CTE shift that grows with y alike for every star is a y scale), and
the robust y error of every star.

    python benchmarks/bench_cte.py OUTDIR [--focus 4.5] [--exposures 24] [--trap-scales 0.7,1.3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_generalist as B  # noqa: E402

FLUX_BINS = ((1e3, 3e3), (3e3, 1e4), (1e4, 3e4), (3e4, 1e5))
BANDS = (0, 200, 400, 600, 800)


def errors(store: Path, opts):
    """{method: (exposure, star, 2) error in mpix}, the exact (x, y) and the true flux (e-)."""
    from starcenter.cubes import pipeline
    from starcenter.cubes import store as st
    from starcenter.evaluation.metrics import method_positions

    pipeline.run_stage("predict", store, opts, False, model_path=None, name="generalist", chip="WF3")
    ras, truth = st.open_group(store, "rasters"), st.open_group(store, "truth")
    idx = ras["sim_index"].values[0]
    flux = np.where(idx >= 0, truth["flux"].values[0][np.maximum(idx, 0)], np.nan)
    exact = (ras["corner"] + ras["target_exact"]).values[:, 0]
    out = {m: (method_positions(store, key, "all")[:, 0] - exact) * 1e3
           for m, key in (("classical-fitted", "classical"), ("generalist", "generalist"))}
    return out, exact, flux


def plane_removed(err: np.ndarray, exact: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """The y error less, per exposure, its least-squares plane in (x, y) over stars >= 3e3 e-."""
    out = np.full(err.shape[:2], np.nan)
    for e in range(err.shape[0]):
        ok = np.isfinite(err[e, :, 1]) & np.isfinite(exact[e, :, 1])
        fit = ok & (flux >= 3e3)
        if fit.sum() < 10:
            continue
        design = np.column_stack([np.ones(ok.sum()), exact[e, ok, 0], exact[e, ok, 1]])
        coef, *_ = np.linalg.lstsq(design[fit[ok]], err[e, fit, 1], rcond=None)
        out[e, ok] = err[e, ok, 1] - design @ coef
    return out


def table(title: str, y_err: np.ndarray, exact: np.ndarray, flux: np.ndarray) -> dict:
    print(f"  {title}: median y error (mpix) by chip-y quarter " + " ".join(
        f"{lo}-{hi}" for lo, hi in zip(BANDS[:-1], BANDS[1:])))
    rows = {}
    for lo, hi in FLUX_BINS:
        sel = (flux >= lo) & (flux < hi)
        cells = []
        for a, b in zip(BANDS[:-1], BANDS[1:]):
            m = sel[None, :] & (exact[..., 1] >= a) & (exact[..., 1] < b) & np.isfinite(y_err)
            cells.append(float(np.median(y_err[m])) if m.sum() >= 20 else float("nan"))
        rows[f"{lo:.0e}-{hi:.0e}"] = cells
        print(f"    {lo:7.0e}-{hi:7.0e} e-: " + " ".join(f"{c:+7.1f}" for c in cells))
    return rows


def main(argv=None):
    from starcenter.cubes.classical.stats import robust_sigma
    from starcenter.cubes.cluster import ClusterOptions
    from starcenter.cubes.stages.cte_correct import correct_store

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--focus", type=float, default=4.5)
    p.add_argument("--exposures", type=int, default=B.EXPOSURES)
    p.add_argument("--trap-scales", type=lambda t: [float(v) for v in t.split(",")], default=[],
                   help="also correct with the model's trap density times these (a model that is off)")
    args = p.parse_args(argv)
    opts = ClusterOptions(scheduler="local", workers=1, quiet=True)
    args.outdir.mkdir(parents=True, exist_ok=True)
    stores = {"without CTE": args.outdir / f"no-cte{args.focus:+.1f}.zarr",
              "WITH WFPC2 CTE": args.outdir / f"cte{args.focus:+.1f}.zarr"}
    for (label, store), cti in zip(list(stores.items()), (False, True)):
        B.make_set(store, args.focus, args.exposures, B.held_out_seed(args.focus), opts, chips=("WF3",), cti=cti)
    for scale in [1.0, *args.trap_scales]:
        corrected = args.outdir / (f"corrected{args.focus:+.1f}" + ("" if scale == 1 else f"-x{scale:g}") + ".zarr")
        if not corrected.with_suffix(".complete").exists():
            correct_store(stores["WITH WFPC2 CTE"], corrected, trap_scale=scale)
            B.process_set(corrected, opts)
            corrected.with_suffix(".complete").touch()
        stores[f"WITH CTE, corrected (starcenter cte, model's traps x {scale:g})"] = corrected
    for label, store in stores.items():
        errs, exact, flux = errors(store, opts)
        print(f"\nSIMULATION, WF3 {args.focus:+.1f} um, {label} ({store.name})")
        for method, err in errs.items():
            print(f" {method}: robust y error, every star {robust_sigma(err[..., 1][np.isfinite(err[..., 1])]):.2f} mpix")
            table("raw", err[..., 1], exact, flux)
            table("after a plane in (x, y) per exposure", plane_removed(err, exact, flux), exact, flux)


if __name__ == "__main__":
    main()
