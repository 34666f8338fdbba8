"""Explanation methods: one module per method family, each registering its methods (see :mod:`.registry`)."""
from .registry import (
    COSTS,
    OUTPUTS,
    REGISTRY,
    MethodContext,
    MethodSpec,
    Param,
    all_params,
    get_method,
    methods,
    register,
    run_method,
)

__all__ = ["COSTS", "OUTPUTS", "REGISTRY", "MethodContext", "MethodSpec", "Param", "all_params", "get_method",
           "methods", "register", "run_method"]
