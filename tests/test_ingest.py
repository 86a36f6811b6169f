"""Real WFPC2 files in: the real ω Cen exposure, a cropped real c0f, the MEF layout written from
simulations (round trip pixel for pixel), and the bad-input suite."""

import shutil

import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from starcenter.cubes.archive.ingest import export_fits, ingest
from starcenter.cubes.archive.wfpc2 import read_exposure
from starcenter.cubes.errors import BadInputError

from .conftest import omega_cen_file, shared_file


@pytest.fixture(scope="module")
def omega_cen():
    return omega_cen_file()


def test_real_omega_cen_exposure(omega_cen, tmp_path):
    out = ingest(tmp_path / "real.zarr", [omega_cen], progress=False)
    assert out == {"ingested": 1, "skipped": 0, "errors": []}
    ex = xr.open_zarr(tmp_path / "real.zarr", group="exposures")
    assert ex["image"].shape == (1, 4, 800, 800) and list(ex.chip.values) == ["PC1", "WF2", "WF3", "WF4"]
    assert ex.attrs["filter"] == "F555W" and ex.attrs["source"] == "archive"
    assert float(ex.exptime[0]) == 100.0 and float(ex.epoch[0]) == pytest.approx(1997.448, abs=1e-3)
    assert ex.attrs["atodgain"] == 7 and float(ex.gain[2]) == 6.90
    assert str(ex.rootname.values[0]) == "u40x010hm"
    # the WF3 chip holds a crowded star field: many pixels far above the sky
    assert np.percentile(ex["image"].isel(exposure=0, chip=2).values, 99) > 100
    again = ingest(tmp_path / "real.zarr", [omega_cen], progress=False)
    assert again["skipped"] == 1 and "already in the store" in again["errors"][0]


def test_real_omega_cen_exposure_with_its_dq(omega_cen, tmp_path):
    """REAL DATA: the c0f with its c1f companion (../shared/data/real/u40x010hm_c1f.fits): the data
    quality is ingested, and its A/D-saturated pixels (bit 8) are bright ones on every chip."""
    c1f = shared_file("data", "real", "u40x010hm_c1f.fits")
    (tmp_path / "in").mkdir()
    shutil.copy(omega_cen, tmp_path / "in" / "u40x010hm_c0f.fits")
    shutil.copy(c1f, tmp_path / "in" / "u40x010hm_c1f.fits")
    out = ingest(tmp_path / "real.zarr", [tmp_path / "in" / "u40x010hm_c0f.fits"], progress=False)
    assert out["ingested"] == 1 and out["errors"] == []
    ex = xr.open_zarr(tmp_path / "real.zarr", group="exposures")
    dq = ex["dq"].values[0]
    image = ex["image"].values[0]
    for c in range(4):
        sat = (dq[c] & 8) > 0
        assert 50 < sat.sum() < 5000, (c, sat.sum())
        assert np.median(image[c][sat]) > 20 * np.median(image[c]) + 100


