"""``famegui sanity`` (Adebayo et al.'s randomisation test) and ``famegui faithfulness`` (the metrics of the
evaluation registry: deletion / insertion curves, the hiding game, verification accuracy over a pair list)."""
from __future__ import annotations

import argparse
import time

from .common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    CliError,
    add_input_args,
    add_method_param_flags,
    check_inputs,
    check_outputs,
    check_params,
    load_model,
    method_choice,
    number,
    one_line,
    prepare_input,
    resolve_targets,
    resolved_params,
)


# --------------------------------------------------------------------------- parsers
def add_sanity(sub) -> None:
    sa = sub.add_parser("sanity", help="Adebayo's randomisation test: does the map change with random weights?")
    add_input_args(sa, target_required=False)
    sa.add_argument("--method", default=None, metavar="A,B",
                    help="methods to test (default: every gradient-based method for the target)")
    add_method_param_flags(sa)
    sa.add_argument("--weights-seed", type=number(0, 2 ** 31 - 2, integral=True), default=0,
                    help="seed of the random weights (the prior's second network uses seed+1)")
    sa.add_argument("--depth", type=number(integral=True), default=None,
                    help="randomise only the top N weight layers (cascading test; default: all)")
    sa.add_argument("--region", choices=("face", "full"), default="face",
                    help="where to correlate: the aligned face square (face models; default) or the whole input")
    sa.add_argument("--threshold", type=number(-1.0, 1.0), default=0.5,
                    help="a method passes when every correlation is below")
    sa.add_argument("--no-prior", action="store_true",
                    help="skip the second random network (random-vs-random correlation)")
    sa.add_argument("--sheet", default=None, metavar="PNG", help="write trained vs random maps as one picture")
    sa.add_argument("--json", default=None, metavar="FILE", help="write the numbers as JSON")
    sa.set_defaults(func=cmd_sanity)


def faithfulness_modes() -> list[str]:
    """What --mode accepts: the evaluation registry's curve metrics, less the accuracy-* ones (--pairs picks
    those); the sanity check has its own command."""
    from ..evaluation.metrics import metric_names

    return [m for m in metric_names(curves_only=True) if not m.startswith("accuracy-")]


def add_faithfulness(sub) -> None:
    fa = sub.add_parser("faithfulness", help="deletion / insertion curves of one or more methods (AUC, plot)")
    add_input_args(fa, target_required=False, image_required=False)
    fa.add_argument("--pairs", default=None, metavar="LIST",
                    help="instead of one image: a labelled pair list; the score is the verification accuracy at "
                         "the list's EER threshold (genuine pairs along e+, impostor pairs along e-)")
    fa.add_argument("--method", default=None, metavar="A,B",
                    help="methods to evaluate (default: FAME and the cheap methods of the task)")
    add_method_param_flags(fa)
    fa.add_argument("--mode", default=None,
                    help="metrics, comma-separated, from the evaluation metric registry "
                         f"(famegui.evaluation.metrics): {', '.join(faithfulness_modes())} (default: "
                         "deletion,insertion, plus hiding when --non-mate is given)")
    fa.add_argument("--non-mate", default=None, metavar="IMG3",
                    help="a photo of another person: adds the hiding game of Wang et al. (PRL 2025; probe pixels "
                         "replaced by the non-mate's, least important first) and gives gweEBP its triplet gain")
    fa.add_argument("--non-mate-face", type=number(0, 999, integral=True), default=0)
    fa.add_argument("--fill-with", dest="fill_with", choices=("mean", "zero", "blur"), default="mean",
                    help="what a removed pixel becomes (default: the image's mean colour)")
    fa.add_argument("--steps", type=number(1, 1000, integral=True), default=10,
                    help="number of steps from 0 to 100 %% of the pixels")
    fa.add_argument("--plot", default=None, metavar="PNG", help="write the curves as a picture")
    fa.add_argument("--json", default=None, metavar="FILE", help="write the curves as JSON")
    fa.set_defaults(func=cmd_faithfulness)


def _early_checks(args, outputs: dict) -> None:
    """Outputs, input files, target flags and method parameters, checked before any model is loaded."""
    from ..data.files import regular_file
    from ..methods import get_method

    inputs = [args.image, args.reference, getattr(args, "non_mate", None), getattr(args, "pairs", None),
              args.weights, args.model]
    check_outputs(outputs, inputs)
    depth = getattr(args, "depth", None)
    if depth is not None and not 1 <= depth <= 100_000:
        raise CliError(f"--depth must be a whole number from 1 (the top layer) to 100000, got {depth}")
    check_inputs(args)
    if getattr(args, "pairs", None) is not None:
        regular_file(args.pairs, "pair list", "text", CliError)
    if args.method is not None:
        names = [n.strip() for n in args.method.split(",") if n.strip()]
        if not names:
            raise CliError("--method is empty: give one or more method names (`famegui methods` lists them)")
        check_params(args, [get_method(n) for n in names])


