"""``starcenter demo``: the whole chain on the embedded default (simulated) data set.

1. SIMULATION, the demo set: a Gilliland-like dithered set on PC1 and WF3 whose true focus is
   5 um off the library ePSF; classical centring with the library ePSF; transforms, average
   catalog and rasters; VGG6 V1 and V2 trained (fast recipe, exact simulation truth) per chip;
   predictions; the report (standard error vs offset phase, errors against truth).
2. SIMULATION, another epoch: a second set at another focus (the paper's "other clusters"),
   centred with the models of step 1.
3. REAL DATA: the ω Cen exposure from the stsci.tools wheel, centred classically and with the
   simulation-trained models; its fractional-pixel histograms are the only truth-free check.
On every set the shipped generalist networks (``starcenter generalist``, trained on simulations
over many PSF epochs) centre every chip they exist for, beside the per-epoch VGG6: they correct the
classical fit with each exposure's fitted ePSF, so they run on a copy of the set detected with it
(``NAME-fitted.zarr``), whose classical fit is reported too (``classical-fitted``).
Re-running reuses what is done (every stage resumes).
"""

from __future__ import annotations

import json
from pathlib import Path

from starcenter.cubes import pipeline, schema
from starcenter.cubes import store as st
from starcenter.cubes.params import DetectParams, PSFFitParams
from starcenter.cubes.sim.simulate import make_config
from starcenter.evaluation.plots import plot_exposure, plot_loss
from starcenter.evaluation.report import evaluate
from starcenter.evaluation.summary import isolated_stars

ARCHS = ("v1", "v2")


def _say(progress, text):
    if progress:
        print(f"== {text}", flush=True)


def _classical(store, progress, start="detect", **source):
    """The source stage (if given), then detect (library ePSF) .. rasters: the classical branch."""
    return pipeline.run(store, start, "rasters", {start: source, "detect": {"params": DetectParams("library")}},
                        progress=progress)


def run_demo(outdir="demo-output", progress: bool = True, exposures: int = 48,
             epochs: int | None = None, real: bool = True) -> str:
    """Run the demo into ``outdir``; returns the text summary (also written to summary.txt)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "demo.zarr"
    cfg = make_config("demo", n_exposures=exposures)
    _say(progress, f"1/3 SIMULATION: {cfg.n_exposures} exposures x {cfg.chips}, true focus "
                   f"{cfg.focus_um:+.1f} um vs the library ePSF")
    sim = _classical(store, progress, "simulate", config=cfg)["simulate"]
    plot_exposure(store, 0, out / "exposure0.png")
    models = {(chip, arch): out / "models" / f"{chip}_{arch}.keras" for chip in cfg.chips for arch in ARCHS}
    _train_models(store, {k: p for k, p in models.items() if not p.exists()}, epochs, progress)
    for (chip, arch), path in models.items():
        _predict(store, path, f"vgg6-{arch}", chip)
    main = evaluate(store, out / "report", f"SIMULATION demo set, true focus {cfg.focus_um:+.1f} um")
    _with_generalist(main, _generalist(store, progress), out / "report-fitted",
                     f"SIMULATION demo set, true focus {cfg.focus_um:+.1f} um, fitted ePSF")

    other_store = out / "other-epoch.zarr"
    other = make_config("demo", n_exposures=max(8, exposures // 2), focus_um=2.0, seed=cfg.seed + 1)
    _say(progress, f"2/3 SIMULATION, another epoch: true focus {other.focus_um:+.1f} um, models of step 1")
    _classical(other_store, progress, "simulate", config=other)
    for (chip, arch), path in models.items():
        _predict(other_store, path, f"vgg6-{arch}", chip)
    second = evaluate(other_store, out / "report-other-epoch",
                      f"SIMULATION other epoch, true focus {other.focus_um:+.1f} um, models from the demo set")
    _with_generalist(second, _generalist(other_store, progress), out / "report-other-epoch-fitted",
                     f"SIMULATION other epoch, true focus {other.focus_um:+.1f} um, fitted ePSF")

    real_metrics = None
    if real:
        real_metrics = _real(out, models, progress)

    text = _summary(out, store, cfg, sim, main, second, real_metrics)
    (out / "summary.txt").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps({"demo": main, "other_epoch": second, "real": real_metrics,
                                                  "config": json.loads(cfg.to_json())}, indent=1))
    return text


def _summary(out: Path, store, cfg, sim, main: dict, second: dict, real_metrics) -> str:
    """The demo's text summary, every line labelled with the data it was made from."""
    lines = ["starcenter demo — SIMULATED data except the last section (REAL DATA, one exposure)",
             f"store {store}: {cfg.n_exposures} exposures x {', '.join(cfg.chips)}, {cfg.filter}, "
             f"true focus {cfg.focus_um:+.1f} um vs library; stars per chip {sim.stars_per_chip}",
             "", f"{'set':12} {'method':10} {'chip':5} {'single-meas. x/y [mpix]':>24} {'flatness x/y':>14}"]
    for name, met in (("demo", main), ("other epoch", second)):
        for m, res in met["methods"].items():
            for chip, ax in res.get("transforms", {}).items():
                lines.append(f"{name:12} {m:10} {chip:5} {ax['x']['single_measurement_mpix']:>11.1f} / "
                             f"{ax['y']['single_measurement_mpix']:<10.1f} {ax['x']['flatness']:>6.2f} / "
                             f"{ax['y']['flatness']:.2f}")
        lines += [f"{name:12} {note}" for note in met.get("notes", [])]
    if real_metrics:
        lines += ["", "REAL DATA (u40x010hm, ω Cen F555W, 1997): models trained on SIMULATIONS applied to one "
                      "real exposure; fractional-pixel uniformity (chi-square p, x / y) is the only check",
                  "(generalist-phase: the generalist self-calibrated on the exposure's own stars, "
                  "`starcenter phase`; its p cross-validated, half the stars corrected by the other half):"]
        for m, res in real_metrics["methods"].items():
            for chip, h in res.get("fractional_pixel", {}).items():
                lines.append(f"  {m:10} {chip:5} n={h['n']:5d}  p = {h['p_uniform_x']:.2g} / {h['p_uniform_y']:.2g}")
        lines += [f"  {note}" for note in real_metrics.get("notes", [])]
    iso = isolated_stars(store)
    lines += ["", "central third of exposure 0 (truth): " + ", ".join(
        f"{c}: {v['central_third']} stars > 1000 e-, {v['isolated']} isolated" for c, v in iso.items()),
        "reports: " + ", ".join(str(p) for p in sorted(out.glob("report*/report.md")))]
    return "\n".join(lines)


