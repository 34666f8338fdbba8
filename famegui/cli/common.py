"""What the commands share: the error type, the model / input / target / method-parameter flags and
their reading, output checks, the one-line error text and the progress line.

Nothing heavy is imported at module level: ``famegui --help`` and the error paths must start fast.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

# exit codes (README "Limits and safety"): 0 done, 1 an error the user can fix (one line on stderr), 2 a
# usage error (a bad flag or value, from argparse), 3 a check that ran and failed (e.g. a method that fails
# the randomisation sanity check), 4 an internal error (a bug: one line, --debug for the traceback),
# 130 interrupted (Ctrl+C)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CHECK_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (a KeyError's without its quotes); an OSError with its file."""
    if isinstance(e, OSError) and e.strerror and e.filename and str(e.filename) not in str(e.args[-1]):
        return f"{e.strerror}: {e.filename}"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError) and msg.startswith(("'", '"')):
        msg = msg.strip("'\"")
    return msg


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``famegui CMD: error: ...`` and exit 2, no usage block before it."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(lo: float | None = None, hi: float | None = None, integral: bool = False):
    """An argparse ``type`` for a finite number in [lo, hi] (a whole number if ``integral``)."""
    word = "a whole number" if integral else "a number"
    bounds = (f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else
              f" >= {lo:g}" if lo is not None else f" <= {hi:g}" if hi is not None else "")

    def parse(text: str):
        try:
            v = int(text.strip()) if integral and text.strip().lstrip("+-").isdigit() else float(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"must be {word}{bounds}, got {text!r}") from None
        if isinstance(v, float):
            if not math.isfinite(v):
                raise argparse.ArgumentTypeError(f"must be a finite number{bounds}, got {text!r}")
            if integral:
                if v != int(v):
                    raise argparse.ArgumentTypeError(f"must be {word}{bounds}, got {text!r}")
                v = int(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {word}{bounds}, got {text!r}")
        return v

    parse.__name__ = "whole number" if integral else "number"
    return parse


def device(text: str) -> str:
    """An argparse ``type`` for --device: cpu, cuda, cuda:N or mps, and only one this machine has."""
    import re

    t = text.strip().lower()
    if t == "cpu":
        return t
    m = re.fullmatch(r"(cuda|mps)(?::(\d{1,3}))?", t)
    if not m:
        raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or mps, got {text!r}")
    import torch

    if m.group(1) == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise argparse.ArgumentTypeError("mps (Apple GPU) is not available on this machine; use --device cpu")
        return t
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text} asks for a CUDA GPU, but this machine has none that torch "
                                         f"{torch.__version__} can use; use --device cpu")
    n = torch.cuda.device_count()
    if m.group(2) is not None and int(m.group(2)) >= n:
        raise argparse.ArgumentTypeError(f"{text}: this machine has {n} CUDA device(s) (cuda:0 to cuda:{n - 1})")
    return t


# --------------------------------------------------------------------------- flags
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dlib-resnet",
                   help="zoo name (famegui models), timm:NAME, insightface:PACK[/MODEL], an .onnx or TorchScript "
                        "file, or package.module:callable, which imports and runs that Python code "
                        "(default: dlib-resnet)")
    p.add_argument("--weights", default=None,
                   help="weights file (.safetensors, or a .pth state dict/checkpoint; pickles that need Python "
                        "objects are refused), or 'random' for an untrained network")
    p.add_argument("--input-size", type=number(8, 4096, integral=True), default=None,
                   help="input size for ONNX/TorchScript/entry-point/timm models")
    p.add_argument("--task", choices=("classification", "embedding"), default=None,
                   help="task of an ONNX/TorchScript/entry-point model (default: guessed from its output)")
    p.add_argument("--mean", default=None, metavar="M[,M,M]", help="ONNX: input mean in [0,1] units")
    p.add_argument("--std", default=None, metavar="S[,S,S]", help="ONNX: input std in [0,1] units")
    p.add_argument("--channel-order", choices=("RGB", "BGR"), default=None,
                   help="ONNX: channel order (default RGB)")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")


