"""What fine-tuning taps mean: every parameter of a graph, its trainability, and LoRA weights.

Takes: a graph with its adapter taps and freeze rules (from ``adapt`` / ``freeze`` /
``unfreeze`` statements). Produces: the table of parameters (base and LoRA), each with its
full name, shape, role and whether it trains. The cost report and the lowering both read
this table, so the trainable count of a report and of a built model agree by construction.

Semantics, applied in statement order:
- every base parameter starts trainable;
- ``freeze "sel"`` / ``unfreeze "sel"`` set the parameters under every node whose name (or a
  dotted prefix of it) matches the glob ``sel``: ``"*"`` is all, ``"head"`` and ``"head.*"``
  are the head, ``"layers.3"`` the last Swin stage; ``"kind:glob"`` also requires the op kind
  (``"linear:*"`` every linear layer, ``"layernorm:layers.[23].*"`` the norms of two stages);
- ``adapt bitfit() on "sel"`` makes the biases under ``sel`` trainable (BitFit);
- ``adapt lora(r, alpha, dropout) on "sel"`` adds a low-rank update ``B A`` (scale alpha/r)
  to each selected linear projection — a linear node, or an attention's logical ``q``,
  ``k``, ``v`` (even inside a fused qkv), ``qkv`` or ``proj``; LoRA weights always train.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from archlang.ir import ops as O
from archlang.ir.graph import AdapterTap, Graph, Node

LORA_DEFAULTS = {"r": 8, "alpha": 16.0, "dropout": 0.0}
ATTENTION_OPS = (O.Attention, O.WindowAttention, O.LocalAttention, O.CrossAttention)


@dataclass(frozen=True)
class ParamInfo:
    name: str  # full state_dict name
    node: str
    shape: tuple[int, ...]
    role: str  # weight, bias, norm, embedding, token, pos, rel_pos, lora
    trainable: bool

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def split_kind(sel: str) -> tuple[str | None, str]:
    """``"linear:layers.3.*"`` -> ("linear", "layers.3.*"): a selector may name an op kind."""
    kind, colon, glob = sel.partition(":")
    return (kind, glob) if colon else (None, sel)


def matches(sel: str, name: str, kind: str | None = None) -> bool:
    """A selector matches a name when it globs the name or one of its dotted prefixes, and,
    when it names an op kind (``"linear:*"``), the node is of that kind."""
    want, glob = split_kind(sel)
    if want is not None and want != kind:
        return False
    return any(fnmatch.fnmatchcase(p, glob) for p in prefixes(name))


def lora_spec(tap: AdapterTap) -> LoraSpec:
    args = {**LORA_DEFAULTS, **{a.name: a.value for a in tap.args}}
    return LoraSpec(r=int(args["r"]), alpha=float(args["alpha"]), dropout=float(args["dropout"]))


def lora_shapes(node: Node, part: str | None) -> tuple[int, int]:
    """(in_features, out_features) of the projection a LoRA tap adapts."""
    op = node.op
    if part is None:
        assert isinstance(op, O.Linear)
        return op.in_features, op.out_features
    if isinstance(op, O.CrossAttention):
        inner = op.heads * op.head_dim
        return {"q": (op.dim, inner), "k": (op.context_dim, inner), "v": (op.context_dim, inner),
                "kv": (op.context_dim, 2 * inner), "proj": (inner, op.dim)}[part]
    assert isinstance(op, O._AttnCommon)
    return {"q": (op.dim, op.inner), "k": (op.dim, op.inner), "v": (op.dim, op.inner),
            "qkv": (op.dim, 3 * op.inner), "proj": (op.inner, op.dim)}[part]


def lora_parts(op: O.OpBase) -> tuple[str, ...]:
    if isinstance(op, O.CrossAttention):
        return ("q", "k", "v", "kv", "proj")
    if isinstance(op, ATTENTION_OPS):
        return ("q", "k", "v", "qkv", "proj")
    return ()


def lora_targets(graph: Graph) -> dict[str, dict[str | None, LoraSpec]]:
    """node name -> {part (None for a whole linear layer) -> LoRA settings}."""
    out: dict[str, dict[str | None, LoraSpec]] = {}
    for tap in graph.adapters:
        if tap.kind != "lora":
            continue
        spec = lora_spec(tap)
        for t in tap.targets:
            if t in graph.by_name:
                out.setdefault(t, {})[None] = spec
            else:
                node, _, part = t.rpartition(".")
                out.setdefault(node, {})[part] = spec
    return out


def lora_module(node: Node, part: str | None) -> tuple[str, str, tuple[str, ...]]:
    """Where a tap lives in the lowered module: (projection attribute, LoRA part, fused blocks).

    A linear node is tapped whole (``fc1.lora``); an attention's q/k/v are row blocks of its
    fused projection (``attn.qkv.lora_q``, or ``kv.lora_k`` in cross-attention)."""
    if part is None:
        return "", "", ()
    if isinstance(node.op, O.CrossAttention):
        return {"q": ("q", "", ()), "k": ("kv", "k", ("k", "v")), "v": ("kv", "v", ("k", "v")),
                "kv": ("kv", "", ()), "proj": ("proj", "", ())}[part]
    return {"q": ("qkv", "q", ("q", "k", "v")), "k": ("qkv", "k", ("q", "k", "v")),
            "v": ("qkv", "v", ("q", "k", "v")), "qkv": ("qkv", "", ()), "proj": ("proj", "", ())}[part]


def lora_param_name(node: Node, part: str | None, which: str) -> str:
    attr, sub, _ = lora_module(node, part)
    prefix = f"{node.name}.{attr}" if attr else node.name
    return f"{prefix}.{'lora_' + sub if sub else 'lora'}.{which}"


def param_table(graph: Graph) -> list[ParamInfo]:
    """Every parameter of the graph, base and LoRA, with its trainability (see module doc)."""
    base: list[tuple[str, Node, str, tuple[int, ...]]] = []
    for n in graph.nodes:
        if n.shares is not None:  # `y = pe1(z)` runs with `pe1`'s weights: they are listed once, there
            continue
        for p in n.op.parameters():
            base.append((f"{n.name}.{p.name}" if p.name else n.name, n, p.role, p.shape))
    trainable = {name: True for name, *_ in base}
    events = sorted([(r.index, "rule", r) for r in graph.freezes] +
                    [(t.index, "tap", t) for t in graph.adapters], key=lambda e: e[0])
    for _, kind, ev in events:
        if kind == "rule":
            for name, node, _role, _shape in base:
                if any(matches(sel, name, node.op.op) for sel in ev.selectors):
                    trainable[name] = not ev.freeze
        elif ev.kind == "bitfit":
            for name, node, role, _shape in base:
                if role == "bias" and any(matches(sel, name, node.op.op) for sel in ev.selectors):
                    trainable[name] = True
    out = [ParamInfo(name, node.name, shape, role, trainable[name]) for name, node, role, shape in base]
    for node_name, parts in lora_targets(graph).items():
        node = graph.node(node_name)
        for part, spec in parts.items():
            fan_in, fan_out = lora_shapes(node, part)
            out.append(ParamInfo(lora_param_name(node, part, "A"), node_name, (spec.r, fan_in), "lora", True))
            out.append(ParamInfo(lora_param_name(node, part, "B"), node_name, (fan_out, spec.r), "lora", True))
    return out