# --------------------------------------------------------------------------- sanity
def cmd_sanity(args: argparse.Namespace) -> int:
    from ..evaluation.sanity import sanity_suite
    from ..methods import methods
    from ..targets import task_of

    _early_checks(args, {"--sheet": args.sheet, "--json": args.json})
    model = load_model(args)
    probe = prepare_input(model, args, args.image, args.face)
    targets = resolve_targets(model, args, probe.tensor)
    task = task_of(targets[0])
    specs = method_choice(args, task) if args.method else [m for m in methods(task) if m.gradient_based]
    params = resolved_params(args, specs, task)
    ref = None
    if args.reference is not None:
        ref = prepare_input(model, args, args.reference, args.reference_face).tensor
    print(f"# {model.name}: maps of the trained network vs the same network with random weights "
          f"({'all layers' if args.depth is None else f'top {args.depth} layers'}, seed {args.weights_seed}); "
          f"pass = every correlation < {args.threshold}")
    head = f"{'method':<14} {'target':<11} {'spearman':>8} {'|sp|':>6} {'pearson':>7}  {'full':>6}"
    print(head + ("" if args.no_prior else f"  {'prior':>6}") + f"  {'result':<9} {'seconds':>7}")
    results = sanity_suite([s.name for s in specs], model, probe.tensor, targets, params, reference=ref,
                           seed=args.weights_seed, depth=args.depth,
                           region="full" if args.no_align else args.region,  # no alignment, no face square
                           prior=not args.no_prior,
                           threshold=args.threshold)  # each row prints as its method finishes
    rows = []
    for r in results:
        rows.append(r)
        print(_sanity_row(r), flush=True)
    if rows and rows[0].region is not None:
        t, b, le, ri = rows[0].region
        print(f"# correlations inside the face square rows {t}..{b}, columns {le}..{ri}; 'full' = the whole input "
              f"(worst of the three measures); 'prior' = random vs random (seed {args.weights_seed + 1})")
    _write_sanity(args, model, probe, params, rows)
    return EXIT_OK if all(r.passed for r in rows) else EXIT_CHECK_FAILED


def _sanity_row(r) -> str:
    line = (f"{r.method:<14} {r.target.label().split(' ')[0]:<11} {r.inside.spearman:>+8.2f} "
            f"{r.inside.spearman_abs:>+6.2f} {r.inside.pearson:>+7.2f}  {r.full.worst:>+6.2f}")
    if r.prior is not None:
        line += f"  {r.prior.worst:>+6.2f}"
    return line + f"  {r.verdict:<9} {r.seconds:7.1f}"


def _write_sanity(args, model, probe, params, rows) -> None:
    """--sheet (trained vs random maps as one picture) and --json (the numbers)."""
    written = []
    if args.sheet:
        from ..evaluation.sanity import sanity_sheet
        from ..export import write_png

        written.append(write_png(args.sheet, sanity_sheet(rows, probe.prepared.tensor[0].permute(1, 2, 0).numpy())))
    if args.json:
        from ..export import write_json

        payload = {"model": model.describe(), "image": str(args.image), "reference": args.reference,
                   "weights_seed": args.weights_seed, "depth": args.depth, "params": params,
                   "results": [r.to_dict() for r in rows]}
        written.append(write_json(args.json, payload))
    if written:
        print("wrote " + ", ".join(map(str, written)))


# --------------------------------------------------------------------------- faithfulness
def cmd_faithfulness(args: argparse.Namespace) -> int:
    modes = _checked_modes(args)
    _early_checks(args, {"--plot": args.plot, "--json": args.json})
    fractions = [i / args.steps for i in range(args.steps + 1)]
    model = load_model(args)
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
    print("# lower is better for deletion, higher for insertion" + (" and hiding" if "hiding" in modes else "") +
          ("; flip: share of pixels removed (deletion) or put back (insertion) until the decision is changed "
           "(restored), smaller is better" if flips else "") + f"; {time.perf_counter() - t0:.1f} s in all")
    _write_curves(args, model, curves)
    return 0