def add_input_args(p: argparse.ArgumentParser, target_required: bool, image_required: bool = True) -> None:
    """Model, image and target flags shared by explain, sanity and faithfulness."""
    add_model_args(p)
    p.add_argument("--image", required=image_required)
    p.add_argument("--face", type=number(0, 999, integral=True), default=0, help="which face (0 = largest)")
    p.add_argument("--no-align", action="store_true", help="face models: use a centre crop instead of alignment")
    tg = p.add_argument_group("target (exactly one)")
    for kind in flag_kinds():  # each kind's own flag, as it declares it (famegui.targets.CliFlag)
        tg.add_argument(kind.cli.flag, dest=kind.cli.key, default=None, metavar=kind.cli.metavar, help=kind.cli.help)
    tg.add_argument("--reference", default=None, metavar="IMG2")
    words = tuple(k.cli.choice for k in pair_kinds())
    choices = words if target_required else (*words, "both")
    tg.add_argument("--target", choices=choices, default=None if target_required else "both",
                    help=None if target_required else "with --reference: e+, e- or both (default)")
    p.add_argument("--reference-face", type=number(0, 999, integral=True), default=0)


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
def model_options(args) -> dict:
    """The loader options the model flags give (input size, task, ONNX mean / std / channel order)."""
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
    return options


def model_spec(args) -> dict:
    """What a worker process needs to load the model of the flags (:func:`famegui.evaluation.runner.load_spec`)."""
    return {"model": args.model, "weights": args.weights, "device": args.device, "options": model_options(args)}


def load_model(args):
    from ..core import threads
    from ..models.zoo import load_model as load

    threads.configure("cli")
    threads.adapt(block=True)  # the cores other processes leave free (a fraction of a second)
    model = load(args.model, args.weights, **model_options(args))
    return model.to(args.device) if args.device != "cpu" else model


def prepare_input(model, args, image, face_index: int = 0):
    """``image`` as the model's input (aligned unless --no-align): a ModelInput."""
    from ..data.pipeline import prepare_for_model

    image = getattr(args, "loaded_images", {}).get(image, image)  # loaded by check_inputs
    return prepare_for_model(model, image, face_index=face_index, align=not args.no_align)


def check_writable(*paths) -> None:
    """Fail before computing, not after, when an output cannot be written."""
    check_outputs({str(p): p for p in paths if p is not None})


NAME_BYTES = 230  # a file name famegui writes (it also needs room for its temporary names and journal)