def _real(out: Path, models: dict, progress: bool):
    """Ingest, centre and evaluate the real ω Cen exposure (skipped without stsci.tools)."""
    from starcenter.cubes.archive.wfpc2 import real_omega_cen_path
    from starcenter.cubes.errors import StarcenterError

    # ingested without its c1f data quality: with it (benchmarks/bench_generalist.py) the WF chips'
    # PSF-epoch fit converges, but their field-dependent ePSFs at the fitted focus (cold cache) push
    # the demo past 10 minutes on 2 cores; without it the WF fits are flagged, and the WF chips get
    # no generalist centres (the summary says why)
    try:
        path = real_omega_cen_path()
    except StarcenterError as err:
        _say(progress, f"3/3 REAL DATA skipped: {err}")
        return None
    _say(progress, "3/3 REAL DATA: ω Cen u40x010hm (F555W, 100 s), simulation-trained models")
    store = out / "real.zarr"
    if st.has_group(store, schema.EXPOSURES):
        _classical(store, progress)
    else:
        _classical(store, progress, "ingest", inputs=[path])
    for (chip, arch), model in models.items():
        _predict(store, model, f"vgg6-{arch}", chip)
    metrics = evaluate(store, out / "report-real", "REAL DATA: ω Cen u40x010hm_c0f, one exposure")
    fitted = _generalist(store, progress)
    if fitted is not None and st.has_group(fitted, schema.centers_group("generalist")):  # + generalist-phase
        pipeline.run_stage("phase", fitted, progress=False, source="generalist")
    _with_generalist(metrics, fitted, out / "report-real-fitted",
                     "REAL DATA: ω Cen u40x010hm_c0f, one exposure, fitted ePSF")
    return metrics


