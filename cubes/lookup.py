"""The readers every later stage and the evaluation share: the one ePSF lookup per (exposure,
chip) (:func:`chip_epsfs`) and one (exposure, chip) of detections (:func:`read_detections`).
Nothing here writes.
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.classical.focus import interpolate
from starcenter.cubes.errors import StarcenterError, StoreMismatchError
from starcenter.cubes.params import DetectParams
from starcenter.cubes.sim.optics import PSFParams, get_epsf


def chip_epsfs(store, params: DetectParams):
    """The one ePSF lookup per (exposure, chip): the ePSF a detections group is fitted with.

    The true ePSF (simulations) follows each exposure's focus (linear between the stored focus
    nodes, chip-centre field node); a store without a psf group (real data) gets the physical
    model's library ePSF.

    Parameters
    ----------
    store : str or path
        The store.
    params : DetectParams
        Its ``psf`` names the kind: library (the physical model's, or with ``library`` an
        Anderson STDPSF file's), true, empirical, catalog or fitted (the psf stage's focus per
        exposure and chip; the library where that fit was flagged).

    Returns
    -------
    (list of str, dict)
        The chips, and ``{chip: callable(exposure index) -> EffectivePSF}``.
    """
    ex = st.open_group(store, schema.EXPOSURES)
    chips = [str(c) for c in ex[schema.CHIP].values]
    filt = ex.attrs.get("filter")
    have_psf = st.has_group(store, schema.PSF)
    psf = st.open_group(store, schema.PSF) if have_psf else None
    os_ = int(psf.attrs["oversampling"]) if have_psf else schema.OVERSAMPLING
    out = {}
    for k, chip in enumerate(chips):
        if params.psf == "library" and params.library:
            from starcenter.cubes.archive.stdpsf import read_stdpsf

            e = read_stdpsf(params.library, chip, filt)
            out[chip] = lambda exp, e=e: e
        elif params.psf == "library":
            e = (EffectivePSF(psf["library"].sel(chip=chip).values, os_) if have_psf and "library" in psf
                 else get_epsf(PSFParams(chip, filt)))
            out[chip] = lambda exp, e=e: e
        elif params.psf == "true":
            if not have_psf or "true" not in psf:
                raise StoreMismatchError(st.store_path(store), "has no true ePSF (only simulations "
                                         "do); use --psf library or empirical")
            true = psf["true"].sel(chip=chip)
            mid = true.sizes[schema.FIELD_Y] // 2
            nodes = true.isel({schema.FIELD_Y: mid, schema.FIELD_X: mid}).values
            focus = psf[schema.FOCUS].values
            exp_focus = ex["focus"].values if "focus" in ex.coords else np.full(ex.sizes["exposure"], focus[0])

            node_psfs = [EffectivePSF(n, os_) for n in nodes]

            def true_for(exp, node_psfs=node_psfs, focus=focus, exp_focus=exp_focus):
                return interpolate(focus, node_psfs, exp_focus[exp])  # linear in focus, clamped

            out[chip] = true_for
        elif params.psf == "fitted":
            out[chip] = _fitted(store, k, chip, filt, os_ if have_psf else schema.OVERSAMPLING)
        else:
            kind = params.psf
            if have_psf and kind in psf and chip in psf[kind][schema.CHIP].values:
                e = EffectivePSF(psf[kind].sel(chip=chip).values, os_)
            else:
                raise StarcenterError(f"{kind} ePSF missing: build_{kind}_psfs first")
            out[chip] = lambda exp, e=e: e
    return chips, out


def true_star_epsfs(store, chip: str):
    """Simulations: the true ePSF of every star of ``chip``, as the simulator drew it.

    Returns ``(epsfs, weights)``: ``epsfs(exposure index)`` gives the exposure's (n_fy, n_fx) true
    ePSFs at the field nodes (the store's psf group, linear in focus between its nodes: the
    simulator's ``ChipPSFs.for_exposure``), and ``weights(x, y)`` the (n_fy * n_fx, n) weights of
    those ePSFs (raveled) for stars at true (x, y) (px), bilinear between the nodes: a star's own
    ePSF is their weighted sum. Needs the psf group's ``true`` nodes (simulations only).
    """
    from starcenter.cubes.sim.truepsf import ChipPSFs, field_weights

    psf = st.open_group(store, schema.PSF) if st.has_group(store, schema.PSF) else None
    if psf is None or "true" not in psf:
        raise StoreMismatchError(st.store_path(store), "has no true ePSF (only simulations do)")
    true = psf["true"].sel(chip=chip).values  # (focus, field_y, field_x, ey, ex)
    nodes = np.empty(true.shape[:3], dtype=object)
    for idx in np.ndindex(nodes.shape):
        nodes[idx] = EffectivePSF(true[idx], int(psf.attrs["oversampling"]))
    field = psf[schema.FIELD_Y].values
    grid = ChipPSFs(None, nodes, psf[schema.FOCUS].values, field)
    exp_focus = st.open_group(store, schema.EXPOSURES)["focus"].values  # before the chip offset, as nodes

    def weights(x, y) -> np.ndarray:
        wy, wx = field_weights(np.asarray(y, float), field), field_weights(np.asarray(x, float), field)
        return (wy[:, None, :] * wx[None, :, :]).reshape(-1, wy.shape[1])

    return (lambda exp: grid.for_exposure(float(exp_focus[exp]))), weights


def _fitted(store, c: int, chip: str, filt: str, os_: int):
    """``exposure -> ePSF`` from the psf_fit group: the model at the exposure's fitted focus
    (linear between the stored focus nodes), over the chip (a FieldEPSF) when the fit used the
    field-dependent model; the library ePSF where the fit was flagged."""
    from starcenter.cubes.classical.fieldpsf import FieldEPSF, lattice_epsf
    from starcenter.cubes.classical.focus import diffuse

    if not st.has_group(store, schema.PSF_FIT) or "epsf" not in st.open_group(store, schema.PSF_FIT):
        raise StoreMismatchError(st.store_path(store), "has no fitted PSF: run `starcenter psf STORE "
                                 "--fit focus` first")
    fit = st.open_group(store, schema.PSF_FIT)
    grid = [round(float(f), 6) for f in fit[schema.FOCUS_NODE].values]
    arr = fit["epsf"].sel(chip=chip).values
    nodes = {(f, j, k): EffectivePSF(arr[i, j, k], os_) for i, f in enumerate(grid)
             for j in range(arr.shape[1]) for k in range(arr.shape[2])}
    step = float(fit.attrs.get("focus_step", np.diff(grid).min() if len(grid) > 1 else 1.0))
    focus = fit["focus"].values[:, c]
    diffusion = fit["diffusion"].values[:, c] if "diffusion" in fit else np.full(focus.shape, np.nan)
    library = get_epsf(PSFParams(chip, filt))
    field = arr.shape[1] > 1

    def fitted_for(exp):
        f, d = focus[exp], diffusion[exp]
        if not np.isfinite(f):
            return library
        d = float(d) if np.isfinite(d) else 0.0  # fit "focus": the model's own diffusion
        if field:
            return FieldEPSF(lambda g, j, k: diffuse(nodes[round(g, 6), j, k], d), f, step)
        return diffuse(lattice_epsf(lambda g: nodes[round(g, 6), 0, 0], f, step), d)

    return fitted_for


def read_detections(root, exposure: int, chip: int) -> dict:
    """One (exposure, chip) of the detections group as numpy arrays trimmed to ``count``.

    Parameters
    ----------
    root : zarr.Group
        The store's root group.
    exposure, chip : int
        Indices.

    Returns
    -------
    dict
        x, y (px), q, flags, saturated, mag (mag), flux (DN), and x_err, y_err (px) where the
        detections have them (stores made before uncertainties were written: absent).
    """
    g = root[schema.DETECTIONS]
    n = int(g["count"][exposure, chip])
    names = ("x", "y", "q", "flags", "saturated", "mag", "flux") + tuple(k for k in ("x_err", "y_err") if k in g)
    return {k: np.asarray(g[k][exposure, chip, :n]) for k in names}
