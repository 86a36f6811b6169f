"""Property-based fuzzing of the command line (Hypothesis, issue #16).

For every subcommand, random combinations of its options with random values, at least one of
them bad (negative, zero, NaN, huge, empty, unicode, a file where a store is expected): the
command must exit 2 with one line, no traceback, no dashboard, and no new or changed file.
The default suite runs FUZZ_EXAMPLES examples per subcommand; ``STARCENTER_FUZZ_EXAMPLES=2000``
(benchmarks/fuzz_cli.py) runs a longer search.
"""

from __future__ import annotations

import json
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as S  # noqa: E402

from .test_bad_input import run, snapshot  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("STARCENTER_FUZZ_EXAMPLES", "25"))

WEIRD = ["", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "-0", "1e308", "-1e308", "99999999999999999999",
         "abc", "ünïcødé", "数字", "1,2", "..", "/", "1.5.2", "0x10", "--", "\t"]
INT_BAD = ["-5", "-1", "1.5", "abc", "", "nan", "1e3", "9" * 30, "٣"]
FLOAT_BAD = ["nan", "inf", "-inf", "abc", "", "1e400", "--3"]
#: Per subcommand: (positional arguments, {option: (good values, bad values)}).
COMMANDS = {
    "simulate": ([["{t}/new.zarr", "{t}/file.txt", "{t}/sub/dir/new.zarr", "{t}/ü.zarr"]], {
        "--seed": (["0", "7"], INT_BAD), "--exposures": (["2", "3"], INT_BAD + ["0", "1"]),
        "--focus-um": (["0", "-2.5"], FLOAT_BAD + ["1e9"]), "--breathing-um": (["0"], FLOAT_BAD + ["-1"]),
        "--chips": (["WF3", "PC1,WF2"], ["", "XX9", "PC1,PC1", "wf9", "ПК1"]),
        "--filter": (["F555W"], ["", "F439W", "555", "f555"]),
        "--workers": (["1"], ["0", "-2", "x"]), "--memory-limit": (["1GiB"], ["lots", "-1GiB", ""]),
        "--dashboard-address": (["127.0.0.1:0"], ["foo", ":99999", ""])}),
    "detect": ([["{t}/empty.zarr", "{t}/file.txt", "{t}/missing.zarr"]], {
        "--threshold": (["5"], FLOAT_BAD + ["0", "-3"]), "--min-separation": (["2"], FLOAT_BAD + ["-1"]),
        "--neighbour-passes": (["0"], INT_BAD + ["6"]), "--psf": (["library"], ["", "nope", "TRUE"])}),
    "catalog": (["{t}/empty.zarr"], {
        "--reference": (["0"], INT_BAD), "--raster-size": (["6"], INT_BAD + ["2", "22"]),
        "--max-stack-residual": (["0.002"], FLOAT_BAD + ["-0.1"]),
        "--from-centers": (["vgg6"], ["", "../x", "a/b", "ü" * 70])}),
    "train": (["{t}/empty.zarr", "--out", "{t}/m.keras"], {
        "--chip": (["WF3"], ["", "XX", "wf9"]), "--epochs": (["1"], INT_BAD + ["0"]),
        "--seed": (["0"], INT_BAD), "--arch": (["v1"], ["v9", ""]), "--target": (["exact"], ["truth", ""])}),
    "predict": (["{t}/empty.zarr", "--model", "{t}/lie.keras"], {
        "--name": (["vgg6"], ["", "a b", "../up"]), "--chip": (["WF3"], ["XX", ""])}),
    "phase": (["{t}/empty.zarr"], {
        "--from": (["generalist", "classical"], ["", "a b", "../up"]), "--name": (["g-phase"], ["", "a/b"]),
        "--harmonics": (["3"], INT_BAD + ["0", "21"]),
        "--p-value": (["0.001"], FLOAT_BAD + ["0", "1.5", "-1"]),
        "--pool": (["store"], ["", "chip"]), "--order": (["1"], INT_BAD + ["4"])}),
    "calibrate": (["{t}/lie.keras", "{t}/empty.zarr"], {
        "--chip": (["WF3"], ["XX", ""]), "--stars": (["all"], ["", "train", "x"]), "--degree": (["2"], INT_BAD + ["3"])}),
    "demo": (["{t}/demo-out"], {"--exposures": (["8"], INT_BAD + ["1"]), "--epochs": (["1"], INT_BAD + ["0"])}),
    "sweep-raster-size": (["{t}/empty.zarr", "--chip", "WF3"], {
        "--sizes": (["5,6"], ["", "2", "abc", "6,,x", "99"]), "--epochs": (["1"], INT_BAD + ["0"])}),
    "cte": (["{t}/empty.zarr", "{t}/cte-out.zarr"], {
        "--iterations": (["3"], INT_BAD + ["0", "21"]), "--trap-scale": (["1"], FLOAT_BAD + ["0", "-1", "101"])}),
    "fetch-mast": (["{t}/mast"], {"--proposal": (["8267"], INT_BAD + ["0"]), "--filter": (["F555W"], ["", "XX"])}),
}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    t = tmp_path_factory.mktemp("fuzz")
    (t / "empty.zarr").mkdir()
    (t / "empty.zarr" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"schema_version": "1"}}))
    (t / "file.txt").write_text("a file, not a store")
    (t / "lie.keras").write_bytes(b"PK")
    (t / "lie.keras.json").write_text(json.dumps({"chip": "XX9", "raster_size": 6}))
    return t


@S.composite
def invocation(draw, command: str):
    positional, options = COMMANDS[command]
    names = draw(S.lists(S.sampled_from(sorted(options)), min_size=1, max_size=len(options), unique=True))
    bad = draw(S.sampled_from(names))
    argv = [command, *[draw(S.sampled_from(a)) if isinstance(a, list) else a for a in positional]]
    for name in names:
        good, wrong = options[name]
        pool = wrong if name == bad else good + wrong + WEIRD
        argv += [name, draw(S.sampled_from(pool) if name == bad else S.sampled_from(pool))]
    return argv, bad


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_random_bad_invocations_leave_no_trace(place, command):
    tried = []
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(invocation(command))
    def check(case):
        argv, bad = case
        argv = [a.format(t=place) for a in argv] + ["--scheduler", "synchronous"] * (
            command not in ("train", "calibrate", "fetch-mast"))
        before = snapshot(place)
        tried.append(argv)
        rc, out, err = run(argv)
        lines = err.strip().splitlines()
        assert rc == 2, (argv, rc, out[-300:], err[-300:])
        assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("starcenter"), (argv, err)
        assert "dask dashboard" not in out
        assert snapshot(place) == before, argv

    check()
    print(f"fuzz {command}: {len(tried)} invocations, {len({tuple(a) for a in tried})} distinct, "
          "each exit 2 with one line and no trace")
