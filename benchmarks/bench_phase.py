"""Benchmark: the pixel-phase self-calibration (``starcenter phase``, cubes.stages.phase).

Two checks, printed as tables with what they were made from:

``sim STORE [STORE ...] [--name NET]`` (SIMULATION, exact truth): on held-out sets of
bench_generalist (e.g. the WF3 -12 um set), the error of bright stars (>= 1e4 e-) against the truth
after a cubic per exposure (what the transformations absorb), and the pixel-phase curve (median
error in 5 bins of true phase), before and after the self-calibration, for the classical library
ePSF (a store copy re-detected with it, bench_generalist.library_centres), the classical fitted
ePSF and the network NET. A correct correction shrinks a biased method's curve and error and leaves
an unbiased one as it is.

``real DIR`` (REAL DATA, omega Cen u40x010hm with its c1f, the stores of bench_generalist's REAL
section): per chip and axis the fractional-pixel chi-square p of each method, raw, and after a
correction fitted on the OTHER half of the stars (cross-validated: a correction fitted and tested
on the same stars would be uniform by construction). The truth is unknown there: uniform phases
are necessary for unbiased centres, not proof of them.

``control SIMSTORE`` (SIMULATION): a ``simulate --like`` mirror of the real exposure through the
same pipeline: uniform phases there (and in its truth) make the real non-uniformity the real chips'.

``focus STORE`` (REAL DATA, or the mirror): the phase uniformity of bright isolated stars fitted
with the model ePSF (chip centre) at every despace of the psf stage's grid and with more or less
charge diffusion, beside the fit quality. Read it against the mirror: without the field variation
the scan itself reads a1 = -0.1 ... -0.3 at the mirror's true despace.

    python benchmarks/bench_phase.py sim /tmp/bgw/held-out-12.0.zarr --name ensemble
    python benchmarks/bench_phase.py real /tmp/realgen2
    starcenter simulate /tmp/like.zarr --like /tmp/realgen2/real-fitted.zarr
    python benchmarks/bench_phase.py control /tmp/like.zarr
    python benchmarks/bench_phase.py focus /tmp/realgen2/real-fitted.zarr --chips WF3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: the settings compared: (label, order, pool)
SETTINGS = (("order 0, per exposure", 0, "exposure"), ("order 1, per exposure", 1, "exposure"),
            ("order 0, pooled", 0, "store"), ("order 1, pooled", 1, "store"))


def cubic_residuals(err: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Errors ``err`` (n, 2) less the cubic in the chip position ``xy`` (n, 2) that a transformation
    would absorb (the transforms stage's fit, 3-sigma culling)."""
    from starcenter.cubes.classical.transforms import apply, fit_cubic

    cx, cy, *_ = fit_cubic(xy[:, 0], xy[:, 1], err[:, 0], err[:, 1])
    return err - np.stack(apply(cx, cy, xy[:, 0], xy[:, 1]), axis=-1)


def sim_row(xy: np.ndarray, exact: np.ndarray, bright: np.ndarray) -> str:
    """'after-cubic robust sigma x / y; phase curve x | y' (mpix) of one chip's centres."""
    from starcenter.cubes.classical.stats import robust_sigma
    from starcenter.cubes.classical.phase import fractional

    rows = []
    for e in range(len(xy)):
        ok = np.all(np.isfinite(xy[e]) & np.isfinite(exact[e]), axis=1) & bright
        err = (xy[e, ok] - exact[e, ok]) * 1e3
        rows.append(np.c_[cubic_residuals(err, exact[e, ok]), fractional(exact[e, ok])])
    r = np.concatenate(rows)
    cells = [f"{robust_sigma(r[:, 0]):.1f} / {robust_sigma(r[:, 1]):.1f}"]
    for ax in range(2):
        b5 = np.clip(((r[:, 2 + ax] + 0.5) * 5).astype(int), 0, 4)
        curve = [np.median(r[b5 == j, ax]) for j in range(5)]
        cells.append(f"{np.ptp(curve):.1f} ({' '.join(f'{c:+.0f}' for c in curve)})")
    return " | ".join(cells)


