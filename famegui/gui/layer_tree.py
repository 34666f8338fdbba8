"""The model's layers as a tree by dotted names, with each layer's receptive field (computed in the background).

The table fits its panel: every stage's row is shown without scrolling (its minimum height holds the top-level
rows) and the layer, shape and receptive-field columns are never cut; when the panel is narrow, the type column
gives up its width first (elided, the full name in its tooltip)."""
from __future__ import annotations

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

from .context import AppContext

COLUMNS = ("layer", "type", "shape", "RF")
TYPE, RF = 1, 3  # the column that gives up its width first; the receptive field's column
RF_SAMPLE = "000x000"  # the widest receptive field the RF column is sized for before it is computed
MIN_TYPE_WIDTH = 28  # px: the type column elided down to its first letters, never below
MAX_ROWS_SHOWN = 8  # top-level rows the table keeps room for without scrolling (a larger model scrolls)
INDENT = 12  # px per nesting level (Qt's default 20 costs the layer column its width)


class LayerTree(QTreeWidget):
    """Layers of the session's model; ``layer_chosen(name)`` when the user picks one."""

    layer_chosen = Signal(str)

    def __init__(self, ctx: AppContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setHeaderLabels(list(COLUMNS))
        self.setIndentation(INDENT)
        self.setUniformRowHeights(True)
        self.header().setStretchLastSection(False)
        self.header().setSectionsMovable(False)
        self.itemSelectionChanged.connect(self._on_selected)
        self.itemExpanded.connect(lambda _i: self.fit_columns())
        self.itemCollapsed.connect(lambda _i: self.fit_columns())

    # ------------------------------------------------------------------ size
    def column_widths(self) -> list[int]:
        """The width each column's contents (and title) need; the RF column's also for ``RF_SAMPLE``."""
        header = self.header()
        widths = [max(self.sizeHintForColumn(c), header.sectionSizeHint(c)) for c in range(len(COLUMNS))]
        widths[RF] = max(widths[RF], self.fontMetrics().horizontalAdvance(RF_SAMPLE) + 2 * self._cell_margin())
        return widths

    def _cell_margin(self) -> int:
        return self.style().pixelMetric(self.style().PixelMetric.PM_FocusFrameHMargin, None, self) + 2

    def fit_columns(self) -> None:
        """Each column as wide as its contents; when they do not fit the panel the type column is narrowed
        (elided) first; room to spare goes to the layer column."""
        widths = self.column_widths()
        room = self.viewport().width()
        spare = room - sum(widths)
        if spare < 0:
            widths[TYPE] = max(MIN_TYPE_WIDTH, widths[TYPE] + spare)
        else:
            widths[0] += spare
        header = self.header()
        for c, w in enumerate(widths):
            header.resizeSection(c, w)

    def fit_height(self) -> None:
        """A minimum height that shows every top-level row (stem ... the last stage) without scrolling."""
        rows = min(self.topLevelItemCount(), MAX_ROWS_SHOWN)
        row_h = self.sizeHintForRow(0) if self.topLevelItemCount() else 0
        if row_h <= 0:
            row_h = self.fontMetrics().height() + 2
        header_h = self.header().sizeHint().height() if not self.isHeaderHidden() else 0
        self.setMinimumHeight(max(90, header_h + rows * row_h + 2 * self.frameWidth()))

    def viewportEvent(self, event) -> bool:  # noqa: N802 (Qt API)
        handled = super().viewportEvent(event)
        if event.type() == QEvent.Resize:
            self.fit_columns()
        return handled

    # ------------------------------------------------------------------ contents
    def fill(self, select: str | None, every_module: bool = False) -> None:
        """The model's feature-map layers (``every_module``: all modules); ``select`` is picked if present."""
        self.blockSignals(True)
        self.clear()
        model = self.ctx.model
        if model is None:
            self.blockSignals(False)
            return
        layers = model.layers() if every_module else model.spatial_layers()
        chosen = None
        items: dict[str, QTreeWidgetItem] = {}
        for info in layers:  # stages on top, their blocks inside
            shape = "x".join(map(str, info.shape)) + (f" +{info.prefix}" if info.prefix else "")
            item = QTreeWidgetItem([info.name, info.type, shape, ""])
            item.setData(0, Qt.UserRole, info.name)
            item.setToolTip(0, info.name)
            item.setToolTip(TYPE, info.type)  # the full name when the column is elided
            if info.layout_note:  # a transformer's tokens or a channels-last map, shown as (C, H, W) cells
                item.setToolTip(2, info.layout_note)
            parts = info.name.split(".")
            parent = next((items[".".join(parts[:i])] for i in range(len(parts) - 1, 0, -1)
                           if ".".join(parts[:i]) in items), None)
            if parent is None:
                self.addTopLevelItem(item)
            else:
                parent.addChild(item)
            items[info.name] = item
            if info.name == (select or model.default_layer):
                chosen = item
        self.fit_columns()
        self.fit_height()
        self.blockSignals(False)
        for i in range(self.topLevelItemCount()):  # receptive fields of the stages, in the background
            item = self.topLevelItem(i)
            name = item.data(0, Qt.UserRole)
            if model.layer_info(name).is_spatial:
                self.fill_receptive_field(item, name)
        if chosen is not None:
            self.setCurrentItem(chosen)

    def _on_selected(self) -> None:
        items = self.selectedItems()
        if not items:
            return
        name = items[0].data(0, Qt.UserRole)
        self.layer_chosen.emit(name)
        info = self.ctx.model.layer_info(name) if self.ctx.model else None
        if info is not None and info.is_spatial:
            self.fill_receptive_field(items[0], name)

    def fill_receptive_field(self, item: QTreeWidgetItem, layer: str) -> None:
        """The RF column of ``item``: the theoretical receptive field of the layer's centre cell."""
        model = self.ctx.model
        if item.text(RF):
            return
        _, fh, fw = model.layer_info(layer).shape
        centre = (fh // 2, fw // 2)

        def work(_job):
            return self.ctx.session.cell_geometry(layer, centre, io=True)[1]

        def done(rf):
            if self.ctx.model is not model:
                return  # the tree shows another model by now
            for it in self.findItems(layer, Qt.MatchExactly | Qt.MatchRecursive, 0):
                it.setText(RF, f"{int(rf.width)}x{int(rf.height)}")
                it.setToolTip(RF, f"theoretical receptive field of the centre cell {centre}, clipped to the input")
            self.fit_columns()

        self.ctx.submit(self.ctx.io, work, f"receptive field of {layer}", done=done)
