"""Store helpers: creation and provenance, templates, progress output."""

import json

import dask
import numpy as np
import pytest

from starcenter.cubes import store as st
from starcenter.cubes.errors import StoreMismatchError


def test_init_store_refuses_other_parameters_and_touches_nothing(tmp_path):
    path = tmp_path / "s.zarr"
    assert st.init_store(path, "maker", json.dumps({"a": 1})) is False
    assert st.init_store(path, "maker", json.dumps({"a": 1})) is True  # a resume
    # a store left empty by an interrupted first run takes the corrected parameters
    assert st.init_store(path, "maker", json.dumps({"a": 3})) is False
    assert json.loads(st.read_attrs(path)["maker"]) == {"a": 3}
    st.open_root(path, "a").create_group("g")  # once a group is written, other parameters are refused
    before = (path / "zarr.json").read_bytes()
    with pytest.raises(StoreMismatchError, match="exists with other parameters: a 3 != 2"):
        st.init_store(path, "maker", json.dumps({"a": 2}))
    assert (path / "zarr.json").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(StoreMismatchError, match="not a starcenter store"):
        st.init_store(tmp_path / "other", "maker", "{}")


def test_progress_on_a_pipe_prints_start_and_end_only(capsys):
    tasks = [dask.delayed(lambda i: i * 2)(i) for i in range(5)]
    with dask.config.set(scheduler="synchronous"):
        out = st.run_tasks(tasks, "doubling", progress=True)
    assert list(out) == [0, 2, 4, 6, 8]
    text = capsys.readouterr().out
    assert text.startswith("doubling: 5 chunks") and "doubling: done in" in text
    assert "[#" not in text and len(text.splitlines()) == 2


def test_done_mask_and_attributes(tmp_path):
    import xarray as xr

    path = tmp_path / "d.zarr"
    st.init_store(path, "maker", "{}")
    ds = xr.Dataset({"done": (("exposure", "chip"), np.zeros((3, 2), np.uint8))}, attrs={"a": 1})
    st.write_dataset(path, "g", ds)
    st.open_root(path, "r+")["g/done"][1, 0] = 1
    assert st.done_mask(path, "g").tolist() == [[False, False], [True, False], [False, False]]
    st.add_variables(path, "g", xr.Dataset({"v": (("exposure",), np.arange(3.0))}))
    g = st.open_group(path, "g")
    assert g.attrs["a"] == 1 and "v" in g and "done" in g  # adding keeps attributes and variables
