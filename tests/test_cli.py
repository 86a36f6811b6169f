import json
import subprocess
import sys
from pathlib import Path

import pytest

from starcenter import cli as starcenter

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "starcenter", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, problem", [
    (["--chips", "PC1,XX9"], "argument --chips: expected comma-separated chips among PC1, WF2, WF3, WF4"),
    (["--filter", "F439W"], "argument --filter: expected one of F555W, F814W"),
    (["--exposures", "1"], "argument --exposures: expected an integer in 2..100000"),
])
def test_bad_arguments_one_line_error_nothing_written(tmp_path, args, problem):
    out = tmp_path / "bad.zarr"
    r = run_cli("simulate", str(out), *args, "--scheduler", "synchronous")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and problem in err[0] and err[0].startswith("starcenter simulate: error:")
    assert not out.exists()


def test_simulate_then_resume_then_mismatch(tmp_path):
    out = tmp_path / "s.zarr"
    base = ["simulate", str(out), "--exposures", "2", "--chips", "WF3", "--scheduler",
            "synchronous", "--quiet", "--seed", "5"]
    r = run_cli(*base)
    assert r.returncode == 0, r.stderr
    assert "2 chunks written, 0 already done" in r.stdout
    r = run_cli(*base)
    assert "0 chunks written, 2 already done" in r.stdout
    r = run_cli(*base, "--focus-um", "0")
    assert r.returncode == 2 and "other parameters" in r.stderr and "focus_um" in r.stderr


def test_parser_lists_subcommands():
    text = starcenter.build_parser().format_help()
    assert "simulate" in text and "demo" in text


def test_demo_end_to_end(tmp_path):
    """README's main command, shrunk (6 exposures, 1 epoch): every stage of the chain runs on a
    LocalCluster, the reports are written, and a rerun reuses what is done."""
    out = tmp_path / "demo"
    r = run_cli("demo", str(out), "--exposures", "6", "--epochs", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dask dashboard: http://127.0.0.1:" in r.stdout
    assert "SIMULATED data" in r.stdout and "REAL DATA" in r.stdout
    png = out / "exposure0.png"
    assert png.exists() and png.stat().st_size > 50_000
    for rep in ("report", "report-other-epoch", "report-real"):
        text = (out / rep / "report.md").read_text()
        assert ("SIMULATION" in text) == (rep != "report-real")
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"classical", "classical-test-stars", "vgg6-v1", "vgg6-v2"} <= set(metrics["methods"])
    for m, res in metrics["methods"].items():  # flatness is max / min of the binned curve
        for chip, axes in res.get("transforms", {}).items():
            for ax, res_ax in axes.items():
                curve = [v for v in res_ax["curve_mpix"] if v == v]
                # the stored curve is rounded to 0.01 mpix: max/min carries 0.005/min + 0.005/max
                rel = 0.005 / min(curve) + 0.005 / max(curve) + 1e-3
                assert res_ax["flatness"] == pytest.approx(max(curve) / min(curve), rel=rel, abs=2e-3), (m, chip, ax)
    # the networks are scored on their test stars only; on another store, on every star
    for chip in ("PC1", "WF3"):
        assert metrics["scoring"]["vgg6-v2"][chip].startswith("test stars only")
        n_test = metrics["truth"]["vgg6-v2"][chip]["n"]
        assert n_test == metrics["truth"]["classical-test-stars"][chip]["n"]
        assert 0.1 < n_test / metrics["truth"]["classical"][chip]["n"] < 0.3
    other = json.loads((out / "report-other-epoch" / "metrics.json").read_text())
    assert other["scoring"]["vgg6-v2"]["WF3"].startswith("all stars: the model was trained on other data")
    assert "classical-test-stars" not in other["methods"]
    for rows in metrics["cramer_rao"]["classical"].values():  # efficiency <= 1 up to noise
        assert all(0 < r["efficiency"] < 1.5 and r["bound_mpix"] > 0 for r in rows)
    real = json.loads((out / "report-real" / "metrics.json").read_text())
    assert real["kind"] == "REAL DATA" and "WF3" in real["methods"]["vgg6-v2"]["fractional_pixel"]
    # the shipped generalists: on every chip of the fitted-ePSF copies, or a note saying why not
    summary = json.loads((out / "summary.json").read_text())
    assert {"classical-fitted", "generalist"} <= set(summary["demo"]["methods"])
    centred = set(summary["real"]["methods"].get("generalist", {}).get("fractional_pixel", {}))
    said = {note.split(":")[0] for note in summary["real"].get("notes", [])}
    assert centred | said == {"PC1", "WF2", "WF3", "WF4"} and not centred & said, (centred, said)
    assert all(f"{chip}: PSF-epoch fit flagged" in r.stdout for chip in said)
    model = out / "models" / "WF3_v2.keras"
    stamp = model.stat().st_mtime_ns
    again = run_cli("demo", str(out), "--exposures", "6", "--epochs", "1", "--scheduler", "synchronous")
    assert again.returncode == 0, again.stderr[-3000:]
    # a rerun trains, simulates and detects nothing again, and reports the same figures
    assert "training VGG6" not in again.stdout and model.stat().st_mtime_ns == stamp
    assert "simulate" not in again.stdout and "detect " not in again.stdout, again.stdout[-2000:]
    assert json.loads((out / "report" / "metrics.json").read_text()) == metrics


