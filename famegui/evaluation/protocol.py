"""Protocols: the list of items a run explains and scores (pairs, triplets or labelled images).

Three file formats, all text (or CSV) with one item per line, ``#`` comments and
blank lines ignored, fields separated by commas (CSV quoting allowed) or, on a
line without a comma, by whitespace; relative paths are relative to the file's
own folder:

- **pairs** (:func:`famegui.data.pairs.read_pairs`): ``pathA,pathB,label`` with
  label ``1``/``0``, ``same``/``different``, ``genuine``/``impostor`` ...;
- **triplets**: ``probe,mate,non_mate`` (three image paths; the probe and the
  mate show one person, the non-mate another); a header line
  ``probe,mate,non_mate`` is skipped;
- **images**: ``path,class`` (a class name of the model or a class index); a
  header ``path,class`` (or ``path,label``) is skipped.

:func:`read_protocol` tells them apart by the first data line: two fields are an
image list, three fields whose last is a pair label a pair list, three paths a
triplet list. Any of the three may carry extra columns (``group``, ``pose``, ...)
when its header line names them (``pathA,pathB,label,group``,
``probe,mate,non_mate,group``, ``path,class,group``): each item keeps their
values (``attrs``), a run keeps them in ``items.parquet`` and
``famegui report RUN --by group`` splits its tables by them.
:func:`make_protocol` builds pairs (every genuine pair of a
folder of identity folders and as many impostors, seeded) and triplets from a
gallery; :func:`demo_protocol` does the same over the photos shipped in
``resources/faces`` so that everything runs offline.
"""
from __future__ import annotations

import csv
import itertools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..data.pairs import IMAGE_SUFFIXES, Pair, extra_columns, parse_label, read_pairs, sample_identities, write_pairs

KINDS = ("pairs", "triplets", "images")


