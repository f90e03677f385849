"""Token-sequence ops written in the one-file layout: prepending tokens, placing features at tokens.

Takes: nothing at import but the rule kits of each stage. Produces two op classes, their
language signatures and their shape, cost, lowering, drawing and interpreter rules,
registered with :func:`archlang.ops.registry.define`:

- ``prepend(x, tokens)`` (:class:`Prepend`): ``tokens`` (``[D]`` or ``[K, D]``, typically a
  ``param``) broadcast over the batch and put before ``x: [B, N, D]``: ``[B, K + N, D]``. CLIP's
  class token is such a ``[D]`` parameter (HF's ``class_embedding``).
- ``place_tokens(x, ids, features, token)`` (:class:`PlaceTokens`): the rows of ``x: [B, T, D]``
  at the positions where ``ids: int[B, T] == token`` are replaced, in order, by the rows of
  ``features: [B, n, D]`` (both flattened over batch and position, as ``Tensor.masked_scatter``
  and Hugging Face's LLaVA place image features at the ``<image>`` tokens). A model is given as
  many ``token`` ids as feature rows; fewer use the first rows only, more are an error at run time.
"""

from __future__ import annotations

from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, last_dim, op
from archlang.cost.rules import OpCost, numel
from archlang.ir.dims import add, fmt
from archlang.ir.ops import OpBase
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, E, Rule
from archlang.ops.registry import define
from archlang.render.rules import Look


class Prepend(OpBase):
    """``tokens`` (``[D]`` or ``[K, D]``) put before every example of ``x: [B, N, D]`` -> ``[B, K + N, D]``."""

    op: Literal["prepend"] = "prepend"
    count: int  # K
    dim: int  # D


@op("prepend", ("x", "tokens"), (),
    "Put `tokens` ([D] or [K, D], e.g. a `param`) before every example of x [B, N, D]: [B, K + N, D].")
def _prepend_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Prepend:
    x, t = ins
    if x.rank != 3:
        raise BuildError("E0302", f"prepend expects x as [B, N, D], got {x}")
    if t.rank not in (1, 2):
        raise BuildError("E0302", f"prepend expects tokens as [D] or [K, D], got {t}",
                         help="one token is a [D] tensor, several a [K, D] one")
    k = 1 if t.rank == 1 else t.shape[0]
    if not isinstance(k, int):
        raise BuildError("E0404", f"the number of prepended tokens must be known at compile time, got `{fmt(k)}`")
    return Prepend(count=k, dim=last_dim(ctx, x, "prepend"))


def _prepend_shape(o: Prepend, ins: list[TensorType]) -> tuple[TensorType, ...]:
    x, t = ins
    shapes.expect_rank(x, 3, "prepend")
    shapes.expect_equal(t.shape[-1], x.shape[-1], f"prepend: tokens of width {fmt(t.shape[-1])} before "
                        f"x of width {fmt(x.shape[-1])}", "the tokens and x need the same last dim", 1)
    return (TensorType(shape=(x.shape[0], add(x.shape[1], o.count), x.shape[2]), dtype=x.dtype),)


def _prepend_cost(o: Prepend, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    return OpCost()  # a copy


def _prepend_forward(c: Ctx) -> Any:
    x, t = c.ins
    tokens = E("t.expand(x.shape[0], 1, -1)" if c.in_types[1].rank == 1 else "t.expand(x.shape[0], -1, -1)",
               t=t, x=x)
    return E("torch.cat([t, x], dim=1)", t=tokens, x=x)


def _prepend_draw(o: Prepend, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Prepend", (f"{o.count} token" + ("s" if o.count != 1 else ""),), "op")


def _prepend_interpret(c: Any) -> Any:
    import torch

    x, t = c.x(0), c.x(1)
    t = t.reshape(-1, t.shape[-1])
    return torch.cat([torch.stack([t] * x.shape[0]), x], dim=1)


define(Prepend, shape=_prepend_shape, cost=_prepend_cost, lower=Rule(forward=_prepend_forward),
       draw=_prepend_draw, interpret=_prepend_interpret,
       example="""
arch t() {
  in x: [B, 5, 8]
  cls = class_embedding: param([8], init = "normal")
  y = prepend(x, cls)
  out z = prepend(y, extra: param([2, 8], init = "normal"))
}
""")


class PlaceTokens(OpBase):
    """``x: [B, T, D]`` with the rows where ``ids == token`` replaced, in order, by those of
    ``features: [B, n, D]`` (flattened over batch and position: ``masked_scatter``)."""

    op: Literal["place_tokens"] = "place_tokens"
    token: int
    dim: int


@op("place_tokens", ("x", "ids", "features"), (Arg("token", "int", min=0),),
    "Replace the rows of x [B, T, D] where ids int[B, T] == token, in order, by the rows of features "
    "[B, n, D] (masked_scatter, as HF LLaVA places image features at its <image> tokens).")
def _place_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> PlaceTokens:
    x, ids, f = ins
    if x.rank != 3 or f.rank != 3:
        raise BuildError("E0302", f"place_tokens expects x and features as [B, T, D] and [B, n, D], got {x} and {f}")
    if ids.dtype != "int" or ids.rank != 2:
        raise BuildError("E0401", f"place_tokens expects ids as int[B, T], got {ids}",
                         help="pass the token ids the embedding read")
    return PlaceTokens(token=a["token"], dim=last_dim(ctx, x, "place_tokens"))


def _place_shape(o: PlaceTokens, ins: list[TensorType]) -> tuple[TensorType, ...]:
    x, ids, f = ins
    shapes.expect_rank(x, 3, "place_tokens")
    shapes.expect_rank(ids, 2, "place_tokens", 1)
    shapes.expect_rank(f, 3, "place_tokens", 2)
    shapes.expect_equal(tuple(ids.shape), tuple(x.shape[:2]), f"place_tokens: ids {ids} do not index x {x}",
                        "ids hold one token id per row of x", 1)
    shapes.expect_equal(f.shape[2], x.shape[2], f"place_tokens: features of width {fmt(f.shape[2])} into x of "
                        f"width {fmt(x.shape[2])}", "project the features to the model width first", 2)
    return (x,)


def _place_cost(o: PlaceTokens, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    # the comparison, then a copy of x with the rows written
    return OpCost(other_flops=numel(ins[1]))


def _place_forward(c: Ctx) -> Any:
    x, ids, f = c.ins
    return E("x.masked_scatter((ids == t).unsqueeze(-1), f)", x=x, ids=ids, f=f, t=c.fwd_attr("token"))


def _place_draw(o: PlaceTokens, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Place features", (f"at token {o.token}",), "op")


def _place_interpret(c: Any) -> Any:
    x, ids, f = c.x(0), c.x(1), c.x(2)
    rows = (ids.reshape(-1) == c.op.token).nonzero().flatten().tolist()
    feats = f.reshape(-1, f.shape[-1])
    out = list(x.reshape(-1, x.shape[-1]).unbind(0))
    for j, r in enumerate(rows):
        out[r] = feats[j].to(x.dtype)
    import torch

    return torch.stack(out).reshape(x.shape)


define(PlaceTokens, shape=_place_shape, cost=_place_cost, lower=Rule(forward=_place_forward),
       draw=_place_draw, interpret=_place_interpret,
       example="""
arch t() {
  in ids: int[B, 6]
  in image: [B, 4, 8]
  x = embed: embedding(ids, 3, 8)
  out y = place_tokens(x, ids, image, token = 2)
}
""")
