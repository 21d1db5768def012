"""Every notebook in notebooks/ runs from a fresh kernel without a cell error (issue 23), and a
notebook opened where rfprm cannot be found stops at its first cell with one line saying how to
run it. The glob picks up a notebook added later without editing this file."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 900   # seconds per cell: generous, a loaded 2-core machine is slow


def run_notebook(nb, cwd: Path):
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, f"expected the three teaching notebooks in notebooks/, found {NOTEBOOKS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    run_notebook(nb, path.parent)   # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    verdicts = sum(o.get("text", "").count(": correct (") for o in outputs if o.output_type == "stream")
    assert figures >= 1, f"{path.name}: no figure was drawn"
    assert verdicts >= 2, f"{path.name}: expected >= 2 checked exercises, {verdicts} passed their check"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_cell_says_how_to_run_when_rfprm_is_missing(path, tmp_path):
    """Run only the first cell from a directory with no repository above it: it must stop with
    a single line of advice, not a traceback from inside the library."""
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")]
    alone = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[first])
    with pytest.raises(CellExecutionError):
        run_notebook(alone, tmp_path)
    error = next(o for o in alone.cells[0].outputs if o.output_type == "error")
    assert error.ename == "HowToRun"
    assert len(error.traceback) == 1 and "\n" not in error.traceback[0], error.traceback
    assert "pip install -e ." in error.traceback[0] and "repository root" in error.traceback[0]
