"""Weights fetched when the user asks: a real HTTP server on 127.0.0.1 (never the internet), the real cache
folders the loaders read, and the command line as a user types it."""
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import face
from weights_server import WeightsServer

from famegui.cli import main
from famegui.models.download import DownloadError, fetch
from famegui.models.weights_index import catalogue, state


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torchvision and insightface caches of this test's own."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FAMEGUI_WEIGHTS_INDEX", raising=False)
    return tmp_path


@pytest.fixture
def r18_bytes(r18_weights):
    return Path(r18_weights).read_bytes()


def index(tmp_path, models: dict) -> str:
    p = tmp_path / "index.json"
    p.write_text(json.dumps({"models": models}))
    return str(p)


def cached_r18() -> Path:
    return catalogue()["resnet18"].destination()


def test_fetch_lands_verified_in_the_cache_and_explain_runs_without_weights(caches, r18_bytes, capsys):
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        idx = index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes),
                                          "size": len(r18_bytes)}})
        code, out, err = run(capsys, "explain", "--model", "resnet18", "--image", face("joe_biden", "vp_portrait.jpg"),
                             "--out", caches / "before.png")
        assert code == 1 and "famegui fetch resnet18" in err and srv.sent == 0  # nothing fetched unasked
        code, out, err = run(capsys, "fetch", "resnet18", "--index", idx)
        assert code == 0, err
        assert "licence" in err and "verified" in out
    dest = Path(catalogue()["resnet18"].destination())
    assert dest.read_bytes() == r18_bytes and srv.sent == len(r18_bytes)
    assert not list(dest.parent.glob("*.famegui-part"))
    code, out, err = run(capsys, "explain", "--model", "resnet18", "--image", face("joe_biden", "vp_portrait.jpg"),
                         "--cell", "layer4:3,3", "--iterations", "2", "--out", caches / "o.png")
    assert code == 0, err
    side = json.loads((caches / "o.json").read_text())
    assert side["model"]["weights"] == sha(r18_bytes)
    code, out, _ = run(capsys, "models", "--index", idx)
    assert any(line.split()[:3] == ["resnet18", "torchvision", "ready"] for line in out.splitlines())


def test_a_wrong_checksum_is_refused_and_leaves_nothing(caches, r18_bytes, capsys):
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        idx = index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": "0" * 64}})
        code, _, err = run(capsys, "fetch", "resnet18", "--index", idx, "--quiet")
    assert code == 1 and "SHA-256" in err and "deleted" in err and len(err.strip().splitlines()) == 2
    folder = cached_r18().parent
    assert not folder.exists() or not any(folder.iterdir())
    # the shipped catalogue's prefix (torchvision's) applies to a mirror that gives only a URL
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        idx = index(caches, {"resnet18": {"url": srv.base + "r18.pth"}})
        with pytest.raises(DownloadError, match="f37072fd"):
            fetch(catalogue(idx)["resnet18"])
    assert not cached_r18().exists()


def test_a_cut_download_resumes_where_it_stopped(caches, r18_bytes):
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        entry = catalogue(index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes)}}))[
            "resnet18"]
        srv.cut_after = len(r18_bytes) // 3
        with pytest.raises(DownloadError, match="resume"):
            fetch(entry)
        assert not cached_r18().exists()  # a part file is never used
        first = srv.sent
        seen = []
        fetch(entry, progress=lambda done, total: seen.append((done, total)))
    assert cached_r18().read_bytes() == r18_bytes
    assert first == len(r18_bytes) // 3 and srv.sent == len(r18_bytes)  # nothing sent twice
    assert srv.requests[-1][1] == f"bytes={first}-"
    assert seen[-1] == (len(r18_bytes), len(r18_bytes)) and seen[0][0] > first


def test_a_server_without_ranges_starts_over_and_still_verifies(caches, r18_bytes):
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        entry = catalogue(index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes)}}))[
            "resnet18"]
        srv.cut_after, srv.ranges = 100_000, False
        with pytest.raises(DownloadError):
            fetch(entry)
        fetch(entry)
    assert cached_r18().read_bytes() == r18_bytes


def test_a_stalled_server_is_reported_not_waited_on(caches, r18_bytes, capsys):
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        idx = index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes)}})
        srv.stall_after = 200_000
        t = time.monotonic()
        code, _, err = run(capsys, "fetch", "resnet18", "--index", idx, "--timeout", "1", "--quiet")
        took = time.monotonic() - t
    assert code == 1 and "stalled" in err and took < 15, (err, took)
    assert not cached_r18().exists()


