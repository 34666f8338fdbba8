"""How maps are drawn: opacity, colormap, boxes, export on the photo (one object every view reads).

Whether a map is signed (in [-1, 1], drawn in the diverging blue-white-red
scale with 0 in the middle) is what its method declares
(:attr:`famegui.session.MapResult.signed`), never guessed from its values.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..core.render import overlay

DIVERGING = "bwr"


class DisplaySettings(QObject):
    """The display choices of the Settings dock; ``changed`` fires when one of them changes."""

    changed = Signal()

    def __init__(self, opacity: float = 0.55, colormap: str = "jet", boxes: bool = True,
                 on_photo: bool = False, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values = {"opacity": float(opacity), "colormap": colormap, "boxes": bool(boxes),
                        "on_photo": bool(on_photo)}

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

    def colormap_for(self, signed: bool) -> str:
        return DIVERGING if signed else self.colormap

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
