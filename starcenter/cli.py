"""The ``starcenter`` command line: a thin layer that parses arguments and calls the packages.

No science lives here; every subcommand calls one library function and prints its result.
"""

from __future__ import annotations

import argparse
import sys

from starcenter import arguments as A
from starcenter import commands as C
from starcenter import generalist as G


def _add_cluster_args(p):
    p.add_argument("--scheduler", default="local", type=A.scheduler,
                   help="'local' (a LocalCluster, default), 'synchronous', 'threads', "
                        "'processes', or the address of a running dask scheduler")
    p.add_argument("--workers", type=A.integer(1, 1024), help="LocalCluster worker processes (default: one per core)")
    p.add_argument("--threads", type=A.integer(1, 1024), default=1, help="threads per worker (default 1)")
    p.add_argument("--memory-limit", default="auto", type=A.memory,
                   help="memory limit per worker, e.g. 3GiB (default: the machine's memory split "
                        "between the workers)")
    p.add_argument("--dashboard-address", default="127.0.0.1:8787", type=A.address,
                   help="where the dask dashboard listens (default 127.0.0.1:8787, this machine "
                        "only; ':8787' for every interface)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="simulate a dithered WFPC2 data set into a Zarr store")
    p.add_argument("store", type=A.store, help="output store (OUT.zarr); rerun with the same arguments resumes")
    p.add_argument("--preset", default="demo", choices=("demo", "gilliland"), help="demo (24 x PC1,WF3) or gilliland (636 x 4)")
    p.add_argument("--exposures", type=A.integer(2, 100_000), help="number of exposures (2..100000)")
    p.add_argument("--chips", type=A.chips, help="comma-separated chips, e.g. PC1,WF3")
    p.add_argument("--filter", type=A.filter_name, help="F555W or F814W")
    p.add_argument("--focus-um", type=A.focus,
                   help="true focus: SM despace vs the library, microns; LO:HI draws each exposure's "
                        "focus uniformly in the range, A,B,C from the list (a focus sweep)")
    p.add_argument("--breathing-um", type=A.number(0, 100), help="per-exposure focus breathing amplitude, microns")
    p.add_argument("--field-varying", action="store_true", help="aberrations vary across the chip")
    p.add_argument("--like", metavar="STORE", type=A.existing_store,
                   help="mirror STORE (real or simulated): its chips, filter, exposure time, sky, "
                        "star density and each chip's fitted focus (run `starcenter psf STORE` first)")
    p.add_argument("--seed", type=A.integer(0, 2**32 - 1), help="random seed, 0..4294967295 (default 1)")
    p.add_argument("--bright-enhanced", action="store_true", help="over-represent bright stars")
    p.add_argument("--cosmic-rays", action="store_true", help="add cosmic rays (off by default)")
    p.add_argument("--cti", action="store_true",
                   help="WFPC2 parallel CTE at each exposure's date (trap model, starcenter.cubes.cte; off by default)")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_simulate)


def _add_ingest(sub):
    p = sub.add_parser("ingest", help="ingest calibrated WFPC2 files (c0m/c1m, c0f/c1f, GEIS) into a store")
    p.add_argument("store", type=A.store)
    p.add_argument("inputs", nargs="+", type=A.input_path, help="c0 files or directories")
    p.add_argument("--separate-filters", action="store_true",
                   help="route each filter to STORE_<FILTER>.zarr instead of refusing a mix")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_ingest)


def _add_cte(sub):
    p = sub.add_parser("cte", help="correct a store's exposures for WFPC2's CTE into a new store")
    p.add_argument("store", type=A.existing_store, help="store with complete exposures (simulated or ingested)")
    p.add_argument("out", type=A.store, help="the corrected store (created, or resumed)")
    p.add_argument("--iterations", type=A.integer(1, 20), default=3, help="inversion iterations (default 3)")
    p.add_argument("--trap-scale", type=A.number(0, 100, lo_open=True), default=1.0,
                   help="factor on the model's trap density (default 1)")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_cte)


def _add_export_fits(sub):
    p = sub.add_parser("export-fits", help="write a store's exposures as archive-layout *_c0m.fits")
    p.add_argument("store", type=A.existing_store)
    p.add_argument("outdir", type=A.output_dir)
    p.set_defaults(func=C.cmd_export)


