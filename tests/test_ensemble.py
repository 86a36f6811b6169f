"""Ensembles of centring networks (model.ensemble, `starcenter ensemble`, `generalist --members`):
one model file whose output is its members' mean, refused for members that do not fit together."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from starcenter.cubes.errors import BadArgumentError
from starcenter.model.ensemble import check_members, combine, is_current
from starcenter.model.predict import centre, load_model, shipped_model


def _copy(src: Path, dest: Path, jitter: float = 0.0, seed: int = 0) -> Path:
    """The model at ``src`` written to ``dest`` (metadata too), its weights jittered."""
    model = load_model(str(src))
    rng = np.random.default_rng(seed)
    model.set_weights([w + jitter * rng.standard_normal(w.shape).astype(w.dtype) * (np.std(w) + 1e-3)
                       for w in model.get_weights()])
    model.save(dest)
    shutil.copyfile(src.with_name(src.name + ".json"), dest.with_name(dest.name + ".json"))
    return dest


def _member(dest: Path, seed: int, chip: str = "WF3") -> Path:
    """A small untrained generalist-like network (VGG6 V1, 4 features, sigma and flux outputs)
    with the metadata of a trained one: a shipped model's calibration, a training provenance."""
    import keras

    from starcenter.model.architectures import build

    keras.utils.set_random_seed(seed)
    build("v1", 6, n_features=4, uncertainty=True, flux=True).save(dest)
    shipped = json.loads(Path(str(shipped_model("PC1", "F814W")) + ".json").read_text())  # 4 inputs
    meta = {"chip": chip, "filter": "F555W", "raster_size": 6, "normalization": "sum to 1", "target": "exact",
            "outputs": "xy+flux+sigma", "features": ["mag", "focus", "chip_x", "chip_y"], "architecture": "v1",
            "split_seed": seed, "calibration": shipped["calibration"],
            "generalist": {"label": "test", "calibration_set": {"seed": 1001}}}
    Path(str(dest) + ".json").write_text(json.dumps(meta))
    return dest


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    d = tmp_path_factory.mktemp("members")
    return [_member(d / f"m{k}.keras", seed=k) for k in range(1, 4)]


def _inputs(n: int = 64, seed: int = 1):
    rng = np.random.default_rng(seed)
    r = rng.random((n, 6, 6)).astype(np.float32) + 0.01
    r /= r.sum(axis=(1, 2), keepdims=True)
    return r, rng.uniform(-1, 1, (n, 4)).astype(np.float32), rng.uniform(-12, -8, n)


def test_an_ensemble_outputs_its_members_mean_and_says_what_it_is_made_of(members, tmp_path):
    out = combine(members, tmp_path / "ens.keras")
    r, f, mag = _inputs()
    each = np.stack([load_model(str(m)).predict((r[..., None], f), verbose=0) for m in members])
    assert np.ptp(each[:, :, :2], axis=0).max() > 1e-3  # px: the members differ
    ens = load_model(str(out)).predict((r[..., None], f), verbose=0)
    np.testing.assert_allclose(ens, each.mean(axis=0), atol=2e-5)
    meta = json.loads(Path(str(out) + ".json").read_text())
    first = json.loads(Path(str(members[0]) + ".json").read_text())
    assert meta["architecture"] == "ensemble" and [m["file"] for m in meta["ensemble"]["members"]] == \
        ["m1.keras", "m2.keras", "m3.keras"]
    assert meta["chip"] == "WF3" and meta["features"] == first["features"] and meta["outputs"] == first["outputs"]
    assert meta["generalist"] == {"label": "test"}
    assert meta["parameters"] == sum(load_model(str(m)).count_params() for m in members)
    assert "calibration_set" not in meta["generalist"]  # the ensemble is still to calibrate on its own
    assert meta["calibration"]["coef"] == first["calibration"]["coef"] and "recalibrate" in meta["calibration"]["on"]
    assert is_current(members, out) and not is_current(members[:2], out)
    res = centre(str(out), r, f, mag, gain=7.0)  # the predict path takes it as one network
    np.testing.assert_allclose(res["xy"], ens[:, :2], atol=1e-6)
    assert np.all(np.isfinite(res["sigma"]))


def test_members_that_do_not_fit_together_are_refused_by_name(members, tmp_path):
    other = _member(tmp_path / "pc1.keras", 5, chip="PC1")
    with pytest.raises(BadArgumentError, match=r"pc1.keras: differs from m1.keras in chip"):
        check_members([members[0], other])
    with pytest.raises(BadArgumentError, match="at least two"):
        check_members(members[:1])
    with pytest.raises(BadArgumentError, match="named twice"):
        check_members([members[0], members[0]])
    ens = combine(members[:2], tmp_path / "e.keras")
    with pytest.raises(BadArgumentError, match="already an ensemble"):
        check_members([ens, members[2]])
    (tmp_path / "keep.keras").write_bytes(b"not replaced")
    with pytest.raises(BadArgumentError):
        combine([members[0], other], tmp_path / "keep.keras")
    assert (tmp_path / "keep.keras").read_bytes() == b"not replaced"


