"""What the commands share: the error type, the model / input / target / method-parameter flags and
their reading, output checks, the one-line error text and the progress line.

Nothing heavy is imported at module level: ``famegui --help`` and the error paths must start fast.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

EXIT_ERROR = 1


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (a KeyError's without its quotes)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError) and msg.startswith(("'", '"')):
        msg = msg.strip("'\"")
    return msg


# --------------------------------------------------------------------------- flags
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dlib-resnet",
                   help="zoo name (famegui models), timm:NAME, insightface:PACK[/MODEL], an .onnx or TorchScript "
                        "file, or package.module:callable, which imports and runs that Python code "
                        "(default: dlib-resnet)")
    p.add_argument("--weights", default=None,
                   help="weights file (.safetensors, or a .pth state dict/checkpoint; pickles that need Python "
                        "objects are refused), or 'random' for an untrained network")
    p.add_argument("--input-size", type=int, default=None,
                   help="input size for ONNX/TorchScript/entry-point/timm models")
    p.add_argument("--task", choices=("classification", "embedding"), default=None,
                   help="task of an ONNX/TorchScript/entry-point model (default: guessed from its output)")
    p.add_argument("--mean", default=None, metavar="M[,M,M]", help="ONNX: input mean in [0,1] units")
    p.add_argument("--std", default=None, metavar="S[,S,S]", help="ONNX: input std in [0,1] units")
    p.add_argument("--channel-order", choices=("RGB", "BGR"), default=None,
                   help="ONNX: channel order (default RGB)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")


def add_input_args(p: argparse.ArgumentParser, target_required: bool, image_required: bool = True) -> None:
    """Model, image and target flags shared by explain, sanity and faithfulness."""
    add_model_args(p)
    p.add_argument("--image", required=image_required)
    p.add_argument("--face", type=int, default=0, help="which face (0 = largest)")
    p.add_argument("--no-align", action="store_true", help="face models: use a centre crop instead of alignment")
    tg = p.add_argument_group("target (exactly one)")
    tg.add_argument("--cell", default=None, metavar="LAYER:ROW,COL")
    tg.add_argument("--class", dest="class_", default=None, metavar="K|NAME|top1")
    tg.add_argument("--reference", default=None, metavar="IMG2")
    choices = ("similar", "dissimilar") if target_required else ("similar", "dissimilar", "both")
    tg.add_argument("--target", choices=choices, default=None if target_required else "both",
                    help=None if target_required else "with --reference: e+, e- or both (default)")
    p.add_argument("--reference-face", type=int, default=0)


def add_method_param_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per registry parameter (--iterations, --step, --masks, ...), plus --blur K,SIGMA."""
    from ..methods import all_params

    g = parser.add_argument_group("method parameters (defaults depend on the method; `famegui methods`)")
    g.add_argument("--blur", default=None, metavar="K,SIGMA",
                   help="FAME blur kernel and sigma (default 49,7.7 for classifiers, 25,5 for faces)")
    for name, p in all_params().items():
        flag = "--" + name.replace("_", "-")
        if p.type is bool:
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=p.help)
        else:
            extra = f" (one of {', '.join(map(str, p.choices))})" if p.choices else ""
            g.add_argument(flag, dest=name, default=None, metavar=p.type.__name__.upper(), help=p.help + extra)


# --------------------------------------------------------------------------- model and inputs
def load_model(args):
    from ..models.zoo import load_model as load

    options = {}
    if getattr(args, "input_size", None):
        options["input_size"] = args.input_size
    if getattr(args, "task", None):
        options["task"] = args.task
    for key in ("mean", "std"):
        text = getattr(args, key, None)
        if text:
            try:
                values = tuple(float(v) for v in text.split(","))
            except ValueError:
                values = ()
            if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values) or \
                    (key == "std" and min(values) <= 0):
                raise CliError(f"--{key} must be one number or three, comma-separated, finite"
                               f"{' and positive' if key == 'std' else ''}, got {text!r}")
            options[key] = values * 3 if len(values) == 1 else values
    if getattr(args, "channel_order", None):
        options["channel_order"] = args.channel_order
    model = load(args.model, args.weights, **options)
    return model.to(args.device) if args.device != "cpu" else model


