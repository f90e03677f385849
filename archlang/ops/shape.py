"""The tensor-shaping ops: rearrange, concat, split, mean, take, slice, roll and matmul.

Takes: nothing at import but the rule kits of each stage. Produces: the rules (language
signature, shape, cost, lowering, drawing, interpreter) of :class:`~archlang.ir.ops.Rearrange`, :class:`~archlang.ir.ops.Concat`,
:class:`~archlang.ir.ops.Split`, :class:`~archlang.ir.ops.Mean`, :class:`~archlang.ir.ops.Take`,
:class:`~archlang.ir.ops.SliceOp`, :class:`~archlang.ir.ops.Roll` and :class:`~archlang.ir.ops.Matmul`, registered with
:func:`archlang.ops.registry.define`. The op classes stay in :mod:`archlang.ir.ops` (the
stages and interop refer to them there); helpers several rules of a stage share stay in
that stage's module, its rule kit.
"""

from __future__ import annotations

import ast
import math
from typing import TYPE_CHECKING

from archlang.check.shapes import ShapeError, broadcast, expect_equal, expect_min_rank, norm_dim
from archlang.check.surface import Arg, BuildError, op, parse_pattern
from archlang.cost.rules import OpCost, free, m, numel
from archlang.ir import ops as O
from archlang.ir.dims import Dim, DimLike, add, div_exact, fmt, product
from archlang.ir.types import TensorType
from archlang.lower.rules import Ctx, E, LoweringError, Rule, call, int_lit, lit
from archlang.ops.registry import define
from archlang.render.rules import Look

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


# --------------------------------------------------------------------------- signatures


@op("roll", ("x",), (Arg("shifts", "ints"), Arg("dims", "ints")), "Cyclic shift (torch.roll).")
def _roll_signature(ctx, ins, a):
    if len(a["shifts"]) != len(a["dims"]):
        raise BuildError("E0406", "roll needs as many shifts as dims", arg="shifts")
    return O.Roll(shifts=tuple(a["shifts"]), dims=tuple(a["dims"]))


@op("matmul", ("a", "b"), (), "Batched matrix product on the last two dims.")
def _matmul_signature(ctx, ins, a):
    return O.Matmul()


@op("concat", ("xs",), (Arg("dim", "int", -1),), "Concatenate a list of tensors along `dim`.")
def _concat_signature(ctx, ins, a):
    return O.Concat(dim=a["dim"])


@op("split", ("x",), (Arg("sizes", "ints", min=0), Arg("dim", "int", -1)), "Split `dim` into pieces of `sizes`.")
def _split_signature(ctx, ins, a):
    return O.Split(sizes=tuple(a["sizes"]), dim=a["dim"])


@op("mean", ("x",), (Arg("dim", "ints"), Arg("keepdim", "bool", False)), "Mean over the given dims.")
def _mean_signature(ctx, ins, a):
    return O.Mean(dims=tuple(a["dim"]), keepdim=a["keepdim"])


@op("take", ("x",), (Arg("index", "int"), Arg("dim", "int", 1)), "Select one index along `dim` (x[:, 0]).")
def _take_signature(ctx, ins, a):
    return O.Take(index=a["index"], dim=a["dim"])


@op("slice", ("x",), (Arg("start", "int"), Arg("stop", "int"), Arg("dim", "int", 1), Arg("step", "int", 1, min=1)),
    "Keep start .. stop of `dim`, every `step`-th item (x[:, start:stop:step]).")
def _slice_signature(ctx, ins, a):
    return O.SliceOp(start=a["start"], stop=a["stop"], dim=a["dim"], step=a["step"])


@op("rearrange", ("x",), (Arg("pattern", "str"),),
    "einops-style reshape/permute; extra keywords give axis sizes (p = 4).", extra_kwargs=True)
