"""The op registry: one call per op puts all of its rules in place.

Takes: from a family module of :mod:`archlang.ops`, an op class (a subclass of
:class:`archlang.ir.ops.OpBase` with a literal ``op`` tag) and its rules: the shape rule
(:mod:`archlang.check.shapes`), the cost rule (:mod:`archlang.cost.rules`), the lowering rule
(:class:`archlang.lower.rules.Rule`), the drawing rule (:mod:`archlang.render.rules`), the
interpreter rule (:mod:`archlang.lower.interpret`'s ``EvalCtx`` -> tensors; it imports
torch inside its body, never at module level), and a small example spec that uses it. Its
language signature is declared next to the class with :func:`archlang.check.surface.op`.
Produces: each rule registered in its stage's table, and :data:`DEFS`, the definition of
every op a family module declares, which the tests walk (every op's example is checked,
costed, drawn, lowered and compared with the interpreter).

Everything here and in the rule kits it imports is torch-free, so ``archc check`` of a spec
that uses a family op still never imports torch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archlang.ir.ops import OpBase


@dataclass(frozen=True)
class OpDef:
    """An op and every rule it has, as one family module declares them."""

    cls: type[OpBase]
    module: str  # the family module that declares it
    shape: Callable[..., Any]
    cost: Callable[..., Any]
    lower: Any  # archlang.lower.rules.Rule
    draw: Callable[..., Any]
    interpret: Callable[..., Any]
    example: str  # a spec (with one arch) that uses the op: the tests' starting point
    example_sizes: tuple[tuple[str, int], ...] = ()  # free sizes the example needs, e.g. (("T", 7),)


DEFS: dict[type[OpBase], OpDef] = {}


def define(cls: type[OpBase], *, shape: Callable[..., Any], cost: Callable[..., Any], lower: Any,
           draw: Callable[..., Any], interpret: Callable[..., Any], example: str,
           example_sizes: dict[str, int] | None = None) -> OpDef:
    """Register ``cls`` with all of its rules (every one is required); returns its definition.

    Raises ``TypeError`` when ``cls`` is not a concrete op or is defined twice."""
    from archlang.check.shapes import SHAPE_RULES
    from archlang.cost.rules import COST_RULES
    from archlang.lower.rules import LOWER_RULES, Rule
    from archlang.render.rules import DRAW_RULES

    tag = cls.model_fields["op"].default if "op" in cls.model_fields else None
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__qualname__} has no literal `op` tag")
    if cls in DEFS:
        raise TypeError(f"op {tag!r} is defined twice")
    if not isinstance(lower, Rule):
        raise TypeError(f"the lowering rule of {tag!r} must be an archlang.lower.rules.Rule")
    # the family module is the caller: an op class may be defined elsewhere (the old ops'
    # classes stay in archlang.ir.ops, where every stage imports them from)
    module = sys._getframe(1).f_globals.get("__name__", cls.__module__)
    d = OpDef(cls=cls, module=module, shape=shape, cost=cost, lower=lower, draw=draw,
              interpret=interpret, example=example, example_sizes=tuple(sorted((example_sizes or {}).items())))
    for table, rule in ((SHAPE_RULES, shape), (COST_RULES, cost), (LOWER_RULES, lower), (DRAW_RULES, draw)):
        if cls in table:
            raise TypeError(f"op {tag!r} already has a rule in a stage table")
        table[cls] = rule
    DEFS[cls] = d
    interp = sys.modules.get("archlang.lower.interpret")  # loaded late (it imports torch): it merges DEFS itself
    if interp is not None:
        interp.EVAL_RULES[cls] = interpret
    return d


def eval_rules() -> dict[type[OpBase], Callable[..., Any]]:
    """The interpreter rules of every defined op (the interpreter merges them when it loads)."""
    return {c: d.interpret for c, d in DEFS.items()}


__all__ = ["DEFS", "OpDef", "define", "eval_rules"]
