"""Elementwise math on tensors: unary functions, powers, clamping, minimum/maximum,
comparisons with a number, ``where``, integer division and casts.

Takes: nothing at import but the rule kits of each stage. Produces these ops, each with its
signature and its shape, cost, lowering, drawing and interpreter rules (all of them pure, so
on constant inputs they fold into build-time buffers, :mod:`archlang.ops.tensor`):

- ``sqrt, rsqrt, exp, log, absolute, neg, sin, cos (x)`` (:class:`Unary`); ``abs``, ``min``,
  ``max`` and ``floor`` stay the compile-time builtins on numbers;
- ``pow(x, exponent)`` (:class:`Pow`): ``x ** exponent`` for a float exponent;
- ``clamp(x, min = -inf, max = inf)`` (:class:`Clamp`);
- ``minimum(a, b)``, ``maximum(a, b)`` (:class:`MinMax`), broadcasting like ``a + b``;
- ``lt, le, gt, ge, eq, ne (x, value)`` (:class:`Compare`): a bool tensor (compare two tensors
  as ``lt(a - b, 0)``: ``mask = lt(q_idx - kv_idx, window)``);
- ``where(cond, a, b)`` (:class:`Where`): ``a`` where ``cond`` holds, else ``b``;
- ``floor_div(x, k)``, ``mod(x, k)`` (:class:`IntDiv`): Python's ``//`` and ``%`` by an int
  (the row and column of a flattened grid position: ``floor_div(p, w)``, ``mod(p, w)``);
- ``cast(x, "int" | "float" | "bool")`` (:class:`Cast`).

``a + b``, ``a * b``, ``x * 0.5`` and ``-x`` remain the language's arithmetic (``Binary`` and
``Scale`` ops, written by the elaborator).
"""

from __future__ import annotations

import ast
import math
from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, op
from archlang.cost.rules import OpCost, numel
from archlang.ir.ops import OpBase
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, E, LoweringError, Rule, call, lit
from archlang.ops.registry import define
from archlang.ops.tensor import foldable
from archlang.render.rules import Look


def _fixed(c: Ctx, name: str) -> object:
    if not c.const(name):
        raise LoweringError(f"`{name}` of {c.op.op} must be the same in every instance of a block")
    return getattr(c.op, name)


# ----------------------------------------------------------------------------- unary

_UNARY_CODE = {"sqrt": "torch.sqrt(x)", "rsqrt": "torch.rsqrt(x)", "exp": "torch.exp(x)", "log": "torch.log(x)",
               "absolute": "x.abs()", "neg": "-x", "sin": "torch.sin(x)", "cos": "torch.cos(x)"}
_UNARY_DOC = {"sqrt": "square root", "rsqrt": "reciprocal square root, 1 / sqrt(x)", "exp": "exponential",
              "log": "natural logarithm", "absolute": "absolute value", "neg": "negation, -x",
              "sin": "sine", "cos": "cosine"}


class Unary(OpBase):
    """An elementwise function of one tensor: sqrt, rsqrt, exp, log, absolute, neg, sin, cos."""

    op: Literal["unary"] = "unary"
    fn: Literal["sqrt", "rsqrt", "exp", "log", "absolute", "neg", "sin", "cos"]


