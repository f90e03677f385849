"""The token and position ops of transformers: a prepended class token, positional
embeddings (learned or sinusoidal), learned query tokens, LayerScale and ResMLP's Affine.

Takes: nothing at import but the rule kits of each stage. Produces: the rules (language
signature, shape, cost, lowering, drawing, interpreter) of :class:`~archlang.ir.ops.PrependToken`, :class:`~archlang.ir.ops.PosEmbed`,
:class:`~archlang.ir.ops.LearnedTokens`, :class:`~archlang.ir.ops.ChannelScale` and
:class:`~archlang.ir.ops.Affine`, registered with
:func:`archlang.ops.registry.define`. The op classes stay in :mod:`archlang.ir.ops` (the
stages and interop refer to them there); helpers several rules of a stage share stay in
that stage's module, its rule kit.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

from archlang.check.shapes import ShapeError, expect_equal, expect_min_rank, expect_rank, norm_dim
from archlang.check.surface import Arg, BuildError, axis_index, const_dim, last_dim, op
from archlang.cost.rules import OpCost, free, m, numel
from archlang.ir import ops as O
from archlang.ir.dims import add, fmt
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, E, LoweringError, Rule, call, call_module
from archlang.ops.registry import define
from archlang.render.rules import Look, num

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


# --------------------------------------------------------------------------- signatures


@op("prepend_token", ("x",), (), "Prepend a learned token (class/distillation): [B, N, D] -> [B, N+1, D].")
def _prepend_signature(ctx, ins, a):
    if ins[0].rank != 3:
        raise BuildError("E0302", f"prepend_token expects [B, N, D], got {ins[0]}")
    return O.PrependToken(dim=last_dim(ctx, ins[0], "prepend_token"))


@op("learned_pos", ("x",), (Arg("max_len", "int", 0, min=0),), "Add a learned positional embedding to [B, N, D].")
def _learned_pos_signature(ctx, ins, a):
    x = ins[0]
    if x.rank != 3:
        raise BuildError("E0302", f"learned_pos expects [B, N, D], got {x}")
    n = a["max_len"] or const_dim(ctx, x.shape[1], "the sequence length (or give `max_len`)")
    return O.PosEmbed(kind="learned", length=n, dim=last_dim(ctx, x, "learned_pos"))


@op("sinusoidal_pos", ("x",), (Arg("max_len", "int", 5000, min=1),), "Add the fixed sinusoidal encoding of Vaswani et al.")
def _sin_pos_signature(ctx, ins, a):
    x = ins[0]
    if x.rank != 3:
        raise BuildError("E0302", f"sinusoidal_pos expects [B, N, D], got {x}")
    return O.PosEmbed(kind="sinusoidal", length=a["max_len"], dim=last_dim(ctx, x, "sinusoidal_pos"))


@op("channel_scale", ("x",), (Arg("init", "float", 1.0), Arg("dim", "int", -1)),
    "Multiply the last dim (or `dim`: 1 for NCHW) by a learned vector (LayerScale; ResMLP's ls), "
    "initialised to `init`.")
def _channel_scale_signature(ctx, ins, a):
    x, axis = ins[0], axis_index(ctx, ins[0], a["dim"], "channel_scale")
    last = axis == x.rank - 1
    return O.ChannelScale(dim=last_dim(ctx, x, "channel_scale") if last else
                          const_dim(ctx, x.shape[axis], "the channels of `channel_scale`"), init=a["init"],
                          axis=-1 if last else axis)


@op("affine", ("x",), (), "ResMLP's Affine norm on [B, N, C]: alpha * x + beta, per channel.")
def _affine_signature(ctx, ins, a):
    return O.Affine(dim=last_dim(ctx, ins[0], "affine"))


@op("learned_tokens", ("like",), (Arg("n", "int"), Arg("dim", "int")),
    "n learned vectors for every example of `like`'s batch: [B, n, dim] (per-task queries).")
def _learned_tokens_signature(ctx, ins, a):
    if a["n"] <= 0 or a["dim"] <= 0:
        raise BuildError("E0406", "learned_tokens needs positive n and dim", arg="n")
    return O.LearnedTokens(n=a["n"], dim=a["dim"])


# --------------------------------------------------------------------------- shape rules


def _prepend_shape(op: O.PrependToken, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_rank(x, 3, "prepend_token ([B, N, D])")
    expect_equal(x.shape[2], op.dim, f"token width {op.dim} does not match {fmt(x.shape[2])}")
    return (TensorType(shape=(x.shape[0], add(x.shape[1], 1), x.shape[2])),)


def _pos_shape(op: O.PosEmbed, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_rank(x, 3, "positional embedding ([B, N, D])")
    expect_equal(x.shape[2], op.dim, f"positional embedding width {op.dim} does not match {fmt(x.shape[2])}")
    n = x.shape[1]
    if isinstance(n, int) and n > op.length:
        raise ShapeError("E0301", f"sequence of {n} tokens is longer than the positional table ({op.length})",
                         help="raise `max_len` / the number of positions")
    return (x,)


def _channel_scale_shape(op: O.ChannelScale, ins: list[TensorType]) -> tuple[TensorType, ...]:
    expect_min_rank(ins[0], 1, "channel_scale")
    d = norm_dim(op.axis, ins[0].rank, "channel_scale")
    expect_equal(ins[0].shape[d], op.dim, f"channel_scale over {op.dim} channels, got {fmt(ins[0].shape[d])}")
    return (ins[0],)


def _affine_shape(op: O.Affine, ins: list[TensorType]) -> tuple[TensorType, ...]:
    expect_rank(ins[0], 3, "affine ([B, N, C])")
    expect_equal(ins[0].shape[-1], op.dim, f"affine over {op.dim} channels, got {fmt(ins[0].shape[-1])}")
    return (ins[0],)


def _learned_tokens_shape(op: O.LearnedTokens, ins: list[TensorType]) -> tuple[TensorType, ...]:
    expect_min_rank(ins[0], 1, "learned_tokens")
    return (TensorType(shape=(ins[0].shape[0], op.n, op.dim)),)


# --------------------------------------------------------------------------- cost rules


def _prepend_cost(op: O.PrependToken, ins, outs) -> OpCost:
    return OpCost()


def _pos_cost(op: O.PosEmbed, ins, outs) -> OpCost:
    # SinusoidalPositions registers the whole table, pe: [1, max_len, dim]; a learned one is a parameter
    table = op.length * op.dim if op.kind == "sinusoidal" else 0
    # while it is filled, the float32 angles and their sines (then cosines) exist beside it
    scratch = 2 * op.length * ((op.dim + 1) // 2) * 4 if table else 0
    return OpCost(other_flops=numel(outs[0]), buffer_float=table, build_scratch=scratch)


def _channel_cost(op: O.OpBase, ins, outs) -> OpCost:
    return OpCost(other_flops=m(2 if isinstance(op, O.Affine) else 1, numel(outs[0])), weight_inputs=(0,))


# --------------------------------------------------------------------------- lowering rules


def _pos_forward_lower(c: Ctx) -> ast.expr:
    op = c.op
    assert isinstance(op, O.PosEmbed)
    if op.kind == "sinusoidal":
        return call_module(c)
    n = c.in_types[0].shape[1]
    if isinstance(n, int) and c.const("length") and n == op.length:
        return E("x + pos", x=c.x(), pos=c.mod)
    return E("x + pos[:, :x.shape[1]]", x=c.x(), pos=c.mod)


def _pos_mod_lower(c: Ctx) -> ast.expr:
    if not c.const("kind"):
        raise LoweringError("positional embedding kind must be the same in every instance of a block")
    if c.op.kind == "sinusoidal":  # type: ignore[attr-defined]
        return call("SinusoidalPositions", c.init_attr("length"), c.init_attr("dim"))
    return call("_trunc_normal", 1, c.init_attr("length"), c.init_attr("dim"))


def _channel_scale_lower(c: Ctx) -> ast.expr:
    """``x * gamma``; over a dim before the last (NCHW channels) gamma is viewed as [C, 1, 1]."""
    if not c.const("axis"):
        raise LoweringError("a channel_scale's dim must be the same in every instance of a block")
    axis, rank = c.op.axis, c.in_types[0].rank  # type: ignore[attr-defined]
    if axis in (-1, rank - 1):
        return E("x * gamma", x=c.x(), gamma=c.mod)
    view = call(ast.Attribute(value=c.mod, attr="view", ctx=ast.Load()), -1, *([1] * (rank - 1 - axis)))
    return E("x * gamma", x=c.x(), gamma=view)


# --------------------------------------------------------------------------- drawing rules


def _prepend_draw(op: O.PrependToken, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Prepend token", ("learned",), "position")


def _pos_draw(op: O.PosEmbed, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Position embedding", (op.kind,), "position")


def _channel_scale_draw(op: Any, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("LayerScale", (f"learned × per channel, init {num(getattr(op, 'init', 1.0))}",), "elementwise")


def _affine_draw(op: Any, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Affine", ("α·x + β per channel",), "norm")


def _learned_tokens_draw(op: Any, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Learned tokens", (f"{op.n} × {op.dim}",), "position")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _prepend_token_interpret(c: EvalCtx) -> Tensor:
    import torch

    x = c.x()
    token = c.p("").expand(x.shape[0], 1, x.shape[2])
    return torch.cat([token, x], dim=1)


def _pos_embed_interpret(c: EvalCtx) -> Tensor:
    import torch

    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.PosEmbed)
    x = c.x()
    n = x.shape[1]
    if op.kind == "learned":
        return x + c.p("")[:, :n]
    pos = torch.arange(n, dtype=x.dtype, device=x.device)
    return x + interp.sinusoids(pos, op.dim)[None]


def _channel_scale_interpret(c: EvalCtx) -> Tensor:
    x = c.x().movedim(c.op.axis, -1)  # type: ignore[attr-defined]
    return (x * c.p("")).movedim(-1, c.op.axis)  # type: ignore[attr-defined]


def _affine_interpret(c: EvalCtx) -> Tensor:
    return c.p("alpha") * c.x() + c.p("beta")


def _learned_tokens_interpret(c: EvalCtx) -> Tensor:
    t = c.p("")
    return t.expand(c.x().shape[0], t.shape[1], t.shape[2])


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t() {
  in x: [B, 5, 8]
  in m: [B, 4, 3, 3]
  e = sinusoidal_pos(x, max_len = 30)
  e = concat([e, q: learned_tokens(e, n = 3, dim = 8)], dim = 1)
  out a = aff: affine(e)
  p = pos: learned_pos(cls: prepend_token(x), max_len = 9)
  out y = ls: channel_scale(p, init = 0.3)
  out z = ls2: channel_scale(m, dim = 1)
}
"""

