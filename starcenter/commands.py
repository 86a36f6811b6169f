"""What each ``starcenter`` subcommand does: one library call and the lines it prints
(:mod:`starcenter.cli` parses the arguments and dispatches here)."""

from __future__ import annotations

import sys

from starcenter.cubes import pipeline, schema
from starcenter.cubes import store as st
from starcenter.cubes.cluster import ClusterOptions, cluster
from starcenter.cubes.errors import StoreMismatchError


def cmd_simulate(args) -> int:
    from starcenter.cubes.sim.simulate import make_config

    if args.like is not None:
        return simulate_like(args)
    focus, sweep, is_range = args.focus_um or (None, (), False)
    cfg = make_config(args.preset, n_exposures=args.exposures, chips=args.chips,
                      filter=args.filter, focus_um=focus, seed=args.seed,
                      focus_sweep_um=sweep or None, focus_sweep_range=is_range or None,
                      bright_enhanced=args.bright_enhanced or None,
                      breathing_um=args.breathing_um,
                      field_varying=args.field_varying or None,
                      cosmic_rays=args.cosmic_rays or None, cti=args.cti or None)
    s = pipeline.run_stage("simulate", args.store, cluster_options(args), not args.quiet, config=cfg)
    print(f"{s.store}: {cfg.n_exposures} exposures x {len(cfg.chips)} chips "
          f"({s.written} chunks written, {s.skipped} already done); "
          f"stars per chip {s.stars_per_chip}")
    return 0


def like_lines(source, cfg, m: dict) -> list[str]:
    """What ``simulate --like`` measured on ``source`` (sim.like.like_config's config and record)."""
    lines = [f"like {source} {chip}: sky {sky:.2f} e-/s/arcsec^2 (its local sky less the probe's unresolved "
             f"starlight), {v['stars']} stars of 1e4-1e5 e-, focus {v['focus_um']:+.2f} um"
             for (chip, v), sky in zip(m["chips"].items(), m["sky_rate_per_chip"])]
    return lines + [f"like {source}: {cfg.filter} {cfg.exptime:g} s, density {cfg.density:.2f} "
                    f"stars/arcsec^2, sky {cfg.sky:.2f} e-/s/arcsec^2, cosmic rays "
                    f"{'on' if cfg.cosmic_rays else 'off'}"]


def simulate_like(args) -> int:
    from starcenter.cubes.errors import BadArgumentError
    from starcenter.cubes.sim.like import like_config

    given = [f"--{k.replace('_', '-')}" for k in ("chips", "filter", "focus_um", "breathing_um", "preset")
             if getattr(args, k) not in (None, "demo")]
    if given:
        raise BadArgumentError(f"--like takes the chips, filter, focus and sky from {args.like}; "
                               f"drop {', '.join(given)}")
    cfg, m = like_config(args.like, args.exposures, 1 if args.seed is None else args.seed)
    print("\n".join(like_lines(args.like, cfg, m)))
    s = pipeline.run_stage("simulate", args.store, cluster_options(args), not args.quiet, config=cfg)
    print(f"{s.store}: {cfg.n_exposures} exposures x {len(cfg.chips)} chips mirroring {args.like} "
          f"({s.written} chunks written, {s.skipped} already done)")
    return 0


def cmd_ingest(args) -> int:
    out = pipeline.run_stage("ingest", args.store, cluster_options(args), not args.quiet, inputs=args.inputs,
                             separate_filters=args.separate_filters)
    for line in out["errors"]:
        print(f"starcenter ingest: {line}", file=sys.stderr)
    print(f"{args.store}: {out['ingested']} exposures ingested, {out['skipped']} already there, "
          f"{len(out['errors']) - out['skipped']} bad inputs")
    return 2 if len(out["errors"]) > out["skipped"] else 0


def cmd_cte(args) -> int:
    from starcenter.cubes.stages.cte_correct import correct_store

    with cluster(cluster_options(args)):
        out = correct_store(args.store, args.out, args.iterations, args.trap_scale, not args.quiet)
    print(f"{args.out}: exposures of {args.store} corrected for CTE ({out['written']} chunks written, "
          f"{out['skipped']} already done); next: starcenter psf {args.out} --fit focus")
    return 0


def cmd_export(args) -> int:
    from starcenter.cubes.archive.ingest import export_fits

    files = export_fits(args.store, args.outdir)
    print(f"{len(files)} exposures written to {args.outdir} as *_c0m.fits / *_c1m.fits")
    return 0


