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
