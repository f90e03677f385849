"""The typed, immutable graph IR: dims, tensor types, the op vocabulary and the graph."""

from archlang.ir.dims import Dim
from archlang.ir.graph import AdapterTap, FreezeRule, Graph, Node, ParamValue, Scope, ValueRef
from archlang.ir.ops import OpBase, ParamSpec, op_class, op_classes
from archlang.ir.types import TensorType

__all__ = ["AdapterTap", "Dim", "FreezeRule", "Graph", "Node", "OpBase", "ParamSpec", "ParamValue", "Scope",
           "TensorType", "ValueRef", "op_class", "op_classes"]
