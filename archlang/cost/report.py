"""The cost report: per-node, per-block and total figures, exact and symbolic.

Takes: a checked IR graph, a batch size, a dtype, training or inference, and values for
the free sizes other than the batch (sequence lengths). Produces: a :class:`CostReport`
with parameters (trainable / frozen), FLOPs as FlopCounterMode counts them, other FLOPs,
activation bytes, bytes saved for backward, attention-matrix entries and bytes, the bytes of
the buffers the built model registers (sinusoid tables, masks, index tables), and peak
memory estimates for inference and for one AdamW training step (both hold the parameters
and buffers in the build dtype), simulated tensor by tensor (:mod:`archlang.cost.schedule`;
``device`` picks the CPU's or CUDA's saved-tensor and optimizer rules; ``checkpointed``
block instances of the training peak are recomputed in backward). Every figure is also a
polynomial in the free sizes (``B``, ``S``...), which :meth:`CostReport.formula` turns into a
sympy expression. No torch here, and no tensors.

Time is linear in the number of nodes: nodes with the same op and tensor types (the
repeated blocks of a deep model) share one evaluation of their cost rule, and totals add
each distinct formula once, times its count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from archlang.cost.rules import COST_RULES, INT64_BYTES, OpCost, numel
from archlang.cost.schedule import Optimizer, Peak, Step, simulate
from archlang.ir import ops as O
from archlang.ir.adapters import lora_targets, param_table
from archlang.ir.dims import Dim, DimLike, add, mul, product
from archlang.ir.graph import Graph, Node
from archlang.ir.graph import name_levels as levels
from archlang.ir.types import FLOAT_DTYPES
from archlang.perf import gc_paused

_VIEWS = (O.Rearrange, O.Identity, O.Take, O.SliceOp, O.Split)  # outputs that share their input's storage


def _is_view(op: O.OpBase, layout: tuple[int, ...] | None = None) -> bool:
    """Whether the op's output shares its input's storage: a rearrange does unless it merges
    axes that are not adjacent, in order, in its input's memory (``b c t f -> b t (c f)``
    copies a contiguous input; ``b c h w -> b (h w) c`` is a view). ``layout`` is the input's
    memory order (:func:`_rearranged_layout`); None is contiguous."""
    if not isinstance(op, _VIEWS):
        return False
    if isinstance(op, O.Rearrange):
        return _rearranged_layout(op, layout) is not None
    return True


def _rearranged_layout(op: O.Rearrange, layout: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The memory order of a rearrange's output (its dims, outermost first) when it is a view of
    an input laid out in ``layout`` (None: contiguous), or None when it must copy (a merged
    group whose axes are not adjacent and in order in memory)."""
    lhs = op.lhs
    order = layout if layout is not None and len(layout) == len(lhs) else tuple(range(len(lhs)))
    physical = [a for d in order for a in lhs[d]]  # elementary axes, outermost first in memory
    first = []
    for g in op.rhs:
        pos = [physical.index(a) for a in g if a in physical]
        if len(pos) > 1 and pos != list(range(pos[0], pos[0] + len(pos))):
            return None
        first.append(pos[0] if pos else len(physical))
    return tuple(sorted(range(len(op.rhs)), key=lambda i: first[i]))


# ops whose output is laid out in memory as their first input (pointwise work keeps strides)
_SAME_LAYOUT = (O.Activation, O.Scale, O.Dropout, O.DropPath, O.Identity)
_SAME_LAYOUT_TAGS = frozenset({"rope", "sqrt", "rsqrt", "exp", "log", "absolute", "neg", "sin", "cos", "pow", "clamp"})


