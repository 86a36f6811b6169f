"""Store helpers shared by every stage: open, check provenance, write templates, run chunks.

A store is one Zarr (v3) hierarchy per data set; the groups are named in :mod:`cubes.schema`.
A store is named by a local path or any fsspec URL (``memory://``, ``s3://``, ``gs://``,
``abfs://``... where the matching fsspec package is installed); every stage reads and writes it
through zarr, so the same code serves both. ``memory://`` lives in one process: use it with the
synchronous or threaded scheduler, not with distributed workers.
Stages write a group in two steps: :func:`write_template` lays down all metadata and the small
coordinate arrays (nothing large), then per-chunk tasks fill the big arrays with zarr and set
the group's ``done`` marker for that chunk last, so an interrupted run resumes where it was.
"""

from __future__ import annotations

import json
import sys
import threading
import warnings
from contextlib import contextmanager

import numpy as np
import xarray as xr
import zarr

from starcenter.cubes import schema
from starcenter.cubes.errors import StoreIOError, StoreMismatchError


def store_path(store) -> str:
    """The store's name as zarr takes it: a local path or an fsspec URL."""
    return str(store)


def filesystem(store):
    """(fsspec filesystem, path within it) of ``store``."""
    import fsspec

    return fsspec.core.url_to_fs(store_path(store))


def is_local(store) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(filesystem(store)[0], LocalFileSystem)


def open_root(store, mode: str = "r"):
    """The store's root zarr group (``mode`` 'r', 'r+' or 'a')."""
    return zarr.open_group(store_path(store), mode=mode)


def exists(store) -> bool:
    """True if ``store`` holds a starcenter root group."""
    fs, p = filesystem(store)
    return fs.exists(f"{p}/zarr.json")


def has_group(store, group: str) -> bool:
    fs, p = filesystem(store)
    return fs.exists(f"{p}/{group}/zarr.json")


def read_attrs(store) -> dict:
    return dict(open_root(store).attrs)


