"""The cost report: per-node, per-block and total figures, exact and symbolic.

Takes: a checked IR graph, a batch size, a dtype, training or inference, and values for
the free sizes other than the batch (sequence lengths). Produces: a :class:`CostReport`
with parameters (trainable / frozen), FLOPs as FlopCounterMode counts them, other FLOPs,
activation bytes, bytes saved for backward, attention-matrix entries and bytes, the bytes of
the buffers the built model registers (sinusoid tables, masks, index tables), and peak
memory estimates for inference and for one AdamW training step (both hold the parameters
and buffers in the build dtype). Every figure is also a polynomial in the free sizes (``B``,
``S``...), which :meth:`CostReport.formula` turns into a sympy expression. No torch here,
and no tensors.

Time is linear in the number of nodes: nodes with the same op and tensor types (the
repeated blocks of a deep model) share one evaluation of their cost rule, and totals add
each distinct formula once, times its count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from archlang.cost.rules import COST_RULES, OpCost, numel
from archlang.ir import ops as O
from archlang.ir.adapters import param_table
from archlang.ir.dims import Dim, DimLike, add, mul
from archlang.ir.graph import Graph, Node
from archlang.ir.graph import name_levels as levels
from archlang.ir.types import FLOAT_DTYPES
from archlang.perf import gc_paused

_VIEWS = (O.Rearrange, O.Identity, O.Take, O.SliceOp, O.Split)  # outputs that share their input's storage
DTYPE_BYTES = FLOAT_DTYPES
ADAM_STATE_BYTES = 8  # two fp32 moments per trainable parameter
FIGURES = ("params", "trainable_params", "flops", "other_flops", "activation_bytes", "saved_bytes",
           "attention_entries", "attention_bytes", "attention_global_bytes", "buffer_bytes")


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
    buffer_bytes: int = 0  # buffers the lowering registers, floating ones in the build dtype
    build_scratch_bytes: int = 0  # temporaries while its module is constructed
    symbolic: dict[str, DimLike] = field(default_factory=dict, repr=False)
    #  bytes this node saves for backward in a training step, also in an inference report
    #  (which then reports saved_bytes = 0); the training peak of any report uses it
    saved_train_bytes: int = field(default=0, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("symbolic", "saved_train_bytes")}


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
        _check_size("batch", batch)
        for k, v in (sizes or {}).items():
            _check_size(f"the free size {k}", v)
        self.graph, self.batch, self.dtype, self.train = graph, batch, dtype, train
        self.bytes_per = DTYPE_BYTES[dtype]
        free = sorted({s for n in graph.nodes for t in n.outputs for d in t.shape if isinstance(d, Dim)
                       for s in d.symbols} - {"B"})
        self.sizes = {"B": batch, **{s: 128 for s in free}, **(sizes or {})}
        self.free_sizes = ["B", *free]
        self.nodes: dict[str, NodeCost] = {}
        memo: dict[tuple, tuple] = {}
        with gc_paused():
            counts = params_by_node(graph)
            hits = [self._hit(n, memo) for n in graph.nodes]
            saved = self._saved(hits, counts)
            for n, hit, sv in zip(graph.nodes, hits, saved, strict=True):
                self.nodes[n.name] = self._node(n, *counts[n.name], hit, sv)

    # -- per node
    def _hit(self, n: Node, memo: dict) -> tuple:
        ins = tuple(self.graph.type_of(r) for r in n.inputs)
        key: tuple | None = (type(n.op), n.op, ins, n.outputs)
        try:
            hit = memo.get(key)
        except TypeError:  # an op with an unhashable attribute: evaluate it alone
            key, hit = None, None
        if hit is None:
            hit = self._figures(n, list(ins))
            if key is not None:
                memo[key] = hit
        return hit

    def _saved(self, hits: list[tuple], counts: dict[str, tuple[int, int]]) -> list[tuple[DimLike, int]]:
        """Bytes each node saves for backward in a training step, symbolic and evaluated.

        A graph tensor is counted once, by the first node that keeps it (a ReLU's output is
        also the next convolution's input); views (rearrange, take, slice, split, identity,
        dropout of probability 0) are their input's storage; nothing is saved where no
        gradient flows (before the first trainable weight), and an input kept only for a
        weight's gradient (linear, conv) is not kept when that weight is frozen."""
        root: dict[tuple[str, int], tuple[str, int]] = {}
        req: dict[str, bool] = {}
        charged: set[tuple[str, int]] = set()
        memo: dict[tuple, tuple[DimLike, int]] = {}
        bpe = self.bytes_per
        out: list[tuple[DimLike, int]] = []
        for n, (_, _, keep) in zip(self.graph.nodes, hits, strict=True):
            internal, internal_ev, saves_in, weight_in, saves_out = keep
            ins = [root.get((r.node, r.index), (r.node, r.index)) for r in n.inputs]
            trainable = counts[n.shares or n.name][1] > 0  # a shared layer trains its original's weights
            rg = trainable or any(req.get(r.node, False) for r in n.inputs)
            req[n.name] = rg
            op = n.op
            if ins and (isinstance(op, _VIEWS) or (isinstance(op, O.Dropout | O.DropPath) and op.p == 0)):
                for i in range(len(n.outputs)):
                    root[(n.name, i)] = ins[0]
                out.append((0, 0))
                continue
            if not rg:
                out.append((0, 0))
                continue
            refs = [ins[i] for i in saves_in] + ([ins[i] for i in weight_in] if trainable else []) \
                + ([(n.name, 0)] if saves_out else [])
            new = []
            for r in refs:
                if r not in charged:
                    charged.add(r)
                    new.append(r)
            types = tuple(self.graph.by_name[r[0]].outputs[r[1]] for r in new)
            key = (id(internal), types)
            hit = memo.get(key)
            if hit is None:
                total: DimLike = internal
                for t in types:
                    total = add(total, mul(numel(t), bpe))
                hit = (total, _eval(total, self.sizes)) if types else (internal, internal_ev)
                memo[key] = hit
            out.append(hit)
        return out

    def _node(self, n: Node, params: int, trainable: int, hit: tuple, saved: tuple[DimLike, int]) -> NodeCost:
        sym, ev, _ = hit
        sym = {**sym, "saved_bytes": saved[0] if self.train else 0}
        ev = {**ev, "saved_bytes": saved[1] if self.train else 0, "saved_train_bytes": saved[1]}
        return NodeCost(name=n.name, op=n.op.op, scope=n.scope, params=params, trainable_params=trainable,
                        flops=ev["flops"], other_flops=ev["other_flops"], activation_bytes=ev["activation_bytes"],
                        saved_bytes=ev["saved_bytes"], attention_entries=ev["attention_entries"],
                        attention_bytes=ev["attention_bytes"], attention_per_head=ev["attention_per_head"],
                        attention_global_per_head=ev["attention_global_per_head"],
                        attention_global_bytes=ev["attention_global_bytes"], buffer_bytes=ev["buffer_bytes"],
                        build_scratch_bytes=ev["build_scratch_bytes"],
                        symbolic={**sym, "params": params}, saved_train_bytes=ev["saved_train_bytes"])

    def _figures(self, n: Node, ins: list) -> tuple[dict[str, DimLike], dict[str, int], tuple]:
        """A node's figures from its op and tensor types alone: (symbolic, evaluated, what it
        keeps for backward: internal bytes symbolic and evaluated, the inputs it saves, those
        it saves for its weights, whether it saves its output); saved bytes are the graph's
        (:meth:`_saved`)."""
        c: OpCost = COST_RULES[type(n.op)](n.op, ins, n.outputs)
        act: DimLike = 0
        if not isinstance(n.op, O.Output | O.Identity):
            for t in n.outputs:
                act = add(act, numel(t))
        heads = getattr(n.op, "heads", 1)
        bpe = self.bytes_per
        saved_bytes = mul(c.saved, bpe)
        if isinstance(n.op, O.Dropout) and n.op.p > 0:
            saved_bytes = add(saved_bytes, numel(n.outputs[0]))  # the keep-mask, one byte per element
        if isinstance(n.op, O.DropPath) and n.op.p > 0:
            saved_bytes = add(saved_bytes, mul(n.outputs[0].shape[0], bpe))  # one scale per sample
        sym = {
            "flops": c.flops, "other_flops": c.other_flops,
            "activation_bytes": mul(act, bpe),
            "attention_entries": c.attn_entries, "attention_bytes": mul(c.attn_entries, bpe),
            "attention_global_bytes": mul(mul(mul(c.attn_global_per_head, heads), ins[0].shape[0]), bpe)
            if c.attn_entries else 0,
            "buffer_bytes": c.buffer_bytes(bpe),
        }
        ev = {k: _eval(v, self.sizes) for k, v in sym.items()}
        ev["attention_per_head"] = _eval(c.attn_per_head, self.sizes)
        ev["build_scratch_bytes"] = c.build_scratch
        ev["attention_global_per_head"] = _eval(c.attn_global_per_head, self.sizes)
        keep = (saved_bytes, _eval(saved_bytes, self.sizes), c.saves_inputs, c.weight_inputs, c.saves_output)
        return sym, ev, keep

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

    @property
    def buffer_bytes(self) -> int:
        """Bytes of every buffer the built model registers (floating ones in the build dtype)."""
        return self._total("buffer_bytes")

    @property
    def param_bytes(self) -> int:
        """Bytes of the parameters in the build dtype (LoRA weights included)."""
        return self.params * self.bytes_per

    def attention_layers(self) -> list[NodeCost]:
        return [n for n in self.nodes.values() if n.attention_entries]

    # -- memory
    def resident_bytes(self) -> int:
        """What the built model holds before any input: parameters and buffers, in the
        build dtype (index buffers in int64)."""
        return self.param_bytes + self.buffer_bytes

    def build_peak_bytes(self) -> tuple[int, str]:
        """The high-water mark of constructing the model: everything resident plus the
        largest temporaries one module needs while it is built (a sinusoidal table's
        float32 sines). Returns (bytes, that module's node, or "" when none needs any)."""
        big = max(self.nodes.values(), key=lambda n: n.build_scratch_bytes, default=None)
        scratch = big.build_scratch_bytes if big is not None else 0
        return self.resident_bytes() + scratch, big.name if scratch else ""

    def inference_parts(self) -> dict[str, Any]:
        """The inference peak, part by part: ``params`` and ``buffers`` (bytes, resident),
        ``activations`` (the live activations at the peak, the peak node's output included)
        and ``attention`` (the scores the peak node computes), their sum ``peak``, and the
        node ``at`` the peak. One walk over the graph in order, linear in its nodes."""
        last_use: dict[str, int] = {}
        for i, n in enumerate(self.graph.nodes):
            for r in n.inputs:
                last_use[r.node] = i
        live: dict[str, int] = {}
        total = 0  # sum of live.values(), kept up to date
        peak, acts, attn = 0, 0, 0
        at = self.graph.nodes[0].name if self.graph.nodes else ""
        for i, n in enumerate(self.graph.nodes):
            nc = self.nodes[n.name]
            total += nc.activation_bytes - live.get(n.name, 0)
            live[n.name] = nc.activation_bytes
            now = total + nc.attention_bytes
            if now > peak:
                peak, at, acts, attn = now, n.name, total, nc.attention_bytes
            for r in n.inputs:
                if last_use.get(r.node) == i and r.node in live:
                    total -= live.pop(r.node)
        params, buffers = self.param_bytes, self.buffer_bytes
        build, build_at = self.build_peak_bytes()
        if build > params + buffers + peak:  # building the model needs more than running it
            return {"params": params, "buffers": buffers, "activations": 0, "attention": 0,
                    "build_scratch": build - params - buffers, "peak": build, "at": build_at}
        return {"params": params, "buffers": buffers, "activations": acts, "attention": attn, "build_scratch": 0,
                "peak": params + buffers + peak, "at": at}

    def peak_inference_bytes(self) -> tuple[int, str]:
        """Parameters and buffers plus the largest set of live activations (and the attention
        scores being computed), walking the graph in order, or the build's high-water mark
        when that is higher. Returns (bytes, node at the peak); the node is never empty for
        a graph with nodes."""
        parts = self.inference_parts()
        return parts["peak"], parts["at"]

    def training_parts(self) -> dict[str, Any]:
        """The training-step peak, part by part: ``params`` (weights), ``grads`` and
        ``optimizer`` (AdamW moments) for the trainable ones, ``buffers``, ``saved`` (for
        backward), ``transient`` (the forward's largest activation plus attention), their sum
        ``peak``, and ``largest``, the node that saves the most (or holds the most attention)."""
        trainable = self.trainable_params
        nodes = self.nodes.values()
        saved = sum(n.saved_train_bytes for n in nodes)
        transient = max((n.attention_bytes + n.activation_bytes for n in nodes), default=0)
        largest = max(nodes, key=lambda n: (n.saved_train_bytes or n.attention_bytes), default=None)
        parts = {"params": self.param_bytes, "grads": trainable * self.bytes_per,
                 "optimizer": trainable * ADAM_STATE_BYTES, "buffers": self.buffer_bytes, "saved": saved,
                 "transient": transient}
        step = sum(parts.values())
        build, _ = self.build_peak_bytes()
        return {**parts, "peak": max(step, build), "largest": largest.name if largest else ""}

    def peak_training_bytes(self) -> tuple[int, str]:
        """Parameters + gradients + AdamW state for the trainable ones + buffers + everything
        saved for backward + the forward's transient peak. Returns (bytes, largest saver)."""
        parts = self.training_parts()
        return parts["peak"], parts["largest"]

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
        if figure == "trainable_params":
            return sum(n.trainable_params for n in nodes)
        return sum_dims(n.symbolic.get(figure, 0) for n in nodes)

    def formula(self, figure: str, node: str | None = None):
        """The figure as a sympy expression in the free sizes (``B``, ``S``, ...)."""
        return to_sympy(self.symbolic(figure, node))

    def local_formula(self, node: str):
        """An attention layer's score-matrix bytes in its own sizes, with their values:
        ``B*h*N**2*b`` (global), ``B*h*M**2*H*W*b`` (windows of M x M on an H x W grid),
        ``B*h*(M+R-1)**2*H*W*b`` (local R x R, computed in
        blocks of M x M queries with their halo of keys), ``B*h*N*M*b`` (cross). Returns ``(expr, values)``."""
        import sympy

        op = self.graph.node(node).op
        ins = [self.graph.type_of(r) for r in self.graph.node(node).inputs]
        B, h, b = sympy.symbols("B h b", positive=True, integer=True)
        values: dict[str, Any] = {"B": self.batch, "h": getattr(op, "heads", 1), "b": self.bytes_per}
        if isinstance(op, O.WindowAttention):
            H, W, M = sympy.symbols("H W M", positive=True, integer=True)
            values |= {"H": op.grid[0] + op.pad[0], "W": op.grid[1] + op.pad[1], "M": op.window[0]}
            return B * h * M**2 * H * W * b, values
        if isinstance(op, O.LocalAttention):  # blocks of M x M queries, each with its halo of keys
            from archlang.cost.rules import local_halo_axis
            from archlang.ir.dims import mul

            H, W, R, M = sympy.symbols("H W R M", positive=True, integer=True)
            (mh, nh), (mw, nw) = local_halo_axis(op.kernel, ins[0].shape[1]), local_halo_axis(op.kernel, ins[0].shape[2])
            values |= {"H": mul(nh, mh), "W": mul(nw, mw), "R": op.kernel}  # the grid padded to whole blocks
            if mh == mw:
                return B * h * (M + R - 1)**2 * H * W * b, values | {"M": mh}
            Mh, Mw = sympy.symbols("M_h M_w", positive=True, integer=True)
            return B * h * (Mh + R - 1) * (Mw + R - 1) * H * W * b, values | {"M_h": mh, "M_w": mw}
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
        with gc_paused():
            return self._to_json()

    def _to_json(self) -> dict[str, Any]:
        peak_inf, at_inf = self.peak_inference_bytes()
        peak_train, at_train = self.peak_training_bytes()
        return {
            "arch": self.graph.arch, "batch": self.batch, "dtype": self.dtype, "train": self.train,
            "sizes": self.sizes, "params": self.params, "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params, "flops": self.flops, "other_flops": self.other_flops,
            "activation_bytes": self.activation_bytes, "saved_bytes": self.saved_bytes,
            "attention_entries": self.attention_entries, "attention_bytes": self.attention_bytes,
            "attention_global_bytes": self.attention_global_bytes,
            "param_bytes": self.param_bytes, "buffer_bytes": self.buffer_bytes,
            "build_peak_bytes": self.build_peak_bytes()[0],
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


def sum_dims(values: Iterable[DimLike]) -> DimLike:
    """The sum of many sizes in time linear in their number: constants are added as ints,
    and each distinct polynomial once, times how often it occurs (repeated blocks share
    their figures' objects, so grouping by identity finds them)."""
    const = 0
    groups: dict[int, list] = {}
    for v in values:
        if isinstance(v, int):
            const += v
        else:
            g = groups.get(id(v))
            if g is None:
                groups[id(v)] = [v, 1]
            else:
                g[1] += 1
    total: DimLike = const
    for v, k in groups.values():
        total = add(total, mul(v, k))
    return total


MAX_SIZE = 2**60  # a batch or free size beyond this is a typo; bounded so every figure stays countable


def _check_size(what: str, v: Any) -> None:
    """A batch or free size is a whole number from 1 to :data:`MAX_SIZE`."""
    tail = "" if what == "batch" else " (a free size, like the batch, must be at least 1)"
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be a whole number at least 1, not {v!r}{tail}")
    if v < 1:
        raise ValueError(f"{what} must be at least 1, not {v}{tail}")
    if v > MAX_SIZE:
        raise ValueError(f"{what} must be at most 2**60 = {MAX_SIZE:,}, not {v:,}")


def to_sympy(d: DimLike):
    """A size as a sympy expression; a floor atom becomes ``sympy.floor``."""
    import sympy

    if not isinstance(d, Dim):
        return sympy.Integer(d)
    expr = sympy.Integer(0)
    for t in d.terms:
        mono = sympy.Rational(t.num, t.den)
        for sym, e in t.powers:
            atom = sympy.Symbol(sym, positive=True, integer=True) if isinstance(sym, str) \
                else sympy.floor(to_sympy(sym.arg) / sym.den)
            mono *= atom ** e
        expr += mono
    return expr


def cost_graph(graph: Graph, batch: int = 1, dtype: str = "float32", train: bool = False,
               sizes: dict[str, int] | None = None) -> CostReport:
    return CostReport(graph, batch=batch, dtype=dtype, train=train, sizes=sizes)


def param_and_buffer_bytes(rep: CostReport) -> int:
    """Bytes the built model holds before any input (parameters and buffers in the build
    dtype): the least a budget must allow, whatever the batch."""
    return rep.resident_bytes()


def _hb(n: int) -> str:
    """Human bytes that never overflow (a batch of 10**400 still gets a message)."""
    from archlang.units import human_bytes

    try:
        return human_bytes(n)
    except OverflowError:
        return f"{n:.3e} B"


_FIGURE_WORDS = {"params": "parameters", "buffer_bytes": "buffers", "saved_bytes": "bytes saved for backward",
                 "attention_bytes": "attention bytes", "activation_bytes": "activation bytes"}


def budget_diagnostic(rep: CostReport, max_bytes: int):
    """``None`` when the estimated peak fits ``max_bytes``; else an E0901 diagnostic that
    counts the parameters, buffers, activations and attention of the peak, and names the
    node responsible for the largest part of it, with its formula in the free sizes.
    Never raises for a report."""
    from archlang.diagnostics import Diagnostic, Label

    nodes = list(rep.nodes.values())
    if rep.train:
        parts = rep.training_parts()
        weights = parts["params"] + parts["grads"] + parts["optimizer"]
        acts = parts["saved"] + parts["transient"]
        detail = (f"{_hb(parts['params'])} of parameters, {_hb(parts['grads'] + parts['optimizer'])} of gradients "
                  f"and AdamW state, {_hb(parts['buffers'])} of buffers, {_hb(parts['saved'])} of activations "
                  f"saved for backward and {_hb(parts['transient'])} of transient activations and attention")
    else:
        parts = rep.inference_parts()
        weights, acts = parts["params"], parts["activations"] + parts["attention"]
        detail = (f"{_hb(parts['params'])} of parameters, {_hb(parts['buffers'])} of buffers, "
                  f"{_hb(parts['activations'])} of live activations and {_hb(parts['attention'])} of attention "
                  f"matrices" + (f", {_hb(parts['build_scratch'])} of temporaries while it is built"
                                 if parts["build_scratch"] else ""))
    peak = parts["peak"]
    if peak <= max_bytes:
        return None
    node: NodeCost | None = None
    figure, share = "", 0
    if nodes and parts["buffers"] + parts.get("build_scratch", 0) >= max(weights, acts):
        node = max(nodes, key=lambda n: n.buffer_bytes)
        figure, share = "buffer_bytes", node.buffer_bytes
    elif nodes and weights > acts:
        node = max(nodes, key=lambda n: n.params)
        figure, share = "params", node.params * rep.bytes_per
    elif nodes and rep.train:
        node = max(nodes, key=lambda n: n.saved_bytes + n.attention_bytes)
        figure = "saved_bytes" if node.saved_bytes >= node.attention_bytes else "attention_bytes"
        share = getattr(node, figure)
    elif nodes:
        node = rep.nodes.get(parts["at"]) or nodes[0]
        figure = "attention_bytes" if node.attention_bytes >= node.activation_bytes else "activation_bytes"
        share = getattr(node, figure)
    notes: list = []
    span = None
    if node is not None:
        gnode = rep.graph.by_name.get(node.name)
        span = gnode.span if gnode is not None else None
        scope = next((sc for sc in rep.graph.scopes if sc.path == node.scope), None)
        if scope is not None:
            notes.append(Label(f"in `{scope.path}` (block `{scope.block}`), created here", scope.span))
        unit = f" (x {rep.bytes_per} bytes)" if figure == "params" else ""
        scratch = (f"; building it holds {_hb(node.build_scratch_bytes)} more of temporaries"
                   if figure == "buffer_bytes" and node.build_scratch_bytes else "")
        notes.append(Label(f"`{node.name}` ({node.op}) alone holds {_hb(share)} of {_FIGURE_WORDS[figure]}: "
                           f"{figure} = {rep.formula(figure, node.name)}{unit}{scratch}"))
    what = "a training step" if rep.train else "inference"
    hint = ("lower the batch, the input size or the width, use --dtype bfloat16, or raise --max-memory"
            if figure != "buffer_bytes" else
            "buffers are allocated when the model is built: shorten the table (e.g. max_len), use --dtype "
            "bfloat16, or raise --max-memory")
    return Diagnostic(
        "E0901", f"{what} needs ~{_hb(peak)} at batch {rep.batch} ({rep.dtype}): {detail}; over the budget of "
                 f"{_hb(max_bytes)}", span, notes=notes, help=hint)
