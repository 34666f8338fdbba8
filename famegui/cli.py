"""famegui's command line: the GUI by default, and headless commands on the same code path.

    famegui                       start the app on the embedded face model
    famegui explain ...           compute a map and write an overlay PNG (+ .npy, + sidecar)
    famegui layers --model M      list layers with output shapes
    famegui bench --model M       time FAME iterations (one JSON line); --methods: every method
    famegui verify --model M A B  cosine, distance, threshold and the decision
    famegui reproduce SIDECAR     recompute an export from its JSON sidecar
    famegui models                list the model zoo
    famegui methods               list the explanation methods and their parameters
    famegui sanity ...            randomisation sanity check (Adebayo et al.) for one or more methods
    famegui faithfulness ...      deletion / insertion curves and their areas, for one image or a pair list
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_ERROR = 1


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


# --------------------------------------------------------------------------- helpers
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dlib-resnet",
                   help="zoo name, TorchScript file or package.module:callable (default: dlib-resnet)")
    p.add_argument("--weights", default=None,
                   help="weights file (state dict or checkpoint), or 'random' for an untrained network")
    p.add_argument("--input-size", type=int, default=None, help="input size for TorchScript/entry-point models")
    p.add_argument("--task", choices=("classification", "embedding"), default=None,
                   help="task of a TorchScript/entry-point model (default: guessed from its output)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")


def _load_model(args):
    from .models.zoo import load_model

    options = {}
    if getattr(args, "input_size", None):
        options["input_size"] = args.input_size
    if getattr(args, "task", None):
        options["task"] = args.task
    model = load_model(args.model, args.weights, **options)
    return model.to(args.device) if args.device != "cpu" else model


def _parse_blur(text: str | None):
    if text is None:
        return None, None
    try:
        k, s = text.split(",")
        return int(k), float(s)
    except ValueError:
        raise CliError(f"--blur must be KERNEL,SIGMA (e.g. 25,5), got {text!r}") from None


def _method_params(args) -> dict:
    """Method parameters given on the command line (flags generated from the registry)."""
    from .methods import all_params

    given = {name: getattr(args, name) for name in all_params() if getattr(args, name, None) is not None}
    k, sig = _parse_blur(getattr(args, "blur", None))
    if k is not None:
        given["blur_kernel"], given["blur_sigma"] = k, sig
    return given


def _cli_progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(fraction, _partial=None):
        sys.stderr.write(f"\r  {100 * fraction:5.1f}%   ")
        if fraction >= 1:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _resolve_target(model, args, x):
    """The Target the flags ask for (exactly one of --cell, --class, --reference)."""
    from .targets import Target

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
        return Target("class", class_index=_class_index(model, args.class_, x))
    if args.target is None:
        raise CliError("--reference needs --target similar or --target dissimilar")
    return Target(args.target)


def _class_index(model, text: str, x) -> int:
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


def _check_writable(*paths) -> None:
    """Fail before computing, not after, when an output cannot be written."""
    import os

    for p in filter(None, paths):
        folder = Path(p).resolve().parent
        if not folder.is_dir():
            raise CliError(f"cannot write {p}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise CliError(f"cannot write {p}: folder {folder} is not writable")


# --------------------------------------------------------------------------- commands
def cmd_explain(args) -> int:
    from .methods import get_method, methods, run_method
    from .targets import task_of
    from .evaluation.verification import default_cosine_threshold
    from .data.pipeline import prepare_for_model
    from .report import explain_record, write_outputs

    spec = get_method(args.method)  # unknown method -> one-line error listing them
    _check_writable(args.out, args.save_map)
    model = _load_model(args)
    probe = prepare_for_model(model, args.image, face_index=args.face, align=not args.no_align)
    target = _resolve_target(model, args, probe.tensor)
    task = task_of(target)
    if task not in spec.tasks:
        raise CliError(f"{spec.label} does not support {task} targets (it supports: {', '.join(sorted(spec.tasks))})")
    params = spec.resolve(_method_params(args), task)
    ref = non_mate = None
    if args.reference is not None:
        ref = prepare_for_model(model, args.reference, face_index=args.reference_face, align=not args.no_align)
    if args.non_mate is not None:
        if ref is None or not spec.uses_non_mate:
            users = ", ".join(m.name for m in methods() if m.uses_non_mate)
            raise CliError(f"--non-mate is for pair targets of methods with a triplet gain ({users})")
        non_mate = prepare_for_model(model, args.non_mate, face_index=args.non_mate_face, align=not args.no_align)
    threshold = default_cosine_threshold(model) if ref is not None else None
    info: dict = {}
    t0 = time.perf_counter()
    amap = run_method(spec.name, model, probe.tensor, target, params, reference=None if ref is None else ref.tensor,
                      threshold=threshold, progress=_cli_progress(args.quiet), info=info,
                      non_mate=None if non_mate is None else non_mate.tensor)
    seconds = time.perf_counter() - t0
    record = explain_record(model, args.weights, probe, ref, target, spec.name, params, seconds,
                            extra={"info": info}, non_mate=non_mate)
    written = write_outputs(amap, probe, record, args.out, args.save_map,
                            on_photo=args.on_photo, opacity=args.opacity, cmap=args.colormap,
                            sidecar=not args.no_sidecar)
    if info.get("empty"):
        print("warning: the map is empty: the loss was already below --epsilon at the start", file=sys.stderr)
    for note in filter(None, (probe.note, ref.note if ref else "")):
        print(f"note: {note}", file=sys.stderr)
    extra = ""
    if "initial_loss" in info:
        extra = f"loss {info['initial_loss']:.4f} -> {info['final_loss']:.4f} in {info['iterations']} iterations, "
    if "gain" in info:
        extra += f"gain {info['gain']}, "
    print(f"{spec.label} {target.label()}: {extra}{seconds:.1f} s; wrote {', '.join(map(str, written))}")
    return 0


def cmd_sanity(args) -> int:
    from .targets import Target
    from .methods import methods
    from .targets import task_of
    from .evaluation.sanity import sanity_sheet, sanity_suite
    from .data.pipeline import prepare_for_model

    _check_writable(args.sheet, args.json)
    both = args.target == "both"
    args.target = ("similar" if args.reference is not None else None) if both else args.target
    model = _load_model(args)
    probe = prepare_for_model(model, args.image, face_index=args.face, align=not args.no_align)
    target = _resolve_target(model, args, probe.tensor)
    targets = [Target("similar"), Target("dissimilar")] if both and target.kind == "similar" else [target]
    task = task_of(target)
    specs = _method_choice(args, task) if args.method else [m for m in methods(task) if m.gradient_based]
    params = _resolved_params(args, specs, task)
    ref = None
    if args.reference is not None:
        ref = prepare_for_model(model, args.reference, face_index=args.reference_face, align=not args.no_align).tensor
    rows = []
    print(f"# {model.name}: maps of the trained network vs the same network with random weights "
          f"({'all layers' if args.depth is None else f'top {args.depth} layers'}, seed {args.weights_seed}); "
          f"pass = every correlation < {args.threshold}")
    head = f"{'method':<14} {'target':<11} {'spearman':>8} {'|sp|':>6} {'pearson':>7}  {'full':>6}"
    print(head + ("" if args.no_prior else f"  {'prior':>6}") + "  result   seconds")
    results = sanity_suite([s.name for s in specs], model, probe.tensor, targets, params, reference=ref,
                           seed=args.weights_seed, depth=args.depth,
                           region="full" if args.no_align else args.region,  # no alignment, no face square
                           prior=not args.no_prior,
                           threshold=args.threshold)  # each row prints as its method finishes
    for r in results:
        rows.append(r)
        line = (f"{r.method:<14} {r.target.label().split(' ')[0]:<11} {r.inside.spearman:>+8.2f} "
                f"{r.inside.spearman_abs:>+6.2f} {r.inside.pearson:>+7.2f}  {r.full.worst:>+6.2f}")
        if r.prior is not None:
            line += f"  {r.prior.worst:>+6.2f}"
        print(line + f"  {'pass' if r.passed else 'FAIL':<7} {r.seconds:7.1f}", flush=True)
    if rows and rows[0].region is not None:
        t, b, le, ri = rows[0].region
        print(f"# correlations inside the face square rows {t}..{b}, columns {le}..{ri}; 'full' = the whole input "
              f"(worst of the three measures); 'prior' = random vs random (seed {args.weights_seed + 1})")
    written = []
    if args.sheet:
        from .export import write_png

        written.append(write_png(args.sheet, sanity_sheet(rows, probe.prepared.tensor[0].permute(1, 2, 0).numpy())))
    if args.json:
        from .export import write_json

        payload = {"model": model.describe(), "image": str(args.image), "reference": args.reference,
                   "weights_seed": args.weights_seed, "depth": args.depth, "params": params,
                   "results": [r.to_dict() for r in rows]}
        written.append(write_json(args.json, payload))
    if written:
        print("wrote " + ", ".join(map(str, written)))
    failed = [r for r in rows if not r.passed]
    return 0 if not failed else 2


def _method_choice(args, task: str) -> list:
    """--method A,B (each must support ``task``), or FAME plus the task's cheap methods."""
    from .methods import get_method, methods

    if args.method:
        specs = [get_method(n) for n in args.method.split(",") if n]
        for spec in specs:
            if task not in spec.tasks:
                raise CliError(f"{spec.label} does not support {task} targets")
        return specs
    return [m for m in methods(task) if m.cost == "cheap" or m.name == "fame"]