def _layouts(graph: Graph, device: str) -> dict[str, tuple[int, ...]]:
    """The memory order of each node's first output where it is not contiguous: a rearrange
    that permutes without copying (``b n (h d) -> b h n d``) gives a strided view, pointwise ops
    keep their input's strides, and on the CPU SDPA's fused kernel writes its output in its
    query's layout, so Llama's ``rearrange(attend(...), "b h n d -> b n (h d)")`` is a view
    (measured: the CPU flash kernel's output strides follow q)."""
    out: dict[str, tuple[int, ...]] = {}
    for n in graph.nodes:
        if not n.inputs:
            continue
        src = out.get(n.inputs[0].node) if n.inputs[0].index == 0 else None
        op = n.op
        lay: tuple[int, ...] | None = None
        if isinstance(op, O.Rearrange):
            lay = _rearranged_layout(op, src)
        elif isinstance(op, _SAME_LAYOUT) or getattr(op, "op", "") in _SAME_LAYOUT_TAGS:
            lay = src
        elif isinstance(op, O.Binary) and n.outputs and src is not None:
            first = graph.by_name[n.inputs[0].node].outputs[0]
            lay = src if first.shape == n.outputs[0].shape else None
        elif getattr(op, "op", "") == "attend" and device == "cpu":
            from archlang.ops.attention import _cpu_math  # the fused kernel's output follows q

            ins = [graph.by_name[r.node].outputs[r.index] for r in n.inputs]
            lay = src if not _cpu_math(op, ins) else None
        if lay is not None and lay != tuple(range(len(lay))):
            out[n.name] = lay
    return out


