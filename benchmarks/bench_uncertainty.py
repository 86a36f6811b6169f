"""Benchmark (SIMULATION): are the per-star uncertainties calibrated, and do weights help?

Two simulated sets of PC1 + WF3 exposures whose true focus is drawn from -10 .. +15 um per
exposure (1 um breathing): a training set and a test set (another seed: PSF epochs, stars and
noise the networks never saw). On both: ``psf --fit focus``, ``detect`` (library ePSF),
``catalog``. Then

1. networks with uncertainty and flux outputs (VGG6 V2, Gaussian likelihood, inputs raster +
   instrumental magnitude + the exposure's fitted focus, exact targets) trained on the training
   set, sigma calibrated on the unseen stars of its held-out exposures (model.uncertainty.calibrate:
   quantile regression on magnitude and focus) and, with ``--calibration-exposures N``, again on
   every star of a third simulated set (``starcenter calibrate``), predicting the test set; their
   flux against the true flux and the Cramér–Rao flux bound;
2. coverage of +-1 and +-2 sigma against the exact truth per chip, axis and flux bin, the Spearman
   correlation of sigma with |error|, mean sigma against the measured rms, for: the networks, the
   classical fit's Fisher sigma (library ePSF and the fitted ePSF of ``detect --psf fitted``), the
   Fisher sigma through the error model fitted to the repeats (no truth needed) and the Fisher
   sigma calibrated on the calibration set, else the training set
   (evaluation.uncertainty.classical_calibration); a
   reliability diagram (observed vs nominal coverage) per method and chip;
3. ``catalog --weights inverse-variance`` against unweighted on the same detections: the standard
   error of the transformations, their true error (the fitted cubic applied to the exact
   positions against the reference's exact positions, central third) and catalog - exact truth.

    python benchmarks/bench_uncertainty.py OUTDIR [--train-exposures 64] [--test-exposures 32]
                                          [--epochs 100] [--workers 2] [--skip-weights]
                                          [--second-iteration] [--catalog-min-flux DN]
                                          [--calibration-exposures N] [--central F]

Prints the tables, writes OUTDIR/uncertainty.json and OUTDIR/reliability.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

FOCUS = (-10.0, 15.0)
FEATURES = ["mag", "focus"]
#: The catalog's faintest stars (DN; 0: the transformations' 500 DN), ``--catalog-min-flux``, and
#: the fraction of each chip whose stars enter the catalog and rasters, ``--central``.
CATALOG = {"catalog_min_flux": 0.0, "central": 1 / 3}


def make_set(path: Path, n: int, seed: int, opts) -> Path:
    """Simulate, fit the PSF epoch, detect (library) and build the catalog of one set."""
    from starcenter.cubes import pipeline
    from starcenter.cubes.params import DetectParams, PSFFitParams, TransformParams
    from starcenter.cubes.sim.simulate import make_config

    done = path.with_suffix(".complete")
    if not done.exists():
        cfg = make_config("demo", n_exposures=n, focus_sweep_um=FOCUS, focus_sweep_range=True,
                          breathing_um=1.0, seed=seed)
        pipeline.run(path, "simulate", "simulate", {"simulate": {"config": cfg}}, opts)
        pipeline.run(path, "psf", "psf", {"psf": {"kind": "fitted", "fit": PSFFitParams()}}, opts)
        pipeline.run(path, "detect", "detect", {"detect": {"params": DetectParams("library")}}, opts)
        pipeline.run_catalog(path, transform_params=TransformParams(**CATALOG),
                             cluster_options=opts)
        done.touch()
    return path


def variant(src: Path, dst: Path, opts, psf: str = "library", weights: str = "none") -> Path:
    """A copy of ``src`` re-detected with ``psf`` and/or catalogued with ``weights``; psf
    "fitted-nb2": each exposure's fitted ePSF with 2 neighbour passes, then the catalog with its
    stacked-residual crowding cut (the second iteration for a set of many PSF epochs: one catalog
    ePSF cannot fit a focus sweep, every star's stacked residual then fails the cut)."""
    from starcenter.cubes import pipeline
    from starcenter.cubes.params import DetectParams, TransformParams

    done = dst.with_suffix(".complete")
    if not done.exists():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        if psf == "fitted-nb2":
            params = DetectParams("fitted", neighbour_passes=2)
            pipeline.run(dst, "detect", "detect", {"detect": {"params": params, "overwrite": True}}, opts)
        elif psf != "library":
            pipeline.run(dst, "detect", "detect", {"detect": {"params": DetectParams(psf), "overwrite": True}}, opts)
        pipeline.run_catalog(dst, transform_params=TransformParams(weights=weights, **CATALOG),
                             cluster_options=opts)
        done.touch()
    return dst


def transform_errors(store) -> dict:
    """Per chip: the paper's standard error (mpix, mean over exposures), the true error of the
    transformations (rms over > 1e3 e- stars of the central third, each exposure's mean removed,
    mpix) and catalog - exact (mpix)."""
    import xarray as xr

    from starcenter.cubes.classical.transforms import apply
    from starcenter.evaluation.metrics import catalog_vs_exact

    tr, t = xr.open_zarr(store, group="transforms"), xr.open_zarr(store, group="truth")
    ref = json.loads(tr.attrs["params"])["reference"]
    cat = catalog_vs_exact(store)
    out = {}
    for c, chip in enumerate(str(v) for v in tr.chip.values):
        tx, ty = t["x"].isel(chip=c).values, t["y"].isel(chip=c).values
        bright = np.isfinite(t["flux"].isel(chip=c).values) & (t["flux"].isel(chip=c).values > 1e3)
        errs, se = [], []
        for e in range(tr.sizes["exposure"]):
            if e == ref or tr["status"].values[e, c] != 0:
                continue
            sel = bright & (np.abs(tx[e] - 399.5) < 133) & (np.abs(ty[e] - 399.5) < 133)
            X, Y = apply(tr["coef_x"].values[e, c], tr["coef_y"].values[e, c], tx[e, sel], ty[e, sel])
            # less the mean: a centring convention's offset between two PSF epochs is no error
            errs.append(np.r_[X - tx[ref, sel] - np.mean(X - tx[ref, sel]), Y - ty[ref, sel] - np.mean(Y - ty[ref, sel])])
            se.append([tr["std_err_x"].values[e, c], tr["std_err_y"].values[e, c]])
        e = np.concatenate(errs) * 1e3
        out[chip] = {"std_err_mpix": np.round(np.mean(se, axis=0) * 1e3, 2).tolist(),
                     "true_error_rms_mpix": round(float(np.sqrt(np.mean(e**2))), 2),
                     "catalog_minus_exact_rms_mpix": cat[chip]["rms_mpix"],
                     "catalog_minus_exact_median_abs_mpix": cat[chip]["median_abs_mpix"]}
    return out


def train_networks(train: Path, outdir: Path, epochs: int, chips=("PC1", "WF3")) -> dict:
    from starcenter.model.parallel import train_many

    jobs = [dict(store=str(train), chip=chip, arch="v2", recipe="fast", epochs=epochs,
                 out=str(outdir / f"sigma_{chip}.keras"), seed=0, target="exact", verbose=0,
                 uncertainty=True, features=FEATURES, flux=True) for chip in chips
            if not (outdir / f"sigma_{chip}.keras.json").exists()]
    t0 = time.perf_counter()
    train_many(jobs, workers=2)
    metas = {chip: json.loads((outdir / f"sigma_{chip}.keras.json").read_text()) for chip in chips}
    return {"train_seconds_wall": round(time.perf_counter() - t0, 1),
            **{chip: {"calibration": m["calibration"], "epochs": m["epochs"], "n_train": m["n_train"],
                      "val_centre_mae_mpix": round(min(m["history"]["val_centre_mae"]) * 1e3, 2)}
               for chip, m in metas.items()}}


def predict_networks(test: Path, calib: Path | None, outdir: Path, opts) -> dict:
    """Centre the test set with each network as trained (sigma calibrated on its held-out
    exposures) -> centers/sigma-v2; with a calibration set, calibrate again on all its stars
    (`starcenter calibrate`) -> centers/sigma-v2-cal. Returns the coverage report's entries."""
    from starcenter.cubes import pipeline
    from starcenter.model.uncertainty import recalibrate

    out = {"network V2, sigma calibrated on its held-out exposures": (test, "sigma-v2")}
    for chip in ("PC1", "WF3"):
        model = outdir / f"sigma_{chip}.keras"
        pipeline.run_stage("predict", test, opts, False, model_path=str(model), name="sigma-v2", chip=chip)
        if calib:
            cal_model = outdir / f"sigma_{chip}-cal.keras"
            shutil.copyfile(model, cal_model)
            shutil.copyfile(f"{model}.json", f"{cal_model}.json")
            print(chip, recalibrate(cal_model, calib, chip, degree=2)["on"], flush=True)
            pipeline.run_stage("predict", test, opts, False, model_path=str(cal_model), name="sigma-v2-cal", chip=chip)
    if calib:
        out["network V2, sigma calibrated on the calibration set"] = (test, "sigma-v2-cal")
    return out


def flux_report(store, method: str) -> dict:
    """Per chip and flux bin (1e4-3e4, 3e4-1e5 e-): the network's flux and the classical fit's
    (library ePSF) against the true flux: median ratio - 1 (bias, %), robust scatter (e-) and its
    ratio to the Cramér–Rao flux bound (rms over the stars; each exposure's true ePSF at the chip
    centre, the set's sky and read noise, each star's true phase)."""
    from starcenter.cubes import schema
    from starcenter.cubes import store as st
    from starcenter.cubes.classical.psffit import flux_dn
    from starcenter.cubes.classical.stats import robust_sigma
    from starcenter.cubes.lookup import chip_epsfs
    from starcenter.cubes.params import DetectParams
    from starcenter.evaluation.cramer_rao import flux_bound

    ras, truth = st.open_group(store, schema.RASTERS), st.open_group(store, schema.TRUTH)
    ex, cen = st.open_group(store, schema.EXPOSURES), st.open_group(store, schema.centers_group(method))
    _, true_epsf = chip_epsfs(store, DetectParams("true"))
    sim = json.loads(st.read_attrs(store)["starcenter_simulation"])
    out = {}
    for k, chip in enumerate(str(c) for c in ras[schema.CHIP].values):
        idx = ras["sim_index"].values[k]
        ftrue = np.where(idx >= 0, truth["flux"].values[k][np.maximum(idx, 0)], np.nan)
        exact = (ras["corner"] + ras["target_exact"]).values[:, k]
        gain, rn = float(ex["gain"].values[k]), float(ex["read_noise"].values[k])
        sky_e = sim.get("sky", 0.0) * float(ex["exptime"].values[0]) * float(ex["pixel_scale"].values[k]) ** 2
        f_net, f_cl = cen["flux"].values[:, k], flux_dn(ras["mag"].values[:, k]) * gain
        bound = np.full(f_net.shape, np.nan)
        for e in range(f_net.shape[0]):
            ok = np.isfinite(exact[e, :, 0]) & np.isfinite(ftrue)
            if ok.any():
                ph = exact[e, ok] - np.round(exact[e, ok])
                bound[e, ok] = flux_bound(true_epsf[chip](e), ftrue[ok], sky_e, rn, ph[:, 0], ph[:, 1])
        F = np.broadcast_to(ftrue, f_net.shape)
        rows = {}
        for lo, hi in ((1e4, 3e4), (3e4, 1e5)):
            sel = (F >= lo) & (F < hi) & np.isfinite(f_net) & np.isfinite(bound)
            b = float(np.sqrt(np.mean(bound[sel] ** 2)))
            row = {"n": int(sel.sum()), "bound_e": round(b, 1)}
            for name, f in (("network", f_net), ("classical", f_cl)):
                d = f[sel] - F[sel]
                row[name] = {"bias_pct": round(float(np.median(f[sel] / F[sel] - 1)) * 100, 2),
                             "robust_scatter_e": round(float(robust_sigma(d)), 1),
                             "scatter_over_bound": round(float(robust_sigma(d)) / b, 3)}
            rows[f"{lo:.0e}-{hi:.0e}"] = row
        out[chip] = rows
    return out


def coverage_report(stores: dict, outdir: Path) -> dict:
    """stores: {method label: (store, method name[, calibration])}; tables, reliability and the
    figure."""
    from starcenter.evaluation import uncertainty as U

    out = {}
    for label, (store, method, *cal) in stores.items():
        data = U.errors_and_sigmas(store, method, calibration=cal[0] if cal else None)
        tab = U.table(data)
        out[label] = {"table": tab, "reliability": U.reliability(data), "within_68+-3_95+-2": U.within(tab)}
    plot_reliability(out, outdir / "reliability.png")
    return out


def plot_reliability(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from starcenter.evaluation.uncertainty import LEVELS

    chips = sorted({c for r in rep.values() for c in r["reliability"]})
    fig, axes = plt.subplots(1, len(chips), figsize=(5 * len(chips), 4.6), squeeze=False)
    for ax, chip in zip(axes[0], chips):
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
        for label, r in rep.items():
            if chip in r["reliability"]:
                ax.plot(LEVELS, r["reliability"][chip], "o-", ms=3, label=label)
        ax.set_xlabel("nominal coverage (Gaussian +-z sigma)")
        ax.set_ylabel("observed coverage")
        ax.set_title(f"SIMULATION, held-out PSF epochs: {chip}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_weights(rep: dict) -> None:
    print("\n== SIMULATION: catalog --weights inverse-variance against unweighted ==")
    print("| set | chip | std error x/y unweighted -> weighted | true error | catalog - exact rms x/y | median abs |")
    print("|---|---|---|---|---|---|")
    for name, r in rep.items():
        for chip in r["unweighted"]:
            u, w = r["unweighted"][chip], r["weighted"][chip]
            print(f"| {name} | {chip} | {u['std_err_mpix']} -> {w['std_err_mpix']} | {u['true_error_rms_mpix']} -> "
                  f"{w['true_error_rms_mpix']} | {u['catalog_minus_exact_rms_mpix']} -> {w['catalog_minus_exact_rms_mpix']} | "
                  f"{u['catalog_minus_exact_median_abs_mpix']} -> {w['catalog_minus_exact_median_abs_mpix']} |")


def print_tables(rep: dict) -> None:
    for label, r in rep.items():
        print(f"\n== SIMULATION held-out epochs: {label} (coverage within 68+-3 / 95+-2 everywhere: "
              f"{r['within_68+-3_95+-2']}) ==")
        print("| chip | axis | flux e- | n | +-1 sigma % | +-2 sigma % | Spearman | mean sigma | rms | ratio | rms sigma / rms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for chip, axes in r["table"].items():
            for ax, rows in axes.items():
                for k, v in rows.items():
                    if "cov1_pct" in v:
                        print(f"| {chip} | {ax} | {k} | {v['n']} | {v['cov1_pct']} | {v['cov2_pct']} | "
                              f"{v['spearman']} | {v['mean_sigma_mpix']} | {v['rms_mpix']} | {v['sigma_over_rms']} | "
                              f"{v['rms_sigma_over_rms']} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--train-exposures", type=int, default=64)
    ap.add_argument("--test-exposures", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=100,
                    help="training epochs of each network (cosine schedule over them). Measured "
                         "(SIMULATION, WF3 V2, 30,377 rasters): 40 left its rms error 4-11 %% higher "
                         "and its sigma's Spearman with |error| at 0.51 / 0.48 (x / y), 100 gave 0.56 / 0.53")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--catalog-min-flux", type=float, default=0.0,
                    help="faintest catalog (raster) stars, DN (default: the transformations' 500 DN)")
    ap.add_argument("--central", type=float, default=1 / 3,
                    help="fraction of each chip whose stars are catalogued and rastered (1: the whole "
                         "chip, more stars per flux bin; the networks then also read chip_x, chip_y)")
    ap.add_argument("--calibration-exposures", type=int, default=0,
                    help="also simulate a calibration set of this many exposures (a third seed) and "
                         "calibrate the networks' and the classical sigma on all its stars")
    ap.add_argument("--skip-weights", action="store_true",
                    help="skip part 3 (weighted against unweighted transformations and catalog)")
    ap.add_argument("--second-iteration", action="store_true",
                    help="train and judge the networks on the second iteration's rasters (fitted "
                         "ePSF, 2 neighbour passes, crowding cut) instead of the first catalog's")
    args = ap.parse_args(argv)
    from starcenter.cubes import store as st
    from starcenter.cubes.cluster import ClusterOptions

    args.outdir.mkdir(parents=True, exist_ok=True)
    CATALOG.update(catalog_min_flux=args.catalog_min_flux, central=args.central)
    FEATURES[:] = ["mag", "focus"] + (["chip_x", "chip_y"] if args.central > 1 / 3 + 1e-9 else [])
    opts = ClusterOptions(scheduler="local", workers=args.workers, quiet=True)
    train = make_set(args.outdir / "train.zarr", args.train_exposures, 31, opts)
    test = make_set(args.outdir / "test.zarr", args.test_exposures, 32, opts)
    report = {"label": f"SIMULATION: focus {FOCUS[0]}..{FOCUS[1]} um per exposure, breathing 1 um; "
                       "test set = other seed (held-out PSF epochs and stars)"}
    report["weights"] = {}
    fitted = variant(test, args.outdir / "test-fitted.zarr", opts, psf="fitted")
    for name, store in (() if args.skip_weights else (("train, library ePSF", train), ("test, library ePSF", test),
                                                      ("test, fitted ePSF", fitted))):
        w = variant(store, store.with_name(store.stem + "-weighted.zarr"), opts, weights="inverse-variance")
        report["weights"][name] = {"unweighted": transform_errors(store), "weighted": transform_errors(w)}
    print_weights(report["weights"])
    calib = make_set(args.outdir / "calib.zarr", args.calibration_exposures, 33, opts) if args.calibration_exposures else None
    if args.second_iteration:
        train = variant(train, args.outdir / "train-it2.zarr", opts, psf="fitted-nb2")
        test = variant(test, args.outdir / "test-it2.zarr", opts, psf="fitted-nb2")
        calib = calib and variant(calib, args.outdir / "calib-it2.zarr", opts, psf="fitted-nb2")
        report["label"] += "; networks on the classical second iteration's rasters"
    sim = json.loads(st.open_root(test).attrs["starcenter_simulation"])
    report["label"] += (f"; catalog and rasters over the central {args.central:.2f} of each chip, PSF "
                        + ("varying" if sim["field_varying"] else "constant") + " over the chip")
    report["networks"] = train_networks(train, args.outdir, args.epochs)
    methods = predict_networks(test, calib, args.outdir, opts)
    base = "classical fitted ePSF + 2 neighbour passes" if args.second_iteration else "classical library"
    from starcenter.evaluation.uncertainty import classical_calibration

    cal_set = "the calibration set" if calib else "the training set"
    report["coverage"] = coverage_report({
        **methods,
        f"{base}, Fisher sigma": (test, "classical-fisher"),
        f"{base}, Fisher sigma calibrated on {cal_set}": (test, "classical-fisher",
                                                          classical_calibration(calib or train)),
        f"{base}, Fisher + repeat error model": (test, "classical-error-model"),
        "classical fitted ePSF, Fisher sigma": (fitted, "classical-fisher"),
        "classical fitted ePSF, Fisher + repeat error model": (fitted, "classical-error-model")}, args.outdir)
    report["flux"] = flux_report(test, "sigma-v2")
    (args.outdir / "uncertainty.json").write_text(json.dumps(report, indent=1))
    print_tables(report["coverage"])
    print("\n== SIMULATION held-out epochs: flux against the true flux and the Cramér–Rao flux bound ==")
    print(json.dumps(report["flux"], indent=1))
    print(json.dumps(report["networks"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