def _resolved_params(args, specs, task: str) -> dict:
    given = _method_params(args)
    out = {}
    for spec in specs:
        known = {p.name for p in spec.params}
        out[spec.name] = spec.resolve({k: v for k, v in given.items() if k in known}, task)
    return out


def _faithfulness_over_pairs(args, model, modes, fractions) -> list:
    """Verification accuracy curves over a labelled pair list, at its EER threshold (FAME paper, Tab. 2)."""
    from .data.pairs import read_pairs
    from .data.pipeline import prepare_for_model
    from .evaluation.experiment import aggregate, baseline, evaluate
    from .evaluation.metrics import Sample
    from .evaluation.verification import eer_from_pairs
    from .targets import Target

    if model.task != "embedding":
        raise CliError(f"{model.name} is a classifier; --pairs needs a face (embedding) model")
    plist = read_pairs(args.pairs)
    eer = eer_from_pairs(model, plist, align=not args.no_align)
    pairs, skipped = [], []
    for p in plist:
        try:
            pairs.append((prepare_for_model(model, str(p.a), align=not args.no_align).tensor,
                          prepare_for_model(model, str(p.b), align=not args.no_align).tensor, p.same))
        except (ValueError, OSError) as e:
            skipped.append(f"line {p.line}: {_one_line(e)}")
    if not pairs:
        raise CliError("no usable pair in " + str(args.pairs))
    specs = _method_choice(args, "verification")
    params = _resolved_params(args, specs, "verification")
    print(f"# {model.name}: verification accuracy at the EER threshold {eer.threshold:.4f} of {args.pairs} "
          f"({len(pairs)} pairs{f', {len(skipped)} skipped' if skipped else ''}); fill {args.fill_with}")
    samples = []
    for name in ["random"] + [s.name for s in specs]:
        for i, (probe, ref, same) in enumerate(pairs):
            # genuine pairs along their e+ map (what makes them similar), impostors along e-
            s = Sample(model, probe, Target("similar" if same else "dissimilar"), method=name,
                       params=params.get(name, {}), reference=ref, threshold=eer.threshold, same=same, group="pairs")
            samples.append(baseline(s, seed=i) if name == "random" else s)
    from .evaluation.metrics import metric_names

    names = [f"accuracy-{m}" if f"accuracy-{m}" in metric_names() else m for m in modes]
    results = evaluate(samples, names, fractions=fractions, fill=args.fill_with)
    return aggregate(results, names, fractions=fractions, fill=args.fill_with)


