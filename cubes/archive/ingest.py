"""The ingest stage: real WFPC2 exposures (:mod:`starcenter.cubes.archive.wfpc2`) into the
exposures cube, and the cube back out as archive-layout FITS (:func:`export_fits`).

Ingest runs in two passes of dask tasks (one per file, on the cluster when one is active), so no
more than one exposure per worker is ever in memory: the first reads and checks every file
completely and keeps only its header facts and checksum; then the driver grows the cube by one
slot per new exposure and records its metadata; the second pass re-reads each file, checks its
checksum again and writes its pixels into its slot, setting the slot's ``done`` marker last.
An error met mid-run leaves the exposures already ingested intact and readable; a rerun skips
files whose checksum is in the store and done, and refills a slot left unfinished.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.archive.wfpc2 import RawExposure, discover, read_exposure
from starcenter.cubes.errors import BadInputError, StarcenterError

PROVENANCE_KEY = "starcenter_ingest"


def _exposures_template(store, filt: str, atodgain: int):
    """An empty exposures cube (four chips, no exposure yet) that ingest grows slot by slot."""
    n = C.CHIP_SIZE
    chips = list(C.CHIPS)
    names = ("image", "dq", "done")
    sizes = {schema.EXPOSURE: 0, schema.CHIP: len(chips), schema.Y: n, schema.X: n}
    empty = {k: np.zeros([sizes[d] for d in schema.SPECS[schema.EXPOSURES].variables[k].dims]) for k in names}
    text = np.array([], dtype=np.dtypes.StringDType())
    coords = {schema.EXPOSURE: np.zeros(0, np.int64), schema.CHIP: np.array(chips, dtype=object),
              "rootname": (schema.EXPOSURE, text), "exptime": (schema.EXPOSURE, np.zeros(0), {"units": "s"}),
              "mjd": (schema.EXPOSURE, np.zeros(0), {"units": "d", "long_name": "EXPSTART"}),
              "epoch": (schema.EXPOSURE, np.zeros(0), {"units": "yr"}), "source_path": (schema.EXPOSURE, text),
              "checksum": (schema.EXPOSURE, text, {"description": "sha256 of the c0 file"}),
              "gain": (schema.CHIP, np.array([C.GAIN[atodgain][c] for c in chips]), {"units": "e-/DN"}),
              "read_noise": (schema.CHIP, np.array([C.READ_NOISE[atodgain][c] for c in chips]), {"units": "e-"}),
              "pixel_scale": (schema.CHIP, np.array([C.PIXEL_SCALE[c] for c in chips]), {"units": "arcsec/px"})}
    ds, _ = schema.template(schema.EXPOSURES, names, sizes, coords, {
        "filter": filt, "atodgain": atodgain, "source": "archive", "instrument": "WFPC2",
        "pixel_convention": schema.PIXEL_CONVENTION, "saturation_dn": C.AD_SATURATION_DN}, values=empty)
    ds["dq"].attrs.update(flag_masks=list(C.DQ_FLAGS.values()), flag_meanings=" ".join(C.DQ_FLAGS))
    enc = {k: {"chunks": schema.chunk_shape(schema.EXPOSURES, k, sizes)} for k in names}
    st.write_dataset(store, schema.EXPOSURES, ds, enc)


def _validated(path) -> RawExposure | str:
    """Pass 1 task: read and check ``path`` completely; header facts and checksum only (the
    pixels are dropped), or the one-line error naming the file."""
    try:
        raw = read_exposure(path)
    except BadInputError as err:
        return str(err)
    raw.image = raw.dq = None
    return raw


def _allocate(store, raws: list[RawExposure]) -> list[int]:
    """Grow the cube by one slot per exposure (done = 0) and write its metadata; returns slots."""
    import zarr
    from astropy.time import Time

    # not through the consolidated metadata: it would still show the shapes before the resize
    g = zarr.open_group(st.store_path(store), mode="r+", use_consolidated=False)[schema.EXPOSURES]
    n0 = g["image"].shape[0]
    n1 = n0 + len(raws)
    for name in g.array_keys():
        arr = g[name]
        if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == schema.EXPOSURE:
            arr.resize((n1,) + arr.shape[1:])
    sl = slice(n0, n1)
    mjd = np.array([r.mjd for r in raws])
    g[schema.EXPOSURE][sl] = np.arange(n0, n1)
    g["rootname"][sl] = np.array([r.rootname for r in raws], dtype=object)
    g["exptime"][sl] = np.array([r.exptime for r in raws])
    g["mjd"][sl] = mjd
    g["epoch"][sl] = Time(mjd, format="mjd").decimalyear
    g["source_path"][sl] = np.array([r.path for r in raws], dtype=object)
    g["checksum"][sl] = np.array([r.checksum for r in raws], dtype=object)
    g["done"][sl] = np.zeros((len(raws), g["done"].shape[1]), np.uint8)
    st.consolidate(store)
    return list(range(n0, n1))


def _fill(store: str, slot: int, path: str, checksum: str) -> str | None:
    """Pass 2 task: read ``path`` again and write its pixels into ``slot``; done marker last.
    Returns an error line if the file changed since pass 1 (the slot stays unfinished)."""
    import zarr

    try:
        raw = read_exposure(path)
    except BadInputError as err:
        return str(err)
    if raw.checksum != checksum:
        return f"{path}: changed while being ingested (checksum differs); rerun to ingest it"
    g = zarr.open_group(st.store_path(store), mode="r+", use_consolidated=False)[schema.EXPOSURES]
    g["image"][slot] = raw.image
    g["dq"][slot] = raw.dq
    g["done"][slot] = np.ones(g["done"].shape[1], np.uint8)
    return None


def _store_state(target: str, filt: str, first: RawExposure) -> tuple[set, dict]:
    """(checksums of finished exposures, {checksum: slot} of unfinished ones) of ``target``,
    creating the store and its empty cube if missing."""
    if st.exists(target) and st.has_group(target, schema.EXPOSURES):
        ex = st.open_group(target, schema.EXPOSURES)
        if ex.attrs.get("filter") != filt:
            raise BadInputError(first.path, f"filter {filt} but {target} holds {ex.attrs.get('filter')}")
        sums = ex["checksum"].values.tolist() if "checksum" in ex.coords else []
        done = np.asarray(ex["done"].values).astype(bool).all(axis=1) if sums else np.zeros(0, bool)
        return ({c for c, d in zip(sums, done) if d},
                {c: i for i, (c, d) in enumerate(zip(sums, done)) if not d})
    st.init_store(target, PROVENANCE_KEY, json.dumps({"instrument": "WFPC2"}))
    _exposures_template(target, filt, first.atodgain)
    return set(), {}


@driver.holds_lock("ingest")
def ingest(store, inputs, separate_filters: bool = False, progress: bool = True) -> dict:
    """Ingest calibrated WFPC2 files into ``store``'s exposures cube.

    Every input is read and validated first (one dask task per file); bad files are reported
    (one line each, naming the file) and skipped, the good ones written (one task per file).
    Returns {'ingested', 'skipped', 'errors'}. Mixing filters in one store is refused
    (BadInputError) before anything is written, unless ``separate_filters``, which routes each
    filter to ``STORE_<FILTER>.zarr``.
    """
    from dask import delayed

    files = discover(inputs)
    checked = st.run_tasks([delayed(_validated)(str(f)) for f in files], "ingest: reading",
                           progress)
    errors = [c for c in checked if isinstance(c, str)]
    by_filter: dict[str, list[RawExposure]] = {}
    for raw in checked:
        if not isinstance(raw, str):
            by_filter.setdefault(raw.filter, []).append(raw)
    path = st.store_path(store)
    if len(by_filter) > 1 and not separate_filters:
        raise BadInputError(path, f"inputs mix filters {sorted(by_filter)}; one store holds one "
                                  "filter (use --separate-filters)")
    done = {"ingested": 0, "skipped": 0, "errors": errors}
    for filt, raws in by_filter.items():
        target = path if not separate_filters else str(Path(path).with_name(
            f"{Path(path).stem}_{filt}{Path(path).suffix}"))
        finished, unfinished = _store_state(target, filt, raws[0])
        todo, new, seen = [], [], set()
        for raw in raws:
            if raw.checksum in finished or raw.checksum in seen:
                errors.append(f"{raw.path}: already in the store (same checksum); skipped")
                done["skipped"] += 1
                continue
            seen.add(raw.checksum)
            if raw.checksum in unfinished:
                todo.append((unfinished[raw.checksum], raw))  # resume an interrupted write
            else:
                new.append(raw)
        todo += list(zip(_allocate(target, new), new)) if new else []
        results = st.run_tasks([delayed(_fill)(target, slot, raw.path, raw.checksum)
                                for slot, raw in todo], f"ingest: writing {filt}", progress)
        for (slot, raw), err in zip(todo, results):
            if err:
                errors.append(err)
            else:
                done["ingested"] += 1
                if progress:
                    print(f"ingested {raw.rootname} ({raw.filter}, {raw.exptime:.0f} s) from {raw.path}")
        st.consolidate(target)
    return done


def export_fits(store, outdir, exposures=None) -> list[Path]:
    """Write exposures as archive-layout ``<rootname>_c0m.fits`` (primary header + four SCI
    extensions with DETECTOR) and ``<rootname>_c1m.fits`` (data quality), so classical tools
    (hst1pass, DOLPHOT) can run on simulations. Pixels are written exactly (float32 DN)."""
    from astropy.io import fits

    ex = st.open_group(store, schema.EXPOSURES)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    chips = [str(c) for c in ex[schema.CHIP].values]
    if sorted(chips) != sorted(C.CHIPS):
        raise StarcenterError(f"{st.store_path(store)}: export needs all four chips in the archive "
                              f"layout, the store has {chips}")
    written = []
    for e in (range(ex.sizes[schema.EXPOSURE]) if exposures is None else exposures):
        root = str(ex["rootname"].values[e])
        prim = fits.Header()
        prim["INSTRUME"] = "WFPC2"
        prim["ROOTNAME"] = root
        prim["FILTNAM1"] = ex.attrs["filter"]
        prim["FILTNAM2"] = ""
        prim["EXPTIME"] = float(ex["exptime"].values[e])
        prim["EXPSTART"] = float(ex["mjd"].values[e])
        prim["ATODGAIN"] = float(ex.attrs.get("atodgain", 7))
        prim["NEXTEND"] = 4
        prim["ORIGIN"] = "starcenter export-fits"
        prim["STARSIM"] = (ex.attrs.get("source") == "simulation", "simulated exposure")
        for suffix, var in (("_c0m.fits", "image"), ("_c1m.fits", "dq")):
            hdus = [fits.PrimaryHDU(header=prim)]
            for chip in C.CHIPS:
                k = chips.index(chip)
                h = fits.Header()
                h["DETECTOR"] = C.DETECTOR_NUMBER[chip]
                data = ex[var].isel(exposure=e, chip=k).values
                hdus.append(fits.ImageHDU(data, header=h, name="SCI", ver=C.DETECTOR_NUMBER[chip]))
            path = outdir / f"{root}{suffix}"
            tmp = path.with_suffix(".fits.tmp")
            fits.HDUList(hdus).writeto(tmp, overwrite=True)
            tmp.replace(path)  # never a half-written file under the final name
            if var == "image":
                written.append(path)
    return written
