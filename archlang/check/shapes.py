"""Shape rules: the table, its dispatch and the kit the rules share.

Takes: an op instance (``archlang.ir.ops``) and the types of its inputs. Produces: the
types of its outputs (:func:`infer`), or raises :class:`ShapeError` naming what does not
fit. Shapes are symbolic (``int | Dim``): a free batch ``B`` flows through every rule.
``SHAPE_RULES`` holds one rule per op class, filled by the family modules of
:mod:`archlang.ops` (``define(..., shape=...)``), where each op's rule lives next to its
other rules; a test fails when an op lacks one. This module keeps the helpers the rules
share (``expect_rank``, ``expect_equal``, ``conv_out``, ``broadcast``, ``same``...).
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
expect_attn_input = _attn_in
norm_dim = _norm_dim
same = _same
