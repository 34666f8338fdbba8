"""The model's layers as a tree by dotted names, with each layer's receptive field (computed in the background)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

from .context import AppContext


class LayerTree(QTreeWidget):
    """Layers of the session's model; ``layer_chosen(name)`` when the user picks one."""

    layer_chosen = Signal(str)

    def __init__(self, ctx: AppContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setHeaderLabels(["layer", "type", "shape", "RF"])
        self.itemSelectionChanged.connect(self._on_selected)

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
        for c in range(self.columnCount()):
            self.resizeColumnToContents(c)
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
        if item.text(3):
            return
        _, fh, fw = model.layer_info(layer).shape
        centre = (fh // 2, fw // 2)

        def work(_job):
            return self.ctx.session.cell_geometry(layer, centre, io=True)[1]

        def done(rf):
            if self.ctx.model is not model:
                return  # the tree shows another model by now
            for it in self.findItems(layer, Qt.MatchExactly | Qt.MatchRecursive, 0):
                it.setText(3, f"{int(rf.width)}x{int(rf.height)}")
                it.setToolTip(3, f"theoretical receptive field of the centre cell {centre}, clipped to the input")

        self.ctx.submit(self.ctx.io, work, f"receptive field of {layer}", done=done)
