"""Benchmark (SIMULATION): the psf stage's fitted focus against the truth, and centring with the
fitted ePSF against the library and true ePSFs, beside the Cramér–Rao bound.

Per filter (F555W, F814W): a set of PC1 and WF3 exposures whose true focus is drawn from
-10 .. +15 um per exposure, with orbital breathing (1 um) and the field-varying PSF; then

1. ``starcenter psf --fit focus``: fitted vs true focus per (exposure, chip), rms, and a table of
   the error against the number of stars used (the kernel refitted with 10 .. 300 stars);
2. ``detect --psf library|fitted|true``: error against exact truth per flux bin (isolated,
   unflagged stars, central third and whole chip), the pixel-phase bias (median error in 5 bins
   of true phase, 1e4-1e5 e-, peak to peak) and the ratio to the Cramér–Rao bound (1e4-1e5 e-);
3. the time of the psf stage and of the detect stage on the same set, and on the demo set.

    python benchmarks/bench_psf_fit.py OUTDIR [--exposures 12] [--workers 2] [--demo-timing-only]

Prints the tables and writes OUTDIR/psf_fit.json. Every figure is from simulations.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FLUX_BINS = ((1e3, 3e3), (3e3, 1e4), (1e4, 3e4), (3e4, 1e5))
STAR_COUNTS = (10, 20, 30, 60, 120, 300)


def simulate_set(out: Path, filt: str, n: int, seed: int, cluster_options) -> Path:
    from starcenter.cubes import pipeline
    from starcenter.cubes.sim.simulate import make_config

    store = out / f"sweep_{filt}.zarr"
    cfg = make_config("demo", n_exposures=n, filter=filt, focus_sweep_um=(-10.0, 15.0),
                      focus_sweep_range=True, breathing_um=1.0, field_varying=True, seed=seed)
    pipeline.run(store, "simulate", "simulate", {"simulate": {"config": cfg}}, cluster_options)
    return store


def true_focus(store) -> np.ndarray:
    """(exposure, chip) true focus, um."""
    import xarray as xr

    ex = xr.open_zarr(store, group="exposures")
    return ex["focus"].values[:, None] + ex["focus_offset"].values[None, :]


def recovery(store) -> dict:
    import xarray as xr

    fit = xr.open_zarr(store, group="psf_fit")
    err = fit["focus"].values - true_focus(store)
    out = {}
    for c, chip in enumerate(fit.chip.values):
        ok = fit["status"].values[:, c] == 0
        e = err[ok, c]
        pull = e / fit["focus_err"].values[ok, c]
        out[str(chip)] = {"rms_um": float(np.sqrt(np.mean(e**2))), "mean_um": float(e.mean()),
                          "max_abs_um": float(np.abs(e).max()), "fitted": int(ok.sum()),
                          "flagged": int((~ok).sum()), "median_stars": float(np.median(fit["n_stars"].values[ok, c])),
                          "rms_pull": float(np.sqrt(np.mean(pull**2)))}
    return out


def error_vs_stars(store, exposures=6) -> dict:
    """Refit the first ``exposures`` exposures with the brightest N stars only, N in STAR_COUNTS."""
    import xarray as xr

    from starcenter.cubes.classical import focus as F
    from starcenter.cubes.params import PSFFitParams
    from starcenter.cubes.sim.optics import PSFParams, get_epsf
    from starcenter.cubes.stages.psf_fit import _Model

    ex = xr.open_zarr(store, group="exposures")
    truth = true_focus(store)
    p = PSFFitParams()
    out = {}
    for c, chip in enumerate(map(str, ex.chip.values)):
        model, lib = _Model(chip, ex.attrs["filter"]), get_epsf(PSFParams(chip, ex.attrs["filter"]))
        gain, rn = float(ex.gain.values[c]), float(ex.read_noise.values[c])
        errs = {n: [] for n in STAR_COUNTS}
        for e in range(min(exposures, ex.sizes["exposure"])):
            img, dq = ex.image.values[e, c], ex.dq.values[e, c]
            stars = F.select_stars(img, dq, gain, rn, lib, None, p.min_snr, p.isolation_px, max(STAR_COUNTS))
            for n in STAR_COUNTS:
                sub = F.FocusStars(stars.ix[:n], stars.iy[:n], stars.snr[:n], stars.sky[:n])
                f = F.fit_focus(img, sub, p.grid(), model, gain, rn, min(n, 10), p.fine_step, p.fine_step,
                                model.field_at)  # the sweep sets are field-varying: field "on"
                errs[n].append(f.focus - truth[e, c])
        out[chip] = {str(n): {"rms_um": float(np.sqrt(np.nanmean(np.square(v)))),
                              "fitted": int(np.isfinite(v).sum())} for n, v in errs.items()}
    return out


def centring(store, method: str) -> dict:
    """Errors against exact truth (mpix) of the current detections, per chip and flux bin."""
    import xarray as xr

    from starcenter.cubes.classical.peaks import local_sky
    from starcenter.cubes.classical.stats import robust_sigma
    from starcenter.evaluation.cramer_rao import error_over_bound
    from starcenter.evaluation.truth import match_to_truth, pixel_phase, star_bounds

    ex = xr.open_zarr(store, group="exposures")
    chips = [str(c) for c in ex["chip"].values]
    out = {}
    for c, chip in enumerate(chips):
        rn, gain = float(ex.read_noise.values[c]), float(ex.gain.values[c])
        rows = []
        for e in range(ex.sizes["exposure"]):
            m = match_to_truth(store, e, chip)
            ok = m.isolated & ~m.saturated & (m.flags == 0) & (m.q <= 1)
            px, py = pixel_phase(m.x_true[ok]), pixel_phase(m.y_true[ok])
            # the bound for the background each star sits on: the sky plus the unresolved
            # starlight of the crowded field (the local-sky map detection uses), e-/px
            bg = local_sky(ex.image.values[e, c].astype(float)) * gain
            ix = np.clip(np.floor(m.x_true[ok] + 0.5).astype(int), 0, 799)
            iy = np.clip(np.floor(m.y_true[ok] + 0.5).astype(int), 0, 799)
            bx, by = star_bounds(store, chip, np.full(int(ok.sum()), e), m.x_true[ok], m.y_true[ok], m.flux_true[ok],
                                 np.clip(bg[iy, ix], 0, None), rn)  # each star's own true ePSF
            central = (np.abs(m.x_true[ok] - 400) < 400 / 3) & (np.abs(m.y_true[ok] - 400) < 400 / 3)
            rows.append(np.column_stack([m.dx[ok], m.dy[ok], m.flux_true[ok], px, py, bx, by, central]))
        a = np.concatenate(rows)
        dx, dy, flux, px, py, bx, by, central = a.T
        res = {}
        for where, sel in (("central", central > 0), ("chip", np.ones(len(a), bool))):
            for lo, hi in FLUX_BINS:
                b = sel & (flux >= lo) & (flux < hi)
                res[f"{where} {lo:.0e}-{hi:.0e}"] = {
                    "n": int(b.sum()), "robust_mpix": 1e3 * float(robust_sigma(np.r_[dx[b], dy[b]])),
                    "rms_x_mpix": 1e3 * float(np.sqrt(np.mean(dx[b] ** 2))),
                    "rms_y_mpix": 1e3 * float(np.sqrt(np.mean(dy[b] ** 2))),
                    "cr_mpix": 1e3 * float(np.sqrt(np.mean((bx[b] ** 2 + by[b] ** 2) / 2)))}
            b = sel & (flux >= 1e4) & (flux < 1e5)
            edges = np.linspace(-0.5, 0.5, 6)
            bias = {}
            for ax, d, ph in (("x", dx, px), ("y", dy, py)):
                med = [np.median(d[b & (ph >= lo) & (ph < hi)]) for lo, hi in zip(edges[:-1], edges[1:])]
                bias[ax] = 1e3 * np.array(med)
            res[f"{where} bias"] = {ax: {"bins_mpix": v.round(2).tolist(), "p2p_mpix": float(np.ptp(v))}
                                    for ax, v in bias.items()}
            # crowded fields: a few blended stars set the rms; the robust sigma (1.4826 MAD) of each
            # error over its own star's bound is the typical star's, the one the bound speaks of
            res[f"{where} cr_ratio 1e4-1e5"] = error_over_bound(np.r_[dx[b], dy[b]], np.r_[bx[b], by[b]])
        out[chip] = res
    return out


def time_demo_set(outdir: Path, opts, exposures: int = 48) -> dict:
    """The psf stage against the detect stage on the demo set (SIMULATION, its own field setting:
    off), both from scratch on the same cluster options; printed."""
    from starcenter.cubes import pipeline
    from starcenter.cubes.params import DetectParams, PSFFitParams
    from starcenter.cubes.sim.simulate import make_config

    store = outdir / "demo.zarr"
    pipeline.run(store, "simulate", "simulate", {"simulate": {"config": make_config("demo", n_exposures=exposures)}},
                 opts)
    out = {}
    for field in ("auto", "on"):
        t0 = time.perf_counter()
        pipeline.run(store, "psf", "psf", {"psf": {"kind": "fitted", "fit": PSFFitParams(field=field),
                                                   "rebuild": True}}, opts)
        out[f"psf_{field}_s"] = time.perf_counter() - t0
    from starcenter.cubes import store as st

    if st.has_group(store, "detections"):
        st.remove_group(store, "detections")
    t0 = time.perf_counter()
    pipeline.run(store, "detect", "detect", {"detect": {"params": DetectParams("library")}}, opts)
    out["detect_s"] = time.perf_counter() - t0
    print(f"\n== SIMULATION demo set ({exposures} exposures x PC1, WF3): psf stage {out['psf_auto_s']:.1f} s "
          f"(field auto = off, the set's own) / {out['psf_on_s']:.1f} s (field on) vs detect {out['detect_s']:.1f} s")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--exposures", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--filters", default="F555W,F814W")
    ap.add_argument("--demo-timing-only", action="store_true", help="only time psf vs detect on the demo set")
    args = ap.parse_args(argv)
    from starcenter.cubes import pipeline
    from starcenter.cubes.cluster import ClusterOptions
    from starcenter.cubes.params import DetectParams, PSFFitParams

    args.outdir.mkdir(parents=True, exist_ok=True)
    opts = ClusterOptions(scheduler="local", workers=args.workers, quiet=True)
    report = {"label": "SIMULATION: focus sweep -10..+15 um, breathing 1 um, field-varying PSF",
              "demo_timing": time_demo_set(args.outdir, opts)}
    if args.demo_timing_only:
        return 0
    for k, filt in enumerate(args.filters.split(",")):
        store = simulate_set(args.outdir, filt, args.exposures, 20 + k, opts)
        t0 = time.perf_counter()
        # rebuild: the time of a fit from scratch (the physical-model ePSFs come from the disk cache)
        pipeline.run(store, "psf", "psf", {"psf": {"kind": "fitted", "fit": PSFFitParams(), "rebuild": True}}, opts)
        t_psf = time.perf_counter() - t0
        r = {"recovery": recovery(store), "error_vs_stars": error_vs_stars(store), "centring": {}}
        for method, params in (("library", DetectParams("library")), ("fitted", DetectParams("fitted")),
                               ("fitted+nb2", DetectParams("fitted", neighbour_passes=2)),
                               ("true", DetectParams("true"))):
            t0 = time.perf_counter()
            pipeline.run(store, "detect", "detect", {"detect": {"params": params, "overwrite": True}}, opts)
            r[f"t_detect_{method}_s"] = time.perf_counter() - t0
            r["centring"][method] = centring(store, method)
        r["t_psf_s"] = t_psf
        report[filt] = r
        (args.outdir / "psf_fit.json").write_text(json.dumps(report, indent=1))
        print_report(filt, r)
    return 0


def print_report(filt: str, r: dict) -> None:
    print(f"\n== SIMULATION {filt}: fitted focus vs truth ==")
    for chip, v in r["recovery"].items():
        print(f"{chip}: rms {v['rms_um']:.3f} um, mean {v['mean_um']:+.3f}, max |err| {v['max_abs_um']:.3f}, "
              f"rms pull {v['rms_pull']:.2f}, {v['fitted']} fitted, {v['flagged']} flagged, "
              f"median {v['median_stars']:.0f} stars")
    print("error (um rms) against stars used:")
    for chip, v in r["error_vs_stars"].items():
        print(f"  {chip}: " + ", ".join(f"{n}: {d['rms_um']:.3f}" for n, d in v.items()))
    print(f"time: psf stage {r['t_psf_s']:.1f} s, detect (library) {r['t_detect_library_s']:.1f} s")
    for where in ("central", "chip"):
        print(f"-- centring error, {where} ({'central third' if where == 'central' else 'whole chip'}), "
              "robust sigma [rms x/y] mpix (CR bound on the local background); 'true' is the chip-centre "
              "true ePSF --")
        for chip in r["recovery"]:
            for method, v in r["centring"].items():
                m = v[chip]
                cells = [f"{m[f'{where} {lo:.0e}-{hi:.0e}']['robust_mpix']:.1f} "
                         f"[{m[f'{where} {lo:.0e}-{hi:.0e}']['rms_x_mpix']:.1f}/"
                         f"{m[f'{where} {lo:.0e}-{hi:.0e}']['rms_y_mpix']:.1f}] "
                         f"({m[f'{where} {lo:.0e}-{hi:.0e}']['cr_mpix']:.1f})" for lo, hi in FLUX_BINS]
                b = m[f"{where} bias"]
                print(f"{chip} {method:10s} " + " | ".join(cells) + f" | bias p2p x {b['x']['p2p_mpix']:.1f} "
                      f"y {b['y']['p2p_mpix']:.1f} | robust/CR {m[f'{where} cr_ratio 1e4-1e5']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