@dataclass(frozen=True)
class PairItem:
    a: Path  # the probe (explained)
    b: Path  # the reference
    same: bool
    attrs: tuple[tuple[str, str], ...] = ()  # extra columns of the list: (name, value)

    @property
    def label(self) -> str:
        return "genuine" if self.same else "impostor"

    def paths(self) -> tuple[Path, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class TripletItem:
    probe: Path  # explained
    mate: Path  # the reference: same person
    non_mate: Path  # another person (the hiding game; gweEBP)
    attrs: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return "triplet"

    def paths(self) -> tuple[Path, ...]:
        return (self.probe, self.mate, self.non_mate)


@dataclass(frozen=True)
class ImageItem:
    path: Path
    class_label: str  # a class name of the model, or a class index
    attrs: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return self.class_label

    def paths(self) -> tuple[Path, ...]:
        return (self.path,)


Item = PairItem | TripletItem | ImageItem


@dataclass
class Protocol:
    """A named list of items of one kind; ``root``: the folder item keys are relative to."""

    name: str
    kind: str
    items: list = field(default_factory=list)
    path: str = "demo"
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"protocol kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of the items' extra columns (a header's fields after the fixed ones); () if none."""
        return tuple(n for n, _v in self.items[0].attrs) if self.items else ()

    def describe(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "path": self.path, "items": len(self.items)}
        if self.columns:  # absent without extra columns, so that runs made before them still resume
            out["columns"] = list(self.columns)
        return out

    def key(self, index: int) -> str:
        """A stable key: ``0007:london_001/neutral.jpg|london_001/smiling.jpg`` (paths relative to ``root``)."""
        return f"{index:04d}:" + "|".join(self._rel(p) for p in self.items[index].paths())

    def _rel(self, p: Path) -> str:
        if self.root is not None:
            try:
                return Path(p).resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                pass
        return Path(p).as_posix()

    def limited(self, limit: int | None) -> Protocol:
        """The first ``limit`` items (all when None)."""
        if limit is None:
            return self
        return Protocol(self.name, self.kind, self.items[:limit], self.path, self.root)


# --------------------------------------------------------------------------- reading
def _data_lines(path: Path):
    """(line number, fields) of every data line."""
    from ..data.files import read_text_file

    # a regular file within the text limit (a FIFO or /dev/zero is refused before it is opened)
    text = read_text_file(path, "protocol file", encoding="utf-8-sig")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            fields = [f.strip() for f in next(csv.reader([line], skipinitialspace=True))] if "," in line \
                else line.split()
        except csv.Error as e:
            raise ValueError(f"{path.name} line {lineno}: cannot parse {line!r} ({e})") from None
        yield lineno, fields


def _resolve(text: str, folder: Path, where: str, check: bool) -> Path:
    p = Path(os.path.expanduser(text))
    p = p if p.is_absolute() else folder / p
    if check and not p.is_file():
        raise ValueError(f"{where}: image not found: {p}")
    return p


def detect_kind(path: str | os.PathLike) -> str:
    """"pairs", "triplets" or "images", from the first data line of ``path``."""
    for lineno, fields in _data_lines(Path(path)):
        low = [f.lower() for f in fields]
        # a header line, perhaps naming extra columns after the fixed ones
        if low[:3] == ["probe", "mate", "non_mate"]:
            return "triplets"
        if len(low) >= 3 and low[2] == "label":
            return "pairs"
        if low[:2] in (["path", "class"], ["path", "label"]):
            return "images"
        if len(fields) == 2:
            return "images"
        if len(fields) == 3:
            try:
                parse_label(fields[2])
                return "pairs"
            except ValueError:
                return "triplets"
        raise ValueError(f"{Path(path).name} line {lineno}: expected 2 fields (path,class) or 3 "
                         f"(pathA,pathB,label / probe,mate,non_mate), got {len(fields)}; extra columns need a "
                         "header line naming them")
    raise ValueError(f"{Path(path).name}: no items found")


def _read_rows(path: Path, n: int, header: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], list]:
    """(extra column names, [(line number, fields)]): a header line (one of ``header``, perhaps followed by
    extra column names) is skipped; every data line has ``n`` fields plus one per extra column."""
    out: list[tuple[int, list[str]]] = []
    columns: tuple[str, ...] = ()
    first = True
    for lineno, fields in _data_lines(path):
        where = f"{path.name} line {lineno}"
        if first and tuple(f.lower() for f in fields[:n]) in header:
            first = False
            columns = extra_columns(fields[n:], where)
            continue
        first = False
        if len(fields) != n + len(columns) or not all(fields[:n]):
            hint = (f" plus the header's {', '.join(columns)}" if columns else
                    "; extra columns need a header line naming them" if len(fields) > n else "")
            raise ValueError(f"{where}: expected {n + len(columns)} fields{hint}, got {len(fields)}")
        out.append((lineno, fields))
    if not out:
        raise ValueError(f"{path.name}: no items found")
    return columns, out


def read_triplets(path: str | os.PathLike, *, check_files: bool = True) -> list[TripletItem]:
    path = Path(path)
    folder = path.resolve().parent
    columns, rows = _read_rows(path, 3, (("probe", "mate", "non_mate"),))
    return [TripletItem(*(_resolve(f, folder, f"{path.name} line {ln}", check_files) for f in fields[:3]),
                        tuple(zip(columns, fields[3:])))
            for ln, fields in rows]


def read_images(path: str | os.PathLike, *, check_files: bool = True) -> list[ImageItem]:
    path = Path(path)
    folder = path.resolve().parent
    columns, rows = _read_rows(path, 2, (("path", "class"), ("path", "label")))
    return [ImageItem(_resolve(fields[0], folder, f"{path.name} line {ln}", check_files), fields[1],
                      tuple(zip(columns, fields[2:])))
            for ln, fields in rows]