def cmd_fetch(args) -> int:
    from starcenter.cubes.archive.mast import fetch_mast

    files = fetch_mast(args.proposal, args.filter, args.outdir)
    print(f"{len(files)} files in {args.outdir}; next: starcenter ingest STORE {args.outdir}")
    return 0


def cmd_detect(args) -> int:
    from starcenter.cubes.params import DetectParams

    params = DetectParams(args.psf, args.threshold, args.min_separation, args.neighbour_passes,
                          str(args.library.resolve()) if args.library else "")
    out = pipeline.run(args.store, "psf", "detect", {"detect": {
        "params": params, "overwrite": args.overwrite, "rebuild_psf": args.rebuild_psf}},
        cluster_options(args), not args.quiet)["detect"]
    print(f"{args.store}: detections ({args.psf} ePSF): {out['written']} chunks written, "
          f"{out['skipped']} already done; largest count {out['max_count']}")
    return 0


def cmd_psf(args) -> int:
    from starcenter.cubes.params import PSFFitParams

    fit = PSFFitParams(args.fit, args.min_stars, args.min_snr, max_stars=args.max_stars, field=args.field)
    pipeline.run(args.store, "psf", "psf", {"psf": {"kind": "fitted", "fit": fit, "rebuild": args.rebuild}},
                 cluster_options(args), not args.quiet)
    print(f"{args.store}: psf_fit written ({args.fit} per exposure and chip); next: "
          f"starcenter detect {args.store} --psf fitted")
    return 0


def cmd_catalog(args) -> int:
    if args.from_centers:
        cat = pipeline.run_stage("refine", args.store, None, not args.quiet, name=args.from_centers)
        print(f"{args.store}: catalog and raster targets rebuilt from centers/{args.from_centers} "
              f"({int((cat['count'] >= 3).sum())} stars); retrain on them for the next iteration")
        return 0
    from starcenter.cubes.params import RasterParams, TransformParams

    rp = RasterParams(size=args.raster_size, max_stack_residual=args.max_stack_residual,
                      neighbours=args.neighbours)
    tp = TransformParams(reference=args.reference, weights=args.weights, central=args.central,
                         catalog_min_flux=args.catalog_min_flux)
    ras = pipeline.run_catalog(args.store, reference=args.reference, raster_params=rp, transform_params=tp,
                               progress=not args.quiet, cluster_options=cluster_options(args))
    n = int(ras["mask"].sum())
    print(f"{args.store}: transforms, catalog and {n} rasters of "
          f"{args.raster_size}x{args.raster_size} px ({int(ras['selected'].sum())} stars)")
    return 0


def cmd_train(args) -> int:
    from starcenter.evaluation.plots import plot_loss
    from starcenter.model import set_tensorflow_threads
    from starcenter.model.train import train
    from starcenter.model.uncertainty import describe

    set_tensorflow_threads()  # $STARCENTER_TF_THREADS, if set

    meta = train(args.store, args.chip.upper(), args.arch, args.recipe, args.epochs, args.out,
                 args.seed, args.target, verbose=0 if args.quiet else 2, uncertainty=args.uncertainty,
                 features=args.features, flux=args.flux)
    png = plot_loss(args.out)
    h = meta["history"]
    mae = min(h.get("val_centre_mae", h["val_loss"])) * 1e3
    cal = meta.get("calibration")
    extra = f"; {describe(cal)}" if cal else ""
    print(f"{args.out}: {meta['architecture']} on {meta['chip']} ({meta['n_train']} training rasters), "
          f"{meta['epochs']} epochs, val MAE {mae:.1f} mpix; loss plot {png}{extra}")
    return 0


def cmd_predict(args) -> int:
    from starcenter.model.predict import shipped_model, store_filter

    name = args.name or ("vgg6" if args.model else "generalist")
    if args.model:
        jobs = [(args.model, args.chip)]
    else:  # the shipped generalists: every chip of the store (all checked before any is run)
        ras = st.open_group(args.store, schema.RASTERS) if st.has_group(args.store, schema.RASTERS) else None
        chips = [args.chip] if args.chip else ([str(c) for c in ras[schema.CHIP].values] if ras is not None else [])
        jobs = [(str(shipped_model(chip, store_filter(args.store))), chip) for chip in chips]
        if not jobs:
            raise StoreMismatchError(args.store, "has no rasters: run `starcenter catalog` first")
    for model, chip in jobs:
        c = pipeline.run_stage("predict", args.store, cluster_options(args), not args.quiet, model_path=model,
                               name=name, chip=chip, force=args.force)
    print(f"{args.store}: centers/{name} written ({int(c['xy'].notnull().all('axis').sum())} centres)")
    return 0


