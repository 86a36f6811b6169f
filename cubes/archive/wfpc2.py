"""WFPC2 archive files, read and written: the layouts starcenter ingests (astropy for FITS; a
small reader for GEIS, see :func:`read_geis`).

- multi-extension FITS ``*_c0m.fits`` (four SCI extensions) with the data-quality ``*_c1m.fits``;
- "waivered" FITS ``*_c0f.fits`` (one 4 x 800 x 800 group image plus an ASCII table of group
  parameters, DETECTOR among them) with ``*_c1f.fits``;
- GEIS ``*.c0h``/``*.c0d`` pairs (with ``*.c1h``/``*.c1d``).

Headers give INSTRUME (must be WFPC2), FILTNAM1/2, EXPTIME, EXPSTART (MJD), ATODGAIN, DETECTOR per
chip and ROOTNAME. Nothing here opens a store.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes.errors import BadInputError, StarcenterError

PATTERNS = ("*_c0m.fits", "*_c0f.fits", "*.c0h")


@dataclass
class RawExposure:
    """One calibrated exposure as read: images (n_chip, ny, nx) DN, dq, and header facts."""

    path: str
    rootname: str
    instrument: str
    filter: str
    exptime: float
    mjd: float
    atodgain: int
    chips: list[str]
    image: np.ndarray
    dq: np.ndarray
    checksum: str


def _checksum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _filter_name(h) -> str:
    names = [str(h.get(k, "")).strip() for k in ("FILTNAM1", "FILTNAM2")]
    names = [n for n in names if n and n.upper() != "CLEAR"]
    return "+".join(names) if names else "CLEAR"


def _companion(path: Path, kind: str) -> Path | None:
    """The data-quality companion of a c0 file (c1m, c1f, c1h), if present."""
    name = path.name
    for a, b in (("_c0m.fits", "_c1m.fits"), ("_c0f.fits", "_c1f.fits"), (".c0h", ".c1h")):
        if name.endswith(a):
            p = path.with_name(name[: -len(a)] + b)
            return p if p.exists() else None
    return None


def _open_hdul(path: Path):
    """HDUList of a FITS file or GEIS pair; BadInputError naming the file if unreadable."""
    from astropy.io import fits

    try:
        if path.suffix == ".c0h" or path.suffix == ".c1h":
            return read_geis(path)
        with warnings.catch_warnings():
            # waivered c0f files declare an ASCII-table display format astropy does not support
            # (TDISPn 'L'); the values read correctly, the warning only fills the logs
            warnings.filterwarnings("ignore", message=".*TDISPn.*", category=fits.verify.VerifyWarning)
            hdul = fits.open(path, memmap=False)
            for hdu in hdul:  # force reading: truncated files fail here, not later
                _ = hdu.data
        return hdul
    except BadInputError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, AttributeError) as err:
        # AttributeError: astropy's answer to a header whose NAXIS claims more data than the file has
        raise BadInputError(str(path), f"not a readable FITS/GEIS file ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0][:120]})") from None


_GEIS_TYPES = {"REAL*4": "f4", "REAL*8": "f8", "INTEGER*2": "i2", "INTEGER*4": "i4",
               "LOGICAL*4": "i4", "UNSIGNED*2": "u2"}


def read_geis(path):
    """Read a GEIS pair (``.??h`` text header, ``.??d`` binary groups) into an HDUList with one
    image extension per group carrying its group parameters.

    Written here because stsci.tools 4.3.1's ``readgeis`` fails under NumPy 2 ("The binary mode
    of fromstring is removed") — measured on this machine with numpy 2.4. Data are big-endian
    (the archive's IEEE byte order, as FITS); CHARACTER group parameters are supported.
    """
    from astropy.io import fits

    path = Path(path)
    dpath = path.with_suffix(path.suffix[:-1] + "d")
    if not dpath.exists():
        raise BadInputError(str(path), f"GEIS header without its data file {dpath.name}")
    cards = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.rstrip("\r")[:80]
        if line[:8].strip().upper() == "END":
            break
        if line.strip():
            cards.append(fits.Card.fromstring(line.ljust(80)))
    h = fits.Header(cards)
    try:
        naxis = [h[f"NAXIS{i}"] for i in range(1, h["NAXIS"] + 1)]
        gcount, pcount = h["GCOUNT"], h["PCOUNT"]
        dtype = _GEIS_TYPES[h.get("DATATYPE", "REAL*4").strip().upper()]
        params = []
        for i in range(1, pcount + 1):
            t = h[f"PDTYPE{i}"].strip().upper()
            code = f"S{t.split('*')[1]}" if t.startswith("CHARACTER") else _GEIS_TYPES[t]
            params.append((h[f"PTYPE{i}"].strip(), ">" + code if not code.startswith("S") else code))
    except KeyError as err:
        raise BadInputError(str(path), f"GEIS header lacks or misuses keyword {err}") from None
    shape = tuple(reversed(naxis))
    pdt = np.dtype(params)
    image_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = dpath.read_bytes()
    if len(raw) < gcount * (image_bytes + pdt.itemsize):
        raise BadInputError(str(dpath), f"GEIS data file holds {len(raw)} bytes, the header promises "
                                        f"{gcount * (image_bytes + pdt.itemsize)}")
    skip = {"SIMPLE", "GROUPS", "GCOUNT", "PCOUNT", "PSIZE", "DATATYPE", "BITPIX", "NAXIS"}
    prim = fits.Header([c for c in cards if c.keyword not in skip and not c.keyword.startswith(
        ("PTYPE", "PDTYPE", "PSIZE", "NAXIS"))])
    hdus = [fits.PrimaryHDU(header=prim)]
    loc = 0
    for _ in range(gcount):
        data = np.frombuffer(raw, dtype=">" + dtype, count=int(np.prod(shape)), offset=loc).reshape(shape)
        rec = np.frombuffer(raw, dtype=pdt, count=1, offset=loc + image_bytes)[0]
        loc += image_bytes + pdt.itemsize
        eh = fits.Header()
        for name, _code in params:
            v = rec[name]
            eh[name[:8]] = v.decode("ascii").strip() if isinstance(v, bytes) else v.item()
        hdus.append(fits.ImageHDU(data.astype(data.dtype.newbyteorder("=")), header=eh))
    return fits.HDUList(hdus)


def write_geis(path, planes: np.ndarray, primary: dict, group_params: list[dict]):
    """Write a GEIS pair in the archive layout: ``.??h`` 80-character header lines (GROUPS = T,
    GCOUNT, PCOUNT, PTYPEn/PDTYPEn/PSIZEn) and ``.??d`` big-endian groups (image, then integer
    group parameters). Used by tests and for round trips."""
    from astropy.io import fits

    path = Path(path)
    n, ny, nx = planes.shape
    keys = list(group_params[0])
    real = planes.dtype.kind == "f"
    cards = [fits.Card("SIMPLE", False), fits.Card("BITPIX", 32 if real else 16),
             fits.Card("DATATYPE", "REAL*4" if real else "INTEGER*2"), fits.Card("NAXIS", 2),
             fits.Card("NAXIS1", nx), fits.Card("NAXIS2", ny), fits.Card("GROUPS", True),
             fits.Card("GCOUNT", n), fits.Card("PCOUNT", len(keys)), fits.Card("PSIZE", 32 * len(keys))]
    for i, k in enumerate(keys, 1):
        cards += [fits.Card(f"PTYPE{i}", k), fits.Card(f"PDTYPE{i}", "INTEGER*4"), fits.Card(f"PSIZE{i}", 32)]
    cards += [fits.Card(k, v) for k, v in primary.items()]
    path.write_text("".join(str(c)[:80].ljust(80) + "\n" for c in cards) + "END".ljust(80) + "\n")
    with open(path.with_suffix(path.suffix[:-1] + "d"), "wb") as fh:
        for p, gp in zip(planes, group_params):
            fh.write(np.ascontiguousarray(p, dtype=">f4" if real else ">i2").tobytes())
            fh.write(np.array([gp[k] for k in keys], dtype=">i4").tobytes())


def _planes(hdul, path: Path):
    """(list of DETECTOR numbers, list of 2-d arrays, primary header) from any layout."""
    primary = hdul[0].header
    if hdul[0].data is not None and hdul[0].data.ndim == 3:  # waivered FITS
        table = hdul[1].data if len(hdul) > 1 else None
        if table is None or "DETECTOR" not in table.columns.names:
            raise BadInputError(str(path), "waivered FITS without a group-parameter table with DETECTOR")
        dets = [_detector(d, path) for d in table["DETECTOR"]]
        return dets, [np.asarray(p) for p in hdul[0].data], primary
    dets, planes = [], []
    for hdu in hdul[1:]:  # MEF (c0m) or GEIS converted by readgeis: one image extension per chip
        if hdu.data is None or getattr(hdu.data, "ndim", 0) != 2:
            continue
        det = hdu.header.get("DETECTOR")
        if det is None:
            raise BadInputError(str(path), f"extension {hdu.name or len(planes) + 1} has no DETECTOR keyword")
        dets.append(_detector(det, path))
        planes.append(np.asarray(hdu.data))
    return dets, planes, primary


def _detector(value, path) -> int:
    """A DETECTOR value as a chip number (1..4), or BadInputError naming the file."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number not in C.DETECTOR_NUMBER.values():
        raise BadInputError(str(path), f"DETECTOR {value!r} is not a chip number (1..4)")
    return number


def _header_number(h, key: str, path, positive: bool = False, default=None) -> float:
    """A numeric header keyword, or BadInputError naming the file and the keyword."""
    if key not in h:
        if default is not None:
            return float(default)
        raise BadInputError(str(path), f"header keyword {key} missing")
    try:
        value = float(h[key])
    except (TypeError, ValueError):
        raise BadInputError(str(path), f"{key} {h[key]!r} is not a number") from None
    if not np.isfinite(value) or (positive and value <= 0):
        raise BadInputError(str(path), f"{key} {h[key]!r} is not > 0" if positive else
                            f"{key} {h[key]!r} is not finite")
    return value


def read_exposure(path, shape=(C.CHIP_SIZE, C.CHIP_SIZE)) -> RawExposure:
    """Read and validate one calibrated WFPC2 exposure (any layout) and its dq companion.

    ``shape``: required chip shape (None accepts any, for cropped reader-test files)."""
    path = Path(path)
    hdul = _open_hdul(path)
    h = hdul[0].header
    inst = str(h.get("INSTRUME", "")).strip()
    if inst != "WFPC2":
        raise BadInputError(str(path), f"INSTRUME is {inst or 'missing'!r}, not WFPC2")
    exptime = _header_number(h, "EXPTIME", path, positive=True)
    expstart = _header_number(h, "EXPSTART", path)
    filt = _filter_name(h)
    if filt == "CLEAR" and not any(k in h for k in ("FILTNAM1", "FILTNAM2")):
        raise BadInputError(str(path), "no filter: header keywords FILTNAM1 and FILTNAM2 missing")
    dets, planes, _ = _planes(hdul, path)
    missing = sorted(set(C.DETECTOR_NUMBER.values()) - set(dets))
    if missing:
        names = [c for c, n in C.DETECTOR_NUMBER.items() if n in missing]
        raise BadInputError(str(path), f"missing chip(s) {', '.join(names)} (found DETECTOR {dets})")
    order = [dets.index(n) for n in (1, 2, 3, 4)]
    shapes = [planes[i].shape for i in order]
    want = tuple(shape) if shape is not None else shapes[0]
    if any(s != want for s in shapes):
        raise BadInputError(str(path), f"chip images are {shapes}, expected {want} for every chip")
    image = np.stack([planes[i].astype(np.float32) for i in order])
    for k, chip in enumerate(C.CHIPS):
        if not np.isfinite(image[k]).any():
            raise BadInputError(str(path), f"chip {chip} is entirely NaN/infinite")
    dq = np.zeros(image.shape, np.uint16)
    comp = _companion(path, "dq")
    if comp is not None:
        dq_dets, dq_planes, _ = _planes(_open_hdul(comp), comp)
        if sorted(dq_dets) != [1, 2, 3, 4]:
            raise BadInputError(str(comp), f"data-quality file has DETECTOR {dq_dets}")
        dq = np.stack([dq_planes[dq_dets.index(n)].astype(np.uint16) for n in (1, 2, 3, 4)])
        if dq.shape != image.shape:
            raise BadInputError(str(comp), f"data-quality shape {dq.shape} != image shape {image.shape}")
    # non-finite pixels are flagged, never left as silent NaN
    bad = ~np.isfinite(image)
    dq[bad] |= C.DQ_FLAGS["missing_data"]
    image[bad] = 0.0
    gain = int(round(_header_number(h, "ATODGAIN", path, default=7)))
    if gain not in C.GAIN:
        raise BadInputError(str(path), f"ATODGAIN {h.get('ATODGAIN')} is neither 7 nor 15")
    root = str(h.get("ROOTNAME", path.name.split("_")[0].split(".")[0])).strip().lower()
    return RawExposure(str(path), root, inst, filt, exptime, expstart, gain, list(C.CHIPS), image, dq,
                       _checksum(path))


def discover(inputs) -> list[Path]:
    """c0 files named by ``inputs`` (files, or directories searched for PATTERNS)."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for pat in PATTERNS for f in p.glob(pat))
            if not found:
                raise BadInputError(str(p), "directory holds no *_c0m.fits, *_c0f.fits or *.c0h files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise BadInputError(str(p), "no such file or directory")
    return out


def real_omega_cen_path() -> Path:
    """The REAL ω Cen exposure u40x010hm_c0f.fits shipped in the stsci.tools 4.3.1 wheel."""
    try:
        import stsci.tools
    except ImportError as err:
        raise StarcenterError("stsci.tools (pinned test dependency) is needed for the sample "
                              "exposure: pip install 'stsci.tools==4.3.1'") from err
    return Path(stsci.tools.__file__).parent / "tests" / "data" / "u40x010hm_c0f.fits"


def real_omega_cen_inputs(folder) -> Path:
    """``folder`` holding the REAL ω Cen exposure (:func:`real_omega_cen_path`) and, when the
    workplace's shared folder has it (``$STARCENTER_SHARED`` or ``shared/`` beside the repository),
    its data-quality file u40x010hm_c1f.fits (from the stwcs sdist): ``starcenter ingest`` reads
    both. Without the data quality, the WF chips' PSF-epoch fit is flagged (README)."""
    import os
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c0f = folder / "u40x010hm_c0f.fits"
    if not c0f.exists():
        shutil.copy(real_omega_cen_path(), c0f)
    shared = Path(os.environ.get("STARCENTER_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    dq = shared / "data" / "real" / "u40x010hm_c1f.fits"
    if dq.is_file() and not (folder / dq.name).exists():
        shutil.copy(dq, folder / dq.name)
    return folder

