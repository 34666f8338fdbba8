"""An image view (pyqtgraph) with a cell grid, hover/click in image pixels, and boxes."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsRectItem, QVBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

FOOTPRINT_COLOR = (255, 255, 255)
RF_COLOR = (0, 230, 255)
HOVER_COLOR = (255, 220, 0)
SELECT_COLOR = (255, 60, 60)


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

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground("#202020")
        self.glw.setMinimumSize(220, 220)
        self.title = self.glw.addLabel(title, row=0, col=0)
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
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.glw)
        self._proxy = pg.SignalProxy(self.glw.scene().sigMouseMoved, rateLimit=60, slot=self._on_move)
        self.glw.scene().sigMouseClicked.connect(self._on_click)

    # ------------------------------------------------------------------ content
    def set_title(self, text: str) -> None:
        self.title.setText(text)

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