def _checked_modes(args) -> list[str]:
    """The --mode metrics, after checking them and the flags they go with."""
    given_modes = args.mode or ("deletion,insertion" + (",hiding" if args.non_mate else ""))
    modes = [m for m in given_modes.split(",") if m]
    known = faithfulness_modes()
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
    return modes


def _write_curves(args, model, curves) -> None:
    """--plot (the curves as a picture) and --json (the curves)."""
    written = []
    if args.plot:
        from ..core.plots import curves_figure
        from ..export import write_png

        written.append(write_png(args.plot, curves_figure(curves)))
    if args.json:
        from ..export import write_json

        written.append(write_json(args.json, {"model": model.describe(), "fill": args.fill_with,
                                              "curves": [c.to_dict() for c in curves]}))
    if written:
        print("wrote " + ", ".join(map(str, written)))


def _faithfulness_over_pairs(args, model, modes, fractions) -> list:
    """Verification accuracy curves over a labelled pair list, at its EER threshold (FAME paper, Tab. 2)."""
    from ..data.pairs import read_pairs
    from ..evaluation.experiment import aggregate, baseline, evaluate
    from ..evaluation.metrics import Sample, metric_names
    from ..evaluation.presets import DECISION, target_kind
    from ..evaluation.verification import eer_from_pairs
    from ..targets import Target

    if model.task != "embedding":
        raise CliError(f"{model.name} is a classifier; --pairs needs a face (embedding) model")
    plist = read_pairs(args.pairs)
    eer = eer_from_pairs(model, plist, align=not args.no_align)
    pairs, skipped = [], []
    for p in plist:
        try:
            pairs.append((prepare_input(model, args, str(p.a)).tensor, prepare_input(model, args, str(p.b)).tensor,
                          p.same))
        except (ValueError, OSError) as e:
            skipped.append(f"line {p.line}: {one_line(e)}")
    if not pairs:
        raise CliError("no usable pair in " + str(args.pairs))
    specs = method_choice(args, "verification")
    params = resolved_params(args, specs, "verification")
    print(f"# {model.name}: verification accuracy at the EER threshold {eer.threshold:.4f} of {args.pairs} "
          f"({len(pairs)} pairs{f', {len(skipped)} skipped' if skipped else ''}); fill {args.fill_with}")
    samples = []
    for name in ["random"] + [s.name for s in specs]:
        for i, (probe, ref, same) in enumerate(pairs):
            # each pair along the map of its own decision: genuine pairs e+ (what makes them similar), impostors e-
            s = Sample(model, probe, Target(target_kind(DECISION, same)), method=name,
                       params=params.get(name, {}), reference=ref, threshold=eer.threshold, same=same, group="pairs")
            samples.append(baseline(s, seed=i) if name == "random" else s)
    names = [f"accuracy-{m}" if f"accuracy-{m}" in metric_names() else m for m in modes]
    results = evaluate(samples, names, fractions=fractions, fill=args.fill_with)
    return aggregate(results, names, fractions=fractions, fill=args.fill_with)


def _faithfulness_of_one_input(args, model, modes, fractions) -> list:
    """Curves of one image (class / cell) or one pair (e+ / e-, the hiding game with a non-mate)."""
    import dataclasses

    from ..evaluation.experiment import baseline, evaluate
    from ..evaluation.metrics import Sample
    from ..explanation import decision_threshold

    probe = prepare_input(model, args, args.image, args.face)
    targets = resolve_targets(model, args, probe.tensor)
    specs = method_choice(args, targets[0].task)
    params = resolved_params(args, specs, targets[0].task)
    x, ref, nm, threshold = probe.tensor, None, None, None
    if args.reference is not None:
        ref = prepare_input(model, args, args.reference, args.reference_face).tensor
        threshold = decision_threshold(model)  # for the decision-flip share (S-RISE, Lu & Ebrahimi)
    if args.non_mate is not None:
        if ref is None:
            raise CliError("--non-mate needs --reference (the mate)")
        nm = prepare_input(model, args, args.non_mate, args.non_mate_face).tensor
    print(f"# {model.name}: {', '.join(t.label() for t in targets)}; fill {args.fill_with}; "
          f"{args.steps} steps" + (f"; decision threshold cosine {threshold:.4f}" if threshold else ""))
    samples = []
    for t in targets:
        base = Sample(model, x, t, reference=ref, non_mate=nm, threshold=threshold)
        samples.append(baseline(base))
        samples += [dataclasses.replace(base, method=s.name, params=params[s.name]) for s in specs]
    return evaluate(samples, modes, fractions=fractions, fill=args.fill_with)


PARSERS = {"sanity": add_sanity, "faithfulness": add_faithfulness}