def _faithfulness_of_one_input(args, model, metric_names, fractions) -> list:
    """Curves of one image (class / cell) or one pair (e+ / e-, the hiding game with a non-mate)."""
    import dataclasses

    from .data.pipeline import prepare_for_model
    from .evaluation.experiment import baseline, evaluate
    from .evaluation.metrics import Sample
    from .models.thresholds import default_cosine_threshold
    from .targets import Target

    both = args.target == "both"
    args.target = ("similar" if args.reference is not None else None) if both else args.target
    probe = prepare_for_model(model, args.image, face_index=args.face, align=not args.no_align)
    target = _resolve_target(model, args, probe.tensor)
    targets = [Target("similar"), Target("dissimilar")] if both and target.kind == "similar" else [target]
    specs = _method_choice(args, target.task)
    params = _resolved_params(args, specs, target.task)
    x, ref, nm, threshold = probe.tensor, None, None, None
    if args.reference is not None:
        ref = prepare_for_model(model, args.reference, face_index=args.reference_face, align=not args.no_align).tensor
        threshold = default_cosine_threshold(model)  # for the decision-flip share (S-RISE)
    if args.non_mate is not None:
        if ref is None:
            raise CliError("--non-mate needs --reference (the mate)")
        nm = prepare_for_model(model, args.non_mate, face_index=args.non_mate_face, align=not args.no_align).tensor
    print(f"# {model.name}: {', '.join(t.label() for t in targets)}; fill {args.fill_with}; "
          f"{args.steps} steps" + (f"; decision threshold cosine {threshold:.4f}" if threshold else ""))
    samples = []
    for t in targets:
        base = Sample(model, x, t, reference=ref, non_mate=nm, threshold=threshold)
        samples.append(baseline(base))
        samples += [dataclasses.replace(base, method=s.name, params=params[s.name]) for s in specs]
    return evaluate(samples, metric_names, fractions=fractions, fill=args.fill_with)


