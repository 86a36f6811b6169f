"""Every notebook under notebooks/ runs on a tiny store (with detections, catalog and rasters),
so none can rot."""

from pathlib import Path

from tests.conftest import derive_store

REPO = Path(__file__).resolve().parents[1]


def test_notebooks_run(tiny_store, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    store = derive_store(tiny_store, tmp_path, "library", catalog=True)
    monkeypatch.setenv("STARCENTER_STORE", str(store))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert len(paths) >= 2
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
