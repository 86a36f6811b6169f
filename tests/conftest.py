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


#: CI sets STARCENTER_REQUIRE_SHARED=1 (.ci/run): there a missing shared/ file or sample
#: exposure fails the test instead of skipping it, so a check cannot silently stop running.
REQUIRE_SHARED = os.environ.get("STARCENTER_REQUIRE_SHARED", "") not in ("", "0")


def skip_or_fail(reason: str):
    """Skip (a developer's machine without the data) or, with STARCENTER_REQUIRE_SHARED=1, fail."""
    if REQUIRE_SHARED:
        pytest.fail(f"{reason} (STARCENTER_REQUIRE_SHARED=1: required here)", pytrace=False)
    pytest.skip(reason)


def shared_file(*parts) -> Path:
    """A file under shared/, or skip the test cleanly when it is absent (fail in CI)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        skip_or_fail(f"shared data not available: {p}")
    return p


def omega_cen_file() -> Path:
    """The REAL ω Cen exposure from the stsci.tools wheel (a test dependency), or skip/fail."""
    from starcenter.cubes.archive.wfpc2 import real_omega_cen_path
    from starcenter.cubes.errors import StarcenterError

    try:
        p = real_omega_cen_path()
    except StarcenterError as err:  # stsci.tools (the test extra) is not installed
        skip_or_fail(str(err))
    if not p.exists():
        skip_or_fail("stsci.tools wheel without its test data")
    return p


@pytest.fixture(scope="session")
def tiny_config():
    from starcenter.cubes.sim.simulate import make_config

    return make_config("demo", n_exposures=3, chips=("PC1", "WF3"), seed=7)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_config):
    """A 3-exposure PC1+WF3 simulated store, written with the synchronous scheduler."""
    from starcenter.cubes.sim.simulate import simulate

    path = tmp_path_factory.mktemp("stores") / "tiny.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, tiny_config, progress=False)
    return path


def derive_store(tiny_store, directory, psf: str = "library", catalog: bool = True):
    """A copy of the tiny store with detections (``psf`` ePSF) and, if asked, the catalog.

    Each (psf, catalog) is derived once per session, beside the tiny store, and copied into
    ``directory`` (the stages are deterministic, so a copy is what a fresh derivation writes; ten
    test modules share three derivations, ~1 min of the suite)."""
    import shutil

    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.stages.detections import detect

    name = f"{psf}{'-cat' if catalog else ''}.zarr"
    master = Path(tiny_store).parent / "derived" / name
    if not master.exists():
        work = master.with_name(master.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(tiny_store, work)
        with dask.config.set(scheduler="synchronous"):
            detect(work, DetectParams(psf), progress=False)
            if catalog:
                run_catalog(work, progress=False)
        work.rename(master)
    path = directory / name
    shutil.copytree(master, path)
    return path


def _fit_grid():
    from starcenter.cubes.params import PSFFitParams

    return PSFFitParams(grid_min=0.0, grid_max=10.0, grid_step=2.5, field="off")


#: The tiny store's PSF-epoch fit: a coarse 0 .. 10 um focus grid, one ePSF per chip.
FIT_GRID = _fit_grid()


@pytest.fixture(scope="session")
def fitted_store(tiny_store, tmp_path_factory):
    """The tiny store with each exposure's PSF epoch fitted (FIT_GRID) and its detections made
    with the fitted ePSF (no catalog). Tests that write to it work on a copy."""
    import shutil

    from starcenter.cubes import pipeline
    from starcenter.cubes.params import DetectParams

    path = tmp_path_factory.mktemp("psffit") / "fit.zarr"
    shutil.copytree(tiny_store, path)
    with dask.config.set(scheduler="synchronous"):
        pipeline.run(path, "psf", "detect", {"psf": {"kind": "fitted", "fit": FIT_GRID},
                                             "detect": {"params": DetectParams("fitted")}}, progress=False)
    return path
