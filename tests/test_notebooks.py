"""The example notebooks run top to bottom on the embedded model and bundled photos, as a user would run them
(a fresh Jupyter kernel, no network); a cell that raises fails the test with the cell's error."""
import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_there_are_example_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"classifier.ipynb", "face_pair.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_only_the_public_api(path):
    """A notebook is an example of ``import famegui``: no reaching into famegui's modules."""
    tree = ast.parse(_code(nbformat.read(path, as_version=4)))
    deep = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            and any(name.startswith("famegui.") for name in
                    ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]))]
    assert not deep, deep


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)  # the kernel draws with matplotlib's inline backend
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except CellExecutionError as err:  # the cell's source and traceback, in one message
        pytest.fail(f"{path.name}: {err}", pytrace=False)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"{path.name} drew {len(images)} pictures"
