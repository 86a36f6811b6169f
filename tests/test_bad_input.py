"""Bad input never leaves a trace: every bad invocation is one line, exit status 2, nothing on
disk changed (issue #16). Run in-process through ``starcenter.cli.main``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from starcenter import cli


def run(argv):
    """(exit status, stdout, stderr) of the command line, in this process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as stop:
            rc = stop.code
    return rc, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in root.rglob("*")}


@pytest.fixture
def place(tmp_path):
    """A scratch folder with a regular file, a fake model whose metadata lies, and a store."""
    (tmp_path / "file.txt").write_text("not a store")
    model = tmp_path / "m.keras"
    model.write_bytes(b"PK\x03\x04 not really a keras file")
    Path(str(model) + ".json").write_text(json.dumps({"chip": "XX9", "raster_size": 6}))
    sized = tmp_path / "s.keras"
    sized.write_bytes(b"PK")
    Path(str(sized) + ".json").write_text(json.dumps({"chip": "WF3", "raster_size": "six"}))
    (tmp_path / "empty.zarr").mkdir()
    (tmp_path / "empty.zarr" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"schema_version": "1"}}))
    return tmp_path


S = "simulate"
#: (arguments, what the one-line message must say). {t} is the scratch folder.
BAD = [
    ([S, "{t}/a.zarr", "--seed", "-5"], "argument --seed: expected an integer in 0..4294967295"),
    ([S, "{t}/a.zarr", "--seed", "abc"], "argument --seed"),
    ([S, "{t}/a.zarr", "--seed", "1.5"], "argument --seed"),
    ([S, "{t}/a.zarr", "--exposures", "1"], "argument --exposures: expected an integer in 2..100000"),
    ([S, "{t}/a.zarr", "--exposures", "0"], "argument --exposures"),
    ([S, "{t}/a.zarr", "--exposures", "-3"], "argument --exposures"),
    ([S, "{t}/a.zarr", "--exposures", "10000000000"], "argument --exposures"),
    ([S, "{t}/a.zarr", "--focus-um", "nan"], "argument --focus-um: expected a focus in um"),
    ([S, "{t}/a.zarr", "--focus-um", "5:2"], "expected a focus in um (-100..100), a range LO:HI"),
    ([S, "{t}/a.zarr", "--focus-um", "1:2:3"], "argument --focus-um: expected a focus"),
    ([S, "{t}/a.zarr", "--focus-um", "1,,2"], "argument --focus-um: expected a focus"),
    ([S, "{t}/a.zarr", "--focus-um", "inf"], "argument --focus-um"),
    ([S, "{t}/a.zarr", "--focus-um", "-inf"], "argument --focus-um"),
    ([S, "{t}/a.zarr", "--focus-um", "1e9"], "argument --focus-um"),
    ([S, "{t}/a.zarr", "--breathing-um", "-1"], "argument --breathing-um"),
    ([S, "{t}/a.zarr", "--breathing-um", "nan"], "argument --breathing-um"),
    ([S, "{t}/a.zarr", "--chips", "PC1,XX9"], "argument --chips"),
    ([S, "{t}/a.zarr", "--chips", ""], "argument --chips"),
    ([S, "{t}/a.zarr", "--chips", "PC1,pc1"], "argument --chips"),
    ([S, "{t}/a.zarr", "--chips", "ПК1"], "argument --chips"),
    ([S, "{t}/a.zarr", "--filter", "F439W"], "argument --filter"),
    ([S, "{t}/a.zarr", "--filter", ""], "argument --filter"),
    ([S, "{t}/a.zarr", "--preset", "nope"], "argument --preset"),
    ([S, "{t}/a.zarr", "--workers", "0"], "argument --workers: expected an integer in 1..1024"),
    ([S, "{t}/a.zarr", "--workers", "-1"], "argument --workers"),
    ([S, "{t}/a.zarr", "--threads", "0"], "argument --threads"),
    ([S, "{t}/a.zarr", "--memory-limit", "lots"], "argument --memory-limit"),
    ([S, "{t}/a.zarr", "--memory-limit", "-3GiB"], "argument --memory-limit"),
    ([S, "{t}/a.zarr", "--scheduler", "tcp://127.0.0.1:9"], "no dask scheduler answers"),
    ([S, "{t}/a.zarr", "--scheduler", "nonsense"], "argument --scheduler"),
    ([S, "{t}/a.zarr", "--dashboard-address", "foo"], "argument --dashboard-address"),
    ([S, "{t}/file.txt"], "is a file, not a store"),
    ([S, ""], "expected a store path"),
    ([S], "the following arguments are required: store"),
    (["ingest", "{t}/a.zarr", "{t}/nothing-here"], "no such file or directory"),
    (["ingest", "{t}/file.txt", "{t}"], "is a file, not a store"),
    (["detect", "{t}/nothing.zarr"], "no starcenter store there"),
    (["detect", "{t}/empty.zarr"], "has no 'exposures' group"),
    (["detect", "{t}/empty.zarr", "--threshold", "0"], "argument --threshold: expected a finite number > 0"),
    (["detect", "{t}/empty.zarr", "--threshold", "nan"], "argument --threshold"),
    (["detect", "{t}/empty.zarr", "--threshold", "-2"], "argument --threshold"),
    (["detect", "{t}/empty.zarr", "--min-separation", "-1"], "argument --min-separation"),
    (["detect", "{t}/empty.zarr", "--neighbour-passes", "9"], "argument --neighbour-passes"),
    (["detect", "{t}/empty.zarr", "--neighbour-passes", "-1"], "argument --neighbour-passes"),
    (["detect", "{t}/empty.zarr", "--psf", "nope"], "argument --psf"),
    (["detect", "{t}/empty.zarr", "--library", "{t}/none.fits"], "argument --library: expected an existing file"),
    (["detect", "{t}/empty.zarr", "--psf", "true", "--library", "{t}/file.txt"], "does not go with --psf true"),
    (["detect", "{t}/empty.zarr", "--psf", "fitted"], "has no 'exposures' group"),
    (["psf", "{t}/empty.zarr"], "has no 'exposures' group: run `starcenter simulate` or `starcenter ingest` first"),
    (["psf", "{t}/empty.zarr", "--fit", "coma"], "argument --fit"),
    (["psf", "{t}/empty.zarr", "--min-stars", "2"], "argument --min-stars"),
    (["psf", "{t}/empty.zarr", "--min-stars", "50", "--max-stars", "10"], "min_stars <= max_stars"),
    (["psf", "{t}/empty.zarr", "--min-snr", "0"], "argument --min-snr"),
    (["psf", "{t}/nothing.zarr"], "no starcenter store there"),
    (["simulate", "{t}/a.zarr", "--like", "{t}/empty.zarr"], "has no exposures group: --like mirrors a store"),
    (["simulate", "{t}/a.zarr", "--like", "{t}/nothing.zarr"], "argument --like"),
    (["simulate", "{t}/a.zarr", "--like", "{t}/empty.zarr", "--chips", "PC1"], "drop --chips"),
    (["catalog", "{t}/empty.zarr"], "has no 'detections' group: run `starcenter detect` first"),
    (["catalog", "{t}/empty.zarr", "--reference", "-1"], "argument --reference"),
    (["catalog", "{t}/empty.zarr", "--raster-size", "2"], "argument --raster-size"),
    (["catalog", "{t}/empty.zarr", "--raster-size", "40"], "argument --raster-size"),
    (["catalog", "{t}/empty.zarr", "--max-stack-residual", "-0.1"], "argument --max-stack-residual"),
    (["catalog", "{t}/empty.zarr", "--max-stack-residual", "nan"], "argument --max-stack-residual"),
    (["catalog", "{t}/empty.zarr", "--from-centers", "../x"], "argument --from-centers"),
    (["catalog", "{t}/empty.zarr", "--from-centers", "vgg6"], "has no 'catalog' group"),
    (["catalog", "{t}/empty.zarr", "--weights", "sigma"], "argument --weights"),
    (["train", "{t}/empty.zarr", "--chip", "WF3", "--features", "mag,colour", "--out", "{t}/m2.keras"],
     "argument --features"),
    (["train", "{t}/empty.zarr", "--chip", "WF3", "--features", "mag,mag", "--out", "{t}/m2.keras"],
     "argument --features"),
    (["train", "{t}/empty.zarr", "--chip", "XX", "--out", "{t}/m2.keras"], "argument --chip"),
    (["train", "{t}/empty.zarr", "--chip", "WF3", "--epochs", "0", "--out", "{t}/m2.keras"], "argument --epochs"),
    (["train", "{t}/empty.zarr", "--chip", "WF3", "--arch", "v9", "--out", "{t}/m2.keras"], "argument --arch"),
    (["train", "{t}/empty.zarr", "--chip", "WF3", "--out", "{t}/no/such/dir/m.keras"], "argument --out"),
    (["train", "{t}/empty.zarr", "--chip", "WF3", "--out", "{t}/m2.keras"], "has no rasters: run `starcenter catalog` first"),
    (["train", "{t}/nothing.zarr", "--chip", "WF3", "--out", "{t}/m2.keras"], "no starcenter store there"),
    (["predict", "{t}/empty.zarr", "--model", "{t}/none.keras"], "no such model file"),
    (["predict", "{t}/empty.zarr", "--model", "{t}/m.keras"], "not starcenter model metadata"),
    (["predict", "{t}/empty.zarr", "--model", "{t}/s.keras"], "not starcenter model metadata"),
    (["predict", "{t}/empty.zarr", "--model", "{t}/file.txt"], "no metadata file"),
    (["predict", "{t}/empty.zarr", "--name", "", "--model", "{t}/m.keras"], "argument --name"),
    (["demo", "{t}/d", "--exposures", "1"], "argument --exposures"),
    (["demo", "{t}/file.txt"], "argument outdir"),
    (["demo", "{t}/d", "--epochs", "-1"], "argument --epochs"),
    (["evaluate", "{t}/empty.zarr", "--report", "{t}/file.txt"], "argument --report"),
    (["evaluate", "{t}/nothing.zarr", "--report", "{t}/r"], "no starcenter store there"),
    (["sweep-raster-size", "{t}/empty.zarr", "--chip", "WF3", "--sizes", "2,3"], "argument --sizes"),
    (["sweep-raster-size", "{t}/empty.zarr", "--chip", "WF3", "--sizes", "abc"], "argument --sizes"),
    (["fetch-mast", "{t}/f", "--proposal", "-1", "--filter", "F555W"], "argument --proposal"),
    (["fetch-mast", "{t}/f", "--proposal", "8267", "--filter", "XX"], "argument --filter"),
    (["export-fits", "{t}/empty.zarr", "{t}/file.txt"], "argument outdir"),
    (["export-fits", "{t}/nothing.zarr", "{t}/out"], "no starcenter store there"),
    (["nosuchcommand"], "argument command: invalid choice"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a[:1] + a[2:])[:60] for a, _ in BAD])
