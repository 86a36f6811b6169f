"""Benchmark (#17): ``detect`` per chip, this tree against an earlier commit, side by side.

Simulates one exposure of the demo set (SIMULATION, PC1 and WF3, ~7,000 detections per chip),
then times the detection kernel (peaks, local sky, ePSF fit with the library ePSF; and with
``--neighbour-passes 2``) single-threaded, best of 3, in this tree and in ``--base`` (a copy
made by ``git archive``), and prints the ratio and the rms difference of the centres (mpix);
then photutils' DAOStarFinder + PSFPhotometry on the same chips, and the ratio of the times.

    python benchmarks/bench_detect_speed.py [--base 1b2ccff]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KERNEL = r'''
import json, sys, time
import numpy as np, zarr
try:
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.sim.optics import PSFParams, get_epsf
    from starcenter.cubes.stages.detections import detect_chunk
except ImportError:  # a commit from before the renovation (#15)
    from cubes.detections import DetectParams, detect_chunk
    from cubes.optics import PSFParams, get_epsf
root = zarr.open_group(sys.argv[1], mode="r")
out = {}
for c, chip in enumerate(["PC1", "WF3"]):
    img = np.asarray(root["exposures/image"][0, c]); dq = np.asarray(root["exposures/dq"][0, c])
    epsf = get_epsf(PSFParams(chip, "F555W"))
    for npass in (0, 2):
        p = DetectParams("library", neighbour_passes=npass)
        ts = []
        for _ in range(3):
            t = time.perf_counter(); d = detect_chunk(img, dq, epsf, 7.0, 5.2, p); ts.append(time.perf_counter() - t)
        out[f"{chip} neighbour-passes {npass}"] = {"s": min(ts), "n": int(len(d["x"])),
                                                   "x": d["x"].tolist(), "y": d["y"].tolist()}
print(json.dumps(out))
'''


def time_tree(tree: Path, store: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", KERNEL, str(store)], cwd=tree, env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


PHOTUTILS = r'''
import json, sys, time
import numpy as np, zarr
from astropy.table import Table
from photutils.detection import DAOStarFinder
from photutils.psf import PSFPhotometry
from starcenter.cubes.classical.peaks import find_peaks, local_sky
from starcenter.cubes.params import DetectParams
from starcenter.cubes.sim.optics import PSFParams, get_epsf
from starcenter.cubes.stages.detections import detect_chunk
root = zarr.open_group(sys.argv[1], mode="r")
out = {}
for c, chip in enumerate(["PC1", "WF3"]):
    img = np.asarray(root["exposures/image"][0, c], float); dq = np.asarray(root["exposures/dq"][0, c])
    epsf = get_epsf(PSFParams(chip, "F555W"))
    t = time.perf_counter(); ours = detect_chunk(img, dq, epsf, 7.0, 5.2, DetectParams()); t_ours = time.perf_counter() - t
    t = time.perf_counter()
    sky = local_sky(img)  # the same background for both
    data = img - sky
    err = np.sqrt(np.clip(img, 0, None) / 7.0 + (5.2 / 7.0) ** 2)
    found = DAOStarFinder(threshold=5 * float(np.median(err)), fwhm=2.0 if chip == "PC1" else 1.4)(data)
    t_find = time.perf_counter() - t
    init = Table({"x": np.asarray(found["xcentroid"]), "y": np.asarray(found["ycentroid"]),
                  "flux": np.clip(np.asarray(found["flux"]), 1, None)})
    t = time.perf_counter()
    tab = PSFPhotometry(epsf.to_imagepsf(), (5, 5), aperture_radius=3)(data, error=err, init_params=init)
    t_fit = time.perf_counter() - t
    out[chip] = {"ours_s": t_ours, "ours_n": int(len(ours["x"])), "find_s": t_find, "fit_s": t_fit,
                 "phot_n": int(len(tab))}
print(json.dumps(out))
'''


def photutils_ratio(store: Path) -> None:
    """photutils' DAOStarFinder + PSFPhotometry against starcenter's detect on the same chips."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", PHOTUTILS, str(store)], cwd=REPO, env=env,
                       capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print("\nphotutils DAOStarFinder + PSFPhotometry (library ePSF, 5x5, one thread) vs starcenter detect:")
    for chip, v in res.items():
        total = v["find_s"] + v["fit_s"]
        print(f"{chip}: photutils {total:7.2f} s for {v['phot_n']} stars (find {v['find_s']:.2f} s, fit "
              f"{v['fit_s']:.2f} s) | starcenter {v['ours_s']:.3f} s for {v['ours_n']} | ratio "
              f"{total / v['ours_s']:.0f}x")


def main():
    import dask
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="1b2ccff", help="commit to compare with (default: main before #17)")
    ap.add_argument("--no-photutils", action="store_true", help="skip the photutils comparison (minutes)")
    a = ap.parse_args()
    from starcenter.cubes.sim.simulate import make_config, simulate

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "one.zarr"
        with dask.config.set(scheduler="synchronous"):
            simulate(store, make_config("demo", n_exposures=2), progress=False)
        base = Path(tmp) / "base"
        base.mkdir()
        subprocess.run(f"git -C {REPO} archive {a.base} | tar -x -C {base}", shell=True, check=True)
        old, new = time_tree(base, store), time_tree(REPO, store)
        if not a.no_photutils:
            photutils_ratio(store)
    print(f"SIMULATION, demo set exposure 0, library ePSF, one thread; base {a.base} vs this tree")
    print(f"{'chip / passes':28} {'stars':>6} {'base [s]':>9} {'now [s]':>8} {'speed-up':>9} {'centres rms diff [mpix]':>24}")
    for k in old:
        d = (np.c_[old[k]["x"], old[k]["y"]] - np.c_[new[k]["x"], new[k]["y"]]) * 1e3
        d = d[np.all(np.isfinite(d), axis=1)]
        rms = np.sqrt(np.mean(d**2, axis=0))
        print(f"{k:28} {new[k]['n']:6d} {old[k]['s']:9.3f} {new[k]['s']:8.3f} {old[k]['s'] / new[k]['s']:8.1f}x "
              f"{rms[0]:11.4f} / {rms[1]:.4f}")


if __name__ == "__main__":
    main()
