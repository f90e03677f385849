"""The token-mixing shifts of the MLP mixers: S2-MLP's spatial shift and CycleMLP's channel shift.

Takes: nothing at import but the rule kits of each stage. Produces: the rules (language
signature, shape, cost, lowering, drawing, interpreter) of :class:`~archlang.ir.ops.SpatialShift` and :class:`~archlang.ir.ops.ChannelShift`, registered with
:func:`archlang.ops.registry.define`. The op classes stay in :mod:`archlang.ir.ops` (the
stages and interop refer to them there); helpers several rules of a stage share stay in
that stage's module, its rule kit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archlang.check.shapes import ShapeError, expect_rank
from archlang.check.surface import Arg, BuildError, op
from archlang.cost.rules import free
from archlang.ir import ops as O
from archlang.ir.types import TensorType
from archlang.lower.rules import Rule, call
from archlang.ops.registry import define
from archlang.render.rules import Look

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


# --------------------------------------------------------------------------- signatures


@op("spatial_shift", ("x",), (), "S2-MLP's shift of four channel groups by one pixel in four directions.")
def _spatial_shift_signature(ctx, ins, a):
    return O.SpatialShift()


@op("channel_shift", ("x",), (Arg("dim", "int"), Arg("size", "int", 3, min=1)),
    "CycleMLP's cycle pattern on [B, H, W, C]: channel i reads offset (i + 1) % size - size // 2 along dim 1 or 2.")
def _channel_shift_signature(ctx, ins, a):
    x = ins[0]
    if x.rank == 4 and a["dim"] in (1, 2) and isinstance(x.shape[a["dim"]], int) and a["size"] // 2 > x.shape[a["dim"]]:
        raise BuildError("E0406", f"channel_shift reads offsets up to {a['size'] // 2} along a dim of "
                                  f"{x.shape[a['dim']]}", help="use a size at most twice the shifted dim", arg="size")
    return O.ChannelShift(dim=a["dim"], size=a["size"])


# --------------------------------------------------------------------------- shape rules


def _channel_shift_shape(op: O.ChannelShift, ins: list[TensorType]) -> tuple[TensorType, ...]:
    expect_rank(ins[0], 4, "channel_shift ([B, H, W, C])")
    if op.dim not in (1, 2):
        raise ShapeError("E0304", f"channel_shift shifts along dim 1 (H) or 2 (W), not {op.dim}")
    return (ins[0],)


def _spatial_shift_shape(op: O.SpatialShift, ins: list[TensorType]) -> tuple[TensorType, ...]:
    expect_rank(ins[0], 4, "spatial_shift ([B, H, W, C])")
    c = ins[0].shape[3]
    if isinstance(c, int) and c % 4:
        raise ShapeError("E0501", f"spatial_shift moves 4 channel groups; {c} channels are not divisible by 4")
    return (ins[0],)


# --------------------------------------------------------------------------- drawing rules


def _spatial_shift_draw(op: Any, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Spatial shift", ("4 channel groups, ±1 in H and W",), "reshape")


def _channel_shift_draw(op: O.ChannelShift, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Cycle shift", (f"along {'H' if op.dim == 1 else 'W'}, period {op.size}",), "reshape")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _spatial_shift_interpret(c: EvalCtx) -> Tensor:
    """Four channel groups of [B, H, W, C] move one step: right (along W), left, down (along
    H), up; the last group also holds the C % 4 remaining channels."""
    import torch

    from archlang.lower import interpret as interp

    x = c.x()
    g = x.shape[-1] // 4
    parts = [interp.shifted(x[..., :g], 2, 1), interp.shifted(x[..., g:2 * g], 2, -1),
             interp.shifted(x[..., 2 * g:3 * g], 1, 1), interp.shifted(x[..., 3 * g:], 1, -1)]
    return torch.cat(parts, dim=-1)


def _channel_shift_interpret(c: EvalCtx) -> Tensor:
    """Channel i of [B, H, W, C] reads position p + o_i along ``dim``, o_i = (i + 1) % size -
    size // 2; zeros past the border."""
    import torch

    op = c.op
    assert isinstance(op, O.ChannelShift)
    x = c.x()
    n, ch = x.shape[op.dim], x.shape[-1]
    offsets = (torch.arange(ch, device=x.device) + 1) % op.size - op.size // 2  # [C]
    src = torch.arange(n, device=x.device)[:, None] + offsets[None, :]  # [n, C]: source position
    valid = ((src >= 0) & (src < n)).to(x.dtype)
    src = src.clamp(0, n - 1)
    # move `dim` next to the channels: [B, other, n, C], gather along n per channel
    xt = x.movedim(op.dim, -2)
    index = src.expand(*xt.shape[:-2], n, ch)
    out = torch.gather(xt, -2, index) * valid
    return out.movedim(-2, op.dim)


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t() {
  in x: [B, 5, 6, 12]
  a = spatial_shift(x)
  b = channel_shift(x, dim = 1, size = 3)
  c = channel_shift(x, dim = 2, size = 5)
  out y = fc: linear(a + b * c, 4)
}
"""

define(O.ChannelShift, shape=_channel_shift_shape, cost=free,
       lower=Rule(
    forward=lambda c: call("channel_shift", c.x(), c.fwd_attr("dim"), c.fwd_attr("size")), helpers=("channel_shift",)),
       draw=_channel_shift_draw, interpret=_channel_shift_interpret, example=_EXAMPLE)
define(O.SpatialShift, shape=_spatial_shift_shape, cost=free,
       lower=Rule(forward=lambda c: call("spatial_shift", c.x()), helpers=("spatial_shift",)),
       draw=_spatial_shift_draw, interpret=_spatial_shift_interpret, example=_EXAMPLE)
