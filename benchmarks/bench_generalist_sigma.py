"""Benchmark (SIMULATION): are the shipped generalists' sigmas calibrated on a set they never saw?

One held-out set per filter built exactly as the generalists' training and calibration sets
(``starcenter.generalist.training_config`` and ``build_set``: every exposure's focus drawn from
``FOCUS_RANGE``, -15 .. +20 um since the retrained models (-10 .. +15 before), 1 um breathing,
the field-varying PSF, ``psf --fit focus``, ``detect --psf fitted``, the catalog over the whole
chip with its crowding cut, which needs >= 20 exposures) under another seed: stars and PSF epochs neither the training nor the calibration saw. Each
chip is centred with the shipped model (or the models of ``--models DIR``); printed per chip,
axis and flux bin: the coverage of +-1 and +-2 sigma (nominal 68.27 / 95.45 %), Spearman of
sigma with |error|, mean sigma over the rms error, for the generalist and the classical fit's
Fisher sigma on the same stars.

    python benchmarks/bench_generalist_sigma.py OUTDIR [--filter F555W] [--chips PC1,WF3]
                                               [--exposures 32] [--seed 2001] [--models DIR]

Writes OUTDIR/generalist_sigma.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    from bench_uncertainty import print_tables  # this folder: the same coverage tables

    from starcenter.cubes import pipeline
    from starcenter.evaluation import uncertainty as U
    from starcenter.generalist import FOCUS_RANGE, build_set, model_name, training_config
    from starcenter.model.predict import shipped_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--filter", default="F555W")
    ap.add_argument("--chips", default="PC1,WF3")
    ap.add_argument("--exposures", type=int, default=32)
    ap.add_argument("--seed", type=int, default=2001)
    ap.add_argument("--models", type=Path, help="directory of generalist models (default: the shipped ones)")
    args = ap.parse_args(argv)
    chips = tuple(args.chips.split(","))
    args.outdir.mkdir(parents=True, exist_ok=True)
    store = args.outdir / f"held-out-{args.filter}-{args.seed}.zarr"
    build_set(store, training_config(args.filter, chips, args.exposures, args.seed))
    for chip in chips:
        model = args.models / model_name(chip, args.filter) if args.models else shipped_model(chip, args.filter)
        pipeline.run_stage("predict", store, None, False, model_path=str(model), name="generalist", chip=chip)
    focus = f"{FOCUS_RANGE[0]:+g}..{FOCUS_RANGE[1]:+g} um"
    report = {"label": f"SIMULATION held-out set: {args.filter}, {args.exposures} exposures, seed {args.seed}, "
                       f"focus {focus}, field-varying PSF, whole chip, crowding cut",
              "models": str(args.models or "shipped")}
    for method in ("generalist", U.CLASSICAL_FISHER):
        tab = U.table(U.errors_and_sigmas(store, method))
        report[method] = {"table": tab, "within_68+-3_95+-2": U.within(tab)}
    print(report["label"])
    print_tables({m: report[m] for m in ("generalist", U.CLASSICAL_FISHER)})
    (args.outdir / "generalist_sigma.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
