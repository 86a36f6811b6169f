"""The schema is the whole API: every group a stage writes matches its spec."""

import json

import numpy as np
import pytest
import xarray as xr

from starcenter.cubes import params as P
from starcenter.cubes import schema

from .conftest import derive_store


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("schema"), "library", catalog=True)


@pytest.mark.parametrize("group", [schema.EXPOSURES, schema.TRUTH, schema.PSF, schema.DETECTIONS,
                                   schema.TRANSFORMS, schema.CATALOG, schema.RASTERS])
def test_every_written_variable_is_in_its_spec(store, group):
    ds = xr.open_zarr(store, group=group)
    spec = schema.spec(group)
    for name, var in ds.data_vars.items():
        assert name in spec.variables, f"{group}/{name} is not in schema.SPECS"
        v = spec.variables[name]
        assert var.dims == v.dims, (group, name)
        assert np.dtype(var.dtype) == np.dtype(v.dtype), (group, name, var.dtype)
        if v.units:
            assert var.attrs.get("units") == v.units, (group, name)
    for d in ds.dims:
        assert d in schema.DIMS, f"dimension {d!r} of {group} is not named in the schema"


def test_chunks_are_the_specs(store):
    ex = xr.open_zarr(store, group="exposures")
    assert ex["image"].encoding["chunks"] == (1, 1, 800, 800)
    det = xr.open_zarr(store, group="detections")
    assert det["x"].encoding["chunks"][:2] == (1, 1)
    cat = xr.open_zarr(store, group="catalog")
    assert cat["measures"].encoding["chunks"][:2] == (1, 1)


def test_fill_values_make_unwritten_chunks_nan(tmp_path):
    from starcenter.cubes import store as st

    ds, enc = schema.template(schema.DETECTIONS, ("x", "flags", "count", "done"),
                              {"exposure": 2, "chip": 1, "det": 5}, {}, {})
    assert enc == {"x": {"fill_value": schema.NAN}}
    path = tmp_path / "t.zarr"
    st.init_store(path, "test", "{}")
    st.write_template(path, schema.DETECTIONS, ds, enc)
    back = xr.open_zarr(path, group=schema.DETECTIONS)
    assert np.isnan(back["x"].values).all() and (back["flags"].values == 0).all()
    assert back["x"].encoding["chunks"] == (1, 1, 5)


def test_params_round_trip_through_the_group(store):
    det = xr.open_zarr(store, group="detections")
    p = schema.read_params(det, P.DetectParams)
    assert p == P.DetectParams("library") and json.loads(det.attrs["params"])["psf"] == "library"
    spec = schema.spec(schema.DETECTIONS)
    assert getattr(P, spec.params) is P.DetectParams
    assert schema.spec("centers/anything") is schema.SPECS[schema.CENTERS]


def test_every_spec_names_its_maker_and_known_dims():
    dims = set(schema.DIMS)
    for name, spec in schema.SPECS.items():
        assert spec.name == name and spec.made_by.startswith("`starcenter ")
        for var in spec.variables.values():
            assert set(var.dims) <= dims, (name, var.dims)
        assert set(spec.chunks) <= dims
        assert spec.params is None or hasattr(P, spec.params)