def test_detect_command(tmp_path):
    out = tmp_path / "d.zarr"
    base = ["--scheduler", "synchronous", "--quiet"]
    assert run_cli("simulate", str(out), "--exposures", "2", "--chips", "WF3", *base).returncode == 0
    r = run_cli("detect", str(out), "--psf", "library", *base)
    assert r.returncode == 0, r.stderr
    assert "2 chunks written" in r.stdout and "largest count" in r.stdout
    r = run_cli("detect", str(out), "--psf", "true", *base)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = run_cli("detect", str(out), "--psf", "true", "--overwrite", *base)
    assert r.returncode == 0, r.stderr
    # a refusal comes before any cluster: no dashboard, no lock; --quiet hides the dashboard line
    r = run_cli("detect", str(out), "--psf", "library", "--workers", "1", "--dashboard-address", ":0")
    assert r.returncode == 2 and "--overwrite" in r.stderr and "dashboard" not in r.stdout
    r = run_cli("detect", str(out), "--psf", "true", "--quiet", "--workers", "1", "--dashboard-address", ":0")
    assert r.returncode == 0 and "dashboard" not in r.stdout and len(r.stdout.strip().splitlines()) == 1


def test_catalog_command(tmp_path):
    out = tmp_path / "c.zarr"
    base = ["--scheduler", "synchronous", "--quiet"]
    assert run_cli("simulate", str(out), "--exposures", "3", "--chips", "WF3", *base).returncode == 0
    assert run_cli("detect", str(out), *base).returncode == 0
    r = run_cli("catalog", str(out), "--raster-size", "5", *base)
    assert r.returncode == 0, r.stderr
    assert "rasters of 5x5 px" in r.stdout
    r = run_cli("catalog", str(out), "--reference", "9", *base)
    assert r.returncode == 2 and "reference exposure 9" in r.stderr


def test_ingest_command_reports_bad_files(tmp_path):
    bad = tmp_path / "x_c0m.fits"
    bad.write_bytes(b"garbage")
    r = run_cli("ingest", str(tmp_path / "s.zarr"), str(bad))
    assert r.returncode == 2
    assert "x_c0m.fits: not a readable FITS/GEIS file" in r.stderr and "0 exposures ingested" in r.stdout
    r = run_cli("ingest", str(tmp_path / "s.zarr"), str(tmp_path / "nothere"))
    assert r.returncode == 2 and "no such file or directory" in r.stderr


def test_fetch_mast_offline_fails_at_once(tmp_path, monkeypatch):
    # this machine has no network: the command must say so at once and write nothing
    import time

    t0 = time.time()
    r = run_cli("fetch-mast", str(tmp_path / "f"), "--proposal", "8267", "--filter", "F555W")
    if r.returncode == 0:
        pytest.skip("MAST reachable from here: the offline path cannot be exercised")
    assert r.returncode == 2 and "cannot reach MAST" in r.stderr and time.time() - t0 < 30
    assert not (tmp_path / "f").exists()


def test_second_writer_is_refused_by_the_lock(tmp_path):
    import os
    import socket

    store = tmp_path / "s.zarr"
    lock = tmp_path / "s.zarr.lock"
    lock.write_text(f"{os.getpid()} {socket.gethostname()} starcenter detect")  # a live process holds it
    r = run_cli("simulate", str(store), "--exposures", "2", "--chips", "WF3", "--scheduler", "synchronous")
    assert r.returncode == 2 and "is being written by `starcenter detect`" in r.stderr
    assert not store.exists()
    lock.write_text(f"999999999 {socket.gethostname()} starcenter detect")  # stale: no such process
    r = run_cli("simulate", str(store), "--exposures", "2", "--chips", "WF3", "--scheduler",
                "synchronous", "--quiet")
    assert r.returncode == 0, r.stderr
    assert not lock.exists()