def check_store(store, provenance_key: str, provenance: str) -> bool:
    """Whether ``store`` can take data made with ``provenance``, touching nothing.

    Returns True if a store made with the same parameters exists (a resume), False if there is
    none yet, or one left empty by an interrupted first run (no group written: it is reused).
    Raises StoreMismatchError if the path holds other data, or a store made with other
    parameters, or if a new store could not be written there.
    """
    path = store_path(store)
    if exists(store):
        attrs = read_attrs(store)
        if attrs.get(provenance_key) == provenance:
            return True
        if not _groups(store):
            return False  # stamped by a first run that stopped before writing anything
        old = attrs.get(provenance_key)
        if old is None:
            raise StoreMismatchError(path, f"exists but was not written by this stage "
                                           f"(no {provenance_key!r} record); refusing to touch it")
        raise StoreMismatchError(path, "exists with other parameters: "
                                       f"{_diff(json.loads(old), json.loads(provenance))}; "
                                       "use another path or the same parameters")
    fs, p = filesystem(store)
    if fs.exists(p) and fs.ls(p):
        raise StoreMismatchError(path, "exists and is not a starcenter store; refusing to write there")
    if is_local(store):
        import os
        from pathlib import Path

        parent = next(q for q in [Path(p), *Path(p).parents] if q.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise StoreMismatchError(path, f"cannot be created: {parent} is not a writable folder")
    return False


def _groups(store) -> list[str]:
    fs, p = filesystem(store)
    return [q for q in fs.ls(p, detail=False) if fs.exists(f"{q}/zarr.json")]


def init_store(store, provenance_key: str, provenance: str) -> bool:
    """Create the store (stamped with its validated parameters), or check that an existing one was
    made with the same parameters (:func:`check_store`).

    Returns True if the store already existed (a resume). Raises StoreMismatchError if it
    holds something else; nothing is modified in that case.
    """
    resumed = check_store(store, provenance_key, provenance)
    if resumed:
        return True
    path = store_path(store)
    root = zarr.open_group(path, mode="a")
    root.attrs.update({"schema_version": schema.SCHEMA_VERSION, provenance_key: provenance,
                       "pixel_convention": schema.PIXEL_CONVENTION})
    return False


def _diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} != {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _compute(tasks, client, live: bool):
    import dask

    if client is not None:
        futures = client.compute(tasks)
        if live:
            from distributed import progress as dprogress

            dprogress(futures)
            print()
        return client.gather(futures)
    if live:
        from dask.diagnostics import ProgressBar

        with ProgressBar(dt=1.0):
            return dask.compute(*tasks)
    return dask.compute(*tasks)


@contextmanager
def _quiet_consolidation():
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not (yet) part of the v3 spec; starcenter
        # consolidates the root so that plain xarray.open_zarr opens any group without fallback.
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def write_template(store, group: str, ds: xr.Dataset, encoding: dict | None = None):
    """Write ``ds``'s metadata and in-memory (numpy) variables to ``group``; dask-backed
    variables get their arrays created but no chunk written. Consolidates the root."""
    with _quiet_consolidation():
        ds.to_zarr(store_path(store), group=group, mode="w", compute=False,
                   consolidated=False, encoding=encoding or {})
    consolidate(store)


def consolidate(store):
    """Refresh the root's consolidated metadata (xarray.open_zarr reads it for every group)."""
    with _quiet_consolidation():
        zarr.consolidate_metadata(store_path(store))


def write_dataset(store, group: str, ds: xr.Dataset, encoding: dict | None = None):
    """Write a dataset to ``group`` in one go: small and in memory (psf, catalog tables), or lazy
    (dask: computed chunk by chunk as it is written)."""
    with _quiet_consolidation():
        ds.to_zarr(store_path(store), group=group, mode="w", consolidated=False,
                   encoding=encoding or {})
    consolidate(store)


def add_variables(store, group: str, ds: xr.Dataset):
    """Add (or replace) small in-memory variables of ``group`` without rewriting the others;
    creates the group if missing. Coordinates shared with the group must match."""
    with _quiet_consolidation():
        if has_group(store, group):
            existing = xr.open_zarr(store_path(store), group=group)
            ds = ds.assign_attrs({**existing.attrs, **ds.attrs})  # appending must not drop attrs
            clash = [v for v in ds.data_vars if v in existing.data_vars]
            if clash:
                g = zarr.open_group(store_path(store), mode="r+", path=group)
                for v in clash:
                    del g[v]
            ds.to_zarr(store_path(store), group=group, mode="a", consolidated=False)
        else:
            ds.to_zarr(store_path(store), group=group, mode="w", consolidated=False)
    consolidate(store)


def remove_group(store, group: str) -> None:
    """Delete ``group`` (derived data being rebuilt on request) and refresh the metadata."""
    root = zarr.open_group(store_path(store), mode="r+")
    if group in root:
        del root[group]
    consolidate(store)


def copy_groups(src, dst, groups) -> None:
    """A new store ``dst`` holding ``src``'s root attributes and those of its ``groups`` that
    exist (say the source groups, so the derived ones are made again from them). ``dst`` must
    not exist (nothing there is touched), and lie on the same filesystem as ``src``."""
    fs, sp = filesystem(src)
    _, dp = filesystem(dst)
    if fs.exists(dp):
        raise StoreMismatchError(store_path(dst), "exists: a copy is made only into a new store")
    root = zarr.open_group(store_path(dst), mode="w-")
    root.attrs.update(read_attrs(src))
    for group in groups:
        if has_group(src, group):  # zarr groups are folders of plain files
            fs.copy(f"{sp}/{group}", f"{dp}/{group}", recursive=True)
    consolidate(dst)


def open_group(store, group: str) -> xr.Dataset:
    """Open a group lazily (dask-backed), exactly as a user would with xarray.open_zarr."""
    if not has_group(store, group):
        raise StoreMismatchError(store_path(store), f"has no {group!r} group")
    return xr.open_zarr(store_path(store), group=group)


def done_mask(store, group: str) -> np.ndarray:
    """The group's per-chunk ``done`` marker array as numpy (small)."""
    return np.asarray(open_root(store)[f"{group}/done"][...]).astype(bool)


def set_attr(store, group: str, **attrs):
    g = zarr.open_group(store_path(store), mode="r+", path=group)
    g.attrs.update(attrs)
    consolidate(store)


def run_tasks(tasks, description: str, progress: bool = True):
    """Compute dask delayed ``tasks`` (distributed if a client is active) with a progress bar.

    On a terminal the bar updates in place; when the output is a file or a pipe (a CI log, the
    demo's log) a bar would write a line per update, so the start and the end are printed instead.
    """
    import time

    if not tasks:
        return []
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
    live = progress and sys.stdout.isatty()
    if progress:
        where = f" on {client.dashboard_link}" if client is not None else ""
        print(f"{description}: {len(tasks)} chunks{where}", flush=True)
    t0 = time.perf_counter()
    try:
        out = _compute(tasks, client, live)
    except OSError as err:  # disk full, read-only or vanished store: the finished chunks are kept
        raise StoreIOError(f"{description}: {err.strerror or err} ({type(err).__name__}) while reading or "
                           "writing the store; every chunk finished before is kept: fix the cause "
                           "(free space, permissions) and rerun to resume") from None
    except RuntimeError as err:
        if "decompress" not in str(err).lower():
            raise
        raise StoreIOError(f"{description}: a chunk is unreadable ({err}): run `starcenter verify STORE "
                           "--repair` to find it and mark it for redoing, then rerun") from None
    if progress and not live:
        print(f"{description}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


#: The locks this thread holds (re-entry is not a second writer).
_HELD = threading.local()


@contextmanager
def locked(store, command: str):
    """Hold ``<store>.lock`` while a command writes the store; a second writer is refused with a
    one-line error naming the holder. The lock is created exclusively (``O_EXCL`` locally, fsspec's
    ``xb`` mode on other filesystems, where the object store must support conditional writes).
    A lock left by a process of this host that no longer runs is taken over. Re-entrant within
    one thread (a pipeline run holds it while each stage it calls takes it again); another thread
    or process is a second writer."""
    import os
    import socket

    fs, p = filesystem(store)
    lock = p.rstrip("/") + ".lock"
    held = _HELD.__dict__.setdefault("locks", set())
    if (type(fs).__name__, lock) in held:
        yield
        return
    me = f"{os.getpid()} {socket.gethostname()} starcenter {command}"
    parent = lock.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    for _ in range(2):
        try:
            _create_exclusive(fs, lock, me.encode())
            break
        except FileExistsError:
            try:
                text = fs.cat_file(lock).decode()
            except FileNotFoundError:
                continue  # released meanwhile
            pid, host, holder = (text.split(" ", 2) + ["", ""])[:3]
            if host == socket.gethostname() and not _alive(pid):
                fs.rm_file(lock)  # stale: its process is gone
                continue
            raise StoreMismatchError(store_path(store), f"is being written by `{holder.strip()}` "
                                     f"(pid {pid} on {host}); wait for it, or remove "
                                     f"{lock.rsplit('/', 1)[-1]} if that process is gone") from None
    held.add((type(fs).__name__, lock))
    try:
        yield
    finally:
        held.discard((type(fs).__name__, lock))
        try:
            fs.rm_file(lock)
        except FileNotFoundError:
            pass


def _create_exclusive(fs, path: str, data: bytes) -> None:
    """Create ``path`` only if absent (FileExistsError otherwise). Filesystems without an
    exclusive-create mode get a check-then-write, which two simultaneous writers can race."""
    try:
        with fs.open(path, "xb") as fh:
            fh.write(data)
        return
    except (ValueError, NotImplementedError):
        pass  # no "x" mode on this filesystem
    warnings.warn(f"{type(fs).__name__} cannot create files exclusively: the store lock is "
                  "best effort; do not start two writers at once", stacklevel=3)
    if fs.exists(path):
        raise FileExistsError(path)
    fs.pipe_file(path, data)


def _alive(pid: str) -> bool:
    import os

    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # exists, under another user
    return True
