"""timm classifiers: ``load_model("timm:NAME", weights=FILE)``.

The architecture comes from ``timm.create_model(NAME, pretrained=False)`` (no
download, ever); the weights from a local file (``.safetensors``, or ``.pth`` /
``.bin`` read with ``weights_only``), ``"random"`` for a seeded untrained
network, or -- with no weights given -- the file timm (or ``famegui fetch timm:NAME``) cached in the
Hugging Face cache (``models--timm--NAME/snapshots/*/model.safetensors``) or
torch hub's checkpoint folder, when it is already there. ``NAME`` may carry a
pretrained tag (``convnext_tiny.fb_in1k``): input size, mean/std, crop ratio and
interpolation then follow that tag's pretrained config
(``timm.data.resolve_data_config``), which timm ships in its code.

Class names: ImageNet subsets timm recognises (``timm.data.ImageNetInfo``), else
``class i``. Default layer: the last entry of the model's ``feature_info`` (the
last stage), which also names ``stage1``.. in ``extras['stages']``.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
from torch import nn

from ..paths import file_sha256
from .discovery import TIMM_PREFIX, hf_cached_file, hf_hub_cache
from .extras import needs
from .weights import load_state_dict_strict, read_state_dict
from .wrapper import ModelLoadError, ModelWrapper


def _timm():
    try:
        import timm
        import timm.data
    except ImportError:
        raise ModelLoadError(needs("a timm model", "timm")) from None
    return timm


def _check_name(timm, arch: str) -> None:
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch.split(".")[0], timm.list_models(), n=1)
    hint = f"; did you mean timm:{close[0]}?" if close else ""
    raise ModelLoadError(f"timm has no model {arch!r}{hint}")


def timm_cache_file(module: nn.Module) -> tuple[Path | None, str]:
    """(cached weights file or None, where they were expected) for a model's pretrained config."""
    cfg = getattr(module, "pretrained_cfg", None) or {}
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        found = hf_cached_file(hub_id)
        if found is not None:
            return found, hub_id
    url = cfg.get("url")
    if url:
        f = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if f.is_file():
            return f, url
    where = (str(hf_hub_cache() / f"models--{hub_id.replace('/', '--')}") if hub_id else url) or "nowhere"
    return None, where


def _create(timm, arch: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - a model that cannot be built here
        raise ModelLoadError(f"timm could not build {arch} ({type(e).__name__}: {e})"[:300]) from None


def _head_classes(module: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The class count of a checkpoint whose classifier differs from the model's."""
    head = (getattr(module, "pretrained_cfg", None) or {}).get("classifier")
    heads = [head] if isinstance(head, str) else list(head or [])
    own = module.state_dict()
    for h in heads:
        w = state.get(f"{h}.weight")
        if w is not None and f"{h}.weight" in own and w.shape[0] != own[f"{h}.weight"].shape[0]:
            return int(w.shape[0])
    return None


def _build(timm, arch: str, weights: str | None) -> tuple[nn.Module, str]:
    """(the network with its weights, weights_id)."""
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _create(timm, arch), "random"
    module = _create(timm, arch)
    if weights is None:
        cached, where = timm_cache_file(module)
        if cached is None:
            fetch = (f"famegui fetch timm:{arch} downloads them (or the window's Download button), or "
                     if (getattr(module, "pretrained_cfg", None) or {}).get("hf_hub_id") else "")
            raise ModelLoadError(f"no weights for timm:{arch}: none in {where}; {fetch}pass --weights FILE "
                                 "(.safetensors or .pth), or --weights random")
        weights = str(cached)
    path = Path(weights).expanduser()
    state = read_state_dict(path)
    n = _head_classes(module, state)
    if n is not None:
        module = _create(timm, arch, num_classes=n)
    load_state_dict_strict(module, state, f"timm:{arch}", str(path))
    return module, file_sha256(path)


def _class_names(timm, module: nn.Module, n: int) -> list[str]:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        if subset:
            info = ImageNetInfo(subset)
            if info.num_classes() == n:
                return [info.index_to_description(i).split(",")[0].strip() for i in range(n)]
    except Exception:  # noqa: BLE001 - older timm or unknown subset: numbered classes
        pass
    return [f"class {i}" for i in range(n)]


def _stages(module: nn.Module) -> dict[str, str]:
    names = dict(module.named_modules())
    info = [f.get("module") for f in (getattr(module, "feature_info", None) or []) if isinstance(f, dict)]
    info = [m for m in info if m in names][-4:]
    return {f"stage{i}": m for i, m in enumerate(info, start=1)}


def load_timm(spec: str, weights: str | None = None, **options) -> ModelWrapper:
    """``timm:NAME`` with local weights; normalisation and input size from timm's pretrained config."""
    arch = spec[len(TIMM_PREFIX):] if spec.startswith(TIMM_PREFIX) else spec
    timm = _timm()
    _check_name(timm, arch)
    module, weights_id = _build(timm, arch, weights)
    data = timm.data.resolve_data_config({}, model=module)
    _c, h, w = data["input_size"]
    if options.get("input_size"):
        s = options["input_size"]
        h, w = (s, s) if isinstance(s, int) else tuple(s)
    crop = float(data.get("crop_pct") or 0.875)
    n = int(getattr(module, "num_classes", 0) or 0)
    stages = _stages(module)
    wrapper = ModelWrapper(
        name=f"timm:{arch}", module=module, input_size=(int(h), int(w)), mean=tuple(data["mean"]),
        std=tuple(data["std"]), task="classification" if n else "embedding",
        class_names=_class_names(timm, module, n) if n else None, weights_id=weights_id, source=spec,
        extras={"family": "timm", "crop_ratio": crop, "resize_size": int(round(h / crop)),
                "interpolation": data.get("interpolation"), "stages": stages,
                "pretrained_cfg": (module.pretrained_cfg or {}).get("hf_hub_id") or arch},
    )
    wrapper.default_layer = list(stages.values())[-1] if stages else None
    if wrapper.default_layer is None:
        spatial = [la for la in wrapper.spatial_layers() if la.shape[1] * la.shape[2] > 1]
        wrapper.default_layer = spatial[-1].name if spatial else None
    return wrapper
