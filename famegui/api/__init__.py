"""The public Python API, importable from ``famegui`` itself (``famegui.explain``, ``famegui.wrap`` ...).

Models (:func:`wrap`, :func:`load`), images (:func:`sample_image`), targets (:func:`cell`,
:func:`class_target`, :func:`similar`, :func:`dissimilar`), explanations (:func:`explain`,
:class:`Explanation`), views (:func:`compare`, :func:`evaluate`, :func:`locality`, :func:`open`).
"""
from ..explanation import Explanation, RunInfo
from .core import cell, class_target, dissimilar, explain, load, sample_image, similar, wrap
from .views import compare, evaluate, locality, open, regions

__all__ = ["Explanation", "RunInfo", "cell", "class_target", "compare", "dissimilar", "evaluate", "explain", "load",
           "locality", "open", "regions", "sample_image", "similar", "wrap"]