def read_protocol(path: str | os.PathLike, *, check_files: bool = True) -> Protocol:
    """A protocol file of any of the three kinds (see the module docstring)."""
    path = Path(path)
    kind = detect_kind(path)
    if kind == "pairs":
        items = [PairItem(p.a, p.b, p.same, p.attrs) for p in read_pairs(path, check_files=check_files)]
    elif kind == "triplets":
        items = read_triplets(path, check_files=check_files)
    else:
        items = read_images(path, check_files=check_files)
    return Protocol(path.stem, kind, items, str(path), path.resolve().parent)


# --------------------------------------------------------------------------- making
def gallery_identities(gallery_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Identity folder name -> its photos (sorted), for every sub-folder of ``gallery_dir`` holding images."""
    root = Path(gallery_dir)
    if not root.is_dir():
        raise ValueError(f"gallery folder not found: {root}")
    ids = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        photos = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            ids[d.name] = photos
    return ids


def protocol_items(ids: dict[str, list[Path]], seed: int = 0) -> tuple[list[PairItem], list[TripletItem]]:
    """(pairs, triplets) of an identity -> photos mapping.

    Pairs: every genuine pair, then as many impostor pairs drawn without
    replacement (seeded), interleaved genuine / impostor so that any prefix is
    balanced. Triplets: one per genuine pair, its non-mate drawn (seeded) from
    the photos of the other identities.
    """
    rng = random.Random(seed)
    genuine = [(a, b) for ps in ids.values() for a, b in itertools.combinations(ps, 2)]
    photos = [(n, p) for n, ps in ids.items() for p in ps]
    cross = [(a, b) for (na, a), (nb, b) in itertools.combinations(photos, 2) if na != nb]
    impostor = rng.sample(cross, min(len(genuine), len(cross)))
    pairs: list[PairItem] = []
    for g, i in itertools.zip_longest(genuine, impostor):
        pairs += ([PairItem(*g, True)] if g else []) + ([PairItem(*i, False)] if i else [])
    owner = {p: n for n, p in photos}
    triplets = []
    for a, b in genuine:
        others = [p for n, p in photos if n != owner[a]]
        if others:
            triplets.append(TripletItem(a, b, rng.choice(others)))
    return pairs, triplets


def write_triplets(path: str | os.PathLike, triplets: list[TripletItem]) -> Path:
    path = Path(path)
    folder = path.resolve().parent
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write("# probe,mate,non_mate (the probe and the mate show one person, the non-mate another)\n")
        w = csv.writer(f)
        for t in triplets:
            w.writerow([os.path.relpath(Path(p).resolve(), folder) for p in t.paths()])
    return path


def make_protocol(gallery_dir: str | os.PathLike, out: str | os.PathLike, triplets: str | os.PathLike | None = None,
                  seed: int = 0) -> tuple[int, int]:
    """Write a pair list (and a triplet list) for a folder of identity folders; returns their lengths."""
    ids = gallery_identities(gallery_dir)
    if len(ids) < 2:
        raise ValueError(f"{gallery_dir}: needs at least two identity folders with photos, found {len(ids)}")
    pairs, trips = protocol_items(ids, seed)
    if not any(p.same for p in pairs):
        raise ValueError(f"{gallery_dir}: no identity has two photos, so there is no genuine pair")
    write_pairs(out, [Pair(p.a, p.b, p.same) for p in pairs])
    if triplets is not None:
        write_triplets(triplets, trips)
    return len(pairs), len(trips)


def demo_protocol(kind: str = "pairs", limit: int | None = None, seed: int = 0) -> Protocol:
    """The bundled photos (``resources/faces``, hard cases left out): 44 genuine pairs and 44 impostors
    interleaved (seeded), or 44 triplets; ``limit``: the first items only."""
    ids = sample_identities()
    pairs, trips = protocol_items(ids, seed)
    if kind not in ("pairs", "triplets"):
        raise ValueError(f"the demo protocol has pairs or triplets, not {kind!r}")
    root = next(iter(ids.values()))[0].parent.parent
    return Protocol(f"demo-{kind}", kind, pairs if kind == "pairs" else trips, "demo", root).limited(limit)
