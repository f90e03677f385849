"""The cost report: per-node, per-block and total figures, exact and symbolic.

Takes: a checked IR graph, a batch size, a dtype, training or inference, and values for
the free sizes other than the batch (sequence lengths). Produces: a :class:`CostReport`
with parameters (trainable / frozen), FLOPs as FlopCounterMode counts them, other FLOPs,
activation bytes, bytes saved for backward, attention-matrix entries and bytes, and peak
memory estimates for inference and for one AdamW training step. Every figure is also a
polynomial in the free sizes (``B``, ``S``...), which :meth:`CostReport.formula` turns into a
sympy expression. No torch here, and no tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from archlang.cost.rules import COST_RULES, OpCost, numel
from archlang.ir import ops as O
from archlang.ir.adapters import param_table
from archlang.ir.dims import Dim, DimLike, add, mul
from archlang.ir.graph import Graph, Node
from archlang.ir.graph import name_levels as levels

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAM_STATE_BYTES = 8  # two fp32 moments per trainable parameter
FIGURES = ("params", "trainable_params", "flops", "other_flops", "activation_bytes", "saved_bytes",
           "attention_entries", "attention_bytes", "attention_global_bytes")


def _eval(d: DimLike, sizes: dict[str, int]) -> int:
    if isinstance(d, Dim):
        v = d.subs(sizes)
        if isinstance(v, Dim):
            missing = ", ".join(sorted(v.symbols))
            raise ValueError(f"give a value for the free size(s) {missing} (e.g. sizes={{'{missing[0]}': 128}})")
        return int(v)
    return int(d)


@dataclass
class NodeCost:
    name: str
    op: str
    scope: str
    params: int
    trainable_params: int
    flops: int
    other_flops: int
    activation_bytes: int
    saved_bytes: int
    attention_entries: int
    attention_bytes: int
    attention_per_head: int
    attention_global_per_head: int
    attention_global_bytes: int
    symbolic: dict[str, DimLike] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "symbolic"}


def params_by_node(graph: Graph) -> dict[str, tuple[int, int]]:
    """(all, trainable) parameter counts per node, LoRA weights included; the semantics of
    freeze/unfreeze/adapt are :mod:`archlang.ir.adapters`'s."""
    out: dict[str, tuple[int, int]] = {n.name: (0, 0) for n in graph.nodes}
    for p in param_table(graph):
        total, train = out[p.node]
        out[p.node] = (total + p.numel, train + (p.numel if p.trainable else 0))
    return out