@pytest.mark.parametrize("case", ["404", "no server", "bad index", "unknown", "relative url"])
def test_failures_are_one_line(case, caches, r18_bytes, capsys):
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        url = srv.base + ("missing.pth" if case == "404" else "r18.pth")
    # the server is gone now: "no server" reaches a closed port
    models = {"resnet18": {"url": url, "sha256": sha(r18_bytes)}}
    if case == "relative url":
        models["resnet18"]["url"] = "weights/r18.pth"  # relative to the index: a file that is not there
    idx = index(caches, models)
    if case == "bad index":
        Path(idx).write_text('{"models": {"resnet18": {"sha256": "xyz"}}}')
    if case == "404":
        with WeightsServer({"r18.pth": r18_bytes}) as srv:
            idx = index(caches, {"resnet18": {"url": srv.base + "missing.pth", "sha256": sha(r18_bytes)}})
            code, _, err = run(capsys, "fetch", "resnet18", "--index", idx, "--quiet")
    else:
        code, _, err = run(capsys, "fetch", "nonesuch" if case == "unknown" else "resnet18", "--index", idx,
                           "--quiet")
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("famegui: error:"), err
    expected = {"404": "HTTP 404", "no server": "cannot reach", "bad index": "models.resnet18.sha256",
                "unknown": "not in the weights catalogue", "relative url": "cannot reach"}[case]
    assert expected in last, last
    assert not cached_r18().exists()


def test_cancel_leaves_nothing(caches, r18_bytes):
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        entry = catalogue(index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes)}}))[
            "resnet18"]
        calls = []
        with pytest.raises(DownloadError, match="cancelled"):
            fetch(entry, cancel=lambda: len(calls) > 0, progress=lambda *a: calls.append(a))
    folder = cached_r18().parent
    assert calls and not any(folder.iterdir())


def test_cancel_is_heard_while_the_server_stalls(caches, r18_bytes):
    """A server that stops sending: Cancel still ends the download within a poll, not after the stall timeout."""
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        entry = catalogue(index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes)}}))[
            "resnet18"]
        srv.stall_after = 300_000
        stalled_at = []

        def cancel():
            if srv.sent >= srv.stall_after and not stalled_at:  # the server has gone silent
                stalled_at.append(time.monotonic())
            return bool(stalled_at) and time.monotonic() - stalled_at[0] > 1.0  # cancelled 1 s into the stall

        with pytest.raises(DownloadError, match="cancelled"):
            fetch(entry, cancel=cancel, timeout=120)
        took = time.monotonic() - stalled_at[0]
    assert took < 15, took  # heard within a poll: not after the server's 30 s silence, nor the 120 s timeout
    assert not any(cached_r18().parent.iterdir())


def _pack(prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{prefix}w600k_r50.onnx", b"recognition graph bytes")
        z.writestr(f"{prefix}det_10g.onnx", b"detector graph bytes")
    return buf.getvalue()


@pytest.mark.parametrize("prefix", ["", "antelopev2/"])
def test_a_pack_is_unpacked_into_insightface_folder(caches, prefix):
    data = _pack(prefix)
    with WeightsServer({"pack.zip": data}) as srv:
        entries = catalogue(index(caches, {"insightface:antelopev2": {"url": srv.base + "pack.zip",
                                                                      "sha256": sha(data)}}))
        entry = entries["insightface:antelopev2"]
        assert state(entry) == "fetch"
        where = fetch(entry)
    assert where == caches / "home" / ".insightface" / "models" / "antelopev2"
    assert sorted(p.name for p in where.iterdir()) == ["det_10g.onnx", "w600k_r50.onnx"]
    assert state(entry) == "ready" and not list(where.parent.glob("*.famegui-part"))


def test_a_pack_with_a_path_outside_its_folder_is_refused(caches):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../evil.onnx", b"x")
    data = buf.getvalue()
    with WeightsServer({"pack.zip": data}) as srv:
        entry = catalogue(index(caches, {"insightface:buffalo_s": {"url": srv.base + "pack.zip",
                                                                   "sha256": sha(data)}}))["insightface:buffalo_s"]
        with pytest.raises(DownloadError, match="outside"):
            fetch(entry)
    root = caches / "home" / ".insightface" / "models"
    assert not (root / "buffalo_s").exists() and not list(caches.rglob("evil.onnx"))


def test_an_offline_mirror_folder(caches, r18_bytes, capsys, monkeypatch):
    """fetch --to DIR on the connected machine; FAMEGUI_WEIGHTS_INDEX=DIR/weights_index.json on the other."""
    mirror = caches / "mirror"
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        idx = index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes)}})
        code, out, err = run(capsys, "fetch", "resnet18", "--index", idx, "--to", mirror, "--quiet")
    assert code == 0, err
    assert not cached_r18().exists()  # --to fills the folder, not the cache
    made = json.loads((mirror / "weights_index.json").read_text())["models"]["resnet18"]
    assert made["url"] == "resnet18-f37072fd.pth" and made["sha256"] == sha(r18_bytes)
    monkeypatch.setenv("FAMEGUI_WEIGHTS_INDEX", str(mirror / "weights_index.json"))
    code, out, err = run(capsys, "fetch", "resnet18", "--quiet")  # the server is gone: file:// from the folder
    assert code == 0, err
    assert cached_r18().read_bytes() == r18_bytes


