"""Reading weight files without running code: ``.safetensors`` and PyTorch files read with ``weights_only``.

Every loader that takes a weights file (torchvision and timm classifiers, the
face architectures, TorchScript and entry points with ``--weights``) reads it
here:

* ``.safetensors`` (or any file that starts like one) with
  ``safetensors.torch.load_file``: a flat dict of tensors, no pickle at all;
* anything else with ``torch.load(weights_only=True)``: tensors, plain
  containers and numbers only. A file that needs other Python objects to be
  unpickled (a whole pickled ``nn.Module``, an ``argparse.Namespace`` in a
  training checkpoint, or a booby-trapped ``__reduce__``) could run arbitrary
  code while loading, so it is refused with :class:`UnsafeWeightsError`, whose
  message names what it would need and how to re-save the file as weights only.

famegui never falls back to a full unpickling.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import torch
from torch import nn

from ..data.files import regular_file
from .wrapper import ModelLoadError

SAFETENSORS_SUFFIX = ".safetensors"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar", SAFETENSORS_SUFFIX)

HOW_TO_RESAVE = ("if you trust it, re-save only the weights: torch.save(state_dict, 'weights.pth') or "
                 "safetensors.torch.save_file(state_dict, 'weights.safetensors'), where state_dict is "
                 "model.state_dict() (or checkpoint['state_dict'])")


class NotWeightsError(ModelLoadError):
    """The file is not a weights file famegui can read (not torch, not safetensors, or damaged)."""


class UnsafeWeightsError(ModelLoadError):
    """The file is a pickle that needs arbitrary Python objects (it could run code when loaded)."""


def short_reason(e: BaseException, limit: int = 200) -> str:
    """A library's error as a short reason: its first line, cut at a sentence (or word) end, never mid-word."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    text = text.splitlines()[0].strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    end = head.rfind(". ")
    if end >= limit // 3:
        return head[:end + 1]
    return head.rsplit(" ", 1)[0].rstrip(",;:") + " ..."




def looks_like_safetensors(path: Path) -> bool:
    """By suffix, or by content: an 8-byte little-endian header length followed by a JSON object."""
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            if len(head) < 9 or head[8:9] != b"{":
                return False
            (n,) = struct.unpack("<Q", head[:8])
            if n > 100_000_000 or n > path.stat().st_size:
                return False
            f.seek(8)
            json.loads(f.read(n))
            return True
    except (OSError, ValueError, UnicodeDecodeError, struct.error):
        return False


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise NotWeightsError(f"{path.name} is a .safetensors file: install safetensors "
                              "(pip install safetensors) to read it") from None
    try:
        return load_file(str(path), device="cpu")
    except MemoryError:
        raise ModelLoadError(f"not enough memory to load {path}") from None
    except Exception as e:  # safetensors raises its own error types on damaged files
        raise NotWeightsError(f"{path} is not a valid .safetensors file ({short_reason(e)})") from None


def unsafe_globals(path: Path) -> list[str]:
    """The Python objects a torch pickle would import when loaded (read without running anything)."""
    try:
        from torch.serialization import get_unsafe_globals_in_checkpoint
    except ImportError:  # torch < 2.5
        return []
    try:
        return list(get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - legacy (non-zip) files are not supported there
        return []


def pickle_globals(path: Path, limit: int = 64 << 20) -> list[str]:
    """The Python objects a plain pickle file names (``module.name``), read opcode by opcode with
    :mod:`pickletools` (nothing is imported or run); [] for a file that is not a pickle or names none."""
    import pickletools

    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return []
    names, strings = [], []
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings = (strings + [str(arg)])[-2:]
            elif op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                names.append(".".join(strings))
            elif op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - not a pickle (or a damaged one): whatever it names so far
        pass
    allowed = ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage")
    return [n for n in dict.fromkeys(names) if n not in allowed]


def _refusal(path: Path, error: BaseException) -> UnsafeWeightsError:
    names = unsafe_globals(path) or pickle_globals(path)
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))[:1]
    needs = f" (it needs {', '.join(names[:3])}{' ...' if len(names) > 3 else ''})" if names else ""
    return UnsafeWeightsError(
        f"{path.name} pickles Python objects, not just weights{needs}; unpickling them could run arbitrary "
        f"code, so famegui will not load it; {HOW_TO_RESAVE}")


def _read_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise ModelLoadError(f"not enough memory to load {path}") from None
    except pickle.UnpicklingError as e:
        # refused as unsafe only when it really asks for Python objects; garbage ("Unsupported operand") is
        # simply not a weights file
        text = str(e)
        if unsafe_globals(path) or "GLOBAL" in text or "Unsupported global" in text or pickle_globals(path):
            raise _refusal(path, e) from None
        raise NotWeightsError(f"{path} is not a PyTorch weights file (it is not a pickle of tensors)") from None
    except Exception as e:  # torch.load raises many types on foreign files
        if pickle_globals(path):  # a plain pickle (not torch's format) that names Python objects
            raise _refusal(path, e) from None
        raise NotWeightsError(f"{path} is not a PyTorch weights file ({short_reason(e)})") from None


def read_weights_file(path: str | Path) -> object:
    """What a weights file holds (a dict of tensors for safetensors; tensors and containers for torch files).

    Raises a one-line :class:`ModelLoadError` (:class:`NotWeightsError`, :class:`UnsafeWeightsError`).
    """
    path = regular_file(path, "weights file", "weights", NotWeightsError)
    if looks_like_safetensors(path):
        return _read_safetensors(path)
    return _read_torch(path)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file holding either the dict itself or a checkpoint dict.

    ``.safetensors`` or a torch file read with ``weights_only`` (pickles that would need arbitrary
    objects are refused, never unpickled). Keys shared prefixes ``module.`` / ``model.`` are dropped.
    """
    path = Path(path)
    obj = read_weights_file(path)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "params"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} holds no state dict "
                             "(expected a dict of tensors or a checkpoint with 'state_dict')")
    prefixes = ("module.", "model.")
    for pre in prefixes:
        if all(k.startswith(pre) for k in obj):
            obj = {k[len(pre):]: v for k, v in obj.items()}
    return obj


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: str) -> None:
    """``load_state_dict`` with a one-line error when keys or shapes do not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of wrong shape (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        raise ModelLoadError(f"{source} does not fit {what}: " + "; ".join(parts) + " keys")
    module.load_state_dict(state, strict=True)


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a state dict as ``.safetensors`` (contiguous copies; shared tensors are cloned)."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(path))
    return path