def _add_fetch_mast(sub):
    p = sub.add_parser("fetch-mast", help="download a proposal's calibrated WFPC2 exposures from MAST")
    p.add_argument("outdir", type=A.output_dir)
    p.add_argument("--proposal", required=True, type=A.integer(1), help="HST proposal id, e.g. 8267 (Gilliland, NGC 104)")
    p.add_argument("--filter", required=True, type=A.wfpc2_filter, help="e.g. F555W")
    p.set_defaults(func=C.cmd_fetch)


def _add_detect(sub):
    p = sub.add_parser("detect", help="detect and ePSF-fit stars in every exposure (classical centres)")
    p.add_argument("store", type=A.existing_store, help="store with an exposures group")
    p.add_argument("--psf", default="library", choices=("library", "true", "empirical", "catalog", "fitted"),
                   help="ePSF to fit with: library (nominal, as hst1pass), fitted (the physical "
                        "model at each exposure's and chip's own fitted focus: `starcenter psf`, "
                        "run here when missing; works on one exposure), true (simulations), "
                        "empirical (built from a few exposures with photutils' EPSFBuilder), "
                        "catalog (Anderson & King ePSF learnt at the average catalog's positions "
                        "from every exposure: run `starcenter catalog` first; the classical "
                        "second iteration)")
    p.add_argument("--library", type=A.existing_file, metavar="STDPSF",
                   help="an Anderson STDPSF WFPC2 ePSF file (e.g. STDPSF_WFPC2_F555W.fits) as the library "
                        "ePSF, each chip's at its centre (default: the physical model)")
    p.add_argument("--threshold", type=A.number(0, 1e6, lo_open=True), default=5.0, help="detection threshold, sigma")
    p.add_argument("--min-separation", type=A.number(0, 100), default=2.0, help="minimum peak separation, px")
    p.add_argument("--overwrite", action="store_true", help="replace detections made with other parameters")
    p.add_argument("--neighbour-passes", type=A.integer(0, 5), default=0,
                   help="refit every star on the image minus its fitted neighbours' ePSF models, "
                        "this many times (default 0, as hst1pass; 2 for the catalog iteration)")
    p.add_argument("--rebuild-psf", action="store_true",
                   help="rebuild the empirical/catalog ePSF even if the store has one (e.g. from a "
                        "newer catalog: a third iteration)")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_detect)


def _add_psf(sub):
    p = sub.add_parser("psf", help="fit each exposure's PSF epoch (focus per chip) to its own bright stars")
    p.add_argument("store", type=A.existing_store, help="store with an exposures group")
    p.add_argument("--fit", default="focus", choices=("focus", "focus+diffusion"),
                   help="focus: the secondary-mirror despace, one Z4 offset per chip (default); "
                        "focus+diffusion: and the charge-diffusion strength at that focus")
    p.add_argument("--min-stars", type=A.integer(3, 100000), default=30,
                   help="fewest usable stars per (exposure, chip); fewer flags it (library used)")
    p.add_argument("--max-stars", type=A.integer(3, 100000), default=300, help="brightest stars used (default 300)")
    p.add_argument("--min-snr", type=A.number(0, 1e6, lo_open=True), default=30.0,
                   help="a star's peak S/N at least this (default 30)")
    p.add_argument("--field", default="auto", choices=("auto", "on", "off"),
                   help="the model's field-dependent aberrations: on (real chips), off (one ePSF per "
                        "chip), auto (default: a simulation's own --field-varying, on for archive data)")
    p.add_argument("--rebuild", action="store_true", help="refit even if the store has a fit")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_psf)