def prepare_input(model, args, image, face_index: int = 0):
    """``image`` as the model's input (aligned unless --no-align): a ModelInput."""
    from ..data.pipeline import prepare_for_model

    return prepare_for_model(model, image, face_index=face_index, align=not args.no_align)


def check_writable(*paths) -> None:
    """Fail before computing, not after, when an output cannot be written."""
    import os

    for p in filter(None, paths):
        folder = Path(p).resolve().parent
        if not folder.is_dir():
            raise CliError(f"cannot write {p}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise CliError(f"cannot write {p}: folder {folder} is not writable")


# --------------------------------------------------------------------------- targets
def resolve_target(model, args, x):
    """The Target the flags ask for (exactly one of --cell, --class, --reference)."""
    from ..targets import Target

    given = [n for n in ("cell", "class_", "reference") if getattr(args, n) is not None]
    if len(given) != 1:
        raise CliError("give exactly one of --cell LAYER:ROW,COL, --class K|top1, or --reference IMG")
    if args.cell is not None:
        t = Target.parse_cell(args.cell)
        model.layer_info(t.layer)  # unknown layer -> KeyError with a hint
        return t
    if args.class_ is not None:
        if model.task != "classification":
            raise CliError(f"{model.name} is an embedding model; use --reference IMG --target similar|dissimilar")
        return Target("class", class_index=class_index(model, args.class_, x))
    if args.target is None:
        raise CliError("--reference needs --target similar or --target dissimilar")
    return Target(args.target)


def resolve_targets(model, args, x) -> list:
    """Like :func:`resolve_target`, where ``--target both`` (with --reference) gives e+ and e-."""
    from ..targets import Target

    both = args.target == "both"
    if both:
        args.target = "similar" if args.reference is not None else None
    target = resolve_target(model, args, x)
    return [Target("similar"), Target("dissimilar")] if both and target.kind == "similar" else [target]


def class_index(model, text: str, x) -> int:
    """--class K, NAME or topK as a class index."""
    import torch

    names = model.class_names or []
    if text.lower().startswith("top"):
        k = int(text[3:] or 1)
        with torch.no_grad():
            logits = model(x.to(model.device))
        return int(logits[0].argsort(descending=True)[k - 1])
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < (len(names) or 10**9):
            raise CliError(f"class {idx} is out of range ({len(names)} classes)")
        return idx
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise CliError(f"unknown class {text!r}: give an index, a class name or top1")


# --------------------------------------------------------------------------- method parameters
def parse_blur(text: str | None):
    if text is None:
        return None, None
    try:
        k, s = text.split(",")
        return int(k), float(s)
    except ValueError:
        raise CliError(f"--blur must be KERNEL,SIGMA (e.g. 25,5), got {text!r}") from None


def method_params(args) -> dict:
    """Method parameters given on the command line (flags generated from the registry)."""
    from ..methods import all_params

    given = {name: getattr(args, name) for name in all_params() if getattr(args, name, None) is not None}
    k, sig = parse_blur(getattr(args, "blur", None))
    if k is not None:
        given["blur_kernel"], given["blur_sigma"] = k, sig
    return given


def method_choice(args, task: str) -> list:
    """--method A,B (each must support ``task``), or FAME plus the task's cheap methods."""
    from ..methods import get_method, methods

    if args.method:
        specs = [get_method(n) for n in args.method.split(",") if n]
        for spec in specs:
            if task not in spec.tasks:
                raise CliError(f"{spec.label} does not support {task} targets")
        return specs
    return [m for m in methods(task) if m.cost == "cheap" or m.name == "fame"]


def resolved_params(args, specs, task: str) -> dict:
    """Each method's full parameters: its defaults for ``task`` with the flags it knows applied."""
    given = method_params(args)
    out = {}
    for spec in specs:
        known = {p.name for p in spec.params}
        out[spec.name] = spec.resolve({k: v for k, v in given.items() if k in known}, task)
    return out


# --------------------------------------------------------------------------- output
def cli_progress(quiet: bool):
    """A percentage on stderr (only on a terminal, and not with --quiet)."""
    if quiet or not sys.stderr.isatty():
        return None

    def show(fraction, _partial=None):
        sys.stderr.write(f"\r  {100 * fraction:5.1f}%   ")
        if fraction >= 1:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