def test_proxies_from_the_environment_are_used(caches, r18_bytes, monkeypatch):
    """https_proxy / http_proxy as urllib reads them: the request goes to the proxy with the whole URL."""
    with WeightsServer({"r18.pth": r18_bytes}) as proxy:
        monkeypatch.setenv("http_proxy", proxy.base.rstrip("/"))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        entry = catalogue(index(caches, {"resnet18": {"url": "http://weights.lab.example/r18.pth",
                                                      "sha256": sha(r18_bytes)}}))["resnet18"]
        fetch(entry)
    assert proxy.requests[0][0] == "http://weights.lab.example/r18.pth"
    assert cached_r18().read_bytes() == r18_bytes


def test_models_marks_every_catalogue_entry(caches, capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    lines = {line.split()[0]: line.split()[2] for line in out.splitlines()[:-1]}
    for name, entry in catalogue().items():
        assert lines.get(name) == {"fetch": "fetch", "manual": "file", "ready": "ready"}[state(entry)], name
    assert lines["resnet50"] == "fetch" and lines["iresnet100"] == "file" and lines["dlib-resnet"] == "ready"
    assert "famegui fetch resnet50" in out and "(103 MB)" in out


def test_shipped_catalogue_is_consistent():
    """Every torchvision entry matches torchvision's own enum (URL, hash prefix in the file name)."""
    import torchvision

    for name, e in catalogue().items():
        if e.cache == "torchvision":
            w = torchvision.models.get_model_weights(name).DEFAULT
            assert e.url == w.url and e.file in w.url and e.hash_prefix in e.file and e.fetchable, name
        elif e.cache == "insightface":
            assert e.sha256 and e.url.startswith("https://github.com/deepinsight/insightface/releases/"), name
        elif e.cache == "huggingface":  # the repository timm itself would download from
            from famegui.models.weights_index import timm_entry

            own = timm_entry(name)
            assert own is not None and (e.repo, e.file) == (own.repo, own.file) and e.fetchable and e.size, name
        else:
            assert e.manual and e.page.startswith("https://"), name


def test_the_network_guard_catches_an_attempt():
    """The suite-wide guard (conftest) refuses a connection off this machine and records it."""
    import socket

    import conftest

    before = len(conftest.NETWORK_ATTEMPTS)
    with pytest.raises(OSError):
        socket.create_connection(("download.pytorch.org", 443), timeout=1)
    assert conftest.NETWORK_ATTEMPTS[before:] == ["lookup download.pytorch.org"]
    del conftest.NETWORK_ATTEMPTS[before:]  # this test's own attempt was the point


def test_no_model_load_downloads(caches, monkeypatch):
    """Every catalogue model opened by name with empty caches: a one-line error naming what to do, and no
    connection attempted (the guard would fail this test)."""
    from famegui.models.wrapper import ModelLoadError
    from famegui.models.zoo import load_model

    for name, entry in catalogue().items():
        with pytest.raises(ModelLoadError) as err:
            load_model(name)
        text = str(err.value)
        assert "\n" not in text and (f"famegui fetch {name}" in text if entry.fetchable
                                     else "--weights FILE" in text), (name, text)


def test_a_broken_user_index_does_not_stop_the_window(caches, tmp_path, monkeypatch, qtbot):
    """A mirror file that cannot be read: the window opens on the shipped list and says why; the CLI refuses."""
    import famegui

    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    monkeypatch.setenv("FAMEGUI_WEIGHTS_INDEX", str(bad))
    w = famegui.open("dlib-resnet", block=False)
    qtbot.addWidget(w)
    names = [w.model_dock.model_combo.itemText(i) for i in range(w.model_dock.model_combo.count())]
    assert "resnet50" in names and "broken.json" in (w.model_dock.index_problem or "")
    assert main(["models"]) == 1


def _window(tmp_path, qtbot):
    from PySide6.QtCore import QSettings

    from famegui.gui.main_window import MainWindow

    w = MainWindow(model="dlib-resnet", settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat),
                   load_demo=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.session.model is not None, timeout=120000)
    return w


