import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# keep the user's cache and torchvision's cache out of the tests
_tmp = tempfile.mkdtemp(prefix="famegui-test-cache-")
os.environ.setdefault("FAMEGUI_CACHE_DIR", _tmp)
os.environ["TORCH_HOME"] = os.path.join(_tmp, "torch")
os.environ.setdefault("FAMEGUI_LOG_DIR", os.path.join(_tmp, "log"))  # failed GUI jobs log here, not in $HOME

import ipaddress  # noqa: E402
import socket  # noqa: E402

import pytest  # noqa: E402

# ------------------------------------------------------------------ no test reaches the network
# Every TCP connection and name lookup of the test processes goes through this guard: this machine and its
# own addresses pass (test servers on 127.0.0.1, Ray's local cluster, Jupyter kernels); anything else is
# refused and fails the test that tried, even if the code under test swallowed the error.
NETWORK_ATTEMPTS: list[str] = []
_real_connect, _real_connect_ex, _real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _own_addresses() -> set[str]:
    own = {"127.0.0.1", "::1", "0.0.0.0", "::"}
    try:
        own.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a UDP "connect" sends nothing
    try:
        _real_connect(probe, ("10.255.255.255", 1))
        own.add(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    return own


_OWN = _own_addresses()
_OWN_NAMES = {None, "", "localhost", socket.gethostname(), socket.getfqdn()}


def _local(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else host
    if host in _OWN_NAMES or host in _OWN:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded(real):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and self.type == socket.SOCK_STREAM \
                and not _local(address[0]):
            NETWORK_ATTEMPTS.append(f"connect {address}")
            raise ConnectionRefusedError(f"tests never reach the network (tried {address})")
        return real(self, address)
    return connect


def _getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        NETWORK_ATTEMPTS.append(f"lookup {host}")
        raise socket.gaierror(socket.EAI_NONAME, f"tests never reach the network (looked up {host})")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex = _guarded(_real_connect), _guarded(_real_connect_ex)
socket.getaddrinfo = _getaddrinfo


@pytest.fixture(autouse=True)
def _no_network():
    start = len(NETWORK_ATTEMPTS)
    yield
    tried = NETWORK_ATTEMPTS[start:]
    assert not tried, f"this test tried to reach the network: {tried}"
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers: one torch thread each, no oversubscription
    torch.set_num_threads(1)
from torch import nn  # noqa: E402

from famegui.paths import resource_path  # noqa: E402


def drop_item(run_dir, index: int) -> None:
    """Lose one finished item of a run folder, as a crash before its write would have: its rows leave every
    part file and its maps leave the map store (the files rewritten without them)."""
    import shutil
    import zipfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from famegui.evaluation import rundir

    run_dir = Path(run_dir)
    for part in rundir.part_files(run_dir):
        table = pq.read_table(part)
        keep = [r for r in table.to_pylist() if r["item_index"] != index]
        pq.write_table(pa.Table.from_pylist(keep, schema=table.schema), part)
    shutil.rmtree(run_dir / "maps" / str(index), ignore_errors=True)
    for block in run_dir.glob("maps/block-*.npz"):
        with zipfile.ZipFile(block) as z:
            members = [(n, z.read(n)) for n in z.namelist() if not n.startswith(f"maps/{index}/")]
        with zipfile.ZipFile(block, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for n, data in members:
                z.writestr(n, data)


def face(*parts: str) -> str:
    return str(resource_path("faces", *parts))


@pytest.fixture(scope="session")
def resnet18_random():
    """A real torchvision resnet18 with untrained (seeded) weights behind the wrapper."""
    from famegui.models.zoo import load_model

    return load_model("resnet18", "random")


@pytest.fixture(scope="session")
def resnet_embedder():
    """resnet18 trunk as a 512-D embedding model (untrained, seeded): a stand-in with real conv layers."""
    import torchvision

    from famegui.models.wrapper import ModelWrapper

    torch.manual_seed(1)
    m = torchvision.models.resnet18()
    m.fc = nn.Identity()
    return ModelWrapper(name="r18-embed", module=m, input_size=(64, 64), mean=(0.5,) * 3, std=(0.25,) * 3,
                        task="embedding")


@pytest.fixture
def small_images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 64, 64, generator=g)


@pytest.fixture(scope="session")
def dlib():
    """The real embedded face model."""
    from famegui.models.zoo import load_model

    return load_model("dlib-resnet")


@pytest.fixture(scope="session")
def pair(dlib):
    """The genuine sample pair (london_001 neutral / smiling) as aligned 150x150 chips."""
    from famegui.data.pipeline import prepare_for_model

    x = prepare_for_model(dlib, face("london_001", "neutral.jpg")).tensor
    y = prepare_for_model(dlib, face("london_001", "smiling.jpg")).tensor
    return x, y


@pytest.fixture(scope="session")
def r18_weights(tmp_path_factory):
    """A resnet18 state dict (untrained, seeded) saved to a real file."""
    import torchvision

    torch.manual_seed(0)
    f = tmp_path_factory.mktemp("w") / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), f)
    return str(f)


@pytest.fixture(scope="session")
def identity_classifier(dlib, tmp_path_factory):
    """A trained 5-identity classifier (the product's identify: model over a gallery of real photos) on
    dlib's network, as in SDD-CAM's setting (Shadman et al.); class 0 = london_001."""
    import shutil

    from famegui.models.identification import build_identification_model

    gallery = tmp_path_factory.mktemp("gallery")
    for who in ("london_001", "london_005", "london_006", "london_021", "london_024"):
        (gallery / who).mkdir()
        shutil.copy(face(who, "neutral.jpg"), gallery / who / "neutral.jpg")
    return build_identification_model(dlib, gallery)


GUI_READY_MS = 180000  # ms: an upper bound for a busy machine; the wait is for a condition, not a time


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    """The real main window on the embedded dlib model with the demo photos loaded (FAME at 40 iterations)."""
    from PySide6.QtCore import QSettings

    from famegui.gui.main_window import MainWindow

    monkeypatch.setenv("FAMEGUI_LOG_DIR", str(tmp_path / "logs"))  # failed jobs' tracebacks
    w = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.session.model is not None and {"probe", "reference", "third"} <= set(w.session.inputs)
                    and w.feature_map.fmap_canvas.image_shape() is not None, timeout=GUI_READY_MS)
    w.param_form.set_value("iterations", 40)
    yield w
    w.close()
