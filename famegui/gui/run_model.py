"""A protocol run directory as the run browser shows it: one table row per item x target, read, never computed.

:func:`read_run_table` reads a run folder through :func:`famegui.evaluation.report_tables.load_run`
(``run.json`` and ``results/part-*.parquet``; a folder that is not a run gives one ``ValueError`` line)
and groups its rows (one per item x method x target x metric) into :class:`TableRow`: the AUC of each
method x metric, the errors, and where the item's photos and maps are (:func:`item_paths`,
:func:`famegui.evaluation.rundir.map_path`). :func:`model_view` prepares a photo the way the run's model
saw it (face alignment or the classifier's crop, no network) so that a map can be drawn on it.
:class:`RunTableModel` and :class:`RunSortProxy` put the rows in a ``QTableView``: one column per photo of
the item (probe, reference, non-mate: its folder and name, the full path in the tooltip); sorting by a number
keeps the undefined (NaN) values last in either order, and the row numbers count the rows as shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt

from ..evaluation import rundir, runfiles
from ..evaluation.report_tables import RANDOM, load_run

SORT_ROLE = Qt.UserRole + 1
PHOTO_ROLES = {"pairs": ("probe", "reference"), "triplets": ("probe", "reference", "non-mate"), "images": ("image",)}


def short_path(path: Path) -> str:
    """A photo as a table cell names it: its folder and name (the identity and the shot, in face datasets)."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def method_label(name: str) -> str:
    """The method's name as the papers give it (``random`` is the random-ranking baseline)."""
    if name == RANDOM:
        return "random ranking"
    from ..methods import get_method

    try:
        return get_method(name).label
    except (KeyError, ValueError):  # a method of a plug-in that is not installed here
        return name


@dataclass
class Cell:
    """One method x metric of one item x target."""

    auc: float = math.nan
    gain: float = math.nan
    flip: float | None = None
    error: str | None = None


@dataclass
class TableRow:
    index: int  # the item's index in the protocol
    key: str  # the item's key in the run ("0007:a.jpg|b.jpg")
    label: str  # genuine / impostor / triplet / the class
    target: str  # e+, e-, decision, class
    cells: dict = field(default_factory=dict)  # (method, metric) -> Cell

    @property
    def item(self) -> str:
        """The item's photos as the key names them."""
        return " | ".join(self.key.split(":", 1)[-1].split("|"))

    @property
    def errors(self) -> list[str]:
        """``method: message`` for each method that failed on this item x target (one line each)."""
        out: dict[str, str] = {}
        for (method, _metric), c in self.cells.items():
            if c.error and method not in out:
                out[method] = f"{method_label(method)}: {c.error}"
        return list(out.values())


@dataclass
class RunTable:
    path: Path
    meta: dict  # run.json
    methods: list[str]  # the methods of the run (random last)
    metrics: list[str]
    targets: list[str]
    rows: list[TableRow]
    problems: list[str] = field(default_factory=list)  # one line per file of the folder that was not read

    @property
    def kind(self) -> str:
        """The protocol kind: pairs, triplets or images."""
        return str((self.meta.get("protocol") or {}).get("kind", "pairs"))

    @property
    def task(self) -> str:
        return "classification" if self.kind == "images" else "verification"

    @property
    def title(self) -> str:
        proto, model = self.meta.get("protocol") or {}, self.meta.get("model") or {}
        return f"{proto.get('name', self.path.name)} ({self.kind}), model {model.get('name', '?')}"

    @property
    def roles(self) -> tuple[str, ...]:
        """What each photo of an item is, in the key's order: probe, reference (pairs), non-mate (triplets)."""
        n = max((len(r.key.split(":", 1)[-1].split("|")) for r in self.rows), default=1)
        names = PHOTO_ROLES.get(self.kind, PHOTO_ROLES["triplets"])
        return tuple(names[i] if i < len(names) else f"photo {i + 1}" for i in range(n))

    @property
    def fixed_columns(self) -> tuple[str, ...]:
        """The columns before the AUCs: the item's number, one per photo, its label and the row's target."""
        return ("#", *self.roles, "label", "target")

    @property
    def columns(self) -> list[tuple[str, str]]:
        """The (method, metric) of each AUC column, in order."""
        return [(m, k) for m in self.methods for k in self.metrics]

    def headers(self) -> list[str]:
        return [*self.fixed_columns, *(f"{method_label(m)} {k}" for m, k in self.columns), "errors"]

    def map_array(self, row: TableRow, method: str, target: str | None = None) -> np.ndarray | str | None:
        """The stored map of ``method`` on the item of ``row`` for ``target`` (default: the row's), if any
        (a loose file or a member of the run's map store); a one-line reason instead when the file is there
        but not read (a pickle, a symlink out of the folder, not a map)."""
        if method == RANDOM:
            return None  # the baseline's ranking is drawn anew from its seed; the run keeps no map of it
        return runfiles.map_or_reason(self.path, rundir.map_path(row.index, method, target or row.target))

    def signed(self, method: str) -> bool:
        """Whether ``method``'s maps are signed, as the method declares for the run's parameters."""
        if method == RANDOM:
            return False
        from ..methods import get_method

        try:
            return get_method(method).signed(self.task, (self.meta.get("methods") or {}).get(method))
        except (KeyError, ValueError):
            return False

    def photos(self, row: TableRow) -> tuple[Path, ...]:
        return item_paths(self.meta, row.key, self.path)


