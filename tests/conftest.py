"""Shared fixtures: a private ePSF cache, the shared/ folder, tiny deterministic stores."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STARCENTER_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def _epsf_cache(tmp_path_factory):
    """Tests compute their ePSFs into a private cache (hermetic; ~0.3 s per ePSF)."""
    old = os.environ.get("STARCENTER_CACHE")
    os.environ["STARCENTER_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("STARCENTER_CACHE", None)
    else:
        os.environ["STARCENTER_CACHE"] = old


def shared_file(*parts) -> Path:
    """A file under shared/, or skip the test cleanly when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture(scope="session")
def tiny_config():
    from cubes.simulate import make_config

    return make_config("demo", n_exposures=3, chips=("PC1", "WF3"), seed=7)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_config):
    """A 3-exposure PC1+WF3 simulated store, written with the synchronous scheduler."""
    from cubes.simulate import simulate

    path = tmp_path_factory.mktemp("stores") / "tiny.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, tiny_config, progress=False)
    return path


def derive_store(tiny_store, directory, psf: str = "library", catalog: bool = True):
    """A copy of the tiny store with detections (``psf`` ePSF) and, if asked, the catalog."""
    import shutil

    from cubes.detections import DetectParams, detect
    from cubes.pipeline import run_catalog

    path = directory / f"{psf}{'-cat' if catalog else ''}.zarr"
    shutil.copytree(tiny_store, path)
    with dask.config.set(scheduler="synchronous"):
        detect(path, DetectParams(psf), progress=False)
        if catalog:
            run_catalog(path, progress=False)
    return path
