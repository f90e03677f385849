"""archlang: a declarative neural-architecture compiler.

Specs (``.arch``) are parsed (:mod:`archlang.syntax`), elaborated into a typed graph IR
and shape-checked (:mod:`archlang.check`, :mod:`archlang.ir`). Importing this package is
cheap: torch, sympy and graphviz load only in the functions that need them.
"""

from __future__ import annotations

# The stage packages `archlang.check` and `archlang.cost` share their names with the API
# functions `archlang.check()` and `archlang.cost()`. Import the packages first (both are
# light: no torch, no sympy) so the functions bound below are what `archlang.check` and
# `archlang.cost` name; the packages stay importable as `from archlang.cost import ...`.
import archlang.check as _check_package  # noqa: F401
import archlang.cost as _cost_package  # noqa: F401
import archlang.render as _render_package  # noqa: F401  (same reason: `archlang.render()` is the function)
from archlang.api import (
    SpecError,
    arch_signatures,
    build,
    check,
    cost,
    graph,
    load,
    load_timm_weights,
    load_torch_transformer,
    merge_adapters,
    param_groups,
    parse,
    render,
    save,
)
from archlang.ir import Graph, Node, TensorType

__all__ = ["Graph", "Node", "SpecError", "TensorType", "arch_signatures", "build", "check", "cost", "graph", "load",
           "load_timm_weights", "load_torch_transformer", "merge_adapters", "param_groups", "parse", "render", "save"]
__version__ = "0.1.0"
