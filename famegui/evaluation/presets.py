"""Evaluation presets: famegui's own choices, and the FAME authors' choices to compare with their paper.

A preset fixes how a protocol run perturbs and scores (``fill``, ``masks``), which maps rank the pixels of
a pair (``targets``) and the method parameters that the authors' scripts used. ``famegui run --preset NAME``
applies one; flags given explicitly win over the preset. ``run.json`` records the preset and every value.

The targets of a run are the target kinds' run targets (:class:`famegui.targets.RunTarget`: ``class`` for
image lists; ``e+``, ``e-`` for pairs and triplets; a registered kind's own), plus ``decision`` for pairs.
What each pair target measures (the probe is perturbed, the reference kept):

- ``e+`` (similar): the map explains cos(f(probe), f(reference)); deletion should make it fall fast,
  insertion rise fast;
- ``e-`` (dissimilar): the map explains 1 - cos; deletion of what makes the pair dissimilar should make
  1 - cos fall (the pair looks more alike), insertion rise;
- ``decision``: each pair by the map of its own decision: e+ for a genuine pair, e- for an impostor pair
  (famegui's choice for the verification accuracy of the FAME paper's Tab. 2: every pair is perturbed
  along what makes it decided the way it is).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    fill: str  # what a removed pixel becomes (see curves.FILLS)
    masks: str  # "rank" (exactly round(P*N) pixels) or "percentile" (every pixel at or above the percentile)
    targets: tuple[str, ...] | None  # pair targets; None: the default ones (e+ and e-, plus decision for
    # accuracy metrics)
    method_params: dict = field(default_factory=dict)  # {method: {param: value}}
    why: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "fill": self.fill, "masks": self.masks,
                "targets": list(self.targets) if self.targets else None,
                "method_params": {k: dict(v) for k, v in self.method_params.items()}}


PRESETS = {
    "famegui": Preset(
        "famegui", "famegui's defaults", fill="mean", masks="rank", targets=None,
        why="a removed pixel takes the image's mean colour (as S-RISE does), so a deletion does not add dark "
            "edges the network reacts to; exactly P of the pixels are removed at each step, so maps with many "
            "equal values (a CAM's zeros) are not removed in large tied blocks; each pair is perturbed along "
            "the map of its own decision (e+ genuine, e- impostor)"),
    "fame-authors": Preset(
        "fame-authors", "the FAME authors' evaluation (Zhang & Guenther)", fill="zero", masks="percentile",
        targets=("e+",), method_params={"fame": {"epsilon": 0.01, "blur_kernel": 25, "blur_sigma": 5.0}},
        why="removed pixels set to zero (black), every pair ranked by its e+ map, masks by percentile of the "
            "map (tied values go together), FAME stopped early at a loss below 0.01 and blurred 25/5 as in "
            "their verification script"),
}
DEFAULT_PRESET = "famegui"
DECISION = "decision"  # the pair target of each pair's own decision: e+ for a genuine pair, e- for an impostor


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def run_targets(task: str = "verification") -> dict[str, str | None]:
    """{run target name: its target kind} of the kinds of ``task`` ("classification" for image lists,
    "verification" for pairs and triplets) that declare one, in the order they were registered; for
    verification also ``decision`` (None: the kind follows the pair's label)."""
    from ..targets import all_kinds

    out: dict[str, str | None] = {k.run.name: k.name for k in all_kinds(task) if k.run is not None}
    if task == "verification":
        out[DECISION] = None
    return out


def target_kind(name: str, same: bool | None, task: str = "verification") -> str:
    """The target kind of run target ``name`` (of ``task``) for an item labelled ``same`` (pairs)."""
    targets = run_targets(task)
    if name not in targets:
        raise ValueError(f"no {task} target kind runs as {name!r} (known: {', '.join(targets)})")
    kind = targets[name]
    if kind is None:
        return "dissimilar" if same is False else "similar"
    return kind


def default_targets(task: str, metrics) -> list[str]:
    """The run targets of ``task`` declared ``default`` (class; e+ and e-), and ``decision`` when a
    verification-accuracy metric is asked for."""
    from ..targets import all_kinds

    out = [k.run.name for k in all_kinds(task) if k.run is not None and k.run.default]
    if task == "verification" and any(str(m).startswith("accuracy-") for m in metrics):
        out.append(DECISION)
    return out


def default_pair_targets(metrics) -> list[str]:
    """e+ and e-, and ``decision`` when a verification-accuracy metric is asked for."""
    return default_targets("verification", metrics)