def test_bad_invocation_is_one_line_exit_2_and_leaves_no_trace(place, argv, message):
    before = snapshot(place)
    rc, out, err = run([a.format(t=place) for a in argv])
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0] and lines[0].startswith("starcenter"), lines[0]
    assert "dask dashboard" not in out  # refused before any cluster started
    assert snapshot(place) == before


def test_read_only_folder_is_refused_before_writing(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, err = run(["simulate", ro / "s.zarr", "--exposures", "2", "--scheduler", "synchronous"])
        assert rc == 2 and "not writable" in err and not (ro / "s.zarr").exists()
    finally:
        ro.chmod(0o755)


def test_a_model_file_that_lies_is_refused_before_anything_is_written(tiny_store, tmp_path):
    """A real network for 7x7 rasters whose metadata claims 6x6 (edited by hand), and a file that
    is not a Keras model at all: predict refuses both in one line, and writes no centers group."""
    from starcenter.model.architectures import build

    from .conftest import derive_store

    store = derive_store(tiny_store, tmp_path, "true", catalog=True)
    lying = tmp_path / "lying.keras"
    build("v1", 7).save(lying)
    Path(str(lying) + ".json").write_text(json.dumps({"chip": "WF3", "raster_size": 6, "filter": "F555W"}))
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not a zip at all")
    Path(str(junk) + ".json").write_text(json.dumps({"chip": "WF3", "raster_size": 6}))
    before = snapshot(tmp_path)
    for model, message in ((lying, "the network reads 7x7 rasters but its metadata says 6"),
                           (junk, "not a loadable Keras model")):
        rc, out, err = run(["predict", store, "--model", model, "--scheduler", "synchronous"])
        assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert snapshot(tmp_path) == before and not (Path(store) / "centers").exists()


def test_a_deleted_group_is_named_with_the_command_that_makes_it(tiny_store, tmp_path):
    import shutil

    from .conftest import derive_store

    store = derive_store(tiny_store, tmp_path, "library", catalog=False)
    shutil.rmtree(Path(store) / "exposures")
    rc, _, err = run(["detect", store, "--scheduler", "synchronous", "--overwrite"])
    assert rc == 2 and "has no 'exposures' group: run `starcenter simulate` or `starcenter ingest` first" in err
