"""The README's two set-up commands and CI stay in step."""
import re
from pathlib import Path

from conftest import GUI_READY_MS

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_the_two_commands():
    launch, test = _commands()
    assert "pip install -e '.[all]'" in launch and launch.rstrip().endswith("famegui")  # every extra
    assert "'.[test]'" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_as_written():
    _, test = _commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_the_three_line_example_runs_as_written(tmp_path, monkeypatch):
    """The three lines near the top, unchanged, on the embedded model: they write the export set."""
    text = (ROOT / "README.md").read_text()
    [code] = re.findall(r"\*\*From Python, on the embedded model:\*\*\n\n```python\n(.+?)\n```", text, flags=re.S)
    assert len(code.splitlines()) == 3
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert {p.name for p in tmp_path.iterdir()} == {"cell.png", "cell.npy", "cell.json"}
    assert scope["e"].map.shape == (150, 150) and scope["e"].map.max() == 1.0


def test_the_python_section_runs(qtbot, monkeypatch):
    """The "From Python" block runs as written (fewer FAME iterations; the window opened without waiting)."""
    text = (ROOT / "README.md").read_text()
    [code] = re.findall(r"## From Python\n\n.+?```python\n(.+?)\n```", text, flags=re.S)
    for sub in ("iterations=100", "famegui.open(model, images=[photo])"):
        assert sub in code
    code = code.replace("iterations=100", "iterations=3")
    code = code.replace("famegui.open(model, images=[photo])", "famegui.open(model, images=[photo], block=False)")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    window = scope["window"]
    qtbot.addWidget(window)
    assert scope["top1"].map.shape == (224, 224) and len(scope["cells"]) == 7
    assert [c.target.cell for c in scope["cells"]] == [(r, 3) for r in range(7)]
    assert scope["plus"].map.shape == (150, 150) and scope["minus"].target.kind == "dissimilar"
    assert [c.metric for c in scope["curves"]][:2] == ["deletion", "insertion"]
    qtbot.waitUntil(lambda: window.session.model is scope["model"] and "probe" in window.session.inputs,
                    timeout=GUI_READY_MS)
