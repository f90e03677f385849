"""Index expressions: the typed, immutable IR of attention score and mask modifiers.

Takes: nothing (pure definitions). Produces: expression trees over the index variables of an
attention score matrix, built by the elaborator from a spec's ``mask = q_idx - kv_idx < w``
or ``bias = slope[h] * (kv_idx - q_idx)`` and read by the rules of ``attend``
(:mod:`archlang.ops.attention`): its lowerings write them as Python lambdas (through
``ident``/``lit``), its interpreter evaluates them with torch, its drawing prints them.

The variables are ``b`` (batch), ``h`` (query head), ``q_idx`` (query position), ``kv_idx``
(key position) and, in a score modifier, ``score`` (the scaled score). Nodes:

- :class:`Var` and :class:`Const` (an int, float or bool known at compile time);
- :class:`Bin`: ``+ - * / // %``, comparisons, ``and``/``or``, ``min``/``max``;
- :class:`Un`: ``-``, ``not``, ``abs``;
- :class:`Where`: ``if c then a else b`` evaluated per entry;
- :class:`Load`: an element of a tensor input of the op (``slope[h]``, ``doc[b, q_idx]``,
  ``table[rel[q_idx, kv_idx], h]``), by its position among the op's inputs.

Every node has a kind, ``bool``, ``int`` or ``float`` (:func:`kind`): comparisons and logic
give bools, ``/`` gives floats, int tensors give ints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

VARS = ("b", "h", "q_idx", "kv_idx")
SCORE = "score"
Kind = Literal["bool", "int", "float"]

ARITH = ("+", "-", "*", "/", "//", "%")
COMPARE = ("<", "<=", ">", ">=", "==", "!=")
LOGIC = ("and", "or")
FUNCS = ("min", "max")
UNARY = ("-", "not", "abs")


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Var(_Node):
    """An index variable: ``b``, ``h``, ``q_idx``, ``kv_idx`` (ints) or ``score`` (a float)."""

    node: Literal["var"] = "var"
    name: Literal["b", "h", "q_idx", "kv_idx", "score"]


class Const(_Node):
    """A value known at compile time."""

    node: Literal["const"] = "const"
    value: bool | int | float


class Bin(_Node):
    node: Literal["bin"] = "bin"
    op: Literal["+", "-", "*", "/", "//", "%", "<", "<=", ">", ">=", "==", "!=", "and", "or", "min", "max"]
    a: Expr
    b: Expr


class Un(_Node):
    node: Literal["un"] = "un"
    op: Literal["-", "not", "abs"]
    a: Expr


class Where(_Node):
    """``then`` where ``cond`` holds, else ``other``, entry by entry."""

    node: Literal["where"] = "where"
    cond: Expr
    then: Expr
    other: Expr


class Load(_Node):
    """Element ``index`` of input ``input`` of the op (one index expression per dim)."""

    node: Literal["load"] = "load"
    input: int
    index: tuple[Expr, ...]
    kind: Kind = "float"  # the tensor's element kind


Expr = Annotated[Union[Var, Const, Bin, Un, Where, Load], Field(discriminator="node")]  # noqa: UP007
for _cls in (Bin, Un, Where, Load):
    _cls.model_rebuild()


def children(e: _Node) -> tuple[_Node, ...]:
    if isinstance(e, Bin):
        return (e.a, e.b)
    if isinstance(e, Un):
        return (e.a,)
    if isinstance(e, Where):
        return (e.cond, e.then, e.other)
    if isinstance(e, Load):
        return e.index
    return ()


def walk(e: _Node) -> Iterator[_Node]:
    """Every node of ``e``, parents first."""
    todo = [e]
    while todo:
        n = todo.pop()
        yield n
        todo.extend(reversed(children(n)))


def variables(e: _Node) -> frozenset[str]:
    """The index variables ``e`` mentions."""
    return frozenset(n.name for n in walk(e) if isinstance(n, Var))


def inputs(e: _Node) -> tuple[int, ...]:
    """The op inputs ``e`` reads, in first-use order."""
    out: list[int] = []
    for n in walk(e):
        if isinstance(n, Load) and n.input not in out:
            out.append(n.input)
    return tuple(out)


def kind(e: _Node) -> Kind:
    """The element kind of ``e``'s value (the tree is type-checked when it is built)."""
    if isinstance(e, Var):
        return "float" if e.name == SCORE else "int"
    if isinstance(e, Const):
        v = e.value
        return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"
    if isinstance(e, Load):
        return e.kind
    if isinstance(e, Un):
        return "bool" if e.op == "not" else kind(e.a)
    if isinstance(e, Where):
        a, b = kind(e.then), kind(e.other)
        return a if a == b else "float"
    assert isinstance(e, Bin)
    if e.op in COMPARE or e.op in LOGIC:
        return "bool"
    if e.op == "/":
        return "float"
    a, b = kind(e.a), kind(e.b)
    return "int" if a == b == "int" else "float"


_PREC = {"or": 1, "and": 2, "not": 3, **dict.fromkeys(COMPARE, 4), "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6}


def show(e: _Node, names: dict[int, str] | None = None, _outer: int = 0) -> str:
    """``e`` in the language's own syntax (for diagrams and messages); ``names`` names inputs."""
    names = names or {}
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Const):
        return ("true" if e.value else "false") if isinstance(e.value, bool) else repr(e.value)
    if isinstance(e, Load):
        return f"{names.get(e.input, f'in{e.input}')}[{', '.join(show(i, names) for i in e.index)}]"
    if isinstance(e, Where):
        text = f"if {show(e.cond, names)} then {show(e.then, names)} else {show(e.other, names)}"
        return f"({text})" if _outer else text
    if isinstance(e, Un):
        if e.op == "abs":
            return f"abs({show(e.a, names)})"
        p = 3 if e.op == "not" else 7
        text = f"{'not ' if e.op == 'not' else '-'}{show(e.a, names, p)}"
        return f"({text})" if _outer > p else text
    assert isinstance(e, Bin)
    if e.op in FUNCS:
        return f"{e.op}({show(e.a, names)}, {show(e.b, names)})"
    p = _PREC[e.op]
    text = f"{show(e.a, names, p)} {e.op} {show(e.b, names, p + 1)}"
    return f"({text})" if _outer > p else text


__all__ = ["ARITH", "COMPARE", "FUNCS", "LOGIC", "SCORE", "UNARY", "VARS", "Bin", "Const", "Expr", "Kind",
           "Load", "Un", "Var", "Where", "children", "inputs", "kind", "show", "variables", "walk"]
