"""archlang: a declarative neural-architecture compiler.

Specs (``.arch``) are parsed (:mod:`archlang.syntax`), elaborated into a typed graph IR
and shape-checked (:mod:`archlang.check`, :mod:`archlang.ir`). Importing this package is
cheap: torch, sympy and graphviz load only in the functions that need them.
"""

from __future__ import annotations

from archlang.api import (
    SpecError,
    arch_signatures,
    build,
    check,
    graph,
    load,
    load_timm_weights,
    load_torch_transformer,
    parse,
    save,
)
from archlang.ir import Graph, Node, TensorType

__all__ = ["Graph", "Node", "SpecError", "TensorType", "arch_signatures", "build", "check", "graph", "load",
           "load_timm_weights", "load_torch_transformer", "parse", "save"]
__version__ = "0.1.0"