DTYPE_BYTES = FLOAT_DTYPES
DEVICES = ("cpu", "cuda")  # the saved-tensor and optimizer rules differ (see archlang.cost.rules)
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
                 sizes: dict[str, int] | None = None, device: str = "cpu", inference_build: bool = False):
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype is one of {', '.join(DTYPE_BYTES)}, not {dtype!r}")
        if device not in DEVICES:
            raise ValueError(f"device is one of {', '.join(DEVICES)}, not {device!r}")
        if inference_build and train:
            raise ValueError("the inference build is eval-only: no training step to cost")
        self.device = device
        self.inference_build = inference_build
        _check_size("batch", batch)
        for k, v in (sizes or {}).items():
            _check_size(f"the free size {k}", v)
        self.graph, self.batch, self.dtype, self.train = graph, batch, dtype, train
        self.bytes_per = DTYPE_BYTES[dtype]
        # the default build of a CNN keeps its convolutions' weights channels-last (NHWC), and
        # on the CPU oneDNN then allocates differently (archlang.ops.layers._conv2d_cost)
        self._channels_last = graph.prefers_channels_last()
        free = sorted({s for n in graph.nodes for t in n.outputs for d in t.shape if isinstance(d, Dim)
                       for s in d.symbols} - {"B"})
        self.sizes = {"B": batch, **{s: 128 for s in free}, **(sizes or {})}
        self.free_sizes = ["B", *free]
        self.nodes: dict[str, NodeCost] = {}
        self._totals: dict[str, int] = {}
        self._steps: dict[bool, list[Step]] = {}
        self._peaks: dict[tuple[bool, frozenset[str]], Peak] = {}
        memo: dict[tuple, tuple] = {}
        with gc_paused():
            table = param_table(graph)
            counts: dict[str, tuple[int, int]] = {n.name: (0, 0) for n in graph.nodes}
            for p in table:
                total_, train_ = counts[p.node]
                counts[p.node] = (total_ + p.numel, train_ + (p.numel if p.trainable else 0))
            self._trainable_tensors = [p.numel for p in table if p.trainable]
            # the inference build's linear layers (2-d weights) hold a blocked copy of their
            # weight for oneDNN on the CPU, in float32 and bfloat16 (OneDnnLinear.pack): at most
            # one copy each (none where F.linear won the race at every shape)
            self._packs = inference_build and device == "cpu" and dtype in ("float32", "bfloat16")
            from archlang.ops.layers import packed_linear_weight  # the op family that knows the layout
            self.packed_bytes = sum(packed_linear_weight(*p.shape) for p in table if p.role == "weight"
                                    and len(p.shape) == 2) * self.bytes_per if self._packs else 0
            self._lora_rank = {node: sum(spec.r for spec in parts.values())
                               for node, parts in lora_targets(graph).items()}
            self._frozen_masks = {p.node for p in table if p.role == "rel_pos" and not p.trainable
                                  and isinstance(graph.by_name[p.node].op, O.WindowAttention)
                                  and not isinstance(graph.by_name[p.node].op, O.WindowAttentionV2)}
            self._counts = counts
            hits = [self._hit(n, memo) for n in graph.nodes]
            self._hits = hits
            saved = self._saved(hits, counts)
            for n, hit, sv in zip(graph.nodes, hits, saved, strict=True):
                self.nodes[n.name] = self._node(n, *counts[n.name], hit, sv)

    # -- per node
    def _hit(self, n: Node, memo: dict) -> tuple:
        ins = tuple(self.graph.type_of(r) for r in n.inputs)
        key: tuple | None = (type(n.op), n.op, ins, n.outputs, n.name in self._frozen_masks)
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
        layouts = _layouts(self.graph, self.device)
        req: dict[str, bool] = {}
        charged: set[tuple[str, int]] = set()
        memo: dict[tuple, tuple[DimLike, int]] = {}
        bpe = self.bytes_per
        out: list[tuple[DimLike, int]] = []
        for n, (_, _, keep) in zip(self.graph.nodes, hits, strict=True):
            internal, internal_ev, saves_in, weight_in, saves_out = keep[:5]
            ins = [root.get((r.node, r.index), (r.node, r.index)) for r in n.inputs]
            trainable = counts[n.shares or n.name][1] > 0  # a shared layer trains its original's weights
            rg = trainable or any(req.get(r.node, False) for r in n.inputs)
            req[n.name] = rg
            op = n.op
            if ins and (_is_view(op, layouts.get(n.inputs[0].node)) or (isinstance(op, O.Dropout | O.DropPath) and op.p == 0)):
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
            lora = self._lora_rank.get(n.name, 0)
            key = (id(internal), types, lora)
            hit = memo.get(key)
            if hit is None:
                total: DimLike = internal
                for t in types:
                    total = add(total, mul(numel(t), bpe))
                if lora:  # each LoRA tap keeps x @ A ([rows, r]) for B's gradient
                    x = self.graph.type_of(n.inputs[0])
                    total = add(total, mul(product(x.shape[:-1]), lora * bpe))
                hit = (total, _eval(total, self.sizes)) if types or lora else (internal, internal_ev)
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
        # on the CPU, SDPA's math path runs where the mask needs a gradient; a window attention
        # whose bias table is frozen (a LoRA model) takes the flash kernel, as on CUDA
        cpu = self.device == "cpu" and n.name not in self._frozen_masks
        saved_bytes = add(mul(c.saved_cpu if cpu and c.saved_cpu is not None else c.saved, bpe),
                          mul(c.saved_int64, INT64_BYTES))
        if isinstance(n.op, O.Dropout) and n.op.p > 0:
            # the keep-mask: CUDA's fused dropout keeps a bool per element; the CPU's F.dropout
            # multiplies by a mask of the input's dtype (scaled by 1/(1-p)) and keeps that
            saved_bytes = add(saved_bytes, mul(numel(n.outputs[0]), bpe if cpu else 1))
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
        temp_train = c.temp_train_cpu if cpu and c.temp_train_cpu is not None else c.temp_train
        grad_temp = c.grad_temp_cpu if cpu and c.grad_temp_cpu is not None else c.grad_temp
        temp = c.temp_cpu if cpu and c.temp_cpu is not None else c.temp
        if cpu and c.temp_cpu_nhwc is not None and self._channels_last:
            temp = temp_train = c.temp_cpu_nhwc  # the default build's NHWC convolutions (a CNN)
            grad_temp = c.grad_temp_cpu_nhwc if c.grad_temp_cpu_nhwc is not None else grad_temp
        if cpu and self.dtype == "bfloat16" and c.temp_cpu_bf16 is not None:
            temp = c.temp_cpu_bf16  # the written-out short attention (prelude.sdpa)
        if self._packs and c.temp_cpu_packed is not None:
            temp = c.temp_cpu_packed  # the inference build's linear layers read packed weights
        if (not temp and c.temp_cpu is None and c.temp_train is None and c.saved_cpu is not None
                and c.saved_cpu != 0 and cpu):
            # a rule that gives no temporaries but keeps intermediates on the CPU (the math path of
            # SDPA): in inference those intermediates exist while the op runs
            temp = c.saved_cpu
        temps = (_eval(mul(temp, bpe), self.sizes),
                 _eval(mul(temp if temp_train is None else temp_train, bpe), self.sizes),
                 _eval(mul(grad_temp, bpe), self.sizes))
        keep = (saved_bytes, _eval(saved_bytes, self.sizes), c.saves_inputs, c.weight_inputs, c.saves_output, temps)
        return sym, ev, keep

    # -- totals
    def _total(self, key: str) -> int:
        """The sum of one per-node figure over the graph, computed once (the nodes are set in
        ``__init__``; a report of 100k nodes asks for a few dozen totals)."""
        if key not in self._totals:
            self._totals[key] = sum(getattr(n, key) for n in self.nodes.values())
        return self._totals[key]

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
        build dtype (index buffers in int64), and for the inference build the blocked copies
        of its linear weights (``packed_bytes``, made on their first call)."""
        return self.param_bytes + self.buffer_bytes + self.packed_bytes

    def build_peak_bytes(self) -> tuple[int, str]:
        """The high-water mark of constructing the model: everything resident plus the
        largest temporaries one module needs while it is built (a sinusoidal table's
        float32 sines). Returns (bytes, that module's node, or "" when none needs any)."""
        big = max(self.nodes.values(), key=lambda n: n.build_scratch_bytes, default=None)
        scratch = big.build_scratch_bytes if big is not None else 0
        return self.resident_bytes() + scratch, big.name if scratch else ""

    # the schedule (archlang.cost.schedule): steps built once per mode, peaks once per set
    def schedule_steps(self, train: bool = True) -> list[Step]:
        """The graph as :func:`archlang.cost.schedule.simulate` sees it: one list for both
        modes (in inference, ``simulate`` takes each step's ``eval_temp`` and ``eval_view``:
        dropout is a view, a GELU of :meth:`Graph.gelus_after_linears` overwrites its input,
        nothing is saved)."""
        steps = self._steps.get(True)
        if steps is None:
            with gc_paused():  # many small objects beside a large graph: no collections meanwhile
                steps = self._steps[True] = self._build_steps()
        return steps

    def _build_steps(self, train: bool = True) -> list[Step]:
        ids: dict[tuple[str, int], int] = {}
        tsize: list[int] = []
        req: dict[str, bool] = {}
        steps: list[Step] = []
        elem = {"float": self.bytes_per, "int": INT64_BYTES, "bool": 1}
        layouts = _layouts(self.graph, self.device)
        size_memo: dict[tuple, int] = {}
        passes_t = (O.Rearrange, O.Identity, O.Output, O.Concat, O.PrependToken)
        reshaping = (O.Concat, O.PrependToken, O.Rearrange)
        bpe = self.bytes_per
        # the GELUs the default build runs in place without autograd (InplaceGELU): in
        # inference their output is the linear output's storage
        in_place = {act for _, act in self.graph.gelus_after_linears()}
        for n, (_, _, keep) in zip(self.graph.nodes, self._hits, strict=True):
            saves_in, weight_in, saves_out, temps = keep[2], keep[3], keep[4], keep[5]
            op = n.op
            ins = tuple([ids[(r.node, r.index)] for r in n.inputs])
            outs = []
            sizes = []
            single = len(n.outputs) == 1 and n.outputs[0].dtype == "float" and not isinstance(op, O.Output | O.Identity)
            for k, t in enumerate(n.outputs):
                ids[(n.name, k)] = len(tsize)
                outs.append(len(tsize))
                if single:  # the node's activation bytes are its one output's
                    b = self.nodes[n.name].activation_bytes
                else:
                    key = (t.shape, t.dtype)
                    b = size_memo.get(key)
                    if b is None:
                        b = size_memo[key] = _eval(numel(t), self.sizes) * elem.get(t.dtype, bpe)
                sizes.append(b)
                tsize.append(b)
            trainable_n = self._counts[n.shares or n.name][1]  # a shared layer trains its original's weights
            rg = train and (trainable_n > 0 or any([req.get(r.node, False) for r in n.inputs]))
            req[n.name] = rg
            drop = isinstance(op, O.Dropout | O.DropPath)
            view = bool(ins) and (isinstance(op, O.Output) or _is_view(op, layouts.get(n.inputs[0].node))
                                  or (drop and (op.p == 0 or not train)))
            # dropout in eval returns its input; a GELU after a linear layer overwrites it
            eval_view = bool(ins) and ((drop and not view) or n.name in in_place)
            saves: tuple[int, ...] = ()
            grads: tuple[bool, ...] = ()
            grad_views: tuple[bool, ...] = ()
            if rg:
                if not view:
                    saves = tuple([ins[i] for i in saves_in]) \
                        + (tuple([ins[i] for i in weight_in]) if trainable_n else ()) \
                        + ((outs[0],) if saves_out and outs else ())
                grads = tuple([req.get(r.node, False) for r in n.inputs])
                passes = view or isinstance(op, passes_t) or (isinstance(op, O.Binary) and op.fn in ("add", "sub"))
                if passes:  # the gradient flows through unchanged (a broadcast input's is reduced: new)
                    whole = isinstance(op, reshaping)
                    out0 = sizes[0] if sizes else -1
                    grad_views = tuple([whole or tsize[t] == out0 for t in ins])
            steps.append(Step(n.name, ins, tuple(outs), tuple(sizes), (0,) * len(outs) if view else (None,) * len(outs),
                              temps[1] if train else temps[0], saves, keep[1] if rg and not view else 0, grads,
                              grad_views, trainable_n * bpe if rg and not n.shares else 0,
                              # a shared layer's weight gradient is added into its original's
                              (temps[2] + (trainable_n * bpe if n.shares else 0)) if rg else 0, "",
                              isinstance(op, O.Output), (), temps[0] if temps[0] != temps[1] else None, eval_view))
        return self._module_arguments(steps, ids)

    def _module_arguments(self, steps: list[Step], ids: dict[tuple[str, int], int]) -> list[Step]:
        """A tensor passed into a block instance's module is held by the call until the module
        returns: it lives at least to the instance's last node; the model's inputs live to the
        end of the forward."""
        nodes = self.graph.nodes
        scopes = {sc.path for sc in self.graph.scopes}
        end: dict[str, int] = {}
        chains: dict[str, list[str]] = {}
        for i, n in enumerate(nodes):
            chain = chains.get(n.scope)
            if chain is None:
                parts = n.scope.split(".") if n.scope else []
                chain = chains[n.scope] = [p for p in (".".join(parts[:k]) for k in range(1, len(parts) + 1))
                                           if p in scopes]
            for a in chain:
                end[a] = i
        keeps: dict[int, list[int]] = {}
        for n in nodes:
            for r in n.inputs:
                src = self.graph.by_name[r.node].scope
                for a in chains[n.scope]:
                    if not (src == a or src.startswith(a + ".")):
                        keeps.setdefault(end[a], []).append(ids[(r.node, r.index)])
                        break
        # a value the spec names is a local of the generated forward: it lives until the name is
        # bound again in the same module, or the module returns
        nxt: dict[tuple[str, str], int] = {}
        last = len(nodes) - 1
        for i in range(last, -1, -1):
            n = nodes[i]
            for k, v in enumerate(n.vars):
                if v and k < len(n.outputs) and not isinstance(n.op, O.Input | O.Output):
                    j = nxt.get((n.scope, v))
                    if j is None:
                        j = end.get(n.scope, last) if n.scope else last
                    keeps.setdefault(j, []).append(ids[(n.name, k)])
            for v in n.vars:
                if v:
                    nxt[(n.scope, v)] = i
        if nodes:  # the caller holds the model's inputs until the forward returns
            keeps.setdefault(len(nodes) - 1, []).extend(
                ids[(n.name, k)] for n in nodes if isinstance(n.op, O.Input) for k in range(len(n.outputs)))
        for i, kept in keeps.items():
            steps[i].keeps = tuple(kept)
        return steps

    def _peak(self, train: bool, checkpointed: Iterable[str] = ()) -> Peak:
        ckpt = frozenset(checkpointed) if train else frozenset()
        key = (train, ckpt)
        hit = self._peaks.get(key)
        if hit is not None:
            return hit
        steps = self.schedule_steps(train)
        if ckpt:  # each step's block instance: the checkpointed one it lies in, if any
            blocks = [_instance(n.scope, ckpt) for n in self.graph.nodes]
            steps = [_with_block(st, b) if b else st for st, b in zip(steps, blocks, strict=True)]
        opt = Optimizer(trainable=self.trainable_params * self.bytes_per,
                        largest=max(self._trainable_tensors, default=0) * self.bytes_per,
                        tensors=len(self._trainable_tensors), foreach=self.device == "cuda")
        with gc_paused():
            peak = simulate(steps, self.resident_bytes(), train, opt, ckpt)
        self._peaks[key] = peak
        return peak

    def inference_parts(self) -> dict[str, Any]:
        """The inference peak, part by part: ``params``, ``buffers`` and ``packed`` (bytes,
        resident; ``packed``: the inference build's blocked linear weights, else 0),
        ``activations`` (the live activations at the peak and the temporaries of the node
        running then), ``attention`` (the part of those that is its score matrix), their sum
        ``peak``, and the node ``at`` the peak (:mod:`archlang.cost.schedule`: each tensor
        lives from its node to its last use). When building the model needs more than running
        it, the build's figures (``build_scratch``)."""
        params, buffers, packed = self.param_bytes, self.buffer_bytes, self.packed_bytes
        sim = self._peak(False)
        at = sim.at or (self.graph.nodes[0].name if self.graph.nodes else "")
        build, build_at = self.build_peak_bytes()
        if build > sim.bytes:  # building the model needs more than running it
            return {"params": params, "buffers": buffers, "packed": packed, "activations": 0, "attention": 0,
                    "build_scratch": build - params - buffers - packed, "peak": build, "at": build_at}
        acts = sim.bytes - params - buffers - packed
        nc = self.nodes.get(at)
        attn = min(nc.attention_bytes, acts) if nc is not None and nc.attention_bytes else 0
        return {"params": params, "buffers": buffers, "packed": packed, "activations": acts - attn,
                "attention": attn, "build_scratch": 0, "peak": sim.bytes, "at": at}

    def peak_inference_bytes(self) -> tuple[int, str]:
        """Parameters and buffers plus the largest set of live activations and temporaries,
        simulating one forward (:mod:`archlang.cost.schedule`), or the build's high-water mark
        when that is higher. Returns (bytes, node at the peak); the node is never empty for
        a graph with nodes."""
        parts = self.inference_parts()
        return parts["peak"], parts["at"]

    def training_parts(self, checkpointed: Iterable[str] = frozenset()) -> dict[str, Any]:
        """The training-step peak (forward, backward of the outputs' sum and AdamW's first
        step, simulated by :mod:`archlang.cost.schedule`), by what is live at that moment:
        ``params`` and ``buffers`` (resident), ``grads`` (the weight gradients made so far),
        ``optimizer`` (AdamW moments and temporaries, in the step), ``saved`` (tensors kept
        for backward, checkpoint inputs included), ``transient`` (activations not saved,
        gradients of activations, temporaries); their sum ``peak`` (or the build's high-water
        mark when higher), the ``phase`` (forward, backward, recompute, step or build) and the
        node ``at`` it, and ``largest``, the node that saves the most (or holds the most
        attention).

        ``checkpointed``: block instances (``blocks.3``, as :meth:`Graph.block_instances`
        names them) under activation checkpointing: their nodes save nothing in the forward,
        their input tensors are kept until their backward, and their forward runs again when
        the backward reaches them (their saved tensors are live again then)."""
        sim = self._peak(True, checkpointed)
        nodes = self.nodes.values()
        largest = max(nodes, key=lambda n: (n.saved_train_bytes or n.attention_bytes), default=None)
        live = sim.parts
        parts = {"params": self.param_bytes, "grads": live.get("grads", 0), "optimizer": live.get("optimizer", 0),
                 "buffers": self.buffer_bytes, "saved": live.get("saved", 0), "transient": live.get("transient", 0)}
        build, build_at = self.build_peak_bytes()
        phase, at = sim.phase, sim.at
        if build > sim.bytes:
            phase, at = "build", build_at
        return {**parts, "peak": max(sim.bytes, build), "largest": largest.name if largest else "",
                "phase": phase, "at": at}

    def peak_training_bytes(self, checkpointed: Iterable[str] = frozenset()) -> tuple[int, str]:
        """The simulated training-step peak (:meth:`training_parts`, with the same
        ``checkpointed``). Returns (bytes, the node that saves the most)."""
        parts = self.training_parts(checkpointed)
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
        # the inference build is eval-only: no training step
        peak_train, at_train = (None, None) if self.inference_build else self.peak_training_bytes()
        return {
            "arch": self.graph.arch, "batch": self.batch, "dtype": self.dtype, "train": self.train,
            "device": self.device,
            "sizes": self.sizes, "params": self.params, "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params, "flops": self.flops, "other_flops": self.other_flops,
            "activation_bytes": self.activation_bytes, "saved_bytes": self.saved_bytes,
            "attention_entries": self.attention_entries, "attention_bytes": self.attention_bytes,
            "attention_global_bytes": self.attention_global_bytes,
            "param_bytes": self.param_bytes, "buffer_bytes": self.buffer_bytes,
            "inference_build": self.inference_build, "packed_bytes": self.packed_bytes,
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


def _instance(scope: str, blocks: frozenset[str]) -> str:
    """The block instance of ``blocks`` that contains ``scope`` (itself or an ancestor), or ""."""
    while scope:
        if scope in blocks:
            return scope
        cut = scope.rfind(".")
        scope = scope[:cut] if cut > 0 else ""
    return ""


def _with_block(st: Step, block: str) -> Step:
    from dataclasses import replace

    return replace(st, block=block)


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
               sizes: dict[str, int] | None = None, device: str = "cpu", inference_build: bool = False,
               as_written: bool = False) -> CostReport:
    """The cost report of the model ``archlang.build`` makes of ``graph`` (``inference_build``:
    of ``archlang.build(..., inference=True)``, whose linear layers also hold blocked copies of
    their weights). Both builds compute no rows that no output reads
    (:func:`archlang.check.rows.prune_dead_rows`: a ViT's last block runs on its class token
    alone), and neither does this report; ``as_written=True`` costs ``graph`` as the spec
    writes it, every row, as timm's models compute them and papers count them (and as
    ``archlang.build(..., keep_dead_rows=True)`` does)."""
    from archlang.check.rows import prune_dead_rows

    return CostReport(graph if as_written else prune_dead_rows(graph), batch=batch, dtype=dtype, train=train,
                      sizes=sizes, device=device, inference_build=inference_build)


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
        weights, acts = parts["params"] + parts["packed"], parts["activations"] + parts["attention"]
        detail = (f"{_hb(parts['params'])} of parameters, {_hb(parts['buffers'])} of buffers, "
                  + (f"{_hb(parts['packed'])} of blocked copies of the linear weights (the inference build), "
                     if parts["packed"] else "") +
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
