"""One stage shape: the driver every chunked stage runs through.

A stage reads earlier groups, writes one group chunk by chunk, and sets the chunk's ``done``
marker last. The driver owns the parts every stage shares: the "run X first" message for a
missing input (:func:`require`), the group's template, written when the group is absent or was
made from other inputs or parameters (:func:`prepare`), the pending chunks only (resume:
:func:`run_chunks`) and the ``complete`` attribute (:func:`finish`). The stage itself supplies a
template builder and a per-chunk task; its science lives in the ``classical`` kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.errors import StoreIOError, StoreMismatchError


def require(store, *groups: str, hint: str | None = None) -> None:
    """Raise StoreMismatchError naming the first missing group and the command that makes it."""
    for group in groups:
        if not st.has_group(store, group):
            how = hint or f"run {schema.spec(group).made_by} first"
            raise StoreMismatchError(st.store_path(store), f"has no {group!r} group: {how}")


def stale(store, group: str, provenance: dict) -> dict:
    """{attribute: (stored, wanted)} for every provenance attribute of ``group`` that differs."""
    import zarr

    # the group's own metadata, not the consolidated copy (a template cut short never reached it)
    attrs = dict(zarr.open_group(st.store_path(store), mode="r", use_consolidated=False)[group].attrs)
    diff = {k: (attrs.get(k), v) for k, v in provenance.items() if attrs.get(k) != v}
    if attrs.get("template") == "writing":  # an interrupted template: lay it down again
        diff["template"] = ("writing", "written")
    return diff


def prepare(store, group: str, build: Callable[[], tuple], provenance: dict,
            replace: bool = True, refuse_hint: str = "") -> np.ndarray:
    """Write ``group``'s template if it is absent or stale, and return its done mask.

    Parameters
    ----------
    store : str or path
        The store.
    group : str
        The group the stage writes (a name of :mod:`starcenter.cubes.schema`).
    build : callable
        ``() -> (xarray.Dataset, encoding)``: the template, from :func:`schema.template`.
    provenance : dict
        The attributes that say what the group was made from (its parameters, its inputs'
        parameters); a group whose stored values differ is stale.
    replace : bool
        Replace a stale group (derived data); if False, refuse it with StoreMismatchError.
    refuse_hint : str
        Appended to the refusal (how to proceed).

    Returns
    -------
    numpy.ndarray of bool
        One entry per chunk of the group: True where the chunk is written (resume).
    """
    if st.has_group(store, group):
        diff = stale(store, group, provenance)
        if not diff:
            return st.done_mask(store, group)
        if not replace:
            check_unchanged(store, group, provenance, refuse_hint)  # an interrupted template passes
    ds, encoding = build()
    # "writing" until the whole template is down: a template cut short (a full disk) is stale
    ds.attrs.update({**provenance, "complete": 0, "template": "writing"})
    try:
        st.write_template(store, group, ds, encoding)
    except OSError as err:
        raise StoreIOError(f"{st.store_path(store)}: {err.strerror or err} while laying down the {group} "
                           "group; fix the cause (free space, permissions) and rerun") from None
    st.set_attr(store, group, template="written")
    return st.done_mask(store, group)


def check_unchanged(store, group: str, provenance: dict, hint: str = "") -> None:
    """Raise StoreMismatchError if ``group`` exists with other provenance (parameters)."""
    diff = stale(store, group, provenance) if st.has_group(store, group) else {}
    diff.pop("template", None)  # a template cut short holds no finished chunk: it is replaced
    if diff:
        old = "; ".join(f"{k} {a}" for k, (a, _) in diff.items())
        raise StoreMismatchError(st.store_path(store), f"{group} exist with other parameters ({old}){hint}")


def run_chunks(store, group: str, done: np.ndarray, task: Callable, description: str,
               progress: bool = True, ready: np.ndarray | None = None) -> int:
    """Run the pending chunks of a group: ``task(*index)`` for every index not yet done.

    Ordered by chip, then exposure, so a chip's chunks share their ePSF and model caches.

    Parameters
    ----------
    store : str or path
        The store.
    group : str
        The group being written.
    done : numpy.ndarray of bool
        The done mask from :func:`prepare`.
    task : callable
        ``(*index) -> dask.delayed``; it writes its chunk and sets the chunk's done marker last.
    description : str
        The progress line's text.
    progress : bool
        Progress lines.
    ready : numpy.ndarray of bool, optional
        Chunks whose inputs exist; the others wait for a later run.

    Returns
    -------
    int
        The number of chunks run.
    """
    pending = ~done if ready is None else ~done & ready
    idx = np.argwhere(pending)
    if idx.shape[1] == 2:
        idx = idx[np.lexsort((idx[:, 0], idx[:, 1]))]
    st.run_tasks([task(*map(int, i)) for i in idx], description, progress)
    return len(idx)


def finish(store, group: str) -> bool:
    """Mark ``group`` complete once every chunk is done; True if it is."""
    if st.done_mask(store, group).all():
        st.set_attr(store, group, complete=1)
        return True
    return False


def holds_lock(command: str):
    """Decorator: the stage function holds the store's lock (``<store>.lock``) while it runs, so
    a notebook calling a stage directly is protected from a second writer as the CLI is."""
    def wrap(fn):
        @functools.wraps(fn)
        def locked_stage(store, *args, **kwargs):
            with st.locked(store, command):
                return fn(store, *args, **kwargs)
        return locked_stage
    return wrap


def preflight(check: Callable):
    """Decorator: attach ``check(store, **kwargs)``, the stage's checks of the store's state and
    of its arguments that need no lock and change nothing; the pipeline runs them before it takes
    the lock or starts a cluster, so a refusal leaves no trace."""
    def wrap(fn):
        fn.preflight = check
        return fn
    return wrap


def verify(store, repair: bool = False) -> list[tuple[str, tuple[int, ...], str]]:
    """Read every finished chunk of every resumable group; return the unreadable ones.

    A chunk file truncated or corrupted on disk (a crash, a full disk, a bad copy) fails to
    decompress; with ``repair`` its ``done`` marker is cleared, so rerunning the stage that owns
    the group redoes exactly those chunks (deterministic: the same bytes as an undisturbed run).

    Returns
    -------
    list of (group, chunk index, error)
    """
    root = st.open_root(store, "r+" if repair else "r")
    bad = []
    for group in [g for g in _resumable(root)]:
        g = root[group]
        done = np.asarray(g["done"][...]).astype(bool)
        block = schema.EXPOSURE_BLOCK if g["done"].metadata.dimension_names[0] == schema.BLOCK else 1
        arrays = [a for name, a in g.arrays() if name != "done" and a.metadata.dimension_names[:2]
                  == (schema.EXPOSURE, schema.CHIP)]
        for e, c in np.argwhere(done):
            for a in arrays:
                try:
                    a[e * block:(e + 1) * block, c]
                except RuntimeError as err:  # zarr's codecs: "... decompression error ..."
                    bad.append((group, (int(e), int(c)), f"{a.path}: {err}"))
                    if repair:
                        g["done"][e, c] = 0
                    break
    if repair and bad:
        st.consolidate(store)
    return bad


def _resumable(root) -> list[str]:
    """Groups (and centers/NAME subgroups) that carry a per-chunk ``done`` marker."""
    out = []
    for name, g in root.groups():
        if "done" in g.array_keys():
            out.append(name)
        out += [f"{name}/{sub}" for sub, h in g.groups() if "done" in h.array_keys()]
    return sorted(out)
