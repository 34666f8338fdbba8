"""What every tab of the window offers the window (which only assembles them)."""
from __future__ import annotations

from PySide6.QtWidgets import QWidget

from ..context import AppContext


class Tab(QWidget):
    """A tab: its widgets and the requests it makes through the shared :class:`AppContext`."""

    title = ""

    def __init__(self, ctx: AppContext) -> None:
        super().__init__()
        self.ctx = ctx

    @property
    def session(self):
        return self.ctx.session

    def on_model_loaded(self, model) -> None:
        """A new model: forget the maps of the previous one."""

    def on_inputs_changed(self) -> None:
        """The images (or their preparation) changed: redraw what depends on them."""

    def on_image_loaded(self, slot: str) -> None:
        """A new image in ``slot``."""

    def on_shown(self) -> None:
        """The tab came to the front."""

    def on_settings_changed(self) -> None:
        """The FAME settings changed (maps computed with other settings become stale)."""
        self.redraw()

    def redraw(self) -> None:
        """Re-render the shown maps (opacity, colormap, boxes) without recomputing."""

    def current_result(self):
        """The MapResult this tab shows (what "Export view" writes), or None."""
        return None

    def draw_map(self, canvas, slot: str, amap, signed: bool) -> None:
        """``amap`` over the image of ``slot`` in ``canvas``, as the display settings say."""
        canvas.set_image(self.ctx.display.draw(self.session.input_rgb(slot), amap, signed))
