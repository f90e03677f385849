"""The typed graph IR: tensors, nodes, block-instance scopes and the whole graph.

Takes: nothing at import; the elaborator (``archlang.check``) builds :class:`Graph` values.
Produces: immutable pydantic models that round-trip through JSON exactly
(``Graph.model_validate_json(g.model_dump_json()) == g``), and a networkx view built on
demand. Node names are hierarchical and stable (``layers.0.blocks.1.attn``): later stages
use them for module names, diagram clusters and adapter selectors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator
from typing_extensions import TypeAliasType

from archlang.diagnostics import Span
from archlang.ir.dims import Dim
from archlang.ir.ops import Activation, Conv2d, Dropout, DropPath, Identity, Linear, OpBase, op_class
from archlang.ir.types import TensorType

if TYPE_CHECKING:
    import networkx as nx

DimT = Union[int, Dim]  # noqa: UP007
Value = TypeAliasType("Value", Union[bool, int, float, str, tuple["Value", ...]])  # noqa: UP007

# A graph with this many 2-d convolutions or more is a CNN: its default build keeps the conv
# weights channels-last (Graph.prefers_channels_last)
CHANNELS_LAST_CONVS = 8


def name_levels(name: str) -> list[str]:
    """The levels of a hierarchical name; an index joins its parent:
    ``layers.1.blocks.0.attn`` -> ``["layers.1", "blocks.0", "attn"]``."""
    out: list[str] = []
    for part in name.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}.{part}"
        else:
            out.append(part)
    return out


class ValueRef(BaseModel):
    """Output ``index`` of node ``node``."""

    model_config = ConfigDict(frozen=True)

    node: str
    index: int = 0


class Node(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    op: SerializeAsAny[OpBase]  # any registered op class, serialised with its own fields
    inputs: tuple[ValueRef, ...] = ()
    outputs: tuple[TensorType, ...] = ()
    scope: str = ""  # the innermost block instance this node belongs to ("" = top level)
    vars: tuple[str, ...] = ()  # the spec's variable names for the outputs, where it named them
    # `y = pe1(z)`: this node runs with the weights of node `pe1` (weight sharing): it owns no
    # parameters (counted once, at `pe1`); the generated module calls `pe1`'s submodule again.
    # Left out of the JSON when unset, so graphs without sharing keep their IR digest.
    shares: str | None = Field(default=None, exclude_if=lambda v: v is None)
    span: Span

    @field_validator("op", mode="before")
    @classmethod
    def _op_by_tag(cls, v: object) -> object:
        """An op instance as it is; a mapping (from JSON) becomes the class its ``op`` tag names."""
        if isinstance(v, dict):
            tag = v.get("op")
            found = op_class(tag) if isinstance(tag, str) else None
            if found is None:
                raise ValueError(f"unknown op tag {tag!r:.60}")
            return found.model_validate(v)
        if isinstance(v, OpBase) and type(v) is not OpBase:
            return v
        raise ValueError("an op must be an instance of a registered op class or its JSON mapping")


class ParamValue(BaseModel):
    """A compile-time parameter of an arch or a block instance, with its value."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str  # "int", "float", "bool", "str", "[int]", ...
    value: Value


class Scope(BaseModel):
    """One block instance: its path, the block it instantiates, and the call site."""

    model_config = ConfigDict(frozen=True)

    path: str
    block: str
    args: tuple[ParamValue, ...] = ()  # the block's compile-time parameters, with their values
    dims: tuple[ParamValue, ...] = ()  # dims bound by the tensor parameters' shapes (concrete ones)
    inputs: tuple[ValueRef, ...] = ()  # tensor arguments, in parameter order
    input_names: tuple[str, ...] = ()
    outputs: tuple[ValueRef, ...] = ()  # returned tensors, in order
    output_vars: tuple[str, ...] = ()  # the caller's variable names for them, where it named them
    span: Span


