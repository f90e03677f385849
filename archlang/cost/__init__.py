"""Analytic cost model: params, FLOPs, activation and attention memory, without torch.

Takes: a checked IR graph (``archlang.check``). Produces: a
:class:`~archlang.cost.report.CostReport`; see :mod:`archlang.cost.rules` for the counting
conventions. sympy is imported only when a formula is asked for.
"""

from archlang.cost.report import CostReport, NodeCost, cost_graph, to_sympy
from archlang.cost.rules import COST_RULES

__all__ = ["COST_RULES", "CostReport", "NodeCost", "cost_graph", "to_sympy"]