def check_outputs(outputs: dict, inputs=()) -> None:
    """Refuse, before any work, outputs that cannot or must not be written: an empty name, a name too long,
    a folder that is missing or read-only, an existing folder / device in the way, two outputs on one path, or
    an output that would overwrite an input. ``outputs`` maps what each is ("--out", "the sidecar") to its
    path (None: not written); ``inputs`` are the files the command reads."""
    import os

    seen: dict[Path, str] = {}
    for what, p in outputs.items():
        if p is None:
            continue
        if not str(p).strip():
            raise CliError(f"{what} is empty: give a file name")
        path = Path(p).expanduser()
        if len(path.name.encode()) > NAME_BYTES:
            raise CliError(f"{what}: the file name is too long ({len(path.name.encode())} bytes; at most "
                           f"{NAME_BYTES})")
        folder = path.resolve().parent
        if not folder.is_dir():
            raise CliError(f"cannot write {p}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise CliError(f"cannot write {p}: folder {folder} is not writable")
        if path.is_dir():
            raise CliError(f"{what} {p} is a folder: give a file name")
        if path.exists() and not path.is_file():
            raise CliError(f"{what} {p} exists and is not a regular file (a device or FIFO): famegui will not "
                           "replace it")
        key = path.resolve()
        if key in seen:
            raise CliError(f"{what} and {seen[key]} are the same file ({p}): give different names")
        seen[key] = what
    for src in inputs:
        if not src:
            continue
        try:
            key = Path(src).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if key in seen:
            raise CliError(f"{seen[key]} {key} is an input of this command: famegui will not overwrite it")


def check_inputs(args, images=("image", "reference", "non_mate")) -> None:
    """Checks of the files and values a command reads, before any model is loaded: every image loaded (a
    regular file within the size and pixel limits, checked before decoding; kept in ``args.loaded_images``
    for :func:`prepare_input`), the weights a regular file within its limit, the target flags well formed."""
    import os

    from ..data.files import regular_file
    from ..data.images import load_image

    loaded = {}
    for name in images:
        path = getattr(args, name, None)
        if path is not None and path not in loaded:
            loaded[path] = load_image(path)  # decoded now (and reused), so that a bad image fails at once
    args.loaded_images = loaded
    weights = getattr(args, "weights", None)
    if weights not in (None, "random") and os.path.lexists(weights):  # a missing file: the loader says what it needs
        regular_file(weights, "weights file", "weights", CliError)
    for kind in flag_kinds():
        text = getattr(args, kind.cli.key, None)
        if text is not None:
            kind.check_cli(text)


# --------------------------------------------------------------------------- targets
# Each target kind declares its flag (famegui.targets.CliFlag): a kind of one input has a flag of its own
# (--cell, --class, a plug-in's), a pair kind is a word of --target, given with --reference.
def flag_kinds() -> list:
    """The kinds asked for with a flag of their own, in the order they were registered."""
    from ..targets import all_kinds

    return [k for k in all_kinds() if k.cli is not None and k.cli.flag is not None]


def pair_kinds() -> list:
    """The kinds asked for with --reference IMG2 --target WORD."""
    from ..targets import all_kinds

    return [k for k in all_kinds() if k.cli is not None and k.cli.choice is not None]


def resolve_target(model, args, x):
    """The Target the flags ask for (exactly one of the kinds' flags, or --reference with --target), read
    by its kind (:meth:`famegui.targets.TargetKind.from_cli`)."""
    given = [k for k in flag_kinds() if getattr(args, k.cli.key, None) is not None]
    if len(given) + (args.reference is not None) != 1:
        flags = ", ".join(f"{k.cli.flag} {k.cli.metavar or 'VALUE'}" for k in flag_kinds())
        raise CliError(f"give exactly one of {flags}, or --reference IMG")
    if given:
        return given[0].from_cli(getattr(args, given[0].cli.key), model, x)
    words = {k.cli.choice: k for k in pair_kinds()}
    if args.target not in words:
        raise CliError(f"--reference needs {' or '.join(f'--target {w}' for w in words)}")
    return words[args.target].from_cli(None, model, x)


def resolve_targets(model, args, x) -> list:
    """Like :func:`resolve_target`, where ``--target both`` (with --reference) gives every map of it (e+ and
    e-: the pair kinds that declare ``in_both``)."""
    if args.target != "both":
        return [resolve_target(model, args, x)]
    both = [k for k in pair_kinds() if k.cli.in_both]
    args.target = both[0].cli.choice if args.reference is not None and both else None
    target = resolve_target(model, args, x)
    return [k.from_cli(None, model, x) for k in both] if args.reference is not None else [target]


# --------------------------------------------------------------------------- method parameters
def parse_blur(text: str | None):
    """--blur KERNEL,SIGMA: an odd whole kernel (0 = no blur) and a finite sigma >= 0."""
    if text is None:
        return None, None
    from ..core.attribution import check_blur

    try:
        k, s = text.split(",")
        kernel, sigma = int(k), float(s)
        check_blur(kernel, sigma)
    except ValueError:
        raise CliError(f"--blur must be KERNEL,SIGMA: an odd whole kernel (0 = none) and a finite sigma >= 0 "
                       f"(e.g. 25,5), got {text!r}") from None
    return kernel, sigma


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

    if args.method is not None:
        specs = [get_method(n.strip()) for n in args.method.split(",") if n.strip()]
        if not specs:
            raise CliError("--method is empty: give one or more method names (`famegui methods` lists them)")
        for spec in specs:
            if task not in spec.tasks:
                raise CliError(f"{spec.label} does not support {task} targets")
        return specs
    return [m for m in methods(task) if m.cost == "cheap" or m.name == "fame"]


def check_params(args, specs) -> None:
    """Every method-parameter flag given is valid for the methods that take it (type, finite, range), checked
    before any model is loaded; a flag no chosen method takes is an error."""
    given = method_params(args)
    for name, value in given.items():
        takers = [spec for spec in specs if name in {p.name for p in spec.params}]
        if not takers:
            labels = ", ".join(spec.label for spec in specs)
            raise CliError(f"--{name.replace('_', '-')} is not a parameter of {labels} (`famegui methods` lists "
                           "each method's parameters)")
        for spec in takers:
            spec.resolve({name: value})


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
