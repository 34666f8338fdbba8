"""Export of the shown map: overlay PNG, raw .npy and a JSON sidecar (which `famegui reproduce` reads)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QWidget

from ..session import MapResult
from .context import AppContext


def export_map(ctx: AppContext, res: MapResult | None, png: str, npy: str | None = None,
               on_photo: bool | None = None, boxes: list | None = None) -> list[Path]:
    """``res`` as overlay PNG (+ ``boxes``), raw .npy (default: beside the PNG) and JSON sidecar.

    A signed map is drawn in the diverging scale whatever the colormap (the sidecar says it is signed).
    """
    if res is None:
        raise ValueError("nothing to export yet: compute a map first")
    d = ctx.display
    on_photo = d.on_photo if on_photo is None else on_photo
    return ctx.session.export(res, png, npy or str(Path(png).with_suffix(".npy")), on_photo=on_photo,
                              opacity=d.opacity, cmap=d.colormap, boxes=boxes)


def ask_png(parent: QWidget, title: str, start_dir: str) -> str | None:
    """A PNG path from a save dialog (".png" added when missing), or None if cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, start_dir, "PNG (*.png)")
    if not path:
        return None
    return path if path.endswith(".png") else path + ".png"
