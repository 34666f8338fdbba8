"""Models that are already on this machine; nothing is ever downloaded.

* **insightface packs**: ``~/.insightface/models/<pack>/*.onnx``, where
  insightface's ``FaceAnalysis`` unpacks its model packs (``buffalo_l``,
  ``buffalo_s``, ``antelopev2`` ...). A pack holds one face-recognition model
  (``w600k_r50.onnx``, ``w600k_mbf.onnx``, ``glintr100.onnx``) and helpers famegui
  does not explain: a detector (``det_10g.onnx``, ``scrfd_*.onnx``), landmark
  models (``2d106det.onnx``, ``1k3d68.onnx``), a gender/age model
  (``genderage.onnx``), sometimes a face swapper. Files are classified by their
  usual names; an unknown name is classified the way insightface's own router
  does it (>= 5 outputs: detector; 112x112 input: recognition; 192x192:
  landmarks; 96x96: attributes). Recognition models open by name:
  ``insightface:buffalo_l`` (the pack's recognition model),
  ``insightface:buffalo_l/w600k_r50`` or ``buffalo_l/w600k_r50``.
* **timm checkpoints in the Hugging Face cache** (``$HF_HUB_CACHE``, else
  ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``): folders
  ``models--timm--<name>/snapshots/<hash>/`` holding ``model.safetensors`` or
  ``pytorch_model.bin``, which ``timm.create_model(name, pretrained=True)`` would
  have left there. They open as ``timm:<name>`` without ``--weights``.

The home folder is ``Path.home()`` (``$HOME``), so tests can point it elsewhere.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .weights_index import catalogue, hf_cached_file, hf_hub_cache, insightface_root  # noqa: F401 - re-exported
from .wrapper import ModelLoadError

INSIGHTFACE_PREFIX = "insightface:"
TIMM_PREFIX = "timm:"

#: role of an insightface file by its name: (pattern on the lower-case stem, role, what it is)
_NAME_ROLES = (
    (r"(2d106|3d68|landmark)", "landmarks", "face landmarks"),
    (r"^(det_|scrfd|retinaface)", "detection", "face detector"),
    (r"genderage", "attributes", "gender and age"),
    (r"swap", "swapper", "face swapper"),
    (r"(w600k|glint|ms1m|webface|arcface|(^|_)r\d+$|mbf)", "recognition", "face recognition (embedding)"),
)
_ROUTED = {112: ("recognition", "face recognition (embedding)"), 192: ("landmarks", "face landmarks"),
           96: ("attributes", "gender and age")}
_GRAPH_ROLE_CACHE: dict[tuple[str, int, int], tuple[str, str]] = {}


@dataclass(frozen=True)
class InsightfaceModel:
    """One ``.onnx`` file of an insightface pack."""

    pack: str
    name: str  # the file name without .onnx
    path: Path
    role: str  # "recognition", "detection", "landmarks", "attributes", "swapper" or "other"
    detail: str

    @property
    def is_recognition(self) -> bool:
        return self.role == "recognition"

    @property
    def spec(self) -> str:
        """The full name ``load_model`` opens it by."""
        return f"{INSIGHTFACE_PREFIX}{self.pack}/{self.name}"


def _role_from_graph(path: Path) -> tuple[str, str]:
    """insightface's own routing (model_zoo.ModelRouter): by output count and input size."""
    st = path.stat()
    key = (str(path), st.st_size, int(st.st_mtime))
    if key in _GRAPH_ROLE_CACHE:
        return _GRAPH_ROLE_CACHE[key]
    role = ("other", "not a face-recognition model")
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
        if len(graph.output) >= 5:
            role = ("detection", "face detector")
        elif len(dims) == 4 and dims[2] == dims[3] and dims[2] in _ROUTED and len(graph.output) == 1:
            role = _ROUTED[dims[2]]
    except Exception:  # noqa: BLE001 - unreadable or onnx missing: listed as "other"
        role = ("other", "unreadable ONNX file")
    _GRAPH_ROLE_CACHE[key] = role
    return role


