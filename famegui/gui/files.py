"""Recently opened images and the folder file dialogs start in (kept in the app's QSettings)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QMenu

IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp);;All files (*)"
WEIGHTS_FILTER = ("Models and weights (*.onnx *.safetensors *.pth *.pt *.bin *.ckpt *.ts *.torchscript *.dat);;"
                  "ONNX (*.onnx);;safetensors (*.safetensors);;PyTorch (*.pth *.pt *.bin *.ckpt *.ts *.torchscript);;"
                  "dlib (*.dat);;All (*)")
MAX_RECENT = 10


class RecentFiles(QObject):
    """The last opened images, newest first; ``changed`` when the list changes."""

    changed = Signal()

    def __init__(self, settings: QSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings

    def paths(self) -> list[str]:
        return list(self.settings.value("recent", []) or [])

    def add(self, path: str) -> None:
        recent = [p for p in self.paths() if p != path]
        self.settings.setValue("recent", [path] + recent[:MAX_RECENT - 1])
        self.changed.emit()

    def last_dir(self) -> str:
        """Where file dialogs start: the folder of the last image, else home."""
        recent = self.paths()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def fill_menu(self, menu: QMenu, open_path: Callable[[str], None]) -> None:
        """``menu`` lists the recent paths; choosing one calls ``open_path(path)``."""
        menu.clear()
        for p in self.paths():
            a = menu.addAction(p)
            a.triggered.connect(lambda _c=False, p=p: open_path(p))


def demo_paths() -> tuple[str, str, str]:
    """The demo's probe, its mate and a non-mate (the genuine and the impostor pair)."""
    from ..data.pairs import demo_pairs

    genuine, impostor = demo_pairs()
    return str(genuine.a), str(genuine.b), str(impostor.b)
