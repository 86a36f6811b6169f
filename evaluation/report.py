"""``starcenter evaluate``: figures, metrics.json and report.md for any store.

Simulations get the error against exact truth; every store with several exposures gets the
standard error of the transformations against offset phase per centring method (classical and
every centers/NAME); a store with one exposure (the real ω Cen sample) gets the fractional-pixel
histograms with a chi-square test against uniform. Figures say what they were made from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.evaluation.metrics import (
    CLASSICAL,
    CLASSICAL_KEPT,
    CLASSICAL_TEST,
    flatness,
    fractional_histograms,
    network_methods,
    per_star_rms,
    phase_curve,
    phase_data,
    scopes,
    single_measurement_mpix,
    truth_vs_magnitude,
)
from starcenter.evaluation.plots import (
    plot_per_star_rms,
    plot_phase_curves,
    plot_std_err_vs_offset,
    plot_truth_vs_magnitude,
)
from starcenter.evaluation.truth import efficiency, truth_errors

#: The seed paper's published numbers, for the report's comparison table (all mpix).
PAPER = {
    "real NGC 104, DL single-measurement error": "8.5-11 (VGG6), ~20 (ePSF/hst1pass)",
    "simulations, natural sample (mags 15-18)": "7-8 PC, 6-7 WF (VGG6)",
    "simulations, bright well-measured stars": "5 PC, 3 WF (VGG6)",
    "classical pixel-phase W/V curves (real)": "rise to 20-40 mpix at mid phase",
}


def methods_in(store) -> list[str]:
    """Centring methods present: 'classical', every centers/NAME group and, where a network was
    trained on this store, the classical centres of its test stars (:data:`CLASSICAL_TEST`);
    where one was trained on other data (scored on every raster star), the classical centres of
    the raster stars (:data:`CLASSICAL_KEPT`): each network beside the classical fit of its stars."""
    out = ["classical"] if st.has_group(store, schema.TRANSFORMS) else []
    nets = network_methods(store)
    if out and nets:
        seen = [[s.seen is not None for s in scopes(store, m).values()] for m in nets]
        if any(map(any, seen)):
            out.append(CLASSICAL_TEST)
        if not all(map(any, seen)):
            out.append(CLASSICAL_KEPT)
    return out + nets


def scoring(store, methods) -> dict:
    """{method: {chip: what its figures are computed on}} (the report's honesty table)."""
    return {m: {chip: s.label for chip, s in scopes(store, m).items()} for m in methods}


def evaluate(store, report_dir, title: str | None = None) -> dict:
    """Write figures, metrics.json and report.md for ``store`` into ``report_dir``."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    ex = st.open_group(store, schema.EXPOSURES)
    kind = "SIMULATION" if ex.attrs.get("source") == "simulation" else "REAL DATA"
    title = title or f"{kind}: {Path(str(store)).name}, WFPC2 {ex.attrs.get('filter')}"
    metrics: dict = {"store": str(store), "kind": kind, "filter": ex.attrs.get("filter"), "methods": {}}
    figures = []
    methods = methods_in(store)
    if ex.sizes[schema.EXPOSURE] > 2 and "classical" in methods:
        curves = {}
        for m in methods:
            data = phase_data(store, m)
            curves[m] = data
            per_chip = {}
            for chip, axes in data.items():
                per_chip[chip] = {}
                for ax, (ph, se) in axes.items():
                    _, med, _ = phase_curve(ph, se)
                    per_chip[chip][ax] = {"single_measurement_mpix": single_measurement_mpix(se),
                                          "flatness": round(flatness(ph, se), 3),
                                          "curve_mpix": np.round(med, 2).tolist()}
            metrics["methods"].setdefault(m, {})["transforms"] = per_chip
        figures.append(plot_phase_curves(curves, report_dir / "std_error_vs_offset_phase.png",
                                         f"{title}: standard error vs offset phase"))
        full = {m: phase_data(store, m, full=True) for m in methods}
        figures.append(plot_std_err_vs_offset(full, report_dir / "std_error_vs_offset.png",
                                              f"{title}: standard error vs offset (Fig. 2 style)"))
        if st.has_group(store, schema.RASTERS):
            rms = {m: per_star_rms(store, m) for m in methods}
            for m, per_chip in rms.items():
                metrics["methods"][m]["per_star_rms"] = {
                    chip: {"median_mpix": [round(float(np.nanmedian(v[ax])), 2) for ax in "xy"],
                           "n_stars": int(len(v["x"]))} for chip, v in per_chip.items() if len(v["x"])}
            if any(len(v["x"]) for per_chip in rms.values() for v in per_chip.values()):
                figures.append(plot_per_star_rms(rms, report_dir / "per_star_rms.png",
                                                 f"{title}: per-star rms over repeats (Fig. 19 style)"))
    if st.has_group(store, schema.RASTERS) and methods:
        metrics["scoring"] = scoring(store, [m for m in methods if m != "classical"])
    if st.has_group(store, schema.RASTERS) and "target_exact" in st.open_group(store, schema.RASTERS):
        metrics["truth"] = truth_errors(store, methods)
        seen = [m for m in network_methods(store) if any(s.seen is not None for s in scopes(store, m).values())]
        if seen:  # shown for the overfitting gap only, labelled so
            metrics["truth_in_sample"] = truth_errors(store, seen, stars="seen")
        figures.append(plot_truth_vs_magnitude(
            {m: truth_vs_magnitude(store, m) for m in methods}, report_dir / "truth_vs_magnitude.png",
            f"{title}: centre - exact truth vs magnitude (Fig. 6 style)"))
        metrics["cramer_rao"] = efficiency(store, methods)
        metrics["uncertainty"] = coverage_tables(store, methods)
    if ex.sizes[schema.EXPOSURE] <= 2 and st.has_group(store, schema.DETECTIONS):
        extra = [CLASSICAL_KEPT] if st.has_group(store, schema.RASTERS) and len(methods) > 1 \
            and CLASSICAL_KEPT not in methods else []
        for m in (methods or ["classical"]) + extra:
            metrics["methods"].setdefault(m, {})["fractional_pixel"] = fractional_histograms(store, m)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (report_dir / "report.md").write_text(markdown(metrics, figures, title))
    return metrics


def _ours(metrics: dict) -> list[str]:
    """This store's counterparts of the PAPER rows (single-measurement errors, ranges over chips
    and axes; '-' where the store cannot give one)."""
    def sm(pred):
        v = [a[ax]["single_measurement_mpix"] for m, r in metrics["methods"].items() if pred(m)
             for a in r.get("transforms", {}).values() for ax in "xy"]
        return v

    def rng(v):
        return f"{min(v):.1f}-{max(v):.1f}" if v else "-"

    net, cla = sm(lambda m: m not in CLASSICAL), sm(lambda m: m == "classical")
    truth = metrics.get("truth", {})
    net_t = [x for m, per in truth.items() if m not in CLASSICAL for r in per.values() for x in r["robust_mpix"]]
    curve = [max(a[ax]["curve_mpix"]) for a in metrics["methods"].get("classical", {})
             .get("transforms", {}).values() for ax in "xy"]
    return [f"{rng(net)} (networks), {rng(cla)} (classical)" if net or cla else "-",
            f"{rng(net_t)} (networks, robust error vs exact truth, all magnitudes, scored stars)" if net_t else "-",
            "-",
            f"classical curve maxima {rng(curve)} mpix" if curve else "-"]


def _truth_table(per_method: dict, heading: str, suffix: str) -> list[str]:
    lines = [heading, "", "| method | chip | rms x / y [mpix] | robust x / y [mpix] | n |",
             "|---|---|---|---|---|"]
    for m, per in per_method.items():
        for chip, r in per.items():
            lines.append(f"| {m}{suffix} | {chip} | {r['rms_mpix'][0]} / {r['rms_mpix'][1]} | "
                         f"{r['robust_mpix'][0]} / {r['robust_mpix'][1]} | {r['n']} |")
    return lines + [""]


def markdown(metrics: dict, figures, title: str) -> str:
    """The report's text: one section per figure family, each labelled with its data kind."""
    lines = []
    for section in (_header, _scoring, _transforms_table, _rms_table, _truth_tables, _cramer_rao_table,
                    _coverage_table, _fractional_tables, _paper_table):
        lines += section(metrics) if section is not _header else _header(metrics, title)
    lines += [""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    return "\n".join(lines) + "\n"


def _header(metrics: dict, title: str) -> list[str]:
    """Title and the data-kind line."""
    lines = [f"# starcenter report — {title}", "",
             f"**Data: {metrics['kind']}.** " + ("Every number below comes from simulated exposures "
                                                "with exact truth, not from real observations."
                                                if metrics["kind"] == "SIMULATION" else
                                                "Real exposures: no truth; only truth-free checks."), ""]
    return lines


def _scoring(metrics: dict) -> list[str]:
    """What each method is scored on (the networks' split)."""
    lines = []
    if metrics.get("scoring"):
        lines += ["## What each method is scored on", "",
                  "A network is judged only on stars it never saw: on the store it was trained on, "
                  "its figures below use its test stars alone; "
                  f"`{CLASSICAL_TEST}` is the classical centring of those same stars, `{CLASSICAL_KEPT}` that "
                  "of every raster star (the stars of a network trained on other data; `classical`'s "
                  "transformations use every detected star).", "",
                  "| method | chip | stars scored |", "|---|---|---|"]
        lines += [f"| {m} | {chip} | {label} |" for m, per in metrics["scoring"].items()
                  for chip, label in per.items()]
        lines.append("")
    return lines


def _transforms_table(metrics: dict) -> list[str]:
    """Standard error of the transformations against offset phase."""
    lines = []
    rows = []
    for m, res in metrics["methods"].items():
        for chip, axes in res.get("transforms", {}).items():
            rows.append(f"| {m} | {chip} | {axes['x']['single_measurement_mpix']} / {axes['y']['single_measurement_mpix']} "
                        f"| {axes['x']['flatness']} / {axes['y']['flatness']} |")
    if rows:
        lines += ["## Standard error of the transformations against offset phase", "",
                  "| method | chip | single-measurement error x / y [mpix] | flatness x / y (max/min) |",
                  "|---|---|---|---|", *rows, ""]
    return lines


def _rms_table(metrics: dict) -> list[str]:
    """Per-star rms over repeats."""
    lines = []
    rows = [f"| {m} | {chip} | {r['median_mpix'][0]} / {r['median_mpix'][1]} | {r['n_stars']} |"
            for m, res in metrics["methods"].items() for chip, r in res.get("per_star_rms", {}).items()]
    if rows:
        lines += ["## Per-star rms about the mean position over repeats (Fig. 19 style)", "",
                  "| method | chip | median per-star rms x / y [mpix] | stars |", "|---|---|---|---|",
                  *rows, ""]
    return lines


def _truth_tables(metrics: dict) -> list[str]:
    """Errors against exact truth: scored stars, then the in-sample gap."""
    lines = []
    for key, heading, suffix in (
            ("truth", "## Error against exact truth (simulation; networks on their scored stars)", ""),
            ("truth_in_sample", "## IN-SAMPLE, for the overfitting gap only: error against exact truth "
             "on the stars each network trained on or chose its epoch on (not a precision figure)",
             " (in-sample)")):
        if key in metrics:
            lines += _truth_table(metrics[key], heading, suffix)
    return lines


def _cramer_rao_table(metrics: dict) -> list[str]:
    """Efficiency against the Cramér–Rao bound."""
    lines = []
    if "cramer_rao" in metrics:
        lines += ["## Against the Cramér–Rao bound (simulation; x, true ePSF, 5x5 fit of x, y, flux, sky)", "",
                  "Efficiency = 1 / (robust sigma of each error over its own star's bound)², 1 at the bound "
                  "(bound and robust error: rms bound and robust sigma of the bin's stars). The bound holds for unbiased estimators using "
                  "the 5x5 box; a network is a biased (shrinking) estimator reading the whole raster, so an "
                  "efficiency above 1 in a faint bin is not a violation.", "",
                  "| method | chip | flux [e-] | n | bound [mpix] | robust error [mpix] | efficiency |",
                  "|---|---|---|---|---|---|---|"]
        for m, per in metrics["cramer_rao"].items():
            for chip, rows in per.items():
                for r in rows:
                    lines.append(f"| {m} | {chip} | {r['flux_e'][0]:.0e}-{r['flux_e'][1]:.0e} | {r['n']} | "
                                 f"{r['bound_mpix']} | {r['robust_error_mpix']} | {r['efficiency']} |")
        lines.append("")
    return lines


def coverage_tables(store, methods) -> dict:
    """Simulations: {method: evaluation.uncertainty.table} for the classical Fisher sigma and
    every network that predicts sigma (on its scored stars, against exact truth)."""
    from starcenter.evaluation.uncertainty import CLASSICAL_FISHER, errors_and_sigmas, table

    ras = st.open_group(store, schema.RASTERS)
    out = {}
    if "prelim_err" in ras and np.isfinite(ras["prelim_err"].values).any():
        out[CLASSICAL_FISHER] = table(errors_and_sigmas(store, CLASSICAL_FISHER))
    for m in network_methods(store):
        cen = st.open_group(store, schema.centers_group(m))
        if m in methods and "sigma" in cen and np.isfinite(cen["sigma"].values).any():
            out[m] = table(errors_and_sigmas(store, m))
    return out


def _coverage_table(metrics: dict) -> list[str]:
    """Coverage of the per-star uncertainties (simulation)."""
    rows = [f"| {m} | {chip} | {ax} | {k} | {r['n']} | {r['cov1_pct']} | {r['cov2_pct']} | {r['spearman']} | "
            f"{r['mean_sigma_mpix']} / {r['rms_mpix']} |"
            for m, per in metrics.get("uncertainty", {}).items() for chip, axes in per.items()
            for ax, bins in axes.items() for k, r in bins.items() if "cov1_pct" in r]
    if not rows:
        return []
    return ["## Per-star uncertainties: coverage against exact truth (simulation)", "",
            "Fraction of stars whose error (up to a translation per exposure) is within +-1 sigma "
            "(nominal 68.3 %) and +-2 sigma (95.4 %); Spearman rank correlation of sigma with |error|. "
            "classical-fisher is the fit's noise-only Fisher sigma: an ePSF mismatch makes it too small.", "",
            "| method | chip | axis | flux [e-] | n | +-1 sigma [%] | +-2 sigma [%] | Spearman | mean sigma / rms [mpix] |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def _fractional_tables(metrics: dict) -> list[str]:
    """Fractional-pixel histograms (the truth-free check)."""
    lines = []
    for m, res in metrics["methods"].items():
        if "fractional_pixel" in res:
            lines += [f"## Fractional-pixel histograms, {m} ({metrics['kind']})", "",
                      "| chip | n | chi-square p (x / y) vs uniform | x histogram (10 bins from -0.5) |",
                      "|---|---|---|---|"]
            for chip, h in res["fractional_pixel"].items():
                lines.append(f"| {chip} | {h['n']} | {h['p_uniform_x']:.2g} / {h['p_uniform_y']:.2g} | "
                             f"{' '.join(map(str, h['hist_x']))} |")
            if any(h.get("cross_validated") for h in res["fractional_pixel"].values()):
                lines += ["", "Self-calibrated centres (`starcenter phase`): each half of the stars "
                              "corrected with the coefficients of the other half (cross-validated)."]
            lines.append("")
    return lines


def _paper_table(metrics: dict) -> list[str]:
    """The seed paper's published numbers beside this store's."""
    lines = ["## The seed paper's published numbers beside this store's", "",
              f"Paper values are REAL data unless labelled simulations; this store's are "
              f"**{metrics['kind']}**.", "", f"| quantity | paper | this store ({metrics['kind']}) |",
              "|---|---|---|"]
    lines += [f"| {k} | {v} | {ours} |" for (k, v), ours in zip(PAPER.items(), _ours(metrics))]
    return lines