def _rearrange_signature(ctx, ins, a):
    x = ins[0]
    lhs, rhs = parse_pattern(a["pattern"])
    sizes: dict[str, DimLike] = {k: v for k, v in a.items() if k != "pattern"}
    known_names = {n for g in lhs for n in g}
    for k in sizes:
        if k not in known_names:
            raise BuildError("E0204", f"rearrange: `{k}` is not an axis of \"{a['pattern']}\"", arg=k)
    if x.rank != len(lhs):
        raise BuildError("E0303", f"pattern \"{a['pattern']}\" has {len(lhs)} input dims but the tensor {x} has {x.rank}",
                         help=f"the input is {ctx.describe_input(0)}")
    for i, group in enumerate(lhs):
        unknown = [n for n in group if n not in sizes]
        known: DimLike = 1
        for n in group:
            if n in sizes:
                known = known * sizes[n]
        if len(unknown) > 1:
            raise BuildError("E0303", f"cannot infer the sizes of {', '.join(unknown)} in group ({' '.join(group)})",
                             help=f"give all but one of them, e.g. `{unknown[0]} = ...`")
        if len(unknown) == 1:
            if not isinstance(known, int):
                raise BuildError("E0303", f"axis sizes in group ({' '.join(group)}) must be constants")
            q = div_exact(x.shape[i], known)
            if q is None:
                raise BuildError("E0501", f"dim {i} of {x} ({fmt(x.shape[i])}) is not divisible by {known} "
                                 f"for group ({' '.join(group)})", help=f"the input is {ctx.describe_input(0)}")
            sizes[unknown[0]] = q
    names = [n for g in lhs for n in g]
    return O.Rearrange(lhs=lhs, rhs=rhs, axes=tuple(O.RearrangeAxis(name=n, size=sizes[n]) for n in names))


# --------------------------------------------------------------------------- shape rules


def _roll_shape(op: O.Roll, ins: list[TensorType]) -> tuple[TensorType, ...]:
    for d in op.dims:
        norm_dim(d, ins[0].rank, "roll")
    return (ins[0],)


def _matmul_shape(op: O.Matmul, ins: list[TensorType]) -> tuple[TensorType, ...]:
    a, b = ins
    expect_min_rank(a, 2, "matmul")
    expect_min_rank(b, 2, "matmul", 1)
    expect_equal(a.shape[-1], b.shape[-2], f"matmul: {a} @ {b}: inner dims {fmt(a.shape[-1])} and {fmt(b.shape[-2])} differ")
    batch = broadcast(TensorType(shape=a.shape[:-2]), TensorType(shape=b.shape[:-2]), "@")
    return (TensorType(shape=(*batch.shape, a.shape[-2], b.shape[-1])),)