def _ordered(first: list, seen) -> list:
    """``first`` (what run.json lists) then anything else the rows have, in the order met."""
    out = [x for x in first if x in seen]
    return out + [x for x in dict.fromkeys(seen) if x not in out]


def read_run_table(path: str | Path) -> RunTable:
    """The run folder ``path`` as table rows; a ``ValueError`` with one line if it is not a readable run."""
    run = load_run(path)
    meta = run.meta
    methods = _ordered([*(meta.get("methods") or {}), RANDOM], [r["method"] for r in run.rows])
    methods = [m for m in methods if m != RANDOM] + ([RANDOM] if RANDOM in methods else [])
    metrics = _ordered(list(meta.get("metrics") or []), [r["metric"] for r in run.rows])
    targets = _ordered(list(meta.get("targets") or []), [r["target"] for r in run.rows])
    grouped: dict[tuple[int, str], TableRow] = {}
    for r in run.rows:
        index = int(r.get("item_index", str(r["item"]).split(":", 1)[0]))
        row = grouped.setdefault((index, r["target"]), TableRow(index, r["item"], r.get("label") or "", r["target"]))
        auc, gain = r.get("auc"), r.get("gain")
        row.cells[(r["method"], r["metric"])] = Cell(
            math.nan if auc is None else float(auc), math.nan if gain is None else float(gain), r.get("flip"),
            r.get("error"))
    order = {t: i for i, t in enumerate(targets)}
    rows = sorted(grouped.values(), key=lambda t: (t.index, order.get(t.target, len(order))))
    return RunTable(Path(path), meta, methods, metrics, targets, rows, run.problems)


# --------------------------------------------------------------------------- the item's photos
def protocol_roots(meta: dict, run_dir: Path) -> list[Path]:
    """Folders the item keys may be relative to: the demo photos, or the protocol file's folder (as given
    when the run was made, from here, from beside the run folder)."""
    proto = meta.get("protocol") or {}
    where = str(proto.get("path", ""))
    if where == "demo":
        from ..evaluation.protocol import demo_protocol

        kind = proto.get("kind") if proto.get("kind") in ("pairs", "triplets") else "pairs"
        root = demo_protocol(kind, limit=1).root
        return [root] if root is not None else []
    p = Path(where).expanduser()
    if p.is_absolute():
        return [p.parent]
    cands = [Path.cwd() / p, run_dir.parent / p, run_dir / p]
    return list(dict.fromkeys(c.parent.resolve() for c in cands))


def item_paths(meta: dict, key: str, run_dir: Path) -> tuple[Path, ...]:
    """The photos of the item ``key`` (probe first); a relative one is looked for under each root in turn
    (the first root is kept when none has it: the caller says the photo is missing)."""
    roots = protocol_roots(meta, Path(run_dir))
    out = []
    for part in key.split(":", 1)[-1].split("|"):
        p = Path(part)
        if not p.is_absolute() and roots:
            p = next((r / p for r in roots if (r / p).is_file()), roots[0] / p)
        out.append(p)
    return tuple(out)


def model_view(path: Path, model_info: dict, align: bool = True) -> np.ndarray:
    """The photo as the run's model saw it ((H, W, 3) float RGB in [0, 1]): the same preparation as the run
    (:func:`famegui.data.pipeline.prepare_for_model`) from the model's recorded geometry, no network."""
    from ..data.pipeline import prepare_for_model

    shape = SimpleNamespace(alignment=model_info.get("alignment"), input_size=tuple(model_info["input_size"]),
                            extras=dict(model_info.get("extras") or {}))
    inp = prepare_for_model(shape, str(path), align=align)  # reads only alignment, input_size, extras
    return inp.tensor[0].permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- Qt
