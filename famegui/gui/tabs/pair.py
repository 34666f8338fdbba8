"""The Pair tab (face verification): FAME e+ / e- of one side of the pair, and the pair's scores."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QComboBox, QHBoxLayout, QLabel, QRadioButton, QSplitter, QVBoxLayout

from ...core.render import to_uint8
from ...methods import get_method
from ...session import MapResult
from ...targets import Target
from ..canvas import ImageCanvas
from ..files import demo_paths
from .base import Tab

PAIR_KINDS = ("similar", "dissimilar")


class PairTab(Tab):
    """Probe, reference and an optional third photo; the map of the explained side is drawn on it."""

    title = "Pair"

    def __init__(self, ctx, load_image) -> None:
        super().__init__(ctx)
        self.load_image = load_image  # load_image(slot, path): how the demo pairs are opened
        self.result: MapResult | None = None
        self._build()

    def _build(self) -> None:
        self.probe_canvas = ImageCanvas("probe")
        self.ref_canvas = ImageCanvas("reference")
        self.third_canvas = ImageCanvas("third (optional)")
        self.canvases = {"probe": self.probe_canvas, "reference": self.ref_canvas, "third": self.third_canvas}
        split = QSplitter(Qt.Horizontal)
        for c in self.canvases.values():
            split.addWidget(c)
        self.third_canvas.hide()
        self.sign_plus = QRadioButton("e+ (what makes them similar)")
        self.sign_minus = QRadioButton("e- (what makes them different)")
        self.sign_plus.setChecked(True)
        self.side_probe = QRadioButton("explain probe")
        self.side_ref = QRadioButton("explain other side")
        self.side_probe.setChecked(True)
        self._groups = (QButtonGroup(self), QButtonGroup(self))
        for group, buttons in zip(self._groups, ((self.sign_plus, self.sign_minus), (self.side_probe, self.side_ref))):
            for b in buttons:
                group.addButton(b)
                b.toggled.connect(lambda on: on and self.request())
        self.compare_with = QComboBox()
        self.compare_with.addItems(["reference", "third"])
        self.compare_with.currentTextChanged.connect(lambda _t: self.request())
        self.demo_combo = QComboBox()
        self.demo_combo.addItems(["demo: genuine pair", "demo: impostor pair"])
        self.demo_combo.activated.connect(self.load_demo_pair)
        self.scores = QLabel("")
        self.scores.setObjectName("pair_scores")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(split, 1)
        row = QHBoxLayout()
        for w in (self.sign_plus, self.sign_minus, self.side_probe, self.side_ref, QLabel("compare with"),
                  self.compare_with, self.demo_combo):
            row.addWidget(w)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(self.scores)
        lay.addWidget(self.info)

    # ------------------------------------------------------------------ tab protocol
    def on_model_loaded(self, model) -> None:
        self.result = None
        self.ctx.enable_tab(self, model.task == "embedding")

    def on_inputs_changed(self) -> None:
        self.third_canvas.setVisible("third" in self.session.inputs)
        self._draw_images()
        if self.ctx.is_current(self):
            self.request()

    def on_shown(self) -> None:
        self.request()  # the pair view computes its map when it is looked at

    def on_settings_changed(self) -> None:
        self.redraw()
        if self.ctx.is_current(self):
            self.request()

    def current_result(self) -> MapResult | None:
        return self.result

    # ------------------------------------------------------------------ requests
    def slots(self) -> tuple[str, str]:
        """(explained slot, other slot) as the controls say; "third" only when a third photo is loaded."""
        other = "third" if self.compare_with.currentText() == "third" and "third" in self.session.inputs \
            else "reference"
        return ("probe", other) if self.side_probe.isChecked() else (other, "probe")

    def target(self) -> Target:
        return Target("similar" if self.sign_plus.isChecked() else "dissimilar")

    def request(self) -> None:
        """The pair's scores and the chosen FAME map (from the cache, else a background job)."""
        model = self.session.model
        if model is None or model.task != "embedding":
            return
        slot, other = self.slots()
        if slot not in self.session.inputs or other not in self.session.inputs:
            return
        target, params = self.target(), self.ctx.current_params()
        self.request_scores()
        hit = self.session.cached("fame", target, params, slot, other)
        if hit is not None:
            self.ctx.cancel_jobs()
            self.show_result(hit)
            return
        signed = get_method("fame").signed(target.task, params)

        def work(job):
            return self.session.explain("fame", target, params, slot=slot, other=other, progress=job.progress,
                                        cancel=job.cancelled)

        def progress(fraction, payload):
            if payload is not None:
                self._draw_images(partial=(slot, payload, signed))
                self.info.setText(f"computing {target.label()} for the {slot}... {100 * fraction:.0f}%")

        self.ctx.submit(self.ctx.compute, work, f"FAME {target.label()} ({slot})", done=self.show_result,
                        progress=progress)

    def request_scores(self) -> None:
        """Cosine, distance and decision of the probe against each other photo (in the background)."""
        def scores(_job):
            others = [o for o in ("reference", "third") if o in self.session.inputs]
            return [(o, self.session.pair_scores("probe", o)) for o in others]

        self.ctx.submit(self.ctx.io, scores, "similarity", done=self._show_scores)

    def _show_scores(self, rows) -> None:
        self.scores.setText("<br>".join(
            f"probe vs {o}: cosine <b>{s.cosine:.4f}</b>   distance <b>{s.distance:.4f}</b>   "
            f"rule: {s.rule}   decision: <b>{s.decision}</b>" for o, s in rows))

    # ------------------------------------------------------------------ showing maps
    def show_result(self, res: MapResult) -> None:
        self.result = res
        self._draw_images()
        note = ""
        if res.info.get("empty"):
            note = (" The map is empty: the loss was already below the early-stop epsilon at the start "
                    "(e.g. e+ of an impostor pair). Lower or clear epsilon.")
        self.info.setText(f"{get_method(res.method).label} {res.target.label()} for the {res.slot} (against the "
                          f"{res.other}), {res.seconds:.2f} s." + note)
        self.ctx.announce(res)

    def open_result(self, res: MapResult) -> None:
        """A pair map computed elsewhere (the comparison), shown here large; the controls follow it
        without starting a computation of their own."""
        if res.target.kind not in PAIR_KINDS:
            return
        states = ((self.sign_plus, res.target.kind == "similar"), (self.sign_minus, res.target.kind != "similar"),
                  (self.side_probe, res.slot == "probe"), (self.side_ref, res.slot != "probe"))
        for button, on in states:  # no recompute: the controls only follow the shown map
            button.blockSignals(True)
            button.setChecked(on)
            button.blockSignals(False)
        other = res.other if res.slot == "probe" else res.slot
        self.compare_with.blockSignals(True)
        self.compare_with.setCurrentText("third" if other == "third" else "reference")
        self.compare_with.blockSignals(False)
        self.ctx.show_tab(self, quietly=True)  # the Pair view would otherwise start its own FAME job
        self.show_result(res)

    def redraw(self) -> None:
        if self.result is not None:
            self._draw_images()

    def _draw_images(self, partial=None) -> None:
        """Every loaded photo; the explained one with its map (``partial``: (slot, map, signed) in progress)."""
        res = self.result
        for slot, canvas in self.canvases.items():
            if slot not in self.session.inputs:
                canvas.set_image(None)
                continue
            if partial is not None and partial[0] == slot:
                self.draw_map(canvas, slot, partial[1], partial[2])
            elif partial is None and res is not None and res.slot == slot:
                self.draw_map(canvas, slot, res.map, res.signed)
            else:
                canvas.set_image(to_uint8(self.session.input_rgb(slot)))
            shown = res is not None and res.slot == slot and partial is None
            canvas.set_title(slot + (f": {get_method(res.method).label} {res.target.label()}" if shown else ""))

    def load_demo_pair(self, index: int) -> None:
        """The demo's genuine (0) or impostor (1) pair as probe and reference."""
        probe, genuine, impostor = demo_paths()
        self.load_image("probe", probe)
        self.load_image("reference", genuine if index == 0 else impostor)
