"""Resizing images: ``interpolate`` with nearest, bilinear and bicubic sampling.

Takes: nothing at import but the rule kits of each stage. Produces the op class
:class:`Interpolate`, its signature
``interpolate(x, size = [h, w], scale = s, mode = "nearest", align_corners = false)`` on
``[B, C, H, W]`` and its shape, cost, lowering, drawing and interpreter rules.

Semantics are ``torch.nn.functional.interpolate``'s with an output size: ``scale`` gives the
size ``floor(H * scale) x floor(W * scale)``, and sampling positions follow the ratio of the
input to the output size (as ``F.interpolate(size=...)``, or ``scale_factor`` with
``recompute_scale_factor=True``). Output pixel ``i`` reads source coordinate
``i * (in - 1) / (out - 1)`` with ``align_corners`` and ``(i + 0.5) * in / out - 0.5`` without
(``floor(i * in / out)`` for nearest, which has no align_corners); bilinear mixes the two
nearest rows/columns, bicubic the four nearest with Keys' cubic kernel (a = -0.75), borders
clamped. The interpreter builds the per-axis sampling matrices from these formulas.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, const_dim, op
from archlang.cost.rules import OpCost, numel
from archlang.ir.dims import fmt
from archlang.ir.ops import OpBase
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, LoweringError, Rule, call, lit
from archlang.ops.registry import define
from archlang.render.rules import Look

_MODES = ("nearest", "bilinear", "bicubic")
_TAPS = {"nearest": 1, "bilinear": 4, "bicubic": 16}


class Interpolate(OpBase):
    """Resize ``[B, C, H, W]`` from ``in_size`` to ``size`` by nearest, bilinear or bicubic sampling."""

    op: Literal["interpolate"] = "interpolate"
    in_size: tuple[int, int]
    size: tuple[int, int]
    mode: Literal["nearest", "bilinear", "bicubic"] = "nearest"
    align_corners: bool = False


@op("interpolate", ("x",), (Arg("size", "ints", (), min=1), Arg("scale", "float", 0.0),
                            Arg("mode", "str", "nearest"), Arg("align_corners", "bool", False)),
    "Resize [B, C, H, W] to `size` = [h, w] (or by `scale`): mode nearest, bilinear or bicubic, "
    "F.interpolate's sampling (align_corners for the last two).")
def _signature(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Interpolate:
    x = ins[0]
    if x.rank != 4:
        raise BuildError("E0302", f"interpolate expects [B, C, H, W], got {x}")
    h = const_dim(ctx, x.shape[2], "the height of interpolate's input")
    w = const_dim(ctx, x.shape[3], "the width of interpolate's input")
    mode = a["mode"]
    if mode not in _MODES:
        from archlang.diagnostics import did_you_mean

        raise BuildError("E0406", f"unknown interpolation mode \"{mode}\"",
                         help=did_you_mean(mode, _MODES) or f"modes: {', '.join(_MODES)}", arg="mode")
    if mode == "nearest" and a["align_corners"]:
        raise BuildError("E0406", "align_corners applies to bilinear and bicubic sampling, not nearest",
                         arg="align_corners")
    size, scale = tuple(a["size"]), a["scale"]
    if bool(size) == bool(scale):
        raise BuildError("E0406", "interpolate takes one of `size` ([h, w]) and `scale`",
                         help="e.g. interpolate(x, size = [14, 14]) or interpolate(x, scale = 2.0)", arg="size")
    if size and len(size) != 2:
        raise BuildError("E0406", f"size is [h, w], got {list(size)}", arg="size")
    if scale:
        if scale <= 0:
            raise BuildError("E0406", f"scale must be positive, got {scale}", arg="scale")
        size = (math.floor(h * scale), math.floor(w * scale))
        if min(size) < 1:
            raise BuildError("E0406", f"scale {scale} shrinks the {h}x{w} input to nothing", arg="scale")
    return Interpolate(in_size=(h, w), size=(int(size[0]), int(size[1])), mode=mode,
                       align_corners=a["align_corners"])


def _shape(o: Interpolate, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    shapes.expect_rank(x, 4, "interpolate")
    for d, n in zip(x.shape[2:], o.in_size, strict=True):
        shapes.expect_equal(d, n, f"interpolate from {o.in_size[0]}x{o.in_size[1]}, got {fmt(x.shape[2])}x"
                                  f"{fmt(x.shape[3])}")
    if x.dtype != "float":
        raise shapes.ShapeError("E0401", f"interpolate samples a float tensor, got {x}")
    return (TensorType(shape=(x.shape[0], x.shape[1], *o.size)),)


def _cost(o: Interpolate, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    # a multiply and an add per tap (nearest copies); FlopCounterMode counts none of it, and
    # the backward needs only the sizes
    taps = _TAPS[o.mode]
    return OpCost(other_flops=numel(outs[0]) * (2 * taps if taps > 1 else 1))


def _forward(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Interpolate)
    if not (c.const("mode") and c.const("align_corners")):
        raise LoweringError("interpolate's mode must be the same in every instance of a block")
    size = lit(o.size[0]) if c.const("size") and o.size[0] == o.size[1] else c.fwd_attr("size")
    kw: dict[str, ast.expr] = {"size": size}
    if o.mode != "nearest":
        kw["mode"] = lit(o.mode)
        kw["align_corners"] = lit(o.align_corners)
    return call("F.interpolate", c.x(), **kw)


def _cubic(t: float, a: float = -0.75) -> tuple[float, float, float, float]:
    """Keys' cubic convolution weights of the four taps at offsets -1, 0, 1, 2 from floor(src)."""
    def near(d: float) -> float:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return (far(t + 1), near(t), near(1 - t), far(2 - t))


