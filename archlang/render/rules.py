"""Drawing rules: the :class:`Look` type, the table, and the kit the rules share.

Each op's drawing rule lives in its family module of :mod:`archlang.ops`
(``define(..., draw=...)``); ``DRAW_RULES`` maps op classes to them and :func:`look` draws
an op. A rule goes from an op to how its node looks in a diagram.

Takes: an op (:mod:`archlang.ir.ops`) with the tensor types flowing in and out of its node.
Produces: a :class:`Look`: a title in the words a paper would print ("W-MSA", "Linear",
"LayerNorm"), detail lines with the op's key attributes (heads, window, shift, features,
kernel...), a style kind (which colour and shape the node gets, see
``archlang.render.dot.KIND_STYLE``) and whether the node is elided by default (dropout and
drop-path are identities at inference; papers leave them out). ``DRAW_RULES`` holds one rule
per op class; a test fails when an op class lacks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archlang.ir import ops as O
from archlang.ir.types import TensorType


@dataclass(frozen=True)
class Look:
    """How one op node is drawn."""

    title: str
    detail: tuple[str, ...] = ()
    kind: str = "op"  # a key of archlang.render.dot.KIND_STYLE
    elide: bool = False  # hidden unless the caller asks for dropout/drop-path nodes


Rule = Callable[[Any, list[TensorType], tuple[TensorType, ...]], Look]

DRAW_RULES: dict[type[O.OpBase], Rule] = {}


def _rule(*classes: type[O.OpBase]) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for cls in classes:
            DRAW_RULES[cls] = fn
        return fn
    return deco


def _pair(t: tuple[int, int]) -> str:
    return str(t[0]) if t[0] == t[1] else f"{t[0]}×{t[1]}"


def _square(t: tuple[int, int]) -> str:
    return f"{t[0]}×{t[1]}"


def _num(x: float) -> str:
    return f"{x:.4g}"


# --------------------------------------------------------------------------- attention


def _heads(op: Any) -> str:
    return f"{op.heads} heads × {op.head_dim}"


def look(op: O.OpBase, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    """The :class:`Look` of one op, by its class's rule.

    An op class without a rule (one just added to the vocabulary) is drawn with its name and
    scalar attributes rather than failing the drawing; the test that every op class has a
    rule still fails until it gets one.
    """
    rule = DRAW_RULES.get(type(op))
    if rule is not None:
        return rule(op, ins, outs)
    data = op.model_dump(mode="json")
    name = str(data.pop("op", type(op).__name__))
    attrs = [f"{k} {v}" for k, v in data.items() if isinstance(v, int | str) and not isinstance(v, bool)]
    return Look(name, (", ".join(attrs[:3]),) if attrs else ())


# the rule kit under public names, for the family modules of archlang.ops
heads_label = _heads
num = _num
pair = _pair
square = _square