def test_cropped_real_c0f_reader():
    path = shared_file("data", "real", "WFPC2u5780205r_c0fx.fits")
    raw = read_exposure(path, shape=None)
    assert raw.image.shape == (4, 200, 200) and raw.filter == "FR533P15" and raw.exptime == 300.0
    with pytest.raises(BadInputError, match="expected \\(800, 800\\) for every chip"):
        read_exposure(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two simulated 4-chip exposures exported in the MEF archive layout."""
    from starcenter.cubes.sim.simulate import make_config, simulate

    d = tmp_path_factory.mktemp("mef")
    store = d / "sim.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(store, make_config("demo", n_exposures=2, chips=("PC1", "WF2", "WF3", "WF4"), seed=11),
                 progress=False)
    files = export_fits(store, d / "fits")
    return store, files


def test_mef_round_trip_is_lossless(exported, tmp_path):
    store, files = exported
    assert [f.name for f in files] == ["sim00000_c0m.fits", "sim00001_c0m.fits"]
    with fits.open(files[0]) as h:
        assert [x.name for x in h[1:]] == ["SCI"] * 4 and [x.header["DETECTOR"] for x in h[1:]] == [1, 2, 3, 4]
    out = ingest(tmp_path / "back.zarr", [files[0].parent], progress=False)
    assert out["ingested"] == 2
    a = xr.open_zarr(store, group="exposures")
    b = xr.open_zarr(tmp_path / "back.zarr", group="exposures")
    np.testing.assert_array_equal(a["image"].values, b["image"].values)
    np.testing.assert_array_equal(a["dq"].values, b["dq"].values)
    np.testing.assert_allclose(a["mjd"].values, b["mjd"].values)


def _write_variant(src, dst, edit):
    with fits.open(src) as h:
        h = fits.HDUList([x.copy() for x in h])
        edit(h)
        h.writeto(dst)
    return dst


@pytest.mark.parametrize("name, edit, problem", [
    ("acs", lambda h: h[0].header.__setitem__("INSTRUME", "ACS"), "not WFPC2"),
    ("nochip", lambda h: h.pop(3), "missing chip"),
    ("shape", lambda h: h.__setitem__(2, fits.ImageHDU(np.zeros((400, 400), np.float32),
                                                        header=h[2].header)), "expected (800, 800)"),
    ("nan", lambda h: h[4].data.__setitem__(slice(None), np.nan), "entirely NaN"),
    ("noexp", lambda h: h[0].header.remove("EXPTIME"), "EXPTIME missing"),
    ("exptype", lambda h: h[0].header.__setitem__("EXPTIME", "long"), "EXPTIME 'long' is not a number"),
    ("expneg", lambda h: h[0].header.__setitem__("EXPTIME", -5.0), "EXPTIME -5.0 is not > 0"),
    ("startnan", lambda h: h[0].header.__setitem__("EXPSTART", "soon"), "EXPSTART 'soon' is not a number"),
    ("gaintype", lambda h: h[0].header.__setitem__("ATODGAIN", "high"), "ATODGAIN 'high' is not a number"),
    ("dettype", lambda h: h[1].header.__setitem__("DETECTOR", "one"), "DETECTOR 'one' is not a chip number"),
    ("dettwice", lambda h: h[2].header.__setitem__("DETECTOR", 1), "missing chip"),
    ("noinst", lambda h: h[0].header.remove("INSTRUME"), "INSTRUME is 'missing'"),
    ("nofilter", lambda h: (h[0].header.remove("FILTNAM1"), h[0].header.remove("FILTNAM2")), "no filter"),
])
def test_bad_files_one_line_error_naming_the_file(exported, tmp_path, name, edit, problem):
    _, files = exported
    bad = _write_variant(files[0], tmp_path / f"{name}_c0m.fits", edit)
    with pytest.raises(BadInputError) as err:
        read_exposure(bad)
    msg = str(err.value)
    assert str(bad) in msg and problem in msg and "\n" not in msg


def test_truncated_and_corrupt_files(exported, tmp_path):
    _, files = exported
    data = files[0].read_bytes()
    (tmp_path / "trunc_c0m.fits").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk_c0m.fits").write_bytes(b"SIMPLE  = this is not fits" * 100)
    for f in ("trunc_c0m.fits", "junk_c0m.fits"):
        with pytest.raises(BadInputError, match="not a readable FITS"):
            read_exposure(tmp_path / f)


def test_naxis_lie_is_a_clear_error(exported, tmp_path):
    """A header that claims more pixels than the file holds (NAXIS lies) reads as truncated."""
    _, files = exported
    data = bytearray(files[0].read_bytes())
    i = data.index(b"NAXIS1  =", 2880)  # the first SCI extension
    data[i:i + 30] = b"NAXIS1  =                 1600"
    (tmp_path / "naxis_c0m.fits").write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="naxis_c0m.fits"):
        read_exposure(tmp_path / "naxis_c0m.fits")


def test_unreadable_geis_pair_and_empty_directory(tmp_path):
    (tmp_path / "u1234567r.c0h").write_text("SIMPLE  =                    T\nEND\n")
    with pytest.raises(BadInputError, match="without its data file"):
        read_exposure(tmp_path / "u1234567r.c0h")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no \\*_c0m.fits"):
        ingest(tmp_path / "s.zarr", [empty], progress=False)


def test_other_filter_refused_and_mid_run_error_keeps_what_was_ingested(exported, tmp_path):
    _, files = exported
    store = tmp_path / "s.zarr"
    good, second = files
    other = _write_variant(second, tmp_path / "f814_c0m.fits",
                           lambda h: h[0].header.__setitem__("FILTNAM1", "F814W"))
    with pytest.raises(BadInputError, match="mix filters"):
        ingest(store, [good, other], progress=False)
    assert not store.exists()  # refused before writing anything
    broken = tmp_path / "broken_c0m.fits"
    broken.write_bytes(second.read_bytes()[:5000])
    out = ingest(store, [good, broken], progress=False)
    assert out["ingested"] == 1 and len(out["errors"]) == 1 and "broken_c0m.fits" in out["errors"][0]
    assert xr.open_zarr(store, group="exposures")["done"].values.all()
    shutil.copy(second, broken)  # the user fixes the file; the rerun completes the store
    out = ingest(store, [good, broken], progress=False)
    assert out["ingested"] == 1 and out["skipped"] == 1
    assert xr.open_zarr(store, group="exposures").sizes["exposure"] == 2
    out = ingest(tmp_path / "sep.zarr", [good, other], separate_filters=True, progress=False)
    assert (tmp_path / "sep_F555W.zarr").exists() and (tmp_path / "sep_F814W.zarr").exists()


def test_detect_runs_on_an_ingested_real_store(omega_cen, tmp_path):
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.stages.detections import detect

    store = tmp_path / "real.zarr"
    ingest(store, [omega_cen], progress=False)
    with dask.config.set(scheduler="synchronous"):
        out = detect(store, DetectParams("library"), progress=False)
    counts = xr.open_zarr(store, group="detections")["count"].values[0]
    assert out["written"] == 4 and np.all(counts > 1000)


def test_geis_pair_round_trip_matches_the_simulator(exported, tmp_path):
    from starcenter.cubes.archive.wfpc2 import write_geis

    store, _ = exported
    ex = xr.open_zarr(store, group="exposures")
    prim = {"INSTRUME": "WFPC2", "ROOTNAME": "u9999999r", "FILTNAM1": "F555W", "FILTNAM2": "",
            "EXPTIME": float(ex.exptime[1]), "EXPSTART": float(ex.mjd[1]), "ATODGAIN": 7.0}
    groups = [{"DETECTOR": d} for d in (1, 2, 3, 4)]
    write_geis(tmp_path / "u9999999r.c0h", ex["image"].isel(exposure=1).values, prim, groups)
    write_geis(tmp_path / "u9999999r.c1h", ex["dq"].isel(exposure=1).values.astype(np.int16), prim, groups)
    out = ingest(tmp_path / "geis.zarr", [tmp_path], progress=False)
    assert out["ingested"] == 1, out
    back = xr.open_zarr(tmp_path / "geis.zarr", group="exposures")
    np.testing.assert_array_equal(back["image"].isel(exposure=0).values, ex["image"].isel(exposure=1).values)
    np.testing.assert_array_equal(back["dq"].isel(exposure=0).values, ex["dq"].isel(exposure=1).values)
    assert str(back.rootname.values[0]) == "u9999999r"
    # a GEIS data file shorter than its header promises is a clear error
    d = tmp_path / "u9999999r.c0d"
    d.write_bytes(d.read_bytes()[:1000])
    with pytest.raises(BadInputError, match="promises"):
        read_exposure(tmp_path / "u9999999r.c0h")


def test_geis_pairs_that_disagree_are_refused(exported, tmp_path):
    """A GEIS image whose data-quality companion has another shape, or other chips, is refused."""
    from starcenter.cubes.archive.wfpc2 import write_geis

    store, _ = exported
    ex = xr.open_zarr(store, group="exposures")
    prim = {"INSTRUME": "WFPC2", "ROOTNAME": "u8888888r", "FILTNAM1": "F555W", "FILTNAM2": "",
            "EXPTIME": 10.0, "EXPSTART": 50000.0, "ATODGAIN": 7.0}
    groups = [{"DETECTOR": d} for d in (1, 2, 3, 4)]
    write_geis(tmp_path / "u8888888r.c0h", ex["image"].isel(exposure=0).values, prim, groups)
    dq = ex["dq"].isel(exposure=0).values.astype(np.int16)
    write_geis(tmp_path / "u8888888r.c1h", dq[:, :400, :400].copy(), prim, groups)
    with pytest.raises(BadInputError, match="data-quality shape"):
        read_exposure(tmp_path / "u8888888r.c0h")
    write_geis(tmp_path / "u8888888r.c1h", dq, prim, [{"DETECTOR": d} for d in (1, 2, 3, 3)])
    with pytest.raises(BadInputError, match="data-quality file has DETECTOR"):
        read_exposure(tmp_path / "u8888888r.c0h")


def test_rerun_refills_a_slot_left_unfinished(exported, tmp_path):
    """A driver killed between growing the cube and writing an exposure's pixels leaves a slot
    with done = 0: the rerun writes that slot (no duplicate slot) and skips the finished one."""
    import zarr

    _, files = exported
    store = tmp_path / "s.zarr"
    ingest(store, files, progress=False)
    before = xr.open_zarr(store, group="exposures")["image"].values
    g = zarr.open_group(str(store), mode="r+")["exposures"]
    g["done"][1] = 0
    g["image"][1] = 0.0  # pixels never written
    out = ingest(store, files, progress=False)
    ex = xr.open_zarr(store, group="exposures")
    assert out["ingested"] == 1 and out["skipped"] == 1 and ex.sizes["exposure"] == 2
    assert ex["done"].values.all()
    np.testing.assert_array_equal(ex["image"].values, before)


def test_random_header_edits_read_or_fail_cleanly(exported, tmp_path):
    """Property (Hypothesis): any keyword of the primary or a SCI header set to any value, or
    removed, gives either a valid exposure (finite header facts, 4 chips) or a BadInputError
    naming the file, never another exception."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as S

    _, files = exported
    with fits.open(files[0]) as h:
        pristine = fits.HDUList([x.copy() for x in h])
    keys = ["INSTRUME", "EXPTIME", "EXPSTART", "ATODGAIN", "FILTNAM1", "FILTNAM2", "ROOTNAME", "DETECTOR"]
    values = S.one_of(S.none(), S.integers(-10**6, 10**6), S.floats(allow_nan=True, allow_infinity=True),
                      S.text(alphabet=S.characters(min_codepoint=32, max_codepoint=126), max_size=12),
                      S.booleans())
    target = tmp_path / "edit_c0m.fits"

    @settings(max_examples=30, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(S.integers(0, 4), S.sampled_from(keys), values)
    def check(ext, key, value):
        h = fits.HDUList([x.copy() for x in pristine])
        hdr = h[ext].header
        if value is None:
            hdr.remove(key, ignore_missing=True)
        elif isinstance(value, float) and not np.isfinite(value):
            hdr[key] = str(value)  # FITS headers cannot hold NaN/inf: written as text
        else:
            hdr[key] = value
        h.writeto(target, overwrite=True)
        try:
            raw = read_exposure(target)
        except BadInputError as err:
            assert str(target) in str(err) and "\n" not in str(err)
            return
        assert np.isfinite([raw.exptime, raw.mjd]).all() and raw.exptime > 0
        assert raw.image.shape == (4, 800, 800) and raw.atodgain in (7, 15)

    check()
