"""Command-line arguments, validated before anything is created, started or loaded.

Every value the command line takes goes through one of these ``argparse`` types, so a bad value
is refused while the arguments are parsed: one line naming the argument and what would be
accepted, exit status 2, nothing on disk changed and no cluster started. The store's state is
checked next, by the pipeline driver, still before any side effect (:mod:`starcenter.cubes.pipeline`).
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import sys
from pathlib import Path

from starcenter.cubes import cluster
from starcenter.cubes import constants as C

#: "local" (a LocalCluster) and dask's local schedulers, as starcenter.cubes.cluster takes them.
LOCAL_SCHEDULERS = ("local", *cluster.LOCAL_SCHEDULERS)
#: Seconds to wait for a scheduler address to answer.
CONNECT_TIMEOUT_S = 2.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _fail(what: str, text: str):
    raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")


def integer(lo: int | None = None, hi: int | None = None):
    """An integer in [lo, hi]."""
    what = ("an integer" + (f" >= {lo}" if lo is not None and hi is None else "")
            + (f" in {lo}..{hi}" if lo is not None and hi is not None else ""))

    def parse(text: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):  # ASCII digits only: int("٣") is 3
            _fail(what, text)
        value = int(text.strip())
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            _fail(what, text)
        return value

    parse.__name__ = "integer"
    return parse


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    bounds = "" if lo is None else (f" > {lo}" if lo_open else f" >= {lo}")
    bounds += "" if hi is None else f" and <= {hi}"
    what = f"a finite number{bounds}"

    def parse(text: str) -> float:
        if not text.isascii():  # float() also reads other scripts' digits
            _fail(what, text)
        try:
            value = float(text)
        except ValueError:
            _fail(what, text)
        if not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)) \
                or (hi is not None and value > hi):
            _fail(what, text)
        return value

    parse.__name__ = "number"
    return parse


def focus(text: str):
    """A focus (um) in -100..100, a range 'LO:HI' (per-exposure focus drawn uniformly) or a
    comma-separated list (each exposure's drawn from it); returns (value, sweep, is_range)."""
    what = "a focus in um (-100..100), a range LO:HI or a list A,B,C"
    one = number(-100, 100)
    parts = text.split(":") if ":" in text else text.split(",")
    if len(parts) > 64 or (":" in text and len(parts) != 2):
        _fail(what, text)
    try:
        values = tuple(one(p.strip()) for p in parts)
    except argparse.ArgumentTypeError:
        _fail(what, text)
    if ":" in text:
        if not values[0] < values[1]:
            _fail(what, text)
        return sum(values) / len(values), values, True
    return (values[0], (), False) if len(values) == 1 else (sum(values) / len(values), values, False)


def chips(text: str) -> tuple[str, ...]:
    """Comma-separated WFPC2 chips, each once."""
    out = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    if not out or any(c not in C.CHIPS for c in out) or len(set(out)) != len(out):
        _fail(f"comma-separated chips among {', '.join(C.CHIPS)}, each once", text)
    return out


def feature_list(text: str) -> tuple[str, ...]:
    """Comma-separated per-star network inputs (model.bridge.FEATURES), each once."""
    known = ("mag", "focus", "chip_x", "chip_y", "classical_x", "classical_y")  # model.bridge.FEATURES (no TF)
    out = tuple(f.strip() for f in text.split(",") if f.strip())
    if not out or any(f not in known for f in out) or len(set(out)) != len(out):
        _fail(f"comma-separated features among {', '.join(known)}, each once", text)
    return out


def chip(text: str) -> str:
    """One WFPC2 chip."""
    if text.strip().upper() not in C.CHIPS:
        _fail(f"one of {', '.join(C.CHIPS)}", text)
    return text.strip().upper()


def filter_name(text: str) -> str:
    """A filter the simulator and the networks know."""
    if text.strip().upper() not in C.FILTERS:
        _fail(f"one of {', '.join(C.FILTERS)}", text)
    return text.strip().upper()


def filters(text: str) -> tuple[str, ...]:
    """Comma-separated filters the simulator and the networks know, each once."""
    out = tuple(f.strip().upper() for f in text.split(",") if f.strip())
    if not out or any(f not in C.FILTERS for f in out) or len(set(out)) != len(out):
        _fail(f"comma-separated filters among {', '.join(C.FILTERS)}, each once", text)
    return out


def wfpc2_filter(text: str) -> str:
    """Any WFPC2 filter name, e.g. F555W (for archive queries)."""
    if not re.fullmatch(r"F\d{3,4}[WMNLPQ]{0,2}", text.strip().upper()):
        _fail("a WFPC2 filter name such as F555W", text)
    return text.strip().upper()


def memory(text: str) -> str:
    """'auto' or a memory size of at least 100MB such as 3GiB (a number first: dask reads a bare
    unit, or nothing, as one unit)."""
    if text.strip().lower() == "auto":
        return "auto"
    from dask.utils import parse_bytes

    if re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*[A-Za-z]{0,3}\s*", text):
        try:
            if parse_bytes(text) >= 100e6:
                return text
        except (ValueError, TypeError, KeyError):
            pass
    _fail("'auto' or a memory size of at least 100MB such as 3GiB", text)


def scheduler(text: str) -> str:
    """A local scheduler name, or the address of a dask scheduler that answers now."""
    if text in LOCAL_SCHEDULERS:
        return text
    m = re.fullmatch(r"(?:tcp://)?([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", text.strip())
    if not m or not 0 < int(m.group(2)) < 65536:
        _fail(f"one of {', '.join(LOCAL_SCHEDULERS)} or a scheduler address such as tcp://HOST:8786", text)
    host, port = m.group(1).strip("[]"), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise argparse.ArgumentTypeError(f"no dask scheduler answers at {text!r} ({err.strerror or err}); "
                                         "start one, or use --scheduler local") from None
    return text


def address(text: str) -> str:
    """HOST:PORT or :PORT for the dashboard (port 0: any free one)."""
    m = re.fullmatch(r"([A-Za-z0-9.\-]*|\[[0-9a-fA-F:]+\]):(\d{1,5})", text.strip())
    if not m or int(m.group(2)) > 65535:
        _fail("HOST:PORT or :PORT, e.g. 127.0.0.1:8787", text)
    return text


def name(text: str) -> str:
    """A method name for centers/NAME: letters, digits, '_', '.', '+', '-'."""
    if not _NAME.fullmatch(text):
        _fail("a name of letters, digits and _ . + - (at most 64)", text)
    return text


def store(text: str) -> str:
    """A store location: a local path that is not an existing file, or a URL."""
    if not text.strip() or "\x00" in text:
        _fail("a store path", text)
    if "://" not in text:
        p = Path(text)
        if p.exists() and not p.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a file, not a store (a directory)")
    return text


def existing_store(text: str) -> str:
    """A starcenter store that exists (a local path must hold its zarr.json)."""
    text = store(text)
    if "://" not in text and not (Path(text) / "zarr.json").is_file():
        raise argparse.ArgumentTypeError(f"{text}: no starcenter store there (no zarr.json)")
    return text


def existing_file(text: str) -> Path:
    """A file that exists."""
    if not text.strip() or "\x00" in text or not Path(text).is_file():
        _fail("an existing file", text)
    return Path(text)


def output_dir(text: str) -> str:
    """A directory to write into: not an existing file, its parent a directory."""
    p = Path(text)
    if not text.strip() or "\x00" in text or (p.exists() and not p.is_dir()):
        _fail("a directory path (not a file)", text)
    if not p.exists() and not p.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: its parent directory does not exist")
    return text


def input_path(text: str) -> str:
    """An existing file or directory."""
    if not text.strip() or "\x00" in text or not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file or directory")
    return text


def model_file(text: str) -> str:
    """A model written by `starcenter train`: the .keras file and its metadata, which must name a
    known chip and a raster size of 3..21 px."""
    import json

    p = Path(text)
    meta = p.with_name(p.name + ".json")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such model file")
    if not meta.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no metadata file {meta.name}; was it made by starcenter train?")
    try:
        info = json.loads(meta.read_text())
        ok = isinstance(info, dict) and info.get("chip") in C.CHIPS and isinstance(info.get("raster_size"), int) \
            and 3 <= info["raster_size"] <= 21
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{meta}: not starcenter model metadata (needs a chip among "
                                         f"{', '.join(C.CHIPS)} and a raster_size of 3..21)")
    return text


def model_out(text: str) -> str:
    """Where a new model file goes: a path whose folder exists, not a folder itself."""
    p = Path(text)
    if not text.strip() or "\x00" in text or p.is_dir():
        _fail("a model file path such as models/WF3.keras", text)
    if not p.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: its folder does not exist")
    return text


def sizes(text: str) -> list[int]:
    """Comma-separated raster sizes, 3..21 px."""
    parse = integer(3, 21)
    try:
        out = [parse(v) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError:
        out = []
    if not out:
        _fail("comma-separated raster sizes of 3..21 px", text)
    return out
