"""An image view (pyqtgraph) with a cell grid, hover/click in image pixels, boxes, a colour bar and a note.

A map view (``colorbar=True``) carries a colour bar beside the image: the colormap the map is drawn in,
its scale (0..1 of the map's own peak, or -1..+1 for a signed map) and what the ends mean. A note in the
middle of the view says why a map shows nothing (an empty map) or that it is being computed.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsRectItem, QVBoxLayout, QWidget

from ..core.render import FOOTPRINT_COLOR, RF_COLOR  # noqa: F401  (the boxes' colours, shared with exports)

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

HOVER_COLOR = (255, 220, 0)
SELECT_COLOR = (255, 60, 60)
MIN_SIDE = 150  # the smallest a view gets (a 1366x768 screen shows two of them beside the docks)
BAR_WIDTH = 14


def _pen(color, width=2.0, style=Qt.SolidLine) -> QPen:
    pen = QPen(QColor(*color))
    pen.setWidthF(width)
    pen.setCosmetic(True)
    pen.setStyle(style)
    return pen


class ImageCanvas(QWidget):
    """Shows an RGB image; reports hover/clicks in image pixel coordinates."""

    hovered = Signal(float, float)  # x, y in image pixels (NaN when outside)
    clicked = Signal(float, float)

    def __init__(self, title: str = "", parent: QWidget | None = None, colorbar: bool = False,
                 min_side: int = MIN_SIDE) -> None:
        super().__init__(parent)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground("#202020")
        self.glw.setMinimumSize(min_side, min_side)
        self.title = self.glw.addLabel(title, row=0, col=0, colspan=3 if colorbar else 1)
        self.view: pg.ViewBox = self.glw.addViewBox(row=1, col=0)
        self.view.setAspectLocked(True)
        self.view.invertY(True)
        self.view.setMenuEnabled(False)
        self.image_item = pg.ImageItem()
        self.view.addItem(self.image_item)
        self._shape: tuple[int, int] | None = None
        self._grid = QGraphicsPathItem()
        self._grid.setPen(_pen((255, 255, 255, 90), 1.0))
        self._grid.setZValue(5)
        self.view.addItem(self._grid)
        self._hover = QGraphicsRectItem()
        self._hover.setPen(_pen(HOVER_COLOR, 2.0))
        self._hover.setZValue(10)
        self._hover.hide()
        self.view.addItem(self._hover)
        self._boxes: dict[str, QGraphicsRectItem] = {}
        self._note = pg.TextItem("", color=(255, 255, 255), fill=pg.mkBrush(0, 0, 0, 190), anchor=(0.5, 0.5))
        self._note.setZValue(30)
        self._note.hide()
        self.view.addItem(self._note)
        self.bar: ColorBar | None = ColorBar(self.glw) if colorbar else None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.glw)
        self._proxy = pg.SignalProxy(self.glw.scene().sigMouseMoved, rateLimit=60, slot=self._on_move)
        self.glw.scene().sigMouseClicked.connect(self._on_click)

    # ------------------------------------------------------------------ content
    def set_title(self, text: str) -> None:
        self.title.setText(text)
        self._fit_title()

    def _fit_title(self) -> None:
        """A title wider than the view wraps instead of widening it (and pushing the colour bar out)."""
        item = self.title.item
        item.setTextWidth(-1)
        room = max(60, self.glw.width() - 12)
        if item.boundingRect().width() > room:
            item.setTextWidth(room)
        self.title.updateMin()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit_title()

    def set_note(self, text: str | None) -> None:
        """A line in the middle of the view (why it is empty, that it is computing); None hides it."""
        if not text:
            self._note.hide()
            self._note.setText("")
            return
        self._note.setText(text)
        h, w = self._shape or (1, 1)
        self._note.setPos(w / 2, h / 2)
        self._note.show()

    def note(self) -> str:
        """The note shown in the view ("" if none)."""
        return self._note.toPlainText() if self._note.isVisible() else ""

    def set_colorbar(self, colors: np.ndarray | None, lo: float = 0.0, hi: float = 1.0, label: str = "") -> None:
        """The colour bar: ``colors`` (N, 3) uint8 from ``lo`` (first row) to ``hi``; None hides it."""
        if self.bar is not None:
            self.bar.show_scale(colors, lo, hi, label)

    def set_image(self, rgb: np.ndarray | None) -> None:
        if rgb is None:
            self.image_item.clear()
            self._shape = None
            return
        new_shape = rgb.shape[:2]
        self.image_item.setImage(np.ascontiguousarray(rgb), autoLevels=False, levels=(0, 255))
        if new_shape != self._shape:
            self._shape = new_shape
            self.view.autoRange(padding=0.02)

    def image_shape(self) -> tuple[int, int] | None:
        return self._shape

    def set_grid(self, rows: int, cols: int, shape: tuple[int, int] | None = None) -> None:
        """Lines between feature-map cells (each cell at its geometric footprint)."""
        shape = shape or self._shape
        path = QPainterPath()
        if shape and rows > 0 and cols > 0 and rows * cols <= 4096:
            h, w = shape
            for r in range(1, rows):
                y = r * h / rows
                path.moveTo(0, y)
                path.lineTo(w, y)
            for c in range(1, cols):
                x = c * w / cols
                path.moveTo(x, 0)
                path.lineTo(x, h)
        self._grid.setPath(path)

    def set_hover_rect(self, rect: tuple[float, float, float, float] | None) -> None:
        if rect is None:
            self._hover.hide()
            return
        x0, y0, x1, y1 = rect
        self._hover.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        self._hover.show()

    def hover_rect(self) -> tuple[float, float, float, float] | None:
        """The hover box on screen (x0, y0, x1, y1), None when hidden."""
        if not self._hover.isVisible():
            return None
        r = self._hover.rect()
        return (r.left(), r.top(), r.right(), r.bottom())

    def set_box(self, name: str, rect: tuple[float, float, float, float] | None, color=FOOTPRINT_COLOR,
                dashed: bool = False) -> None:
        item = self._boxes.get(name)
        if rect is None:
            if item is not None:
                item.hide()
            return
        if item is None:
            item = QGraphicsRectItem()
            item.setZValue(20)
            self.view.addItem(item)
            self._boxes[name] = item
        item.setPen(_pen(color, 2.0, Qt.DashLine if dashed else Qt.SolidLine))
        x0, y0, x1, y1 = rect
        item.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        item.show()

    def box_rect(self, name: str) -> tuple[float, float, float, float] | None:
        item = self._boxes.get(name)
        if item is None or not item.isVisible():
            return None
        r = item.rect()
        return (r.left(), r.top(), r.right(), r.bottom())

    # ------------------------------------------------------------------ mouse
    def _to_image(self, scene_pos: QPointF) -> tuple[float, float] | None:
        if self._shape is None or not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.view.mapSceneToView(scene_pos)
        h, w = self._shape
        if 0 <= p.x() < w and 0 <= p.y() < h:
            return float(p.x()), float(p.y())
        return None

    def _on_move(self, args) -> None:
        pos = self._to_image(args[0])
        if pos is None:
            self.hovered.emit(float("nan"), float("nan"))
        else:
            self.hovered.emit(*pos)

    def _on_click(self, ev) -> None:
        if ev.button() != Qt.LeftButton or ev.double():
            return
        pos = self._to_image(ev.scenePos())
        if pos is not None:
            self.clicked.emit(*pos)

    def hover_at_image(self, x: float, y: float) -> None:
        """Programmatic hover over image point (x, y) (scripts, tests)."""
        self.hovered.emit(float(x), float(y))

    def click_at_image(self, x: float, y: float) -> None:
        """Programmatic click (tests, keyboard navigation)."""
        self.clicked.emit(float(x), float(y))

    def view_to_widget(self, x: float, y: float):
        """Widget pixel position of image point (x, y), for real mouse events in tests."""
        scene = self.view.mapViewToScene(QPointF(x, y))
        return self.glw.mapFromScene(scene)


class ColorBar:
    """A vertical colour bar with its axis in columns 1-2 of row 1 of a :class:`pg.GraphicsLayoutWidget`."""

    def __init__(self, glw: pg.GraphicsLayoutWidget) -> None:
        self.view = glw.addViewBox(row=1, col=1)
        self.view.setMouseEnabled(False, False)
        self.view.setMenuEnabled(False)
        self.view.setFixedWidth(BAR_WIDTH)
        self.image = pg.ImageItem()
        self.view.addItem(self.image)
        self.axis = pg.AxisItem("right")
        self.axis.linkToView(self.view)
        tick_font = QFont()  # the default family at 8 pt (QFont("", 8) crashes PySide6 6.11 in the axis paint)
        tick_font.setPointSize(8)
        self.axis.setTickFont(tick_font)
        self.axis.setStyle(tickLength=4)
        glw.addItem(self.axis, row=1, col=2)
        self.range: tuple[float, float] | None = None
        self.colors: np.ndarray | None = None
        self.label = ""
        for item in (self.view, self.axis):
            item.hide()

    def show_scale(self, colors: np.ndarray | None, lo: float, hi: float, label: str) -> None:
        if colors is None:
            self.range, self.colors, self.label = None, None, ""
            self.view.hide()
            self.axis.hide()
            return
        self.range, self.colors, self.label = (float(lo), float(hi)), np.asarray(colors, np.uint8), label
        self.image.setImage(np.ascontiguousarray(self.colors[:, None, :]), autoLevels=False, levels=(0, 255))
        self.image.setRect(QRectF(0, lo, 1, hi - lo))
        self.view.setRange(xRange=(0, 1), yRange=(lo, hi), padding=0)
        ticks = [(lo, f"{lo:g}"), (hi, f"{hi:g}")] + ([(0.0, "0")] if lo < 0 < hi else [(0.5 * (lo + hi), "")])
        self.axis.setTicks([ticks, []])
        self.axis.setLabel(label, **{"font-size": "8pt"})
        self.view.show()
        self.axis.show()
