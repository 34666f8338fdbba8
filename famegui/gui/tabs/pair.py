"""The Pair tab (face verification): FAME e+ / e- of one side of the pair, and the pair's scores.

A map is shown only while it belongs to what the controls and the images say: a change of
pair, side or sign clears it (and its caption) until the new one arrives. The decision
reads as a sentence: "same person (distance 0.27 < 0.6)".
"""
from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QLabel,
    QRadioButton,
    QSplitter,
    QVBoxLayout,
)

from ...core.render import to_uint8
from ...methods import get_method
from ...session import MapResult
from ...targets import Target
from ..canvas import ImageCanvas
from ..files import demo_paths
from ..messages import person_of
from ..target_controls import KindChoice
from .base import Tab

PAIR_KINDS = ("similar", "dissimilar")  # the built-in kinds of this view (its choices: every verification kind's)


def decision_sentence(scores, rule) -> str:
    """The decision as a sentence: "same person (distance 0.27 < 0.6)"; ``rule``: the model's DecisionRule
    (None: the model has none)."""
    if rule is None or scores.same is None:
        return "no decision: this model has no decision threshold"
    value = scores.distance if rule.metric == "distance" else scores.cosine
    below = value < rule.threshold
    op = "<" if below else "\u2265"
    verdict = "same person" if scores.same else "different people"
    return f"{verdict} ({rule.metric} {value:.2f} {op} {rule.threshold:.2f})"


