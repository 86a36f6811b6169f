"""``starcenter fetch-mast``: calibrated WFPC2 exposures of a proposal from MAST (astroquery).

The query asks MAST for HST WFPC2 image observations of a proposal in a filter; of their products
only the calibrated science images and their data-quality companions are kept — the multi-extension
``c0m``/``c1m`` files, or the waivered ``c0f``/``c1f`` where MAST has no MEF version of an exposure.
Without network access it fails at once with a clear message (nothing is written).
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

from starcenter.cubes.errors import BadArgumentError, StarcenterError

MAST_HOST = ("mast.stsci.edu", 443)
#: productSubGroupDescription of the products kept, in order of preference per exposure.
MEF = ("C0M", "C1M")
WAIVERED = ("C0F", "C1F")


def query_criteria(proposal, filter_name: str) -> dict:
    """Keyword arguments of ``Observations.query_criteria`` for a WFPC2 proposal and filter."""
    try:
        pid = int(proposal)
    except (TypeError, ValueError):
        raise BadArgumentError(f"proposal must be a number, got {proposal!r}") from None
    if not filter_name:
        raise BadArgumentError("a filter is required (one store holds one filter)")
    return {"obs_collection": "HST", "instrument_name": ["WFPC2/PC", "WFPC2/WFC", "WFPC2"],
            "proposal_id": str(pid), "filters": filter_name.upper(), "dataproduct_type": "image"}


def select_products(products):
    """Rows of a MAST product list to download: c0m + c1m per exposure, else c0f + c1f."""
    desc = np.array([str(d).upper() for d in products["productSubGroupDescription"]])
    root = np.array([str(f).split("_")[0].lower() for f in products["productFilename"]])
    keep = np.zeros(len(products), bool)
    for r in np.unique(root):
        mine = root == r
        for science, dq in (MEF, WAIVERED):
            sel = mine & np.isin(desc, (science, dq))
            if science in desc[sel]:  # this layout's science file exists: take it and its dq
                keep |= sel
                break
    out = products[keep]
    out.sort("productFilename")
    return out


def check_online(timeout: float = 5.0):
    """Raise StarcenterError at once when MAST cannot be reached."""
    try:
        socket.create_connection(MAST_HOST, timeout=timeout).close()
    except OSError as err:
        raise StarcenterError(f"cannot reach MAST ({MAST_HOST[0]}:{MAST_HOST[1]}): {err}; "
                              "fetch-mast needs network access") from None


def fetch_mast(proposal, filter_name: str, outdir, timeout: float = 5.0) -> list[Path]:
    """Download the calibrated exposures of ``proposal`` in ``filter_name`` into ``outdir``."""
    criteria = query_criteria(proposal, filter_name)
    check_online(timeout)
    try:
        from astroquery.mast import Observations
    except ImportError as err:
        raise StarcenterError("astroquery is needed for fetch-mast: pip install astroquery") from err
    obs = Observations.query_criteria(**criteria)
    if len(obs) == 0:
        raise StarcenterError(f"MAST has no WFPC2 {criteria['filters']} images for proposal "
                              f"{criteria['proposal_id']}")
    products = select_products(Observations.get_product_list(obs))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest = Observations.download_products(products, download_dir=str(outdir), flat=True)
    return [Path(p) for p in manifest["Local Path"]]
