"""Small synthetic images with exact truth, for fitter tests, and the benchmarks as modules (not
fixtures: plain functions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from starcenter.cubes.sim.detector import render_stars

GAIN, READ_NOISE, SKY_E = 7.0, 5.2, 10.0


def star_grid(epsf, n: int = 20, spacing: int = 16, flux=(2e4, 8e4), seed: int = 0):
    """An image (DN) of n x n isolated stars on a grid with uniformly random sub-pixel phases.

    Returns (image DN, x true, y true, flux e-, expected e- image)."""
    rng = np.random.default_rng(seed)
    g = np.arange(n) * spacing + 10
    X, Y = np.meshgrid(g, g)
    x0 = X.ravel() + rng.uniform(-0.5, 0.5, n * n)
    y0 = Y.ravel() + rng.uniform(-0.5, 0.5, n * n)
    f = rng.uniform(*flux, n * n)
    expected = render_stars((n * spacing + 10,) * 2, x0, y0, f, epsf) + SKY_E
    img = (rng.poisson(expected) + rng.normal(0, READ_NOISE, expected.shape)) / GAIN
    return img, x0, y0, f, expected


def benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module (its helpers, without running it)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