class CostReport:
    """Figures for one graph at one batch size and dtype; see the module docstring."""

    def __init__(self, graph: Graph, batch: int = 1, dtype: str = "float32", train: bool = False,
                 sizes: dict[str, int] | None = None):
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype is one of {', '.join(DTYPE_BYTES)}, not {dtype!r}")
        self.graph, self.batch, self.dtype, self.train = graph, batch, dtype, train
        self.bytes_per = DTYPE_BYTES[dtype]
        free = sorted({s for n in graph.nodes for t in n.outputs for d in t.shape if isinstance(d, Dim)
                       for s in d.symbols} - {"B"})
        self.sizes = {"B": batch, **{s: 128 for s in free}, **(sizes or {})}
        self.free_sizes = ["B", *free]
        counts = params_by_node(graph)
        self.nodes: dict[str, NodeCost] = {}
        for n in graph.nodes:
            self.nodes[n.name] = self._node(n, *counts[n.name])

    # -- per node
    def _node(self, n: Node, params: int, trainable: int) -> NodeCost:
        ins = [self.graph.type_of(r) for r in n.inputs]
        c: OpCost = COST_RULES[type(n.op)](n.op, ins, n.outputs)
        act: DimLike = 0
        if not isinstance(n.op, O.Output | O.Identity):
            for t in n.outputs:
                act = add(act, numel(t))
        heads = getattr(n.op, "heads", 1)
        bpe = self.bytes_per
        saved_bytes = mul(c.saved, bpe)
        if self.train and isinstance(n.op, O.Dropout) and n.op.p > 0:
            saved_bytes = add(saved_bytes, numel(n.outputs[0]))  # the keep-mask, one byte per element
        if self.train and isinstance(n.op, O.DropPath) and n.op.p > 0:
            saved_bytes = add(saved_bytes, mul(n.outputs[0].shape[0], bpe))  # one scale per sample
        sym = {
            "flops": c.flops, "other_flops": c.other_flops,
            "activation_bytes": mul(act, bpe), "saved_bytes": saved_bytes if self.train else 0,
            "attention_entries": c.attn_entries, "attention_bytes": mul(c.attn_entries, bpe),
            "attention_global_bytes": mul(mul(mul(c.attn_global_per_head, heads), ins[0].shape[0]), bpe)
            if c.attn_entries else 0,
        }
        ev = {k: _eval(v, self.sizes) for k, v in sym.items()}
        return NodeCost(name=n.name, op=n.op.op, scope=n.scope, params=params, trainable_params=trainable,
                        flops=ev["flops"], other_flops=ev["other_flops"], activation_bytes=ev["activation_bytes"],
                        saved_bytes=ev["saved_bytes"], attention_entries=ev["attention_entries"],
                        attention_bytes=ev["attention_bytes"],
                        attention_per_head=_eval(c.attn_per_head, self.sizes),
                        attention_global_per_head=_eval(c.attn_global_per_head, self.sizes),
                        attention_global_bytes=ev["attention_global_bytes"], symbolic={**sym, "params": params})

    # -- totals
    def _total(self, key: str) -> int:
        return sum(getattr(n, key) for n in self.nodes.values())

    @property
    def params(self) -> int:
        return self._total("params")

    @property
    def trainable_params(self) -> int:
        return self._total("trainable_params")

    @property
    def frozen_params(self) -> int:
        return self.params - self.trainable_params

    @property
    def flops(self) -> int:
        return self._total("flops")

    @property
    def other_flops(self) -> int:
        return self._total("other_flops")

    @property
    def activation_bytes(self) -> int:
        return self._total("activation_bytes")

    @property
    def saved_bytes(self) -> int:
        return self._total("saved_bytes")

    @property
    def attention_entries(self) -> int:
        return self._total("attention_entries")

    @property
    def attention_bytes(self) -> int:
        return self._total("attention_bytes")

    @property
    def attention_global_bytes(self) -> int:
        return self._total("attention_global_bytes")

    def attention_layers(self) -> list[NodeCost]:
        return [n for n in self.nodes.values() if n.attention_entries]

    # -- memory
    def peak_inference_bytes(self) -> tuple[int, str]:
        """Parameters plus the largest set of live activations (and the attention scores
        being computed), walking the graph in order. Returns (bytes, node at the peak)."""
        last_use: dict[str, int] = {}
        for i, n in enumerate(self.graph.nodes):
            for r in n.inputs:
                last_use[r.node] = i
        live: dict[str, int] = {}
        peak, at = 0, ""
        for i, n in enumerate(self.graph.nodes):
            nc = self.nodes[n.name]
            live[n.name] = nc.activation_bytes
            now = sum(live.values()) + nc.attention_bytes
            if now > peak:
                peak, at = now, n.name
            for r in n.inputs:
                if last_use.get(r.node) == i:
                    live.pop(r.node, None)
        return self.params * self.bytes_per + peak, at

    def peak_training_bytes(self) -> tuple[int, str]:
        """Parameters + gradients + AdamW state for the trainable ones + everything saved
        for backward + the forward's transient peak. Returns (bytes, largest saver)."""
        trainable = self.trainable_params
        weights = self.params * self.bytes_per + trainable * (self.bytes_per + ADAM_STATE_BYTES)
        saved = sum(n.saved_bytes for n in self.nodes.values()) if self.train else \
            sum(_eval(self._saved_sym(n), self.sizes) for n in self.graph.nodes)
        transient = max((n.attention_bytes + n.activation_bytes for n in self.nodes.values()), default=0)
        biggest = max(self.nodes.values(), key=lambda n: n.saved_bytes or n.attention_bytes).name
        return weights + saved + transient, biggest

    def _saved_sym(self, n: Node) -> DimLike:
        ins = [self.graph.type_of(r) for r in n.inputs]
        return mul(COST_RULES[type(n.op)](n.op, ins, n.outputs).saved, self.bytes_per)

    def peak_bytes(self) -> tuple[int, str]:
        return self.peak_training_bytes() if self.train else self.peak_inference_bytes()

    # -- hierarchy
    def breakdown(self, depth: int = 1) -> list[tuple[str, dict[str, int]]]:
        """Rows of (path, figures) for the hierarchy cut at ``depth`` levels; an index joins
        its parent (``layers.1`` is one level), so depth 1 of Swin-T is its embedding,
        four stages, norm and head."""
        rows: dict[str, dict[str, int]] = {}
        for n in self.graph.nodes:
            if isinstance(n.op, O.Input | O.Output):
                continue
            key = ".".join(levels(n.name)[:depth])
            agg = rows.setdefault(key, {k: 0 for k in FIGURES if k != "attention_global_bytes"} | {"nodes": 0})
            nc = self.nodes[n.name]
            for k in agg:
                if k == "nodes":
                    agg[k] += 1
                else:
                    agg[k] += getattr(nc, k)
        return list(rows.items())

    # -- formulas
    def symbolic(self, figure: str, node: str | None = None) -> DimLike:
        if figure not in FIGURES:
            raise KeyError(f"figure is one of {', '.join(FIGURES)}, not {figure!r}")
        nodes = [self.nodes[node]] if node else list(self.nodes.values())
        total: DimLike = 0
        for n in nodes:
            if figure == "trainable_params":
                total = add(total, n.trainable_params)
            else:
                total = add(total, n.symbolic.get(figure, 0))
        return total

    def formula(self, figure: str, node: str | None = None):
        """The figure as a sympy expression in the free sizes (``B``, ``S``, ...)."""
        return to_sympy(self.symbolic(figure, node))

    def local_formula(self, node: str):
        """An attention layer's score-matrix bytes in its own sizes, with their values:
        ``B*h*N**2*b`` (global), ``B*h*M**2*H*W*b`` (windows of M x M on an H x W grid),
        ``B*h*R**2*H*W*b`` (local R x R), ``B*h*N*M*b`` (cross). Returns ``(expr, values)``."""
        import sympy

        op = self.graph.node(node).op
        ins = [self.graph.type_of(r) for r in self.graph.node(node).inputs]
        B, h, b = sympy.symbols("B h b", positive=True, integer=True)
        values: dict[str, Any] = {"B": self.batch, "h": getattr(op, "heads", 1), "b": self.bytes_per}
        if isinstance(op, O.WindowAttention):
            H, W, M = sympy.symbols("H W M", positive=True, integer=True)
            values |= {"H": op.grid[0] + op.pad[0], "W": op.grid[1] + op.pad[1], "M": op.window[0]}
            return B * h * M**2 * H * W * b, values
        if isinstance(op, O.LocalAttention):
            H, W, R = sympy.symbols("H W R", positive=True, integer=True)
            values |= {"H": ins[0].shape[1], "W": ins[0].shape[2], "R": op.kernel}
            return B * h * R**2 * H * W * b, values
        if isinstance(op, O.CrossAttention):
            N, M = sympy.symbols("N M", positive=True, integer=True)
            values |= {"N": ins[0].shape[1], "M": ins[1].shape[1]}
            return B * h * N * M * b, values
        if isinstance(op, O.Attention | O.PooledAttention):
            N = sympy.Symbol("N", positive=True, integer=True)
            values |= {"N": ins[0].shape[1]}
            if isinstance(op, O.PooledAttention):
                Nk = sympy.Symbol("N_kv", positive=True, integer=True)
                values |= {"N": op.cls + op.out_grid()[0] * op.out_grid()[1],
                           "N_kv": op.cls + op.kv_grid()[0] * op.kv_grid()[1]}
                return B * h * N * Nk * b, values
            return B * h * N**2 * b, values
        raise KeyError(f"`{node}` is not an attention layer")

    def to_json(self) -> dict[str, Any]:
        peak_inf, at_inf = self.peak_inference_bytes()
        peak_train, at_train = self.peak_training_bytes()
        return {
            "arch": self.graph.arch, "batch": self.batch, "dtype": self.dtype, "train": self.train,
            "sizes": self.sizes, "params": self.params, "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params, "flops": self.flops, "other_flops": self.other_flops,
            "activation_bytes": self.activation_bytes, "saved_bytes": self.saved_bytes,
            "attention_entries": self.attention_entries, "attention_bytes": self.attention_bytes,
            "attention_global_bytes": self.attention_global_bytes,
            "peak_inference_bytes": peak_inf, "peak_inference_at": at_inf,
            "peak_training_bytes": peak_train, "peak_training_largest": at_train,
            "formulas": {k: str(self.formula(k)) for k in ("flops", "activation_bytes", "attention_bytes")},
            "attention_layers": [
                {"node": n.name, "entries": n.attention_entries, "bytes": n.attention_bytes,
                 "entries_per_head": n.attention_per_head, "global_entries_per_head": n.attention_global_per_head}
                for n in self.attention_layers()],
            "nodes": [n.to_json() for n in self.nodes.values()],
        }

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=1)