class AdapterTap(BaseModel):
    """A fine-tuning tap from the spec (``adapt lora(...) on "sel"``), resolved to nodes."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["lora", "bitfit"]
    args: tuple[ParamValue, ...] = ()
    selectors: tuple[str, ...]
    targets: tuple[str, ...]  # matched node names (or node.part for an attention's logical q/k/v)
    index: int = 0  # position among the arch's adapt/freeze statements (they apply in order)
    span: Span


class FreezeRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    freeze: bool
    selectors: tuple[str, ...]
    index: int = 0
    span: Span


class Graph(BaseModel):
    """A fully elaborated, shape-checked architecture."""

    model_config = ConfigDict(frozen=True)

    arch: str
    family: str  # the `arch` definition that holds the body (differs for variants)
    file: str
    params: tuple[ParamValue, ...]
    inputs: tuple[str, ...]  # names of `input` nodes, in declaration order
    outputs: tuple[str, ...]  # names of `output` nodes, in declaration order
    nodes: tuple[Node, ...]
    scopes: tuple[Scope, ...] = ()
    adapters: tuple[AdapterTap, ...] = ()
    freezes: tuple[FreezeRule, ...] = ()
    # `checkpoint "sel"` globs over block instances (block_instances()) to activation-checkpoint
    # by default in the generated module; left out of the JSON when empty (same IR digest as before)
    checkpoint: tuple[str, ...] = Field(default=(), exclude_if=lambda v: not v)

    # -- lookups (cached; the model is frozen)
    @cached_property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        return self.by_name[name]

    def type_of(self, ref: ValueRef) -> TensorType:
        return self.by_name[ref.node].outputs[ref.index]

    def param(self, name: str) -> Value:
        for p in self.params:
            if p.name == name:
                return p.value
        raise KeyError(name)

    def block_instances(self) -> list[str]:
        """The outermost block instances whose block is instantiated more than once, in graph
        order (``blocks.3``; ``layers.1.blocks.0`` and ``layers.1.downsample`` in Swin): the
        units activation checkpointing can recompute."""
        paths = {s.path for s in self.scopes}
        outer = [s for s in self.scopes
                 if not any(s.path[:i] in paths for i, c in enumerate(s.path) if c == ".")]
        counts = Counter(s.block for s in outer)
        return [s.path for s in outer if counts[s.block] > 1]

    def input_nodes(self) -> list[Node]:
        return [self.by_name[n] for n in self.inputs]

    def output_nodes(self) -> list[Node]:
        return [self.by_name[n] for n in self.outputs]

    def ops(self) -> Iterator[tuple[Node, OpBase]]:
        for n in self.nodes:
            yield n, n.op

    def prefers_channels_last(self) -> bool:
        """Whether the default build (``kernels="auto"``) stores the 2-d convolutions' weights
        channels-last (NHWC), so that their outputs, and the BatchNorm, activation and pooling
        layers between them, run NHWC: a CNN, with at least :data:`CHANNELS_LAST_CONVS` of
        them, not weight-standardised (``StdConv2d`` keeps its layout). oneDNN then skips the
        input and output reorders an NCHW convolution costs (it still reorders the weight). A
        ViT's patch convolution alone does not count. The building
        (``archlang.lower.inference_runtime.use_channels_last``) and the cost model's
        convolution memory (``archlang.ops.layers``) both follow this."""
        return sum(isinstance(n.op, Conv2d) and not n.op.standardize for n in self.nodes) >= CHANNELS_LAST_CONVS

    def gelus_after_linears(self) -> list[tuple[str, str]]:
        """(linear node, GELU node) for every exact GELU whose input is a linear layer's
        output that nothing else reads (through dropout, drop-path and identities read
        once), in graph order; a linear layer called more than once (``shares``) is left out.
        Both builds of ``archlang.build`` act on these pairs: the default one
        (``kernels="auto"``) runs such a GELU in place where no gradient is wanted
        (``archlang.lower.inference_runtime.InplaceGELU``), and the inference build makes it
        the linear layer's post-op; the cost model's inference schedule counts its output
        as the linear output's storage (``archlang.cost.report``)."""
        readers: Counter[tuple[str, int]] = Counter((r.node, r.index) for n in self.nodes for r in n.inputs)
        shared = {n.shares for n in self.nodes if n.shares}
        pairs = []
        for n in self.nodes:
            if not (isinstance(n.op, Activation) and n.op.fn == "gelu" and n.inputs) or n.shares:
                continue
            src = n.inputs[0]
            while readers[(src.node, src.index)] == 1:
                prod = self.node(src.node)
                if isinstance(prod.op, Linear):
                    if src.index == 0 and not prod.shares and prod.name not in shared:
                        pairs.append((prod.name, n.name))
                    break
                if not isinstance(prod.op, Dropout | DropPath | Identity) or not prod.inputs:
                    break
                src = prod.inputs[0]
        return pairs

    def param_count(self) -> int:
        """Parameters of the base layers (LoRA weights aside: see ``archlang.ir.adapters``)."""
        return sum(n.op.param_count() for n in self.nodes)

    def summary(self) -> str:
        ins = ", ".join(f"{n.op.name}: {n.outputs[0]}" for n in self.input_nodes())
        outs = ", ".join(f"{n.op.name}: {self.type_of(n.inputs[0])}" for n in self.output_nodes())
        return f"{self.arch}: in {ins} -> out {outs}; {len(self.nodes)} nodes"

    # -- views
    def _repr_svg_(self) -> str | None:
        """The architecture diagram (:mod:`archlang.render`) for notebooks; ``None`` without Graphviz."""
        from archlang.render import render_graph

        return render_graph(self)._repr_svg_()

    def to_networkx(self) -> nx.MultiDiGraph:
        """A networkx view: one vertex per node (attribute ``node``), one edge per input."""
        import networkx as nx

        g = nx.MultiDiGraph(arch=self.arch)
        for n in self.nodes:
            g.add_node(n.name, node=n)
        for n in self.nodes:
            for i, ref in enumerate(n.inputs):
                g.add_edge(ref.node, n.name, index=ref.index, slot=i, type=self.type_of(ref))
        return g
