"""The house rules, checked on the source: imports follow the data flow, kernels never open a
store, evaluation only reads, modules and functions stay small."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"cubes": "starcenter.cubes", "model": "starcenter.model",
           "evaluation": "starcenter.evaluation", "starcenter": "starcenter"}

#: The data flow, earliest first: a module may import only modules of its own rank or earlier.
RANKS = [
    ("starcenter.cubes.constants", "starcenter.cubes.errors"),
    ("starcenter.cubes.params", "starcenter.cubes.schema"),
    ("starcenter.cubes.store", "starcenter.cubes.cluster"),
    ("starcenter.cubes.driver",),
    ("starcenter.cubes.classical", "starcenter.cubes.cte"),
    ("starcenter.cubes.sim", "starcenter.cubes.archive", "starcenter.cubes.stages.cte_correct"),
    ("starcenter.cubes.lookup",),
    ("starcenter.cubes.stages.psf", "starcenter.cubes.stages.psf_fit"),
    ("starcenter.cubes.stages.detections",),
    ("starcenter.cubes.stages.transforms",),
    ("starcenter.cubes.stages.catalog",),
    ("starcenter.cubes.stages.selection",),
    ("starcenter.cubes.stages.rasters",),
    ("starcenter.model",),
    ("starcenter.cubes.stages.refine", "starcenter.cubes.stages.phase"),
    ("starcenter.evaluation",),
    ("starcenter.cubes.pipeline",),
    ("starcenter.cubes", "starcenter.demo", "starcenter.sweep", "starcenter.cli", "starcenter"),
]
#: What evaluation may import: readers, kernels and the model's data bridge, no stage that writes.
EVALUATION_MAY_IMPORT = ("starcenter.cubes.constants", "starcenter.cubes.errors", "starcenter.cubes.schema",
                         "starcenter.cubes.params", "starcenter.cubes.store", "starcenter.cubes.classical",
                         "starcenter.cubes.sim.optics", "starcenter.cubes.lookup", "starcenter.model.bridge",
                         "starcenter.model.uncertainty", "starcenter.evaluation")
#: Lines per module, and lines of code per function (its docstring not counted).
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules():
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([package, *parts]), path


def rank(module: str) -> int:
    best, found = -1, -1
    for r, prefixes in enumerate(RANKS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), r
    assert found >= 0, f"{module} has no place in the data flow (tests/test_layout.py RANKS)"
    return found


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield f"{node.module}.{alias.name}" if node.module.startswith("starcenter") else node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name


def own(name: str, known: set) -> str | None:
    """The starcenter module that ``name`` (module, or module.attribute) refers to."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


ALL = dict(modules())


@pytest.mark.parametrize("module", sorted(ALL))
def test_imports_follow_the_data_flow(module):
    here = rank(module)
    for name in imports(ALL[module]):
        target = own(name, set(ALL)) if name.startswith("starcenter") else None
        if target is None or target.startswith(module + ".") or module.startswith(target + ".") and target == "starcenter":
            continue
        assert rank(target) <= here, f"{module} imports {target}, a later stage"


@pytest.mark.parametrize("module", sorted(m for m in ALL if m.startswith("starcenter.cubes.classical")))
def test_kernels_never_open_a_store(module):
    bad = [n for n in imports(ALL[module]) if n.split(".")[0] in ("zarr", "xarray", "fsspec")
           or n.startswith(("starcenter.cubes.store", "starcenter.cubes.driver", "starcenter.cubes.stages"))]
    assert not bad, f"{module} (a kernel on arrays) imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in ALL if m.startswith("starcenter.evaluation")))
def test_evaluation_only_reads(module):
    for name in imports(ALL[module]):
        target = own(name, set(ALL)) if name.startswith("starcenter") else None
        if target:
            assert target.startswith(EVALUATION_MAY_IMPORT), f"{module} imports {target}"


@pytest.mark.parametrize("module", sorted(ALL))
def test_modules_and_functions_stay_small(module):
    text = ALL[module].read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{module}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
            assert n <= MAX_FUNCTION_LINES, f"{module}.{node.name}: {n} lines of code"


def _docstring_lines(node) -> int:
    """Lines of a function's docstring (documentation does not count against its size)."""
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def test_the_rules_can_fail(tmp_path):
    """The import check itself: a kernel importing a stage is a later-stage import."""
    assert rank("starcenter.cubes.classical.psffit") < rank("starcenter.cubes.stages.rasters")
    assert rank("starcenter.evaluation.report") > rank("starcenter.model.predict")
    assert rank("starcenter.cubes.stages.psf") < rank("starcenter.cubes.stages.detections")
