"""Every notebook under notebooks/ runs on a tiny store, so none can rot."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_notebooks_run(tiny_store, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("STARCENTER_STORE", str(tiny_store))
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
