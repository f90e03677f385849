"""The graph boundary ops: ``input`` (a declared input of an arch) and ``output``.

Takes: nothing at import but the rule kits of each stage. Produces: the rules of
:class:`archlang.ir.ops.Input` and :class:`archlang.ir.ops.Output` (shape, cost, lowering,
drawing, interpreter), registered with :func:`archlang.ops.registry.define`. They have no
language signature: `in x: [...]` and `out y = ...` make them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archlang.cost.rules import free
from archlang.ir import ops as O
from archlang.ir.dims import fmt_shape
from archlang.ir.types import TensorType
from archlang.lower.rules import Rule, name
from archlang.ops.registry import define
from archlang.render.rules import Look

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


# --------------------------------------------------------------------------- shape rules


def _input_shape(op: O.Input, ins: list[TensorType]) -> tuple[TensorType, ...]:
    return (op.type,)


def _output_shape(op: O.Output, ins: list[TensorType]) -> tuple[TensorType, ...]:
    return ()


# --------------------------------------------------------------------------- drawing rules


def _type_draw(t: TensorType) -> str:
    return fmt_shape(t.shape) if t.dtype == "float" else f"{t.dtype}{fmt_shape(t.shape)}"


def _input_draw(op: O.Input, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look(op.name, (_type_draw(op.type),), "input")


def _output_draw(op: O.Output, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look(op.name, tuple(_type_draw(t) for t in ins), "output")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _input_interpret(c: EvalCtx) -> Tensor:
    return c.x()


def _identity_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    return interp.identity(c)


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t() {
  in x: [B, 3]
  out y = x
}
"""

define(O.Input, shape=_input_shape, cost=free,
       lower=Rule(forward=lambda c: name(c.op.name)),  # type: ignore[attr-defined]
       draw=_input_draw, interpret=_input_interpret, example=_EXAMPLE)
define(O.Output, shape=_output_shape, cost=free,
       lower=Rule(forward=lambda c: c.x()),
       draw=_output_draw, interpret=_identity_interpret, example=_EXAMPLE)
