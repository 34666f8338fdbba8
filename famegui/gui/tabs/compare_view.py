"""Drawing for the Compare methods tab: the sheet of tiles on screen, its geometry, and the exported sheet.

On screen every tile is a widget: its picture at least :data:`MIN_TILE` pixels a side (the sheet scrolls
rather than shrink it), its caption in the UI font on two lines that are always reserved (a one-line
caption does not move its picture), e+ and e- told apart by their words and their colour. The exported
sheet is one picture with the captions drawn into it (:func:`tile_images`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from ...core.render import overlay, to_uint8
from ...methods import get_method
from ..canvas import ColorBar
from ..display import DisplaySettings, empty_reason, scaled

GAP = 4
BACKGROUND = 32  # the sheet's gaps and unused places: the views' dark grey, no white block
CAPTION_SCALE = 0.5  # caption font of the exported sheet
CAPTION_LINE = 17
SHARED_LABEL = "1 = the largest peak of all tiles"
OWN_LABEL = "1 = each tile's own peak"
MIN_TILE = 128  # the smallest side of a tile's picture on screen (legible on a 1366x768 laptop)
MAX_TILE = 300
BORDER = 2  # the tile's frame: its target's colour, or the selection's
# e+ (what makes the pair similar) and e- (what makes it differ): two colours no one mixes up
ACCENTS = {"similar": (90, 200, 110), "dissimilar": (245, 135, 50)}
SELECTED = (255, 220, 0)
NEUTRAL = (120, 120, 120)


@dataclass
class TileInfo:
    """What one tile shows: a picture (None while it is computed), two caption lines, its colour, a note."""

    rgb: np.ndarray | None
    lines: tuple[str, str]
    accent: tuple[int, int, int] | None = None
    note: str = ""  # across the middle of the picture: "computing...", "empty map"
    tip: str = ""


def sheet_geometry(n: int, k: int, width: int, height: int, caption: int) -> tuple[int, int]:
    """(methods per row, picture side) for ``n`` methods of ``k`` tiles in a view of ``width`` x ``height``.

    The side is never below :data:`MIN_TILE`: the sheet scrolls instead. Among the arrangements whose
    tiles stay that big, the one with the biggest tiles that fit the height wins (else the fewest rows).
    """
    k, best = max(k, 1), (1, MIN_TILE)
    score = None
    for g in range(1, max(n, 1) + 1):
        per_row = g * k
        side_w = (width - (per_row - 1) * GAP) // per_row - 2 * BORDER
        if side_w < MIN_TILE and g > 1:
            break
        rows = math.ceil(max(n, 1) / g)
        side_h = (height - (rows - 1) * GAP) // rows - caption - 2 * BORDER
        side = max(MIN_TILE, min(side_w, max(side_h, MIN_TILE), MAX_TILE))
        if score is None or (side, g) > score:
            score, best = (side, g), (g, side)
    return best


def _qimage(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(to_uint8(rgb))
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def _css(color) -> str:
    return "rgb({}, {}, {})".format(*color)


class Tile(QFrame):
    """One tile of a :class:`TileSheet`: two caption lines in the UI font over the picture."""

    def __init__(self, sheet: TileSheet) -> None:
        super().__init__(sheet.body)
        self.sheet = sheet
        self.setObjectName("tile")
        self.setCursor(Qt.PointingHandCursor)
        self.lines = [QLabel(self), QLabel(self)]
        self.picture = QLabel(self)
        self.picture.setAlignment(Qt.AlignCenter)
        self.note = QLabel(self.picture)
        self.note.setAlignment(Qt.AlignCenter)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("background: rgba(0, 0, 0, 190); color: white; padding: 2px;")
        self.info: TileInfo | None = None
        self.accent = NEUTRAL
        self.selected = False

    def show_info(self, info: TileInfo, side: int, line_h: int) -> None:
        self.info, self.accent = info, info.accent or NEUTRAL
        w = side + 2 * BORDER
        for i, (label, text) in enumerate(zip(self.lines, info.lines)):
            label.setGeometry(BORDER + 2, BORDER + i * line_h, w - 2 * BORDER - 4, line_h)
            label.setText(label.fontMetrics().elidedText(text, Qt.ElideRight, label.width()))
            color = self.accent if i == 1 and info.accent else (235, 235, 235)
            label.setStyleSheet(f"color: {_css(color)};")
        self.picture.setGeometry(BORDER, BORDER + 2 * line_h, side, side)
        self.picture.setPixmap(QPixmap.fromImage(_qimage(info.rgb)).scaled(
            side, side, Qt.KeepAspectRatio, Qt.SmoothTransformation) if info.rgb is not None else QPixmap())
        self.note.setText(info.note)
        self.note.setVisible(bool(info.note))
        if info.note:
            self.note.setFixedWidth(side)
            self.note.adjustSize()
            self.note.move(0, (side - self.note.height()) // 2)
        self.setToolTip(info.tip or " ".join(info.lines))
        self.resize(w, 2 * line_h + side + 2 * BORDER)
        self._frame()

    def set_selected(self, on: bool) -> None:
        self.selected = on
        self._frame()

    def _frame(self) -> None:
        color = SELECTED if self.selected else self.accent
        self.setStyleSheet(f"#tile {{ border: {BORDER}px solid {_css(color)}; background: rgb(24, 24, 24); }}")

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.button() == Qt.LeftButton:
            p = self.mapTo(self.sheet.body, event.position().toPoint())
            self.sheet.clicked.emit(float(p.x()), float(p.y()))


class TileSheet(QWidget):
    """Tiles of ``n`` methods x ``k`` pictures in a scroll area, a title above and a colour bar beside.

    Sheet points (``clicked``, :meth:`click_at_image`, :meth:`image_shape`) are pixels of the tiles' area,
    where tile i of the row-major order lies at :class:`SheetLayout`'s place.
    """

    clicked = Signal(float, float)

    def __init__(self, title: str = "") -> None:
        super().__init__()
        self.title = QLabel(title)
        self.title.setAlignment(Qt.AlignCenter)
        self.title.setWordWrap(True)
        self.title.setFixedHeight(2 * self.title.fontMetrics().lineSpacing() + 4)  # one line or two: same place
        self.body = QWidget()
        self.body.setObjectName("sheet")
        self.body.setStyleSheet(f"#sheet {{ background: rgb({BACKGROUND}, {BACKGROUND}, {BACKGROUND}); }}")
        self.scroll = QScrollArea()
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setWidget(self.body)
        self.scroll.setStyleSheet("QScrollArea { background: #202020; }")
        self.bar_view = pg.GraphicsLayoutWidget()
        self.bar_view.setBackground("#202020")
        self.bar_view.setFixedWidth(72)
        self.bar = ColorBar(self.bar_view)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.scroll, 1)
        row.addWidget(self.bar_view)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.title)
        lay.addLayout(row, 1)
        self.tiles: list[Tile] = []
        self.infos: list[TileInfo] = []
        self.k = 1
        self.groups = 1
        self.side = MIN_TILE
        self.line_h = self.fontMetrics().lineSpacing() + 2

    # ------------------------------------------------------------------ content
    def set_title(self, text: str) -> None:
        """The line above the tiles (wrapped onto a second line in a narrow view; the tiles stay where they are)."""
        self.title.setText(text)
        self.title.setToolTip(text)

    def set_colorbar(self, colors, lo: float = 0.0, hi: float = 1.0, label: str = "") -> None:
        self.bar.show_scale(colors, lo, hi, label)
        self.bar_view.resizeEvent(None)  # its layout shrank while the bar was hidden: fill the view again

    def set_tiles(self, infos: Sequence[TileInfo], per_method: int) -> None:
        """Show ``infos`` (row-major: ``per_method`` tiles of each method in turn); [] empties the sheet."""
        self.infos, self.k = list(infos), max(per_method, 1)
        while len(self.tiles) < len(self.infos):
            self.tiles.append(Tile(self))
        self.relayout()

    def set_selected(self, indices: Sequence[int]) -> None:
        for i, tile in enumerate(self.tiles):
            tile.set_selected(i in indices)

    def relayout(self) -> None:
        n = len(self.infos) // self.k
        width = self.scroll.width() - self.scroll.verticalScrollBar().sizeHint().width()
        height = self.scroll.height() - self.scroll.horizontalScrollBar().sizeHint().height()
        self.groups, self.side = sheet_geometry(n, self.k, width, height, 2 * self.line_h)
        th, tw = self.tile_shape
        per_row = self.k * self.groups
        for i, tile in enumerate(self.tiles):
            if i >= len(self.infos):
                tile.hide()
                continue
            tile.show_info(self.infos[i], self.side, self.line_h)
            r, c = divmod(i, per_row)
            tile.move(c * (tw + GAP), r * (th + GAP))
            tile.show()
        shape = self.image_shape()
        self.body.resize(*(reversed(shape) if shape else (1, 1)))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self.infos:
            self.relayout()

    # ------------------------------------------------------------------ geometry (scripts, tests)
    @property
    def tile_shape(self) -> tuple[int, int]:
        """(height, width) of one tile on screen: caption, picture and frame."""
        return 2 * self.line_h + self.side + 2 * BORDER, self.side + 2 * BORDER

    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) of the tiles' area in sheet pixels, None when the sheet is empty."""
        if not self.infos:
            return None
        th, tw = self.tile_shape
        per_row = self.k * self.groups
        rows = math.ceil(len(self.infos) / per_row)
        cols = min(per_row, len(self.infos))
        return rows * (th + GAP) - GAP, cols * (tw + GAP) - GAP

    def click_at_image(self, x: float, y: float) -> None:
        """Programmatic click at sheet point (x, y) (tests, keyboard navigation)."""
        self.clicked.emit(float(x), float(y))

    def tile_rect_in(self, i: int, widget: QWidget):
        """The picture of tile ``i`` as a QRect in ``widget``'s coordinates (what a user sees where)."""
        pic = self.tiles[i].picture
        return pic.rect().translated(pic.mapTo(widget, QPoint(0, 0)))


