"""The archlang abstract syntax tree.

Produced by :mod:`archlang.syntax.parser` from source text; consumed by the elaborator in
:mod:`archlang.check`. Every node carries the :class:`~archlang.diagnostics.Span` it came
from, so later diagnostics can point at the source. Nodes are frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archlang.diagnostics import Span

# ----------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expr:
    span: Span


@dataclass(frozen=True)
class IntLit(Expr):
    value: int


@dataclass(frozen=True)
class FloatLit(Expr):
    value: float


@dataclass(frozen=True)
class StrLit(Expr):
    value: str


@dataclass(frozen=True)
class BoolLit(Expr):
    value: bool


@dataclass(frozen=True)
class Name(Expr):
    id: str


@dataclass(frozen=True)
class ListLit(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class BinOp(Expr):
    op: str  # + - * / // % ** @ == != < <= > >= and or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Expr):
    op: str  # - not
    operand: Expr


@dataclass(frozen=True)
class CondExpr(Expr):
    cond: Expr
    then: Expr
    other: Expr


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call(Expr):
    func: str
    func_span: Span
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    # `blocks[i].fc(z)`, `pe{s}(z)`: a call of an earlier labelled layer (weight sharing) by a
    # label path; empty for a call by a plain name (`pe1(z)` is resolved by the elaborator)
    path: tuple[str | Expr, ...] = ()


@dataclass(frozen=True)
class Index(Expr):
    value: Expr
    index: Expr


@dataclass(frozen=True)
class Slice(Expr):
    value: Expr
    start: Expr
    stop: Expr


@dataclass(frozen=True)
class SliceItem:
    """``start:stop:step`` in a subscript; a missing part is None (``::2``)."""

    span: Span
    start: Expr | None
    stop: Expr | None
    step: Expr | None = None


@dataclass(frozen=True)
class EllipsisItem:
    """``...`` in a subscript: every dim not named by the other items (``x[..., ::2]``)."""

    span: Span


@dataclass(frozen=True)
class Subscript(Expr):
    """``x[:, 0]``, ``x[:, ::2]``, ``l[1:3]``: a subscript with a colon slice or several items
    (a single index ``l[i]`` is :class:`Index`, ``l[a .. b]`` is :class:`Slice`)."""

    value: Expr
    items: tuple[Expr | SliceItem | EllipsisItem, ...]


@dataclass(frozen=True)
class LabelPart(Expr):
    """``patch_embed{i}``: a label piece with a part computed at compile time (only in labels)."""

    value: Expr
    part: Expr


@dataclass(frozen=True)
class Comprehension:
    """``for var in iter [if cond]...`` (``iter`` a list, or ``start .. stop`` when ``stop`` is set)."""

    var: str
    iter: Expr
    stop: Expr | None
    conds: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class ListComp(Expr):
    """``[elt for var in iter if cond ...]``: a compile-time list built item by item."""

    elt: Expr
    clauses: tuple[Comprehension, ...]


@dataclass(frozen=True)
class Attr(Expr):
    value: Expr
    attr: str


@dataclass(frozen=True)
class Labeled(Expr):
    """``label: call(...)``: the label is a path of names and index expressions."""

    # names, index expressions (`blocks[i]`) or computed parts (`LabelPart`: `embed{i}`)
    # evaluated at elaboration
    label: tuple[str | Expr, ...]
    call: Call


# ----------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class Star:
    """``*`` in a shape pattern: any number of leading dims."""

    span: Span


@dataclass(frozen=True)
class ValueType:
    """A compile-time value type: int, float, bool, str, or a list of one of those."""

    name: str  # "int" | "float" | "bool" | "str" | "list"
    span: Span
    elem: ValueType | None = None

    def __str__(self) -> str:
        return f"[{self.elem}]" if self.name == "list" else self.name


@dataclass(frozen=True)
class TensorAnnot:
    dims: tuple[Expr | Star, ...]
    dtype: str  # "float" | "int" | "bool"
    span: Span


Annot = ValueType | TensorAnnot

# ----------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Stmt:
    span: Span


@dataclass(frozen=True)
class InStmt(Stmt):
    name: str
    annot: Annot


@dataclass(frozen=True)
class OutStmt(Stmt):
    name: str
    value: Expr | None


@dataclass(frozen=True)
class Assign(Stmt):
    targets: tuple[str, ...]
    value: Expr


@dataclass(frozen=True)
class For(Stmt):
    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class If(Stmt):
    branches: tuple[tuple[Expr, tuple[Stmt, ...]], ...]
    orelse: tuple[Stmt, ...] | None


@dataclass(frozen=True)
class Return(Stmt):
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class Require(Stmt):
    cond: Expr
    message: str | None


@dataclass(frozen=True)
class ExprStmt(Stmt):
    value: Expr


@dataclass(frozen=True)
class Adapt(Stmt):
    """``adapt lora(r = 8) on "sel", ...``: a fine-tuning tap on the selected nodes."""

    kind: str
    args: tuple[Keyword, ...]
    selectors: tuple[str, ...]
    selector_spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Freeze(Stmt):
    """``freeze "sel"`` / ``unfreeze "sel"``."""

    freeze: bool
    selectors: tuple[str, ...]
    selector_spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Checkpoint(Stmt):
    """``checkpoint "blocks.*"``: activation-checkpoint the block instances the globs select."""

    selectors: tuple[str, ...]
    selector_spans: tuple[Span, ...] = ()


# ----------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Param:
    name: str
    annot: Annot
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class Use:
    module: str
    span: Span


@dataclass(frozen=True)
class ArchDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class ArchAlias:
    """``arch swin_t = swin(embed = 96)`` with an optional body of adapter statements."""

    name: str
    base: str
    base_span: Span
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class Module:
    file: str
    uses: tuple[Use, ...] = ()
    archs: tuple[ArchDef | ArchAlias, ...] = ()
    blocks: tuple[BlockDef, ...] = ()
    items: tuple[object, ...] = field(default=(), repr=False)
