"""Drawing for the Compare methods tab: the sheet of tiles and its geometry, and the faithfulness plots."""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from ...core.plots import AXIS_LABELS
from ...core.render import overlay, to_uint8
from ...methods import get_method
from ..display import DisplaySettings, empty_reason, scaled

GAP = 4
BACKGROUND = 32  # the sheet's gaps and unused places: the views' dark grey, no white block
PLOT_MODES = ("deletion", "insertion", "hiding")
CAPTION_SCALE = 0.5  # caption font, readable when the sheet is shrunk into the view
CAPTION_LINE = 17
SHARED_LABEL = "1 = the largest peak of all tiles"
OWN_LABEL = "1 = each tile's own peak"


def captioned(tile: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``tile`` under a dark caption bar of one line per entry (cut to the tile's width)."""
    w = tile.shape[1]
    bar = np.full((CAPTION_LINE * len(lines) + 5, w, 3), BACKGROUND, np.uint8)
    for i, text in enumerate(lines):
        while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, CAPTION_SCALE, 1)[0][0] > w - 6:
            text = text[:-1]
        cv2.putText(bar, text, (3, CAPTION_LINE * (i + 1) - 3), cv2.FONT_HERSHEY_SIMPLEX, CAPTION_SCALE,
                    (240, 240, 240), 1, cv2.LINE_AA)
    return np.concatenate([bar, to_uint8(tile)], axis=0)


def centre_note(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with ``text`` on a dark band across its middle (an empty map says so)."""
    out = np.ascontiguousarray(tile.copy())
    h, w = out.shape[:2]
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, CAPTION_SCALE, 1)
    cv2.rectangle(out, (0, h // 2 - th), (w - 1, h // 2 + th), (0, 0, 0), -1)
    cv2.putText(out, text, (max(2, (w - tw) // 2), h // 2 + th // 2), cv2.FONT_HERSHEY_SIMPLEX, CAPTION_SCALE,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def fit_groups(n: int, k: int, tile_shape: tuple[int, int], view_aspect: float) -> int:
    """How many methods (of ``n``, ``k`` tiles each) share a row of the sheet, so that its shape suits a view
    of width/height ``view_aspect`` (bigger tiles)."""
    k = max(k, 1)
    if n <= 1:
        return 1
    th, tw = tile_shape

    def misfit(g: int) -> float:
        rows = math.ceil(n / g)
        return abs(math.log((g * k * (tw + GAP)) / (rows * (th + GAP))) - math.log(view_aspect))

    return min(range(1, n + 1), key=misfit)


class SheetLayout:
    """Where the tiles of ``rows`` methods x ``cols`` targets lie in a sheet of ``groups`` methods per row."""

    def __init__(self, rows: Sequence[str], cols: Sequence[str], tile_shape: tuple[int, int], groups: int):
        self.rows, self.cols, self.tile_shape, self.groups = list(rows), list(cols), tile_shape, groups

    def tile_at(self, x: float, y: float) -> tuple[str, str] | None:
        """(method, column) of the tile under image point (x, y), or None."""
        th, tw = self.tile_shape
        k = len(self.cols)
        c, r = int(x // (tw + GAP)), int(y // (th + GAP))
        if x < 0 or y < 0 or c >= k * self.groups:
            return None
        i = r * k * self.groups + c
        if i >= len(self.rows) * k:
            return None
        return self.rows[i // k], self.cols[i % k]

    def tile_origin(self, method: str, col: str) -> tuple[float, float]:
        """Top-left image point of a tile."""
        th, tw = self.tile_shape
        k = len(self.cols)
        i = self.rows.index(method) * k + self.cols.index(col)
        r, c = divmod(i, k * self.groups)
        return c * (tw + GAP), r * (th + GAP)


def tile_images(base: np.ndarray, results: dict, rows: list[str], cols: list[str], display: DisplaySettings,
                shared: bool) -> list[np.ndarray]:
    """One labelled tile per (method, column): the map over ``base``, or a dark tile while it is computed.

    Signed maps (as their method declares) are drawn in the diverging scale, 0 in the middle.
    """
    keys = [(m, c) for m in rows for c in cols]
    shown = [results.get(k) for k in keys]
    maps = scaled([r.map if r is not None else None for r in shown], [r is not None and r.signed for r in shown],
                  shared)
    tiles = []
    for (name, col), res, m in zip(keys, shown, maps):
        detail = col.split(" ")[0] if len(cols) > 1 else ""
        if res is None or m is None:
            tile = (to_uint8(base) * 0.35).astype(np.uint8)
            detail += " computing..."
        else:
            tile = overlay(base, m, display.opacity, display.colormap_for(res.signed))
            detail += f" {res.seconds:.2f} s" + (" triplet" if str(res.info.get("gain", "")).startswith("triplet")
                                                 else "")
            if empty_reason(res):
                tile = centre_note(tile, "empty map")
        tiles.append(captioned(tile, [get_method(name).label, detail.strip()]))
    return tiles


def empty_notes(results: dict) -> str:
    """Why the empty tiles of ``results`` ((method, column) -> MapResult) are empty, one clause each."""
    notes = [f"{get_method(m).label} {c.split(' ')[0]}: {empty_reason(r)}" for (m, c), r in results.items()
             if empty_reason(r)]
    return ("; ".join(notes) + ".") if notes else ""


def grid_colorbar(results: dict, display: DisplaySettings, shared: bool) -> tuple:
    """The colour bar of the sheet: the unsigned maps' colormap (signed maps alone: the diverging one)."""
    signed = [r.signed for r in results.values()]
    only_signed = bool(signed) and all(signed)
    label = SHARED_LABEL if shared else OWN_LABEL
    if any(signed) and not only_signed:
        label += "; signed maps: blue - / red +"
    return display.colorbar(only_signed, label)


def _curve_pen(method: str, names: list[str]):
    if method == "random":
        return pg.mkPen((200, 200, 200), width=2, style=Qt.DashLine)
    return pg.mkPen(pg.intColor(names.index(method), hues=max(len(names), 1), minValue=200), width=2)


def _flip_note(c) -> str:
    if "flip" not in c.extra:
        return ""
    return ", flip never" if c.extra["flip"] is None else f", flip {100 * c.extra['flip']:.0f}%"


def draw_curves(plots: pg.GraphicsLayoutWidget, curves: list) -> None:
    """One plot per (target, metric): every method's curve, the random ranking dashed."""
    plots.clear()
    targets = list(dict.fromkeys(c.extra.get("target", "") for c in curves))
    names = list(dict.fromkeys(c.method for c in curves if c.method != "random"))
    for row, target in enumerate(targets):
        for col, mode in enumerate(PLOT_MODES):
            group = [c for c in curves if c.extra.get("target", "") == target and c.mode == mode]
            if not group:
                continue
            better = "lower" if mode == "deletion" else "higher"
            p = plots.addPlot(row=row, col=col)
            p.setTitle(f"{mode} {target.split(' ')[0]}: {better} AUC is better", size="9pt")
            p.getAxis("left").enableAutoSIPrefix(False)
            p.addLegend(offset=(-5, 5), labelTextSize="8pt", brush=pg.mkBrush(0, 0, 0, 170))
            p.setLabel("bottom", AXIS_LABELS[mode].split(" (")[0])  # short: the panels must fit side by side
            p.setMinimumWidth(0)
            p.setLabel("left", group[0].score_name)
            p.showGrid(x=True, y=True, alpha=0.3)
            for c in group:
                pen = _curve_pen(c.method, names)
                p.plot([100 * f for f in c.fractions], c.scores, pen=pen, symbol="o", symbolSize=4,
                       symbolBrush=pen.color(), name=f"{c.method} ({c.auc:.3f}{_flip_note(c)})")


def best_deletion(curves: list) -> str:
    """A line naming, per target, the method with the lowest deletion AUC."""
    best: dict = {}
    for c in curves:
        if c.mode == "deletion" and c.method != "random":
            key = c.extra["target"].split(" ")[0]
            if key not in best or c.auc < best[key].auc:
                best[key] = c
    return "lowest deletion AUC: " + ", ".join(f"{k} {c.method} ({c.auc:.3f})" for k, c in best.items())
