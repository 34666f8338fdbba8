"""The README's two set-up commands and CI stay in step."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_the_two_commands():
    launch, test = _commands()
    assert "pip install -e ." in launch and launch.rstrip().endswith("famegui")
    assert "'.[test]'" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_as_written():
    _, test = _commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_the_python_example_runs(r18_weights):
    """The README's "From Python" block, on real files (bundled photos, a saved resnet18), runs as written."""
    from famegui.paths import resource_path

    text = (ROOT / "README.md").read_text()
    [code] = re.findall(r"## From Python\n\n```python\n(.+?)\n```", text, flags=re.S)
    photo = lambda *p: str(resource_path("faces", *p))  # noqa: E731
    for name, path in (("photo.jpg", photo("london_001", "neutral.jpg")), ("A.jpg", photo("london_001", "neutral.jpg")),
                       ("B.jpg", photo("london_001", "smiling.jpg")), ("W.pth", r18_weights)):
        assert f'"{name}"' in code
        code = code.replace(f'"{name}"', repr(path))
    code = code.replace("iterations=100", "iterations=3")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["res"].maps[0].shape == (224, 224)
    assert scope["e_plus"].shape == (150, 150)
