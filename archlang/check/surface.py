"""The primitive ops as the language sees them: the signature table and its kit.

Takes: from the family modules of :mod:`archlang.ops`, each op's language signatures,
declared with :func:`op` next to the op's other rules (a name, its tensor parameters, its
compile-time arguments as :class:`Arg`, a one-line doc, and a builder). Produces:
:data:`SURFACE` (name -> :class:`Surface`), which elaboration consults for a call's tensor
inputs (their types) and bound arguments to build a typed IR op (``archlang.ir.ops``);
output types then come from the shape rule. Several surface names may build the same IR op
(``gelu``/``relu`` -> ``Activation``). Builders check the constraints that belong to the op
(heads divide the width, the window clamping/padding rule) and raise :class:`BuildError`
with a help line. This module holds no op's signature itself, only the kit the builders
share (:func:`pair`, :func:`same_pad`, :func:`const_dim`, :func:`last_dim`,
:func:`parse_pattern`, the attention arguments; public names at the bottom).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archlang.ir import ops as O
from archlang.ir.dims import DimLike, fmt
from archlang.ir.types import TensorType

REQUIRED = object()


class BuildError(Exception):
    def __init__(self, code: str, message: str, help: str | None = None, arg: str | None = None,
                 notes: list[str] | None = None):
        super().__init__(message)
        self.code, self.message, self.help, self.arg = code, message, help, arg
        self.notes = notes or []


@dataclass(frozen=True)
class Arg:
    name: str
    # int float bool str pair ints; "tensor": a tensor by keyword, and "expr" / "expr_score": a
    # tensor or an index expression of b, h, q_idx, kv_idx (and score), kept as a tree
    # (archlang.check.index_args): both become inputs of the op, the builder gets their positions
    type: str
    default: Any = REQUIRED
    doc: str = ""
    min: int | None = None  # least value of an int (of each item of a pair/ints): sizes, counts, strides
    range: str | None = None  # a float's domain: "positive" (> 0: eps) or "prob" (0 to 1: rates, momentum)


@dataclass
class BuildCtx:
    """What a builder may use besides the inputs: argument provenance and notes."""

    describe_arg: Callable[[str], str]  # "heads = 5 (argument at f:3:4)"
    describe_input: Callable[[int], str]  # "x: [B, 56, 56, 96] (output of `patch_embed`)"
    node_name: str
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (code, message, help)
    # finds an earlier node by name (relative to the current block first): (full name, op)
    lookup: Callable[[str], tuple[str, O.OpBase] | None] = lambda name: None


Builder = Callable[[BuildCtx, list[TensorType], dict[str, Any]], O.OpBase]


@dataclass(frozen=True)
class Surface:
    name: str
    tensors: tuple[str, ...]
    args: tuple[Arg, ...]
    build: Builder
    doc: str
    extra_kwargs: bool = False  # rearrange takes axis sizes as extra keywords


SURFACE: dict[str, Surface] = {}


def op(name: str, tensors: tuple[str, ...], args: tuple[Arg, ...], doc: str, extra_kwargs: bool = False):
    def deco(fn: Builder) -> Builder:
        SURFACE[name] = Surface(name, tensors, args, fn, doc, extra_kwargs)
        return fn
    return deco


def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _const(ctx: BuildCtx, d: DimLike, what: str, i: int = 0) -> int:
    if not isinstance(d, int):
        raise BuildError("E0404", f"{what} must be known at compile time, but it is `{fmt(d)}`",
                         help=f"give the size concretely; {ctx.describe_input(i)}")
    return d


def _last(ctx: BuildCtx, x: TensorType, what: str) -> int:
    if x.rank == 0:
        raise BuildError("E0302", f"{what} needs at least one dim, got a scalar tensor")
    return _const(ctx, x.shape[-1], f"the input width of `{what}`")


# the helpers under public names, for the family modules of archlang.ops
const_dim = _const
last_dim = _last


# ----------------------------------------------------------------------------- layers


def same_pad(ctx: BuildCtx, x: TensorType, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """TensorFlow's SAME padding (left, right, top, bottom): output = ceil(input / stride)."""
    if x.rank != 4:
        raise BuildError("E0302", f"`same` padding is for [B, C, H, W], got {x}")
    pads = []
    for n_, k, s_ in ((x.shape[3], kernel[1], stride[1]), (x.shape[2], kernel[0], stride[0])):
        n = _const(ctx, n_, "a spatial size with same padding")
        total = max((-(-n // s_) - 1) * s_ + k - n, 0)
        pads += [total // 2, total - total // 2]
    return (pads[0], pads[1], pads[2], pads[3])


def _axis(ctx: BuildCtx, x: TensorType, d: int, what: str) -> int:
    """``d`` as a non-negative axis of ``x`` (E0304 when out of range)."""
    if x.rank == 0:
        raise BuildError("E0302", f"{what} needs at least one dim, got a scalar tensor")
    if not -x.rank <= d < x.rank:
        raise BuildError("E0304", f"{what}: dim {d} is out of range for {x}", arg="dim")
    return d % x.rank


# ----------------------------------------------------------------------------- attention

_ATTN_ARGS = (Arg("heads", "int", min=1), Arg("head_dim", "int", 0, min=0), Arg("qkv_bias", "bool", True),
              Arg("proj_bias", "bool", True), Arg("attn_drop", "float", 0.0, range="prob"), Arg("proj_drop", "float", 0.0, range="prob"))


def _heads(ctx: BuildCtx, dim: int, a: dict[str, Any]) -> int:
    heads = a["heads"]
    if heads <= 0:
        raise BuildError("E0406", f"heads must be positive, got {heads}", arg="heads")
    if a["head_dim"]:
        return a["head_dim"]
    if dim % heads:
        raise BuildError("E0503", f"{heads} heads do not divide the width {dim}",
                         help=f"the width must be a multiple of heads: {ctx.describe_arg('heads')}; "
                              f"width {dim} from {ctx.describe_input(0)}", arg="heads")
    return dim // heads


def _common(ctx, dim: int, a) -> dict[str, Any]:
    return dict(dim=dim, heads=a["heads"], head_dim=_heads(ctx, dim, a), qkv_bias=a["qkv_bias"],
                proj_bias=a["proj_bias"], attn_drop=a["attn_drop"], proj_drop=a["proj_drop"])


# ----------------------------------------------------------------------------- rearrange


def parse_pattern(pattern: str) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """Parse ``"b (h p) w c -> b h (p w c)"`` into groups of axis names."""
    if pattern.count("->") != 1:
        raise BuildError("E0303", f"rearrange pattern needs exactly one `->`: \"{pattern}\"", arg="pattern")
    sides = []
    for side in pattern.split("->"):
        groups: list[tuple[str, ...]] = []
        cur: list[str] | None = None
        for tok in side.replace("(", " ( ").replace(")", " ) ").split():
            if tok == "(":
                if cur is not None:
                    raise BuildError("E0303", "nested parentheses in a rearrange pattern", arg="pattern")
                cur = []
            elif tok == ")":
                if cur is None:
                    raise BuildError("E0303", "unbalanced `)` in a rearrange pattern", arg="pattern")
                if not cur:
                    raise BuildError("E0303", "empty group `()` in a rearrange pattern", arg="pattern")
                groups.append(tuple(cur))
                cur = None
            elif tok.isidentifier():
                (cur.append(tok) if cur is not None else groups.append((tok,)))
            else:
                raise BuildError("E0303", f"bad axis name `{tok}` in a rearrange pattern", arg="pattern")
        if cur is not None:
            raise BuildError("E0303", "unbalanced `(` in a rearrange pattern", arg="pattern")
        sides.append(tuple(groups))
    lhs, rhs = sides
    lnames = [n for g in lhs for n in g]
    rnames = [n for g in rhs for n in g]
    for names, side in ((lnames, "left"), (rnames, "right")):
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise BuildError("E0303", f"axis `{sorted(dup)[0]}` appears twice on the {side} of the pattern",
                             arg="pattern")
    if set(lnames) != set(rnames):
        missing = sorted(set(lnames) ^ set(rnames))
        raise BuildError("E0303", f"axes {', '.join(missing)} appear on only one side of \"{pattern}\"",
                         help="rearrange only reorders and regroups axes; every axis must appear on both sides",
                         arg="pattern")
    return lhs, rhs


# the rule kit under public names, for the family modules of archlang.ops
ATTN_ARGS = _ATTN_ARGS
attn_common = _common
axis_index = _axis