def test_the_cli_combines_and_names_a_bad_member(members, tmp_path, capsys):
    from starcenter.cli import main

    assert main(["ensemble", str(tmp_path / "c.keras"), str(members[0]), str(members[1])]) == 0
    assert is_current(members[:2], tmp_path / "c.keras")
    other = str(_member(tmp_path / "pc1.keras", 5, chip="PC1"))
    assert main(["ensemble", str(tmp_path / "d.keras"), str(members[0]), other]) != 0
    assert "differs from m1.keras in chip" in capsys.readouterr().err and not (tmp_path / "d.keras").exists()


def test_generalist_members_train_on_two_sets_and_adopt_an_earlier_single_model(members, tmp_path, monkeypatch):
    """`starcenter generalist --members 3` after a single-model run: that network becomes member 1
    (not trained again; its history moves with it), members 2 and 3 train on a second set (seed + 1) with initial seeds 1
    and 2, the ensemble is combined; a rerun trains and combines nothing."""
    from starcenter import generalist as G
    from starcenter.model import parallel

    built, trained = [], []
    monkeypatch.setattr(G, "build_set", lambda path, cfg, *a: built.append((path.name, cfg.seed)) or path)

    def fake_train(jobs, workers=None, progress=None):
        for k, job in enumerate(jobs):
            trained.append((Path(job["out"]).name, Path(job["store"]).name, job["seed"]))
            _copy(members[0], Path(job["out"]), jitter=0.05, seed=10 + len(trained))

    monkeypatch.setattr(parallel, "train_many", fake_train)
    out = tmp_path / "gen"
    out.mkdir()
    _copy(members[0], out / G.model_name("WF3", "F555W"))  # the single model of an earlier run
    (out / (G.model_name("WF3", "F555W") + ".history.csv")).write_text("epoch,loss\n0,1.0\n")
    run = lambda: G.run_generalist(out, chips=("WF3",), members=3, calibration_exposures=0,  # noqa: E731
                                   progress=False, seed=1)
    assert run() == [out / "generalist-WF3-F555W.keras"]
    assert built == [("train-F555W-seed2.zarr", 2)]
    assert trained == [("generalist-WF3-F555W-m2.keras", "train-F555W-seed2.zarr", 1),
                       ("generalist-WF3-F555W-m3.keras", "train-F555W-seed2.zarr", 2)]
    parts = [out / G.member_name("WF3", "F555W", k) for k in (1, 2, 3)]
    assert (out / (parts[0].name + ".history.csv")).read_text().startswith("epoch")  # moved with it
    assert is_current(parts, out / "generalist-WF3-F555W.keras")
    stamp = (out / "generalist-WF3-F555W.keras").stat().st_mtime_ns
    run()
    assert len(trained) == 2 and len(built) == 1
    assert (out / "generalist-WF3-F555W.keras").stat().st_mtime_ns == stamp


def test_forward_gives_what_keras_predict_gives_in_batches_of_any_size(members, tmp_path):
    """starcenter's inference loop (model.predict.forward, used instead of ``model.predict``, whose
    speed on an ensemble halved at random) returns the same outputs, whatever the batch split."""
    from starcenter.model.predict import forward

    model = load_model(str(combine(members, tmp_path / "ens.keras")))
    r, f, _ = _inputs(n=70)
    want = model.predict((r[..., None], f), verbose=0)
    for batch in (70, 32, 7):
        np.testing.assert_allclose(forward(model, (r[..., None], f), batch), want, atol=1e-6)
    assert forward(model, (r[:0, ..., None], f[:0])).shape == (0, want.shape[1])


def test_a_store_any_member_trained_on_is_scored_on_that_members_test_stars(tmp_path, monkeypatch):
    """split_record: an ensemble whose second member (or one of whose members' several training
    sets) learnt from this store is 'trained here', with that member's split seed."""
    from starcenter.model import bridge
    from starcenter.model.predict import split_record

    tiny_store = tmp_path / "store.zarr"  # its identity, as bridge.training_identity reads it
    monkeypatch.setattr(bridge, "training_identity", lambda store, chip: {"data": "d", "stars": "s"})
    here = {"identity": {"data": "d", "stars": "s"}}
    elsewhere = {"identity": {"data": "another", "stars": "another"}}
    meta = {"chip": "WF3", "split_seed": 0, "dataset": elsewhere,
            "ensemble": {"members": [{"split_seed": 0, "dataset": elsewhere},
                                     {"split_seed": 7, "dataset": here}]}}
    rec = split_record(meta, tiny_store, "WF3")
    assert rec["trained_here"] and rec["same_stars"] and rec["seed"] == 7
    meta["ensemble"]["members"][1] = {"split_seed": 0, "dataset": elsewhere,
                                      "datasets": [elsewhere, {**here, "split_seed": 3}]}
    assert split_record(meta, tiny_store, "WF3")["seed"] == 3
    meta["ensemble"]["members"][1]["datasets"] = [elsewhere]
    assert not split_record(meta, tiny_store, "WF3")["trained_here"]
