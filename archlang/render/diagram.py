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
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from archlang.ir.graph import Graph
from archlang.perf import gc_paused
from archlang.render.dot import Costs, GraphInfo, Scene, human
from archlang.render.tree import Group, build_tree, max_level

INSTALL_HINT = ("`dot` (Graphviz) not found: install it with `apt-get install graphviz` (Debian/Ubuntu) "
                "or `brew install graphviz` (macOS)")
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
HEIGHT_BUDGET = 12  # the default depth is the deepest whose longest path has at most this many nodes
COST_METRICS = ("flops", "memory", "params")


MAX_DRAWN_NODES = 1500  # dot lays out 1,500 nodes in 2-4 s, 3,000 in ~12 s, 4,500 in a minute; 20,000 crash it
DOT_TIMEOUT_S = 120.0


class RenderError(Exception):
    """A drawing that cannot be made; its parts are a diagnostic's: ``code``, ``message``, ``help``.

    ``E0704``: more than ``max_nodes`` nodes to draw (the help names a depth that fits);
    ``E0705``: Graphviz's ``dot`` failed, crashed or ran over :data:`DOT_TIMEOUT_S`;
    ``E0706``: the output file cannot be written (a missing folder, a folder, no permission).
    """

    def __init__(self, code: str, message: str, help: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.help = code, message, help

    def __str__(self) -> str:
        return f"{self.message} ({self.help})" if self.help else self.message


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
    fewer = "draw fewer nodes (`--depth N` with a smaller N), or write .dot and lay it out yourself"
    try:
        proc = subprocess.run(args, input=dot.encode(), capture_output=True, check=False, timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RenderError("E0705", f"Graphviz `dot` ran for more than {DOT_TIMEOUT_S:g} s", help=fewer) from None
    except OSError as e:
        raise RenderError("E0705", f"cannot run Graphviz `dot` ({exe}): {e.strerror or e}",
                          help="check the Graphviz installation; " + INSTALL_HINT.split(": ", 1)[1]) from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        if proc.returncode < 0:
            try:
                how = f"crashed ({signal.Signals(-proc.returncode).name})"
            except ValueError:
                how = f"crashed (signal {-proc.returncode})"
        else:
            how = f"failed (exit code {proc.returncode})"
        detail = f": {lines[-1].strip()[:300]}" if lines else ""
        raise RenderError("E0705", f"Graphviz `dot` {how} while drawing {fmt.upper()}{detail}", help=fewer)
    return proc.stdout


def _check_target(path: Path) -> None:
    """A RenderError unless ``path`` can be a file: its folder exists and it is not itself a folder."""
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise RenderError("E0706", f"cannot write {path}: the folder {parent} {what}",
                          help="create the folder first, or give a path in an existing folder")
    if path.is_dir():
        raise RenderError("E0706", f"cannot write {path}: it is a folder", help=f"give a file such as {path / 'model.svg'}")


def _write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``; a missing folder or a path that is not writable is a RenderError."""
    _check_target(path)
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    except OSError as e:
        raise RenderError("E0706", f"cannot write {path}: {e.strerror or e}",
                          help="check the permissions, or give another path") from None


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
        ``.dot`` and a :class:`DotNotFoundWarning` says how to install Graphviz. Raises
        :class:`RenderError` when ``dot`` fails or the file cannot be written (its folder must exist).
        """
        path = Path(path)
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the format of {path}: use .svg, .png, .pdf or .dot")
        if fmt == "dot":
            _write(path, self.dot)
            return path
        if not dot_available():
            out = path.with_suffix(".dot")
            _write(out, self.dot)
            warnings.warn(f"{INSTALL_HINT}; wrote {out} instead of {path}", DotNotFoundWarning, stacklevel=2)
            return out
        _check_target(path)  # before dot runs
        _write(path, run_dot(self.dot, fmt, dpi))
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


def default_depth(g: Graph, *, collapse: bool = True, dropout: bool = False, tree: Group | None = None,
                  info: GraphInfo | None = None, max_nodes: int | None = MAX_DRAWN_NODES) -> int:
    """The deepest level whose drawing is at most :data:`HEIGHT_BUDGET` nodes tall (at least 1)
    and has at most ``max_nodes`` nodes.

    The height is the number of nodes on the longest path, so the default drawing fits one
    screen: Swin-T, ViT-B/16 and MLP-Mixer get 1 (stem, stages or the ×N block stack, head);
    the Transformer 2 (encoder and decoder open, their ×6 layers closed).
    """
    tree = build_tree(g) if tree is None else tree
    info = GraphInfo(g) if info is None else info
    deepest = max(1, max_level(tree))
    best = 1
    for d in range(1, deepest + 1):
        scene = Scene(g, tree, d, collapse=collapse, dropout=dropout, info=info)
        if max_nodes is not None and len(scene.nodes) > max_nodes:
            break  # opening more levels only adds nodes
        if scene.longest_path() <= HEIGHT_BUDGET:
            best = d
    return best


def render_graph(g: Graph, depth: int | None = None, *, cost: bool | str = False, collapse: bool = True,
                 dropout: bool = False, max_nodes: int | None = MAX_DRAWN_NODES) -> Diagram:
    """Draw ``g``; see :mod:`archlang.render` for what each option does.

    A drawing of more than ``max_nodes`` nodes (``None``: no limit) raises :class:`RenderError`
    (``E0704``), whose help names the deepest depth that fits: Graphviz takes minutes over a
    few thousand nodes and crashes on tens of thousands. Time and memory are linear in the
    size of ``g`` (100k nodes: ~10 s at the default depth on a 2-core machine).
    """
    with gc_paused():
        return _render(g, depth, cost=cost, collapse=collapse, dropout=dropout, max_nodes=max_nodes)


def _render(g: Graph, depth: int | None, *, cost: bool | str, collapse: bool, dropout: bool,
            max_nodes: int | None) -> Diagram:
    tree = build_tree(g)
    info = GraphInfo(g)
    deepest = max(1, max_level(tree))
    if depth is None:
        depth = default_depth(g, collapse=collapse, dropout=dropout, tree=tree, info=info, max_nodes=max_nodes)
    if depth < 1:
        raise ValueError(f"depth is at least 1, not {depth}")
    depth = min(depth, deepest)
    scene = Scene(g, tree, depth, collapse=collapse, dropout=dropout, max_depth=deepest, info=info)
    if max_nodes is not None and len(scene.nodes) > max_nodes:
        raise _too_many(g, tree, info, scene, collapse, dropout, max_nodes)
    if cost:
        scene.costs = graph_costs(g, "flops" if cost is True else str(cost))
    return Diagram(scene.to_dot(), g.arch, depth, deepest, len(scene.nodes), len(scene.clusters))


def _too_many(g: Graph, tree: Group, info: GraphInfo, scene: Scene, collapse: bool, dropout: bool,
              max_nodes: int) -> RenderError:
    n, depth = len(scene.nodes), scene.depth
    msg = (f"the diagram of `{g.arch}` at depth {depth} has {n:,} nodes, more than the {max_nodes:,} "
           f"that can be drawn")
    for d in range(depth - 1, 0, -1):
        m = len(Scene(g, tree, d, collapse=collapse, dropout=dropout, info=info).nodes)
        if m <= max_nodes:
            return RenderError("E0704", msg, help=f"use --depth {d} to draw fewer levels ({m:,} nodes)")
    if not collapse:
        return RenderError("E0704", msg, help="leave out --no-collapse, so that identical repeated blocks are drawn once")
    if dropout:
        return RenderError("E0704", msg, help="leave out --dropout")
    return RenderError("E0704", msg, help="even depth 1 is too large: label repeated layers as a list "
                                          "(`blocks[i]: ...` in a `for` loop) so that they collapse into one ×N box")