def cmd_phase(args) -> int:
    c = pipeline.run_stage("phase", args.store, cluster_options(args), not args.quiet, source=args.source,
                           name=args.name, harmonics=args.harmonics, p_value=args.p_value, pool=args.pool,
                           order=args.order)
    kept = (c["phase_cos"] != 0) | (c["phase_sin"] != 0)
    for chip in (str(v) for v in c["chip"].values):
        k = kept.sel(chip=chip).any(("field_term", "harmonic"))
        n = k.sum("exposure").values
        print(f"{chip}: corrected in {int(n[0])} / {int(n[1])} exposures (x / y)")
    print(f"{args.store}: centers/{c.attrs['method']} written from {args.source}")
    return 0


def cmd_calibrate(args) -> int:
    from starcenter.model.uncertainty import describe, recalibrate

    if args.correction_weight:
        from starcenter.model.correction import calibrate_weight

        cw = calibrate_weight(args.model, args.store, args.chip)
        print(f"{args.model}: correction weight {cw['weight']} over magnitudes {cw['mag_edges']}; robust error "
              f"[mpix] classical {cw['classical_mpix']}, network {cw['network_mpix']}, kept {cw['mixed_mpix']}")
    cal = recalibrate(args.model, args.store, args.chip, args.stars, args.degree)
    print(f"{args.model}: {describe(cal)}, {cal['on']}")
    return 0


def cmd_generalist(args) -> int:
    from starcenter.generalist import run_generalist

    paths = run_generalist(args.outdir, args.filters, args.chips, args.exposures, args.epochs, args.arch,
                           install=args.install, calibration_exposures=args.calibration_exposures,
                           members=args.members, cluster_options=cluster_options(args),
                           progress=not args.quiet, neighbours=args.neighbours, features=args.features,
                           neighbour_passes=args.neighbour_passes)
    print("\n".join(str(p) for p in paths))
    return 0


def cmd_ensemble(args) -> int:
    from starcenter.model.ensemble import combine

    out = combine(args.models, args.out)
    print(f"{out}: the mean of {len(args.models)} networks; calibrate its sigma (`starcenter calibrate`) "
          "before trusting it")
    return 0


def cmd_demo(args) -> int:
    from starcenter.demo import run_demo

    with cluster(cluster_options(args)):
        report = run_demo(args.outdir, progress=not args.quiet, exposures=args.exposures,
                          epochs=args.epochs, real=not args.no_real)
    print(report)
    return 0


def cmd_evaluate(args) -> int:
    from starcenter.evaluation.report import evaluate

    with cluster(cluster_options(args)):
        evaluate(args.store, args.report)
    print(f"report: {args.report}/report.md (metrics.json, figures beside it)")
    return 0


def cmd_sweep(args) -> int:
    from starcenter.sweep import raster_size_sweep

    with cluster(cluster_options(args)):
        res = raster_size_sweep(args.store, args.chip.upper(), args.sizes, args.arch, args.epochs,
                                args.out, progress=not args.quiet)
    best = min(res["sizes"], key=lambda r: sum(r["robust_mpix"]))
    print(f"{args.out}/sweep.json, error_vs_raster_size.png ({res['kind']}); best size "
          f"{best['size']} px: robust x/y {best['robust_mpix']} mpix")
    return 0


def cmd_verify(args) -> int:
    from starcenter.cubes import driver
    from starcenter.cubes.store import locked

    with locked(args.store, "verify"):
        bad = driver.verify(args.store, repair=args.repair)
    for group, index, err in bad:
        print(f"{args.store}: {group} chunk {index} unreadable: {err}")
    verb = "marked for redoing: rerun their stages" if args.repair else "run again with --repair"
    print(f"{args.store}: {len(bad)} unreadable chunk(s)" + (f"; {verb}" if bad else ", every finished chunk reads"))
    return 1 if bad and not args.repair else 0


def cluster_options(args) -> ClusterOptions:
    """Where the command's dask work runs (starcenter.cubes.cluster)."""
    return ClusterOptions(args.scheduler, args.workers, args.threads, args.memory_limit,
                          args.dashboard_address, args.quiet)