def _rearrange_shape(op: O.Rearrange, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    if x.rank != len(op.lhs):
        raise ShapeError("E0303", f"rearrange pattern `{op.pattern()}` has {len(op.lhs)} input dims, "
                         f"the tensor {x} has {x.rank}")
    sizes = {a.name: a.size for a in op.axes}
    for i, group in enumerate(op.lhs):
        got = product([sizes[a] for a in group])
        if got != x.shape[i]:
            raise ShapeError("E0301", f"rearrange `{op.pattern()}`: group ({' '.join(group)}) = {fmt(got)} "
                             f"but dim {i} of {x} is {fmt(x.shape[i])}")
    return (TensorType(shape=tuple(product([sizes[a] for a in g]) for g in op.rhs), dtype=x.dtype),)


def _concat_shape(op: O.Concat, ins: list[TensorType]) -> tuple[TensorType, ...]:
    first = ins[0]
    d = norm_dim(op.dim, first.rank, "concat")
    total: DimLike = 0
    for i, t in enumerate(ins):
        if t.rank != first.rank:
            raise ShapeError("E0302", f"concat: {first} and {t} have different ranks", input_index=i)
        for j in range(first.rank):
            if j != d and t.shape[j] != first.shape[j]:
                raise ShapeError("E0301", f"concat along dim {op.dim}: {first} and {t} differ in dim {j}",
                                 help=f"inputs may differ only in the concatenated dim {op.dim}; dim {j} is "
                                      f"{fmt(first.shape[j])} in input 0 but {fmt(t.shape[j])} in input {i}",
                                 input_index=i)
        total = add(total, t.shape[d])
    return (TensorType(shape=(*first.shape[:d], total, *first.shape[d + 1:]), dtype=first.dtype),)


def _split_shape(op: O.Split, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    d = norm_dim(op.dim, x.rank, "split")
    if sum(op.sizes) != x.shape[d]:
        raise ShapeError("E0301", f"split sizes {list(op.sizes)} sum to {sum(op.sizes)}, but dim {op.dim} of "
                         f"{x} is {fmt(x.shape[d])}")
    return tuple(TensorType(shape=(*x.shape[:d], s, *x.shape[d + 1:]), dtype=x.dtype) for s in op.sizes)


def _mean_shape(op: O.Mean, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    dims = {norm_dim(d, x.rank, "mean") for d in op.dims}
    if op.keepdim:
        return (TensorType(shape=tuple(1 if i in dims else s for i, s in enumerate(x.shape))),)
    return (TensorType(shape=tuple(s for i, s in enumerate(x.shape) if i not in dims)),)


def _take_shape(op: O.Take, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    d = norm_dim(op.dim, x.rank, "take")
    n = x.shape[d]
    if isinstance(n, int) and not -n <= op.index < n:
        raise ShapeError("E0304", f"take: index {op.index} is out of range for dim {op.dim} of {x}")
    return (TensorType(shape=(*x.shape[:d], *x.shape[d + 1:]), dtype=x.dtype),)


def _slice_shape(op: O.SliceOp, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    d = norm_dim(op.dim, x.rank, "slice")
    n = x.shape[d]
    if op.start < 0 or op.stop < op.start or (isinstance(n, int) and op.stop > n):
        raise ShapeError("E0304", f"slice {op.start}..{op.stop} is out of range for dim {op.dim} of {x}")
    if op.step < 1:
        raise ShapeError("E0406", f"slice step {op.step}: a step is at least 1")
    length = op.stop - op.start if op.step == 1 else -(-(op.stop - op.start) // op.step)
    return (TensorType(shape=(*x.shape[:d], length, *x.shape[d + 1:]), dtype=x.dtype),)


# --------------------------------------------------------------------------- cost rules


def _matmul_cost(op: O.Matmul, ins, outs) -> OpCost:
    a = ins[0]
    out = outs[0]
    return OpCost(flops=m(2, numel(out), a.shape[-1]), saves_inputs=(0, 1))


def _mean_cost(op: O.Mean, ins, outs) -> OpCost:
    return OpCost(other_flops=numel(ins[0]))


# --------------------------------------------------------------------------- lowering rules


def _mean_lower(c: Ctx) -> ast.expr:
    dims = c.op.dims  # type: ignore[attr-defined]
    d = c.fwd_attr("dims") if not c.const("dims") else (
        int_lit(dims[0]) if len(dims) == 1 else ast.Tuple(elts=[int_lit(x) for x in dims], ctx=ast.Load()))
    kw = {"keepdim": True} if c.op.keepdim else {}  # type: ignore[attr-defined]
    return call(ast.Attribute(value=c.x(), attr="mean", ctx=ast.Load()), dim=d, **kw)


def _take_lower(c: Ctx) -> ast.expr:
    op = c.op
    assert isinstance(op, O.Take)
    if c.const("dim") and c.const("index") and op.dim in (1, -c.in_types[0].rank + 1):
        return E("x[:, i]", x=c.x(), i=int_lit(op.index))
    return E("x.select(d, i)", x=c.x(), d=c.fwd_attr("dim"), i=c.fwd_attr("index"))


def _slice_lower(c: Ctx) -> ast.expr:
    op = c.op
    assert isinstance(op, O.SliceOp)
    if not (c.const("step") and op.step == 1):  # strided: `x[:, start:stop:step]`
        n = c.in_types[0].shape[op.dim] if c.const("dim") else None
        part = ast.Slice(lower=None if c.const("start") and op.start == 0 else c.fwd_attr("start"),
                         upper=None if c.const("stop") and op.stop == n else c.fwd_attr("stop"),
                         step=c.fwd_attr("step"))
        full = ast.Slice(lower=None, upper=None, step=None)
        if c.const("dim") and op.dim >= 0:
            elts: list[ast.expr] = [*([full] * op.dim), part]
        elif c.const("dim"):
            elts = [ast.Constant(Ellipsis), part, *([full] * (-op.dim - 1))]
        else:
            return E("x[(slice(None),) * (d % x.ndim) + (slice(start, stop, step),)]", x=c.x(), d=c.fwd_attr("dim"),
                     start=c.fwd_attr("start"), stop=c.fwd_attr("stop"), step=c.fwd_attr("step"))
        index = elts[0] if len(elts) == 1 else ast.Tuple(elts=elts, ctx=ast.Load())
        return ast.Subscript(value=c.x(), slice=index, ctx=ast.Load())
    if c.const("start") and c.const("stop"):
        length = lit(op.stop - op.start)  # type: ignore[operator]
    elif c.const("start") and op.start == 0:
        length = c.fwd_attr("stop")
    else:
        length = E("stop - start", stop=c.fwd_attr("stop"), start=c.fwd_attr("start"))
    return E("x.narrow(d, start, n)", x=c.x(), d=c.fwd_attr("dim"), start=c.fwd_attr("start"), n=length)


def _rearrange_lower(c: Ctx) -> ast.expr:
    """Lower an einops pattern to unflatten / permute / flatten, keeping symbolic sizes as -1."""
    ops = [o for o in c.ops if isinstance(o, O.Rearrange)]
    op = ops[0]
    if not all(o.lhs == op.lhs and o.rhs == op.rhs for o in ops):
        raise LoweringError("a rearrange pattern must be the same in every instance of a block")
    sizes = [{a.name: a.size for a in o.axes} for o in ops]

    def fixed(name: str) -> int | None:
        vals = {s[name] for s in sizes}
        v = next(iter(vals))
        return v if len(vals) == 1 and isinstance(v, int) and not isinstance(v, Dim) else None

    out = c.x()
    # 1. split composite input groups, last first so earlier dims keep their index
    for i in reversed(range(len(op.lhs))):
        group = op.lhs[i]
        if len(group) == 1:
            continue
        free = [n for n in group if fixed(n) is None]
        symbolic = [n for n in free if any(not isinstance(sz[n], int) for sz in sizes)]
        if len(symbolic) > 1:
            raise LoweringError(f"rearrange group ({' '.join(group)}) has {len(symbolic)} symbolic sizes; give all "
                                "but one of them")
        # one size is -1 (a symbolic one if any); the others are literals or constructor arguments
        inferred = symbolic[0] if symbolic else (free[-1] if free else group[0])
        parts = [lit(-1) if n == inferred else (lit(fixed(n)) if fixed(n) is not None else c.fwd_attr(f"axis:{n}"))
                 for n in group]
        out = E("x.unflatten(i, s)", x=out, i=i, s=ast.Tuple(elts=parts, ctx=ast.Load()))
    elem = [n for g in op.lhs for n in g]
    order = [n for g in op.rhs for n in g]
    perm = [elem.index(n) for n in order]
    if perm != list(range(len(perm))):
        moved = [i for i, p in enumerate(perm) if p != i]
        if len(moved) == 2:
            out = E("x.transpose(a, b)", x=out, a=moved[0], b=moved[1])
        else:
            out = call(ast.Attribute(value=out, attr="permute", ctx=ast.Load()), *perm)
    # 2. merge composite output groups, last first
    starts = []
    pos = 0
    for g in op.rhs:
        starts.append(pos)
        pos += len(g)
    for g, s in reversed(list(zip(op.rhs, starts, strict=True))):
        if len(g) > 1:
            end = s + len(g) - 1
            out = E("x.flatten(s)", x=out, s=s) if end == pos - 1 and s > 0 else \
                E("x.flatten(s, e)", x=out, s=s, e=end)
            pos = s + 1 if end == pos - 1 else pos - (len(g) - 1)
    return out


# --------------------------------------------------------------------------- drawing rules


def _rearrange_draw(op: O.Rearrange, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Rearrange", (op.pattern().replace("->", "→"),), "reshape")


def _concat_draw(op: O.Concat, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Concat", (f"dim {op.dim}",), "reshape")


def _split_draw(op: O.Split, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Split", (f"{', '.join(map(str, op.sizes))} on dim {op.dim}",), "reshape")


def _mean_draw(op: O.Mean, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    dims = ", ".join(map(str, op.dims))
    return Look("Mean", (f"over dim{'s' if len(op.dims) > 1 else ''} {dims}",), "reshape")


def _index_expr_draw(dim: int, index: str) -> str:
    return "x[" + ":, " * dim + index + "]" if dim >= 0 else f"x[..., {index}" + ", :" * (-dim - 1) + "]"


def _take_draw(op: O.Take, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Take", (_index_expr_draw(op.dim, str(op.index)),), "reshape")


def _slice_draw(op: O.SliceOp, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    step = f":{op.step}" if op.step != 1 else ""
    return Look("Slice", (_index_expr_draw(op.dim, f"{op.start}:{op.stop}{step}"),), "reshape")


def _roll_draw(op: O.Roll, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Roll", (f"shifts {', '.join(map(str, op.shifts))} on dims {', '.join(map(str, op.dims))}",),
                "reshape")


def _matmul_draw(op: O.Matmul, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("MatMul", (), "elementwise")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _matmul_interpret(c: EvalCtx) -> Tensor:
    import torch

    return torch.matmul(c.x(0), c.x(1))


def _rearrange_interpret(c: EvalCtx) -> Tensor:
    """einops semantics: split each input group into its elementary axes (the sizes of the IR,
    a symbolic one inferred from the tensor), permute to the output order, merge groups."""
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.Rearrange)
    x = c.x()
    declared = {a.name: a.size for a in op.axes}
    sizes: dict[str, int] = {}
    for group, actual in zip(op.lhs, x.shape, strict=True):
        known = {n: declared[n] for n in group if type(declared[n]) is int}
        unknown = [n for n in group if n not in known]
        if len(unknown) > 1:
            raise interp.InterpretError(f"rearrange `{op.pattern()}`: cannot infer {', '.join(unknown)}")
        rest = math.prod(known.values())
        sizes.update(known)
        if unknown:
            sizes[unknown[0]] = actual // rest
    elementary = [n for g in op.lhs for n in g]
    order = [n for g in op.rhs for n in g]
    y = x.reshape([sizes[n] for n in elementary]).permute([elementary.index(n) for n in order])
    return y.reshape([math.prod(sizes[n] for n in g) for g in op.rhs])


def _concat_interpret(c: EvalCtx) -> Tensor:
    import torch

    op = c.op
    assert isinstance(op, O.Concat)
    return torch.cat(c.xs, dim=op.dim)


def _split_interpret(c: EvalCtx) -> tuple[Tensor, ...]:
    op = c.op
    assert isinstance(op, O.Split)
    x = c.x()
    out, start = [], 0
    for s in op.sizes:
        out.append(x.narrow(op.dim, start, s))
        start += s
    return tuple(out)


def _mean_interpret(c: EvalCtx) -> Tensor:
    op = c.op
    assert isinstance(op, O.Mean)
    return c.x().mean(dim=op.dims, keepdim=op.keepdim)


def _take_interpret(c: EvalCtx) -> Tensor:
    op = c.op
    assert isinstance(op, O.Take)
    return c.x().select(op.dim, op.index)


def _slice_interpret(c: EvalCtx) -> Tensor:
    op = c.op
    assert isinstance(op, O.SliceOp)
    x = c.x()
    d = op.dim % x.ndim
    return x[(slice(None),) * d + (slice(op.start, op.stop, op.step),)]


def _roll_interpret(c: EvalCtx) -> Tensor:
    import torch

    op = c.op
    assert isinstance(op, O.Roll)
    return torch.roll(c.x(), shifts=op.shifts, dims=op.dims)


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t() {
  in x: [B, 6, 4, 4]
  t = rearrange(x, "b c (h p) w -> b (h w) (p c)", p = 2)
  a, b = split(t, [3, 5], dim = 1)
  t = roll(concat([b, a], dim = 1), shifts = [1], dims = [1])
  att = matmul(t, rearrange(t, "b n c -> b c n"))
  out y = mean(slice(t, 1, 7, dim = 1, step = 2), dim = [1]) + take(t, 0, dim = 1)
  out z = mean(att, dim = [1, 2], keepdim = true)
}
"""

define(O.Concat, shape=_concat_shape, cost=free,
       lower=Rule(forward=lambda c: call("torch.cat", ast.List(elts=list(c.ins), ctx=ast.Load()),
                                         dim=c.fwd_attr("dim"))),
       draw=_concat_draw, interpret=_concat_interpret, example=_EXAMPLE)
define(O.Matmul, shape=_matmul_shape, cost=_matmul_cost,
       lower=Rule(forward=lambda c: E("a @ b", a=c.ins[0], b=c.ins[1])),
       draw=_matmul_draw, interpret=_matmul_interpret, example=_EXAMPLE)
define(O.Mean, shape=_mean_shape, cost=_mean_cost,
       lower=Rule(forward=_mean_lower),
       draw=_mean_draw, interpret=_mean_interpret, example=_EXAMPLE)
define(O.Rearrange, shape=_rearrange_shape, cost=free,
       lower=Rule(forward=_rearrange_lower),
       draw=_rearrange_draw, interpret=_rearrange_interpret, example=_EXAMPLE)
define(O.Roll, shape=_roll_shape, cost=free,
       lower=Rule(forward=lambda c: call("torch.roll", c.x(), shifts=c.fwd_attr("shifts"),
                                         dims=c.fwd_attr("dims"))),
       draw=_roll_draw, interpret=_roll_interpret, example=_EXAMPLE)
define(O.SliceOp, shape=_slice_shape, cost=free,
       lower=Rule(forward=_slice_lower),
       draw=_slice_draw, interpret=_slice_interpret, example=_EXAMPLE)
define(O.Split, shape=_split_shape, cost=free,
       lower=Rule(forward=lambda c: call("torch.split", c.x(), c.fwd_attr("sizes"), dim=c.fwd_attr("dim"))),
       draw=_split_draw, interpret=_split_interpret, example=_EXAMPLE)
define(O.Take, shape=_take_shape, cost=free,
       lower=Rule(forward=_take_lower),
       draw=_take_draw, interpret=_take_interpret, example=_EXAMPLE)