def _answer_licence(qtbot, panel, accept: bool):
    from PySide6.QtWidgets import QMessageBox

    qtbot.waitUntil(lambda: panel.licence_box is not None and panel.licence_box.isVisible(), timeout=5000)
    box = panel.licence_box
    button = next(b for b in box.buttons() if (box.buttonRole(b) == QMessageBox.AcceptRole) == accept)
    button.click()


def test_the_window_downloads_on_request_with_progress_cancel_and_licence_once(caches, r18_bytes, qtbot,
                                                                               monkeypatch):
    """Picking a model that is not here offers Download (size); the licence shows before its first download;
    Cancel leaves nothing; the download then reaches 100 %, is verified, and the model loads by its name."""
    from PySide6.QtCore import Qt

    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        idx = index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes),
                                          "size": len(r18_bytes), "licence": "BSD-3-Clause (test)"}})
        monkeypatch.setenv("FAMEGUI_WEIGHTS_INDEX", idx)
        w = _window(caches, qtbot)
        dock, panel = w.model_dock, w.model_dock.download
        combo = dock.model_combo
        i = combo.findText("resnet18")
        assert "can be downloaded" in combo.itemData(i, Qt.ToolTipRole)
        combo.setCurrentIndex(i)
        combo.activated.emit(i)  # the user picks it: nothing is fetched, the download is offered
        assert panel.isVisible() and panel.button.text() == f"Download ({len(r18_bytes) / 1e6:.0f} MB)"
        assert combo.currentText() == "dlib-resnet" and srv.sent == 0  # the list shows the model in use
        seen = []
        panel.licence_shown.connect(seen.append)

        # 1. declined licence: nothing happens
        qtbot.mouseClick(panel.button, Qt.LeftButton)
        _answer_licence(qtbot, panel, accept=False)
        assert srv.sent == 0 and not panel.running and seen == ["resnet18"]  # declined: asked again next time

        # 2. accepted, then cancelled in the middle: nothing is left in the cache
        srv.stall_after = len(r18_bytes) // 3
        qtbot.mouseClick(panel.button, Qt.LeftButton)
        _answer_licence(qtbot, panel, accept=True)
        assert seen == ["resnet18", "resnet18"]
        qtbot.waitUntil(lambda: panel.bar.value() > 0, timeout=30000)
        assert panel.cancel_button.isVisible() and w.session.model.name == "dlib-resnet"
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: not panel.running, timeout=30000)
        folder = cached_r18().parent
        assert not cached_r18().exists() and not list(folder.glob("*famegui-part"))
        assert panel.button.isVisible()  # offered again

        # 3. again: no licence box this time; progress to 100 %, verified, and resnet18 loads by its name
        srv.stall_after = None
        values = []
        panel.bar.valueChanged.connect(values.append)
        with qtbot.waitSignal(w.model_ready, timeout=120000):
            qtbot.mouseClick(panel.button, Qt.LeftButton)
        assert len(seen) == 2 and panel.licence_box is None  # accepted once: not shown again
        assert values[-1] == panel.bar.maximum() and values == sorted(values)
        assert cached_r18().read_bytes() == r18_bytes
        assert w.session.model_spec == "resnet18" and combo.currentText() == "resnet18"
        assert "ready" in combo.itemData(combo.findText("resnet18"), Qt.ToolTipRole)
        assert not panel.isVisible()
        w.close()


