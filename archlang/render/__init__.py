"""Architecture diagrams drawn from the IR: ``archc render`` and ``archlang.render``.

Takes: a checked IR :class:`~archlang.ir.Graph` (never a trace: torch is not imported) and
options: ``depth`` (levels of the name hierarchy drawn open; by default the deepest whose
drawing is at most 12 nodes tall, so that it fits one screen), ``cost`` (colour nodes by their share of FLOPs, activation
memory or params, and annotate params), ``collapse`` (draw identical repeated blocks once with
a ``×N`` badge) and ``dropout`` (also draw dropout and drop-path nodes). Produces: a
:class:`Diagram` holding deterministic Graphviz DOT, which it saves as SVG, PNG or PDF by
running ``dot``.

The pieces: :mod:`~archlang.render.rules` (one drawing rule per op class,
``DRAW_RULES``), :mod:`~archlang.render.tree` (the hierarchy, levels and the collapse rule),
:mod:`~archlang.render.dot` (DOT emission and styles), :mod:`~archlang.render.diagram`
(depth choice, cost figures, Graphviz).
"""

from archlang.render.diagram import (
    HEIGHT_BUDGET,
    INSTALL_HINT,
    MAX_DRAWN_NODES,
    Diagram,
    DotNotFound,
    DotNotFoundWarning,
    RenderError,
    default_depth,
    dot_available,
    render_graph,
)
from archlang.render.rules import DRAW_RULES, Look

__all__ = [
    "DRAW_RULES",
    "HEIGHT_BUDGET",
    "INSTALL_HINT",
    "MAX_DRAWN_NODES",
    "Diagram",
    "DotNotFound",
    "DotNotFoundWarning",
    "Look",
    "RenderError",
    "default_depth",
    "dot_available",
    "render_graph",
]
