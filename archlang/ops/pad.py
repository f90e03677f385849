"""Constant padding: ``pad(x, dims, after, before = 0, value = 0.0)``, with all of its rules.

Takes: nothing at import but the rule kits of each stage. Produces: the op class :class:`Pad`,
its language signature and its shape, cost, lowering, drawing and interpreter rules,
registered with :func:`archlang.ops.registry.define`.

``pad`` widens the listed dims of ``x``: ``before[i]`` entries of ``value`` in front of dim
``dims[i]`` and ``after[i]`` behind it (``before`` defaults to zeros). Swin pads the
bottom and the right of a ``[B, H, W, C]`` grid to a multiple of the window:
``pad(x, dims = [1, 2], after = [ph, pw])``. The lowering is ``F.pad`` (whose pad tuple runs
from the last dim backwards); the cost is a copy (no FLOPs, nothing saved: its gradient is
a slice).
"""

from __future__ import annotations

import ast
from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, op
from archlang.cost.rules import OpCost
from archlang.ir.dims import add
from archlang.ir.ops import OpBase
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, Rule, call
from archlang.ops.registry import define
from archlang.render.rules import Look


class Pad(OpBase):
    """``x`` with ``before[i]`` / ``after[i]`` entries of ``value`` added around dim ``dims[i]``
    (dims non-negative, increasing)."""

    op: Literal["pad"] = "pad"
    dims: tuple[int, ...]
    before: tuple[int, ...]
    after: tuple[int, ...]
    value: float = 0.0
    rank: int  # of x

    @property
    def spec(self) -> tuple[int, ...]:
        """F.pad's pad tuple: (before, after) pairs from the last dim of x back to ``dims[0]``,
        (0, 0) for the dims that are not padded."""
        out: list[int] = []
        for d in range(self.rank - 1, self.dims[0] - 1, -1):
            i = self.dims.index(d) if d in self.dims else None
            out += [self.before[i], self.after[i]] if i is not None else [0, 0]
        return tuple(out)


@op("pad", ("x",), (Arg("dims", "ints"), Arg("after", "ints", min=0), Arg("before", "ints", (), min=0),
                    Arg("value", "float", 0.0)),
    "Pad the listed dims with `value`: before[i] entries in front of dims[i], after[i] behind (F.pad).")
def _signature(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Pad:
    rank = ins[0].rank
    dims = [d + rank if d < 0 else d for d in a["dims"]]
    if not dims or any(not 0 <= d < rank for d in dims) or sorted(set(dims)) != dims:
        raise BuildError("E0406", f"pad: dims must be distinct, increasing dims of the rank-{rank} input, "
                         f"got {list(a['dims'])}", arg="dims")
    after = tuple(a["after"])
    before = tuple(a["before"]) or (0,) * len(dims)
    for name, v in (("after", after), ("before", before)):
        if len(v) != len(dims):
            raise BuildError("E0406", f"pad: {name} has {len(v)} items for {len(dims)} dims", arg=name)
    return Pad(dims=tuple(dims), before=before, after=after, value=a["value"], rank=rank)


def _shape(o: Pad, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    shapes.expect_rank(x, o.rank, "pad")
    shape = list(x.shape)
    for d, b, e in zip(o.dims, o.before, o.after, strict=True):
        shape[d] = add(add(shape[d], b), e)
    return (x.model_copy(update={"shape": tuple(shape)}),)


def _forward(c: Ctx) -> ast.expr:
    kw = {} if c.const("value") and c.op.value == 0.0 else {"value": c.fwd_attr("value")}  # type: ignore[attr-defined]
    return call("F.pad", c.x(), c.fwd_attr("spec"), **kw)


def _draw(o: Pad, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    parts = [f"dim {d}: +{b}/+{e}" if b else f"dim {d}: +{e}" for d, b, e in zip(o.dims, o.before, o.after, strict=True)]
    return Look("pad", (", ".join(parts),) + ((f"value {o.value:g}",) if o.value else ()), "reshape")


def _interpret(c: Any) -> Any:
    import torch

    o = c.op
    x = c.x()
    shape = list(x.shape)
    where = [slice(None)] * x.ndim
    for d, b, e in zip(o.dims, o.before, o.after, strict=True):
        shape[d] += b + e
        where[d] = slice(b, b + x.shape[d])
    out = torch.full(shape, o.value, dtype=x.dtype, device=x.device)
    out[tuple(where)] = x
    return out


define(Pad, shape=_shape, cost=lambda o, ins, outs: OpCost(), lower=Rule(forward=_forward), draw=_draw,
       interpret=_interpret,
       example="""
arch t() {
  in x: [B, 5, 6, 4]
  out y = pad(x, dims = [1, 2], after = [3, 2])
  out z = pad(x, dims = [-1], before = [1], after = [2], value = -1.0)
}
""")
