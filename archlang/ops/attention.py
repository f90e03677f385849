"""The fused attention primitive ``attend(q, k, v, ...)``, with all of its rules.

Takes: nothing at import but the rule kits of each stage. Produces: the op class
:class:`Attend`, its language signature and its shape, cost, lowering (SDPA), drawing and
interpreter rules, registered with :func:`archlang.ops.registry.define`.

The signature (stable; later arguments are keyword-only additions)::

    attend(q, k, v, scale = <head_dim ** -0.5>, causal = false, dropout = 0.0)

- ``q`` is ``[B, H, N, D]``, ``k`` is ``[B, Hkv, M, D]`` and ``v`` ``[B, Hkv, M, Dv]``; the
  output is ``[B, H, N, Dv]``. When ``Hkv < H`` (it must divide ``H``) the attention is
  grouped-query: query head ``i`` reads key/value head ``i // (H / Hkv)``, as
  ``F.scaled_dot_product_attention(..., enable_gqa=True)`` and Hugging Face's ``repeat_kv``.
- ``scale`` multiplies the scores ``q . k`` (default ``D ** -0.5``).
- ``causal`` masks key ``j`` for query ``i`` when ``j > i``: top-left aligned, as SDPA's
  ``is_causal`` (with ``N < M`` the last keys are never seen; with ``N > M`` every query past
  ``M`` sees all keys).
- ``dropout`` drops attention probabilities in train mode (SDPA's ``dropout_p``).

The lowering is ``F.scaled_dot_product_attention`` on the op's three inputs.
"""

from __future__ import annotations

from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, const_dim, op
from archlang.cost.rules import OpCost, m
from archlang.ir.dims import fmt
from archlang.ir.ops import OpBase
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, E, Rule, call, lit
from archlang.ops.registry import define
from archlang.render.rules import Look


class Attend(OpBase):
    """Scaled dot-product attention of ``q [B, H, N, D]`` over ``k [B, Hkv, M, D]`` and
    ``v [B, Hkv, M, Dv]``: ``softmax(q k^T * scale (+ causal mask)) v``, ``[B, H, N, Dv]``."""

    op: Literal["attend"] = "attend"
    heads: int  # H, the query heads
    kv_heads: int  # Hkv, which divides H (grouped-query attention when smaller)
    head_dim: int  # D, of q and k
    value_dim: int  # Dv, of v and the output
    scale: float | None = None  # None: head_dim ** -0.5
    causal: bool = False
    dropout: float = 0.0

    @property
    def softmax_scale(self) -> float:
        return self.head_dim ** -0.5 if self.scale is None else self.scale


def _head_dims(ctx: Any, t: TensorType, i: int, what: str) -> tuple[int, int]:
    if t.rank != 4:
        raise BuildError("E0302", f"attend expects {what} as [B, heads, length, head_dim], got {t}",
                         help="split the heads first, e.g. `rearrange(x, \"b n (h d) -> b h n d\", h = heads)`",
                         arg=what)
    return const_dim(ctx, t.shape[1], f"the heads of `{what}`", i), const_dim(ctx, t.shape[3], f"the head dim of `{what}`", i)


@op("attend", ("q", "k", "v"),
    (Arg("scale", "float", None, range="positive"), Arg("causal", "bool", False),
     Arg("dropout", "float", 0.0, range="prob")),
    "Fused scaled dot-product attention: q [B, H, N, D], k [B, Hkv, M, D], v [B, Hkv, M, Dv] -> [B, H, N, Dv]; "
    "grouped-query when Hkv divides H; `scale` (default D ** -0.5), `causal` (top-left, as SDPA), "
    "`dropout` on the probabilities in train mode.")
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
    return Attend(heads=h, kv_heads=hk, head_dim=d, value_dim=dv, scale=a["scale"], causal=a["causal"],
                  dropout=a["dropout"])


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
    return (TensorType(shape=(b, h, n, o.value_dim), dtype=q.dtype),)


def _cost(o: Attend, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    q, k, _ = ins[:3]
    b, h, n = q.shape[0], o.heads, q.shape[2]
    kv_len = k.shape[2]
    scores = m(b, h, n, kv_len)
    # FlopCounterMode under the math backend: q k^T and p v, 2 flops per multiply-add (the full
    # matrices, also when causal); the scale, the softmax (3 per score) beside them
    return OpCost(flops=m(2, scores, o.head_dim + o.value_dim), other_flops=m(4, scores),
                  saves_inputs=(0, 1, 2), saves_output=True, saved=m(b, h, n),
                  attn_entries=scores, attn_per_head=m(n, kv_len), attn_global_per_head=m(n, kv_len))


def _sdpa(c: Ctx) -> Any:
    o = c.op
    assert isinstance(o, Attend)
    kw: dict[str, Any] = {}
    if not (c.const("dropout") and o.dropout == 0.0):
        kw["dropout_p"] = E("p if self.training else 0.0", p=c.fwd_attr("dropout"))
    if not (c.const("causal") and not o.causal):
        kw["is_causal"] = c.fwd_attr("causal")
    if not (c.const("scale") and o.scale is None):
        kw["scale"] = c.fwd_attr("scale")
    if not (c.const("kv_heads") and c.const("heads") and o.kv_heads == o.heads):
        kw["enable_gqa"] = lit(True)
    return call("F.scaled_dot_product_attention", *c.ins[:3], **kw)


def _draw(o: Attend, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    detail = [f"{o.heads} heads × {o.head_dim}" + (f", {o.kv_heads} kv heads" if o.kv_heads != o.heads else "")]
    if o.causal:
        detail.append("causal")
    return Look("Masked attention" if o.causal else "Attention", tuple(detail), "attention")


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
    n, kv_len = scores.shape[-2:]
    if o.causal:
        future = torch.arange(kv_len, device=q.device)[None, :] > torch.arange(n, device=q.device)[:, None]
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


define(Attend, shape=_shape, cost=_cost, lower=Rule(forward=_sdpa), draw=_draw, interpret=_interpret,
       example="""
arch t() {
  in q: [B, 4, 7, 8]
  in k: [B, 2, 7, 8]
  in v: [B, 2, 7, 6]
  out y = attend(q, k, v, causal = true)
  out z = attend(y, v, v, scale = 0.3)
}
""")
