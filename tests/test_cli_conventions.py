"""The command line's conventions: --version, distinct exit codes, --json on the look-up commands, a truncated
image as one famegui line with no decoder noise (each checked in a real process where stderr matters)."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from conftest import face
from PIL import Image

from famegui.cli import EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, main
from famegui.version import VERSION


def famegui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "famegui", *args], capture_output=True, text=True, timeout=300)


def test_version_and_the_exit_codes_are_distinct():
    assert len({EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CHECK_FAILED, EXIT_INTERNAL}) == 5
    r = famegui("--version")
    assert r.returncode == EXIT_OK and r.stdout.strip() == f"famegui {VERSION}"
    r = famegui("verify", "--no-such-flag", "a.jpg", "b.jpg")
    assert r.returncode == EXIT_USAGE and len(r.stderr.strip().splitlines()) == 1
    r = famegui("verify", "no-such-a.jpg", "no-such-b.jpg")
    assert r.returncode == EXIT_ERROR and r.stderr.startswith("famegui: error: ")


def _truncated_png(tmp_path, keep: float):
    buf = io.BytesIO()
    Image.open(face("london_001", "neutral.jpg")).save(buf, "PNG")
    data = buf.getvalue()
    path = tmp_path / f"cut{int(keep * 1000)}.png"
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize("keep", [0.5, 0.999])  # half the pixels gone; only the last chunk (IEND) cut
def test_a_truncated_png_is_one_famegui_line(tmp_path, keep):
    path = _truncated_png(tmp_path, keep)
    r = famegui("verify", str(path), face("london_001", "smiling.jpg"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == EXIT_ERROR and len(lines) == 1, r.stderr
    assert lines[0].startswith("famegui: error: ") and "truncated" in lines[0] and "libpng" not in r.stderr


def test_verify_json(capsys):
    a, b = face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg")
    assert main(["verify", a, b]) == 0
    text = capsys.readouterr().out
    assert main(["verify", a, b, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "dlib-resnet" and doc["decision"] in ("same", "different")
    assert doc["same"] == (doc["decision"] == "same") and -1 <= doc["cosine"] <= 1 and doc["distance"] >= 0
    assert doc["metric"] == "distance" and doc["threshold"] == pytest.approx(0.6) and doc["faces_in_a"] == 1
    assert f"{doc['cosine']:.4f}" in text  # the same numbers as the text


def test_layers_models_methods_json(capsys):
    from famegui.methods import methods
    from famegui.models.zoo import model_catalogue

    assert main(["layers", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "dlib-resnet" and doc["default_layer"] in [r["name"] for r in doc["layers"]]
    stage = next(r for r in doc["layers"] if r["name"] == doc["default_layer"])
    assert stage["spatial"] and len(stage["shape"]) == 3
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in doc["models"]] == [r.name for r in model_catalogue()]
    assert next(m for m in doc["models"] if m["name"] == "dlib-resnet")["state"] == "ready"
    assert main(["methods", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in doc["methods"]] == [m.name for m in methods()]
    fame = next(m for m in doc["methods"] if m["name"] == "fame")
    assert any(p["name"] == "iterations" and p["default"] == 500 and p["type"] == "int" for p in fame["params"])
