"""The CTE correction: a copy of a store whose exposures are the images before WFPC2's readout.

Every (exposure, chip) image of ``store`` (calibrated DN, times the chip's gain: e-) goes through
:func:`starcenter.cubes.cte.correct` with the CTE of the exposure's date (its ``mjd``) and is
written, back in DN, to the same chunk of ``out``, whose other groups (psf, truth) and
coordinates are the source's. The source is never modified; ``out`` is stamped with the source and
the CTE model, so a rerun resumes it (done chunks are skipped) and a store made from something
else is refused. Run the rest of the pipeline (psf, detect, catalog, ...) on ``out``.

Caveats: the correction uses the model the simulator reads out with, so on a simulation it
removes what the simulation put in up to the inversion's few e- (an upper bound on what it can
do); on real WFPC2 data it is as good as the model's calibration on Dolphin's photometry, and it
takes read noise for charge (no noise mitigation). The dark current and the flat field are
folded in (e- = DN x gain).
"""

from __future__ import annotations

import json

import numpy as np

from starcenter.cubes import cte, driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError

PROVENANCE_KEY = "starcenter_cte_correction"
#: Groups copied unchanged from the source store (when it has them).
COPIED = (schema.PSF, schema.TRUTH)


def _provenance(source: str, iterations: int, trap_scale: float) -> str:
    return json.dumps({"source": source, "iterations": iterations, "trap_scale": trap_scale, "model": {
        "traps_per_row_1999": cte.TRAPS_PER_ROW_1999, "beta": cte.BETA, "tau_px": list(cte.TAU_PX),
        "share": list(cte.SHARE), "calibration_mjd": cte.CALIBRATION_MJD}}, sort_keys=True)


def _correct_chunk(source: str, out: str, e: int, c: int, gain: float, mjd: float, iterations: int,
                   trap_scale: float):
    import zarr

    src = zarr.open_group(source, mode="r")[schema.EXPOSURES]
    image = np.asarray(src["image"][e, c], float)
    corrected = cte.correct(image * gain, mjd, iterations, trap_scale) / gain
    dst = zarr.open_group(out, mode="r+")[schema.EXPOSURES]
    dst["image"][e, c] = corrected.astype(np.float32)
    if "dq" in src:  # an archive exposure without its data-quality file has none
        dst["dq"][e, c] = src["dq"][e, c]
    dst["done"][e, c] = 1  # last: the chunk counts only once its data are on disk
    return e, c


def _template(source: str, out: str) -> None:
    """The copied groups and the exposures' template (coordinates, attributes; no image yet)."""
    for group in COPIED:
        if st.has_group(source, group):  # streamed chunk by chunk, in the source's chunking
            ds = st.open_group(source, group)
            encoding = {v: {"chunks": ds[v].encoding["chunks"]} for v in ds.variables if "chunks" in ds[v].encoding}
            for v in ds.variables:
                ds[v].encoding = {}
            st.write_dataset(out, group, ds, encoding)
    ex = st.open_group(source, schema.EXPOSURES)
    encoding = {v: {"chunks": schema.chunk_shape(schema.EXPOSURES, v, dict(ex.sizes))}
                for v in ("image", "dq", "done") if v in ex}
    template = ex.assign(done=(ex["done"].dims, np.zeros(ex["done"].shape, ex["done"].dtype)))
    template = template.assign_coords({k: template[k].compute() for k in template.coords})  # written now
    template.attrs["cte_corrected"] = "see the root attribute " + PROVENANCE_KEY
    for v in template.variables:
        template[v].encoding = {}
    st.write_template(out, schema.EXPOSURES, template, encoding)


def correct_store(store, out, iterations: int = 3, trap_scale: float = 1.0, progress: bool = True) -> dict:
    """Write ``out``: ``store`` with its exposures corrected for CTE (see the module; ``iterations``
    and ``trap_scale`` as :func:`starcenter.cubes.cte.correct` takes them). Returns
    ``written`` and ``skipped`` chunks. Raises StoreMismatchError (nothing written) if ``store``
    has no complete exposures or ``out`` was made from something else."""
    source, path = st.store_path(store), st.store_path(out)
    if iterations < 1 or not 0 < trap_scale < 100:
        raise BadArgumentError(f"iterations must be >= 1 and trap_scale in (0, 100), got {iterations}, {trap_scale}")
    if source == path:
        raise BadArgumentError(f"{path}: the corrected store must be another store than its source")
    driver.require(source, schema.EXPOSURES)
    if not st.done_mask(source, schema.EXPOSURES).all():
        raise StoreMismatchError(source, "has exposures not yet written: finish simulate or ingest first")
    with st.locked(path, "cte"):
        return _write(source, path, iterations, float(trap_scale), progress)


def _write(source: str, path: str, iterations: int, trap_scale: float, progress: bool) -> dict:
    import dask

    resumed = st.init_store(path, PROVENANCE_KEY, _provenance(source, iterations, trap_scale))
    if not resumed:
        root = st.open_root(path, mode="r+")
        root.attrs.update({k: v for k, v in st.read_attrs(source).items() if k not in root.attrs})
    if not (resumed and st.has_group(path, schema.EXPOSURES)):
        _template(source, path)
    ex = st.open_group(source, schema.EXPOSURES)
    gain, mjd = ex["gain"].values.astype(float), ex["mjd"].values.astype(float)
    done = st.done_mask(path, schema.EXPOSURES)
    written = driver.run_chunks(path, schema.EXPOSURES, done, lambda e, c: dask.delayed(_correct_chunk, pure=True)(
        source, path, e, c, gain[c], mjd[e], iterations, trap_scale), f"cte {path}", progress)
    driver.finish(path, schema.EXPOSURES)
    return {"written": written, "skipped": int(done.sum())}