def sampling_matrix(n_in: int, n_out: int, mode: str, align_corners: bool) -> list[list[float]]:
    """The ``n_out x n_in`` matrix that resamples one axis (row i: the weights output i gives each input)."""
    rows = [[0.0] * n_in for _ in range(n_out)]
    for i in range(n_out):
        if mode == "nearest":
            rows[i][min(math.floor(i * n_in / n_out), n_in - 1)] = 1.0
            continue
        if align_corners:
            src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = (i + 0.5) * n_in / n_out - 0.5
            if mode == "bilinear":
                src = max(src, 0.0)
        i0 = math.floor(src)
        t = src - i0
        if mode == "bilinear":
            for j, wgt in ((i0, 1 - t), (i0 + 1, t)):
                rows[i][min(max(j, 0), n_in - 1)] += wgt
        else:
            for k, wgt in enumerate(_cubic(t)):
                rows[i][min(max(i0 - 1 + k, 0), n_in - 1)] += wgt
    return rows


def _interpret(c: Any) -> Any:
    import torch

    o = c.op
    x = c.x()
    mh = torch.tensor(sampling_matrix(o.in_size[0], o.size[0], o.mode, o.align_corners), dtype=x.dtype)
    mw = torch.tensor(sampling_matrix(o.in_size[1], o.size[1], o.mode, o.align_corners), dtype=x.dtype)
    return torch.einsum("ih,bchw,jw->bcij", mh, x, mw)


def _draw(o: Interpolate, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    detail = (f"{o.size[0]}x{o.size[1]}", o.mode + (", align corners" if o.align_corners else ""))
    return Look("interpolate", detail, "reshape")


define(Interpolate, shape=_shape, cost=_cost, lower=Rule(forward=_forward), draw=_draw, interpret=_interpret,
       example="""
arch t() {
  in x: [B, 2, 5, 7]
  out a = interpolate(x, size = [8, 3], mode = "bilinear")
  out b = interpolate(x, scale = 2.0, mode = "bicubic", align_corners = true)
  out c = interpolate(x, size = [3, 11])
}
""")