TIMM_NAME = "timm:mobilenetv3_small_050.lamb_in1k"  # a small timm network: 1.6 M parameters


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    """Weights of the timm network as the Hub serves them (model.safetensors), seeded, made here."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model(TIMM_NAME.split(":", 1)[1], pretrained=False)
    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path.read_bytes()


@pytest.fixture
def hub(caches, monkeypatch, timm_file):
    """A Hub on 127.0.0.1 serving the timm weights, named by HF_ENDPOINT; an empty Hugging Face cache."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(caches / "hf"))
    with WeightsServer({"model.safetensors": timm_file}, hub=True) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.base.rstrip("/"))
        # huggingface_hub read HF_ENDPOINT when it was imported (for its own side requests, e.g. the agent
        # registry it asks for on a download): as for a user who set HF_ENDPOINT before starting famegui
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", srv.base.rstrip("/"))
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            srv.base.rstrip("/") + "/{repo_id}/resolve/{revision}/{filename}")
        yield srv


def hub_files(caches) -> list[Path]:
    """Downloaded files in the Hugging Face cache (blobs, and temporary files beside them)."""
    return [p for p in (caches / "hf").rglob("*") if p.is_file() and "blobs" in p.parts]


def test_a_timm_model_is_fetched_through_huggingface_hub_and_then_opens(hub, caches, timm_file, capsys):
    """Any timm name with a Hub repository in timm's table: fetched by huggingface_hub into the cache timm
    reads, checked against the SHA-256 the Hub declares, then explained without --weights."""
    image = face("joe_biden", "vp_portrait.jpg")
    code, _, err = run(capsys, "explain", "--model", TIMM_NAME, "--image", image, "--out", caches / "x.png")
    assert code == 1 and f"famegui fetch {TIMM_NAME}" in err and hub.sent == 0
    code, out, err = run(capsys, "fetch", TIMM_NAME, "--quiet")
    assert code == 0, err
    assert "apache-2.0" in err and "verified" in out and hub.sent == len(timm_file)
    assert [p.read_bytes() == timm_file for p in hub_files(caches)] == [True]  # one blob
    code, out, err = run(capsys, "explain", "--model", TIMM_NAME, "--image", image, "--cell", "blocks.5:3,3",
                         "--iterations", "2", "--out", caches / "o.png")
    assert code == 0, err
    assert json.loads((caches / "o.json").read_text())["model"]["weights"] == sha(timm_file)
    code, out, _ = run(capsys, "models")
    assert any(line.split()[:3] == [TIMM_NAME, "timm", "ready"] for line in out.splitlines()), out


def test_a_hub_file_that_is_not_what_the_hub_declares_is_removed(hub, caches, capsys):
    hub.etags["model.safetensors"] = "1" * 64
    code, _, err = run(capsys, "fetch", TIMM_NAME, "--quiet")
    assert code == 1 and "SHA-256" in err and "deleted" in err and len(err.strip().splitlines()) == 2, err
    assert hub_files(caches) == []


def test_a_hub_download_can_be_cancelled_and_a_missing_repo_is_one_line(hub, caches, capsys):
    from famegui.models.weights_index import timm_entry

    entry = timm_entry(TIMM_NAME)
    for size in (None, 40 << 20):  # stopped after the last block; stopped in the middle of a long file
        if size:
            hub.files["model.safetensors"] = np.random.default_rng(0).bytes(size)
        got = []
        with pytest.raises(DownloadError, match="cancelled"):
            fetch(entry, cancel=lambda got=got: bool(got), progress=lambda *a, got=got: got.append(a))
        assert got and hub_files(caches) == []
    assert got[-1][0] < size  # huggingface_hub stopped at the first block after the cancel
    del hub.files["model.safetensors"]
    code, _, err = run(capsys, "fetch", TIMM_NAME, "--quiet")
    assert code == 1 and "HTTP 404" in err.strip().splitlines()[-1], err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_one_line_and_installs_nothing(caches, r18_bytes, capsys):
    """The kernel's own ENOSPC: the part file is /dev/full, where every write fails as on a full disk."""
    dest = caches / "mirror"
    dest.mkdir()
    entry = catalogue()["resnet18"]
    (dest / f"{entry.file}.famegui-part").symlink_to("/dev/full")
    with WeightsServer({"r18.pth": r18_bytes}) as srv:
        idx = index(caches, {"resnet18": {"url": srv.base + "r18.pth", "sha256": sha(r18_bytes)}})
        code, out, err = run(capsys, "fetch", "resnet18", "--index", idx, "--to", dest, "--quiet")
    last = err.strip().splitlines()[-1]
    assert code == 1 and "disk is full" in last and "Traceback" not in err, err
    assert not (dest / entry.file).exists() and not cached_r18().exists()
