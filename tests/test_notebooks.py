"""The notebooks: jupytext pairs in sync, outputs stripped, and each one executes (small mode)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def test_there_are_four_notebooks():
    assert NAMES == ["01_convergence", "02_path_integral", "03_phase_diagrams",
                     "04_cherry_picking"]


@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync_and_outputs_stripped(name):
    import jupytext
    import nbformat

    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert [c.cell_type for c in nb.cells] == [c.cell_type for c in py.cells]
    for a, b in zip(nb.cells, py.cells, strict=True):
        assert a.source == b.source, f"{name}.ipynb is out of sync with {name}.py"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{name}.ipynb has outputs"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_in_small_mode(name, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("QUASIRL_SMALL", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let the kernel use its inline backend
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {})
               for o in outputs), f"{name} drew no figure"