def _add_catalog(sub):
    p = sub.add_parser("catalog", help="transforms, average catalog (truth) and training rasters")
    p.add_argument("store", type=A.existing_store, help="store with a detections group")
    p.add_argument("--reference", type=A.integer(0), default=0, help="reference exposure index (default 0)")
    p.add_argument("--raster-size", type=A.integer(3, 21), default=6, help="raster side in pixels (default 6)")
    p.add_argument("--from-centers", metavar="NAME", type=A.name, help="build the catalog from centers/NAME")
    p.add_argument("--weights", default="none", choices=("none", "inverse-variance"),
                   help="none (the paper's unweighted fits, default) or inverse-variance: the "
                        "transformations and the catalog's clipped means weight each star by "
                        "1/sigma^2 (the fit's Fisher sigma through an error model fitted to each "
                        "exposure's residuals); stored in the groups' parameters")
    p.add_argument("--max-stack-residual", type=A.number(0, 1), default=0.002,
                   help="crowding cut: largest departure of a star's stacked fit residual from the "
                        "chip's common pattern beyond its noise, flux fraction per px (default "
                        "0.002; 0: off); made "
                        "only for detections with the catalog, fitted (or true) ePSF")
    p.add_argument("--neighbours", default="keep", choices=("keep", "subtract"),
                   help="keep: rasters cut from the image (the paper's, default); subtract: from the "
                        "image less the ePSF models of every other detected star (the detections' "
                        "fits): crowded stars' rasters without their neighbours' light")
    p.add_argument("--central", type=A.number(0.01, 1), default=1 / 3,
                   help="fraction of the chip (centred square) whose stars the transformations and "
                        "the catalog use (default 1/3, the paper's; 1: the whole chip)")
    p.add_argument("--catalog-min-flux", type=A.number(0, 1e7), default=0.0,
                   help="faintest fitted flux (DN) of the catalog's (and rasters') stars; default "
                        "the transformations' 500 DN")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_catalog)


def _add_train(sub):
    p = sub.add_parser("train", help="train a centring network (VGG6) from a store's rasters")
    p.add_argument("store", type=A.existing_store)
    p.add_argument("--chip", required=True, type=A.chip, help="chip whose rasters to train on, e.g. PC1")
    p.add_argument("--arch", default="v2", choices=("v1", "v2", "resnet"),
                   help="VGG6 version (paper Table 1) or a small ResNet (model.architectures.resnet)")
    p.add_argument("--recipe", default="fast", choices=("paper", "fast"),
                   help="paper: MAE, Adam 1e-5, batch 32, 1000 epochs; fast: Adam 1e-3 on a cosine "
                        "schedule, batch 64, 100 epochs, best weights kept")
    p.add_argument("--epochs", type=A.integer(1, 100_000), help="maximum epochs (default: the recipe's)")
    p.add_argument("--out", required=True, type=A.model_out, help="model file M.keras (metadata in M.keras.json)")
    p.add_argument("--seed", type=A.integer(0, 2**32 - 1), default=0, help="split and initialization seed, 0..4294967295")
    p.add_argument("--target", default="catalog", choices=("catalog", "exact"),
                   help="catalog truth (the paper's real-data truth) or exact simulation truth")
    p.add_argument("--uncertainty", action="store_true",
                   help="also predict each centre's sigma (Gaussian likelihood loss, the instrumental "
                        "magnitude as a second input), calibrated on the validation stars")
    p.add_argument("--flux", action="store_true",
                   help="with --uncertainty and --target exact: also predict each star's flux (and "
                        "its sigma), as its ratio to the classical fit's flux")
    p.add_argument("--features", type=A.feature_list, default=(),
                   help="per-star inputs beside the raster, comma-separated: mag (instrumental "
                        "magnitude), focus (the exposure's fitted PSF epoch: run `starcenter psf` "
                        "first), chip_x, chip_y (place on the chip); default none (the paper's "
                        "network), mag with --uncertainty")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=C.cmd_train)


def _add_predict(sub):
    p = sub.add_parser("predict", help="centre every raster with a trained model -> centers/NAME")
    p.add_argument("store", type=A.existing_store)
    p.add_argument("--model", type=A.model_file,
                   help="a model written by `starcenter train` (default: the generalist models shipped "
                        "with starcenter, trained on simulations, for every chip of the store in its filter)")
    p.add_argument("--name", type=A.name, help="centers group name (default vgg6, or generalist without --model)")
    p.add_argument("--chip", type=A.chip, help="chip to centre (default: the model's; without --model, every chip)")
    p.add_argument("--force", action="store_true", help="ignore a chip/raster-size/filter mismatch")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_predict)