def cmd_faithfulness(args) -> int:
    from .evaluation.metrics import metric_names

    _check_writable(args.plot, args.json)
    given_modes = args.mode or ("deletion,insertion" + (",hiding" if args.non_mate else ""))
    modes = [m for m in given_modes.split(",") if m]
    known = [m for m in metric_names() if not m.startswith("accuracy-")]
    if not modes or any(m not in known for m in modes):
        raise CliError(f"--mode must be one or more of {', '.join(known)} (comma-separated), got {args.mode!r}")
    hiding = "hiding" in modes
    if (args.pairs is None) == (args.image is None):
        raise CliError("give --image (one image or pair) or --pairs LIST, not both")
    if args.pairs is not None and (hiding or args.non_mate):
        raise CliError("the hiding game runs on one triplet (--image, --reference, --non-mate), not --pairs")
    if hiding and (args.non_mate is None or args.reference is None):
        raise CliError("--mode hiding (the hiding game) needs --reference MATE and --non-mate IMG")
    if args.steps < 1 or args.steps > 1000:
        raise CliError(f"--steps must be between 1 and 1000, got {args.steps}")
    fractions = [i / args.steps for i in range(args.steps + 1)]
    model = _load_model(args)
    t0 = time.perf_counter()
    curves = _faithfulness_over_pairs(args, model, modes, fractions) if args.pairs is not None else \
        _faithfulness_of_one_input(args, model, modes, fractions)
    flips = any("flip" in c.extra for c in curves)
    print(f"{'method':<14} {'target':<8} {'mode':<10} {'AUC':>7}" + ("   flip" if flips else "") + "  score")
    for c in curves:
        tgt = c.extra.get("target", "pairs").split(" ")[0]
        flip = ""
        if flips:
            f = c.extra.get("flip")
            flip = f"  {'' if 'flip' not in c.extra else 'never' if f is None else f'{f:5.2f}':>5}"
        print(f"{c.method:<14} {tgt:<8} {c.mode:<10} {c.auc:7.4f}{flip}  {c.score_name}")
    print("# lower is better for deletion, higher for insertion" + (" and hiding" if hiding else "") +
          ("; flip: share of pixels removed (deletion) or put back (insertion) until the decision is changed "
           "(restored), smaller is better" if flips else "") + f"; {time.perf_counter() - t0:.1f} s in all")
    written = []
    if args.plot:
        from .core.plots import curves_figure
        from .export import write_png

        written.append(write_png(args.plot, curves_figure(curves)))
    if args.json:
        from .export import write_json

        written.append(write_json(args.json, {"model": model.describe(), "fill": args.fill_with,
                                              "curves": [c.to_dict() for c in curves]}))
    if written:
        print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_methods(args) -> int:
    from .methods import methods

    for m in methods():
        ps = ", ".join(f"{p.name}={p.default}" for p in m.params)
        print(f"{m.name:<12} {m.label:<16} tasks: {','.join(sorted(m.tasks)):<32} output: {m.output:<6} "
              f"cost: {m.cost:<9} {ps}")
    return 0


