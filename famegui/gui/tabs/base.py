"""What every tab of the window offers the window (which only assembles them)."""
from __future__ import annotations

from PySide6.QtWidgets import QWidget

from ..context import AppContext
from ..display import empty_reason


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

    def draw_map(self, canvas, slot: str, amap, signed: bool, res=None) -> None:
        """``amap`` over the image of ``slot`` in ``canvas``, as the display settings say, with its colour bar;
        ``res`` (the MapResult drawn): a note in the view says why it is empty, if it is."""
        canvas.set_image(self.ctx.display.draw(self.session.input_rgb(slot), amap, signed))
        canvas.set_colorbar(*self.ctx.display.colorbar(signed))
        canvas.set_note(empty_reason(res) if res is not None else None)

    def inputs_of(self, res) -> tuple:
        """The prepared inputs ``res`` was computed on, as the session holds them now (to tell when they change)."""
        return tuple(self.session.inputs.get(s) for s in (res.slot, res.other, res.non_mate) if s)

    def still_valid(self, res, inputs: tuple) -> bool:
        """Whether the images of ``res`` are still the ones it was computed on (``inputs`` from :meth:`inputs_of`)."""
        now = self.inputs_of(res)
        return len(now) == len(inputs) and all(a is b and a is not None for a, b in zip(now, inputs))
