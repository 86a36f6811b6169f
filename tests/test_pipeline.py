"""The pipeline driver: stages in one ordered table, run in order, resumed, refused cleanly."""

import shutil

import dask
import pytest

from starcenter.cubes import pipeline, schema
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError


def test_each_stage_reads_what_an_earlier_stage_writes():
    made = set()
    for s in pipeline.STAGES:
        if s.name not in pipeline.SOURCES:
            missing = set(s.reads) - made
            assert not missing, f"{s.name} reads {missing}, which no earlier stage writes"
        made |= set(s.writes)
        assert callable(s.load()), s.function


def test_run_detect_to_rasters_then_resume(tiny_store, tmp_path):
    path = tmp_path / "p.zarr"
    shutil.copytree(tiny_store, path)
    with dask.config.set(scheduler="synchronous"):
        out = pipeline.run(path, progress=False)
        assert list(out) == ["detect", "transforms", "catalog", "rasters"]
        assert out["detect"]["written"] == 6 and out["rasters"]["mask"].sum() > 100
        again = pipeline.run(path, until="detect", progress=False)
    assert again["detect"]["written"] == 0 and again["detect"]["skipped"] == 6
    assert not (tmp_path / "p.zarr.lock").exists()


def test_missing_input_is_one_clear_error_before_any_side_effect(tiny_store, tmp_path):
    path = tmp_path / "q.zarr"
    shutil.copytree(tiny_store, path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(StoreMismatchError, match=r"has no 'detections' group: run `starcenter detect` first"):
        pipeline.run(path, start="transforms", progress=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no lock, nothing
    with pytest.raises(StoreMismatchError, match="has no 'exposures' group"):
        pipeline.run(tmp_path / "nothing.zarr", progress=False)
    assert not (tmp_path / "nothing.zarr").exists() and not (tmp_path / "nothing.zarr.lock").exists()


def test_bad_stage_names_and_order():
    with pytest.raises(BadArgumentError, match="unknown stage 'detections'"):
        pipeline.run("x.zarr", start="detections")
    with pytest.raises(BadArgumentError, match="comes before"):
        pipeline.run("x.zarr", start="rasters", until="detect")


def test_a_held_lock_refuses_the_run(tiny_store, tmp_path):
    import os
    import socket

    path = tmp_path / "l.zarr"
    shutil.copytree(tiny_store, path)
    (tmp_path / "l.zarr.lock").write_text(f"{os.getppid()} {socket.gethostname()} starcenter detect")
    with pytest.raises(StoreMismatchError, match="is being written by `starcenter detect`"):
        pipeline.run(path, progress=False)
    from starcenter.cubes.stages.detections import detect

    with pytest.raises(StoreMismatchError, match="is being written"):  # a stage called directly
        detect(path, progress=False)
    assert not (path / schema.DETECTIONS).exists()


def test_psf_stage_follows_detect_parameters():
    from starcenter.cubes.params import DetectParams

    p = pipeline._psf_from_detect({"detect": {"params": DetectParams("catalog"), "rebuild_psf": True}},
                                  ["psf", "detect"])
    assert p["psf"] == {"kind": "catalog", "rebuild": True} and "rebuild_psf" not in p["detect"]
