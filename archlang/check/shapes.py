"""Shape rules: one function per IR op, from input tensor types to output tensor types.

Takes: an op instance (``archlang.ir.ops``) and the types of its inputs. Produces: the
types of its outputs, or raises :class:`ShapeError` naming what does not fit. Shapes are
symbolic (``int | Dim``): a free batch ``B`` flows through every rule. ``SHAPE_RULES``
holds one rule per op class; a test fails when an op lacks one.
"""

from __future__ import annotations

from collections.abc import Callable

from archlang.ir import ops as O
from archlang.ir.dims import DimLike, add, floordiv, fmt, mul
from archlang.ir.types import TensorType


class ShapeError(Exception):
    def __init__(self, code: str, message: str, help: str | None = None, input_index: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.help = help
        self.input_index = input_index


Rule = Callable[[O.OpBase, list[TensorType]], tuple[TensorType, ...]]
SHAPE_RULES: dict[type[O.OpBase], Rule] = {}


def rule(cls: type[O.OpBase]) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        SHAPE_RULES[cls] = fn
        return fn
    return deco


def infer(op: O.OpBase, inputs: list[TensorType]) -> tuple[TensorType, ...]:
    return SHAPE_RULES[type(op)](op, inputs)


# ----------------------------------------------------------------------------- helpers


def _rank(t: TensorType, want: int, what: str, i: int = 0) -> None:
    if t.rank != want:
        raise ShapeError("E0302", f"{what} expects a rank-{want} tensor, got {t.rank}-d {t}", input_index=i)


def _min_rank(t: TensorType, want: int, what: str, i: int = 0) -> None:
    if t.rank < want:
        raise ShapeError("E0302", f"{what} expects at least {want} dims, got {t}", input_index=i)


def _eq(a: DimLike, b: DimLike, message: str, help: str | None = None, i: int = 0) -> None:
    if a != b:
        raise ShapeError("E0301", message, help, input_index=i)


# the helpers under public names, for the family modules of archlang.ops
expect_rank = _rank
expect_min_rank = _min_rank
expect_equal = _eq


def _norm_dim(dim: int, rank: int, what: str) -> int:
    if not -rank <= dim < rank:
        raise ShapeError("E0304", f"{what}: dim {dim} is out of range for a rank-{rank} tensor")
    return dim % rank


def conv_out(n: DimLike, k: int, s: int, p: int, what: str) -> DimLike:
    """``floor((n + 2p - k) / s) + 1``, also for a symbolic ``n``: ``floor((T + 1)/4) - 1``
    for two convolutions of kernel 3 and stride 2 over ``T`` (stride 1 keeps a polynomial)."""
    if k < 1 or s < 1 or p < 0:
        raise ShapeError("E0406", f"{what}: kernel {k}, stride {s} and padding {p} must be positive "
                         "(padding non-negative)")
    span = add(n, 2 * p - k)
    if isinstance(span, int):
        if span < 0:
            raise ShapeError("E0301", f"{what}: kernel {k} is larger than the padded input {fmt(add(n, 2 * p))}")
        return span // s + 1
    return add(span if s == 1 else floordiv(span, s), 1)


def _same(op: O.OpBase, ins: list[TensorType]) -> tuple[TensorType, ...]:
    return (ins[0],)


# ----------------------------------------------------------------------------- rules


def _attn_in(op: O._AttnCommon | O.CrossAttention, x: TensorType, rank: int, what: str) -> None:
    _rank(x, rank, what)
    _eq(x.shape[-1], op.dim, f"{what} expects width {op.dim}, got {fmt(x.shape[-1])}")


@rule(O.Attention)
def _attention(op: O.Attention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    _attn_in(op, ins[0], 3, "attention ([B, N, C])")
    return (ins[0],)


@rule(O.RelPosAttention)
def _rel_pos(op: O.RelPosAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    _attn_in(op, ins[0], 3, "rel_pos_attention ([B, T, C])")
    return (ins[0],)


@rule(O.CrossAttention)
def _cross(op: O.CrossAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    x, ctx = ins
    _attn_in(op, x, 3, "cross_attention ([B, N, C])")
    _rank(ctx, 3, "cross_attention context ([B, M, C])", 1)
    _eq(ctx.shape[0], x.shape[0], f"cross_attention: batch {fmt(x.shape[0])} vs context batch {fmt(ctx.shape[0])}",
        "the queries `x` and the keys/values `context` must come from the same batch: dim 0 of both must agree",
        i=1)
    _eq(ctx.shape[2], op.context_dim, f"context width {fmt(ctx.shape[2])} != {op.context_dim}", i=1)
    return (x,)


@rule(O.WindowAttention)
def _window(op: O.WindowAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    _attn_in(op, x, 4, "window_attention ([B, H, W, C])")
    _eq(x.shape[1], op.grid[0], f"window_attention built for a {op.grid[0]}-high grid, got {fmt(x.shape[1])}")
    _eq(x.shape[2], op.grid[1], f"window_attention built for a {op.grid[1]}-wide grid, got {fmt(x.shape[2])}")
    for g, p, w in zip(op.grid, op.pad, op.window, strict=True):
        if (g + p) % w:
            raise ShapeError("E0501", f"window {w} does not divide the padded grid {g + p}")
    return (x,)


SHAPE_RULES[O.WindowAttentionV2] = _window


@rule(O.LocalAttention)
def _local(op: O.LocalAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    _attn_in(op, ins[0], 4, "local_attention ([B, H, W, C])")
    return (ins[0],)


@rule(O.PooledAttention)
def _pooled(op: O.PooledAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    _rank(x, 3, "pooled_attention ([B, N, C])")
    _eq(x.shape[2], op.dim, f"pooled_attention expects width {op.dim}, got {fmt(x.shape[2])}")
    want = op.cls + op.grid[0] * op.grid[1]
    _eq(x.shape[1], want, f"pooled_attention on a {op.grid[0]}x{op.grid[1]} grid (+{op.cls}) expects "
        f"{want} tokens, got {fmt(x.shape[1])}")
    qh, qw = op.out_grid()
    return (TensorType(shape=(x.shape[0], op.cls + qh * qw, op.dim_out)),)


def broadcast(a: TensorType, b: TensorType, what: str) -> TensorType:
    ra, rb = a.rank, b.rank
    out: list[DimLike] = []
    for i in range(max(ra, rb)):
        da = a.shape[ra - 1 - i] if i < ra else 1
        db = b.shape[rb - 1 - i] if i < rb else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError("E0301", f"shape mismatch in `{what}`: {a} vs {b}",
                             help=f"dim {-1 - i} differs: {fmt(da)} vs {fmt(db)}")
    return TensorType(shape=tuple(reversed(out)), dtype=a.dtype)


__all__ = ["SHAPE_RULES", "ShapeError", "broadcast", "conv_out", "infer", "mul"]


# the rule kit under public names, for the family modules of archlang.ops
norm_dim = _norm_dim
same = _same
