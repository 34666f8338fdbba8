"""Labelled face pairs: reading pair lists, and the pairs of the bundled sample photos.

A pair list is a text (or CSV) file with one pair per line::

    # comments start with '#'; blank lines are ignored
    london_001/neutral.jpg, london_001/smiling.jpg, 1
    london_001/neutral.jpg  london_005/neutral.jpg  different
    "folder with spaces/a.jpg","b.jpg",same

Fields are separated by commas (CSV quoting allowed) or, on a line without a
comma, by whitespace. The label is ``1`` / ``0``, ``same`` / ``different``
(also ``genuine`` / ``impostor``, ``true`` / ``false``; any case). Relative
paths are relative to the list's own folder. A first line whose label field is
literally ``label`` is taken as a CSV header and skipped. A list may carry extra
columns (``group``, ``pose``, ...) when its header names them::

    pathA,pathB,label,group,pose
    a.jpg,b.jpg,1,female,frontal

their values are kept with each pair (:attr:`Pair.attrs`) and a protocol run
keeps them, so that ``famegui report RUN --by group`` splits its tables. Every
problem is a ``ValueError`` whose one-line message names the file and the line
number.

:func:`sample_pairs` gives all genuine and impostor pairs of the photos shipped
in ``resources/faces`` and :func:`demo_pairs` one pair of each for the app's
start-up screen.
"""
from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .files import read_text_file

__all__ = [
    "Pair",
    "PairList",
    "LABEL_WORDS",
    "HARD_CASES_AS_OBAMA",
    "extra_columns",
    "parse_label",
    "read_pairs",
    "write_pairs",
    "sample_identities",
    "sample_pairs",
    "demo_pairs",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Accepted label spellings (lower case) -> same identity?
LABEL_WORDS = {
    "1": True, "same": True, "genuine": True, "true": True, "match": True,
    "0": False, "different": False, "impostor": False, "false": False, "nonmatch": False,
}

#: The bundled ``hard_cases`` photos that show Barack Obama alone. They are
#: degraded copies (low resolution, cut by the frame) of the photos in
#: ``barack_obama/`` (cosine 0.98-1.00 to their source with dlib's network), so
#: pairs with them are near-duplicates rather than fair genuine pairs: they are
#: only added to ``barack_obama`` when asked for (``include_hard_cases=True``).
#: ``obama_biden_two_faces.jpg`` is never used (two people in one photo).
HARD_CASES_AS_OBAMA = (
    "obama_240p.jpg",
    "obama_lowres_320x240.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
)


@dataclass(frozen=True)
class Pair:
    """Two face photos and whether they show the same person. ``line``: 1-based line in its list (0 if none)."""

    a: Path
    b: Path
    same: bool
    line: int = 0
    attrs: tuple[tuple[str, str], ...] = ()  # the extra columns' (name, value), in the header's order

    @property
    def label(self) -> int:
        return int(self.same)

    def __str__(self) -> str:
        return f"{self.a} | {self.b} | {'same' if self.same else 'different'}"


class PairList(list):
    """A list of :class:`Pair` that also knows where it came from and splits by label."""

    def __init__(self, pairs: Iterable[Pair] = (), source: str = "", columns: tuple[str, ...] = ()) -> None:
        super().__init__(pairs)
        self.source = source
        self.columns = tuple(columns)  # the names of the extra columns (the header's fields after the label)

    @property
    def genuine(self) -> list[Pair]:
        return [p for p in self if p.same]

    @property
    def impostor(self) -> list[Pair]:
        return [p for p in self if not p.same]

    def images(self) -> list[Path]:
        """Every distinct image path, in first-use order."""
        seen: dict[Path, None] = {}
        for p in self:
            seen.setdefault(p.a, None)
            seen.setdefault(p.b, None)
        return list(seen)


# --------------------------------------------------------------------------- reading
def parse_label(text: str) -> bool:
    """``1``/``same``/... -> True, ``0``/``different``/... -> False; ValueError otherwise."""
    key = text.strip().lower()
    if key not in LABEL_WORDS:
        raise ValueError(f"label must be 1/0 or same/different, got {text.strip()!r}")
    return LABEL_WORDS[key]


def _fields(line: str) -> list[str]:
    if "," in line:
        row = next(csv.reader([line], skipinitialspace=True))
        return [f.strip() for f in row]
    return line.split()


def extra_columns(names: list[str], where: str) -> tuple[str, ...]:
    """The extra column names of a header line (after the fixed fields): non-empty, distinct, and none of
    the run table's own column names."""
    reserved = {"item", "item_index", "label", "method", "target", "metric", "path", "class"}
    out = tuple(n.strip() for n in names)
    bad = [n for n in out if not n or n.lower() in reserved]
    if bad:
        raise ValueError(f"{where}: an extra column needs a name of its own, got {bad[0]!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: extra column names repeat: {', '.join(out)}")
    return out


def _resolve(field: str, folder: Path) -> Path:
    p = Path(os.path.expanduser(field))
    return p if p.is_absolute() else folder / p


def read_pairs(path: str | os.PathLike, *, check_files: bool = True) -> PairList:
    """Read a labelled pair list (see the module docstring). ``check_files``: every image must exist."""
    path = Path(path)
    # a regular file within the text limit (never a FIFO or a device), see famegui.data.files
    text = read_text_file(path, "pair list", encoding="utf-8-sig")
    folder = path.resolve().parent
    pairs = PairList(source=str(path))
    columns: tuple[str, ...] = ()
    first = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name} line {lineno}"
        try:
            fields = _fields(line)
        except csv.Error as e:
            raise ValueError(f"{where}: cannot parse {line!r} ({e})") from None
        if first and len(fields) >= 3 and fields[2].lower() == "label":
            first = False
            columns = extra_columns(fields[3:], where)  # a CSV header, perhaps naming extra columns
            pairs.columns = columns
            continue
        first = False
        if len(fields) != 3 + len(columns) or not all(fields[:3]):
            extra = (f" plus the header's {', '.join(columns)}" if columns else
                     "; extra columns need a header line naming them, e.g. pathA,pathB,label,group"
                     if len(fields) > 3 else "")
            raise ValueError(f"{where}: expected 'pathA,pathB,label' ({3 + len(columns)} fields{extra}), "
                             f"got {len(fields)}: {line!r}")
        try:
            same = parse_label(fields[2])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        a, b = _resolve(fields[0], folder), _resolve(fields[1], folder)
        if check_files:
            for p in (a, b):
                if not p.is_file():
                    raise ValueError(f"{where}: image not found: {p}")
        pairs.append(Pair(a, b, same, lineno, tuple(zip(columns, fields[3:]))))
    if not pairs:
        raise ValueError(f"{path.name}: no pairs found (expected lines 'pathA,pathB,label')")
    return pairs


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair]) -> Path:
    """Write ``pairs`` as a CSV pair list, paths relative to its folder where possible; pairs with
    :attr:`Pair.attrs` get a header line naming their extra columns."""
    path = Path(path)
    folder = path.resolve().parent

    def rel(p: Path) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), folder)
        except ValueError:  # another drive (Windows)
            return str(Path(p).resolve())

    pairs = list(pairs)
    columns = [n for n, _v in pairs[0].attrs] if pairs else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write("# pathA,pathB,label (1 = same person, 0 = different)\n")
        w = csv.writer(f)
        if columns:
            w.writerow(["pathA", "pathB", "label", *columns])
        for p in pairs:
            w.writerow([rel(p.a), rel(p.b), p.label, *(v for _n, v in p.attrs)])
    return path