def cmd_reproduce(args) -> int:
    from .report import reproduce

    out, diff = reproduce(args.sidecar, out=args.out, save_map=args.save_map)
    msg = f"wrote {out}"
    if diff is not None:
        msg += f"; max |difference| to the exported map: {diff:.2e}"
    print(msg)
    return 0


def cmd_layers(args) -> int:
    model = _load_model(args)
    rows = model.layers()
    if args.spatial:
        rows = [r for r in rows if r.is_spatial]
    width = max((len(r.name) for r in rows), default=10)
    print(f"# {model.name}: input {model.input_size[0]}x{model.input_size[1]}, task {model.task}, "
          f"default layer {model.default_layer}")
    for r in rows:
        print(f"{r.name:<{width}}  {r.type:<20} {'x'.join(map(str, r.shape))}")
    return 0


def cmd_models(args) -> int:
    from .models.zoo import EMBEDDED_DEFAULT, zoo_names

    for n in zoo_names():
        print(n + ("  (embedded default)" if n == EMBEDDED_DEFAULT else ""))
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_fame, bench_methods

    model = _load_model(args)
    if args.methods is not None:
        names = [n for n in args.methods.split(",") if n] or None
        for row in bench_methods(model, names):
            print(json.dumps(row), flush=True)
        return 0
    print(json.dumps(bench_fame(model, layer=args.layer, iterations=args.iterations, batch=args.batch)))
    return 0


def cmd_verify(args) -> int:
    from .evaluation.verification import compare_pair

    model = _load_model(args)
    if model.task != "embedding":
        raise CliError(f"{model.name} is a classifier; verify needs a face (embedding) model")
    res = compare_pair(model, args.image_a, args.image_b, align=not args.no_align,
                       face_a=args.face, face_b=args.reference_face, pairs=args.pairs)
    print(res.summary())
    return 0


