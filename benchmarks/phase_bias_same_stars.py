"""The paper's W/V curves on the same clean stars: library ePSF against another ePSF (issue #5).

    python benchmarks/phase_bias_same_stars.py LIBRARY.zarr OTHER.zarr [--png OUT.png]

SIMULATION only: two stores of the same simulated data set (same preset and seed) whose
detections were fitted with the library ePSF and with another (``true`` or ``catalog``), each
carried through ``starcenter catalog``. The stars kept for rasters in OTHER (isolated, and for
the true/catalog ePSF through the stacked-residual crowding cut) are found in LIBRARY through
the simulation's star index, and on exactly those stars the standard error of every exposure ->
reference cubic transformation is computed from each store's classical centres. Printed per
chip and axis: the median standard error in 5 offset-phase bins (mpix) and the flatness
(max / min). A pixel-phase bias rises from phase 0 to 0.5 (W/V); an unbiased centring is flat.
Restricting both to the same clean stars separates the ePSF's bias from crowding, which also
rises with phase (a neighbour's pull cancels at phase 0 and not at 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("library")
    ap.add_argument("other")
    ap.add_argument("--png", default=None)
    a = ap.parse_args(argv)

    import xarray as xr

    from starcenter.evaluation.metrics import (
        method_positions,
        phase_curve,
        transforms_from_positions,
    )
    from starcenter.evaluation.plots import plot_phase_curves

    stores = {"library": a.library, "other": a.other}
    ras = {k: xr.open_zarr(v, group="rasters") for k, v in stores.items()}
    kinds = {k: json.loads(xr.open_zarr(v, group="detections").attrs["params"])["psf"] for k, v in stores.items()}
    ref = json.loads(xr.open_zarr(a.other, group="transforms").attrs["params"])["reference"]
    chips = [str(c) for c in ras["other"].chip.values]
    curves = {f"{kinds[k]} ePSF": {} for k in stores}
    res = {}
    for c, chip in enumerate(chips):
        keep = ras["other"]["selected"].isel(chip=c).values
        sim = ras["other"]["sim_index"].isel(chip=c).values
        wanted = set(sim[keep & (sim >= 0)].tolist())
        for k, path in stores.items():
            lib_c = list(ras[k].chip.values).index(chip)
            s = ras[k]["sim_index"].isel(chip=lib_c).values
            cols = np.array([np.flatnonzero(s == i)[0] for i in sorted(wanted) if (s == i).any()])
            xy = method_positions(path, "classical")[:, lib_c][:, cols]
            se, off, _ = transforms_from_positions(xy[:, None], ref)
            ok = np.all(np.isfinite(se[:, 0]), axis=1) & (np.arange(se.shape[0]) != ref)
            name = f"{kinds[k]} ePSF"
            curves[name][chip] = {ax: (np.mod(off[ok, 0, i], 1.0), se[ok, 0, i] * 1e3) for i, ax in enumerate("xy")}
            for i, ax in enumerate("xy"):
                _, med, _ = phase_curve(*curves[name][chip][ax], 5)
                flat = float(np.nanmax(med) / np.nanmin(med))
                res.setdefault(chip, {}).setdefault(name, {})[ax] = {
                    "curve_mpix": np.round(med, 2).tolist(), "flatness": round(flat, 2), "stars": len(cols)}
                print(f"{chip} {ax} {name:14s} ({len(cols)} stars): {np.round(med, 1)} mpix, flatness {flat:.2f}")
    png = a.png or str(a.other) + ".phase-same-stars.png"
    plot_phase_curves(curves, png, "SIMULATION: classical centres of the same clean stars, library vs "
                                   f"{kinds['other']} ePSF")
    print(f"figure: {png}")
    return res


if __name__ == "__main__":
    main()