def _unary_builder(fn: str):
    def build(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Unary:
        return Unary(fn=fn)  # type: ignore[arg-type]
    return build


for _fn in _UNARY_CODE:
    op(_fn, ("x",), (), f"Elementwise {_UNARY_DOC[_fn]}.")(_unary_builder(_fn))


def _float_like(x: TensorType, what: str) -> TensorType:
    if x.dtype == "bool":
        raise shapes.ShapeError("E0401", f"{what} of a bool tensor {x}", help="cast it first: cast(x, \"float\")")
    return x if x.dtype == "float" else TensorType(shape=x.shape)


def _unary_shape(o: Unary, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    if o.fn in ("absolute", "neg"):
        if x.dtype == "bool":
            raise shapes.ShapeError("E0401", f"{o.fn} of a bool tensor {x}")
        return (x,)
    return (_float_like(x, o.fn),)


def _unary_cost(o: Unary, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    n = numel(outs[0])
    if o.fn in ("sqrt", "rsqrt", "exp"):  # their derivatives are functions of the result
        return OpCost(other_flops=n, saves_output=True)
    if o.fn == "neg":
        return OpCost(other_flops=n)
    return OpCost(other_flops=n, saves_inputs=(0,))


def _unary_interpret(c: Any) -> Any:
    import torch

    x = c.x()
    fn = c.op.fn
    if x.dtype in (torch.long, torch.int32) and fn not in ("absolute", "neg"):
        x = x.double()
    return {"sqrt": lambda: x ** 0.5, "rsqrt": lambda: 1.0 / x ** 0.5, "exp": lambda: torch.exp(x),
            "log": lambda: torch.log(x), "absolute": lambda: torch.where(x < 0, -x, x), "neg": lambda: 0 - x,
            "sin": lambda: torch.sin(x), "cos": lambda: torch.cos(x)}[fn]()


def _unary_forward(c: Ctx) -> ast.expr:
    fn = _fixed(c, "fn")
    if fn not in _UNARY_CODE:
        raise LoweringError(f"unknown function {fn!r:.40}")
    x = c.x()
    if c.in_types[0].dtype == "int" and fn not in ("absolute", "neg"):
        x = E("x.float()", x=x)
    return E(_UNARY_CODE[fn], x=x)  # type: ignore[index]


define(Unary, shape=_unary_shape, cost=_unary_cost, lower=Rule(forward=_unary_forward),
       draw=lambda o, ins, outs: Look(o.fn, (), "elementwise"), interpret=_unary_interpret,
       example="""
arch t() {
  in x: [B, 3, 4]
  y = sqrt(exp(x)) + rsqrt(exp(x) + 1.0) + log(exp(x) + 2.0) + absolute(neg(x))
  out z = sin(y) * cos(y)
}
""")


# ----------------------------------------------------------------------------- pow, clamp


class Pow(OpBase):
    """``x ** exponent`` elementwise, for a constant float exponent."""

    op: Literal["pow"] = "pow"
    exponent: float


@op("pow", ("x",), (Arg("exponent", "float"),), "x ** exponent elementwise (a constant exponent).")
def _pow_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Pow:
    return Pow(exponent=a["exponent"])


def _pow_interpret(c: Any) -> Any:
    import torch

    x = c.x()
    return (x.double() if x.dtype == torch.long else x) ** c.op.exponent


def _pow_forward(c: Ctx) -> ast.expr:
    e = c.fwd_attr("exponent")
    if c.const("exponent") and c.op.exponent == 2.0:  # type: ignore[attr-defined]
        e = lit(2)
    x = E("x.float()", x=c.x()) if c.in_types[0].dtype == "int" else c.x()
    return E("x ** e", x=x, e=e)


define(Pow, shape=lambda o, ins: (_float_like(ins[0], "pow"),),
       cost=lambda o, ins, outs: OpCost(other_flops=numel(outs[0]), saves_inputs=(0,)),
       lower=Rule(forward=_pow_forward),
       draw=lambda o, ins, outs: Look(f"pow {o.exponent:g}", (), "elementwise"), interpret=_pow_interpret,
       example="""
arch t() {
  in x: [B, 6]
  out y = pow(exp(x), 1.5) + pow(x, 2.0)
}
""")


class Clamp(OpBase):
    """``x`` limited to ``[min, max]`` elementwise (infinite bounds: no limit on that side)."""

    op: Literal["clamp"] = "clamp"
    min: float = -math.inf
    max: float = math.inf


@op("clamp", ("x",), (Arg("min", "float", -math.inf), Arg("max", "float", math.inf)),
    "Limit x to [min, max] elementwise.")
def _clamp_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Clamp:
    if a["min"] > a["max"]:
        raise BuildError("E0406", f"clamp: min {a['min']} is above max {a['max']}", arg="min")
    if math.isinf(a["min"]) and math.isinf(a["max"]):
        raise BuildError("E0406", "clamp needs `min` or `max`", arg="min")
    return Clamp(min=a["min"], max=a["max"])


def _clamp_forward(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Clamp)
    kw = {}
    if not (c.const("min") and math.isinf(o.min)):
        kw["min"] = c.fwd_attr("min")
    if not (c.const("max") and math.isinf(o.max)):
        kw["max"] = c.fwd_attr("max")
    return call(ast.Attribute(value=c.x(), attr="clamp", ctx=ast.Load()), **kw)


def _clamp_interpret(c: Any) -> Any:
    import torch

    x = c.x()
    lo = torch.full_like(x, c.op.min)
    hi = torch.full_like(x, c.op.max)
    return torch.where(x < lo, lo, torch.where(x > hi, hi, x))


define(Clamp, shape=lambda o, ins: (ins[0],),
       cost=lambda o, ins, outs: OpCost(other_flops=numel(outs[0]), saves_inputs=(0,)),
       lower=Rule(forward=_clamp_forward),
       draw=lambda o, ins, outs: Look("clamp", (f"[{o.min:g}, {o.max:g}]",), "elementwise"),
       interpret=_clamp_interpret,
       example="""
arch t() {
  in x: [B, 8]
  out y = clamp(x, min = -0.5, max = 0.5) + clamp(x, max = 0.25)
}
""")


# ----------------------------------------------------------------------------- minimum / maximum


class MinMax(OpBase):
    """The elementwise minimum or maximum of two tensors, broadcast like ``a + b``."""

    op: Literal["minmax"] = "minmax"
    fn: Literal["minimum", "maximum"]


for _fn in ("minimum", "maximum"):
    op(_fn, ("a", "b"), (), f"The elementwise {_fn[:3]} of two tensors (broadcasting).")(
        (lambda f: lambda ctx, ins, a: MinMax(fn=f))(_fn))


def _minmax_interpret(c: Any) -> Any:
    import torch

    a, b = torch.broadcast_tensors(c.x(0), c.x(1))
    return torch.where(a <= b, a, b) if c.op.fn == "minimum" else torch.where(a >= b, a, b)


define(MinMax, shape=lambda o, ins: (shapes.broadcast(ins[0], ins[1], o.fn),),
       cost=lambda o, ins, outs: OpCost(other_flops=numel(outs[0]), saves_inputs=(0, 1)),
       lower=Rule(forward=lambda c: call(f"torch.{_fixed(c, 'fn')}", c.ins[0], c.ins[1])),
       draw=lambda o, ins, outs: Look(o.fn[:3], (), "elementwise"), interpret=_minmax_interpret,
       example="""
arch t() {
  in a: [B, 4, 5]
  in b: [B, 1, 5]
  out y = minimum(a, b) + maximum(a, b * 2.0)
}
""")


# ----------------------------------------------------------------------------- comparisons, where

_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


class Compare(OpBase):
    """``x < value`` (and ``<= > >= == !=``) elementwise: a bool tensor."""

    op: Literal["compare"] = "compare"
    fn: Literal["lt", "le", "gt", "ge", "eq", "ne"]
    value: float


for _fn, _sym in _CMP.items():
    op(_fn, ("x",), (Arg("value", "float"),), f"x {_sym} value elementwise: a bool tensor.")(
        (lambda f: lambda ctx, ins, a: Compare(fn=f, value=a["value"]))(_fn))


def _compare_forward(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Compare)
    fn = _fixed(c, "fn")
    v: ast.expr = c.fwd_attr("value")
    if c.const("value") and c.in_types[0].dtype == "int" and o.value.is_integer():
        v = lit(int(o.value))
    return ast.Compare(left=c.x(), ops=[{"lt": ast.Lt(), "le": ast.LtE(), "gt": ast.Gt(), "ge": ast.GtE(),
                                          "eq": ast.Eq(), "ne": ast.NotEq()}[fn]], comparators=[v])  # type: ignore[index]


def _compare_interpret(c: Any) -> Any:
    import torch

    x, v = c.x(), c.op.value
    d = x.double() - v
    return {"lt": d < 0, "le": d <= 0, "gt": d > 0, "ge": d >= 0, "eq": d == 0, "ne": d != 0}[c.op.fn].to(torch.bool)


define(Compare, shape=lambda o, ins: (TensorType(shape=ins[0].shape, dtype="bool"),),
       cost=lambda o, ins, outs: OpCost(other_flops=numel(outs[0])),
       lower=Rule(forward=_compare_forward),
       draw=lambda o, ins, outs: Look(f"{_CMP[o.fn]} {o.value:g}", (), "elementwise"),
       interpret=_compare_interpret,
       example="""
arch t() {
  in x: [B, 4]
  out y = where(lt(x, 0.0), x * 2.0, x) + where(ge(x, 0.5), x, x * 0.0)
}
""")


class Where(OpBase):
    """``a`` where the bool tensor ``cond`` holds, else ``b`` (all three broadcast)."""

    op: Literal["where"] = "where"


@op("where", ("cond", "a", "b"), (), "a where the bool tensor cond holds, else b (broadcasting).")
def _where_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Where:
    return Where()


def _where_shape(o: Where, ins: list[TensorType]) -> tuple[TensorType, ...]:
    cond, a, b = ins
    if cond.dtype != "bool":
        raise shapes.ShapeError("E0401", f"where's condition is a bool tensor, got {cond}", input_index=0,
                                help="compare first: where(lt(x, 0), a, b)")
    ab = shapes.broadcast(a, b, "where")
    out = shapes.broadcast(TensorType(shape=cond.shape, dtype=ab.dtype), ab, "where")
    return (TensorType(shape=out.shape, dtype="float" if "float" in (a.dtype, b.dtype) else ab.dtype),)


def _where_interpret(c: Any) -> Any:
    cond, a, b = c.x(0), c.x(1), c.x(2)
    return cond * a + (~cond) * b


define(Where, shape=_where_shape,
       cost=lambda o, ins, outs: OpCost(other_flops=numel(outs[0]), saves_inputs=(0,)),
       lower=Rule(forward=lambda c: call("torch.where", *c.ins)),
       draw=lambda o, ins, outs: Look("where", (), "elementwise"), interpret=_where_interpret,
       example="""
arch t() {
  in x: [B, 3, 4]
  in y: [B, 3, 4]
  out z = where(gt(x - y, 0.0), x, y * 0.5)
}
""")


# ----------------------------------------------------------------------------- integer division, casts


class IntDiv(OpBase):
    """Python's ``x // k`` (``floor_div``) or ``x % k`` (``mod``) of an int tensor by a positive int."""

    op: Literal["int_div"] = "int_div"
    fn: Literal["floor_div", "mod"]
    k: int


for _fn, _doc in (("floor_div", "x // k (rounding down)"), ("mod", "x % k (the sign of k)")):
    op(_fn, ("x",), (Arg("k", "int", min=1),), f"{_doc} elementwise on an int tensor, by a positive int.")(
        (lambda f: lambda ctx, ins, a: IntDiv(fn=f, k=a["k"]))(_fn))


def _intdiv_interpret(c: Any) -> Any:
    import torch

    x, k = c.x(), c.op.k
    q = torch.floor(x.double() / k)
    out = q if c.op.fn == "floor_div" else x.double() - q * k
    return out.to(x.dtype)


def _intdiv_shape(o: IntDiv, ins: list[TensorType]) -> tuple[TensorType, ...]:
    if ins[0].dtype != "int":
        raise shapes.ShapeError("E0401", f"{o.fn} divides an int tensor, got {ins[0]}",
                                help="cast it first: cast(x, \"int\")")
    return (ins[0],)


define(IntDiv, shape=_intdiv_shape,
       cost=lambda o, ins, outs: OpCost(other_flops=numel(outs[0])),
       lower=Rule(forward=lambda c: E("x // k" if _fixed(c, "fn") == "floor_div" else "x % k", x=c.x(),
                                      k=c.fwd_attr("k"))),
       draw=lambda o, ins, outs: Look(f"{'//' if o.fn == 'floor_div' else '%'} {o.k}", (), "elementwise"),
       interpret=_intdiv_interpret,
       example="""
arch t() {
  in x: [B, 12]
  p = arange(12)
  out y = x * (row: identity(floor_div(p, 4))) + x * (col: identity(mod(p, 4))) + cast(floor_div(cast(x, "int"), 3), "float")
}
""")


class Cast(OpBase):
    """``x`` converted to an int (int64), float or bool tensor."""

    op: Literal["cast"] = "cast"
    dtype: Literal["float", "int", "bool"]


@op("cast", ("x",), (Arg("dtype", "str"),), "Convert x to an \"int\" (int64), \"float\" or \"bool\" tensor.")
def _cast_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Cast:
    if a["dtype"] not in ("float", "int", "bool"):
        raise BuildError("E0406", f"dtype is \"float\", \"int\" or \"bool\", got \"{a['dtype']}\"", arg="dtype")
    return Cast(dtype=a["dtype"])


def _cast_interpret(c: Any) -> Any:
    import torch

    x = c.x()
    return {"float": x.double() if not x.is_floating_point() else x, "int": x.long(), "bool": x != 0}[c.op.dtype] \
        if c.op.dtype != "bool" else (x != 0).to(torch.bool)


def _cast_forward(c: Ctx) -> ast.expr:
    dt = _fixed(c, "dtype")
    if dt == c.in_types[0].dtype:
        return c.x()
    return E({"float": "x.float()", "int": "x.long()", "bool": "x.bool()"}[dt], x=c.x())  # type: ignore[index]


define(Cast, shape=lambda o, ins: (TensorType(shape=ins[0].shape, dtype=o.dtype),),
       cost=lambda o, ins, outs: OpCost(other_flops=numel(outs[0])),
       lower=Rule(forward=_cast_forward),
       draw=lambda o, ins, outs: Look(f"cast {o.dtype}", (), "elementwise"), interpret=_cast_interpret,
       example="""
arch t() {
  in x: [B, 5]
  out y = x * (ramp: cast(arange(5, start = -2), "float")) + cast(gt(x, 0.0), "float") + cast(cast(x, "int"), "float")
}
""")

foldable(Unary, Pow, Clamp, MinMax, Compare, Where, IntDiv, Cast)