# --------------------------------------------------------------------------- bundled photos
def _faces_root() -> Path:
    from ..paths import resource_path

    return resource_path("faces")


def sample_identities(include_hard_cases: bool = False) -> dict[str, list[Path]]:
    """Identity folder name -> its photos, for the bundled ``resources/faces`` (``hard_cases`` excluded).

    With ``include_hard_cases`` the single-face Obama photos of ``hard_cases``
    (:data:`HARD_CASES_AS_OBAMA`) are added to ``barack_obama``.
    """
    root = _faces_root()
    ids: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name == "hard_cases" or d.name.startswith((".", "_")):
            continue
        photos = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            ids[d.name] = photos
    if include_hard_cases:
        ids.setdefault("barack_obama", []).extend(root / "hard_cases" / n for n in HARD_CASES_AS_OBAMA)
    return ids


def sample_pairs(include_hard_cases: bool = False) -> PairList:
    """All genuine and all impostor pairs of the bundled photos (``.genuine`` / ``.impostor`` split them).

    Genuine: every combination of two photos of one identity folder. Impostor:
    every combination of two photos of different identities. ``hard_cases/`` is
    left out (see :data:`HARD_CASES_AS_OBAMA` for ``include_hard_cases``).
    Without hard cases: 44 genuine and 622 impostor pairs over 37 photos.
    """
    ids = sample_identities(include_hard_cases)
    photos = [(name, p) for name, ps in ids.items() for p in ps]
    pairs = PairList(source="bundled sample photos")
    for (na, a), (nb, b) in itertools.combinations(photos, 2):
        pairs.append(Pair(a, b, na == nb))
    return pairs


def demo_pairs() -> tuple[Pair, Pair]:
    """(genuine, impostor) for the app's start-up: london_001 neutral/smiling, london_001 vs london_005 neutral.

    With dlib's network (aligned): genuine cosine 0.984, distance 0.27
    (same); impostor cosine 0.845, distance 0.84 (different).
    """
    root = _faces_root()
    a = root / "london_001" / "neutral.jpg"
    return (Pair(a, root / "london_001" / "smiling.jpg", True),
            Pair(a, root / "london_005" / "neutral.jpg", False))