def sim(stores: list[Path], name: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_generalist import library_centres

    from starcenter.cubes import store as st
    from starcenter.cubes.cluster import ClusterOptions
    from starcenter.cubes.classical.phase import self_calibrated
    from starcenter.evaluation.metrics import method_positions

    opts = ClusterOptions(scheduler="local", workers=1, quiet=True)
    for store in stores:
        ras, truth = st.open_group(store, "rasters"), st.open_group(store, "truth")
        exact = (ras["corner"] + ras["target_exact"]).values
        methods = {"classical library": library_centres(store, opts),
                   "classical fitted": method_positions(store, "classical", "all"),
                   name: method_positions(store, name, "all")}
        for k, chip in enumerate(str(c) for c in ras["chip"].values):
            idx = ras["sim_index"].values[k]
            bright = np.where(idx >= 0, truth["flux"].values[k][np.maximum(idx, 0)], 0) >= 1e4
            print(f"\n== SIMULATION {store.name} {chip}: bright stars (>= 1e4 e-), error after a cubic per "
                  "exposure, mpix ==\n| method | correction | robust sigma x / y | phase p2p x (curve) | "
                  "phase p2p y (curve) |\n|---|---|---|---|---|")
            for m, xy in methods.items():
                print(f"| {m} | none | {sim_row(xy[:, k], exact[:, k], bright)} |")
                for label, order, pool in SETTINGS:
                    fixed = self_calibrated(xy[:, k], order=order, pool=pool)[0]
                    print(f"| {m} | {label} | {sim_row(fixed, exact[:, k], bright)} |")


def half_p(xy: np.ndarray, order: int) -> tuple[list[float], list[float]]:
    """(raw p, cross-validated p) per axis of one chip's centres (each half of the stars corrected
    with the other half's coefficients: starcenter.cubes.classical.phase.cross_validated)."""
    from scipy.stats import chisquare

    from starcenter.cubes.classical.phase import cross_validated, fractional

    ok = np.all(np.isfinite(xy), axis=-1)
    fixed = cross_validated(xy, ok, order=order)
    raw, cv = [], []
    for ax in range(2):
        for pos, out in ((xy, raw), (fixed, cv)):
            h = np.histogram(fractional(pos[..., ax][ok]), 10, (-0.5, 0.5))[0]
            out.append(float(chisquare(h).pvalue))
    return raw, cv


def real(outdir: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_generalist

    from starcenter.cubes.cluster import ClusterOptions
    from starcenter.evaluation.metrics import method_positions

    if bench_generalist.real(outdir, ClusterOptions(scheduler="local", workers=1, quiet=True)) is None:
        return
    methods = {"classical library": method_positions(outdir / "real-library.zarr", "classical"),
               "classical fitted": method_positions(outdir / "real-fitted.zarr", "classical"),
               "generalist": method_positions(outdir / "real-fitted.zarr", "generalist")}
    print("\n== REAL DATA, omega Cen u40x010hm: fractional-pixel chi-square p x / y (raster stars); "
          "corrected = fitted on the other half of the stars ==\n| method | chip | n | raw | corrected, "
          "order 0 | corrected, order 1 |\n|---|---|---|---|---|---|")
    for m, xy in methods.items():
        for k, chip in enumerate(("PC1", "WF2", "WF3", "WF4")[:xy.shape[1]]):
            raw, cv1 = half_p(xy[:, k], 0)
            cv2 = half_p(xy[:, k], 1)[1]
            n = int(np.all(np.isfinite(xy[:, k]), axis=-1).sum())
            cells = " | ".join(f"{p[0]:.2g} / {p[1]:.2g}" for p in (raw, cv1, cv2))
            print(f"| {m} | {chip} | {n} | {cells} |")


def focus_scan(store: Path, chips: list[str], diffusion: list[float]) -> None:
    """A store's first exposure (REAL DATA, or a simulation as the control): the bright isolated
    stars of each chip fitted with the model ePSF (chip centre) at every node of the psf stage's
    focus grid (and, at +10 um, with the charge-diffusion perturbations ``diffusion``): the first
    harmonic a1 of the phase density (0: uniform; < 0: centres pushed away from pixel centres)
    beside the fit quality q (median sum |residual| / flux)."""
    from starcenter.cubes import store as st
    from starcenter.cubes.classical.focus import diffuse, select_stars
    from starcenter.cubes.classical.phase import first_harmonic
    from starcenter.cubes.classical.psffit import fit_stars
    from starcenter.cubes.params import PSFFitParams
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    ex = st.open_group(store, "exposures")
    filt = ex.attrs.get("filter", "F555W")
    kind = "SIMULATION" if st.has_group(store, "truth") else "REAL DATA"
    print(f"\n== {kind} {store}: phase-density first harmonic a1 x / y and median q of bright isolated "
          "stars fitted with the model ePSF ==\n| chip | despace um | diffusion d | n | median q | a1 x / y |"
          "\n|---|---|---|---|---|---|")
    for chip in chips:
        k = [str(c) for c in ex["chip"].values].index(chip)
        img, dq = ex["image"].values[0, k], ex["dq"].values[0, k]
        gain, rn = float(ex["gain"].values[k]), float(ex["read_noise"].values[k])
        stars = select_stars(img, dq, gain, rn, get_epsf(PSFParams(chip, filt, 0.0)), min_snr=20,
                             max_stars=1500, isolation_px=4)
        cases = [(float(f), 0.0) for f in PSFFitParams().grid()] + [(10.0, d) for d in diffusion if d != 0]
        for f, d in cases:
            r = fit_stars(img, stars.ix, stars.iy, diffuse(get_epsf(PSFParams(chip, filt, f)), d), gain, rn)
            ok = (r.flags == 0) & np.isfinite(r.x)
            a1 = [first_harmonic(v[ok]) for v in (r.x, r.y)]
            print(f"| {chip} | {f:+.1f} | {d:+.2f} | {ok.sum()} | {np.median(r.q[ok]):.3f} | "
                  f"{a1[0]:+.2f} / {a1[1]:+.2f} |")


def control(store: Path) -> None:
    """SIMULATION control of the REAL check: a ``simulate --like`` mirror of the real exposure through
    the same pipeline as bench_generalist's REAL section (psf --fit focus, detect --psf fitted,
    catalog): fractional-pixel chi-square p and the phase density's first harmonic a1 of its raster
    stars' classical centres and of their truth."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_generalist import process_set

    from starcenter.cubes import store as st
    from starcenter.cubes.classical.phase import first_harmonic
    from starcenter.cubes.cluster import ClusterOptions
    from starcenter.evaluation.metrics import fractional_histograms, method_positions

    if not st.has_group(store, "rasters"):
        process_set(store, ClusterOptions(scheduler="local", workers=1, quiet=True))
    hist = fractional_histograms(store, "classical-kept")
    ras = st.open_group(store, "rasters")
    pos = {"classical fitted": method_positions(store, "classical"),
           "truth": (ras["corner"] + ras["target_exact"]).values}
    print(f"\n== SIMULATION {store}: raster stars, fractional-pixel p x / y and a1 x / y ==\n"
          "| chip | n | p (classical fitted) | a1 classical fitted | a1 truth |\n|---|---|---|---|---|")
    for k, (chip, h) in enumerate(hist.items()):
        a1 = []
        for xy in pos.values():
            v = xy[:, k].reshape(-1, 2)
            v = v[np.all(np.isfinite(v), axis=1)]
            harm = [first_harmonic(v[:, a]) for a in range(2)]
            a1.append(f"{harm[0]:+.3f} / {harm[1]:+.3f}")
        print(f"| {chip} | {h['n']} | {h['p_uniform_x']:.2g} / {h['p_uniform_y']:.2g} | {a1[0]} | {a1[1]} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("sim", help="SIMULATION held-out stores (bench_generalist's), exact truth")
    p.add_argument("stores", nargs="+", type=Path)
    p.add_argument("--name", default="generalist", help="the network's centers group in the stores")
    p = sub.add_parser("real", help="REAL DATA omega Cen (bench_generalist's REAL stores, made if absent)")
    p.add_argument("outdir", type=Path)
    p = sub.add_parser("focus", help="phase uniformity against the model's despace and diffusion")
    p.add_argument("store", type=Path, help="a store with exposures (e.g. bench_generalist's REAL "
                                            "real-fitted.zarr, or its `simulate --like` mirror)")
    p.add_argument("--chips", default="PC1,WF2,WF3,WF4")
    p.add_argument("--diffusion", default="-1,-0.5,0.5,1,2", help="perturbations d tried at +10 um")
    p = sub.add_parser("control", help="SIMULATION: a `simulate --like` mirror of the real exposure, "
                                       "through the same pipeline")
    p.add_argument("store", type=Path)
    args = ap.parse_args(argv)
    if args.what == "sim":
        sim(args.stores, args.name)
    elif args.what == "real":
        real(args.outdir)
    elif args.what == "control":
        control(args.store)
    else:
        focus_scan(args.store, args.chips.split(","), [float(d) for d in args.diffusion.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