def _with_generalist(metrics: dict, fitted, report, label: str) -> None:
    """Add the fitted-ePSF copy's methods to ``metrics`` (its report in ``report``): its classical
    fit on the networks' stars (the raster stars, ``classical-kept``) as ``classical-fitted``, and
    every network's centres (generalist, generalist-phase). A chip whose PSF-epoch fit failed on
    every exposure has the library fit there: no classical-fitted rows, and a note saying why."""
    from starcenter.evaluation.metrics import CLASSICAL_KEPT

    if fitted is None:
        return
    more = evaluate(fitted, report, label)["methods"]
    if CLASSICAL_KEPT in more:  # like for like with the networks (transformations of the same stars)
        more["classical"] = {**more.pop("classical"), **more.pop(CLASSICAL_KEPT)}
    failed = _fit_failed(fitted)
    for res in more.values():
        for per_chip in res.values():
            for chip in failed:
                if isinstance(per_chip, dict):
                    per_chip.pop(chip, None)
    metrics["methods"]["classical-fitted"] = more.pop("classical")
    metrics["methods"].update({m: v for m, v in more.items() if m.startswith("generalist")})
    metrics.setdefault("notes", []).extend(
        f"{chip}: PSF-epoch fit flagged on every exposure ({why}; the library ePSF was used instead): "
        "no classical-fitted or generalist centres" for chip, why in failed.items())


def _fit_failed(store) -> dict[str, str]:
    """Chips whose PSF-epoch fit (psf_fit) was flagged on every exposure -> the reasons."""
    from starcenter.cubes.classical.focus import status_reasons

    fit = st.open_group(store, schema.PSF_FIT)
    status = fit["status"].values
    return {str(chip): status_reasons(status[:, c])
            for c, chip in enumerate(fit[schema.CHIP].values) if (status[:, c] != 0).all()}


def _train_models(store, todo: dict, epochs, progress) -> None:
    """Train the networks not yet trained, two at a time on a 2-core machine (one TensorFlow
    thread each: starcenter.model.parallel), and plot their loss curves."""
    from starcenter.model.parallel import train_many

    if not todo:
        return
    names = ", ".join(f"{arch} on {chip}" for chip, arch in todo)
    _say(progress, f"training VGG6 {names} (fast recipe, exact simulation truth; side by side)")
    # train reads the rasters only (pipeline.STAGES: it writes no group), so no store lock is taken
    jobs = [dict(store=store, chip=chip, arch=arch, recipe="fast", epochs=epochs, out=path, target="exact",
                 verbose=0) for (chip, arch), path in todo.items()]
    train_many(jobs, progress=(lambda job: _say(progress, f"trained {job['arch']} on {job['chip']}")))
    for path in todo.values():
        plot_loss(path)


def _generalist(store, progress: bool):
    """The shipped generalist networks (trained on SIMULATIONS over many PSF epochs, whole chip;
    ``starcenter generalist``) on every chip of ``store`` they exist for, as ``generalist``. They
    correct the classical fit made with each exposure's fitted ePSF, so they centre a copy of
    ``store`` (``NAME-fitted.zarr``: its source groups, each exposure's PSF epoch fitted, detect
    --psf fitted, the catalog and rasters again); returns the copy (None: no shipped model for
    these chips). A chip whose PSF-epoch fit failed on every exposure gets no network centre."""
    import shutil

    from starcenter.model.predict import SHIPPED, store_filter

    filt = store_filter(store)
    chips = [str(c) for c in st.open_group(store, schema.RASTERS)[schema.CHIP].values]
    have = [c for c in chips if (SHIPPED / f"generalist-{c}-{filt}.keras").is_file()]
    if not have:
        _say(progress, f"no shipped generalist model for {chips} in {filt}: skipped")
        return None
    _say(progress, f"generalist networks (shipped, trained on simulations) on {', '.join(have)}: "
                   "each exposure's fitted ePSF, its detections and rasters, then the networks")
    copy = Path(store).with_name(Path(store).stem + "-fitted.zarr")
    if not st.has_group(copy, schema.RASTERS):  # first run, or an interrupted copy: made again
        shutil.rmtree(copy, ignore_errors=True)
        st.copy_groups(store, copy, (schema.EXPOSURES, schema.TRUTH, schema.PSF, schema.PSF_FIT))
        if not st.has_group(copy, schema.PSF_FIT):
            pipeline.run(copy, "psf", "psf", {"psf": {"kind": "fitted", "fit": PSFFitParams()}}, progress=progress)
        pipeline.run(copy, "detect", "rasters", {"detect": {"params": DetectParams("fitted")}}, progress=progress)
    failed = _fit_failed(copy)
    for chip in have:
        if chip in failed:
            _say(progress, f"generalist {chip} skipped: its PSF-epoch fit failed on every exposure ({failed[chip]})")
        else:
            _predict(copy, None, "generalist", chip)
    return copy


def _predict(store, model, name: str, chip: str):
    pipeline.run_stage("predict", store, progress=False, model_path=model, name=name, chip=chip)
