"""What a user installs: the licence, the citation file, and a famegui that runs without its optional extras."""
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

import famegui

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
FACES = ROOT / "resources" / "faces"


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


BLOCKED = ("captum", "timm", "onnx", "onnx2torch", "ray", "huggingface_hub")

# In a fresh interpreter: every optional package made unimportable (sys.modules[name] = None makes
# `import name` raise ImportError, as when it is not installed), then famegui's own commands.
SCRIPT = r"""
import contextlib, io, json, sys

BLOCKED, image, tmp = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
for name in BLOCKED:
    sys.modules[name] = None
for name in BLOCKED:
    try:
        __import__(name)
        raise SystemExit(f"{name} still imports")
    except ImportError:
        pass

import famegui
import famegui.gui.main_window  # noqa: F401  (the window's modules import without the extras)
from famegui.cli import main
from famegui.methods import methods


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


cell = ["--image", image, "--cell", "stage4:2,2"]
open(f"{tmp}/net.onnx", "wb").close()
with open(f"{tmp}/pairs.csv", "w") as f:
    f.write(f"pathA,pathB,label\n{image},{image},1\n")
print(json.dumps({
    "version": famegui.__version__,
    "methods": [m.name for m in methods()],
    "cli_methods": run("methods"),
    "cli_models": run("models"),
    "fame": run("explain", *cell, "--iterations", "3", "--out", f"{tmp}/fame.png"),
    "ig": run("explain", *cell, "--method", "ig", "--out", f"{tmp}/ig.png"),
    "timm": run("explain", "--model", "timm:resnet18", "--image", image, "--class", "top1", "--out", f"{tmp}/t.png"),
    "onnx": run("explain", "--model", f"{tmp}/net.onnx", *cell, "--out", f"{tmp}/o.png"),
    "fetch_timm": run("fetch", "timm:resnet18.a1_in1k", "--quiet"),
    "fetch_hub": run("fetch", "timm:resnet50.a1_in1k", "--to", f"{tmp}/mirror", "--quiet"),
    "ray": run("run", f"{tmp}/pairs.csv", "--engine", "ray", "--method", "gradcam", "--out", f"{tmp}/R"),
}))
"""


def _one_line_error(result: dict, message: str) -> None:
    assert result["rc"] != 0
    last = result["err"].strip().splitlines()[-1]
    assert last.endswith(message), result["err"]
    assert "Traceback" not in result["err"]


def test_famegui_runs_without_its_optional_extras(tmp_path):
    image = str(next((FACES / "barack_obama").glob("*.jpg")))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(BLOCKED), image, str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"] == famegui.__version__
    # the rest works: the method list (without captum's methods), the model list, FAME on the embedded model
    captum_methods = {"ig", "saliency", "smoothgrad", "occlusion", "gbp"}
    assert "fame" in got["methods"] and not captum_methods & set(got["methods"])
    assert got["cli_methods"]["rc"] == 0 and "fame" in got["cli_methods"]["out"]
    assert not re.search(r"^(ig|saliency|smoothgrad|occlusion|gbp)\b", got["cli_methods"]["out"], flags=re.M)
    assert got["cli_models"]["rc"] == 0 and "dlib-resnet" in got["cli_models"]["out"]
    assert got["fame"]["rc"] == 0 and (tmp_path / "fame.png").is_file()
    # each feature of an extra says, in one line, which extra to install
    _one_line_error(got["ig"], "Integrated Gradients needs captum: pip install 'famegui[captum]'")
    _one_line_error(got["timm"], "a timm model needs timm: pip install 'famegui[timm]'")
    _one_line_error(got["onnx"], "an ONNX model needs onnx and onnx2torch: pip install 'famegui[onnx]'")
    _one_line_error(got["fetch_timm"], "fetching timm:resnet18.a1_in1k needs timm: pip install 'famegui[timm]'")
    _one_line_error(got["fetch_hub"], "fetching from the Hugging Face Hub needs huggingface_hub: "
                                      "pip install 'famegui[timm]'")
    _one_line_error(got["ray"], "the ray engine needs ray: pip install 'famegui[ray]'")
    assert not (tmp_path / "R").exists()


def test_the_extras_install_what_the_features_import():
    extras = {"ray": ["ray"], "onnx": ["onnx", "onnx2torch"], "timm": ["timm", "huggingface_hub"],
              "captum": ["captum"]}
    section = PYPROJECT.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    for extra, packages in extras.items():
        line = re.search(rf"^{extra} = \[(.+?)\]", section, flags=re.M).group(1)
        for package in packages:
            assert f'"{package}>=' in line
    assert re.search(r'^all = \["famegui\[ray,onnx,timm,captum\]"\]', section, flags=re.M)
    assert re.search(r'^test = \["famegui\[all\]"', section, flags=re.M)  # the tests need every extra
    dependencies = PYPROJECT.split("dependencies = [", 1)[1].split("]\n", 1)[0]
    assert not [p for p in BLOCKED if re.search(rf'"{p}[><=!~]', dependencies)]  # optional, not required
