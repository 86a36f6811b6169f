"""Figures that only read a store (no science computed here). Every figure says what it was
made from: a simulation or real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from starcenter.cubes import schema
from starcenter.cubes.classical.stats import robust_sigma
from starcenter.cubes.store import open_group


def _save(fig, path) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def data_label(ds) -> str:
    """'SIMULATION' or 'REAL DATA' plus filter, from a group's attributes."""
    kind = "SIMULATION" if ds.attrs.get("source") == "simulation" else "REAL DATA"
    return f"{kind} — WFPC2 {ds.attrs.get('filter', '?')}"


def plot_exposure(store, exposure: int, path, zoom: int | None = 200) -> Path:
    """PNG of one exposure, one panel per chip (arcsinh stretch); the central ``zoom`` px box
    of each chip in an inset row when ``zoom`` is set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = open_group(store, schema.EXPOSURES)
    chips = [str(c) for c in ex[schema.CHIP].values]
    rows = 2 if zoom else 1
    fig, axes = plt.subplots(rows, len(chips), figsize=(4.2 * len(chips), 4.4 * rows),
                             squeeze=False)
    for k, chip in enumerate(chips):
        img = ex["image"].isel(exposure=exposure, chip=k).values
        sky = float(np.median(img))
        noise = float(robust_sigma(img - sky)) or 1.0
        stretch = np.arcsinh((img - sky) / (3 * noise))
        vmax = np.percentile(stretch, 99.7)
        ax = axes[0, k]
        ax.imshow(stretch, origin="lower", cmap="gray", vmin=-1, vmax=vmax)
        ax.set_title(f"{chip} — exposure {exposure} ({ex['rootname'].values[exposure]})", fontsize=9)
        ax.set_xlabel("x [px]")
        ax.set_ylabel("y [px]")
        if zoom:
            c = img.shape[0] // 2
            lo, hi = c - zoom // 2, c + zoom // 2
            axz = axes[1, k]
            axz.imshow(stretch[lo:hi, lo:hi], origin="lower", cmap="gray", vmin=-1, vmax=vmax,
                       extent=(lo - 0.5, hi - 0.5, lo - 0.5, hi - 0.5))
            axz.set_title(f"{chip} centre, {zoom}x{zoom} px", fontsize=9)
            axz.set_xlabel("x [px]")
    fig.suptitle(f"{data_label(ex)}, {float(ex['exptime'].values[exposure]):.0f} s, "
                 "calibrated DN, arcsinh stretch", fontsize=11)
    return _save(fig, path)


def plot_loss(model_path, path=None) -> Path:
    """Training and validation loss (MAE, mpix) per epoch from a model's metadata file (a model
    with uncertainty outputs: the centres' MAE metric, its loss being a likelihood)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = json.loads(Path(str(model_path) + ".json").read_text())
    h = meta["history"]
    key = "centre_mae" if "centre_mae" in h else "loss"
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(h[key]) + 1), np.asarray(h[key]) * 1e3, label="training")
    ax.plot(np.arange(1, len(h["val_" + key]) + 1), np.asarray(h["val_" + key]) * 1e3, label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MAE [mpix]")
    kind = "SIMULATION" if meta["dataset"].get("source") == "simulation" else "REAL DATA"
    ax.set_title(f"{kind}: VGG6 {meta['architecture']} {meta['chip']} {meta.get('filter')}, "
                 f"{meta['recipe']['name']} recipe, {meta['target']} targets", fontsize=9)
    ax.legend()
    return _save(fig, path or str(model_path) + ".loss.png")


def _chip_grid(chips, sharex: bool = False):
    """A figure with one row per chip and x, y columns; returns (fig, axes, cells) where cells
    lists (chip, axis name, column index, matplotlib axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(chips), 2, figsize=(9, 2.8 * len(chips)), squeeze=False, sharex=sharex)
    cells = [(chip, ax_name, j, axes[i, j]) for i, chip in enumerate(chips)
             for j, ax_name in enumerate(("x", "y"))]
    return fig, axes, cells


def plot_phase_curves(curves: dict, path, title: str) -> Path:
    """Standard error of the transformations against offset phase (the paper's Fig. 10 style).

    curves: {method: {chip: {"x": (phase, std_err_mpix), "y": (...)}}} as made by
    :func:`evaluation.metrics.phase_data`; one row per chip, x and y columns, one colour per
    method, binned medians drawn over the individual exposures."""
    from starcenter.evaluation.metrics import phase_curve

    fig, axes, cells = _chip_grid(sorted({c for m in curves.values() for c in m}), sharex=True)
    for chip, ax_name, _, ax in cells:
        for k, (method, data) in enumerate(curves.items()):
            if chip not in data:
                continue
            ph, se = data[chip][ax_name]
            colour = f"C{k}"
            ax.plot(ph, se, ".", ms=2, alpha=0.3, color=colour)
            centres, med, _ = phase_curve(ph, se, 10)
            ax.plot(np.r_[centres, 1.0], np.r_[med, med[0]], "-o", ms=3, color=colour, label=method)
        ax.set_title(f"{chip} {ax_name}", fontsize=9)
        ax.set_ylabel("std. error [mpix]")
        ax.set_ylim(0, None)
    for ax in axes[-1]:
        ax.set_xlabel("offset phase")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_std_err_vs_offset(curves: dict, path, title: str) -> Path:
    """Standard error of the transformations against the full offset in pixels (the paper's
    Fig. 2): a pixel-phase bias repeats with period 1 px. ``curves`` as from
    :func:`evaluation.metrics.phase_data` with ``full=True``."""
    fig, axes, cells = _chip_grid(sorted({c for m in curves.values() for c in m}))
    for chip, ax_name, _, ax in cells:
        for k, (method, data) in enumerate(curves.items()):
            if chip in data:
                off, se = data[chip][ax_name]
                ax.plot(off, se, ".", ms=3, alpha=0.6, color=f"C{k}", label=method)
        ax.set_title(f"{chip} {ax_name}", fontsize=9)
        ax.set_ylabel("std. error [mpix]")
        ax.set_xlabel(f"offset {ax_name} [px]")
        ax.set_ylim(0, None)
    axes[0, 0].legend(fontsize=8, markerscale=3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_per_star_rms(rms: dict, path, title: str) -> Path:
    """Distributions of per-star rms about the mean position over repeats (the paper's Fig. 19),
    one row per chip, x and y columns, one histogram per method. ``rms``: {method: output of
    :func:`evaluation.metrics.per_star_rms`}."""
    fig, axes, cells = _chip_grid(sorted({c for m in rms.values() for c in m}))
    for chip, ax_name, _, ax in cells:
        vals = [v[chip][ax_name] for v in rms.values() if chip in v]
        hi = np.nanpercentile(np.concatenate(vals), 98) if vals else 1.0
        for k, (method, data) in enumerate(rms.items()):
            if chip in data:
                r = data[chip][ax_name]
                r = r[np.isfinite(r)]
                ax.hist(r, bins=40, range=(0, hi), histtype="step", color=f"C{k}",
                        label=f"{method} (median {np.median(r):.1f})")
        ax.set_title(f"{chip} {ax_name}", fontsize=9)
        ax.set_xlabel("per-star rms [mpix]")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_truth_vs_magnitude(data: dict, path, title: str) -> Path:
    """Centre minus exact truth against magnitude (simulations; the paper's Fig. 6): points for
    the first method, binned robust sigma (1.4826 MAD, blends would dominate an rms) for every
    method. ``data``: {method: output of
    :func:`evaluation.metrics.truth_vs_magnitude`}."""
    fig, axes, cells = _chip_grid(sorted({c for m in data.values() for c in m}))
    for chip, ax_name, j, ax in cells:
        for k, (method, d) in enumerate(data.items()):
            if chip not in d:
                continue
            mag, dd = d[chip][0], d[chip][1 + j]
            if k == 0:
                ax.plot(mag, dd, ",", alpha=0.3, color="0.5")
            edges = np.arange(np.floor(mag.min()), np.ceil(mag.max()) + 0.5, 0.5)
            idx = np.digitize(mag, edges)
            centres, sig = [], []
            for b in range(1, len(edges)):
                sel = idx == b
                if sel.sum() >= 20:
                    centres.append(0.5 * (edges[b - 1] + edges[b]))
                    sig.append(robust_sigma(dd[sel]))
            ax.plot(centres, sig, "-o", ms=3, color=f"C{k}", label=f"{method} robust sigma")
        ax.axhline(0, color="k", lw=0.5)
        lim = 3 * np.nanpercentile(np.abs(data[next(iter(data))][chip][1 + j]), 68)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{chip} {ax_name}", fontsize=9)
        ax.set_xlabel("instrumental magnitude")
        ax.set_ylabel(f"d{ax_name} [mpix]")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
