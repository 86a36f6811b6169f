"""fetch-mast: query construction and product selection (against a hand-made response in the
MAST product-list schema; no network here), and the immediate offline failure."""

import socket
from pathlib import Path

import pytest
from astropy.table import Table

from starcenter.cubes.archive.mast import fetch_mast, query_criteria, select_products
from starcenter.cubes.errors import BadArgumentError, StarcenterError

DATA = Path(__file__).parent / "data" / "mast_products_wfpc2.ecsv"


def test_query_criteria():
    q = query_criteria(8267, "f555w")
    assert q["proposal_id"] == "8267" and q["filters"] == "F555W" and q["obs_collection"] == "HST"
    assert "WFPC2/PC" in q["instrument_name"] and q["dataproduct_type"] == "image"
    with pytest.raises(BadArgumentError, match="proposal"):
        query_criteria("gilliland", "F555W")


def test_product_selection_prefers_mef_and_keeps_dq():
    products = Table.read(DATA, format="ascii.ecsv")
    sel = select_products(products)
    assert list(sel["productFilename"]) == ["u5jx0101r_c0m.fits", "u5jx0101r_c1m.fits",
                                            "u5jx0102r_c0f.fits", "u5jx0102r_c1f.fits"]


def test_offline_fails_at_once_with_a_clear_message(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(StarcenterError, match="cannot reach MAST"):
        fetch_mast(8267, "F555W", tmp_path / "out")
    assert not (tmp_path / "out").exists()
