"""REAL DATA vs SIMULATION: the real ω Cen exposure beside ``simulate --like`` of it.

The real exposure is ingested with its c1f and its focus fitted (benchmarks/real_psf_fit.py's
store), a 2-exposure simulation mirrors it (``starcenter simulate OUT --like REAL``), and both
are detected with the library ePSF. Per chip, side by side: detections per instrumental
magnitude (of e-), the sky (DN), the peak-pixel fraction of bright stars (peak pixel above sky /
flux, 3e4-1e5 e-: how sharp the PSF is) and the q distribution of 1e4-1e5 e- stars.

    python benchmarks/like_real.py OUTDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from real_psf_fit import real_store

MAG_BINS = np.arange(-12.5, -6.4, 1.0)  # instrumental magnitude of e-: -2.5 log10(flux e-)


def stats(store) -> dict:
    from starcenter.cubes import pipeline
    from starcenter.cubes.lookup import read_detections
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.store import open_group, open_root

    pipeline.run(store, "psf", "detect", {"detect": {"params": DetectParams("library"), "overwrite": True}},
                 progress=False)
    ex = open_group(store, "exposures")
    root = open_root(store)
    out = {}
    for c, chip in enumerate(str(v) for v in ex.chip.values):
        d = read_detections(root, 0, c)
        d["sky"] = root["detections/sky"][0, c][: d["x"].size]
        gain = float(ex.gain.values[c])
        e = d["flux"] * gain
        ok = (d["flags"] == 0) & (e > 0)
        mag = -2.5 * np.log10(e[ok])
        image = root["exposures/image"][0, c]
        bright = ok & (e >= 3e4) & (e < 1e5)
        ix, iy = np.floor(d["x"][bright] + 0.5).astype(int), np.floor(d["y"][bright] + 0.5).astype(int)
        peak = (image[iy, ix] - d["sky"][bright]) / d["flux"][bright]
        mid = ok & (e >= 1e4) & (e < 1e5)
        out[chip] = {"counts": np.histogram(mag, MAG_BINS)[0].tolist(), "detections": int(ok.sum()),
                     "sky_dn": float(np.median(d["sky"][ok])), "peak_fraction": float(np.median(peak)),
                     "q_quartiles": np.percentile(d["q"][mid], [25, 50, 75]).round(4).tolist(),
                     "saturated": int(d["saturated"].sum())}
    return out


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    from starcenter.cubes import pipeline
    from starcenter.cubes.params import PSFFitParams
    from starcenter.cubes.sim.like import like_config

    real = real_store(out)
    pipeline.run(real, "psf", "psf", {"psf": {"kind": "fitted", "fit": PSFFitParams()}}, progress=False)
    like = out / "like.zarr"
    cfg, measured = like_config(real, 2)
    pipeline.run(like, "simulate", "simulate", {"simulate": {"config": cfg}}, progress=False)
    r, s = stats(real), stats(like)
    print("REAL DATA (ω Cen u40x010hm) vs SIMULATION (simulate --like), exposure 0, library ePSF")
    print("magnitude bins (instrumental, e-): " + " ".join(f"{m:.1f}" for m in MAG_BINS[:-1]))
    for chip in r:
        for label, v in (("real", r[chip]), ("like", s[chip])):
            print(f"{chip} {label}: counts {v['counts']} | {v['detections']} detections, {v['saturated']} "
                  f"saturated | sky {v['sky_dn']:.1f} DN | peak fraction {v['peak_fraction']:.3f} | "
                  f"q quartiles {v['q_quartiles']}")
    (out / "like_real.json").write_text(json.dumps({"label": "REAL DATA vs SIMULATION (--like)", "real": r,
                                                    "like": s, "config": cfg.to_json(),
                                                    "measured": measured}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
