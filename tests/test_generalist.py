"""The shipped generalist networks (never retrained here): present, small, with their training
provenance, and centring simulated stars of an epoch they never saw (the tiny store's)."""

import json

import numpy as np
import pytest
import xarray as xr

from starcenter.cubes import constants as C
from starcenter.model.predict import SHIPPED, centre, shipped_model

from .conftest import derive_store

SHIPPED_MODELS = sorted(SHIPPED.glob("generalist-*.keras")) if SHIPPED.is_dir() else []


def test_every_chip_has_a_shipped_model_in_f555w():
    assert {p.name for p in SHIPPED_MODELS} >= {f"generalist-{c}-F555W.keras" for c in C.CHIPS}


@pytest.mark.parametrize("path", SHIPPED_MODELS, ids=lambda p: p.stem)
def test_shipped_model_is_small_and_says_how_it_was_made(path):
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    chip, filt = path.stem.split("-")[1:]
    assert meta["chip"] == chip and meta["filter"] == filt and shipped_model(chip, filt) == path
    assert path.stat().st_size < 1.5e6  # bytes: weights only, no optimizer state
    assert meta["outputs"] == "xy+flux+sigma" and meta["features"] == ["mag", "focus", "chip_x", "chip_y"]
    gen = meta["generalist"]
    assert "SIMULATIONS" in gen["label"] and gen["simulation"]["filter"] == filt
    assert gen["simulation"]["field_varying"] and gen["focus_range_um"] == [-10.0, 15.0]
    assert gen["catalog_central"] == 1.0 and meta["target"] == "exact"
    assert np.all(np.asarray(meta["calibration"]["scale"]) > 0)


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("generalist"), "true", catalog=True)


def test_shipped_wf3_model_centres_an_unseen_epoch(store, tiny_config):
    """The tiny store (true focus +5 um, no field variation, 3 exposures; stars and noise never
    seen): the shipped WF3 model, given each star's magnitude, place and the true focus, centres
    its bright stars near the Cramér–Rao regime and its sigma is of the errors' size."""
    ras = xr.open_zarr(store, group="rasters").sel(chip="WF3")
    m = ras["mask"].values
    mag = ras["mag"].values[m]
    pre = ras["prelim"].values[m]
    feats = np.c_[(mag + 8) / 2, np.full(mag.size, tiny_config.focus_um / 10), (pre - 399.5) / 399.5]
    out = centre(str(shipped_model("WF3", "F555W")), ras["raster"].values[m], feats, mag,
                 gain=C.GAIN[7]["WF3"])
    exact = ras["target_exact"].values[m]
    err = (out["xy"] - exact) * 1e3
    bright = np.isfinite(err).all(axis=1) & (mag < -9.0)  # > 28,000 DN e- at gain 7
    assert bright.sum() > 50
    robust = 1.4826 * np.median(np.abs(err[bright] - np.median(err[bright], axis=0)), axis=0)
    assert np.all(robust < 15.0), robust  # mpix
    ratio = np.median(out["sigma"][bright] * 1e3, axis=0) / robust
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
