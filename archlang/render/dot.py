"""DOT emission: the tree of :mod:`archlang.render.tree` at one depth, as Graphviz text.

Takes: a checked IR :class:`~archlang.ir.Graph`, its tree, a depth and drawing options
(collapse repeats, show dropout, colour by cost). Produces: deterministic DOT source: ids
are node names and group paths, statements come in graph order, numbers are formatted with
fixed precision, and nothing depends on memory addresses, hashing or the clock, so the same
spec always gives the same text, diffable line by line.

What is drawn:

- op nodes, labelled by their drawing rule (:data:`archlang.render.rules.DRAW_RULES`) and
  styled by its kind (:data:`KIND_STYLE`): inputs and outputs are ellipses (green, red),
  residual adds are small ``+`` circles, weight layers blue, norms yellow, attention orange;
- clusters for open groups (stages, block instances, nested blocks), boxes for closed ones,
  stacked boxes (``box3d``) with a ``×N`` badge for collapsed repeats;
- edges labelled with the tensor's shape (``[B, 56, 56, 96]``: free sizes stay symbolic);
  edges from inputs and into outputs are not, as those nodes show their type. Residual skip
  edges (the operand of an add that is also an ancestor of its other operand) are grey and
  unlabelled; cross-attention edges (keys and values from a context, such as the encoder
  memory) are blue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from html import escape
from typing import Any

from archlang.ir import ops as O
from archlang.ir.dims import fmt_shape
from archlang.ir.graph import Graph
from archlang.ir.types import TensorType
from archlang.render.rules import look
from archlang.render.tree import RATE_ARGS, Group, Item, Repeat, list_index, varying_args
from archlang.units import human_count

FONT = "Helvetica,Arial,sans-serif"
BADGE = "#b45309"
MUTED = "#555555"

KIND_STYLE: dict[str, dict[str, str]] = {
    "input": {"shape": "ellipse", "style": "filled", "fillcolor": "#d5e8d4", "color": "#5d8f4e"},
    "output": {"shape": "ellipse", "style": "filled", "fillcolor": "#f8cecc", "color": "#b85450"},
    "linear": {"fillcolor": "#dae8fc", "color": "#6c8ebf"},
    "norm": {"fillcolor": "#fff2cc", "color": "#c9a93a"},
    "attention": {"fillcolor": "#ffe6cc", "color": "#d79b00"},
    "activation": {"fillcolor": "#e2f0d9", "color": "#82b366"},
    "position": {"fillcolor": "#e1d5e7", "color": "#9673a6"},
    "reshape": {"fillcolor": "#f5f5f5", "color": "#999999"},
    "elementwise": {"fillcolor": "#f5f5f5", "color": "#999999"},
    "regulariser": {"style": "rounded,filled,dashed", "fillcolor": "#ffffff", "color": "#aaaaaa"},
    "junction": {"shape": "circle", "fixedsize": "true", "width": "0.32", "fontsize": "14",
                 "fillcolor": "#ffffff", "color": "#666666", "margin": "0"},
    "block": {"style": "rounded,filled,bold", "fillcolor": "#f3f3f3", "color": "#666666"},
    "container": {"style": "rounded,filled,bold", "fillcolor": "#ebebeb", "color": "#666666"},
    "repeat": {"shape": "box3d", "style": "filled", "fillcolor": "#f3f3f3", "color": "#666666"},
}
CLUSTER_FILL = ("#fafafa", "#f0f0f0")
EDGE_STYLE: dict[str, dict[str, str]] = {
    "data": {"weight": "4"},
    "residual": {"color": "#999999", "weight": "0", "arrowsize": "0.5"},
    "cross": {"color": "#2f6db5", "fontcolor": "#2f6db5", "penwidth": "1.4", "weight": "0"},
}
HEAT = ("#fff7ec", "#fee8c8", "#fdd49e", "#fdbb84", "#fc8d59", "#ef6548", "#d7301f", "#b30000")


@dataclass
class DrawNode:
    id: str
    label: str  # the body of an HTML-like label
    attrs: dict[str, str]
    kind: str


@dataclass
class Cluster:
    id: str
    label: str
    body: list[DrawNode | Cluster] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # the IR nodes it stands for (cost)
    level: int = 1


@dataclass
class Edge:
    tail: str
    head: str
    kinds: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        for k in ("data", "cross", "residual"):
            if k in self.kinds:
                return k
        return "data"


@dataclass
class Costs:
    """Per IR node figures for ``--cost``: params always, ``metric`` for the colours."""

    params: dict[str, int]
    values: dict[str, int]
    metric: str  # "FLOPs", "activation memory" or "params"
    total_text: str
    note: str = ""


def human(n: float) -> str:
    return human_count(n, sep="")  # e.g. 28.29M


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def _fmt_series(vals: list[Any]) -> str:
    """``[0, 3, 0, 3]`` -> ``0, 3 alternating``; short lists in full; long ones elided."""
    n = len(vals)
    for q in range(1, n // 2 + 1):
        if n % q == 0 and all(vals[i] == vals[i % q] for i in range(n)):
            head = ", ".join(_fmt_value(v) for v in vals[:q])
            return f"{head} alternating" if q == 2 else f"{head} repeating"
    if n <= 4:
        return ", ".join(_fmt_value(v) for v in vals)
    return ", ".join(_fmt_value(v) for v in vals[:3]) + ", …, " + _fmt_value(vals[-1])


def _wrap(parts: list[str], width: int = 34) -> list[str]:
    lines: list[str] = []
    for p in parts:
        if lines and len(lines[-1]) + 2 + len(p) <= width:
            lines[-1] += ", " + p
        else:
            lines.append(p)
    return lines


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _html(title: str, lines: list[str] | None = None, badge: str = "", sub: str = "", inline: bool = False) -> str:
    """An HTML-like label: a bold title, a ``×N`` badge, a grey subtitle, small detail lines."""
    out = f"<b>{escape(title)}</b>" if title else ""
    if badge:
        out += f' <font color="{BADGE}"><b>{escape(badge)}</b></font>'
    if sub:
        sep = "  " if inline else "<br/>"
        out += f'{sep}<font point-size="9" color="{MUTED}">{escape(sub)}</font>'
    for ln in lines or ():
        out += f'<br/><font point-size="9">{escape(ln)}</font>'
    return out


def _type_text(t: TensorType) -> str:
    return fmt_shape(t.shape) if t.dtype == "float" else f"{t.dtype}{fmt_shape(t.shape)}"


def residual_inputs(g: Graph) -> set[tuple[str, int]]:
    """(add node, input slot) of every residual skip: the operand of an add that is also an
    ancestor of the other operand."""
    index = {n.name: i for i, n in enumerate(g.nodes)}

    def ancestor(anc: str, node: str) -> bool:
        if anc == node:
            return False
        stack, seen = [node], set()
        while stack:
            x = stack.pop()
            if x == anc:
                return True
            if x in seen or index[x] < index[anc]:
                continue
            seen.add(x)
            stack.extend(r.node for r in g.by_name[x].inputs)
        return False

    out: set[tuple[str, int]] = set()
    for n in g.nodes:
        if isinstance(n.op, O.Binary) and n.op.fn == "add" and len(n.inputs) == 2:
            a, b = n.inputs[0].node, n.inputs[1].node
            if ancestor(a, b):
                out.add((n.name, 0))
            elif ancestor(b, a):
                out.add((n.name, 1))
    return out


class GraphInfo:
    """What every drawing of one graph shares, computed once: each node's :class:`Look`, the
    residual skips and the edge label of each tensor (``default_depth`` builds a scene per level)."""

    def __init__(self, g: Graph) -> None:
        self.looks = {n.name: look(n.op, [g.type_of(r) for r in n.inputs], n.outputs) for n in g.nodes}
        for n in g.nodes:  # a shared layer (`y = pe1(z)`) says whose weights it runs with
            if n.shares:
                lk = self.looks[n.name]
                self.looks[n.name] = replace(lk, detail=(*lk.detail, f"weights of {n.shares}"))
        self.residual = residual_inputs(g)
        self._types: dict[tuple[str, int], str] = {}
        self._by_type: dict[TensorType, str] = {}
        self.g = g

    def type_text(self, node: str, index: int) -> str:
        key = (node, index)
        text = self._types.get(key)
        if text is None:
            t = self.g.by_name[node].outputs[index]
            text = self._by_type.get(t)
            if text is None:
                text = self._by_type[t] = _type_text(t)
            self._types[key] = text
        return text


class Scene:
    """The drawn items of one graph at one depth; :meth:`to_dot` writes them."""

    def __init__(self, g: Graph, root: Group, depth: int, *, collapse: bool = True, dropout: bool = False,
                 costs: Costs | None = None, max_depth: int | None = None, info: GraphInfo | None = None) -> None:
        self.g, self.depth, self.collapse, self.dropout, self.costs = g, depth, collapse, dropout, costs
        self.max_depth = max_depth
        self.body: list[DrawNode | Cluster] = []
        self.drawn: dict[str, str] = {}  # IR node -> drawn node id
        self.alias: dict[str, str] = {}  # IR node of an undrawn repeat instance -> its drawn counterpart
        self.member_of: dict[str, list[tuple[int, int, int]]] = {}  # IR node -> (repeat, instance, period)
        self.nodes: dict[str, DrawNode] = {}
        self.clusters: list[Cluster] = []
        self._repeats = 0
        self.vnames = root.vnames or {n.name: n.name for n in g.nodes}
        self.by_vname = {v: k for k, v in self.vnames.items()}
        self.info = info if info is not None else GraphInfo(g)
        self._looks = self.info.looks
        self._walk(root.items, 1, self.body)
        self.edges = self._edges()

    # -- items
    def _walk(self, items: list[Item], level: int, body: list[DrawNode | Cluster]) -> None:
        for it in items:
            if isinstance(it, str):
                self._op(it, body)
            elif isinstance(it, Group):
                self._group(it, level, body)
            else:
                self._repeat(it, level, body)

    def _box_id(self, path: str) -> str:
        return path if path not in self.g.by_name else path + "/"

    def _add_node(self, node: DrawNode, body: list[DrawNode | Cluster]) -> None:
        self.nodes[node.id] = node
        body.append(node)

    def _op(self, name: str, body: list[DrawNode | Cluster]) -> None:
        lk = self._looks[name]
        if lk.elide and not self.dropout:
            return
        style = dict(KIND_STYLE.get(lk.kind, {}))
        label = escape(lk.title) if lk.kind == "junction" else _html(lk.title, list(lk.detail))
        self._add_node(DrawNode(name, label, {**style, "tooltip": name}, lk.kind), body)
        self.drawn[name] = name

    def _group(self, grp: Group, level: int, body: list[DrawNode | Cluster], rep: Repeat | None = None) -> None:
        if level < self.depth:
            sub = grp.unit if grp.block and grp.block != grp.unit else ""
            if rep is not None:
                title = grp.block or (list_index(grp.unit) or (grp.unit, 0))[0]
                label = _html(title, badge=f"×{rep.count}", sub=rep.unit, inline=True)
                cl = Cluster("cluster_" + grp.path, label, nodes=rep.nodes, level=level)
            else:
                label = _html(grp.block or grp.unit, sub=sub, inline=True)
                cl = Cluster("cluster_" + grp.path, label, nodes=grp.nodes, level=level)
            body.append(cl)
            self.clusters.append(cl)
            self._walk(grp.items, level + 1, cl.body)
            return
        box = self._box_id(grp.path)
        if grp.scope is not None:
            sub = grp.unit if grp.unit != grp.scope.block else ""
            label = _html(grp.scope.block, _wrap(self._args(grp)), sub=sub)
            kind = "block"
        else:
            label = _html(grp.unit, [self._summary(grp.items)])
            kind = "container"
        self._add_node(DrawNode(box, label, {**KIND_STYLE[kind], "tooltip": grp.path}, kind), body)
        for n in grp.nodes:
            self.drawn[n] = box

    def _repeat(self, rep: Repeat, level: int, body: list[DrawNode | Cluster]) -> None:
        if not self.collapse:
            for m in rep.members:
                self._group(m, level, body)
            return
        if level >= self.depth:
            box = self._box_id(rep.path)
            title = rep.block or (list_index(rep.members[0].unit) or ("", 0))[0]
            if rep.block is None:
                lines = [self._summary(rep.members[0].items)]
            else:  # arguments that differ while the ops do not (a shift clamped to 0) are not listed
                lines = _wrap(self._args(rep.members[0], varying_args(rep) if rep.period > 1 else {}))
            label = _html(title, lines, badge=f"×{rep.count}", sub=rep.unit)
            self._add_node(DrawNode(box, label, {**KIND_STYLE["repeat"], "tooltip": rep.path}, "repeat"), body)
            for n in rep.nodes:
                self.drawn[n] = box
            return
        p = rep.period
        if p == rep.count:
            for m in rep.members:
                self._group(m, level, body)
            return
        rid = self._repeats
        self._repeats += 1
        for k, m in enumerate(rep.members):
            cut = len(m.path) + 1
            target = rep.members[k % p].path
            for n in m.nodes:
                self.member_of.setdefault(n, []).append((rid, k, p))
                if k >= p:
                    self.alias[n] = self.by_vname[f"{target}.{self.vnames[n][cut:]}"]
        if p == 1:
            self._group(rep.members[0], level, body, rep=rep)
            return
        what = rep.block or "instances"
        groups = "pairs" if p == 2 else f"groups of {p}"
        label = _html("", badge=f"×{rep.count // p}", sub=f"{rep.unit}: {rep.count} {what} in {groups}", inline=True)
        cl = Cluster("cluster_" + rep.path, label, nodes=rep.nodes, level=level)
        body.append(cl)
        self.clusters.append(cl)
        for m in rep.members[:p]:
            self._group(m, level, cl.body)

    def _args(self, grp: Group, varying: dict[str, list[Any]] | None = None) -> list[str]:
        varying = varying or {}
        out = []
        assert grp.scope is not None
        for a in grp.scope.args:
            if a.name in varying:
                out.append(f"{a.name} {_fmt_series(varying[a.name])}")
                continue
            if a.name in RATE_ARGS or a.name == "eps" or a.name.endswith("bias"):
                continue
            if isinstance(a.value, bool):
                if a.value:
                    out.append(a.name)
                continue
            out.append(f"{a.name} {_fmt_value(a.value)}")
        return out

    def _summary(self, items: list[Item]) -> str:
        parts: list[str] = []
        for it in items:
            if isinstance(it, Repeat):
                parts.append(f"{it.block or it.unit} ×{it.count}")
            elif isinstance(it, Group):
                parts.append(it.block or it.unit)
            else:
                lk = self._looks[it]
                if not (lk.elide and not self.dropout):
                    parts.append(lk.title)
        if len(parts) > 4:
            parts = [*parts[:2], "…", parts[-1]]
        return " → ".join(parts)

    # -- edges
    def _resolve(self, name: str) -> str | None:
        while name in self.alias:
            name = self.alias[name]
        return self.drawn.get(name)

    def source(self, name: str) -> str | None:
        """The drawn node that shows ``name``'s value (through elided dropout and drop-path)."""
        while True:
            d = self._resolve(name)
            if d is not None:
                return d
            n = self.g.by_name[name]
            if not n.inputs:
                return None
            name = n.inputs[0].node

    def _dropped(self, src: str, dst: str) -> bool:
        """An edge between two instances of an open repeat that are not both drawn."""
        for rid, i, p in self.member_of.get(src, ()):
            for rid2, j, _ in self.member_of.get(dst, ()):
                if rid == rid2 and i != j and not (i < p and j < p):
                    return True
        return False

    def _edges(self) -> list[Edge]:
        residual = self.info.residual
        edges: dict[tuple[str, str], Edge] = {}
        labelled: set[tuple[str, str]] = set()
        for n in self.g.nodes:
            head = self._resolve(n.name)
            if head is None:
                continue
            for slot, r in enumerate(n.inputs):
                if self._dropped(r.node, n.name):
                    continue
                tail = self.source(r.node)
                if tail is None or tail == head:
                    continue
                e = edges.setdefault((tail, head), Edge(tail, head))
                if (n.name, slot) in residual:
                    kind = "residual"
                elif isinstance(n.op, O.CrossAttention) and slot == 1:
                    kind = "cross"
                else:
                    kind = "data"
                e.kinds.append(kind)
                io = self.nodes[tail].kind == "input" or self.nodes[head].kind == "output"
                text = self.info.type_text(r.node, r.index)
                src = self.g.by_name[r.node]
                if kind == "cross" and r.index < len(src.vars) and src.vars[r.index]:
                    text = f"{src.vars[r.index]} {text}"
                if kind != "residual" and not io and text not in e.labels and (tail, text) not in labelled:
                    e.labels.append(text)
                    labelled.add((tail, text))  # a tensor read in several places is labelled once
        return list(edges.values())

    def longest_path(self) -> int:
        """Nodes on the longest top-to-bottom path of the drawing (its height in ranks)."""
        succ: dict[str, list[str]] = {nid: [] for nid in self.nodes}
        indeg = dict.fromkeys(self.nodes, 0)
        for e in self.edges:
            succ[e.tail].append(e.head)
            indeg[e.head] += 1
        order = [nid for nid, d in indeg.items() if d == 0]
        height = dict.fromkeys(self.nodes, 1)
        i = 0
        while i < len(order):
            nid = order[i]
            i += 1
            for h in succ[nid]:
                height[h] = max(height[h], height[nid] + 1)
                indeg[h] -= 1
                if indeg[h] == 0:
                    order.append(h)
        return max(height.values(), default=0)

    # -- cost
    def _cost_maps(self) -> tuple[dict[str, int], dict[str, int]]:
        assert self.costs is not None
        params: dict[str, int] = {}
        values: dict[str, int] = {}
        for n in self.g.nodes:
            d = self.source(n.name)
            if d is None:
                continue
            params[d] = params.get(d, 0) + self.costs.params.get(n.name, 0)
            values[d] = values.get(d, 0) + self.costs.values.get(n.name, 0)
        return params, values

    def _cost_line(self, params: int, value: int, total: int) -> str:
        assert self.costs is not None
        pct = 100.0 * value / total if total else 0.0
        share = "<0.1%" if 0 < pct < 0.1 else f"{pct:.1f}%"
        parts = [f"{human(params)} params"] if params else []
        parts.append(share if self.costs.metric == "params" else f"{share} {self.costs.metric}")
        return " · ".join(parts)

    # -- output
    def to_dot(self) -> str:
        g = self.g
        title = f"<b>{escape(g.arch)}</b>   {human(g.param_count())} params"
        if self.max_depth is not None:
            title += f'   <font color="{MUTED}">depth {self.depth} of {self.max_depth}</font>'
        heat: dict[str, tuple[str, str]] = {}
        extra: dict[str, str] = {}
        if self.costs is not None:
            params, values = self._cost_maps()
            total = sum(self.costs.values.values())
            top = max(values.values(), default=0)
            for nid, node in self.nodes.items():
                v = values.get(nid, 0)
                if node.kind in ("input", "output"):
                    continue
                level = 0 if not top or v <= 0 else 1 + min(len(HEAT) - 2, int(math.sqrt(v / top) * (len(HEAT) - 1)))
                heat[nid] = (HEAT[level], "#ffffff" if level >= len(HEAT) - 2 else "#000000")
                if node.kind != "junction":
                    extra[nid] = self._cost_line(params.get(nid, 0), v, total)
            title += (f'<br align="left"/><font point-size="10">colour: share of {escape(self.costs.metric)}'
                      f' ({escape(self.costs.total_text)}); figures are totals over ×N repeats'
                      f'{escape(self.costs.note)}</font><br align="left"/>')
        lines = [
            f"digraph {_quote(g.arch)} {{",
            f'  graph [rankdir=TB, newrank=true, nodesep=0.25, ranksep=0.22, fontname="{FONT}", fontsize=12, '
            f'labelloc=t, labeljust=l, pad=0.2, bgcolor="#ffffff", label=<{title}>];',
            f'  node [shape=box, style="rounded,filled", fontname="{FONT}", fontsize=11, height=0.3, '
            f'margin="0.12,0.04", fillcolor="#ffffff", color="#666666"];',
            f'  edge [fontname="{FONT}", fontsize=9, fontcolor="{MUTED}", color="#555555", arrowsize=0.6];',
        ]

        def node_line(node: DrawNode, indent: str) -> str:
            attrs = dict(node.attrs)
            label = node.label
            if node.id in heat:
                attrs["fillcolor"], attrs["fontcolor"] = heat[node.id]
            if node.id in extra:
                label += f'<br/><font point-size="9">{escape(extra[node.id])}</font>'
            body = ", ".join([f"label=<{label}>", *(f"{k}={_quote(v)}" for k, v in attrs.items())])
            return f"{indent}{_quote(node.id)} [{body}];"

        # every edge is written inside the innermost cluster holding both its ends
        chain: dict[str, tuple[str, ...]] = {}

        def locate(items: list[DrawNode | Cluster], path: tuple[str, ...]) -> None:
            for it in items:
                if isinstance(it, DrawNode):
                    chain[it.id] = path
                else:
                    locate(it.body, (*path, it.id))

        locate(self.body, ())
        edges_in: dict[tuple[str, ...], list[Edge]] = {}
        for e in self.edges:
            a, b = chain[e.tail], chain[e.head]
            k = 0
            while k < min(len(a), len(b)) and a[k] == b[k]:
                k += 1
            edges_in.setdefault(a[:k], []).append(e)

        def edge_lines(path: tuple[str, ...], indent: str) -> None:
            for e in edges_in.get(path, ()):
                attrs = dict(EDGE_STYLE[e.kind])
                if e.labels and e.kind != "residual":
                    attrs = {"label": "\n".join(e.labels), **attrs}
                body = ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items())
                lines.append(f"{indent}{_quote(e.tail)} -> {_quote(e.head)} [{body}];")

        def emit(items: list[DrawNode | Cluster], indent: str, path: tuple[str, ...]) -> None:
            for it in items:
                if isinstance(it, DrawNode):
                    lines.append(node_line(it, indent))
                    continue
                label = it.label
                if self.costs is not None:
                    total = sum(self.costs.values.values())
                    p = sum(self.costs.params.get(n, 0) for n in it.nodes)
                    v = sum(self.costs.values.get(n, 0) for n in it.nodes)
                    label += f'<br/><font point-size="9">{escape(self._cost_line(p, v, total))}</font>'
                fill = CLUSTER_FILL[(it.level - 1) % len(CLUSTER_FILL)]
                lines.append(f"{indent}subgraph {_quote(it.id)} {{")
                lines.append(f'{indent}  graph [label=<{label}>, style="rounded,filled", fillcolor="{fill}", '
                             f'color="#b0b0b0", fontsize=11, margin=10];')
                emit(it.body, indent + "  ", (*path, it.id))
                edge_lines((*path, it.id), indent + "  ")
                lines.append(f"{indent}}}")

        emit(self.body, "  ", ())
        edge_lines((), "  ")
        lines.append("}")
        return "\n".join(lines) + "\n"
