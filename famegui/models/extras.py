"""The optional extras (pyproject's ``ray``, ``onnx``, ``timm``, ``captum``; ``all`` holds them all): whether
a package of one is missing, and the one line that says which extra to install.

famegui imports these packages only where a feature needs them, so ``import famegui``, the command line and
the window work without any of them; a feature that needs a missing one fails with :func:`needs`' line, e.g.
``Integrated Gradients needs captum: pip install 'famegui[captum]'``.
"""
from __future__ import annotations

import importlib.util

EXTRA_OF = {"ray": "ray", "onnx": "onnx", "onnx2torch": "onnx", "timm": "timm", "huggingface_hub": "timm",
            "captum": "captum"}  # import name -> the extra that installs it


def missing(*modules: str) -> list[str]:
    """Those of ``modules`` that cannot be imported here (not installed, or blocked in ``sys.modules``),
    found without importing them."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent missing, or a module without a spec
            found = False
        if not found:
            out.append(name)
    return out


def needs(what: str, *modules: str) -> str:
    """``"{what} needs {modules}: pip install 'famegui[EXTRA]'"``, one line (the extra of the first module)."""
    return f"{what} needs {' and '.join(modules)}: pip install 'famegui[{EXTRA_OF[modules[0]]}]'"
