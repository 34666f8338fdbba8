"""famegui: see what a convolutional network looks at (FAME and friends).

>>> import famegui
>>> e = famegui.explain("dlib-resnet", famegui.sample_image("london_001"), famegui.cell("stage4", 2, 2),
...                     iterations=5)
>>> e.label
'FAME stage4[2,2]'

The names below load on first use (``import famegui`` stays light for the command line).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .version import VERSION as __version__

__all__ = ["__version__", "Explanation", "RunInfo", "cell", "class_target", "compare", "dissimilar", "evaluate",
           "explain", "load", "locality", "open", "regions", "sample_image", "similar", "wrap"]

if TYPE_CHECKING:
    from .api import (
        Explanation,
        RunInfo,
        cell,
        class_target,
        compare,
        dissimilar,
        evaluate,
        explain,
        load,
        locality,
        open,
        regions,
        sample_image,
        similar,
        wrap,
    )


def __getattr__(name: str):
    if name in __all__ and name != "__version__":
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'famegui' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