def _number(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


class RunTableModel(QAbstractTableModel):
    """The rows of a :class:`RunTable`; ``SORT_ROLE`` gives numbers as floats (NaN: undefined)."""

    def __init__(self, table: RunTable, parent=None) -> None:
        super().__init__(parent)
        self.table = table
        self.headers = table.headers()
        self._columns = table.columns
        self.fixed = len(table.fixed_columns)
        self.photo_columns = range(1, 1 + len(table.roles))
        self._photos: dict[int, tuple[Path, ...]] = {}  # row -> its photos (looked up once: the disk is read)

    def rowCount(self, parent=None) -> int:  # noqa: N802 (Qt API)
        return 0 if parent is not None and parent.isValid() else len(self.table.rows)

    def columnCount(self, parent=None) -> int:  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(self.headers)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if orientation == Qt.Horizontal and role in (Qt.DisplayRole, Qt.ToolTipRole):
            if role == Qt.ToolTipRole and section in self.photo_columns:
                return f"the {self.headers[section]} photo: its folder and name (the full path in the cell's tooltip)"
            if role == Qt.ToolTipRole and self.fixed <= section < self.fixed + len(self._columns):
                metric = self._columns[section - self.fixed][1]
                better = "lower" if metric == "deletion" or metric.endswith("-deletion") else "higher"
                return f"{self.headers[section]}: area under the curve ({better} is better)"
            return self.headers[section]
        if orientation == Qt.Vertical and role == Qt.DisplayRole:
            return str(section + 1)
        return None

    def photo(self, row: int, column: int) -> Path | None:
        """The photo shown in ``column`` (a photo column) of ``row``, where the browser looks for it."""
        if row not in self._photos:
            self._photos[row] = self.table.photos(self.table.rows[row])
        photos, k = self._photos[row], column - self.photo_columns.start
        return photos[k] if 0 <= k < len(photos) else None

    def cell(self, row: int, column: int) -> Cell | None:
        k = column - self.fixed
        return self.table.rows[row].cells.get(self._columns[k]) if 0 <= k < len(self._columns) else None

    def value(self, row: int, column: int):
        """What column ``column`` holds for ``row``: a float for the AUCs and the item number, the photo's full
        path, else text."""
        r = self.table.rows[row]
        if column in self.photo_columns:
            photo = self.photo(row, column)
            return "" if photo is None else str(photo)
        fixed = (float(r.index), r.label, r.target)
        if column < self.fixed:
            return fixed[0 if column == 0 else column - len(self.photo_columns)]
        c = self.cell(row, column)
        if column < self.fixed + len(self._columns):
            return math.nan if c is None else c.auc
        return "; ".join(r.errors)

    def data(self, index: QModelIndex, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        v = self.value(index.row(), index.column())
        if role == SORT_ROLE:
            return v
        if role == Qt.DisplayRole:
            if index.column() == 0:
                return str(int(v))
            if index.column() in self.photo_columns:
                return short_path(Path(v)) if v else ""
            return _number(v) if isinstance(v, float) else v
        if role == Qt.TextAlignmentRole and isinstance(v, float):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ToolTipRole:
            c = self.cell(index.row(), index.column())
            if c is not None:
                parts = [f"AUC {_number(c.auc)}"] + ([f"gain {_number(c.gain)}"] if math.isfinite(c.gain) else []) \
                    + ([f"flip {100 * c.flip:.0f}%"] if c.flip is not None else [])
                return c.error or ", ".join(parts)
            return v if isinstance(v, str) and v else None
        return None


class RunSortProxy(QSortFilterProxyModel):
    """Sorts numbers as numbers and keeps undefined (NaN) values last, ascending or descending."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802 (Qt API)
        if orientation == Qt.Vertical and role == Qt.DisplayRole:
            return str(section + 1)  # the row's place as shown (sorted), not its place in the run
        return super().headerData(section, orientation, role)

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:  # noqa: N802 (Qt API)
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        if isinstance(a, float) and isinstance(b, float):
            if math.isnan(a) or math.isnan(b):
                # ascending puts "smaller" first, descending "larger": NaN is the larger, resp. the smaller
                return (self.sortOrder() == Qt.DescendingOrder) if math.isnan(a) and not math.isnan(b) \
                    else (self.sortOrder() == Qt.AscendingOrder and not math.isnan(a))
            return a < b
        return str(a) < str(b)
