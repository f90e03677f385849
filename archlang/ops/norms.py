"""Normalisation ops written in the one-file layout: RMSNorm.

Takes: nothing at import but the rule kits of each stage. Produces: the op class
:class:`RMSNorm`, its language signature ``rmsnorm(x, eps = 1e-6, affine = true)`` and its
shape, cost, lowering, drawing and interpreter rules, registered with
:func:`archlang.ops.registry.define`.

RMSNorm (Zhang & Sennrich 2019; Llama, Mistral, T5) scales each row of the last dim by the
reciprocal of its root mean square: ``y = x / sqrt(mean(x^2) + eps) * weight``. The lowering
is ``torch.nn.RMSNorm``, whose state_dict key is ``weight`` as in Hugging Face's
``LlamaRMSNorm``.
"""

from __future__ import annotations

from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, last_dim, op
from archlang.cost.rules import OpCost, m, numel
from archlang.ir.dims import add, fmt, product
from archlang.ir.ops import OpBase, ParamSpec
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, Rule, call
from archlang.ops.registry import define
from archlang.render.rules import Look


class RMSNorm(OpBase):
    """RMSNorm over the last dim of ``[*, dim]``, with a learned per-channel gain when ``affine``."""

    op: Literal["rmsnorm"] = "rmsnorm"
    dim: int
    eps: float = 1e-6
    affine: bool = True

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="weight", shape=(self.dim,), role="norm"),) if self.affine else ()


@op("rmsnorm", ("x",), (Arg("eps", "float", 1e-6, range="positive"), Arg("affine", "bool", True)),
    "RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * weight (Llama's norm).")
def _signature(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> RMSNorm:
    return RMSNorm(dim=last_dim(ctx, ins[0], "rmsnorm"), eps=a["eps"], affine=a["affine"])


def _shape(o: RMSNorm, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    shapes.expect_min_rank(x, 1, "rmsnorm")
    shapes.expect_equal(x.shape[-1], o.dim, f"rmsnorm over {o.dim} features, got {fmt(x.shape[-1])}")
    return (x,)


def _cost(o: RMSNorm, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    # square, mean, rsqrt-multiply and the gain: 4 per element; backward needs the input and
    # one reciprocal RMS per row, and with a gain the normalised input (its gradient's factor)
    normed = numel(ins[0]) if o.affine else 0
    return OpCost(other_flops=m(4, numel(outs[0])), saved=add(product(ins[0].shape[:-1]), normed), saves_inputs=(0,))


def _module(c: Ctx) -> Any:
    kw = {"eps": c.init_attr("eps")}
    if not (c.const("affine") and c.op.affine):  # type: ignore[attr-defined]
        kw["elementwise_affine"] = c.init_attr("affine")
    return call("nn.RMSNorm", c.init_attr("dim"), **kw)


def _draw(o: RMSNorm, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("RMSNorm", () if o.affine else ("no affine",), "norm")


def _interpret(c: Any) -> Any:
    import torch

    o = c.op
    x = c.x()
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + o.eps)
    return y * c.p("weight") if o.affine else y


define(RMSNorm, shape=_shape, cost=_cost, lower=Rule(forward=lambda c: call(c.mod, *c.ins), module=_module),
       draw=_draw, interpret=_interpret,
       example="""
arch t() {
  in x: [B, 5, 12]
  out y = n1: rmsnorm(x, eps = 1e-5)
  out z = rmsnorm(y, affine = false)
}
""")
