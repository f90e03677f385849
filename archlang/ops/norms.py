"""The normalisation ops: RMSNorm, LayerNorm, BatchNorm and GroupNorm, each with all its rules.

Takes: nothing at import but the rule kits of each stage. Produces: the op class
:class:`RMSNorm`, its language signature ``rmsnorm(x, eps = 1e-6, affine = true)`` and its
shape, cost, lowering, drawing and interpreter rules, registered with
:func:`archlang.ops.registry.define`; and the rules (language signature, shape, cost,
lowering, drawing, interpreter) of the older :class:`~archlang.ir.ops.LayerNorm`,
:class:`~archlang.ir.ops.BatchNorm` and :class:`~archlang.ir.ops.GroupNorm`, whose classes
stay in :mod:`archlang.ir.ops` (the stages and interop refer to them there); helpers several
rules of a stage share stay in that stage's module, its rule kit.

RMSNorm (Zhang & Sennrich 2019; Llama, Mistral, T5) scales each row of the last dim by the
reciprocal of its root mean square: ``y = x / sqrt(mean(x^2) + eps) * weight``. The lowering
is ``torch.nn.RMSNorm``, whose state_dict key is ``weight`` as in Hugging Face's
``LlamaRMSNorm``.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any, Literal

from archlang.check import shapes
from archlang.check.shapes import ShapeError, expect_equal, expect_min_rank, norm_dim
from archlang.check.surface import Arg, BuildError, axis_index, const_dim, last_dim, op
from archlang.cost.rules import OpCost, m, numel
from archlang.ir import ops as O
from archlang.ir.dims import add, fmt, product
from archlang.ir.ops import OpBase, ParamSpec
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, E, LoweringError, Rule, call, call_module, int_lit
from archlang.ops.registry import define
from archlang.render.rules import Look

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


class RMSNorm(OpBase):
    """RMSNorm over the last dim of ``[*, dim]``, with a learned per-channel gain when ``affine``."""

    op: Literal["rmsnorm"] = "rmsnorm"
    dim: int
    eps: float = 1e-6
    affine: bool = True

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="weight", shape=(self.dim,), role="norm"),) if self.affine else ()

    def rows_independent(self, axis: int, rank: int) -> bool:
        return axis < rank - 1


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


# --------------------------------------------------------------------------- signatures


@op("layernorm", ("x",), (Arg("eps", "float", 1e-5, range="positive"), Arg("affine", "bool", True),
                          Arg("bias", "bool", True), Arg("dim", "int", -1)),
    "LayerNorm over the last dim (or `dim`: 1 for the channels of NCHW); `bias = false`: a weight only.")
def _layernorm_signature(ctx, ins, a):
    x, axis = ins[0], axis_index(ctx, ins[0], a["dim"], "layernorm")
    last = axis == x.rank - 1
    return O.LayerNorm(dim=last_dim(ctx, x, "layernorm") if last else const_dim(ctx, x.shape[axis], "the features of `layernorm`"),
                       eps=a["eps"], affine=a["affine"], bias=a["bias"], axis=-1 if last else axis)


@op("batchnorm", ("x",), (Arg("eps", "float", 1e-5, range="positive"), Arg("momentum", "float", 0.1, range="prob")), "BatchNorm over dim 1 of [B, C, ...].")
def _batchnorm_signature(ctx, ins, a):
    x = ins[0]
    if x.rank < 2:
        raise BuildError("E0302", f"batchnorm expects [B, C, ...], got {x}")
    return O.BatchNorm(channels=const_dim(ctx, x.shape[1], "batchnorm channels"), eps=a["eps"], momentum=a["momentum"])


@op("groupnorm", ("x",), (Arg("groups", "int", min=1), Arg("eps", "float", 1e-5, range="positive")), "GroupNorm over dim 1 of [B, C, ...].")
def _groupnorm_signature(ctx, ins, a):
    x = ins[0]
    if x.rank < 2:
        raise BuildError("E0302", f"groupnorm expects [B, C, ...], got {x}")
    c = const_dim(ctx, x.shape[1], "groupnorm channels")
    if c % a["groups"]:
        raise BuildError("E0501", f"groupnorm: groups = {a['groups']} does not divide {c} channels",
                         help=f"{ctx.describe_arg('groups')}; channels from {ctx.describe_input(0)}", arg="groups")
    if c // a["groups"] == 1 and all(d == 1 for d in x.shape[2:]):
        raise BuildError("E0406", f"groupnorm with {a['groups']} groups of {c} channels normalises one value per group",
                         help="each group needs more than one value (a spatial size, or fewer groups)", arg="groups")
    return O.GroupNorm(groups=a["groups"], channels=c, eps=a["eps"])


# --------------------------------------------------------------------------- shape rules


def _layernorm_shape(op: O.LayerNorm, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_min_rank(x, 1, "layernorm")
    d = norm_dim(op.axis, x.rank, "layernorm")
    expect_equal(x.shape[d], op.dim, f"layernorm over {op.dim} features, got {fmt(x.shape[d])}")
    return (x,)


def _batchnorm_shape(op: O.BatchNorm, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_min_rank(x, 2, "batchnorm")
    expect_equal(x.shape[1], op.channels, f"batchnorm over {op.channels} channels, got {fmt(x.shape[1])}")
    return (x,)


def _groupnorm_shape(op: O.GroupNorm, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_min_rank(x, 2, "groupnorm")
    expect_equal(x.shape[1], op.channels, f"groupnorm over {op.channels} channels, got {fmt(x.shape[1])}")
    if op.channels % op.groups:
        raise ShapeError("E0501", f"groupnorm: {op.groups} groups do not divide {op.channels} channels")
    return (x,)


# --------------------------------------------------------------------------- cost rules


def _norm_cost(op: O.OpBase, ins, outs) -> OpCost:
    x = ins[0]
    if isinstance(op, O.LayerNorm):  # input, and a mean and a reciprocal std per row
        stats = m(2, product(x.shape[:-1] if op.axis == -1 else x.shape[:op.axis] + x.shape[op.axis + 1:]))
    elif isinstance(op, O.GroupNorm):
        stats = m(2, x.shape[0], op.groups)
    else:
        stats = m(2, op.channels)
    # nn.BatchNorm*d registers running_mean and running_var (float) and num_batches_tracked (int64)
    buffers = (2 * op.channels, 1) if isinstance(op, O.BatchNorm) else (0, 0)
    return OpCost(other_flops=m(5, numel(outs[0])), saved=stats, saves_inputs=(0,), buffer_float=buffers[0],
                  buffer_int64=buffers[1])


# --------------------------------------------------------------------------- lowering rules


def _ln_mod_lower(c: Ctx) -> ast.expr:
    kw = {}
    if not (c.const("eps") and c.op.eps == 1e-5):  # type: ignore[attr-defined]
        kw["eps"] = c.init_attr("eps")
    if not (c.const("affine") and c.op.affine):  # type: ignore[attr-defined]
        kw["elementwise_affine"] = c.init_attr("affine")
    if not (c.const("bias") and c.op.bias):  # type: ignore[attr-defined]
        kw["bias"] = c.init_attr("bias")
    return call("nn.LayerNorm", c.init_attr("dim"), **kw)


def _ln_forward_lower(c: Ctx) -> ast.expr:
    """nn.LayerNorm over the last dim; over another (NCHW channels) it moves there and back."""
    if not c.const("axis"):
        raise LoweringError("a layernorm's dim must be the same in every instance of a block")
    axis = c.op.axis  # type: ignore[attr-defined]
    if axis in (-1, c.in_types[0].rank - 1):
        return call_module(c)
    moved = call(c.mod, E("x.movedim(d, -1)", x=c.x(), d=int_lit(axis)))
    return E("y.movedim(-1, d)", y=moved, d=int_lit(axis))


def _bn_mod_lower(c: Ctx) -> ast.expr:
    kind = "nn.BatchNorm2d" if c.in_types[0].rank == 4 else "nn.BatchNorm1d"
    kw = {}
    if not (c.const("eps") and c.op.eps == 1e-5):  # type: ignore[attr-defined]
        kw["eps"] = c.init_attr("eps")
    if not (c.const("momentum") and c.op.momentum == 0.1):  # type: ignore[attr-defined]
        kw["momentum"] = c.init_attr("momentum")
    return call(kind, c.init_attr("channels"), **kw)


# --------------------------------------------------------------------------- drawing rules


def _layernorm_draw(op: O.LayerNorm, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    detail = () if op.affine else ("no affine",)
    if op.affine and not op.bias:
        detail = ("no bias",)
    if op.axis != -1:
        detail = (*detail, f"over dim {op.axis}")
    return Look("LayerNorm", detail, "norm")


def _batchnorm_draw(op: O.BatchNorm, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("BatchNorm", (), "norm")


def _groupnorm_draw(op: O.GroupNorm, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("GroupNorm", (f"{op.groups} groups",), "norm")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _layernorm_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.LayerNorm)
    x = c.x().movedim(op.axis, -1)  # over another dim than the last: normalise there
    y = interp.normalise(x, (-1,), op.eps)
    if op.affine:
        y = y * c.p("weight") + c.p("bias") if op.bias else y * c.p("weight")
    return y.movedim(-1, op.axis)


def _batchnorm_interpret(c: EvalCtx) -> Tensor:
    import torch

    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.BatchNorm)
    x = c.x()
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    if c.train:  # batch statistics (biased variance); the running statistics are not touched
        dims = tuple(d for d in range(x.ndim) if d != 1)
        y = interp.normalise(x, dims, op.eps)
    else:
        mean, var = c.p("running_mean").reshape(shape), c.p("running_var").reshape(shape)
        y = (x - mean) / torch.sqrt(var + op.eps)
    return y * c.p("weight").reshape(shape) + c.p("bias").reshape(shape)


def _groupnorm_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.GroupNorm)
    x = c.x()
    b, ch = x.shape[0], x.shape[1]
    y = interp.normalise(x.reshape(b, op.groups, -1), (-1,), op.eps).reshape(x.shape)
    shape = [1, ch] + [1] * (x.ndim - 2)
    return y * c.p("weight").reshape(shape) + c.p("bias").reshape(shape)


# --------------------------------------------------------------------------- the definitions of layernorm, batchnorm, groupnorm

_OLD_EXAMPLE = """
arch t() {
  in x: [B, 6, 5, 3]
  in s: [B, 6, 7]
  in v: [B, 6]
  a = g1: groupnorm(bn1: batchnorm(x, eps = 1e-3, momentum = 0.3), groups = 3)
  b = bn2: batchnorm(s)
  c = bn3: batchnorm(v)
  out y = ln1: layernorm(a, eps = 1e-6)
  out z = ln2: layernorm(c) + mean(layernorm(rearrange(b, "b c t -> b t c"), affine = false), dim = [1])
}
"""

define(O.BatchNorm, shape=_batchnorm_shape, cost=_norm_cost,
       lower=Rule(forward=call_module, module=_bn_mod_lower),
       draw=_batchnorm_draw, interpret=_batchnorm_interpret, example=_OLD_EXAMPLE)
define(O.GroupNorm, shape=_groupnorm_shape, cost=_norm_cost,
       lower=Rule(
           forward=call_module, module=lambda c: call("nn.GroupNorm", c.init_attr("groups"), c.init_attr("channels"),
                                                eps=c.init_attr("eps"))),
       draw=_groupnorm_draw, interpret=_groupnorm_interpret, example=_OLD_EXAMPLE)
define(O.LayerNorm, shape=_layernorm_shape, cost=_norm_cost,
       lower=Rule(forward=_ln_forward_lower, module=_ln_mod_lower),
       draw=_layernorm_draw, interpret=_layernorm_interpret, example=_OLD_EXAMPLE)
