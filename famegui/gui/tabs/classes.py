"""The Classes tab (classifiers): the probe's top-5 classes; click one to explain it with FAME.

What is explained for the clicked class is the chosen classification kind (its class logit, or a registered
kind's choice, :class:`famegui.targets.GuiChoice`); the choice is shown when there is more than one. A face
(embedding) model has no classes: in the list's place the tab says so, how to make one a classifier (an
identification gallery: a folder, or the sample photos) and where its own explanations are (the Pair tab)."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...methods import get_method
from ...paths import resource_path
from ...session import MapResult
from ...targets import Target
from ..canvas import ImageCanvas
from ..target_controls import KindChoice
from .base import Tab

TOP5 = "Top-5 classes of the probe image; click one to explain it."
NO_CLASSES = (
    "<b>{name} has no classes to list.</b> It is a face model: it compares two faces (an embedding), it does "
    "not name them.<br><br>To explain an identity here, make it a classifier over an <b>identification "
    "gallery</b>: a folder with one sub-folder of photos per person (<b>Identification gallery...</b> below), "
    "or the sample photos (the button below).<br><br>To explain why two faces match or differ (e+ / e-), use the "
    "<a href=\"Pair\">Pair</a> tab.")


class ClassesTab(Tab):
    """Top-5 list, the map of the chosen class, and the identification gallery."""

    title = "Classes"

    def __init__(self, ctx, model_loaded: Callable) -> None:
        super().__init__(ctx)
        self.model_loaded = model_loaded  # model_loaded(model): how a gallery model becomes the app's model
        self.result: MapResult | None = None
        self._job = None  # the newest class-map job
        self.rows: list = []  # the top-5 shown: (class index, name, score)
        self.class_index: int | None = None  # the class asked for last
        self.canvas = ImageCanvas("class explanation", colorbar=True)
        self.class_list = QListWidget()
        self.class_list.setMaximumWidth(320)
        self.class_list.setMinimumWidth(140)
        self.class_list.itemClicked.connect(self._on_clicked)
        self.gallery_button = QPushButton("Identification gallery...")
        self.gallery_button.setToolTip("identification over a gallery folder (one sub-folder per identity)")
        self.gallery_button.clicked.connect(self._choose_gallery)
        self.info = QLabel(TOP5)
        self.info.setWordWrap(True)
        self.no_classes = QLabel()  # in the list's place when the model has no classes (a face model)
        self.no_classes.setWordWrap(True)
        self.no_classes.setTextFormat(Qt.RichText)
        self.no_classes.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.no_classes.linkActivated.connect(self._show_tab_named)
        self.samples_button = QPushButton("Use the sample photos as a gallery")
        self.samples_button.setToolTip(f"identification over the bundled photos ({resource_path('faces')})")
        self.samples_button.clicked.connect(lambda: self.use_gallery(str(resource_path("faces"))))
        hint = QWidget()
        hv = QVBoxLayout(hint)
        hv.setContentsMargins(0, 0, 0, 0)
        hv.addWidget(self.no_classes)
        hv.addWidget(self.samples_button)
        hv.addStretch(1)
        self.list_stack = QStackedWidget()  # the class list, or why there is none
        self.list_stack.addWidget(self.class_list)
        self.list_stack.addWidget(hint)
        self.list_stack.setMaximumWidth(320)
        self.kinds = KindChoice("classification", self._kind_changed)  # what is explained for the class
        self.kinds.setVisible(len(self.kinds.buttons) > 1)
        side = QVBoxLayout()
        side.addWidget(self.info)
        side.addWidget(self.kinds)
        side.addWidget(self.list_stack, 1)
        side.addWidget(self.gallery_button)
        lay = QHBoxLayout(self)
        lay.addLayout(side)
        lay.addWidget(self.canvas, 1)

    # ------------------------------------------------------------------ tab protocol
    def on_model_loaded(self, model) -> None:
        self.result = None
        self.rows = []
        self.class_index = None
        self.class_list.clear()  # the old model's classes: a click would explain them on this one
        self.canvas.set_image(None)
        self.canvas.set_colorbar(None)
        self.canvas.set_title("class explanation")
        has_classes = model is None or model.task == "classification"
        self.no_classes.setText("" if has_classes else NO_CLASSES.format(name=model.name))
        self.list_stack.setCurrentIndex(0 if has_classes else 1)
        self.info.setText(TOP5)
        self.info.setVisible(has_classes)  # the hint says it all

    def _show_tab_named(self, title: str) -> None:
        """A link of the hint: the window's tab ``title`` to the front."""
        tabs = self.ctx.tabs
        found = [tabs.widget(i) for i in range(tabs.count()) if tabs.tabText(i) == title]
        if found:
            self.ctx.show_tab(found[0])

    def on_inputs_changed(self) -> None:
        model = self.ctx.model
        if model is not None and model.task == "classification" and "probe" in self.session.inputs:
            self.request_classes()

    def current_result(self) -> MapResult | None:
        return self.result

    def redraw(self) -> None:
        if self.result is not None:
            self.draw_map(self.canvas, "probe", self.result.map, self.result.signed, self.result)

    # ------------------------------------------------------------------ requests
    def request_classes(self) -> None:
        """The top-5 list of the probe (in the background)."""
        def work(_job):
            return self.session.top_classes(5)

        def done(rows):
            if rows == self.rows:
                return  # the same list (a repeated request): keep its items and the selection
            self.rows = rows
            self.class_list.clear()
            for idx, name, score in rows:
                item = QListWidgetItem(f"{name}  ({score:.3f})")
                item.setData(Qt.UserRole, idx)
                self.class_list.addItem(item)

        self.ctx.submit(self.ctx.io, work, "top-5 classes", done=done)

    def _on_clicked(self, item: QListWidgetItem) -> None:
        self.request_class(int(item.data(Qt.UserRole)))

    def _kind_changed(self) -> None:
        if self.class_index is not None:
            self.request_class(self.class_index)  # the class shown, now with the kind picked

    def request_class(self, class_index: int) -> None:
        """FAME for one class, of the chosen kind: from the cache, else a background job."""
        self.class_index = class_index
        target = Target(self.kinds.kind(), class_index=class_index)
        params = self.ctx.current_params()
        hit = self.session.cached("fame", target, params)
        if hit is not None:
            self.show_result(hit)
            return
        signed = get_method("fame").signed(target.task, params)
        self.result = None
        what = target.label()  # "class 3"
        self.canvas.set_title(f"FAME {what}: computing...")

        def work(job):
            return self.session.explain("fame", target, params, progress=job.progress, cancel=job.cancelled)

        def progress(fraction, payload):
            if payload is not None and self._job is job:
                self.draw_map(self.canvas, "probe", payload, signed)
                self.canvas.set_title(f"FAME {what}: {100 * fraction:.0f}%")

        def ended(why):
            if self._job is job and self.result is None:
                self.canvas.set_image(None)
                self.canvas.set_title(f"FAME {what}: {why}")

        job = self._job = self.ctx.submit(self.ctx.compute, work, f"FAME {what}", done=self.show_result,
                                          progress=progress, cancelled=lambda: ended("cancelled"),
                                          failed=lambda _m: ended("failed"))

    def show_result(self, res: MapResult) -> None:
        self.result = res
        names = self.ctx.model.class_names or []
        k = res.target.class_index
        title = f"{get_method(res.method).label}: {names[k] if k is not None and k < len(names) else k}"
        if len(self.kinds.buttons) > 1 and self.kinds.offers(res.target.kind):  # which kind, when there is a choice
            title += f" ({self.kinds.label(res.target.kind)})"
        self.canvas.set_title(title)
        self.draw_map(self.canvas, "probe", res.map, res.signed, res)
        self.ctx.announce(res)

    def open_result(self, res: MapResult) -> None:
        """A class map computed elsewhere (the comparison), shown here large (the kind choice follows it)."""
        if self.kinds.offers(res.target.kind):
            self.kinds.set_kind(res.target.kind)
        self.class_index = res.target.class_index
        self.show_result(res)
        self.ctx.show_tab(self, quietly=True)

    # ------------------------------------------------------------------ identification
    def _choose_gallery(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Gallery: one sub-folder per identity")
        if folder:
            self.use_gallery(folder)

    def use_gallery(self, folder: str) -> None:
        """Identification over a gallery (one sub-folder per identity), built in the background."""
        from ...models.identification import build_identification_model

        base = self.ctx.model

        def work(_job):
            model = build_identification_model(base, folder)
            self.session.set_model(model, model.source, self.session.weights)
            return model

        def done(model):
            self.model_loaded(model)
            skipped = model.extras.get("skipped") or []
            self.info.setText(f"identification over {len(model.class_names)} identities"
                              + (f"; skipped {len(skipped)} photos: {'; '.join(map(str, skipped[:3]))}"
                                 if skipped else ""))
            self.ctx.show_tab(self)

        self.ctx.submit(self.ctx.io, work, "building the identification gallery", done=done, any_model=True)
