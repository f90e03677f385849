"""The elementwise ops: activations, GLU, softmax, dropout, drop-path, binary arithmetic,
constant scaling and the identity.

Takes: nothing at import but the rule kits of each stage. Produces: the rules (language
signature, shape, cost, lowering, drawing, interpreter) of :class:`~archlang.ir.ops.Activation`, :class:`~archlang.ir.ops.Glu`,
:class:`~archlang.ir.ops.Softmax`, :class:`~archlang.ir.ops.Dropout`,
:class:`~archlang.ir.ops.DropPath`, :class:`~archlang.ir.ops.Binary`,
:class:`~archlang.ir.ops.Scale` and :class:`~archlang.ir.ops.Identity`, registered with
:func:`archlang.ops.registry.define`. The op classes stay in :mod:`archlang.ir.ops` (the
stages and interop refer to them there); helpers several rules of a stage share stay in
that stage's module, its rule kit.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

from archlang.check.shapes import ShapeError, broadcast, norm_dim, same
from archlang.check.surface import Arg, BuildError, op
from archlang.cost.rules import OpCost, free, m, numel
from archlang.ir import ops as O
from archlang.ir.dims import div_exact, fmt
from archlang.ir.types import TensorType
from archlang.lower.rules import (
    CNN_BRANCH,
    Ctx,
    E,
    LoweringError,
    Rule,
    call,
    call_module,
    choice,
    in_place,
    lit,
)
from archlang.ops.registry import define
from archlang.render.rules import Look, num

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


# --------------------------------------------------------------------------- signatures


def _act_signature(fn: str):
    def build(ctx, ins, a):
        if fn == "gelu" and a.get("approximate") == "tanh":
            return O.Activation(fn="gelu_tanh")
        if fn == "gelu" and a.get("approximate") not in ("none", None):
            raise BuildError("E0406", f"approximate is \"none\" or \"tanh\", got \"{a['approximate']}\"",
                             arg="approximate")
        return O.Activation(fn=fn)
    return build


op("gelu", ("x",), (Arg("approximate", "str", "none"),), "GELU (exact erf, or tanh approximation).")(_act_signature("gelu"))


for _fn in ("relu", "silu", "tanh", "sigmoid"):
    op(_fn, ("x",), (), f"Elementwise {_fn}.")(_act_signature(_fn))


@op("glu", ("x",), (Arg("dim", "int", -1),), "Gated linear unit: halves `dim`.")
def _glu_signature(ctx, ins, a):
    return O.Glu(dim=a["dim"])


@op("softmax", ("x",), (Arg("dim", "int", -1),), "Softmax along `dim`.")
def _softmax_signature(ctx, ins, a):
    return O.Softmax(dim=a["dim"])


def _prob_signature(a: dict[str, Any]) -> float:
    p = float(a["p"])
    if not 0.0 <= p < 1.0:
        raise BuildError("E0406", f"a drop probability is in [0, 1), got {p}", arg="p")
    return p


@op("dropout", ("x",), (Arg("p", "float", 0.0, range="prob"),), "Dropout (training only).")
def _dropout_signature(ctx, ins, a):
    return O.Dropout(p=_prob_signature(a))


@op("drop_path", ("x",), (Arg("p", "float", 0.0, range="prob"),), "Stochastic depth on a residual branch (training only).")
def _drop_path_signature(ctx, ins, a):
    return O.DropPath(p=_prob_signature(a))


@op("identity", ("x",), (), "Pass the input through.")
def _identity_signature(ctx, ins, a):
    return O.Identity()


_ACTS = ("gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid")


@op("act", ("x",), (Arg("fn", "str"),), "Activation chosen by name: gelu, gelu_tanh, relu, silu, tanh, sigmoid.")
def _act_by_name_signature(ctx, ins, a):
    if a["fn"] not in _ACTS:
        from archlang.diagnostics import did_you_mean

        raise BuildError("E0406", f"unknown activation \"{a['fn']}\"",
                         help=did_you_mean(a["fn"], _ACTS) or f"activations: {', '.join(_ACTS)}", arg="fn")
    return O.Activation(fn=a["fn"])


# --------------------------------------------------------------------------- shape rules


def _scale_shape(op: O.Scale, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    if x.dtype != "float" and not (float(op.factor).is_integer() and float(op.offset).is_integer()):
        return (TensorType(shape=x.shape),)  # an int tensor times 0.5 is a float tensor
    return (x,)


def _softmax_shape(op: O.Softmax, ins: list[TensorType]) -> tuple[TensorType, ...]:
    norm_dim(op.dim, ins[0].rank, "softmax")
    return (ins[0],)


def _glu_shape(op: O.Glu, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    d = norm_dim(op.dim, x.rank, "glu")
    half = div_exact(x.shape[d], 2)
    if half is None:
        raise ShapeError("E0501", f"glu halves dim {op.dim}, but its size {fmt(x.shape[d])} is odd")
    return (TensorType(shape=(*x.shape[:d], half, *x.shape[d + 1:])),)


def _binary_shape(op: O.Binary, ins: list[TensorType]) -> tuple[TensorType, ...]:
    sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op.fn]
    out = broadcast(ins[0], ins[1], sym)
    kinds = {ins[0].dtype, ins[1].dtype}  # torch's promotion: float over int over bool; `/` is true division
    dtype = "float" if "float" in kinds or op.fn == "div" else "int" if "int" in kinds else out.dtype
    return (out if dtype == out.dtype else TensorType(shape=out.shape, dtype=dtype),)


# --------------------------------------------------------------------------- cost rules


def _elementwise_cost(op: O.OpBase, ins, outs) -> OpCost:
    if isinstance(op, O.Activation):  # relu, sigmoid and tanh differentiate from their result
        if op.fn in ("relu", "sigmoid", "tanh"):
            return OpCost(other_flops=numel(outs[0]), saves_output=True)
        return OpCost(other_flops=numel(outs[0]), saves_inputs=(0,))
    if isinstance(op, O.Binary) and op.fn in ("mul", "div"):
        return OpCost(other_flops=numel(outs[0]), saves_inputs=tuple(range(len(ins))))
    return OpCost(other_flops=numel(outs[0]))


def _glu_cost(op: O.Glu, ins, outs) -> OpCost:
    return OpCost(other_flops=m(2, numel(outs[0])), saves_inputs=(0,))


def _softmax_cost(op: O.Softmax, ins, outs) -> OpCost:
    return OpCost(other_flops=m(3, numel(outs[0])), saves_output=True)


def _dropout_cost(op: O.OpBase, ins, outs) -> OpCost:
    return OpCost(other_flops=numel(outs[0]))  # training only; the mask is counted by the report


# --------------------------------------------------------------------------- lowering rules


def _maybe_lower(c: Ctx, p: str = "p") -> bool:
    """Whether a dropout-like op needs a module (its probability is nonzero somewhere)."""
    return not (c.const(p) and getattr(c.op, p) == 0.0)


_BINARY_LOWER = {"add": "a + b", "sub": "a - b", "mul": "a * b", "div": "a / b"}


_ACT = {"gelu": "F.gelu(x)", "gelu_tanh": "F.gelu(x, approximate='tanh')", "relu": "F.relu(x)",
        "silu": "F.silu(x)", "tanh": "torch.tanh(x)", "sigmoid": "torch.sigmoid(x)"}


def _gelu_after_linear(c: Ctx) -> bool:
    """An exact GELU that alone reads a linear layer's output: it is a submodule (``nn.GELU()``,
    as timm's Mlp writes it), which the inference build folds into that layer's matmul
    (:mod:`archlang.lower.inference`, oneDNN's GELU post-op)."""
    return c.const("fn") and c.op.fn == "gelu" and in_place(c, 0, (O.Linear,))  # type: ignore[attr-defined]


def _act_lower(c: Ctx) -> ast.expr:
    if not c.const("fn"):
        raise LoweringError("the activation must be the same in every instance of a block")
    fn = choice(c.op.fn, _ACT)  # type: ignore[attr-defined]
    if _gelu_after_linear(c):
        return call_module(c)
    if fn == "relu" and in_place(c, 0):  # relu differentiates from its output: in place is safe
        return E("F.relu(x, inplace=True)", x=c.x())
    return E(_ACT[fn], x=c.x())


def _binary_lower(c: Ctx) -> ast.expr:
    fn = choice(c.op.fn, _BINARY_LOWER)  # type: ignore[attr-defined]
    if fn in ("add", "sub") and in_place(c, 0, CNN_BRANCH):  # the residual sum, into the branch's output
        return E(f"a.{fn}_(b)", a=c.ins[0], b=c.ins[1])
    if fn == "add" and in_place(c, 1, CNN_BRANCH):
        return E("b.add_(a)", a=c.ins[0], b=c.ins[1])
    return E(_BINARY_LOWER[fn], a=c.ins[0], b=c.ins[1])


def _scale_lower(c: Ctx) -> ast.expr:
    op = c.op
    assert isinstance(op, O.Scale)
    out = c.x()
    whole = c.in_types[0].dtype == "int"  # an int tensor stays int under whole factors and offsets

    def k(name: str, v: float) -> ast.expr:
        return lit(int(v)) if whole and c.const(name) and float(v).is_integer() else c.fwd_attr(name)
    if not (c.const("factor") and op.factor == 1.0):
        out = E("x * k", x=out, k=k("factor", op.factor))
    if not (c.const("offset") and op.offset == 0.0):
        out = E("x + k", x=out, k=k("offset", op.offset))
    return out


# --------------------------------------------------------------------------- drawing rules


_ACT_NAMES = {"gelu": "GELU", "gelu_tanh": "GELU (tanh)", "relu": "ReLU", "silu": "SiLU", "tanh": "Tanh",
              "sigmoid": "Sigmoid"}


def _activation_draw(op: O.Activation, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look(_ACT_NAMES[op.fn], (), "activation")


def _glu_draw(op: O.Glu, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("GLU", () if op.dim == -1 else (f"dim {op.dim}",), "activation")


def _softmax_draw(op: O.Softmax, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Softmax", () if op.dim == -1 else (f"dim {op.dim}",), "activation")


def _dropout_draw(op: O.Dropout, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Dropout", (f"p = {num(op.p)}",), "regulariser", elide=True)


def _drop_path_draw(op: O.DropPath, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("DropPath", (f"p = {num(op.p)}",), "regulariser", elide=True)


def _identity_draw(op: O.Identity, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Identity", (), "regulariser", elide=True)


_BINARY_DRAW = {"add": "+", "sub": "−", "mul": "×", "div": "÷"}


def _binary_draw(op: O.Binary, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look(_BINARY_DRAW[op.fn], (), "junction")


def _scale_draw(op: O.Scale, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    parts = []
    if op.factor != 1.0:
        parts.append(f"× {num(op.factor)}")
    if op.offset:
        parts.append(f"{'+' if op.offset > 0 else '−'} {num(abs(op.offset))}")
    return Look(" ".join(parts) or "× 1", (), "elementwise")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _activation_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.Activation)
    return interp.ACTIVATIONS[op.fn](c.x())


def _glu_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.Glu)
    a, gate = c.x().chunk(2, dim=op.dim)
    return a * interp.ACTIVATIONS["sigmoid"](gate)


def _softmax_rule_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.Softmax)
    return interp.softmax(c.x(), op.dim)


def _dropout_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.Dropout | O.DropPath)
    interp.no_random(c, op.p, op.op)
    return c.x()


def _binary_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.Binary)
    return interp.BINARY[op.fn](c.x(0), c.x(1))


def _scale_interpret(c: EvalCtx) -> Tensor:
    op = c.op
    assert isinstance(op, O.Scale)
    return c.x() * op.factor + op.offset


def _identity_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    return interp.identity(c)


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t() {
  in x: [B, 4, 6]
  a = gelu(x) + gelu(x, approximate = "tanh") - relu(x) * silu(x) / (sigmoid(x) + 2)
  b = tanh(x) + act(x, "gelu_tanh") + softmax(x, dim = 1) + identity(x)
  out y = dropout(a, p = 0.0) + drop_path(b * 0.5, p = 0.0)
  out z = glu(x) - 1
  out w = glu(x, dim = 1)
}
"""

define(O.Activation, shape=same, cost=_elementwise_cost,
       lower=Rule(forward=_act_lower, module=lambda c: call("nn.GELU") if _gelu_after_linear(c) else None),
       draw=_activation_draw, interpret=_activation_interpret, example=_EXAMPLE)
define(O.Binary, shape=_binary_shape, cost=_elementwise_cost,
       lower=Rule(forward=_binary_lower),
       draw=_binary_draw, interpret=_binary_interpret, example=_EXAMPLE)
define(O.DropPath, shape=same, cost=_dropout_cost,
       lower=Rule(forward=lambda c: call_module(c) if _maybe_lower(c) else c.x(),
                  module=lambda c: call("DropPath", c.init_attr("p")) if _maybe_lower(c) else None,
                  helpers=("DropPath",)),
       draw=_drop_path_draw, interpret=_dropout_interpret, example=_EXAMPLE)
define(O.Dropout, shape=same, cost=_dropout_cost,
       lower=Rule(forward=lambda c: call_module(c) if _maybe_lower(c) else c.x(),
                  module=lambda c: call("nn.Dropout", c.init_attr("p")) if _maybe_lower(c) else None),
       draw=_dropout_draw, interpret=_dropout_interpret, example=_EXAMPLE)
define(O.Glu, shape=_glu_shape, cost=_glu_cost,
       lower=Rule(forward=lambda c: call("F.glu", c.x(), dim=c.fwd_attr("dim"))),
       draw=_glu_draw, interpret=_glu_interpret, example=_EXAMPLE)
define(O.Identity, shape=same, cost=free,
       lower=Rule(forward=lambda c: c.x()),
       draw=_identity_draw, interpret=_identity_interpret, example=_EXAMPLE)
define(O.Scale, shape=_scale_shape, cost=_elementwise_cost,
       lower=Rule(forward=_scale_lower),
       draw=_scale_draw, interpret=_scale_interpret, example=_EXAMPLE)
define(O.Softmax, shape=_softmax_shape, cost=_softmax_cost,
       lower=Rule(forward=lambda c: E("x.softmax(dim=d)", x=c.x(), d=c.fwd_attr("dim"))),
       draw=_softmax_draw, interpret=_softmax_rule_interpret, example=_EXAMPLE)
