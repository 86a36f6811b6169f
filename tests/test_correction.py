"""model.correction: the calibrated weight of a network's correction to the classical fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from starcenter.cubes.errors import BadArgumentError
from starcenter.model import correction as K


def _stars(n, rng, informative):
    """Classical fits with 20 mpix errors and a network correction; the correction recovers
    ``informative`` of the classical error, plus 20 mpix of noise of its own."""
    target = rng.uniform(2.5, 3.5, (n, 2))
    classical = target + rng.normal(0, 0.02, (n, 2))
    xy = classical + informative * (target - classical) + rng.normal(0, 0.02, (n, 2))
    return xy, classical, target, rng.uniform(-12, -7, n)


@pytest.mark.parametrize("informative, expected", [(0.0, 0.0), (1.0, 0.5)])
def test_the_weight_is_the_least_error_mix_of_the_two_estimates(informative, expected):
    """A correction of pure noise is dropped (w 0: the classical fit); one that recovers the
    classical error with noise of the same size is kept half (w = var_c / (var_c + var_n) = 0.5),
    and the mix is better than either."""
    cw = K.fit(*_stars(12000, np.random.default_rng(1), informative))
    assert np.allclose(cw["weight"], expected, atol=0.1), cw["weight"]
    assert all(m <= min(c, n) + 1e-9 for m, c, n in zip(cw["mixed_mpix"], cw["classical_mpix"], cw["network_mpix"]))
    if informative:  # the mix of two independent 20 mpix estimates: 20 / sqrt(2) mpix
        assert np.allclose(cw["mixed_mpix"], 20 / np.sqrt(2), rtol=0.08), cw["mixed_mpix"]


def test_the_weight_applies_per_magnitude_in_the_output_frame():
    """``apply``: the classical inputs (px from the raster's central pixel) are moved to the
    output frame (px from the corner); weight 0 gives the classical fit, 1 the network, each
    star the weight of its magnitude bin (the end bins' beyond them)."""
    meta = {"features": ["mag", "classical_x", "classical_y"], "raster_size": 6,
            "correction_weight": {"mag_edges": [-12.0, -10.0, -8.0], "weight": [1.0, 0.0]}}
    feats = np.array([[0, 0.1, -0.2], [0, 0.3, 0.4], [0, -0.1, 0.0]])
    xy = np.array([[3.2, 2.9], [3.0, 3.0], [2.0, 2.0]])
    out = K.apply(xy, feats, np.array([-11.0, -9.0, -20.0]), meta)
    np.testing.assert_allclose(out, [[3.2, 2.9], [3.3, 3.4], [2.0, 2.0]])
    assert K.apply(xy, feats, None, {**meta, "correction_weight": None}) is xy
    with pytest.raises(BadArgumentError, match="magnitude"):
        K.apply(xy, feats, None, meta)
    with pytest.raises(BadArgumentError, match="no classical centre"):
        K.apply(xy, feats[:, :1], np.zeros(3), {**meta, "features": ["mag"]})
    with pytest.raises(BadArgumentError, match="at least"):
        K.fit(xy, xy, xy, np.zeros(3))


def test_calibrate_writes_a_weight_that_predict_and_sigma_apply(fitted_store, tmp_path, capsys):
    """`starcenter calibrate --correction-weight` on a set the model never saw (the tiny fitted
    store): the weight lands in the model's metadata, the centres ``centre`` returns are the
    classical fit plus that part of the network's correction, and the sigma is calibrated on them."""
    import dask
    import xarray as xr

    from starcenter.cubes import pipeline
    from starcenter.cubes.params import TransformParams
    from starcenter.cli import main
    from starcenter.model.predict import centre, shipped_model

    store = tmp_path / "s.zarr"
    shutil.copytree(fitted_store, store)
    with dask.config.set(scheduler="synchronous"):
        pipeline.run_catalog(store, transform_params=TransformParams(central=1.0), progress=False)
    model = tmp_path / "m.keras"
    src = shipped_model("WF3", "F555W")
    shutil.copyfile(src, model)
    shutil.copyfile(str(src) + ".json", str(model) + ".json")
    raw = json.loads(Path(str(model) + ".json").read_text())
    assert main(["calibrate", str(model), str(store), "--chip", "WF3", "--correction-weight", "--degree", "1"]) == 0
    said = capsys.readouterr().out
    meta = json.loads(Path(str(model) + ".json").read_text())
    cw = meta["correction_weight"]
    assert 2 <= len(cw["weight"]) == len(cw["mag_edges"]) - 1 <= K.BINS and all(0 <= w <= 1 for w in cw["weight"]) and str(store) in cw["on"]
    assert meta["calibration"] != raw["calibration"] and "correction weight" in said
    ras = xr.open_zarr(store, group="rasters").sel(chip="WF3")
    m = ras["mask"].values
    mag = ras["mag"].values[m]
    classical = ras["prelim"].values[m] - ras["corner"].values[m] - 3
    feats = np.c_[(mag + 8) / 2, np.full(mag.size, 0.5), np.zeros((mag.size, 2)), classical]
    with_w = centre(str(model), ras["raster"].values[m], feats, mag, gain=7.0, meta=meta)
    without = centre(str(model), ras["raster"].values[m], feats, mag, gain=7.0, meta={**raw, "correction_weight": None})
    w = K.weights_at(mag, cw)[:, None]
    np.testing.assert_allclose(with_w["xy"], classical + 3 + w * (without["xy"] - classical - 3), atol=1e-9)
