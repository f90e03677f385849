"""Analytic cost model: params, FLOPs, activation, attention and buffer memory, without torch.

Takes: a checked IR graph (``archlang.check``). Produces: a
:class:`~archlang.cost.report.CostReport`; see :mod:`archlang.cost.rules` for the counting
conventions. sympy is imported only when a formula is asked for.
"""

from archlang.cost.report import (
    CostReport,
    NodeCost,
    budget_diagnostic,
    cost_graph,
    param_and_buffer_bytes,
    to_sympy,
)
from archlang.cost.rules import COST_RULES

__all__ = ["COST_RULES", "CostReport", "NodeCost", "budget_diagnostic", "cost_graph", "param_and_buffer_bytes",
           "to_sympy"]
