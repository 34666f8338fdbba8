"""The Feature map tab: a layer's feature map; click a cell to explain it with FAME."""
from __future__ import annotations

import math

import cv2
import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout

from ...core.render import overlay
from ...methods import get_method
from ...models.receptive import cached_receptive_field, mass_inside
from ...session import MapResult
from ...targets import Target, task_of
from ..canvas import FOOTPRINT_COLOR, RF_COLOR, SELECT_COLOR, ImageCanvas
from ..display import bar_colors
from .base import Tab


def is_stale(res: MapResult, params: dict) -> bool:
    """Whether ``res`` was computed with other settings than ``params`` would give now."""
    return get_method(res.method).resolve(params, task_of(res.target)) != res.params


LOCALITY_CELLS = 4  # cells per layer of the window's locality curve (the command line measures more)


class FeatureMapTab(Tab):
    """Feature map of the chosen layer (left) and the FAME map of the clicked cell (right)."""

    title = "Feature map"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.layer: str | None = None
        self.cell: tuple[int, int] | None = None
        self.hover_cell: tuple[int, int] | None = None
        self.result: MapResult | None = None
        self.fmap: np.ndarray | None = None  # sum_c |a| of the shown layer
        self.geometry = None  # (footprint, receptive field) boxes of the selected cell
        self._job = None  # the newest cell job, while it is the request on screen
        self._probe = None  # the probe input the selected cell belongs to
        split = QSplitter(Qt.Horizontal)
        self.fmap_canvas = ImageCanvas("feature map", colorbar=True)
        self.fame_canvas = ImageCanvas("FAME", colorbar=True)
        split.addWidget(self.fmap_canvas)
        split.addWidget(self.fame_canvas)
        self.cell_info = QLabel("Pick a layer, then click a cell of its feature map.")
        self.cell_info.setObjectName("cell_info")
        self.cell_info.setWordWrap(True)
        self.recompute_button = QPushButton("Recompute with current settings")
        self.recompute_button.hide()
        self.recompute_button.clicked.connect(self.recompute)
        self.locality_button = QPushButton("Locality over layers")
        self.locality_button.setToolTip(
            f"FAME for {LOCALITY_CELLS} cells of each stage (and of the layer on screen) of the probe image: how "
            "much of each map lies under its cell, against depth; the layer on screen is marked")
        self.locality_button.clicked.connect(self.show_locality)
        self.locality_result = None  # the last measurement (tests and scripts read it)
        self.locality_dialog: QDialog | None = None
        lay = QVBoxLayout(self)
        lay.addWidget(split, 1)
        row = QHBoxLayout()
        row.addWidget(self.cell_info, 1)
        row.addWidget(self.recompute_button)
        row.addWidget(self.locality_button)
        lay.addLayout(row)
        self.fmap_canvas.hovered.connect(self._on_hover)
        self.fmap_canvas.clicked.connect(self._on_click)

    # ------------------------------------------------------------------ tab protocol
    def on_model_loaded(self, model) -> None:
        self.result = None
        self.layer = None
        if not model.spatial_layers():
            self.cell_info.setText(f"{model.name} exposes no feature-map layers (e.g. TorchScript); "
                                   "use the Classes or Pair tab.")

    def on_inputs_changed(self) -> None:
        probe = self.session.inputs.get("probe")
        if probe is not self._probe:  # the cell's map (done, partial or cancelled) was of the old photo
            self._probe = probe
            if self.cell is not None:
                self._forget_cell()
                self.cell_info.setText(f"Click a cell of the feature map of {self.layer} to explain it.")
        self.show_feature_map()

    def current_result(self) -> MapResult | None:
        return self.result

    # ------------------------------------------------------------------ layer and feature map
    def select_layer(self, name: str) -> bool:
        """Show the feature map of layer ``name``; False (and a note) if it is not a feature map."""
        info = self.ctx.model.layer_info(name) if self.ctx.model else None
        if info is None or not info.is_spatial:
            self.cell_info.setText(f"{name} has output {info.shape if info else '?'}: not a feature map")
            return False
        self.layer = name
        self.fmap = None  # the old layer's values, of other cells: a hover waits for the new layer's
        self._forget_cell()
        self.hover_cell = None
        self.fmap_canvas.set_hover_rect(None)  # the old layer's cell size
        self.cell_info.setText(f"Click a cell of the feature map of {name} to explain it.")
        self.show_feature_map()
        return True

    def _forget_cell(self) -> None:
        """No selected cell: its job (if any) is cancelled and its map, boxes and caption go."""
        if self._job is not None:
            self._job.cancel()  # its progress and end are dropped: it is no longer the request on screen
            self._job = None
        self.cell = None
        self.result = None
        self.geometry = None
        self.fame_canvas.set_image(None)
        self.fame_canvas.set_note(None)
        self.fame_canvas.set_colorbar(None)
        self.fame_canvas.set_title("FAME")
        self.recompute_button.hide()
        for b in ("footprint", "rf"):
            self.fame_canvas.set_box(b, None)
        self.fmap_canvas.set_box("selected", None)

    def show_feature_map(self) -> None:
        """Compute (in the background) and draw the feature map of the current layer."""
        if self.layer is None or "probe" not in self.session.inputs:
            return
        layer = self.layer

        def work(_job):
            return layer, self.session.feature_map(layer), self.session.input_rgb("probe")

        self.ctx.submit(self.ctx.io, work, f"feature map of {layer}", done=self._draw_feature_map)

    def _draw_feature_map(self, payload) -> None:
        layer, fmap, rgb = payload
        if layer != self.layer:
            return
        self.fmap = fmap
        h, w = rgb.shape[:2]
        fh, fw = fmap.shape
        norm = fmap / fmap.max() if fmap.max() > 0 else fmap
        up = cv2.resize(norm.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)  # no torch here
        self.fmap_canvas.set_image(overlay(rgb, up, 0.45, "inferno"))
        self.fmap_canvas.set_grid(fh, fw, (h, w))
        self.fmap_canvas.set_title(f"{layer}: sum_c |a| ({fh}x{fw} cells) - click a cell")
        self.fmap_canvas.set_colorbar(bar_colors("inferno"), 0.0, float(fmap.max()), "sum_c |a|")
        if self.cell is not None:
            self._mark_selected_cell()
        self.redraw()

    # ------------------------------------------------------------------ cells under the mouse
    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """The cell of the current layer under image point (x, y) of the feature-map view."""
        if self.layer is None or self.fmap_canvas.image_shape() is None:
            return None
        h, w = self.fmap_canvas.image_shape()
        _, fh, fw = self.ctx.model.layer_info(self.layer).shape
        r, c = int(y * fh / h), int(x * fw / w)
        if 0 <= r < fh and 0 <= c < fw:
            return r, c
        return None

    def _cell_rect(self, cell) -> tuple[float, float, float, float]:
        h, w = self.fmap_canvas.image_shape()
        _, fh, fw = self.ctx.model.layer_info(self.layer).shape
        r, c = cell
        return (c * w / fw, r * h / fh, (c + 1) * w / fw, (r + 1) * h / fh)

    def _on_hover(self, x: float, y: float) -> None:
        cell = None if math.isnan(x) else self.cell_at(x, y)
        self.hover_cell = cell
        if cell is None:
            self.fmap_canvas.set_hover_rect(None)
            return
        self.fmap_canvas.set_hover_rect(self._cell_rect(cell))
        value = float(self.fmap[cell]) if self.fmap is not None else float("nan")
        self.ctx.show_status(f"{self.layer} cell ({cell[0]},{cell[1]}): sum_c|a| = {value:.4g}")

    def _on_click(self, x: float, y: float) -> None:
        cell = self.cell_at(x, y)
        if cell is not None:
            self.request_cell(cell)

    def _mark_selected_cell(self) -> None:
        self.fmap_canvas.set_box("selected", self._cell_rect(self.cell), SELECT_COLOR)

    # ------------------------------------------------------------------ explaining a cell
    def request_cell(self, cell: tuple[int, int], layer: str | None = None) -> None:
        """Explain one cell: instant from the cache, else a background job (which supersedes older ones)."""
        layer = layer or self.layer
        if layer is None:
            return
        self.layer, self.cell = layer, tuple(cell)
        self._probe = self.session.inputs.get("probe")  # the photo this request explains
        self._mark_selected_cell()
        target = Target("cell", layer=layer, cell=self.cell)
        params = self.ctx.current_params()
        hit = self.session.cached("fame", target, params)
        if hit is not None and cached_receptive_field(self.ctx.model, layer, self.cell) is not None:
            self.ctx.cancel_jobs()
            self.show_result(hit)
            return
        self.fame_canvas.set_title(f"FAME {target.label()} - computing...")
        self.fame_canvas.set_image(None)  # the previous cell's map is not this cell's
        self.fame_canvas.set_note(None)
        self.cell_info.setText(f"computing cell {target.cell} of {layer}...")
        self.recompute_button.hide()
        self.geometry = None
        self._draw_boxes()
        signed = get_method("fame").signed(target.task, params)

        def work(job):
            fp, rf = self.session.cell_geometry(layer, target.cell)
            job.progress(0.0, ("geometry", fp, rf))
            return self.session.explain("fame", target, params, progress=job.progress, cancel=job.cancelled)

        def progress(fraction, payload):
            if self._job is not job:
                return  # a superseded request
            if isinstance(payload, tuple) and payload and payload[0] == "geometry":
                self.geometry = (payload[1], payload[2])
                self._draw_boxes()
            elif payload is not None:
                self.draw_map(self.fame_canvas, "probe", payload, signed)
                self.fame_canvas.set_title(f"FAME {target.label()} - {100 * fraction:.0f}%")
                self.cell_info.setText(f"computing... {100 * fraction:.0f}% "
                                       f"(mass inside footprint so far: {self._mass(payload):.1%})")

        def ended(what: str, message: str = "") -> None:
            if self._job is job and self.result is None:  # not when a newer request replaced it
                self.fame_canvas.set_image(None)
                self.fame_canvas.set_title(f"FAME {target.label()} - {what}")
                self.cell_info.setText(message or f"{what.capitalize()}. Click the cell again to compute it.")

        self.result = None
        job = self._job = self.ctx.submit(self.ctx.compute, work, f"FAME {target.label()}", done=self.show_result,
                                          progress=progress, cancelled=lambda: ended("cancelled"),
                                          failed=lambda m: ended("failed", m))

    # ------------------------------------------------------------------ locality over layers
    def show_locality(self) -> None:
        """Measure the locality curve of the probe image in the background and show it in a window of its own."""
        model, inp = self.ctx.model, self.session.inputs.get("probe")
        if model is None or inp is None or not model.spatial_layers():
            self.ctx.show_status("locality needs a model with feature maps and a probe image")
            return
        from ...evaluation.locality import default_layers

        depth = {info.name: i for i, info in enumerate(model.layers())}
        layers = sorted(set(default_layers(model)) | ({self.layer} if self.layer else set()),
                        key=lambda n: depth.get(n, 0))
        iterations = int(self.ctx.current_params().get("iterations") or 100)
        mark = self.layer

        def work(job):
            from ...evaluation.locality import locality

            return locality(model, [inp], layers, LOCALITY_CELLS, iterations,
                            progress=lambda f: job.progress(f), cancel=job.cancelled)

        self.ctx.submit(self.ctx.compute, work, f"locality over {len(layers)} layers",
                        done=lambda r: self._show_locality(r, mark))

    def _show_locality(self, result, mark: str | None) -> None:
        self.locality_result = result
        if self.locality_dialog is None:
            self.locality_dialog = QDialog(self)
            self.locality_dialog.setWindowTitle("Locality over layers")
            box = QVBoxLayout(self.locality_dialog)
            self.locality_canvas = ImageCanvas("locality", min_side=200)
            self.locality_text = QLabel()
            self.locality_text.setWordWrap(True)
            box.addWidget(self.locality_canvas, 1)
            box.addWidget(self.locality_text)
            self.locality_dialog.resize(640, 480)
        self.locality_canvas.set_image(result.figure(mark=mark))
        self.locality_canvas.set_title(f"{result.model}: {LOCALITY_CELLS} cells per layer, this image")
        inside = {r["layer"]: r["inside"]["mean"] for r in result.layers}
        self.locality_text.setText("Mass inside the cell's footprint: " + ", ".join(
            f"{'<b>' if n == mark else ''}{n} {v:.0%}{'</b>' if n == mark else ''}" for n, v in inside.items()
            if v is not None) + ". <i>famegui locality</i> measures more cells and images.")
        self.locality_dialog.show()
        self.locality_dialog.raise_()

    def recompute(self) -> None:
        """The selected cell again, with the current settings."""
        if self.cell is not None:
            self.request_cell(self.cell)

    def _mass(self, amap: np.ndarray) -> float:
        return mass_inside(amap, self.geometry[0]) if self.geometry else float("nan")

    def show_result(self, res: MapResult) -> None:
        """Show a cell's map (dropped when another cell was picked meanwhile)."""
        if res.target.layer != self.layer or res.target.cell != self.cell:
            return  # an old result arriving late
        self.result = res
        self.geometry = self.session.cell_geometry(res.target.layer, res.target.cell)
        self.redraw()
        self.ctx.announce(res)

    def _draw_boxes(self) -> None:
        geo = self.geometry
        show = self.ctx.display.boxes and geo is not None
        self.fame_canvas.set_box("footprint", geo[0].as_tuple() if show else None, FOOTPRINT_COLOR)
        self.fame_canvas.set_box("rf", geo[1].as_tuple() if show else None, RF_COLOR, dashed=True)

    def cell_boxes(self, res: MapResult) -> list | None:
        """The footprint and receptive-field boxes an export of cell map ``res`` draws (None: none)."""
        if res.target.kind != "cell" or not self.ctx.display.boxes:
            return None
        fp, rf = self.session.cell_geometry(res.target.layer, res.target.cell)
        return [(fp.as_tuple(), FOOTPRINT_COLOR), (rf.as_tuple(), RF_COLOR)]

    def redraw(self) -> None:
        res = self.result
        if res is None or "probe" not in self.session.inputs:
            return
        self.draw_map(self.fame_canvas, "probe", res.map, res.signed, res)
        self._draw_boxes()
        fp, rf = self.geometry
        stale = is_stale(res, self.ctx.current_params())
        info = res.info
        self.fame_canvas.set_title(f"FAME {res.target.label()}" + ("  (stale: settings changed)" if stale else ""))
        self.recompute_button.setVisible(stale)
        loss = (f"loss {info['initial_loss']:.4g} -> {info['final_loss']:.4g} in {info['iterations']} it; "
                if "initial_loss" in info else "")
        self.cell_info.setText(
            f"cell {res.target.cell} of {res.target.layer}: mass inside footprint "
            f"<b>{mass_inside(res.map, fp):.1%}</b> (footprint {fp.width:.0f}x{fp.height:.0f} px = "
            f"{fp.width * fp.height / res.map.size:.1%} of the input); receptive field "
            f"{rf.width:.0f}x{rf.height:.0f} px; {loss}{res.seconds:.2f} s")