class SheetLayout:
    """Where the tiles of ``rows`` methods x ``cols`` targets lie in a sheet of ``groups`` methods per row."""

    def __init__(self, rows: Sequence[str], cols: Sequence[str], tile_shape: tuple[int, int], groups: int):
        self.rows, self.cols, self.tile_shape, self.groups = list(rows), list(cols), tile_shape, groups

    def tile_at(self, x: float, y: float) -> tuple[str, str] | None:
        """(method, column) of the tile under sheet point (x, y), or None (a gap counts as its left/top tile)."""
        th, tw = self.tile_shape
        k = len(self.cols)
        c, r = int(x // (tw + GAP)), int(y // (th + GAP))
        if x < 0 or y < 0 or c >= k * self.groups:
            return None
        i = r * k * self.groups + c
        if i >= len(self.rows) * k:
            return None
        return self.rows[i // k], self.cols[i % k]

    def index(self, method: str, col: str) -> int:
        """The place of a tile in the sheet's row-major order (``TileSheet.tiles[i]``)."""
        return self.rows.index(method) * len(self.cols) + self.cols.index(col)

    def tile_origin(self, method: str, col: str) -> tuple[float, float]:
        """Top-left sheet point of a tile."""
        th, tw = self.tile_shape
        r, c = divmod(self.index(method, col), len(self.cols) * self.groups)
        return c * (tw + GAP), r * (th + GAP)


def fixed_scroll(widget: QWidget, height: int) -> QScrollArea:
    """``widget`` in a scroll area of a fixed height: what it holds never resizes its neighbours."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    area.setFixedHeight(height)
    return area


# ---------------------------------------------------------------------------------------- what tiles show
def _maps(results: dict, keys: list, shared: bool) -> list:
    shown = [results.get(k) for k in keys]
    return shown, scaled([r.map if r is not None else None for r in shown],
                         [r is not None and r.signed for r in shown], shared)


def compare_tiles(base: np.ndarray, results: dict, rows: list[str], cols: list[str], kinds: dict,
                  display: DisplaySettings, shared: bool) -> list[TileInfo]:
    """One tile per (method, column): the map over ``base`` or the dimmed image while it is computed.
    ``kinds``: column -> target kind (its colour). Signed maps (as declared) use the diverging scale."""
    keys = [(m, c) for m in rows for c in cols]
    shown, maps = _maps(results, keys, shared)
    out = []
    for (name, col), res, m in zip(keys, shown, maps):
        spec = get_method(name)
        if res is None or m is None:
            dark = (to_uint8(base) * 0.35).astype(np.uint8)
            out.append(TileInfo(dark, (spec.label, col), ACCENTS.get(kinds.get(col)), "computing...", spec.description))
            continue
        triplet = str(res.info.get("gain", "")).startswith("triplet")
        why = empty_reason(res)
        out.append(TileInfo(overlay(base, m, display.opacity, display.colormap_for(res.signed)),
                            (f"{spec.label}  {res.seconds:.1f} s", col + (" triplet" if triplet else "")),
                            ACCENTS.get(res.target.kind), "empty map" if why else "",
                            why or f"{spec.label}, {col}: click to open it large"))
    return out


def sanity_columns(results: Sequence) -> list[str]:
    """The sanity sheet's columns: (trained, random) per target."""
    targets = dict.fromkeys(r.target.label().split(" ")[0] for r in results)
    return [f"{t} {w}" for t in targets for w in ("trained", "random")]


def sanity_tiles(results: Sequence, base: np.ndarray, opacity: float, cmap: str) -> tuple[list, list, list]:
    """(methods, columns, tiles) of the randomisation test: trained and random-weights maps per target."""
    from ...core.render import draw_box

    rows = list(dict.fromkeys(r.method for r in results))
    cols = sanity_columns(results)
    by_key = {(r.method, r.target.label().split(" ")[0]): r for r in results}
    dark = (to_uint8(base) * 0.35).astype(np.uint8)
    out = []
    for name in rows:
        label = get_method(name).label
        for col in cols:
            short, which = col.split(" ")
            r = by_key.get((name, short))
            if r is None:
                out.append(TileInfo(dark, (label, col), None, "not run"))
                continue
            m = r.trained if which == "trained" else r.randomised
            peak = float(np.abs(m).max()) or 1.0
            tile = overlay(base, (m / peak + 1.0) / 2.0 if r.signed else m / peak, opacity,
                           "bwr" if r.signed else cmap)
            if r.region is not None:
                t, b, le, ri = r.region
                tile = draw_box(tile, (le, t, ri, b), (255, 255, 255), 1)
            lines = (label, f"{short} trained") if which == "trained" else \
                (f"{label}  \u03c1 " + (f"{r.inside.spearman:+.2f}" if r.inside.defined else "n/a"),
                 f"{short} random: {r.verdict}")
            out.append(TileInfo(tile, lines, ACCENTS.get(r.target.kind),
                                "empty map" if float(np.ptp(m)) == 0 else "", sanity_detail(r)))
    return rows, cols, out


def sanity_detail(r) -> str:
    """What the randomisation test found for one method and target, in words and numbers."""
    def nums(s):
        return (f"Spearman {s.spearman:+.2f}, |Spearman| {s.spearman_abs:+.2f}, Pearson {s.pearson:+.2f}"
                if s.defined else "undefined (a constant map ranks nothing)")

    where = "inside the face square" if r.region is not None else "over the whole input"
    verdict = {"pass": "passes", "FAIL": "FAILS", "undefined": "is undefined"}[r.verdict]
    return (f"{get_method(r.method).label} {r.target.label()}: trained vs random weights {where}: {nums(r.inside)}; "
            f"whole input: {nums(r.full)}. It {verdict} (every correlation < {r.threshold:g}).")


def sanity_summary(results: list) -> str:
    """How many maps of a sanity run changed with random weights, and which did not (or say nothing)."""
    def name(r):
        return f"{r.method} {r.target.label().split(' ')[0]}"

    failed = [name(r) for r in results if r.verdict == "FAIL"]
    undefined = [name(r) for r in results if r.verdict == "undefined"]
    n_pass = len(results) - len(failed) - len(undefined)
    return (f"{n_pass} of {len(results)} maps change with random weights "
            f"(every correlation < {results[0].threshold if results else 0.5} in the face square)"
            + (f"; not: {', '.join(failed)}" if failed else "")
            + (f"; undefined (a constant map ranks nothing): {', '.join(undefined)}." if undefined else "."))


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


# ---------------------------------------------------------------------------------------- the exported sheet
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
    """How many methods (of ``n``, ``k`` tiles each) share a row of a sheet whose shape suits ``view_aspect``."""
    k = max(k, 1)
    if n <= 1:
        return 1
    th, tw = tile_shape

    def misfit(g: int) -> float:
        rows = math.ceil(n / g)
        return abs(math.log((g * k * (tw + GAP)) / (rows * (th + GAP))) - math.log(view_aspect))

    return min(range(1, n + 1), key=misfit)


def tile_images(infos: Sequence[TileInfo]) -> list[np.ndarray]:
    """The exported sheet's tiles: each picture under its two caption lines, its note across it."""
    out = []
    for t in infos:
        tile = to_uint8(t.rgb)
        out.append(captioned(centre_note(tile, t.note) if t.note else tile, [x.strip() for x in t.lines]))
    return out
