"""archlang: a declarative neural-architecture compiler.

Specs (``.arch``) are parsed (:mod:`archlang.syntax`), elaborated into a typed graph IR
and shape-checked (:mod:`archlang.check`, :mod:`archlang.ir`). Importing this package is
cheap: torch, sympy, timm, huggingface_hub and graphviz load only in the functions that need
them. The ecosystem bridges (timm registry, Hub folders, adapter files, FSDP2/DDP) live in
:mod:`archlang.interop` and are re-exported here.
"""

from __future__ import annotations

# The stage packages `archlang.check` and `archlang.cost` share their names with the API
# functions `archlang.check()` and `archlang.cost()`. Import the packages first (both are
# light: no torch, no sympy) so the functions bound below are what `archlang.check` and
# `archlang.cost` name; the packages stay importable as `from archlang.cost import ...`.
import archlang.check as _check_package  # noqa: F401
import archlang.cost as _cost_package  # noqa: F401
import archlang.ops as _ops_package  # noqa: F401  (the op families: every op and its rules)
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
from archlang.cost.sweep import fit_formula
from archlang.interop.adapters_io import AdapterError, load_adapters, save_adapters
from archlang.interop.distributed import block_instances, checkpoint_blocks, ddp, fsdp2_shard
from archlang.interop.hub import from_pretrained, push_to_hub, save_pretrained
from archlang.interop.timm import register as register_timm
from archlang.ir import Graph, Node, TensorType

__all__ = ["AdapterError", "Graph", "Node", "SpecError", "TensorType", "arch_signatures", "block_instances", "build",
           "check", "checkpoint_blocks", "cost", "ddp", "fit_formula", "from_pretrained", "fsdp2_shard", "graph",
           "load", "load_adapters", "load_timm_weights", "load_torch_transformer", "merge_adapters", "param_groups",
           "parse", "push_to_hub", "register_timm", "render", "save", "save_adapters", "save_pretrained"]
__version__ = "0.1.0"
