"""What to explain: a target names one network output that an explanation is about.

A target *kind* ("cell", "class", "similar", "dissimilar", or one you register)
is the one place that says what that output is and how every family of methods
measures it (see :class:`TargetKind`):

- :meth:`TargetKind.loss`: the FAME loss to suppress (a callable ``x -> (B,)``);
- :meth:`TargetKind.cam_target`: the pytorch-grad-cam target on the model output;
- :meth:`TargetKind.probe_score`: the black-box score of masked inputs (RISE family);
- :meth:`TargetKind.explained_score`: the score faithfulness metrics follow.

A new kind is one subclass of :class:`TargetKind` passed to :func:`register_kind`;
the CLI, the Session, the methods and the metrics look it up by name. The kind also says
where a user asks for it, so that nothing else names the kinds:

- :attr:`TargetKind.cli` (:class:`CliFlag`): its flag of ``explain`` / ``sanity`` /
  ``faithfulness`` (``--cell LAYER:ROW,COL``), read by :meth:`TargetKind.from_cli`;
- :attr:`TargetKind.gui` (:class:`GuiChoice`): its choice in the window's view of its task;
- :attr:`TargetKind.run` (:class:`RunTarget`): its target name in protocol runs
  (``famegui run --target NAME``), an item's target by :meth:`TargetKind.from_item`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

LossFn = Callable[[torch.Tensor], torch.Tensor]
ScoreFn = Callable[[torch.Tensor], torch.Tensor]
TASKS = ("classification", "verification", "cell")


@dataclass(frozen=True)
class Target:
    """A thing to suppress: a feature-map cell, a class logit, or a pair's (dis)similarity."""

    kind: str
    layer: str | None = None
    cell: tuple[int, int] | None = None
    class_index: int | None = None

    def __post_init__(self) -> None:
        get_kind(self.kind).validate(self)

    @property
    def spec(self) -> TargetKind:
        """The kind's declaration (what the target means for every method family)."""
        return get_kind(self.kind)

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def needs_reference(self) -> bool:
        """True for targets about a pair (the other image is the reference)."""
        return self.spec.needs_reference

    @classmethod
    def parse_cell(cls, text: str) -> Target:
        """``LAYER:ROW,COL`` -> a cell target (the layer name may itself contain dots)."""
        layer, sep, rc = text.rpartition(":")
        try:
            r, c = (int(v) for v in rc.split(","))
        except ValueError:
            raise ValueError(f"--cell must look like LAYER:ROW,COL (e.g. layer4:3,3), got {text!r}") from None
        if not sep or not layer:
            raise ValueError(f"--cell must look like LAYER:ROW,COL (e.g. layer4:3,3), got {text!r}")
        return cls("cell", layer=layer, cell=(r, c))

    def label(self) -> str:
        return self.spec.label(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["cell"] is not None:
            d["cell"] = list(d["cell"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        """The target a sidecar (or any JSON) describes; ValueError (one line naming the field) when a field
        has the wrong type: ``kind`` and ``layer`` text, ``cell`` two whole numbers >= 0, ``class_index`` one."""
        if not isinstance(d, dict):
            raise ValueError(f"target must be an object with a 'kind', got {type(d).__name__}")
        kind = d.get("kind")
        if not isinstance(kind, str):
            raise ValueError(f"target.kind must be text (one of {', '.join(target_kinds())}), got {kind!r}")
        layer = d.get("layer")
        if layer is not None and not isinstance(layer, str):
            raise ValueError(f"target.layer must be text, got {layer!r}")
        cell = d.get("cell")
        if cell is not None:
            if not isinstance(cell, (list, tuple)) or len(cell) != 2:
                raise ValueError(f"target.cell must be [row, col], got {cell!r}")
            cell = tuple(whole_number(v, "target.cell") for v in cell)
        index = d.get("class_index")
        if index is not None:
            index = whole_number(index, "target.class_index")
        return cls(kind, layer, cell, index)


@dataclass(frozen=True)
class CliFlag:
    """How a kind is asked for on the command line (``explain``, ``sanity``, ``faithfulness``).

    A kind of its own input (not a pair) has a ``flag`` that takes a value (``--cell LAYER:ROW,COL``; ``dest``:
    the argparse name when the flag's is a Python keyword), checked before any model is loaded by
    :meth:`TargetKind.check_cli` and read by :meth:`TargetKind.from_cli`. A pair kind (``needs_reference``)
    is a ``choice`` of ``--target``, given with ``--reference IMG2``; ``in_both``: one of the maps of
    ``--target both`` (sanity, faithfulness: e+ and e-)."""

    flag: str | None = None
    metavar: str | None = None
    help: str | None = None
    dest: str | None = None
    choice: str | None = None
    in_both: bool = False

    @property
    def key(self) -> str:
        """The attribute of the parsed arguments that holds the flag's value."""
        return self.dest or (self.flag or "").lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class GuiChoice:
    """How a kind is offered in the window: one choice (``label``, ``tip`` its tooltip) in the view of its task.
    The Classes view builds a classification kind's target with the class the user clicked
    (``Target(kind, class_index=k)``); the Pair view a verification kind's against the other photo
    (``Target(kind)``)."""

    label: str
    tip: str = ""


@dataclass(frozen=True)
class RunTarget:
    """A kind's target in protocol runs: its ``name`` (``famegui run --target NAME``, the ``target`` column of
    the run's table, its maps' file names) and whether a run without ``--target`` has it (``default``). Runs
    of image lists take the classification kinds, runs of pairs and triplets the verification kinds."""

    name: str
    default: bool = False


class TargetKind:
    """The declaration of one kind of target. Subclasses set the class attributes and override the
    methods their task needs; a method family whose hook raises simply does not explain that kind."""

    name: str = ""
    task: str = "classification"  # which methods apply: those declaring this task
    needs_reference: bool = False  # a pair target: explained against a reference embedding
    model_task: str | None = None  # the model task it needs ("classification" / "embedding"), None = any
    cli: CliFlag | None = None  # its command-line flag (None: not asked for on the command line)
    gui: GuiChoice | None = None  # its choice in the window (None: not offered there)
    run: RunTarget | None = None  # its target in protocol runs (None: not run)
    loss_name: str = "FAME loss"  # what its FAME loss is, in words (the score before and after FAME's x_T)

    def validate(self, target: Target) -> None:
        """Raise ValueError when ``target`` lacks a field this kind needs."""

    def label(self, target: Target) -> str:
        return self.name

    def check_cli(self, text: str) -> None:
        """The value of the kind's flag, checked before any model is loaded (ValueError: what it must be)."""

    def from_cli(self, text: str | None, model: ModelWrapper, x: torch.Tensor) -> Target:
        """The target the flag's value ``text`` (None for a ``--target`` choice) asks for, on ``model``'s
        prepared input ``x`` (e.g. its top class); ValueError, one line, when it does not fit the model."""
        return Target(self.name)

    def from_item(self, model: ModelWrapper, label: str) -> Target:
        """The target of one protocol item: ``label`` is the item's (an image's class name or index; a pair's
        ``genuine`` / ``impostor``)."""
        return Target(self.name)

    def check_model(self, model: ModelWrapper) -> None:
        if self.model_task is not None and model.task != self.model_task:
            raise ValueError(f"{model.name} is a {model.task} model: {self.name} targets need a "
                             f"{self.model_task} model")

    def loss(self, model: ModelWrapper, targets: Sequence[Target], reference: torch.Tensor | None) -> LossFn:
        """The FAME loss of a batch (one target per element, all of this kind)."""
        raise ValueError(f"FAME does not explain {self.name} targets")

    def cam_target(self, model: ModelWrapper, target: Target, reference: torch.Tensor | None, params: dict):
        """A pytorch-grad-cam target (a callable on the model output)."""
        raise ValueError(f"CAM methods do not explain {self.name} targets")

    def probe_score(self, model: ModelWrapper, target: Target, reference: torch.Tensor | None) -> ScoreFn:
        """Images (B,3,H,W) in [0,1] -> (B,) scores, for black-box methods (RISE family)."""
        raise ValueError(f"this method does not explain {self.name} targets")

    def explained_score(self, model: ModelWrapper, target: Target, reference: torch.Tensor | None
                        ) -> tuple[ScoreFn, str]:
        """(images -> the output this target's map explains, its name), for faithfulness metrics."""
        raise ValueError(f"no faithfulness score for target {self.name!r}")


_KINDS: dict[str, TargetKind] = {}


def register_kind(kind: TargetKind) -> TargetKind:
    """Make a target kind known everywhere (CLI, Session, methods, metrics, the window, protocol runs)."""
    if not kind.name or kind.task not in TASKS:
        raise ValueError(f"a target kind needs a name and one of the tasks {TASKS}")
    _check_declarations(kind)
    _KINDS[kind.name] = kind
    return kind


def _check_declarations(kind: TargetKind) -> None:
    """A kind's flag, ``--target`` word and run target name are its own (ValueError naming the other kind)."""
    cli = kind.cli
    if cli is not None and (cli.flag is None) == (cli.choice is None):
        raise ValueError(f"target kind {kind.name!r}: its CliFlag needs a flag or a choice of --target, not both")
    if cli is not None and (cli.choice is not None) != kind.needs_reference:
        raise ValueError(f"target kind {kind.name!r}: pair kinds (and only they) are a choice of --target")
    for other in _KINDS.values():
        if other.name == kind.name:
            continue
        taken = []
        if cli is not None and other.cli is not None:
            if cli.flag is not None and cli.flag == other.cli.flag:
                taken.append(f"the flag {cli.flag}")
            if cli.choice is not None and cli.choice == other.cli.choice:
                taken.append(f"--target {cli.choice}")
        if kind.run is not None and other.run is not None and other.task == kind.task \
                and kind.run.name == other.run.name:
            taken.append(f"the run target {kind.run.name}")
        if taken:
            raise ValueError(f"target kind {kind.name!r}: {' and '.join(taken)} is already {other.name!r}'s")


def unregister_kind(name: str) -> None:
    """Forget a kind registered with :func:`register_kind` (plug-ins and tests)."""
    _KINDS.pop(name, None)


def get_kind(name: str) -> TargetKind:
    if name not in _KINDS:
        raise ValueError(f"target kind must be one of {tuple(_KINDS)}, not {name!r}")
    return _KINDS[name]


def target_kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def all_kinds(task: str | None = None) -> tuple[TargetKind, ...]:
    """The registered kinds (of ``task`` only, when given), in the order they were registered."""
    return tuple(k for k in _KINDS.values() if task is None or k.task == task)


INDEX_LIMIT = 2 ** 31  # no layer has more rows or columns, no classifier more classes


def whole_number(value, what: str) -> int:
    """``value`` as an int index in [0, 2**31): a whole number (an integral float is accepted), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__index__"):
        raise ValueError(f"{what} must be a whole number >= 0, got {value!r}")
    if isinstance(value, float) and not (value == value and abs(value) < INDEX_LIMIT and value == int(value)):
        raise ValueError(f"{what} must be a whole number >= 0, got {value!r}")
    v = int(value)
    if not 0 <= v < INDEX_LIMIT:
        raise ValueError(f"{what} must be a whole number >= 0 (below {INDEX_LIMIT:,}), got {value!r}")
    return v


def task_of(target: Target) -> str:
    return target.task


def build_loss(model: ModelWrapper, targets: Sequence[Target], reference: torch.Tensor | None = None) -> LossFn:
    """One FAME loss for a batch: ``targets`` are all of one kind (one per batch element, or one for all)."""
    kinds = {t.kind for t in targets}
    if len(kinds) != 1:
        raise ValueError("a batch must share one target kind")
    kind = get_kind(kinds.pop())
    return kind.loss(model, list(targets), reference)


from . import kinds as _builtin  # noqa: E402,F401  (registers cell, class, similar, dissimilar)