define(O.Affine, shape=_affine_shape, cost=_channel_cost,
       lower=Rule(forward=call_module, module=lambda c: call("Affine", c.init_attr("dim")), helpers=("Affine",)),
       draw=_affine_draw, interpret=_affine_interpret, example=_EXAMPLE)
define(O.ChannelScale, shape=_channel_scale_shape, cost=_channel_cost,
       lower=Rule(
           forward=_channel_scale_lower,
           module=lambda c: E("nn.Parameter(torch.full((d,), v))", d=c.init_attr("dim"), v=c.init_attr("init"))),
       draw=_channel_scale_draw, interpret=_channel_scale_interpret, example=_EXAMPLE)
define(O.LearnedTokens, shape=_learned_tokens_shape, cost=free,
       lower=Rule(
           forward=lambda c: E("tok.expand(x.shape[0], -1, -1)", tok=c.mod, x=c.x()),
           module=lambda c: call("_trunc_normal", 1, c.init_attr("n"), c.init_attr("dim")), helpers=("_trunc_normal",)),
       draw=_learned_tokens_draw, interpret=_learned_tokens_interpret, example=_EXAMPLE)
define(O.PosEmbed, shape=_pos_shape, cost=_pos_cost,
       lower=Rule(forward=_pos_forward_lower, module=_pos_mod_lower,
                  helpers=lambda c: ("SinusoidalPositions",) if c.op.kind == "sinusoidal"  # type: ignore[attr-defined]
                  else ("_trunc_normal",), reuses_input=True),
       draw=_pos_draw, interpret=_pos_embed_interpret, example=_EXAMPLE)
define(O.PrependToken, shape=_prepend_shape, cost=_prepend_cost,
       lower=Rule(
           forward=lambda c: E("torch.cat([tok.expand(x.shape[0], -1, -1), x], dim=1)", tok=c.mod, x=c.x()),
           module=lambda c: call("_trunc_normal", 1, 1, c.init_attr("dim")), helpers=("_trunc_normal",),
           reuses_input=True),
       draw=_prepend_draw, interpret=_prepend_token_interpret, example=_EXAMPLE)
