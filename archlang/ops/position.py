"""Position ops written in the one-file layout: rotary position embedding (RoPE).

Takes: nothing at import but the rule kits of each stage. Produces: the op class
:class:`Rotary`, its language signature ``rope(x, theta = 10000.0, fraction = 1.0, offset = 0)``
and its shape, cost, lowering, drawing and interpreter rules, registered with
:func:`archlang.ops.registry.define`. ``positions = ids`` (an int tensor ``[N]``, or ``[B, N]``
per example: packed sequences, a KV cache's next positions) replaces ``offset .. offset + N - 1``,
as HF's ``position_ids``.

RoPE (Su et al. 2021, "RoFormer"; Llama, Mistral, Qwen) rotates the queries and keys of
``[B, H, N, D]`` by angles proportional to their position, so that ``q_i . k_j`` depends on
``i - j`` only. The layout is Hugging Face Llama's "rotate half": the first ``rot = fraction * D``
channels are split into halves ``x1, x2`` and channel pair ``(c, c + rot/2)`` turns by
``p * theta ** (-2c / rot)`` at position ``p = offset .. offset + N - 1``:
``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)``; the other
``D - rot`` channels pass through (partial rotary, GPT-NeoX/Phi style).

Design: the cos/sin tables are computed in forward from the (possibly symbolic) sequence
length, not registered as buffers sized by a ``max_len``: the op has no parameters and no
buffers (nothing in the state_dict, nothing allocated at build time), any N works, and the
angles are computed as HF does (float32 positions times float32 inverse frequencies, in
float64 when the model is float64), so that float32 results equal ``LlamaRotaryEmbedding``
followed by ``apply_rotary_pos_emb`` bit for bit. The price is ``2 N rot`` sines and cosines
per call (each layer's q and k), counted in ``other_flops``; FlopCounterMode counts none.
"""

from __future__ import annotations

from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, last_dim, op
from archlang.cost.rules import OpCost, m
from archlang.ir.dims import fmt, product
from archlang.ir.ops import OpBase
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, Rule, call
from archlang.ops.registry import define
from archlang.render.rules import Look


class Rotary(OpBase):
    """Rotary position embedding of ``[*, N, dim]`` (rotate-half layout): the first ``rot``
    channels turn by ``p * theta ** (-2c / rot)`` at positions ``p = offset .. offset + N - 1``."""

    op: Literal["rope"] = "rope"
    dim: int  # the head width D
    rot: int  # rotated channels: an even number, at most dim
    theta: float = 10000.0
    offset: int = 0
    positions: int = 0  # the rank of the positions input (0: none, positions offset .. offset + N - 1)


@op("rope", ("x",), (Arg("theta", "float", 10000.0, range="positive"), Arg("fraction", "float", 1.0, range="prob"),
                     Arg("offset", "int", 0, min=0), Arg("positions", "tensor", None)),
    "Rotary position embedding of [B, H, N, D] (HF Llama's rotate-half layout); the first fraction * D "
    "channels rotate, at positions offset .. offset + N - 1, or at `positions` (int [N] or [B, N]).")
