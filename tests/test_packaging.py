"""What a user installs: the licence and the citation file."""
import re
from pathlib import Path

import yaml

import famegui

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def _project_version() -> str:
    project = PYPROJECT.split("[project]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version = "([^"]+)"$', project, flags=re.M).group(1)


def test_licence_is_mit_as_pyproject_declares():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the famegui authors" in text
    assert 'license = { text = "MIT" }' in PYPROJECT


def test_citation_file_names_this_version_and_the_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == _project_version() == famegui.__version__
    assert cff["license"] == "MIT" and cff["authors"] == [{"name": "the famegui authors"}]
    assert cff["title"] and cff["message"]
    refs = cff["references"]
    assert all(r.get("type") and r.get("title") and r.get("authors") for r in refs)
    titles = " | ".join(r["title"] for r in refs)
    for method in ("FAME: Feature Activation Map Explanation", "Grad-CAM", "Feature-Guided Gradient Backpropagation",
                   "Towards Visual Saliency Explanations of Face Verification"):  # the last: CorrRISE
        assert method in titles
    assert all(isinstance(r["year"], int) for r in refs if "year" in r)