def _add_phase(sub):
    p = sub.add_parser("phase", help="a method's centres self-calibrated for pixel-phase bias "
                                     "-> centers/NAME")
    p.add_argument("store", type=A.existing_store)
    p.add_argument("--from", dest="source", type=A.name, default="classical",
                   help="the centres to correct: a centers group (e.g. generalist) or classical (the "
                        "rasters' ePSF fit, default)")
    p.add_argument("--name", type=A.name, help="the corrected centres' group (default SOURCE-phase)")
    p.add_argument("--harmonics", type=A.integer(1, 20), default=3,
                   help="Fourier harmonics of the fractional-pixel density (default 3; each is kept "
                        "only where significant)")
    p.add_argument("--p-value", type=A.number(0, 1, lo_open=True), default=1e-3,
                   help="keep a harmonic where its chi-square p under uniform phases is below this "
                        "(default 1e-3)")
    p.add_argument("--pool", choices=("exposure", "store"), default="exposure",
                   help="one correction per exposure (default) or per chip over the store (one PSF epoch)")
    p.add_argument("--order", type=A.integer(0, 3), default=1,
                   help="polynomial order in the chip position of the correction (0: one for the "
                        "chip; default 1: linear, a bias that changes across the chip)")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_phase)


def _add_calibrate(sub):
    p = sub.add_parser("calibrate", help="calibrate a model's sigma again on a simulated set it never trained on")
    p.add_argument("model", type=A.model_file, help="a model with sigma outputs (starcenter train --uncertainty)")
    p.add_argument("store", type=A.existing_store, help="a simulated store with rasters (exact truth)")
    p.add_argument("--chip", type=A.chip, help="chip (default: the model's)")
    p.add_argument("--stars", choices=("all", "test", "unseen"), default="all",
                   help="which stars of every exposure (default all: the set is one the model never saw)")
    p.add_argument("--degree", type=int, choices=(1, 2), default=2,
                   help="polynomial degree of the calibration in magnitude and the model's inputs (default 2)")
    p.add_argument("--correction-weight", action="store_true",
                   help="first calibrate how much of its correction to the classical fit a network keeps, per "
                        "magnitude (model.correction; the store's classical centres: the fit it will correct)")
    p.set_defaults(func=C.cmd_calibrate)


def _add_demo(sub):
    p = sub.add_parser("demo", help="run the demo on the embedded default data set")
    p.add_argument("outdir", nargs="?", default="demo-output", type=A.output_dir, help="output directory")
    p.add_argument("--exposures", type=A.integer(2, 100_000), default=48, help="exposures of the demo set (default 48)")
    p.add_argument("--epochs", type=A.integer(1, 100_000), help="cap on training epochs (default: the fast recipe's)")
    p.add_argument("--no-real", action="store_true", help="skip the real ω Cen section")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_demo)


def _add_generalist(sub):
    p = sub.add_parser("generalist", help="train the generalist networks (many simulated PSF epochs, whole chip)")
    p.add_argument("outdir", type=A.output_dir, help="directory for the training sets and models")
    p.add_argument("--filters", type=A.filters, default=("F555W",), help="comma-separated filters (default F555W)")
    p.add_argument("--chips", type=A.chips, default=("PC1", "WF2", "WF3", "WF4"), help="chips (default all four)")
    p.add_argument("--exposures", type=A.integer(8, 100_000), default=G.EXPOSURES,
                   help=f"simulated exposures per filter, focus drawn from {G.FOCUS_RANGE[0]:+g}.."
                        f"{G.FOCUS_RANGE[1]:+g} um (default {G.EXPOSURES})")
    p.add_argument("--epochs", type=A.integer(1, 100_000), default=G.EPOCHS,
                   help=f"training epochs (default {G.EPOCHS})")
    p.add_argument("--arch", choices=("v1", "v2", "resnet"), default="v2", help="network (default v2)")
    p.add_argument("--calibration-exposures", type=A.integer(0, 100_000), default=G.CALIBRATION_EXPOSURES,
                   help="recalibrate each model's sigma on every star of a calibration set of this many "
                        f"simulated exposures (another seed; default {G.CALIBRATION_EXPOSURES}; 0: only the "
                        "held-out exposures' calibration)")
    p.add_argument("--members", type=A.integer(1, 100), default=1,
                   help="networks per chip, combined into an ensemble (default 1: one network; "
                        "member 1 trains on the training set, the others on a second one)")
    p.add_argument("--neighbours", default="keep", choices=("keep", "subtract"),
                   help="the training and calibration sets' rasters: keep (as cut, the shipped models') "
                        "or subtract (without the other detected stars, `catalog --neighbours`)")
    p.add_argument("--neighbour-passes", type=A.integer(0, 5), default=0,
                   help="the sets' detections refitted this many times without their neighbours "
                        "(`detect --neighbour-passes`; default 0: the shipped models' training)")
    p.add_argument("--features", type=A.feature_list, default=G.FEATURES,
                   help=f"the networks' per-star inputs (default {','.join(G.FEATURES)}; add classical_x,classical_y "
                        "for networks that correct the classical fit's centre)")
    p.add_argument("--install", action="store_true",
                   help="copy the models into the package: `starcenter predict` without --model uses them")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_generalist)


