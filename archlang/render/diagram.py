"""Diagrams of whole graphs: choosing the depth, the cost figures, and running Graphviz.

Takes: a checked IR :class:`~archlang.ir.Graph` and the drawing options. Produces: a
:class:`Diagram` with ``.dot`` (the DOT source), ``.svg()``, ``.save(path)`` (SVG, PNG or PDF
through Graphviz's ``dot``; the DOT itself for ``.dot``/``.gv``) and ``_repr_svg_`` for
notebooks. Only the standard library and ``archlang.ir`` are imported (never torch); the
``dot`` program runs in a subprocess. Without it, ``.save`` writes the DOT beside the asked
path and warns with the one line that says how to install it (:data:`INSTALL_HINT`).
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from archlang.ir.graph import Graph
from archlang.render.dot import Costs, Scene, human
from archlang.render.tree import build_tree, max_level

INSTALL_HINT = ("`dot` (Graphviz) not found: install it with `apt-get install graphviz` (Debian/Ubuntu) "
                "or `brew install graphviz` (macOS)")
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
HEIGHT_BUDGET = 12  # the default depth is the deepest whose longest path has at most this many nodes
COST_METRICS = ("flops", "memory", "params")


class DotNotFound(RuntimeError):
    """Graphviz's ``dot`` is not on the PATH; the message says how to install it."""


class DotNotFoundWarning(UserWarning):
    """``save`` wrote DOT instead of the asked format because ``dot`` is missing."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


def run_dot(dot: str, fmt: str, dpi: int | None = None) -> bytes:
    """Lay out ``dot`` with Graphviz and return the ``fmt`` (svg, png, pdf) bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise DotNotFound(INSTALL_HINT)
    args = [exe, f"-T{fmt}"]
    if dpi is not None:
        args.append(f"-Gdpi={dpi}")
    proc = subprocess.run(args, input=dot.encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


@dataclass(frozen=True)
class Diagram:
    """One drawing of one graph: ``.dot``, ``.svg()``, ``.save(path)``, ``_repr_svg_()``."""

    dot: str
    arch: str
    depth: int
    max_depth: int
    node_count: int
    cluster_count: int

    def svg(self) -> str:
        """The SVG text; raises :class:`DotNotFound` without Graphviz."""
        return run_dot(self.dot, "svg").decode()

    def save(self, path: str | Path, dpi: int | None = None) -> Path:
        """Write the diagram; the format follows the suffix (.svg, .png, .pdf, .dot, .gv).

        Returns the path written: without ``dot``, the DOT goes to ``path`` with the suffix
        ``.dot`` and a :class:`DotNotFoundWarning` says how to install Graphviz.
        """
        path = Path(path)
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the format of {path}: use .svg, .png, .pdf or .dot")
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "dot":
            path.write_text(self.dot)
            return path
        if not dot_available():
            out = path.with_suffix(".dot")
            out.write_text(self.dot)
            warnings.warn(f"{INSTALL_HINT}; wrote {out} instead of {path}", DotNotFoundWarning, stacklevel=2)
            return out
        path.write_bytes(run_dot(self.dot, fmt, dpi))
        return path

    def _repr_svg_(self) -> str | None:
        if not dot_available():
            return None
        return self.svg()

    def __str__(self) -> str:
        return self.dot


def graph_costs(g: Graph, metric: str = "flops") -> Costs:
    """Per-node params (from the ops' weights) and the colouring metric.

    FLOPs and activation memory come from ``archlang.cost.cost_graph`` (batch 1, fp32,
    inference); without that module, the colours fall back to parameters.
    """
    if metric not in COST_METRICS:
        raise ValueError(f"cost metric is one of {', '.join(COST_METRICS)}, not {metric!r}")
    params: dict[str, int] = {}
    for n in g.nodes:
        params[n.name] = n.op.param_count()
    if metric == "params":
        return Costs(params, params, "params", f"{human(sum(params.values()))} params")
    try:
        from archlang.cost import cost_graph
    except ImportError:
        return Costs(params, params, "params", f"{human(sum(params.values()))} params",
                     note="; FLOPs need archlang.cost")
    rep = cost_graph(g, batch=1, dtype="float32", train=False)
    if metric == "flops":
        values = {name: int(c.flops) for name, c in rep.nodes.items()}
        total = sum(values.values())
        unit, div = ("GFLOP", 1e9) if total >= 1e9 else ("MFLOP", 1e6)
        return Costs(params, values, "FLOPs", f"{total / div:.2f} {unit} at batch 1")
    values = {name: int(c.activation_bytes) for name, c in rep.nodes.items()}
    return Costs(params, values, "activation memory",
                 f"{sum(values.values()) / 2**20:.1f} MiB of activations at batch 1, fp32")


def default_depth(g: Graph, *, collapse: bool = True, dropout: bool = False) -> int:
    """The deepest level whose drawing is at most :data:`HEIGHT_BUDGET` nodes tall (at least 1).

    The height is the number of nodes on the longest path, so the default drawing fits one
    screen: Swin-T, ViT-B/16 and MLP-Mixer get 1 (stem, stages or the ×N block stack, head);
    the Transformer 2 (encoder and decoder open, their ×6 layers closed).
    """
    tree = build_tree(g)
    deepest = max(1, max_level(tree))
    best = 1
    for d in range(1, deepest + 1):
        if Scene(g, tree, d, collapse=collapse, dropout=dropout).longest_path() <= HEIGHT_BUDGET:
            best = d
    return best


def render_graph(g: Graph, depth: int | None = None, *, cost: bool | str = False, collapse: bool = True,
                 dropout: bool = False) -> Diagram:
    """Draw ``g``; see :mod:`archlang.render` for what each option does."""
    tree = build_tree(g)
    deepest = max(1, max_level(tree))
    if depth is None:
        depth = default_depth(g, collapse=collapse, dropout=dropout)
    if depth < 1:
        raise ValueError(f"depth is at least 1, not {depth}")
    depth = min(depth, deepest)
    costs = None
    if cost:
        costs = graph_costs(g, "flops" if cost is True else str(cost))
    scene = Scene(g, tree, depth, collapse=collapse, dropout=dropout, costs=costs, max_depth=deepest)
    return Diagram(scene.to_dot(), g.arch, depth, deepest, len(scene.nodes), len(scene.clusters))
