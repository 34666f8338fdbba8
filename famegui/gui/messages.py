"""What the window says in its own words: errors without command-line flags, photos named by who is on them.

The science speaks to the command line ("use --no-align", "drop --weights"); the window
has checkboxes and menus instead. :func:`gui_message` rewrites the hints it knows into the
window's controls and never lets a bare flag through. :func:`photo_caption` names a file
by its folder and name, and a bundled sample photo by the person on it
(``resources/faces/ATTRIBUTION.md``).
"""
from __future__ import annotations

import re
from pathlib import Path

# (pattern, replacement): command-line hints of the science's messages, in the window's words
_HINTS: tuple[tuple[str, str], ...] = (
    (r"use --no-align \(centre crop\) to use the image as it is",
     'untick "align faces" (Model and images panel) to use a centre crop of the image'),
    (r"drop --weights", "open it as the model itself (File > Load weights or model file...), without weights"),
    (r"pass --layer NAME \(`famegui layers --model [^`]*` lists them\)", "pick a layer in the layer list"),
    (r"try `famegui layers --model [^`]*`", "pick one from the layer list"),
    (r"--weights FILE \(\.safetensors or \.pth\), or --weights random",
     "a weights file (File > Load weights or model file...)"),
    (r"pass --weights FILE \(see README: face models\)", "load its weights (File > Load weights or model file...)"),
    (r"or pass --weights FILE \(or --weights random for an untrained network\)",
     "or load a weights file (File > Load weights or model file...)"),
    (r"needs --weights FILE", "needs a weights file (File > Load weights or model file...)"),
    (r"set --input-size", "this model's input size could not be found"),
    (r"no threshold \(verify --pairs LIST gives one\)",
     "no decision threshold for this model (`famegui verify` on a labelled pair list gives one)"),
    (r"\(--pairs FILE\)", "(a labelled pair list)"),
)
_FLAG = re.compile(r"(?<![\w`-])--([a-z][a-z0-9-]*)")

# bundled sample photos: folder -> the person (see resources/faces/ATTRIBUTION.md)
_PEOPLE = {"barack_obama": "Barack Obama", "joe_biden": "Joe Biden", "lisa_debruine": "Lisa DeBruine",
           "hard_cases": "hard case (Barack Obama, Joe Biden)"}


def gui_message(text: str) -> str:
    """``text`` with the command-line hints it carries said in the window's words (no bare ``--flag``)."""
    for pattern, replacement in _HINTS:
        text = re.sub(pattern, replacement, text)
    # a flag the table does not know: name the setting, not the flag
    return _FLAG.sub(lambda m: f'the "{m.group(1).replace("-", " ")}" setting', text)


def _faces_root() -> Path | None:
    from ..paths import resource_path

    try:
        return resource_path("faces").resolve()
    except (OSError, ModuleNotFoundError):
        return None


def person_of(path: str | Path) -> str | None:
    """The person on a bundled sample photo (None for any other file)."""
    root = _faces_root()
    p = Path(path).resolve()
    if root is None or root not in p.parents:
        return None
    folder = p.relative_to(root).parts[0]
    if folder.startswith("london_"):
        return f"London set subject {folder[len('london_'):]}"
    return _PEOPLE.get(folder, folder.replace("_", " ").title())


def photo_caption(path: str | Path) -> str:
    """Folder and file name, and for a bundled photo the person: "London set subject 001, london_001/smiling.jpg"."""
    p = Path(path)
    name = f"{p.parent.name}/{p.name}" if p.parent.name else p.name
    who = person_of(p)
    return f"{who}, {name}" if who else name
