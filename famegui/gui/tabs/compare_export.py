"""What the Compare tab shows was made from, and its exports: the comparison, the sanity sheet, the curves.

Each view of the tab remembers, when its run starts, which images it explains and against which
(:class:`MadeFrom`): its caption, its export's file name (the one naming rule,
:func:`famegui.gui.exports.suggested_name`) and its export's JSON sidecar all read that one record, so none of
them can name another image than the maps are of.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from ...export import json_bytes, png_bytes, write_set
from ...records import abs_path
from ..exports import suggested_name
from .compare_view import BACKGROUND, GAP, fit_groups, tile_images

VIEWS = {"compare": "compare", "sanity": "sanity", "faithfulness": "faithfulness"}  # view -> method in the name
EXPORT_ASPECT = 4 / 3  # the exported sheet's shape


def _explain_seed() -> int:
    """The run's seed of the one explain path (what seeds methods without a seed of their own)."""
    from ...explanation import explain_rows

    return inspect.signature(explain_rows).parameters["seed"].default


def input_record(session, slot: str | None) -> dict | None:
    """Which file a slot holds, as a sidecar records it (None: no slot)."""
    if not slot or slot not in session.inputs:
        return None
    inp = session.inputs[slot]
    return {"slot": slot, "path": abs_path(inp.image.path), "sha256": inp.image.sha256,
            "face_index": inp.face_index, "preprocessing": inp.prepared.mode}


def short_name(path: str | None) -> str:
    """An image in a caption: its folder and file name ("london_005/neutral.jpg")."""
    if not path:
        return "?"
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


class MadeFrom:
    """The images (slots and files), targets and parameters of one run of the tab, read when it starts."""

    def __init__(self, session, slot: str, other: str | None, non_mate: str | None, targets=None,
                 params: dict | None = None) -> None:
        self.slot, self.other, self.non_mate = slot, other, non_mate
        self.inputs = {s: input_record(session, s) for s in (slot, other, non_mate) if s}
        self.targets = list(targets or [])
        self.params = dict(params or {})
        model = session.model
        self.model = dict(model.describe(), weights_path=abs_path(session.weights)
                          if session.weights not in (None, "random") else session.weights) if model else None

    def path(self, slot: str | None) -> str | None:
        rec = self.inputs.get(slot) if slot else None
        return rec["path"] if rec else None

    def caption(self) -> str:
        """Which image the view explains and against which, in words (the Pair tab's side and other image)."""
        text = f"{short_name(self.path(self.slot))} ({self.slot})"
        if self.other:
            text += f" against {short_name(self.path(self.other))} ({self.other})"
        if self.non_mate:
            text += f"; non-mate: {short_name(self.path(self.non_mate))} ({self.non_mate})"
        return text

    def target_label(self) -> str:
        """The targets in a file name: "e+ e-" for both of a pair, one class's label."""
        return " ".join(t.label().split(" (")[0] for t in self.targets) if self.targets else ""

    def record(self, view: str) -> dict:
        """The JSON sidecar's common part: every input path, side, pair, targets, parameters, seed, model."""
        return {"famegui_export": view, "model": self.model,
                "image": self.inputs.get(self.slot), "other": self.inputs.get(self.other) if self.other else None,
                "non_mate": self.inputs.get(self.non_mate) if self.non_mate else None,
                "side": self.slot, "pair": [self.slot, self.other] if self.other else None,
                "targets": [t.to_dict() for t in self.targets], "params": self.params, "seed": _explain_seed()}


def export_name(made: MadeFrom | None, view: str) -> str:
    """The file name of ``view``'s export: image, what, targets and the other image (the one naming rule)."""
    if made is None:
        return suggested_name(None, VIEWS[view], None)
    return suggested_name(made.path(made.slot), VIEWS[view], made.target_label() or None, made.path(made.other))


def export_comparison(tab, png: str) -> list[Path]:
    """The sheet as one PNG with its sidecar, then each map's own set (PNG overlay, .npy, JSON sidecar)."""
    from ...core.render import sheet

    if not tab.results:
        raise ValueError("nothing to export: compute the comparison first")
    made = tab.made_from["compare"]
    infos = tab.compare_infos()
    groups = fit_groups(len(tab.rows), len(tab.cols), infos[0].rgb.shape[:2], EXPORT_ASPECT)
    stem = Path(png).with_suffix("")
    d = tab.ctx.display
    maps, sets = [], []
    for (name, _col), res in tab.results.items():
        tag = "eplus" if res.target.kind == "similar" else "eminus" if res.target.kind == "dissimilar" else "map"
        base = f"{stem}_{name}_{tag}"
        maps.append({"method": name, "target": res.target.to_dict(), "params": res.params,
                     "non_mate": input_record(tab.session, res.non_mate), "png": Path(base + ".png").name,
                     "npy": Path(base + ".npy").name, "json": Path(base + ".json").name})
        sets.append((res, base, d.colormap_for(res.signed)))
    record = dict(made.record("comparison"), maps=maps,
                  params={m["method"]: m["params"] for m in maps})
    picture = sheet(tile_images(infos), len(tab.cols) * groups, gap=GAP, background=BACKGROUND)
    written = write_set([(png, png_bytes(picture)), (stem.with_suffix(".json"), json_bytes(record))], anchor=png)
    for res, base, cmap in sets:
        written += tab.session.export(res, base + ".png", base + ".npy", opacity=d.opacity, cmap=cmap)
    return written


def export_sanity(tab, png: str) -> list[Path]:
    from ...evaluation.sanity import sanity_sheet
    from .compare_eval import sanity_record

    if not tab.sanity_results:
        raise ValueError("nothing to export: run the sanity check first")
    made = tab.made_from["sanity"]
    d = tab.ctx.display
    picture = sanity_sheet(tab.sanity_results, tab.session.input_rgb(made.slot), d.opacity, d.colormap)
    record = dict(made.record("sanity"), **sanity_record(), sanity=[r.to_dict() for r in tab.sanity_results])
    return write_set([(png, png_bytes(picture)), (Path(png).with_suffix(".json"), json_bytes(record))], anchor=png)


def export_curves(tab, png: str) -> list[Path]:
    from ...core.plots import curves_figure
    from .compare_eval import curves_record

    if not tab.faith_curves:
        raise ValueError("nothing to export: compute the faithfulness curves first")
    made = tab.made_from["faithfulness"]
    record = dict(made.record("faithfulness"), **curves_record(), curves=[c.to_dict() for c in tab.faith_curves])
    return write_set([(png, png_bytes(curves_figure(tab.faith_curves))),
                      (Path(png).with_suffix(".json"), json_bytes(record))], anchor=png)


EXPORTERS = {"compare": export_comparison, "sanity": export_sanity, "faithfulness": export_curves}
