"""The typed, immutable graph IR: dims, tensor types, the op vocabulary and the graph."""

from archlang.ir.dims import Dim
from archlang.ir.graph import AdapterTap, FreezeRule, Graph, Node, ParamValue, Scope, ValueRef
from archlang.ir.ops import OP_CLASSES, Op, OpBase, ParamSpec
from archlang.ir.types import TensorType

__all__ = ["OP_CLASSES", "AdapterTap", "Dim", "FreezeRule", "Graph", "Node", "Op", "OpBase", "ParamSpec",
           "ParamValue", "Scope", "TensorType", "ValueRef"]
