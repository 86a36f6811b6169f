"""REAL DATA (ω Cen u40x010hm, F555W, 100 s, 1997): the psf stage's fitted focus per chip, and the
fractional-pixel histograms of the library, fitted and empirical ePSFs on the same stars.

The exposure is ingested (with its c1f data-quality file when ../shared/data/real has it), the
focus fitted per chip to its bright isolated stars (``starcenter psf --fit focus``), then detect
runs with each ePSF; stars well measured by all three (unsaturated, unflagged, 1e-4 <= q <= 1,
> 1e4 e-, matched within 0.5 px) give the histograms of x - round(x) and y - round(y) in 10 bins,
with the chi-square p against uniform. A non-uniform histogram is pixel-phase bias. No
simulation is involved.

With ``--cte`` the exposure is first corrected for WFPC2's CTE (``starcenter cte``: the
simulator's trap model, calibrated on Dolphin's photometric CTE, at the exposure's date) and the
same is done on the corrected copy.

    python benchmarks/real_psf_fit.py OUTDIR [--cte]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import chisquare

NBINS = 10
METHODS = ("library", "fitted", "empirical")


def real_store(out: Path) -> Path:
    from starcenter.cubes import pipeline
    from starcenter.cubes.archive.wfpc2 import real_omega_cen_inputs

    files = real_omega_cen_inputs(out / "files")
    store = out / "real.zarr"
    if not store.exists():
        pipeline.run(store, "ingest", "ingest", {"ingest": {"inputs": [files / "u40x010hm_c0f.fits"]}})
    return store


def detections(store, method: str) -> list[dict]:
    from starcenter.cubes import pipeline
    from starcenter.cubes.lookup import read_detections
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.store import open_root

    pipeline.run(store, "psf", "detect", {"detect": {"params": DetectParams(method), "overwrite": True}},
                 progress=False)
    root = open_root(store)
    return [read_detections(root, 0, c) for c in range(root["exposures/image"].shape[1])]


def common_well_measured(dets: dict, gain: float) -> dict:
    """{method: (x, y)} of the stars well measured by every method, matched within 0.5 px."""
    def well(d):
        ok = ~d["saturated"] & (d["flags"] == 0) & (d["q"] >= 1e-4) & (d["q"] <= 1) & (d["flux"] * gain > 1e4)
        return np.c_[d["x"][ok], d["y"][ok]]

    pos = {m: well(d) for m, d in dets.items()}
    ref = pos[METHODS[0]]
    keep = np.ones(len(ref), bool)
    idx = {}
    for m in METHODS[1:]:
        dist, j = cKDTree(pos[m]).query(ref)
        keep &= dist < 0.5
        idx[m] = j
    out = {METHODS[0]: ref[keep]}
    for m in METHODS[1:]:
        out[m] = pos[m][idx[m][keep]]
    return out


def histogram(v: np.ndarray):
    frac = v - np.floor(v + 0.5)
    h = np.histogram(frac, NBINS, (-0.5, 0.5))[0]
    return h, float(chisquare(h).pvalue)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cte = "--cte" in argv
    out = Path([a for a in argv if a != "--cte"][0])
    from starcenter.cubes.store import open_group

    store = real_store(out)
    if cte:
        from starcenter.cubes.stages.cte_correct import correct_store

        correct_store(store, out / "real-cte.zarr", progress=False)
        store = out / "real-cte.zarr"
    ex = open_group(store, "exposures")
    print(f"REAL DATA: ω Cen u40x010hm F555W 100 s; data quality {'from the c1f' if 'dq' in ex else 'absent'}"
          + ("; CTE-corrected (starcenter cte)" if cte else ""))
    from starcenter.cubes import pipeline
    from starcenter.cubes.params import PSFFitParams

    pipeline.run(store, "psf", "psf", {"psf": {"kind": "fitted", "fit": PSFFitParams()}}, progress=False)
    fit = open_group(store, "psf_fit")
    chips = [str(c) for c in ex.chip.values]
    report = {"label": "REAL DATA: omega Cen u40x010hm F555W", "focus": {}, "histograms": {}}
    print(f"{'chip':4} {'focus um':>9} {'+-':>5} {'stars':>5} {'chi2_red':>8} status")
    for c, chip in enumerate(chips):
        v = {k: float(fit[k].values[0, c]) for k in ("focus", "focus_err", "chi2_red", "n_stars", "status")}
        report["focus"][chip] = v
        print(f"{chip:4} {v['focus']:+9.2f} {v['focus_err']:5.2f} {v['n_stars']:5.0f} {v['chi2_red']:8.2f} "
              f"{int(v['status'])}")
    dets = {m: detections(store, m) for m in METHODS}
    print(f"\n{'chip':4} {'ePSF':9} {'stars':>5}  fractional-x histogram            p(x)      p(y)")
    for c, chip in enumerate(chips):
        common = common_well_measured({m: dets[m][c] for m in METHODS}, float(ex.gain.values[c]))
        for m in METHODS:
            (hx, px), (hy, py) = histogram(common[m][:, 0]), histogram(common[m][:, 1])
            report["histograms"][f"{chip} {m}"] = {"n": len(common[m]), "x": hx.tolist(), "y": hy.tolist(),
                                                   "p_x": px, "p_y": py}
            print(f"{chip:4} {m:9} {len(common[m]):5d}  {' '.join(f'{n:3d}' for n in hx)}  {px:8.1e}  {py:8.1e}")
    (out / ("real_psf_fit_cte.json" if cte else "real_psf_fit.json")).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
