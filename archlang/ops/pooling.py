"""The pooling op: max and average pooling on ``[B, C, H, W]``.

Takes: nothing at import but the rule kits of each stage. Produces: the rules (language
signature, shape, cost, lowering, drawing, interpreter) of :class:`~archlang.ir.ops.Pool2d`, registered with
:func:`archlang.ops.registry.define`. The op classes stay in :mod:`archlang.ir.ops` (the
stages and interop refer to them there); helpers several rules of a stage share stay in
that stage's module, its rule kit.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from archlang.check.shapes import conv_out, expect_rank
from archlang.check.surface import Arg, BuildError, op, pair, same_pad
from archlang.cost.rules import OpCost, m, numel, s
from archlang.ir import ops as O
from archlang.ir.dims import add
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, Rule, call, choice, lit, padded
from archlang.ops.registry import define
from archlang.render import rules as render
from archlang.render.rules import Look, square

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


# --------------------------------------------------------------------------- signatures


def _pool_signature(kind: str):
    def build(ctx, ins, a):
        k = pair(a["kernel"])
        s = tuple(st or kk for st, kk in zip(pair(a["stride"]), k, strict=True))  # stride 0: the kernel
        for p_, kk in zip(pair(a["padding"]), k, strict=True):
            if p_ > kk // 2:
                raise BuildError("E0406", f"{kind} pooling pads at most half its kernel: padding {p_} with kernel {kk}",
                                 help=f"use padding <= {kk // 2}, or `same = true`", arg="padding")
        return O.Pool2d(kind=kind, kernel=k, stride=s, padding=pair(a["padding"]),
                        pad=same_pad(ctx, ins[0], k, s) if a["same"] else (0, 0, 0, 0),
                        count_include_pad=a.get("count_include_pad", True))
    return build


for _k in ("max", "avg"):
    op(f"{_k}_pool2d", ("x",), (Arg("kernel", "pair", min=1), Arg("stride", "pair", 0, min=0),
                                Arg("padding", "pair", 0, min=0), Arg("same", "bool", False),
                                *((Arg("count_include_pad", "bool", True),) if _k == "avg" else ())),
       f"{_k.capitalize()} pooling on [B, C, H, W] (stride defaults to the kernel; `same`: TF SAME padding"
       + ("; `count_include_pad = false` averages over the real inputs only)." if _k == "avg" else ")."))(_pool_signature(_k))


# --------------------------------------------------------------------------- shape rules


def _pool_shape(op: O.Pool2d, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_rank(x, 4, f"{op.kind}_pool2d ([B, C, H, W])")
    l_, r_, t_, b_ = op.pad
    h = conv_out(add(x.shape[2], t_ + b_), op.kernel[0], op.stride[0], op.padding[0], "pool2d")
    w = conv_out(add(x.shape[3], l_ + r_), op.kernel[1], op.stride[1], op.padding[1], "pool2d")
    return (TensorType(shape=(x.shape[0], x.shape[1], h, w)),)


# --------------------------------------------------------------------------- cost rules


def _pool_cost(op: O.Pool2d, ins, outs) -> OpCost:
    # max pooling also keeps its argmax (int64); TF-same padding is an F.pad first, whose copy
    # the pooling keeps instead of its input
    x = ins[0]
    padded = m(x.shape[0], x.shape[1], s(x.shape[2], op.pad[2] + op.pad[3]), s(x.shape[3], op.pad[0] + op.pad[1])) \
        if any(op.pad) else 0
    return OpCost(other_flops=m(numel(outs[0]), op.kernel[0] * op.kernel[1]), saves_inputs=() if padded else (0,),
                  saved=padded, temp=padded, temp_train=0, saved_int64=numel(outs[0]) if op.kind == "max" else 0)


# --------------------------------------------------------------------------- lowering rules


def _pool_forward_lower(c: Ctx) -> ast.expr:
    kind = choice(c.op.kind, ("max", "avg"))  # type: ignore[attr-defined]
    x = padded(c, lit(float("-inf")) if kind == "max" else None)
    kw = {} if kind == "max" or (c.const("count_include_pad") and c.op.count_include_pad) else \
        {"count_include_pad": c.fwd_attr("count_include_pad")}  # type: ignore[attr-defined]
    return call(f"F.{kind}_pool2d", x, c.fwd_attr("kernel"), c.fwd_attr("stride"), c.fwd_attr("padding"), **kw)


# --------------------------------------------------------------------------- drawing rules


def _pool_draw(op: O.Pool2d, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    title = "MaxPool" if op.kind == "max" else "AvgPool"
    detail = square(op.kernel) + (f", stride {render.pair(op.stride)}" if op.stride != op.kernel else "")
    if op.kind == "avg" and not op.count_include_pad:
        detail += ", padding not counted"
    return Look(title, (detail,), "reshape")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _pool2d_interpret(c: EvalCtx) -> Tensor:
    """Max or average over kernel windows of [B, C, H, W] after padding (``pad``: extra
    left/right/top/bottom, then ``padding`` on every side): -inf for max, zeros for avg (the
    zeros count in the average)."""
    import torch
    import torch.nn.functional as F

    op = c.op
    assert isinstance(op, O.Pool2d)
    x = c.x()
    (kh, kw), (sh, sw), (p0, p1) = op.kernel, op.stride, op.padding
    left, right, top, bottom = op.pad
    fill = float("-inf") if op.kind == "max" else 0.0
    x = F.pad(x, (left + p1, right + p1, top + p0, bottom + p0), value=fill)
    win = x.unfold(2, kh, sh).unfold(3, kw, sw)  # [B, C, oh, ow, kh, kw]
    win = win.reshape(*win.shape[:4], kh * kw)
    if op.kind == "avg" and not op.count_include_pad:  # divide by the inputs in each window, not the kernel
        ones = F.pad(torch.ones_like(c.x()[:1, :1]), (left, right, top, bottom), value=1.0)
        ones = F.pad(ones, (p1, p1, p0, p0), value=0.0).unfold(2, kh, sh).unfold(3, kw, sw)
        return win.sum(dim=-1) / ones.reshape(*ones.shape[:4], kh * kw).sum(dim=-1)
    return win.max(dim=-1).values if op.kind == "max" else win.mean(dim=-1)


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t() {
  in x: [B, 3, 7, 7]
  a = max_pool2d(x, kernel = 3, stride = 2, padding = 1)
  b = avg_pool2d(x, kernel = 3, stride = 2, same = true, count_include_pad = false)
  out y = a + avg_pool2d(x, kernel = 3, stride = 2, padding = 1)
  out z = b + max_pool2d(x, kernel = 2, stride = 2, same = true)
}
"""

define(O.Pool2d, shape=_pool_shape, cost=_pool_cost,
       lower=Rule(forward=_pool_forward_lower),
       draw=_pool_draw, interpret=_pool2d_interpret, example=_EXAMPLE)
