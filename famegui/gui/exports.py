"""Export of the shown map: overlay PNG, raw .npy and a JSON sidecar (which `famegui reproduce` reads).

The PNG is drawn at the export size of the Settings dock (long side, default 800 px: a figure
for a paper), not at the model's input size: the chip is cut again from the photo at that
size, the map is upsampled onto it and the footprint / receptive-field boxes are scaled.
The .npy keeps the map as computed. Dialogs suggest a file name from the image, the method
and the target, and open in the folder of the last export.
"""
from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QWidget

from ..session import MapResult
from .context import AppContext

LAST_EXPORT_KEY = "last_export_dir"


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
                              opacity=d.opacity, cmap=d.colormap, boxes=boxes, long_side=d.export_px)


def _slug(text: str) -> str:
    """Lower-case words joined by "-"; e+ and e- spelt out (``eplus``, ``eminus``: a "+" would vanish and
    "e-" read like a hyphen)."""
    text = re.sub(r"(?<![A-Za-z0-9])e\+", "eplus", text)
    text = re.sub(r"(?<![A-Za-z0-9])e-(?![A-Za-z0-9])", "eminus", text)
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def image_tag(path: str | None) -> str | None:
    """An image in a file name: its folder and stem ("london_001-neutral"), None without a file."""
    if not path:
        return None
    p = Path(path)
    return re.sub(r"[^A-Za-z0-9_]+", "-", f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem).strip("-")


def suggested_name(image_path: str | None, method: str | None, target_label: str | None,
                   other_path: str | None = None) -> str:
    """The one naming rule of every export: image, method, target and the image it was compared with,
    e.g. "london_005-neutral_fame_eplus_vs_london_001-neutral.png" or
    "london_001-neutral_fame_stage4-1-2.png". The target keeps only its short form (``e+ (similar)`` -> ``eplus``)."""
    if target_label:
        target_label = re.sub(r"\s*\(.*\)$", "", target_label)  # "e+ (similar)" -> "e+"
    parts = [image_tag(image_path)] + [_slug(x) for x in (method, target_label) if x]
    if other_path:
        parts.append(f"vs_{image_tag(other_path)}")
    return "_".join([x for x in parts if x] or ["famegui"]) + ".png"


def last_export_dir(settings: QSettings, fallback: str) -> str:
    """The folder of the last export (else ``fallback``, if it still exists)."""
    d = settings.value(LAST_EXPORT_KEY)
    return str(d) if d and Path(str(d)).is_dir() else fallback


def remember_export(settings: QSettings, path: str | Path) -> None:
    settings.setValue(LAST_EXPORT_KEY, str(Path(path).resolve().parent))


def ask_png(parent: QWidget, title: str, start: str) -> str | None:
    """A PNG path from a save dialog starting at ``start`` (a folder or a suggested file), or None if cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, start, "PNG (*.png)")
    if not path:
        return None
    return path if path.endswith(".png") else path + ".png"
