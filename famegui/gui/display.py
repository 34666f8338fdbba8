"""How maps are drawn: opacity, colormap, boxes, export on the photo (one object every view reads).

Whether a map is signed (in [-1, 1], drawn in the diverging blue-white-red
scale with 0 in the middle) is what its method declares
(:attr:`famegui.session.MapResult.signed`), never guessed from its values.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..core.render import colorize, overlay

DIVERGING = "bwr"
EXPORT_PX = 800  # default long side of exported pictures
BAR_STEPS = 256
UNSIGNED_LABEL = "1 = this map's peak"
SIGNED_LABEL = "- against / + for (1 = peak)"


class DisplaySettings(QObject):
    """The display choices of the Settings dock; ``changed`` fires when one of them changes."""

    changed = Signal()

    def __init__(self, opacity: float = 0.55, colormap: str = "jet", boxes: bool = True,
                 on_photo: bool = False, export_px: int = EXPORT_PX, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values = {"opacity": float(opacity), "colormap": colormap, "boxes": bool(boxes),
                        "on_photo": bool(on_photo), "export_px": int(export_px)}

    def _set(self, name: str, value) -> None:
        if self._values[name] != value:
            self._values[name] = value
            self.changed.emit()

    @property
    def opacity(self) -> float:
        """Map opacity over the image, 0..1."""
        return self._values["opacity"]

    @opacity.setter
    def opacity(self, value: float) -> None:
        self._set("opacity", float(value))

    @property
    def colormap(self) -> str:
        """The colormap of unsigned maps."""
        return self._values["colormap"]

    @colormap.setter
    def colormap(self, value: str) -> None:
        self._set("colormap", value)

    @property
    def boxes(self) -> bool:
        """Whether a cell's footprint and receptive field are drawn."""
        return self._values["boxes"]

    @boxes.setter
    def boxes(self, value: bool) -> None:
        self._set("boxes", bool(value))

    @property
    def on_photo(self) -> bool:
        """Whether exports draw the map on the full photo instead of the model input."""
        return self._values["on_photo"]

    @on_photo.setter
    def on_photo(self, value: bool) -> None:
        self._set("on_photo", bool(value))

    @property
    def export_px(self) -> int:
        """The long side of an exported picture, in pixels (a figure for a paper)."""
        return self._values["export_px"]

    @export_px.setter
    def export_px(self, value: int) -> None:
        self._values["export_px"] = int(value)  # nothing on screen changes: no redraw

    def colormap_for(self, signed: bool) -> str:
        return DIVERGING if signed else self.colormap

    def colorbar(self, signed: bool, label: str | None = None) -> tuple[np.ndarray, float, float, str]:
        """(colours from low to high, low, high, label) of the scale a map is drawn in: 0..1 of its own peak,
        or -1..+1 (0 white) for a signed map."""
        colors = bar_colors(self.colormap_for(signed))
        if signed:
            return colors, -1.0, 1.0, label or SIGNED_LABEL
        return colors, 0.0, 1.0, label or UNSIGNED_LABEL

    def draw(self, rgb: np.ndarray, amap: np.ndarray, signed: bool) -> np.ndarray:
        """``amap`` over ``rgb``: an unsigned map in [0,1] in the chosen colormap, a signed one diverging."""
        if signed:
            amap = (amap + 1.0) / 2.0
        return overlay(rgb, amap, self.opacity, self.colormap_for(signed))


def scaled(maps: list[np.ndarray | None], signed: list[bool], shared: bool) -> list[np.ndarray | None]:
    """Maps rescaled for display: unsigned to [0,1], signed to [0,1] with 0 at 0.5.

    ``signed[i]`` is what the method of ``maps[i]`` declares; ``shared`` gives every map the largest peak.
    """
    peaks = [float(np.abs(m).max()) for m in maps if m is not None]
    common = max(peaks) if peaks else 1.0
    out: list[np.ndarray | None] = []
    for m, sign in zip(maps, signed):
        if m is None:
            out.append(None)
            continue
        peak = common if shared else float(np.abs(m).max())
        peak = peak if peak > 0 else 1.0
        out.append((m / peak + 1.0) / 2.0 if sign else m / peak)
    return out


def bar_colors(cmap: str, steps: int = BAR_STEPS) -> np.ndarray:
    """(steps, 3) uint8: the colours of ``cmap`` from 0 to 1 (what a colour bar shows)."""
    return colorize(np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None], cmap)[:, 0]


def empty_reason(res) -> str | None:
    """Why the map of ``res`` (a MapResult) shows nothing, or None when it is not empty (constant)."""
    m = np.asarray(res.map)
    if m.size and np.any(m != m.flat[0]):
        return None
    info = res.info or {}
    if info.get("problem"):  # the session's own diagnosis of an empty map
        return f"empty map: {info['problem']}"
    if info.get("note"):
        return f"empty map: {info['note']}"
    if info.get("empty"):
        return ("empty map: the loss was already below the early-stop epsilon at the start "
                "(e.g. e+ of an impostor pair); lower or clear epsilon in Settings")
    if res.non_mate is not None or res.other is not None:
        return "empty map: the method attributed nothing to this pair (every value is equal)"
    return "empty map: the method attributed nothing here (every value is equal)"
