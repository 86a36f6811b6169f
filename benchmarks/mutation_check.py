"""Mutation check of the strengthened tests (#18): each mutation breaks the code on purpose in a
throw-away copy of a commit, runs the tests that must catch it, and prints whether they failed
(caught) — and, with ``--old REF``, whether the tests of an older commit caught it too.

    python benchmarks/mutation_check.py [--ref HEAD] [--old REF] [--with-demo]

The working tree is never modified (copies come from ``git archive``). Slow: one pytest run per
mutation (the demo mutation, ~3 min, only with --with-demo).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (name, file, code before, code after, new test ids, old test ids)
MUTATIONS = [
    ("scored on every star", "evaluation/metrics.py",
     'def method_positions(store, method: str, stars: str = "scored")',
     'def method_positions(store, method: str, stars: str = "all")',
     ["tests/test_evaluation.py::test_a_network_is_scored_only_on_the_stars_it_never_saw"], []),
    ("offset phase in [-0.5, 0.5)", "cubes/classical/transforms.py",
     "return np.mod(np.asarray(offset, float), 1.0)",
     "return np.mod(np.asarray(offset, float) + 0.5, 1.0) - 0.5",
     ["tests/test_evaluation.py::test_full_offset_and_phase_views_by_hand"],
     ["tests/test_evaluation.py::test_full_offset_and_phase_views_agree"]),
    ("stamp overshoots the phase", "cubes/classical/epsf.py",
     "return self.evaluate(k[None, :] - phase_x, k[:, None] - phase_y)",
     "return self.evaluate(k[None, :] - 1.5 * phase_x, k[:, None] - phase_y)",
     ["tests/test_epsf.py::test_centroid_of_undersampled_wf_psf_shows_pixel_phase_bias"],
     ["tests/test_epsf.py::test_centroid_of_undersampled_wf_psf_shows_pixel_phase_bias"]),
    ("chip rotations reversed (both ways)", "cubes/sim/field.py",
     "return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])",
     "return np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])",
     ["tests/test_field.py::test_chip_global_round_trip"],
     ["tests/test_field.py::test_chip_global_round_trip"]),
    ("no sky", "cubes/sim/simulate.py",
     "expected = np.full(shape, cfg.sky * cfg.exptime * scale**2)",
     "expected = np.full(shape, 0.0 * cfg.sky * cfg.exptime * scale**2)",
     ["tests/test_simulate.py::test_sky_level_and_noise"],
     ["tests/test_simulate.py::test_sky_level_and_noise"]),
    ("empirical ePSF = library", "cubes/stages/psf.py",
     "lib[chip](0), saturation_dn=sat)\n        data[chip] = e.data\n",
     "lib[chip](0), saturation_dn=sat)\n        data[chip] = lib[chip](0).data\n",
     ["tests/test_detections.py::test_empirical_epsf_is_built_and_stored"],
     ["tests/test_detections.py::test_empirical_epsf_is_built_and_stored"]),
    ("detector finds nothing", "cubes/classical/peaks.py",
     "(above > threshold * sigma)", "(above > 100 * threshold * sigma)",
     ["tests/test_detect.py::test_empty_chip_gives_no_detection"],
     ["tests/test_detect.py::test_empty_chip_gives_no_detection"]),
    ("refined rasters not marked stale", "cubes/stages/refine.py",
     'catalog_source=ras.attrs.get("catalog_source", "")\n                + f" refined from centers/{name}")',
     'catalog_source=ras.attrs.get("catalog_source", ""))',
     ["tests/test_catalog.py::test_second_iteration_from_better_centres_improves_the_catalog"],
     ["tests/test_catalog.py::test_second_iteration_from_better_centres_improves_the_catalog"]),
    ("a catalog rerun keeps the refined rasters", "cubes/stages/rasters.py",
     '{"params": params.to_json(), "catalog_source": source}',
     '{"params": params.to_json()}',
     ["tests/test_catalog.py::test_second_iteration_from_better_centres_improves_the_catalog"],
     ["tests/test_catalog.py::test_second_iteration_from_better_centres_improves_the_catalog"]),
    ("3.5-sigma clipping", "cubes/classical/stats.py",
     "def clipped_mean(measures, sigma: float = 3.0", "def clipped_mean(measures, sigma: float = 3.5",
     ["tests/test_catalog.py::test_clipped_mean_by_hand_needs_enough_exposures"],
     ["tests/test_catalog.py::test_clipped_mean_rejects_outliers"]),
    ("standard error over n instead of n - 10", "cubes/classical/transforms.py",
     "dof = used.sum() - N_TERMS", "dof = used.sum()",
     ["tests/test_transforms.py::test_standard_error_is_sqrt_of_sum_of_squares_over_n_minus_10_by_hand"],
     ["tests/test_transforms.py::test_fit_cubic_recovers_a_known_transformation_and_culls_outliers"]),
    ("single measurement / 2", "evaluation/metrics.py",
     "return round(float(np.nanmedian(std_err_mpix)) / np.sqrt(2), 2)",
     "return round(float(np.nanmedian(std_err_mpix)) / 2, 2)",
     ["tests/test_transforms.py::test_single_measurement_error_is_the_standard_error_over_sqrt_2"], []),
    ("predict swaps x and y", "model/predict.py",
     'out[mask] = np.asarray(g["corner"][e0:e1, c])[mask] + pred',
     'out[mask] = np.asarray(g["corner"][e0:e1, c])[mask] + pred[:, ::-1]',
     ["tests/test_convention.py::test_known_positions_through_every_stage_to_centers"],
     ["tests/test_model.py::test_train_resume_and_predict"]),
    ("raster corner from floor (no rounding)", "cubes/classical/cutouts.py",
     "cx = np.floor(x + 0.5).astype(int) - size // 2",
     "cx = np.floor(x).astype(int) - size // 2",
     ["tests/test_convention.py::test_kernels_keep_x_along_columns_on_a_non_square_image",
      "tests/test_convention.py::test_known_positions_through_every_stage_to_centers"],
     ["tests/test_catalog.py::test_catalog_and_rasters", "tests/test_catalog.py::test_raster_pixels_are_the_image_pixels"]),
    ("ingest transposes the chips", "cubes/archive/wfpc2.py",
     "image = np.stack([planes[i].astype(np.float32) for i in order])",
     "image = np.stack([planes[i].astype(np.float32).T for i in order])",
     ["tests/test_convention.py::test_real_file_x_runs_along_naxis1"],
     ["tests/test_ingest.py::test_real_omega_cen_exposure"]),
]
#: Where each mutated file lived before the renovation (#15), for --old on older commits.
OLD_PATHS = {"cubes/classical/transforms.py": "cubes/transforms.py", "cubes/classical/epsf.py": "cubes/epsf.py",
             "cubes/sim/field.py": "cubes/field.py", "cubes/sim/simulate.py": "cubes/simulate.py",
             "cubes/stages/psf.py": "cubes/detections.py", "cubes/classical/peaks.py": "cubes/detect.py",
             "cubes/stages/refine.py": "cubes/catalog.py", "cubes/classical/stats.py": "cubes/catalog.py",
             "cubes/classical/cutouts.py": "cubes/rasters.py", "cubes/archive/wfpc2.py": "cubes/ingest.py",
             "cubes/stages/rasters.py": "cubes/rasters.py", "starcenter/demo.py": "evaluation/demo.py"}
DEMO = ("demo retrains on a rerun", "starcenter/demo.py", "            if not path.exists():\n",
        "            if True:\n", ["tests/test_cli.py::test_demo_end_to_end"], ["tests/test_cli.py::test_demo_end_to_end"])


def run(ref: str, mutation, tests, apply: bool = True) -> str:
    name, path, old, new = mutation[:4]
    if not tests:
        return "-"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(f"git -C {REPO} archive {ref} | tar -x -C {tmp}", shell=True, check=True)
        f = Path(tmp) / path
        if not f.exists() and path in OLD_PATHS:  # a commit from before the renovation (#15)
            f = Path(tmp) / OLD_PATHS[path]
        text = f.read_text()
        if text.count(old) != 1:
            return "mutation does not apply"
        if apply:
            f.write_text(text.replace(old, new))
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=tmp, capture_output=True, text=True)
        return "CAUGHT (failed)" if r.returncode == 1 else ("passed" if r.returncode == 0 else f"rc {r.returncode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="HEAD")
    ap.add_argument("--old", default=None, help="also run the older commit's tests on each mutation")
    ap.add_argument("--with-demo", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated mutation numbers (1-based)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated run (when the suite is known green)")
    a = ap.parse_args()
    muts = MUTATIONS + ([DEMO] if a.with_demo else [])
    if a.only:
        muts = [muts[int(i) - 1] for i in a.only.split(",")]
    for m in muts:
        if not a.no_baseline and run(a.ref, m, m[4], apply=False) != "passed":
            print(f"{m[0]:40} the tests fail without the mutation: fix them first", flush=True)
            continue
        new = run(a.ref, m, m[4])
        old = run(a.old, m, m[5]) if a.old else ""
        print(f"{m[0]:40} new tests: {new:18} {'old tests: ' + old if a.old else ''}", flush=True)


if __name__ == "__main__":
    main()
