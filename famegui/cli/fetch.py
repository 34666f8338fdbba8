"""``famegui fetch``: download a model's weights when the user asks, verified, into the cache the loaders read
(or into a folder that serves as an offline mirror)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import CliError

MIRROR_INDEX = "weights_index.json"


def add_fetch(sub) -> None:
    p = sub.add_parser("fetch", help="download a model's weights (verified; the only command that downloads)",
                       description="Download the weights of catalogue models (famegui models lists them), check "
                                   "their checksum and put them where the loaders look. Interrupted downloads "
                                   "resume when run again. Proxies: the https_proxy / no_proxy variables.")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (e.g. resnet50, insightface:buffalo_l, "
                   "timm:convnext_tiny.fb_in1k: any timm model with weights on the Hugging Face Hub)")
    p.add_argument("--all", action="store_true", help="every model the catalogue can fetch")
    p.add_argument("--index", metavar="FILE", help="a weights index (JSON) over the shipped catalogue: mirrors, "
                   "other models (default: $FAMEGUI_WEIGHTS_INDEX)")
    p.add_argument("--to", metavar="DIR", help="download into DIR with an index of its files (for machines "
                   "without internet: FAMEGUI_WEIGHTS_INDEX=DIR/weights_index.json) instead of the cache")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="give up on a server silent this long")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_fetch)


def _bar(quiet: bool, name: str):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=True,
               disable=not sys.stderr.isatty())

    def show(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return show, bar.close


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..models.download import fetch
    from ..models.extras import missing, needs
    from ..models.weights_index import catalogue, state, timm_entry

    if args.timeout is None or not args.timeout > 0:
        raise CliError("--timeout must be a positive number of seconds")
    entries = catalogue(args.index)
    if args.all:
        names = [n for n, e in entries.items() if e.fetchable]
    elif args.names:
        names = list(args.names)
    else:
        raise CliError("name the models to fetch (famegui models lists them), or --all")
    for n in names:  # any timm name whose pretrained config names a Hub repository
        if n not in entries and timm_entry(n) is not None:
            entries[n] = timm_entry(n)
    unknown = [n for n in names if n not in entries]
    if any(n.startswith("timm:") for n in unknown) and missing("timm"):  # timm's table is what names them
        raise CliError(needs(f"fetching {next(n for n in unknown if n.startswith('timm:'))}", "timm"))
    if unknown:
        raise CliError(f"not in the weights catalogue: {', '.join(unknown)} (famegui models lists what it holds)")
    to = Path(args.to) if args.to else None
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
    mirror: dict = {}
    hub_copy = False
    for name in names:
        e = entries[name]
        if to is None and state(e) == "ready":
            print(f"{name}: already here ({e.destination()})")
            continue
        print(f"{name}: {e.size_text()} from {e.source}; licence: {e.licence or 'see ' + (e.page or 'its page')}",
              file=sys.stderr)
        show, close = _bar(args.quiet, name)
        try:
            where = fetch(e, to=to, progress=show, timeout=args.timeout)
        finally:
            close()
        print(f"{name}: verified, {where}")
        if to is not None and e.cache == "huggingface":
            hub_copy = True
        elif to is not None:
            checksum = {"sha256": e.sha256} if e.sha256 else {"hash_prefix": e.hash_prefix}
            mirror[name] = {"url": where.name, **checksum, "size": where.stat().st_size, "file": e.file,
                            "cache": e.cache, **({"unpack": e.unpack} if e.unpack else {}), "licence": e.licence}
    if to is not None:
        index = to / MIRROR_INDEX
        old = json.loads(index.read_text()).get("models", {}) if index.is_file() else {}
        index.write_text(json.dumps({"format": 1, "models": {**old, **mirror}}, indent=1) + "\n")
        print(f"mirror index: {index} (on the offline machine: FAMEGUI_WEIGHTS_INDEX={index})")
        if hub_copy:
            print(f"Hugging Face models: {to / 'huggingface'} is a hub cache (on the offline machine: "
                  f"HF_HUB_CACHE={to / 'huggingface'}, or copy its folders into ~/.cache/huggingface/hub)")
    return 0


PARSERS = {"fetch": add_fetch}
