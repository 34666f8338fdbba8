"""The All cells tab: FAME for every cell of the layer as one batched job, as a sheet of tiles."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ...core.render import sheet, to_uint8
from ...session import MapResult
from ..canvas import ImageCanvas
from .base import Tab
from .feature_map import FeatureMapTab

GAP = 2
MAX_CELLS = 1024


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
        self.canvas = ImageCanvas("all cells")
        self.button = QPushButton("Compute all cells of the layer")
        self.button.clicked.connect(self.compute)
        self.info = QLabel("Every cell of the layer as one batched job; click a tile to enlarge it.")
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.button)
        row.addWidget(self.info, 1)
        lay.addLayout(row)
        lay.addWidget(self.canvas, 1)
        self.canvas.clicked.connect(self._on_click)

    def on_model_loaded(self, model) -> None:
        self.results = []

    def compute(self) -> None:
        """Every cell of the Feature map tab's layer, in the background; the sheet fills in as chunks finish."""
        layer = self.feature_map.layer
        if layer is None or "probe" not in self.session.inputs:
            self.ctx.show_error("load an image and pick a layer first")
            return
        params = self.ctx.current_params()
        _, fh, fw = self.session.model.layer_info(layer).shape
        if fh * fw > MAX_CELLS:
            self.ctx.show_error(f"{layer} has {fh * fw} cells; pick a deeper layer for the all-cells sheet")
            return
        self.layer, self.columns = layer, fw
        self.results = [None] * (fh * fw)
        self.ctx.show_tab(self)

        def work(job):
            return self.session.explain_cells(layer, params, progress=job.progress, cancel=job.cancelled)

        def progress(fraction, payload):
            if payload is not None:
                self.results = list(payload)
                self.redraw()
            self.info.setText(f"{layer}: {fh}x{fw} cells, {100 * fraction:.0f}% done")

        def done(results):
            self.results = list(results)
            self.redraw()
            secs = sum(r.seconds for r in results)
            self.info.setText(f"{layer}: {fh}x{fw} cells done ({secs:.1f} s of compute); click a tile")

        self.ctx.submit(self.ctx.compute, work, f"all cells of {layer}", done=done, progress=progress)

    def _tiles(self, rgb: np.ndarray) -> list[np.ndarray]:
        d = self.ctx.display
        gray = (to_uint8(rgb).mean(2, keepdims=True).repeat(3, 2) * 0.5).astype(np.uint8)
        return [d.draw(rgb, r.map, r.signed) if r is not None else gray for r in self.results]

    def redraw(self) -> None:
        if not self.results or "probe" not in self.session.inputs:
            return
        rgb = self.session.input_rgb("probe")
        self.tile_shape = rgb.shape[:2]
        self.canvas.set_image(sheet(self._tiles(rgb), self.columns, gap=GAP))
        self.canvas.set_title(f"all cells of {self.layer} (feature-map order)")

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
        from ...export import write_json, write_npy, write_png
        from ...report import explain_record

        done = [r for r in self.results if r is not None]
        if not done or len(done) != len(self.results):
            raise ValueError("compute all cells first")
        rgb = self.session.input_rgb("probe")
        d = self.ctx.display
        img = sheet([d.draw(rgb, r.map, r.signed) for r in done], self.columns, gap=GAP)
        stack = np.stack([r.map for r in done]).astype(np.float32)
        s = self.session
        rec = explain_record(s.model, s.weights, s.input("probe"), None, done[0].target, "fame", done[0].params)
        rec["sheet"] = {"layer": self.layer, "cells": [list(r.target.cell) for r in done],
                        "columns": self.columns, "maps": str(Path(png).with_suffix(".npy").resolve())}
        return [write_png(png, img), write_npy(Path(png).with_suffix(".npy"), stack),
                write_json(Path(png).with_suffix(".json"), rec)]
