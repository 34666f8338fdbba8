"""Evaluation presets: famegui's own choices, and the FAME authors' choices to compare with their paper.

A preset fixes how a protocol run perturbs and scores (``fill``, ``masks``), which maps rank the pixels of
a pair (``targets``) and the method parameters that the authors' scripts used. ``famegui run --preset NAME``
applies one; flags given explicitly win over the preset. ``run.json`` records the preset and every value.

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
    targets: tuple[str, ...] | None  # pair targets; None: e+ and e- (plus decision for accuracy metrics)
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
PAIR_TARGETS = {"e+": "similar", "e-": "dissimilar", "decision": None}  # None: by the pair's label


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def target_kind(name: str, same: bool | None) -> str:
    """The target kind of pair target ``name`` for a pair labelled ``same``."""
    kind = PAIR_TARGETS[name]
    if kind is None:
        return "dissimilar" if same is False else "similar"
    return kind


def default_pair_targets(metrics) -> list[str]:
    """e+ and e-, and ``decision`` when a verification-accuracy metric is asked for."""
    out = ["e+", "e-"]
    if any(str(m).startswith("accuracy-") for m in metrics):
        out.append("decision")
    return out