# --------------------------------------------------------------------------- parser
def _add_method_param_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per registry parameter (--iterations, --step, --masks, ...), plus --blur K,SIGMA."""
    from .methods import all_params

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


def _add_input_args(p: argparse.ArgumentParser, target_required: bool, image_required: bool = True) -> None:
    """Model, image and target flags shared by explain, sanity and faithfulness."""
    _add_model_args(p)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="famegui", description="See what a convolutional network looks at.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command")

    g = sub.add_parser("gui", help="start the app (the default)")
    g.add_argument("--model", default=None)
    g.add_argument("--weights", default=None)
    g.add_argument("images", nargs="*")

    e = sub.add_parser("explain", help="compute an explanation and write an overlay")
    _add_input_args(e, target_required=True)
    e.add_argument("--method", default="fame", help="explanation method (`famegui methods` lists them)")
    e.add_argument("--non-mate", default=None, metavar="IMG3",
                   help="a photo of another person: gweEBP then uses seed 004's triplet gain for e+")
    e.add_argument("--non-mate-face", type=int, default=0)
    _add_method_param_flags(e)
    e.add_argument("--out", required=True, help="overlay PNG")
    e.add_argument("--save-map", default=None, help="raw map as float32 .npy")
    e.add_argument("--on-photo", action="store_true", help="draw on the full photo instead of the model input")
    e.add_argument("--opacity", type=float, default=0.5)
    e.add_argument("--colormap", default="jet")
    e.add_argument("--no-sidecar", action="store_true", help="do not write OUT.json")
    e.add_argument("--quiet", action="store_true")

    r = sub.add_parser("reproduce", help="recompute an export from its sidecar")
    r.add_argument("sidecar")
    r.add_argument("--out", default=None, help="overlay PNG (default: next to the sidecar, *.reproduced.png)")
    r.add_argument("--save-map", default=None)

    la = sub.add_parser("layers", help="list layers with output shapes")
    _add_model_args(la)
    la.add_argument("--spatial", action="store_true", help="only (C,H,W) feature maps")

    sub.add_parser("models", help="list the model zoo")
    sub.add_parser("methods", help="list the explanation methods and their parameters")

    b = sub.add_parser("bench", help="time FAME iterations; prints one JSON line")
    _add_model_args(b)
    b.add_argument("--layer", default=None, help="layer for the cell timings (default: an early layer)")
    b.add_argument("--iterations", type=int, default=10)
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--methods", nargs="?", const="", default=None, metavar="A,B",
                   help="instead: seconds per map for each method (default parameters) on the demo pair")

    sa = sub.add_parser("sanity", help="Adebayo's randomisation test: does the map change with random weights?")
    _add_input_args(sa, target_required=False)
    sa.add_argument("--method", default=None, metavar="A,B",
                    help="methods to test (default: every gradient-based method for the target)")
    _add_method_param_flags(sa)
    sa.add_argument("--weights-seed", type=int, default=0,
                    help="seed of the random weights (the prior's second network uses seed+1)")
    sa.add_argument("--depth", type=int, default=None,
                    help="randomise only the top N weight layers (cascading test; default: all)")
    sa.add_argument("--region", choices=("face", "full"), default="face",
                    help="where to correlate: the aligned face square (face models; default) or the whole input")
    sa.add_argument("--threshold", type=float, default=0.5, help="a method passes when every correlation is below")
    sa.add_argument("--no-prior", action="store_true",
                    help="skip the second random network (random-vs-random correlation)")
    sa.add_argument("--sheet", default=None, metavar="PNG", help="write trained vs random maps as one picture")
    sa.add_argument("--json", default=None, metavar="FILE", help="write the numbers as JSON")

    fa = sub.add_parser("faithfulness", help="deletion / insertion curves of one or more methods (AUC, plot)")
    _add_input_args(fa, target_required=False, image_required=False)
    fa.add_argument("--pairs", default=None, metavar="LIST",
                    help="instead of one image: a labelled pair list; the score is the verification accuracy at "
                         "the list's EER threshold (genuine pairs along e+, impostor pairs along e-)")
    fa.add_argument("--method", default=None, metavar="A,B",
                    help="methods to evaluate (default: FAME and the cheap methods of the task)")
    _add_method_param_flags(fa)
    fa.add_argument("--mode", default=None,
                    help="deletion, insertion and/or hiding, comma-separated (default: deletion,insertion, plus "
                         "hiding when --non-mate is given)")
    fa.add_argument("--non-mate", default=None, metavar="IMG3",
                    help="a photo of another person: adds seed 004's hiding game (probe pixels replaced by the "
                         "non-mate's, least important first) and gives gweEBP its triplet gain")
    fa.add_argument("--non-mate-face", type=int, default=0)
    fa.add_argument("--fill-with", dest="fill_with", choices=("mean", "zero", "blur"), default="mean",
                    help="what a removed pixel becomes (default: the image's mean colour)")
    fa.add_argument("--steps", type=int, default=10, help="number of steps from 0 to 100 %% of the pixels")
    fa.add_argument("--plot", default=None, metavar="PNG", help="write the curves as a picture")
    fa.add_argument("--json", default=None, metavar="FILE", help="write the curves as JSON")

    v = sub.add_parser("verify", help="compare two face photos")
    _add_model_args(v)
    v.add_argument("image_a")
    v.add_argument("image_b")
    v.add_argument("--face", type=int, default=0)
    v.add_argument("--reference-face", type=int, default=0)
    v.add_argument("--no-align", action="store_true")
    v.add_argument("--pairs", default=None, help="labelled pair list: use its EER threshold")
    return p


COMMANDS = {"explain": cmd_explain, "reproduce": cmd_reproduce, "layers": cmd_layers, "models": cmd_models,
            "bench": cmd_bench, "verify": cmd_verify, "methods": cmd_methods, "sanity": cmd_sanity,
            "faithfulness": cmd_faithfulness}


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError) and msg.startswith(("'", '"')):
        msg = msg.strip("'\"")
    return msg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "gui"):
        from .gui.app import run_app

        return run_app(model=getattr(args, "model", None), weights=getattr(args, "weights", None),
                       images=getattr(args, "images", None) or [])
    from .core.fame import Cancelled
    from .data.images import ImageLoadError
    from .export import ExportError
    from .models.wrapper import ModelLoadError

    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("famegui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CliError, ModelLoadError, ImageLoadError, ExportError, Cancelled, ValueError, KeyError,
            FileNotFoundError, PermissionError, MemoryError) as e:
        if args.debug:
            raise
        print(f"famegui: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # last resort: still one line, never a traceback unless asked
        if args.debug:
            raise
        print(f"famegui: internal error: {type(e).__name__}: {_one_line(e)} (rerun with --debug for details)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