def classify_insightface_file(path: Path) -> tuple[str, str]:
    """(role, description) of an insightface ``.onnx`` file, by its name or else by its graph."""
    stem = path.stem.lower()
    for pattern, role, detail in _NAME_ROLES:
        if re.search(pattern, stem):
            return role, detail
    return _role_from_graph(path)


def _pack_files(pack_dir: Path) -> list[Path]:
    files = sorted(pack_dir.glob("*.onnx"))
    nested = pack_dir / pack_dir.name  # some zips unpack into <pack>/<pack>/
    if not files and nested.is_dir():
        files = sorted(nested.glob("*.onnx"))
    return [f for f in files if f.is_file()]


def insightface_models(root: Path | None = None) -> list[InsightfaceModel]:
    """Every ``.onnx`` file of every pack under ``root`` (default :func:`insightface_root`), classified."""
    root = insightface_root() if root is None else Path(root)
    out: list[InsightfaceModel] = []
    try:
        packs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return out
    for pack in packs:
        try:
            files = _pack_files(pack)
        except OSError:
            continue
        for f in files:
            role, detail = classify_insightface_file(f)
            out.append(InsightfaceModel(pack.name, f.stem, f, role, detail))
    return out


def insightface_names(models: list[InsightfaceModel] | None = None) -> list[str]:
    """Short names of the recognition models: ``insightface:<pack>`` when the pack has exactly one."""
    models = insightface_models() if models is None else models
    rec = [m for m in models if m.is_recognition]
    out = []
    for m in rec:
        alone = sum(1 for o in rec if o.pack == m.pack) == 1
        out.append(f"{INSIGHTFACE_PREFIX}{m.pack}" if alone else m.spec)
    return out


def find_insightface(spec: str) -> InsightfaceModel | None:
    """The recognition model ``spec`` names (``insightface:pack[/model]`` or ``pack/model``), or None.

    Raises a one-line :class:`ModelLoadError` when the name is an insightface one but the file is
    missing, ambiguous or not a recognition model.
    """
    explicit = spec.startswith(INSIGHTFACE_PREFIX)
    rest = spec[len(INSIGHTFACE_PREFIX):] if explicit else spec
    pack, _, name = rest.strip("/").partition("/")
    if not explicit and (not name or "/" in name or spec.startswith((".", "/", "~"))):
        return None
    root = insightface_root()
    every = insightface_models(root)
    found = [m for m in every if m.pack == pack and (not name or m.name == name)]
    if not found:
        if not explicit:
            return None
        packs = sorted({m.pack for m in every})
        have = f"packs there: {', '.join(packs)}" if packs else "no packs there"
        fetchable = f"{INSIGHTFACE_PREFIX}{pack}" in catalogue()
        todo = (f"run `famegui fetch {INSIGHTFACE_PREFIX}{pack}` to download it (verified), or unpack its zip"
                if fetchable else "unpack the pack's zip")
        raise ModelLoadError(f"no insightface model {rest!r} under {root} ({have}): {todo} into "
                             f"{root / (pack or '<pack>')}")
    rec = [m for m in found if m.is_recognition]
    if name and not rec:
        m = found[0]
        others = [o.spec for o in every if o.pack == pack and o.is_recognition]
        hint = f" (use {others[0]})" if others else ""
        raise ModelLoadError(f"{m.pack}/{m.name} is not a face-recognition model ({m.detail}); "
                             f"famegui explains recognition models{hint}")
    if len(rec) != 1:
        if not rec:
            raise ModelLoadError(f"insightface pack {pack} has no recognition model (it holds "
                                 f"{', '.join(m.name for m in found)})")
        raise ModelLoadError(f"insightface pack {pack} has several recognition models "
                             f"({', '.join(m.name for m in rec)}): name one, e.g. {rec[0].spec}")
    return rec[0]


# ============================================================================ Hugging Face cache (timm)
def cached_timm_names() -> list[str]:
    """``timm:<name>`` for every timm model whose weights are in the Hugging Face cache."""
    try:
        repos = sorted(p.name for p in hf_hub_cache().glob("models--timm--*") if p.is_dir())
    except OSError:
        return []
    out = []
    for repo in repos:
        name = repo[len("models--timm--"):]
        if hf_cached_file(f"timm/{name}") is not None:
            out.append(f"{TIMM_PREFIX}{name}")
    return out