def _add_ensemble(sub):
    p = sub.add_parser("ensemble", help="combine trained networks into one model: the mean of their outputs")
    p.add_argument("out", type=A.model_out, help="the ensemble's model file M.keras (metadata in M.keras.json)")
    p.add_argument("models", nargs="+", type=A.model_file, help="two or more models of one chip, filter, raster size")
    p.set_defaults(func=C.cmd_ensemble)


def _add_sweep_raster_size(sub):
    p = sub.add_parser("sweep-raster-size", help="train and test a network per raster size (Fig. 7)")
    p.add_argument("store", type=A.existing_store, help="store with rasters (starcenter catalog)")
    p.add_argument("--chip", required=True, type=A.chip)
    p.add_argument("--sizes", type=A.sizes, default=[4, 5, 6, 7, 8],
                   help="comma-separated raster sizes in px (default 4,5,6,7,8)")
    p.add_argument("--arch", default="v1", choices=("v1", "v2"))
    p.add_argument("--epochs", type=A.integer(1, 100_000), default=30, help="training epochs cap per size (default 30)")
    p.add_argument("--out", default="raster-size-sweep", type=A.output_dir, help="output directory")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_sweep)


def _add_verify(sub):
    p = sub.add_parser("verify", help="read every finished chunk; --repair marks unreadable ones for redoing")
    p.add_argument("store", type=A.existing_store)
    p.add_argument("--repair", action="store_true",
                   help="clear the done marker of every unreadable chunk: rerunning its stage redoes it")
    p.set_defaults(func=C.cmd_verify)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="figures, metrics.json and report.md for a store")
    p.add_argument("store", type=A.existing_store)
    p.add_argument("--report", required=True, type=A.output_dir, help="output directory")
    _add_cluster_args(p)
    p.set_defaults(func=C.cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per pipeline stage or stretch, plus demo and reports."""
    parser = A.OneLineParser(prog="starcenter", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up messages (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=A.OneLineParser)
    for add in (_add_simulate, _add_ingest, _add_cte, _add_export_fits, _add_fetch_mast, _add_psf, _add_detect, _add_catalog,
                _add_train, _add_predict, _add_phase, _add_calibrate, _add_demo, _add_generalist,
                _add_ensemble,
                _add_sweep_raster_size, _add_evaluate, _add_verify):
        add(sub)
    return parser



#: Commands that write outside the pipeline driver (which locks each store it writes), and the
#: argument naming what they write: they hold its lock.
WRITERS = {"demo": "outdir"}


def main(argv: list[str] | None = None) -> int:
    from starcenter.cubes.errors import StarcenterError

    args = build_parser().parse_args(argv)
    if args.verbose:
        import os

        os.environ["STARCENTER_VERBOSE"] = "1"  # TensorFlow's start-up lines (starcenter.model)
    try:
        if args.command in WRITERS:
            from starcenter.cubes.store import locked

            with locked(getattr(args, WRITERS[args.command]), args.command):
                return args.func(args)
        return args.func(args)
    except StarcenterError as err:
        print(f"starcenter {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine refused (disk full, permissions) outside a stage's chunks
        print(f"starcenter {args.command}: error: {err.strerror or err} ({type(err).__name__}"
              f"{': ' + str(err.filename) if err.filename else ''})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