class PairTab(Tab):
    """Probe, reference and an optional third photo; the map of the explained side is drawn on it."""

    title = "Pair"

    def __init__(self, ctx, load_image, unload_image=None) -> None:
        super().__init__(ctx)
        self.load_image = load_image  # load_image(slot, path): how the demo pairs are opened
        self.unload_image = unload_image  # unload_image(slot): the impostor demo has no third photo
        self.result: MapResult | None = None
        self._inputs: tuple = ()  # the prepared inputs the shown result was computed on
        self._job = None  # the newest map job
        self._build()

    def _build(self) -> None:
        self.probe_canvas = ImageCanvas("probe", colorbar=True)
        self.ref_canvas = ImageCanvas("reference", colorbar=True)
        self.third_canvas = ImageCanvas("third (optional)", colorbar=True)
        self.canvases = {"probe": self.probe_canvas, "reference": self.ref_canvas, "third": self.third_canvas}
        split = QSplitter(Qt.Horizontal)
        for c in self.canvases.values():
            split.addWidget(c)
        self.third_canvas.hide()
        # e+, e- and any other verification kind's choice (famegui.targets.GuiChoice)
        self.kinds = KindChoice("verification", self.request)
        self.sign_plus, self.sign_minus = self.kinds.buttons["similar"], self.kinds.buttons["dissimilar"]
        self.side_probe = QRadioButton("explain probe")
        self.side_ref = QRadioButton("explain other side")
        self.side_probe.setChecked(True)
        self._sides = QButtonGroup(self)
        for b in (self.side_probe, self.side_ref):
            self._sides.addButton(b)
            b.toggled.connect(lambda on: on and self.request())
        self.compare_with = QComboBox()
        self.compare_with.addItems(["reference", "third"])
        self.compare_with.currentTextChanged.connect(lambda _t: self.request())
        self.demo_combo = QComboBox()
        self.demo_combo.addItems(["demo: genuine pair", "demo: impostor pair"])
        self.demo_combo.setPlaceholderText("your photos")  # shown while the photos are not a demo pair
        self.demo_combo.activated.connect(self.load_demo_pair)
        self.scores = QLabel("")
        self.scores.setObjectName("pair_scores")
        self.scores.setWordWrap(True)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.show_xt = QCheckBox("show x_T")
        self.show_xt.setToolTip("FAME's counterfactual: the probe as FAME changed it to suppress the target "
                                "(the explained score before and after is in the line below)")
        self.show_xt.setEnabled(False)
        self.show_xt.toggled.connect(lambda _on: self.redraw())
        lay = QVBoxLayout(self)
        lay.addWidget(split, 1)
        grid = QGridLayout()  # two short rows (more with a plug-in's kinds): the controls fit a narrow window
        grid.addWidget(self.kinds, 0, 0, 2, 1)
        grid.addWidget(self.side_probe, 0, 1)
        grid.addWidget(self.side_ref, 1, 1)
        grid.addWidget(QLabel("compare with"), 0, 2)
        grid.addWidget(self.compare_with, 0, 3)
        grid.addWidget(QLabel("demo"), 1, 2)
        grid.addWidget(self.demo_combo, 1, 3)
        grid.addWidget(self.show_xt, 0, 4)
        grid.setColumnStretch(5, 1)
        lay.addLayout(grid)
        lay.addWidget(self.scores)
        lay.addWidget(self.info)

    # ------------------------------------------------------------------ tab protocol
    def on_model_loaded(self, model) -> None:
        self.result = None
        self.ctx.enable_tab(self, model.task == "embedding")

    def on_inputs_changed(self) -> None:
        self.third_canvas.setVisible("third" in self.session.inputs)
        self._follow_demo()
        if self.result is not None and not self.still_valid(self.result, self._inputs):
            self.clear_result("")  # its photos changed: the map and its caption are history
        self.scores.setText("")
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
        return Target(self.kinds.kind())

    def request(self) -> None:
        """The pair's scores and the chosen FAME map (from the cache, else a background job)."""
        model = self.ctx.model
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
        self.clear_result(f"computing FAME {target.label()} for the {slot}...")

        def work(job):
            return self.session.explain("fame", target, params, slot=slot, other=other, progress=job.progress,
                                        cancel=job.cancelled)

        def progress(fraction, payload):
            if payload is not None and self._job is job:
                self._draw_images(partial=(slot, payload, signed))
                self.info.setText(f"computing FAME {target.label()} for the {slot}... {100 * fraction:.0f}%")

        def done(res):
            if self._job is job:
                self.show_result(res)

        def ended(what):
            if self._job is job and self.result is None:
                self.clear_result(f"FAME {target.label()} for the {slot}: {what}.")

        job = self._job = self.ctx.submit(self.ctx.compute, work, f"FAME {target.label()} ({slot})", done=done,
                                          progress=progress, cancelled=lambda: ended("cancelled"),
                                          failed=lambda _m: ended("failed"))

    def clear_result(self, info: str) -> None:
        """No map shown (another one is on its way, or the photos changed); ``info`` says why."""
        self.result, self._inputs = None, ()
        self._draw_images()
        self.info.setText(info)

    def request_scores(self) -> None:
        """Cosine, distance and decision of the probe against each other photo (in the background)."""
        from ...models.thresholds import decision_rule

        def scores(_job):
            others = [o for o in ("reference", "third") if o in self.session.inputs]
            try:
                rule = decision_rule(self.session.io_model)
            except ValueError:  # an embedder without a threshold
                rule = None
            return [(o, self.session.pair_scores("probe", o), rule) for o in others]

        self.ctx.submit(self.ctx.io, scores, "similarity", done=self._show_scores)

    def _show_scores(self, rows) -> None:
        self.scores.setText("<br>".join(
            f"probe vs {o}: <b>{html.escape(decision_sentence(s, rule))}</b>; "
            f"cosine {s.cosine:.4f}, distance {s.distance:.4f}" for o, s, rule in rows))

    # ------------------------------------------------------------------ showing maps
    def show_result(self, res: MapResult) -> None:
        self.result, self._inputs = res, self.inputs_of(res)
        self._draw_images()
        text = (f"{get_method(res.method).label} {res.target.label()} for the {res.slot} (against the "
                f"{res.other}), {res.seconds:.2f} s.")
        if res.scores:
            text += (f" FAME's x_T takes the {res.scores['score']} from {res.scores['before']:.4f} to "
                     f"{res.scores['after']:.4f}.")
        self.info.setText(text)
        self.show_xt.setEnabled(res.counterfactual is not None)
        self.ctx.announce(res)

    def open_result(self, res: MapResult) -> None:
        """A pair map computed elsewhere (the comparison), shown here large; the controls follow it
        without starting a computation of their own."""
        if not self.kinds.offers(res.target.kind):
            return
        self.kinds.set_kind(res.target.kind)  # no recompute: the controls only follow the shown map
        for button, on in ((self.side_probe, res.slot == "probe"), (self.side_ref, res.slot != "probe")):
            button.blockSignals(True)
            button.setChecked(on)
            button.blockSignals(False)
        other = res.other if res.slot == "probe" else res.slot
        self.compare_with.blockSignals(True)
        self.compare_with.setCurrentText("third" if other == "third" else "reference")
        self.compare_with.blockSignals(False)
        self.ctx.show_tab(self, quietly=True)  # the Pair view would otherwise start its own FAME job
        self._job = None  # a map of the Pair view's own still on its way is not what is shown now
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
            elif partial is None and res is not None and res.slot == slot and self._xt_shown(res):
                canvas.set_image(to_uint8(res.counterfactual))
                canvas.set_colorbar(None)
                canvas.set_note(None)
            elif partial is None and res is not None and res.slot == slot:
                self.draw_map(canvas, slot, res.map, res.signed, res)
            else:
                canvas.set_image(to_uint8(self.session.input_rgb(slot)))
                canvas.set_colorbar(None)
                canvas.set_note(None)
            shown = res is not None and res.slot == slot and partial is None
            who = person_of(self.session.images[slot].path) if slot in self.session.images else None
            canvas.set_title(slot + (f" ({who})" if who else "")
                             + (f": {get_method(res.method).label} {res.target.label()}" if shown else "")
                             + (" - x_T, FAME's changed image" if shown and self._xt_shown(res) else ""))

    def _xt_shown(self, res: MapResult) -> bool:
        return self.show_xt.isChecked() and res.counterfactual is not None

    def load_demo_pair(self, index: int) -> None:
        """The demo's genuine (0) or impostor (1) pair as probe and reference. The genuine demo brings its
        non-mate as the third photo (a triplet); the impostor demo's reference is that non-mate, so it has no
        third (it would repeat the reference as the triplet's non-mate)."""
        probe, genuine, impostor = demo_paths()
        self.load_image("probe", probe)
        self.load_image("reference", genuine if index == 0 else impostor)
        if index == 0:
            self.load_image("third", impostor)
        elif self.unload_image is not None and "third" in self.session.images:
            self.unload_image("third")

    def _follow_demo(self) -> None:
        """The demo box names the demo pair the photos are, else shows "your photos"."""
        probe, genuine, impostor = (Path(p).resolve() for p in demo_paths())
        images = self.session.images
        now = tuple(Path(images[s].path).resolve() if s in images else None for s in ("probe", "reference"))
        index = {(probe, genuine): 0, (probe, impostor): 1}.get(now, -1)
        self.demo_combo.setCurrentIndex(index)

    def aim(self, minus: bool) -> None:
        """Explain the probe against the reference, e- when ``minus``, else e+ (what a protocol run computed
        for an item); the controls are set without a computation of their own."""
        for button, on in ((self.sign_minus, minus), (self.sign_plus, not minus), (self.side_probe, True),
                           (self.side_ref, False)):
            button.blockSignals(True)
            button.setChecked(on)
            button.blockSignals(False)
        self.compare_with.blockSignals(True)
        self.compare_with.setCurrentText("reference")
        self.compare_with.blockSignals(False)