def _signature(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Rotary:
    x = ins[0]
    if x.rank < 2:
        raise BuildError("E0302", f"rope expects [B, H, N, D] (at least [N, D]), got {x}")
    d = last_dim(ctx, x, "rope")
    rot = int(d * a["fraction"])
    if rot <= 0 or rot % 2:
        raise BuildError("E0406", f"rope rotates channel pairs: fraction {a['fraction']} of {d} channels is {rot}",
                         help="pick a fraction that gives a positive even number of channels "
                              f"(e.g. {2 * max(1, int(d * a['fraction']) // 2) / d:g})", arg="fraction")
    rank = 0
    if a["positions"] is not None:
        p = ins[a["positions"]]
        if p.dtype != "int" or p.rank not in (1, 2):
            raise BuildError("E0401", f"rope's positions are an int [N] or [B, N] tensor, got {p}", arg="positions",
                             help="pass the position ids, e.g. `positions = pos` for `in pos: int[B, T]`")
        if p.rank == 2 and x.rank != 4:
            raise BuildError("E0302", f"rope with positions per example ([B, N]) expects x as [B, H, N, D], got {x}",
                             arg="positions")
        if a["offset"]:
            raise BuildError("E0406", "rope takes an offset or positions, not both", arg="offset",
                             help="add the offset to the positions")
        rank = p.rank
    return Rotary(dim=d, rot=rot, theta=a["theta"], offset=a["offset"], positions=rank)


def _shape(o: Rotary, ins: list[TensorType]) -> tuple[TensorType, ...]:
    x = ins[0]
    shapes.expect_min_rank(x, 2, "rope")
    shapes.expect_equal(x.shape[-1], o.dim, f"rope over {o.dim} channels, got {fmt(x.shape[-1])}")
    if o.positions:
        p = ins[1]
        shapes.expect_rank(p, o.positions, "rope's positions", 1)
        want = (x.shape[0], x.shape[-2]) if o.positions == 2 else (x.shape[-2],)
        shapes.expect_equal(tuple(p.shape), want, f"rope: positions {p} for x {x}",
                            "one position per row of x (and per example when [B, N])", 1)
    return (x,)


def _cost(o: Rotary, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    x = ins[0]
    rows = product(x.shape[:-1])  # B * H * N
    table = m(*ins[1].shape, o.rot) if o.positions else m(x.shape[-2], o.rot)  # cos and sin, [(B,) N, rot]
    # x * cos, rotate_half(x) * sin and their sum on the rotated channels; the angles, their
    # cosines and sines. Backward keeps cos and sin (the multiplications' constant operands).
    return OpCost(other_flops=m(3, rows, o.rot) + m(4, table), saved=m(2, table))


def _forward(c: Ctx) -> Any:
    o = c.op
    assert isinstance(o, Rotary)
    kw: dict[str, Any] = {}
    if not (c.const("theta") and o.theta == 10000.0):
        kw["theta"] = c.fwd_attr("theta")
    if not (c.const("rot") and c.const("dim") and o.rot == o.dim):
        kw["dim"] = c.fwd_attr("rot")
    if not (c.const("offset") and o.offset == 0):
        kw["offset"] = c.fwd_attr("offset")
    if o.positions:
        kw["positions"] = c.ins[1]
    return call("apply_rotary", c.x(), **kw)


def _draw(o: Rotary, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    detail = [f"θ = {o.theta:g}"]
    if o.rot != o.dim:
        detail.append(f"{o.rot} of {o.dim} ch")
    if o.offset:
        detail.append(f"from position {o.offset}")
    if o.positions:
        detail.append("at given positions")
    return Look("RoPE", tuple(detail), "position")


def _interpret(c: Any) -> Any:
    """Pairs (c, c + rot/2) of the first rot channels, turned by p * theta^(-2c/rot)."""
    import torch

    o = c.op
    x = c.x()
    n, h = x.shape[-2], o.rot // 2
    dt = torch.float64
    pos = c.x(1).to(dt) if o.positions else torch.arange(o.offset, o.offset + n, dtype=dt, device=x.device)
    freq = torch.tensor([o.theta ** (-2.0 * i / o.rot) for i in range(h)], dtype=dt, device=x.device)
    ang = pos.unsqueeze(-1) * freq  # [(B,) N, rot / 2]
    if o.positions == 2:
        ang = ang.unsqueeze(1)  # the same angles for every head
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2, rest = x[..., :h], x[..., h:o.rot], x[..., o.rot:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


define(Rotary, shape=_shape, cost=_cost, lower=Rule(forward=_forward, helpers=("apply_rotary",)),
       draw=_draw, interpret=_interpret,
       example="""
arch t() {
  in x: [B, 2, T, 8]
  in pos: int[B, T]
  out y = rope(x)
  out z = rope(x, theta = 500000.0, fraction = 0.5, offset = 3)
  out w = rope(x, positions = pos)
}
""", example_sizes={"T": 7})