def to_sympy(d: DimLike):
    import sympy

    if not isinstance(d, Dim):
        return sympy.Integer(d)
    expr = sympy.Integer(0)
    for t in d.terms:
        mono = sympy.Rational(t.num, t.den)
        for sym, e in t.powers:
            mono *= sympy.Symbol(sym, positive=True, integer=True) ** e
        expr += mono
    return expr


def cost_graph(graph: Graph, batch: int = 1, dtype: str = "float32", train: bool = False,
               sizes: dict[str, int] | None = None) -> CostReport:
    return CostReport(graph, batch=batch, dtype=dtype, train=train, sizes=sizes)


def budget_diagnostic(rep: CostReport, max_bytes: int):
    """``None`` when the estimated peak fits ``max_bytes``; else an E0901 diagnostic naming
    the node responsible for most of it, with its formula in the free sizes."""
    from archlang.diagnostics import Diagnostic, Label
    from archlang.units import human_bytes

    peak, at = rep.peak_bytes()
    if peak <= max_bytes:
        return None
    if rep.train:
        node = max(rep.nodes.values(), key=lambda n: n.saved_bytes + n.attention_bytes)
        figure = "saved_bytes" if node.saved_bytes >= node.attention_bytes else "attention_bytes"
    else:
        node = rep.nodes[at]
        figure = "attention_bytes" if node.attention_bytes >= node.activation_bytes else "activation_bytes"
    share = getattr(node, figure)
    span = rep.graph.node(node.name).span
    notes = []
    scope = next((sc for sc in rep.graph.scopes if sc.path == node.scope), None)
    if scope is not None:
        notes.append(Label(f"in `{scope.path}` (block `{scope.block}`), created here", scope.span))
    what = "a training step" if rep.train else "inference"
    return Diagnostic(
        "E0901", f"{what} needs ~{human_bytes(peak)} at batch {rep.batch} ({rep.dtype}), over the budget of "
                 f"{human_bytes(max_bytes)}", span,
        notes=[*notes, Label(f"`{node.name}` ({node.op}) alone holds {human_bytes(share)} of {figure.replace('_', ' ')}: "
                     f"{figure} = {rep.formula(figure, node.name)}")],
        help="lower the batch, the input size or the width, use --dtype bfloat16, or raise --max-memory")
