"""The fused attention primitive ``attend(q, k, v, ...)``, with all of its rules.

Takes: nothing at import but the rule kits of each stage. Produces: the op class
:class:`Attend`, its language signature and its shape, cost, lowering (SDPA or
FlexAttention), drawing and interpreter rules, registered with
:func:`archlang.ops.registry.define`; and :func:`attention_lowering`, the build option that
chooses the lowering.

The signature (stable; every argument after v is a keyword with a default)::

    attend(q, k, v, scale = <head_dim ** -0.5>, causal = false, dropout = 0.0,
           bias = <tensor or expression>, mask = <tensor or expression>, score = <expression>)

- ``q`` is ``[B, H, N, D]``, ``k`` is ``[B, Hkv, M, D]`` and ``v`` ``[B, Hkv, M, Dv]``; the
  output is ``[B, H, N, Dv]``. When ``Hkv < H`` (it must divide ``H``: E0310) the attention
  is grouped-query: query head ``i`` reads key/value head ``i // (H / Hkv)``, as
  ``F.scaled_dot_product_attention(..., enable_gqa=True)`` and Hugging Face's ``repeat_kv``.
- ``scale`` multiplies the scores ``q . k`` (default ``D ** -0.5``).
- ``causal`` masks key ``j`` for query ``i`` when ``j > i``: top-left aligned, as SDPA's
  ``is_causal`` (with ``N < M`` the last keys are never seen; with ``N > M`` every query past
  ``M`` sees all keys).
- ``dropout`` drops attention probabilities in train mode (SDPA's ``dropout_p``).
- ``bias`` is added to the scaled scores: a float tensor broadcast over ``[B, H, N, M]``
  (``[N, M]``, ``[H, N, M]``, ``[B, H, N, M]``, or with dims of 1), or an expression of the
  index variables ``b``, ``h``, ``q_idx``, ``kv_idx`` (ALiBi:
  ``bias = slope[h] * (kv_idx - q_idx)``; a relative-position table:
  ``bias = table[rel[q_idx, kv_idx], h]``).
- ``mask`` keeps the scores where it is true (the others are ``-inf``): a bool tensor
  broadcast the same way, or a bool expression (a sliding window
  ``mask = q_idx - kv_idx < window``, a document mask ``mask = doc[b, q_idx] == doc[b, kv_idx]``).
  With ``causal`` too, both must hold.
- ``score`` rewrites each scaled score: an expression of ``score`` and the index variables
  (FlexAttention's ``score_mod``; ``score = 30.0 * ...``), applied before the bias and the mask.

In the expressions, ``b``, ``h``, ``q_idx`` and ``kv_idx`` (and ``score``) are the index
variables; every other name is a compile-time value or a tensor in scope
(:mod:`archlang.check.index_args`), and the tree is kept as an
:mod:`archlang.ir.index_expr` expression: it is never evaluated by the elaborator, the
interpreter evaluates it with torch, and the lowerings write it as a Python lambda.

Lowerings (the build option ``attention``: ``archlang.build(..., attention="sdpa"|"flex"|"auto")``,
``archc build --attention``):

- ``sdpa``: ``F.scaled_dot_product_attention``. A causal mask alone is ``is_causal``; a bias or
  mask tensor alone is passed as ``attn_mask``; expressions become an additive ``attn_mask``
  from the prelude's ``attention_bias``: computed ONCE when the model is built, into a
  non-persistent buffer, when they read no tensor and the lengths are known; in forward
  otherwise. A ``score`` that is not ``score + ...`` runs as the prelude's
  ``scored_attention`` (SDPA has no score hook).
- ``flex``: FlexAttention: the bias and score as a ``score_mod`` lambda, the masks (with
  causal) as a ``mask_mod`` lambda turned into a ``BlockMask`` (blocks where the mask never
  holds are skipped). Fused when the model is compiled (``torch.compile``; also on the CPU);
  eager, torch runs an unfused reference. Attention dropout is not in FlexAttention: an
  ``attend`` with dropout always lowers to SDPA. FlexAttention has no backward on the CPU:
  there, when a gradient is needed, the prelude's ``flex_attention`` writes the same attention
  out (``scored_attention`` with the block mask's ``mask_mod``). The cost report describes the
  SDPA lowering.

Block instances whose expressions differ (a window per layer) get a class each: the
expressions are code (``STRUCTURAL`` in :mod:`archlang.lower.codegen`).
- ``auto`` (the default): SDPA, except, in a model that will be compiled
  (``archlang.build(..., compile=True)``), FlexAttention for an attend whose mask (with
  causal) is a position expression that skips at least 75% of FlexAttention's 128 x 128
  blocks (:func:`block_sparsity`, at known lengths), or whose bias, score or mask expression
  is computed in forward (it reads a tensor: ALiBi with learned slopes, a bias table, a
  document mask) over at least 1024 x 1024 scores per head; lengths free at compile time
  always get SDPA.
  Measured on the CPU (benchmarks/attend_lowering.py, [1, 8, N, 64], float32, inference):
  SDPA is faster for causal attention at every length (N = 2048: 395 ms against 597 ms compiled FlexAttention, 47% of the blocks skipped) and for
  short sequences; compiled FlexAttention is faster for a causal window of 128 from N = 1024
  (201 ms against 228 ms, 77% skipped; 247 against 709 ms at N = 2048, 88%) and for a bias
  expression read from a tensor (causal ALiBi with slopes as an input, N = 1024: 246 ms against
  668 ms compiled SDPA, 1290 ms eager SDPA, whose attn_mask is computed in forward; 40 against
  39 ms at N = 256) and a document mask read from a tensor (N = 1024: 238 against 269 ms, 50%
  skipped; N = 2048: 376 against 792 ms, 74%; but 108 against 79 ms at N = 256); eager
  FlexAttention (torch's unfused reference) is 12 to 30 times slower than SDPA, so a model
  that is not compiled (``archc build``, ``archlang.build`` without ``compile``) always gets SDPA.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, const_dim, op
from archlang.cost.rules import OpCost, m, s
from archlang.ir import index_expr as X
from archlang.ir.dims import fmt
from archlang.ir.ops import OpBase
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, E, LoweringError, Rule, call, code, ident, lit
from archlang.ops.registry import define
from archlang.render.rules import Look

LOWERINGS = ("auto", "sdpa", "flex")
_LOWERING: ContextVar[tuple[str, bool]] = ContextVar("archlang_attention_lowering", default=("auto", False))
# "auto" picks FlexAttention for an attend whose mask skips at least this share of the
# 128 x 128 blocks, when the model is compiled (benchmarks/attend_lowering.py: on the CPU,
# compiled FlexAttention overtakes SDPA between 47% (causal, slower) and 77% (a window of
# 128 over 1024 positions, faster); eager FlexAttention is tens of times slower than SDPA)
AUTO_FLEX_SPARSITY = 0.75
# ... and for an expression computed in every forward (it reads a tensor) over at least this
# many scores per head: FlexAttention's score_mod and mask_mod against SDPA's attn_mask (ALiBi,
# document masks: faster from N = M = 1024). Only at lengths known at compile time: compiling
# FlexAttention with dynamic shapes failed in Inductor's CPU template (torch 2.14.1)
AUTO_FLEX_SCORES = 1024 * 1024
FLEX_BLOCK = 128


@contextmanager
def attention_lowering(kind: str, compiled: bool = False) -> Iterator[None]:
    """Lower every ``attend`` generated inside the block with ``kind`` ("auto", "sdpa",
    "flex"); ``compiled``: the model will run under ``torch.compile`` (what "auto" weighs)."""
    if kind not in LOWERINGS:
        raise ValueError(f"attention is one of {', '.join(LOWERINGS)}, not {kind!r}")
    token = _LOWERING.set((kind, compiled))
    try:
        yield
    finally:
        _LOWERING.reset(token)


def block_sparsity(o: Attend, ins: list[TensorType]) -> float | None:
    """The share of FlexAttention's 128 x 128 blocks where the mask (with causal) never holds,
    for a mask of positions and compile-time values at known lengths (None otherwise). It is
    what ``BlockMask.sparsity()`` reports, for the heads and examples the mask varies over."""
    masks = [e for e in (o.mask,) if e is not None]
    if not masks and not o.causal:
        return 0.0
    n, kv_len = ins[0].shape[2], ins[1].shape[2]
    if any(X.inputs(e) or "b" in X.variables(e) for e in masks) or not (isinstance(n, int) and isinstance(kv_len, int)):
        return None
    heads = o.heads if any("h" in X.variables(e) for e in masks) else 1
    if heads * n * kv_len > 1 << 26:  # evaluated entry by entry: not for the longest sequences
        return None
    import torch

    env = {"b": torch.zeros(1, 1, 1, 1, dtype=torch.long), "h": torch.arange(heads).view(-1, 1, 1),
           "q_idx": torch.arange(n).view(-1, 1), "kv_idx": torch.arange(kv_len)}
    keep = torch.ones(heads, n, kv_len, dtype=torch.bool)
    for e in masks:
        keep = keep & evaluate(e, env, [])
    if o.causal:
        keep = keep & (env["kv_idx"] <= env["q_idx"])
    nb, mb = -(-n // FLEX_BLOCK), -(-kv_len // FLEX_BLOCK)
    padded = torch.zeros(heads, nb * FLEX_BLOCK, mb * FLEX_BLOCK, dtype=torch.bool)
    padded[:, :n, :kv_len] = keep
    blocks = padded.view(heads, nb, FLEX_BLOCK, mb, FLEX_BLOCK).any(dim=4).any(dim=2)
    return 1.0 - blocks.float().mean().item()


class Attend(OpBase):
    """Scaled dot-product attention of ``q [B, H, N, D]`` over ``k [B, Hkv, M, D]`` and
    ``v [B, Hkv, M, Dv]``: ``softmax(score(q k^T * scale) + bias, where mask and causal) v``,
    ``[B, H, N, Dv]``. Inputs after ``q, k, v`` are the tensors that ``bias``, ``mask`` and
    ``score`` read (a tensor bias or mask is a :class:`~archlang.ir.index_expr.Load` of one)."""

    op: Literal["attend"] = "attend"
    heads: int  # H, the query heads
    kv_heads: int  # Hkv, which divides H (grouped-query attention when smaller)
    head_dim: int  # D, of q and k
    value_dim: int  # Dv, of v and the output
    scale: float | None = None  # None: head_dim ** -0.5
    causal: bool = False
    dropout: float = 0.0
    bias: X.Expr | None = None  # added to the scaled scores
    mask: X.Expr | None = None  # a bool: where the scores are kept
    score: X.Expr | None = None  # the new score, from `score` and the indices

    @property
    def softmax_scale(self) -> float:
        return self.head_dim ** -0.5 if self.scale is None else self.scale

    def exprs(self) -> tuple[X.Expr, ...]:
        return tuple(e for e in (self.score, self.bias, self.mask) if e is not None)


# ----------------------------------------------------------------------------- signature


def _head_dims(ctx: Any, t: TensorType, i: int, what: str) -> tuple[int, int]:
    if t.rank != 4:
        raise BuildError("E0302", f"attend expects {what} as [B, heads, length, head_dim], got {t}",
                         help="split the heads first, e.g. `rearrange(x, \"b n (h d) -> b h n d\", h = heads)`",
                         arg=what)
    return const_dim(ctx, t.shape[1], f"the heads of `{what}`", i), const_dim(ctx, t.shape[3], f"the head dim of `{what}`", i)


def _whole(t: TensorType, i: int, what: str) -> X.Load:
    """A tensor bias or mask as an expression: broadcast over [b, h, q_idx, kv_idx] from the right."""
    if t.rank > 4 or t.rank == 0:
        raise BuildError("E0302", f"attend's {what} tensor broadcasts over [B, H, N, M]: it has 1 to 4 dims, got {t}",
                         arg=what)
    names = X.VARS[4 - t.rank:]
    index = tuple(X.Const(value=0) if d == 1 else X.Var(name=n) for d, n in zip(t.shape, names, strict=True))
    return X.Load(input=i, index=index, kind=t.dtype)


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _extent(var: str, q: TensorType, k: TensorType) -> Any:
    return {"b": q.shape[0], "h": q.shape[1], "q_idx": q.shape[2], "kv_idx": k.shape[2]}[var]


def _check_loads(e: X.Expr, ins: list[TensorType], what: str) -> None:
    """A tensor read by index variables: each indexed dim is as long as the variable's range
    (``slope[h]`` needs H entries); a bare tensor (or a tensor bias/mask) broadcasts."""
    q, k = ins[0], ins[1]
    for n in X.walk(e):
        if not isinstance(n, X.Load):
            continue
        t = ins[n.input]
        for d, (size, ix) in enumerate(zip(t.shape, n.index, strict=True)):
            span = _bounds(ix, q, k)
            if span is not None and isinstance(size, int) and not isinstance(ix, X.Var) \
                    and (span[0] < 0 or span[1] >= size):
                raise BuildError("E0304", f"attend's {what} indexes dim {d} of a {t} tensor with `{X.show(ix)}`, "
                                 f"which ranges over {span[0]} .. {span[1]}",
                                 help=f"the index must stay in 0 .. {size - 1} for every query and key (a "
                                      "relative offset needs a shift: `table[q_idx - kv_idx + M - 1]` for a "
                                      "table of 2M - 1 offsets)", arg=what)
            if isinstance(ix, X.Var) and ix.name != X.SCORE:
                want = _extent(ix.name, q, k)
                if size != want and size != 1:
                    raise BuildError("E0301", f"attend's {what} reads dim {d} of a {t} tensor with `{ix.name}`, "
                                     f"which ranges over {fmt(want)}",
                                     help=f"a tensor indexed by `{ix.name}` needs {fmt(want)} entries in that dim "
                                          "(or 1, broadcast)", arg=what)


def _bounds(e: X.Expr, q: TensorType, k: TensorType) -> tuple[int, int] | None:
    """The least and greatest value of an int expression over every query, key, head and
    example (None when unknown: a symbolic length, a value read from a tensor)."""
    if isinstance(e, X.Var):
        n = _extent(e.name, q, k) if e.name != X.SCORE else None
        return (0, n - 1) if isinstance(n, int) else None
    if isinstance(e, X.Const):
        return (e.value, e.value) if isinstance(e.value, int) and not isinstance(e.value, bool) else None
    if isinstance(e, X.Un) and e.op in ("-", "abs"):
        a = _bounds(e.a, q, k)
        if a is None:
            return None
        if e.op == "-":
            return (-a[1], -a[0])
        return (0 if a[0] <= 0 <= a[1] else min(abs(a[0]), abs(a[1])), max(abs(a[0]), abs(a[1])))
    if isinstance(e, X.Where):
        a, b = _bounds(e.then, q, k), _bounds(e.other, q, k)
        return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))
    if not isinstance(e, X.Bin):
        return None
    a, b = _bounds(e.a, q, k), _bounds(e.b, q, k)
    if a is None or b is None:
        return None
    if e.op == "+":
        return (a[0] + b[0], a[1] + b[1])
    if e.op == "-":
        return (a[0] - b[1], a[1] - b[0])
    if e.op == "*":
        prods = [x * y for x in a for y in b]
        return (min(prods), max(prods))
    if e.op in ("min", "max"):
        f = min if e.op == "min" else max
        return (f(a[0], b[0]), f(a[1], b[1]))
    if e.op == "//" and b[0] == b[1] and b[0] > 0:
        return (a[0] // b[0], a[1] // b[0])
    if e.op == "%" and b[0] == b[1] and b[0] > 0:
        return (0, b[0] - 1) if a[1] - a[0] + 1 >= b[0] or a[0] % b[0] > a[1] % b[0] else (a[0] % b[0], a[1] % b[0])
    return None


@op("attend", ("q", "k", "v"),
    (Arg("scale", "float", None, range="positive"), Arg("causal", "bool", False),
     Arg("dropout", "float", 0.0, range="prob"), Arg("bias", "expr", None), Arg("mask", "expr", None),
     Arg("score", "expr_score", None)),
    "Fused scaled dot-product attention: q [B, H, N, D], k [B, Hkv, M, D], v [B, Hkv, M, Dv] -> [B, H, N, Dv]; "
    "grouped-query when Hkv divides H; `scale` (default D ** -0.5), `causal` (top-left, as SDPA), "
    "`dropout` on the probabilities in train mode; `bias` (added) and `mask` (true: attend) are tensors "
    "broadcast over [B, H, N, M] or expressions of b, h, q_idx, kv_idx; `score` rewrites `score`.")
def _signature(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Attend:
    (h, d), (hk, dk), (hv, dv) = (_head_dims(ctx, t, i, n) for i, (t, n) in enumerate(zip(ins[:3], "qkv", strict=True)))
    if hk != hv:
        raise BuildError("E0301", f"attend: k has {hk} heads but v has {hv}",
                         help="keys and values come in pairs: give them the same number of heads", arg="v")
    if dk != d:
        raise BuildError("E0301", f"attend: q has head dim {d} but k has {dk}",
                         help="the scores are q . k: queries and keys need the same head dim", arg="k")
    if h % hk:
        raise BuildError("E0310", f"attend: {hk} key/value heads do not divide {h} query heads",
                         help=f"grouped-query attention shares each key/value head among H / Hkv query heads: "
                              f"give k and v a number of heads that divides {h} (1, or a divisor such as "
                              f"{max(x for x in range(1, hk + 1) if h % x == 0)})", arg="k")
    if a["dropout"] >= 1.0:
        raise BuildError("E0406", f"a drop probability is in [0, 1), got {a['dropout']}", arg="dropout")
    exprs: dict[str, X.Expr | None] = {}
    for name, want in (("bias", ("int", "float")), ("mask", ("bool",)), ("score", ("int", "float"))):
        v = a[name]
        if isinstance(v, int) and not isinstance(v, bool):  # a tensor: its position among the inputs
            v = _whole(ins[v], v, name)
        if v is not None:
            if X.kind(v) not in want:
                kinds = "a bool" if want == ("bool",) else "a number"
                raise BuildError("E0401", f"attend's {name} must be {kinds}, got {_a(X.kind(v))}: `{X.show(v)}`",
                                 help="a mask is true where a query may attend a key (`kv_idx <= q_idx`); a bias "
                                      "and a score are numbers", arg=name)
            if not X.variables(v) and not X.inputs(v):
                raise BuildError("E0406", f"attend's {name} `{X.show(v)}` is the same for every score",
                                 help="write it with the index variables b, h, q_idx, kv_idx"
                                      + (" and score" if name == "score" else "") + ", or leave it out", arg=name)
            _check_loads(v, ins, name)
        exprs[name] = v
    return Attend(heads=h, kv_heads=hk, head_dim=d, value_dim=dv, scale=a["scale"], causal=a["causal"],
                  dropout=a["dropout"], **exprs)


# ----------------------------------------------------------------------------- shape and cost


def _shape(o: Attend, ins: list[TensorType]) -> tuple[TensorType, ...]:
    q, k, v = ins[:3]
    for i, t in enumerate((q, k, v)):
        shapes.expect_rank(t, 4, "attend", i)
    b, h, n, d = q.shape
    shapes.expect_equal(h, o.heads, f"attend over {o.heads} query heads, got {fmt(h)}")
    shapes.expect_equal(d, o.head_dim, f"attend with head dim {o.head_dim}, got {fmt(d)}")
    for i, t in ((1, k), (2, v)):
        shapes.expect_equal(t.shape[0], b, f"attend: the batch of {'qkv'[i]} is {fmt(t.shape[0])} but q's is {fmt(b)}",
                            "q, k and v come from the same examples", i)
        shapes.expect_equal(t.shape[1], o.kv_heads, f"attend over {o.kv_heads} key/value heads, got {fmt(t.shape[1])}",
                            i=i)
    shapes.expect_equal(k.shape[2], v.shape[2], f"attend: k has {fmt(k.shape[2])} keys but v has {fmt(v.shape[2])} "
                        "values", "every key has its value", 2)
    shapes.expect_equal(k.shape[3], o.head_dim, f"attend: k's head dim is {fmt(k.shape[3])}, q's {o.head_dim}", i=1)
    shapes.expect_equal(v.shape[3], o.value_dim, f"attend with value dim {o.value_dim}, got {fmt(v.shape[3])}", i=2)
    for e in o.exprs():
        for i in X.inputs(e):
            if i >= len(ins):
                raise shapes.ShapeError("E0301", f"attend reads input {i} but has {len(ins)}")
    return (TensorType(shape=(b, h, n, o.value_dim), dtype=q.dtype),)


def _forward_mask(o: Attend, ins: list[TensorType]) -> Any:
    """Elements of the additive mask the SDPA lowering computes in forward (bias and mask
    expressions that are not a build-time buffer), which SDPA keeps for backward: it
    broadcasts as ``[B?, H?, N, M]``, with the batch and head dims only where the expressions
    name ``b`` and ``h`` (prelude ``attention_bias``). Measured on Mistral's window mask at a
    free length: 15,876 bytes for 63 x 63 float32."""
    exprs = [e for e in (o.bias, o.mask) if e is not None]
    if not exprs or _constant_bias(o, ins) is not None:
        return 0
    names = set().union(*(X.variables(e) for e in exprs))
    dims = [ins[0].shape[0]] if "b" in names else []
    dims += [o.heads] if "h" in names else []
    return m(*dims, ins[0].shape[2], ins[1].shape[2])


def _constant_bias(o: Attend, ins: list[TensorType]) -> tuple[int, ...] | None:
    """The shape of the bias buffer the SDPA lowering computes once at build time (the
    expressions read no tensor, name no batch, and the lengths are known), else None."""
    exprs = [e for e in (o.bias, o.mask) if e is not None]
    if not exprs or o.score is not None or any(X.inputs(e) or "b" in X.variables(e) for e in exprs):
        return None
    n, kv_len = ins[0].shape[2], ins[1].shape[2]
    if not (isinstance(n, int) and isinstance(kv_len, int)):
        return None
    heads = o.heads if any("h" in X.variables(e) for e in exprs) else 1
    return (heads, n, kv_len) if heads > 1 else (n, kv_len)


def _grad_bias(o: Attend, ins: list[TensorType]) -> bool:
    """Whether the scores get an additive term that may need a gradient (a float tensor)."""
    return any(ins[i].dtype == "float" for e in (o.bias, o.score) if e is not None for i in X.inputs(e))


def _cpu_math(o: Attend, ins: list[TensorType]) -> bool:
    """Whether a training forward on the CPU takes SDPA's math path (measured with
    saved_tensors_hooks, torch 2.14): with dropout, a value head dim other than the key's, a
    score term that may need a gradient, or a score rewrite (the prelude's scored_attention,
    and FlexAttention's CPU fallback). Otherwise the fused kernel runs, also with GQA and with
    a constant mask."""
    return o.dropout > 0 or o.value_dim != o.head_dim or _grad_bias(o, ins) or _additive_score(o) is False


def _cost(o: Attend, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    q, k, _ = ins[:3]
    b, h, n = q.shape[0], o.heads, q.shape[2]
    kv_len = k.shape[2]
    scores = m(b, h, n, kv_len)
    # FlopCounterMode under the math backend: q k^T and p v, 2 flops per multiply-add (the full
    # matrices, also when causal or masked); the scale, the softmax (3 per score) beside them,
    # and one more per score for each bias or mask
    extra = sum(1 for e in o.exprs()) + (1 if o.causal and o.exprs() else 0)
    out = OpCost(flops=m(2, scores, o.head_dim + o.value_dim), other_flops=m(4 + extra, scores),
                 saves_inputs=(0, 1, 2), attn_entries=scores, attn_per_head=m(n, kv_len),
                 attn_global_per_head=m(n, kv_len))
    lse = m(b, h, n)  # the fused kernel's log-sum-exp per query and head
    if not _cpu_math(o, ins):
        # q, k, v, the output and the log-sum-exp, and the attn_mask when forward computes it
        out.saves_output, out.saved = True, s(lse, _forward_mask(o, ins))
    else:
        # fused on CUDA (the output and the log-sum-exp); on the CPU the math path keeps the
        # probabilities (with dropout also the mask and the dropped ones) and, grouped-query,
        # contiguous copies of k and v, but not the output
        out.saved = s(m(b, h, n, o.value_dim), lse)
        gqa = m(b, o.kv_heads, kv_len, o.head_dim + o.value_dim) if o.kv_heads != o.heads else 0
        out.saved_cpu = s(m(3 if o.dropout > 0 else 1, scores), gqa)
        out.temp_train_cpu = scores
        out.grad_temp_cpu = m(2, scores)
    if o.value_dim != o.head_dim or _additive_score(o) is False:
        out.temp = scores  # the CPU's math path also in inference
    if _grad_bias(o, ins):  # what autograd keeps of a bias expression computed in forward
        fl, i64 = _expr_saved(o, ins)
        out.saved_cpu = s(out.saved_cpu or 0, fl)
        out.saved = s(out.saved, fl)
        out.saved_int64 = i64
    buf = _constant_bias(o, ins)
    if buf is not None:
        out.buffer_float = m(*buf)  # type: ignore[assignment]
    return out


def _expr_saved(o: Attend, ins: list[TensorType]) -> tuple[Any, Any]:
    """Elements autograd keeps of ``attention_bias``'s expressions when they read a float tensor
    (a parameter): the other factor of each product or quotient with it (``kv_idx - q_idx`` of
    ALiBi's ``slope[h] * (kv_idx - q_idx)``: int64 when it is an int), and the index of each
    gather from it. Returns (float elements, int64 elements)."""
    q, k = ins[0], ins[1]

    def numel(e: X.Expr) -> Any:
        size: Any = 1
        for v in sorted(X.variables(e) - {X.SCORE}):
            size = m(size, _extent(v, q, k))
        return size

    def grad(e: X.Expr) -> bool:
        return any(ins[i].dtype == "float" for i in X.inputs(e))

    fl: Any = 0
    i64: Any = 0
    for e in (o.bias, _additive_score(o) or None):
        if e is None or (isinstance(e, X.Load) and _is_whole_type(e, ins)):
            continue
        for n in X.walk(e):
            if isinstance(n, X.Bin) and n.op in ("*", "/"):
                for mine, other in ((n.a, n.b), (n.b, n.a)):
                    if grad(mine) and X.variables(other):
                        if X.kind(other) == "int":
                            i64 = s(i64, numel(other))
                        else:
                            fl = s(fl, numel(other))
            if isinstance(n, X.Load) and ins[n.input].dtype == "float":
                for ix in n.index:
                    if X.variables(ix):
                        i64 = s(i64, numel(ix))
    return fl, i64


def _is_whole_type(e: X.Load, ins: list[TensorType]) -> bool:
    return e == _whole(ins[e.input], e.input, "")


# ----------------------------------------------------------------------------- lowering


def _pyexpr(e: X.Expr, names: dict[str, str], ins: list[ast.expr]) -> ast.expr:
    """``e`` as Python over tensors (broadcast aranges or FlexAttention's scalars): names
    through ``ident``, constants through ``lit``, input tensors as the forward code has them."""
    if isinstance(e, X.Var):
        return ast.Name(id=names[e.name], ctx=ast.Load())
    if isinstance(e, X.Const):
        return lit(e.value)
    if isinstance(e, X.Load):
        idx = [_pyexpr(i, names, ins) for i in e.index]
        sl: ast.expr = idx[0] if len(idx) == 1 else ast.Tuple(elts=idx, ctx=ast.Load())
        return ast.Subscript(value=ins[e.input], slice=sl, ctx=ast.Load())
    if isinstance(e, X.Un):
        a = _pyexpr(e.a, names, ins)
        if e.op == "abs":
            return call("abs", a)
        return E("~a" if e.op == "not" else "-a", a=a)
    if isinstance(e, X.Where):
        return call("torch.where", _pyexpr(e.cond, names, ins), _pyexpr(e.then, names, ins),
                    _pyexpr(e.other, names, ins))
    assert isinstance(e, X.Bin)
    a, b = _pyexpr(e.a, names, ins), _pyexpr(e.b, names, ins)
    if e.op in X.FUNCS:
        if isinstance(e.a, X.Const):
            a, b = b, a
        if isinstance(e.a, X.Const) or isinstance(e.b, X.Const):
            return call("torch.clamp", a, **{"max" if e.op == "min" else "min": b})
        return call("torch.minimum" if e.op == "min" else "torch.maximum", a, b)
    py = {"and": "&", "or": "|"}.get(e.op, e.op)
    return E(f"a {py} b", a=a, b=b)


def _lambda(params: list[str], body: ast.expr) -> ast.expr:
    args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], kwonlyargs=[], kw_defaults=[],
                         defaults=[])
    return ast.Lambda(args=args, body=body)


def _names(c: Ctx, with_score: bool) -> dict[str, str]:
    """Lambda parameter names: the index variables, renamed where a forward variable the
    expression reads has the same name."""
    taken: set[str] = set()
    for x in c.ins:
        code(x, taken)
    out = {}
    for v in ((X.SCORE,) if with_score else ()) + X.VARS:
        out[v] = ident(v, taken | set(out.values()) | {"torch", "F"})
    return out


def _sum(parts: list[ast.expr]) -> ast.expr | None:
    out = None
    for p in parts:
        out = p if out is None else E("a + b", a=out, b=p)
    return out


def _is_whole(e: X.Expr | None, c: Ctx) -> bool:
    """A tensor passed whole (a bias or mask tensor, broadcast as SDPA's attn_mask broadcasts)."""
    if not isinstance(e, X.Load):
        return False
    t = c.in_types[e.input]
    return e == _whole(t, e.input, "")


def _additive_score(o: Attend) -> X.Expr | Literal[False] | None:
    """The score modifier as a bias: ``score + f`` -> f (None without a score); False when it is not additive."""
    sc = o.score
    if sc is None:
        return None
    if isinstance(sc, X.Bin) and sc.op == "+":
        for mine, other in ((sc.a, sc.b), (sc.b, sc.a)):
            if mine == X.Var(name=X.SCORE) and X.SCORE not in X.variables(other):
                return other
    return False


def _kw_common(c: Ctx, o: Attend) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if not (c.const("scale") and o.scale is None):
        kw["scale"] = c.fwd_attr("scale")
    if not (c.const("kv_heads") and c.const("heads") and o.kv_heads == o.heads):
        kw["enable_gqa"] = lit(True)
    return kw


def _same_exprs(c: Ctx) -> None:
    for f in ("bias", "mask", "score", "causal"):
        if not c.const(f):
            raise LoweringError(f"attend's {f} must be the same in every instance of a block")


def _use_flex(c: Ctx) -> bool:
    o = c.op
    assert isinstance(o, Attend)
    kind, compiled = _LOWERING.get()
    # FlexAttention has no attention dropout: an attend with dropout stays on SDPA
    if not (c.const("dropout") and o.dropout == 0.0) or kind == "sdpa":
        return False
    if kind == "flex":
        return True
    if not compiled or not all(x == o for x in c.ops):
        return False
    n, kv_len = c.in_types[0].shape[2], c.in_types[1].shape[2]
    if not (isinstance(n, int) and isinstance(kv_len, int)):
        return False  # free lengths: compiled with dynamic shapes (see AUTO_FLEX_SCORES)
    if n * kv_len >= AUTO_FLEX_SCORES and any(e is not None and X.inputs(e) and not _is_whole(e, c)
                                              for e in (o.bias, o.score, o.mask)):
        return True  # FlexAttention's mods beat SDPA's attn_mask computed in every forward
    sparsity = block_sparsity(o, c.in_types)
    return sparsity is not None and sparsity >= AUTO_FLEX_SPARSITY


def _forward(c: Ctx) -> ast.expr:
    _same_exprs(c)
    return _flex(c) if _use_flex(c) else _sdpa(c)


def _sdpa(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Attend)
    q, k, v = c.ins[:3]
    kw: dict[str, Any] = {}
    if not (c.const("dropout") and o.dropout == 0.0):
        kw["dropout_p"] = E("p if self.training else 0.0", p=c.fwd_attr("dropout"))
    add = _additive_score(o)
    bias = o.bias if add in (None, False) else (add if o.bias is None else X.Bin(op="+", a=add, b=o.bias))
    if add is False:  # a score rewrite SDPA cannot express: the math written out
        names = _names(c, True)
        mod = _lambda([names[n] for n in (X.SCORE, *X.VARS)], _pyexpr(o.score, names, c.ins))  # type: ignore[arg-type]
        mask = _bias_code(c, o, bias, True)
        extra = {"attn_mask": mask} if mask is not None else {}
        return call("scored_attention", q, k, v, mod, **extra, **kw, **_kw_common(c, o))
    if bias is None and o.mask is None:
        if o.causal:
            kw["is_causal"] = lit(True)
    elif _constant_bias(o, c.in_types) is not None:
        kw["attn_mask"] = c.mod
    else:
        kw["attn_mask"] = _bias_code(c, o, bias, True)
    return call("F.scaled_dot_product_attention", q, k, v, **kw, **_kw_common(c, o))


def _bias_code(c: Ctx, o: Attend, bias: X.Expr | None, forward: bool) -> ast.expr | None:
    """SDPA's ``attn_mask``: a tensor passed whole, or ``attention_bias(...)`` of the expressions
    (in forward, or for the build-time buffer when ``forward`` is false)."""
    if bias is None and o.mask is None and not o.causal:
        return None
    if not o.causal and (bias is None) != (o.mask is None):
        only = bias if bias is not None else o.mask
        if _is_whole(only, c) and forward:
            return c.ins[only.input]  # type: ignore[union-attr]
    names = _names(c, False)
    params = [names[n] for n in X.VARS]
    kw: dict[str, Any] = {}
    if bias is not None:
        kw["bias"] = _lambda(params, _pyexpr(bias, names, c.ins))
    if o.mask is not None:
        kw["mask"] = _lambda(params, _pyexpr(o.mask, names, c.ins))
    if o.causal:
        kw["causal"] = lit(True)
    used = set().union(*(X.variables(e) for e in (bias, o.mask) if e is not None))
    if not forward:
        shape = _constant_bias(o, c.in_types)
        assert shape is not None
        return call("attention_bias", *(lit(d) for d in shape[-2:]), *((lit(shape[0]),) if len(shape) == 3 else ()),
                    **kw)
    q, k = c.ins[0], c.ins[1]
    q, k = c.ins[0], c.ins[1]
    args: list[ast.expr] = [E("q.shape[-2]", q=q), E("k.shape[-2]", k=k)]
    if "h" in used or "b" in used:
        args.append(E("q.shape[1]", q=q))
    if "b" in used:
        args.append(E("q.shape[0]", q=q))
    return call("attention_bias", *args, **kw, device=E("q.device", q=q), dtype=E("q.dtype", q=q))


def _module(c: Ctx) -> ast.expr | None:
    o = c.op
    assert isinstance(o, Attend)
    if _use_flex(c) or _constant_bias(o, c.in_types) is None or _additive_score(o) is False:
        return None
    if not all(_constant_bias(x, c.in_types) == _constant_bias(o, c.in_types) for x in c.ops):  # type: ignore[arg-type]
        raise LoweringError("attend's constant mask must have the same shape in every instance of a block")
    return call("nn.Buffer", _bias_code(c, o, o.bias, False), persistent=lit(False))


def _flex(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Attend)
    q, k, v = c.ins[:3]
    kw: dict[str, Any] = {}
    names = _names(c, True)
    if o.score is not None or o.bias is not None:
        body = _pyexpr(o.score, names, c.ins) if o.score is not None else ast.Name(id=names[X.SCORE], ctx=ast.Load())
        if o.bias is not None:
            body = E("a + b", a=body, b=_pyexpr(o.bias, names, c.ins))
        kw["score_mod"] = _lambda([names[n] for n in (X.SCORE, *X.VARS)], body)
    masks = [_pyexpr(o.mask, names, c.ins)] if o.mask is not None else []
    if o.causal:
        masks.append(E("kv <= q", kv=ast.Name(id=names["kv_idx"], ctx=ast.Load()),
                       q=ast.Name(id=names["q_idx"], ctx=ast.Load())))
    if masks:
        body = masks[0] if len(masks) == 1 else E("a & b", a=masks[0], b=masks[1])
        used = set().union(*(X.variables(e) for e in (o.mask,) if e is not None))
        mod = _lambda([names[n] for n in X.VARS], body)
        kw["block_mask"] = call("block_mask", mod, E("q.shape[0]", q=q) if "b" in used else lit(None),
                                E("q.shape[1]", q=q) if "h" in used else lit(None),
                                E("q.shape[-2]", q=q), E("k.shape[-2]", k=k), E("q.device", q=q))
    return call("flex_attention", q, k, v, **kw, **_kw_common(c, o))


def _helpers(c: Ctx) -> tuple[str, ...]:
    o = c.op
    assert isinstance(o, Attend)
    if _use_flex(c):
        return ("flex_attention", "block_mask", "attention_bias", "scored_attention")
    out = ("attention_bias",) if (o.bias is not None or o.mask is not None or o.score is not None) else ()
    return (*out, "scored_attention") if _additive_score(o) is False else out


# ----------------------------------------------------------------------------- drawing and interpreter


def _draw(o: Attend, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    detail = [f"{o.heads} heads × {o.head_dim}" + (f", {o.kv_heads} kv heads" if o.kv_heads != o.heads else "")]
    names = {i: f"t{i - 2}" for i in range(3, len(ins))}
    if o.causal:
        detail.append("causal")
    for what, e in (("score", o.score), ("bias", o.bias), ("mask", o.mask)):
        if e is not None:
            text = X.show(e, names)
            detail.append(f"{what}: {text if len(text) <= 40 else text[:39] + '…'}")
    used = sorted({i for e in o.exprs() for i in X.inputs(e)})
    if used and not all(isinstance(e, X.Load) and e == _whole(ins[e.input], e.input, "") for e in o.exprs()):
        detail.append(", ".join(f"{names[i]}: {ins[i]}" for i in used))
    masked = o.causal or o.mask is not None
    return Look("Masked attention" if masked else "Attention", tuple(detail), "attention")


def evaluate(e: X.Expr, env: dict[str, Any], tensors: list[Any]) -> Any:
    """``e`` with torch, the variables bound in ``env`` (broadcastable tensors), the inputs in ``tensors``."""
    import torch

    if isinstance(e, X.Var):
        return env[e.name]
    if isinstance(e, X.Const):
        return e.value
    if isinstance(e, X.Load):
        return tensors[e.input][tuple(evaluate(i, env, tensors) for i in e.index)]
    if isinstance(e, X.Where):
        c, a, b = (torch.as_tensor(evaluate(x, env, tensors)) for x in (e.cond, e.then, e.other))
        return torch.where(c, a, b)
    if isinstance(e, X.Un):
        a = evaluate(e.a, env, tensors)
        return torch.logical_not(a) if e.op == "not" else abs(a) if e.op == "abs" else -a
    assert isinstance(e, X.Bin)
    a, b = evaluate(e.a, env, tensors), evaluate(e.b, env, tensors)
    if e.op in X.FUNCS:
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return torch.minimum(a, b) if e.op == "min" else torch.maximum(a, b)
    fn = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b, "//": lambda: a // b,
          "%": lambda: a % b, "<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b, ">=": lambda: a >= b,
          "==": lambda: a == b, "!=": lambda: a != b, "and": lambda: a & b, "or": lambda: a | b}[e.op]
    return fn()


def _interpret(c: Any) -> Any:
    import torch

    o = c.op
    assert isinstance(o, Attend)
    if o.dropout > 0 and c.train:
        from archlang.lower.interpret import InterpretError

        raise InterpretError(f"`{c.node.name}`: attention dropout {o.dropout} in train mode is random; "
                             "the oracle covers dropout 0 only")
    q, k, v = c.x(0), c.x(1), c.x(2)
    group = o.heads // o.kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # head i reads kv head i // group
    scores = (q @ k.transpose(-2, -1)) * o.softmax_scale  # [B, H, N, M]
    bsz, heads, n, kv_len = scores.shape
    dev = q.device
    env = {"b": torch.arange(bsz, device=dev).view(-1, 1, 1, 1), "h": torch.arange(heads, device=dev).view(-1, 1, 1),
           "q_idx": torch.arange(n, device=dev).view(-1, 1), "kv_idx": torch.arange(kv_len, device=dev)}
    tensors = list(c.xs)
    if o.score is not None:
        scores = torch.as_tensor(evaluate(o.score, {**env, X.SCORE: scores}, tensors)).to(scores.dtype) \
            .expand(bsz, heads, n, kv_len)
    if o.bias is not None:
        scores = scores + evaluate(o.bias, env, tensors)
    keep = torch.ones(n, kv_len, dtype=torch.bool, device=dev)
    if o.mask is not None:
        keep = keep & evaluate(o.mask, env, tensors)
    if o.causal:
        keep = keep & (env["kv_idx"] <= env["q_idx"])  # key j after query i is hidden (top-left)
    scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


define(Attend, shape=_shape, cost=_cost, lower=Rule(forward=_forward, module=_module, helpers=_helpers,
                                                   reuses_input=True),
       draw=_draw, interpret=_interpret,
       example="""
arch t(window: int = 3) {
  in q: [B, 4, 7, 8]
  in k: [B, 2, 7, 8]
  in v: [B, 2, 7, 6]
  in slope: [4]
  out y = attend(q, k, v, causal = true)
  out z = attend(y, v, v, scale = 0.3, mask = q_idx - kv_idx < window, causal = true)
  out w = attend(q, k, v, bias = slope[h] * (kv_idx - q_idx))
}
""")
