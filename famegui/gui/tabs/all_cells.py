"""The All cells tab: FAME for every cell of the layer as one batched job, as a sheet of tiles.

The sheet is drawn at once with a dark tile per cell and fills in batch by batch; each tile
carries its cell's footprint (white box) and index.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ...core.render import draw_box, sheet, to_uint8
from ...models.receptive import footprint
from ...session import MapResult
from ..canvas import FOOTPRINT_COLOR, ImageCanvas
from .base import Tab
from .feature_map import FeatureMapTab

GAP = 2
MAX_CELLS = 1024
MAX_BATCH = 16  # cells per batch: bigger batches are faster per cell, smaller ones show tiles sooner
MIN_UPDATES = 4  # the sheet fills in at least this many steps


def batch_size(n_cells: int) -> int:
    """Cells per batch for a sheet of ``n_cells``: at most MAX_BATCH, at least MIN_UPDATES batches when it can."""
    return max(1, min(MAX_BATCH, math.ceil(n_cells / MIN_UPDATES)))


def mark_tile(tile: np.ndarray, box: tuple[float, float, float, float], cell: tuple[int, int]) -> np.ndarray:
    """``tile`` with the cell's footprint (white box) and its index in the top-left corner."""
    out = draw_box(tile, box, FOOTPRINT_COLOR, 1)
    text = f"{cell[0]},{cell[1]}"
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    cv2.rectangle(out, (0, 0), (w + 4, h + 6), (20, 20, 20), -1)
    cv2.putText(out, text, (2, h + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class AllCellsTab(Tab):
    """The sheet of every cell's map of the Feature map tab's layer; a tile opens in that tab."""

    title = "All cells"

    def __init__(self, ctx, feature_map: FeatureMapTab) -> None:
        super().__init__(ctx)
        self.feature_map = feature_map
        self.results: list[MapResult | None] = []
        self.layer: str | None = None
        self.columns = 1
        self.tile_shape: tuple[int, int] | None = None  # (h, w) of one tile of the sheet
        self._job = None  # the newest sheet job
        self.canvas = ImageCanvas("all cells", colorbar=True)
        self.button = QPushButton("Compute all cells")
        self.button.setToolTip("FAME for every cell of the Feature map tab's layer, in batches")
        self.button.clicked.connect(self.compute)
        self.info = QLabel("Every cell of the layer in batches; click a tile to enlarge it.")
        self.info.setWordWrap(True)
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.button)
        row.addWidget(self.info, 1)
        lay.addLayout(row)
        lay.addWidget(self.canvas, 1)
        self.canvas.clicked.connect(self._on_click)

    def on_model_loaded(self, model) -> None:
        self.clear("Every cell of the layer in batches; click a tile to enlarge it.")

    def on_image_loaded(self, slot: str) -> None:
        if slot == "probe" and self.results:
            self.clear("The probe changed: compute the cells again.")

    def clear(self, info: str) -> None:
        """No sheet (another model or probe): its tiles were of what is gone; a late batch is dropped."""
        self.results, self._job = [], None
        self.canvas.set_image(None)
        self.canvas.set_colorbar(None)
        self.canvas.set_title("all cells")
        self.info.setText(info)

    def compute(self) -> None:
        """Every cell of the Feature map tab's layer, in the background; the sheet fills in as chunks finish."""
        layer = self.feature_map.layer
        if layer is None or "probe" not in self.session.inputs:
            self.ctx.show_error("load an image and pick a layer first")
            return
        params = self.ctx.current_params()
        _, fh, fw = self.ctx.model.layer_info(layer).shape
        if fh * fw > MAX_CELLS:
            self.ctx.show_error(f"{layer} has {fh * fw} cells; pick a deeper layer for the all-cells sheet")
            return
        self.layer, self.columns = layer, fw
        self.results = [None] * (fh * fw)
        self.ctx.show_tab(self)
        self.redraw()  # the sheet of dark tiles at once
        batch = batch_size(fh * fw)

        def work(job):
            return self.session.explain_cells(layer, params, batch=batch, progress=job.progress,
                                              cancel=job.cancelled)

        def progress(fraction, payload):
            if self._job is not job:
                return
            if payload is not None:
                self.results = list(payload)
                self.redraw()
            n = sum(r is not None for r in self.results)
            self.info.setText(f"{layer}: {n} of {fh * fw} cells, {100 * fraction:.0f}% done")

        def done(results):
            if self._job is not job:
                return
            self.results = list(results)
            self.redraw()
            secs = sum(r.seconds for r in results)
            self.info.setText(f"{layer}: {fh}x{fw} cells done ({secs:.1f} s of compute); click a tile")

        def cancelled():
            if self._job is job:
                n = sum(r is not None for r in self.results)
                self.info.setText(f"{layer}: cancelled after {n} of {fh * fw} cells")

        job = self._job = self.ctx.submit(self.ctx.compute, work, f"all cells of {layer}", done=done,
                                          progress=progress, cancelled=cancelled)

    def _tiles(self, rgb: np.ndarray, marked: bool = True) -> list[np.ndarray]:
        d = self.ctx.display
        gray = (to_uint8(rgb).mean(2, keepdims=True).repeat(3, 2) * 0.5).astype(np.uint8)
        tiles = [d.draw(rgb, r.map, r.signed) if r is not None else gray for r in self.results]
        if not marked:
            return tiles
        model = self.ctx.model
        _, fh, fw = model.layer_info(self.layer).shape
        cells = [(i // self.columns, i % self.columns) for i in range(len(tiles))]
        return [mark_tile(t, footprint(model.input_size, (fh, fw), c).as_tuple(), c) for t, c in zip(tiles, cells)]

    def redraw(self) -> None:
        if not self.results or "probe" not in self.session.inputs:
            return
        rgb = self.session.input_rgb("probe")
        self.tile_shape = rgb.shape[:2]
        self.canvas.set_image(sheet(self._tiles(rgb, self.ctx.display.boxes), self.columns, gap=GAP))
        self.canvas.set_colorbar(*self.ctx.display.colorbar(any(r.signed for r in self.results if r is not None)))
        self.canvas.set_title(f"all cells of {self.layer} (feature-map order; white: each cell's footprint)")

    def tile_origin(self, cell: tuple[int, int]) -> tuple[float, float]:
        """Top-left image point of ``cell``'s tile in the sheet (for scripts and tests)."""
        th, tw = self.tile_shape
        r, c = cell
        return c * (tw + GAP), r * (th + GAP)

    def _on_click(self, x: float, y: float) -> None:
        if not self.results or self.tile_shape is None:
            return
        th, tw = self.tile_shape
        c, r = int(x // (tw + GAP)), int(y // (th + GAP))
        i = r * self.columns + c
        if 0 <= c < self.columns and 0 <= i < len(self.results) and self.results[i] is not None:
            res = self.results[i]
            self.ctx.show_tab(self.feature_map)
            self.feature_map.layer = res.target.layer
            self.feature_map.request_cell(res.target.cell, res.target.layer)

    def export(self, png: str) -> list[Path]:
        """The sheet as PNG, every map as one (cells, H, W) .npy, and a JSON sidecar."""
        from ...export import json_bytes, npy_bytes, png_bytes, write_set
        from ...report import explain_record

        done = [r for r in self.results if r is not None]
        if not done or len(done) != len(self.results):
            raise ValueError("compute all cells first")
        rgb = self.session.input_rgb("probe")
        img = sheet(self._tiles(rgb, self.ctx.display.boxes), self.columns, gap=GAP)
        stack = np.stack([r.map for r in done]).astype(np.float32)
        s = self.session
        rec = explain_record(s.model, s.weights, s.input("probe"), None, done[0].target, "fame", done[0].params)
        rec["sheet"] = {"layer": self.layer, "cells": [list(r.target.cell) for r in done],
                        "columns": self.columns, "maps": str(Path(png).with_suffix(".npy").resolve())}
        # one set: the sheet, its maps and the sidecar are all new, or all as before (a kill, a full disk)
        return write_set([(png, png_bytes(img)), (Path(png).with_suffix(".npy"), npy_bytes(stack)),
                          (Path(png).with_suffix(".json"), json_bytes(rec))], anchor=png)
