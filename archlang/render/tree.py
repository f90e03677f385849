"""The diagram's hierarchy: groups from dotted node names and block scopes, and repeats.

Takes: a checked IR :class:`~archlang.ir.Graph`. Produces: a tree whose items are node
names, :class:`Group` (a block instance, or a container such as a stage ``layers.1``) and
:class:`Repeat` (consecutive instances that are drawn once with a ``×N`` badge), with the
levels that ``--depth`` counts.

Hierarchy. A node name splits at dots into units, a list index staying with the unit before
it: ``layers.1.blocks.0.mlp.fc1`` is ``layers.1`` / ``blocks.0`` / ``mlp`` / ``fc1``. Every
proper prefix is a group: a block instance when ``Graph.scopes`` has that path, else a plain
container. Unlabelled ops are named where they are written, so ``stages[i].b: linear(gelu(x))``
puts ``gelu_1`` at the top level: a run of such ops whose inputs and readers all lie in one
group is moved into that group (so a closed box never feeds itself). A container holding a
single item is replaced by that item (``head.fc`` is drawn as its op, not as a ``head`` box
holding one op). An item's *level* is its depth in this
tree: for Swin-T, level 1 is the input, the patch embedding, the four stages ``layers.0..3``,
the final norm, the pooling, the head and the output; level 2 the patch merging and the
blocks of each stage; level 3 the ops of a block; level 4 the ops of its MLP. At depth ``d``
the groups of level ``< d`` are drawn open (clusters) and those of level ``d`` as boxes.

Collapse rule. Consecutive items ``xs.i, xs.i+1, ...`` of one list in one group form a run
(a :class:`Repeat`) when

1. they instantiate the same block (or are all plain containers);
2. they chain: each reads the one before it, nothing but the next one reads an earlier one,
   and any other tensor they read comes from the same place for all of them (every decoder
   layer reads the encoder output ``encoder.norm``);
3. they have the same structure: the same ops wired the same way with the same tensor and
   weight shapes. Block instances may differ in the values of their arguments (Swin's
   ``shift`` alternates 0, 3), containers must be identical. Dropout and drop-path rates
   never count: they only regularise training, and stochastic depth gives every block its own.

Drawn as a box, a run is one box ``swin_block ×6`` whose label lists every argument that
differs between instances ("shift 0, 3 alternating"), so nothing differs silently; when the
instances' ops are identical all the same (Swin-T's last stage: on a 7×7 grid the window
covers the grid and the shift of 3 is clamped to 0), the nominal difference is left out. Drawn
open (at a deeper depth), a run shows its first instance with the badge when all instances
are identical (ViT: ``transformer_block ×12``); when they repeat with a period ``p`` and
there are at least two periods, the first ``p`` instances are drawn inside a cluster badged
``×N/p`` (Swin-T stage 3: ``blocks.0`` W-MSA and ``blocks.1`` SW-MSA, ``×3``, as the paper
draws two successive blocks); otherwise every instance is drawn (Swin-T stage 1: its two
blocks differ in shift). ``collapse=False`` draws every instance everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from archlang.ir import ops as O
from archlang.ir.graph import Graph, Scope, name_levels
from archlang.ir.types import TensorType

RATE_FIELDS = frozenset({"p", "attn_drop", "proj_drop"})  # op fields that only regularise training
RATE_ARGS = frozenset({"dpr", "drop", "drop_path", "drop_rate", "drop_path_rate", "attn_drop", "proj_drop", "p"})


units = name_levels  # ``layers.1.blocks.0.attn`` -> ``["layers.1", "blocks.0", "attn"]``


def list_index(unit: str) -> tuple[str, int] | None:
    """``blocks.3`` -> ``("blocks", 3)``; ``mlp`` -> ``None``."""
    base, _, idx = unit.rpartition(".")
    return (base, int(idx)) if base and idx.isdigit() else None


@dataclass(eq=False)
class Group:
    """A block instance (``scope`` set) or a plain container of items."""

    path: str
    unit: str
    scope: Scope | None
    items: list[Item] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # every node under it, in graph order
    vnames: dict[str, str] = field(default_factory=dict)  # the root's: node -> its name in the tree

    @property
    def block(self) -> str | None:
        return self.scope.block if self.scope is not None else None


@dataclass(eq=False)
class Repeat:
    """Consecutive list items drawn once; see the module docstring for the rule."""

    members: list[Group]
    period: int  # how many instances an open drawing shows: 1 (identical), p (periodic), or all

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def block(self) -> str | None:
        return self.members[0].block

    @property
    def path(self) -> str:
        return f"{self.members[0].path}-{self.last_index}"

    @property
    def last_index(self) -> int:
        li = list_index(self.members[-1].unit)
        assert li is not None
        return li[1]

    @property
    def unit(self) -> str:
        """``blocks.0–5``."""
        return f"{self.members[0].unit}–{self.last_index}"

    @property
    def nodes(self) -> list[str]:
        return [n for m in self.members for n in m.nodes]


Item = Group | Repeat | str


def build_tree(g: Graph) -> Group:
    """The root group of ``g`` with its repeats found; see the module docstring."""
    scopes = {s.path: s for s in g.scopes}
    root = Group("", "", None)
    groups: dict[str, Group] = {"": root}
    for n in g.nodes:
        parent, path = root, ""
        for u in units(n.name)[:-1]:
            path = f"{path}.{u}" if path else u
            grp = groups.get(path)
            if grp is None:
                grp = groups[path] = Group(path, u, scopes.get(path))
                parent.items.append(grp)
            parent = grp
        parent.items.append(n.name)
    _fill_nodes(root)
    consumers: dict[str, list[str]] = {n.name: [] for n in g.nodes}
    for n in g.nodes:
        for r in n.inputs:
            consumers[r.node].append(n.name)
    _adopt(root, g, consumers, {n.name: i for i, n in enumerate(g.nodes)})
    _inline(root)
    root.vnames = _vnames(root)
    _Runs(g, root.vnames).find(root)
    return root


def _adopt(grp: Group, g: Graph, consumers: dict[str, list[str]], index: dict[str, int]) -> None:
    """Move runs of ``grp``'s own ops whose inputs and readers all lie in one child group into it."""
    children = [it for it in grp.items if isinstance(it, Group)]
    owner = {n: c for c in children for n in c.nodes}
    leaves = [it for it in grp.items if isinstance(it, str)]
    leafset = set(leaves)
    parent = {n: n for n in leaves}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in leaves:
        for r in g.by_name[n].inputs:
            if r.node in leafset:
                parent[find(n)] = find(r.node)
    comps: dict[str, list[str]] = {}
    for n in leaves:
        comps.setdefault(find(n), []).append(n)
    for comp in comps.values():
        members = set(comp)
        ins = {r.node for n in comp for r in g.by_name[n].inputs if r.node not in members}
        outs = {c for n in comp for c in consumers[n] if c not in members}
        owners = {id(owner[x]) if x in owner else None for x in ins | outs}
        if not ins or not outs or len(owners) != 1 or None in owners:
            continue
        child = owner[next(iter(ins))]
        grp.items = [it for it in grp.items if not (isinstance(it, str) and it in members)]
        child.items = sorted([*child.items, *comp], key=lambda it: index[it if isinstance(it, str) else it.nodes[0]])
        child.nodes = sorted([*child.nodes, *comp], key=index.__getitem__)
    for it in grp.items:
        if isinstance(it, Group):
            _adopt(it, g, consumers, index)


def _vnames(root: Group) -> dict[str, str]:
    """Each node's name in the tree: its own, or ``<group>.~k`` for an op adopted by a group."""
    out: dict[str, str] = {}

    def walk(grp: Group) -> None:
        k = 0
        for it in grp.items:
            if isinstance(it, Group):
                walk(it)
            elif not grp.path or it.startswith(grp.path + "."):
                out[it] = it
            else:
                out[it] = f"{grp.path}.~{k}"
                k += 1
    walk(root)
    return out


def _fill_nodes(grp: Group) -> list[str]:
    for it in grp.items:
        if isinstance(it, Group):
            grp.nodes.extend(_fill_nodes(it))
        else:
            assert isinstance(it, str)
            grp.nodes.append(it)
    return grp.nodes


def _inline(grp: Group) -> None:
    for i, it in enumerate(grp.items):
        if isinstance(it, Group):
            _inline(it)
            if it.scope is None and len(it.items) == 1:
                grp.items[i] = it.items[0]


def max_level(grp: Group, level: int = 0) -> int:
    """The deepest level under ``grp`` (its items are at ``level + 1``)."""
    deepest = level
    for it in grp.items:
        if isinstance(it, Group):
            deepest = max(deepest, max_level(it, level + 1))
        elif isinstance(it, Repeat):
            deepest = max(deepest, *(max_level(m, level + 1) for m in it.members))
        else:
            deepest = max(deepest, level + 1)
    return deepest


def _op_key(op: O.OpBase, strict: bool) -> str:
    if not strict:
        return op.op + repr(tuple((p.name, p.shape) for p in op.parameters()))  # type: ignore[attr-defined]
    data = op.model_dump(mode="json")
    return json.dumps({k: v for k, v in data.items() if k not in RATE_FIELDS}, sort_keys=True)


class _Runs:
    """Finds the :class:`Repeat` runs of a tree (the collapse rule of the module docstring)."""

    def __init__(self, g: Graph, vnames: dict[str, str]) -> None:
        self.g = g
        self.vname = vnames
        self.by_vname = {v: k for k, v in vnames.items()}
        self.consumers: dict[str, list[str]] = {n.name: [] for n in g.nodes}
        for n in g.nodes:
            for r in n.inputs:
                self.consumers[r.node].append(n.name)
        self._sigs: dict[tuple[int, bool], tuple[object, ...]] = {}
        self._keys: dict[tuple[str, bool], tuple[str, tuple[str, ...]]] = {}
        self._types: dict[TensorType, str] = {}  # hashing a type is cheaper than printing it
        self._ops: dict[tuple[O.OpBase, bool], str] = {}  # and an op than dumping it

    def find(self, grp: Group) -> None:
        for it in grp.items:
            if isinstance(it, Group):
                self.find(it)
        out: list[Item] = []
        i = 0
        while i < len(grp.items):
            it = grp.items[i]
            if not isinstance(it, Group) or list_index(it.unit) is None:
                out.append(it)
                i += 1
                continue
            run = [it]
            earlier: set[str] = set()  # the nodes of run[:-1]
            j = i + 1
            while j < len(grp.items) and isinstance(grp.items[j], Group) and self._extends(run, grp.items[j], earlier):  # type: ignore[arg-type]
                earlier.update(run[-1].nodes)
                run.append(grp.items[j])  # type: ignore[arg-type]
                j += 1
            out.append(Repeat(run, self._period(run)) if len(run) > 1 else it)
            i = j
        grp.items = out

    def signature(self, grp: Group, strict: bool) -> tuple[object, ...]:
        key = (id(grp), strict)
        if key not in self._sigs:
            cut = len(grp.path) + 1
            inside = set(grp.nodes)
            rows = []
            vn = self.vname
            for name in grp.nodes:
                n = self.g.by_name[name]
                ins = tuple((vn[r.node][cut:], r.index) if r.node in inside else ("^", r.index) for r in n.inputs)
                rows.append((vn[name][cut:], self._node_key(name, strict), ins))
            self._sigs[key] = tuple(rows)
        return self._sigs[key]

    def _node_key(self, name: str, strict: bool) -> tuple[str, tuple[str, ...]]:
        """The op key and output types of one node (a node is in the signature of every group above it)."""
        key = (name, strict)
        out = self._keys.get(key)
        if out is None:
            n = self.g.by_name[name]
            out = self._keys[key] = (self._op_key(n.op, strict), tuple(self._type_str(t) for t in n.outputs))
        return out

    def _op_key(self, op: O.OpBase, strict: bool) -> str:
        try:
            key = (op, strict)
            text = self._ops.get(key)
        except TypeError:  # an op with an unhashable field
            return _op_key(op, strict)
        if text is None:
            text = self._ops[key] = _op_key(op, strict)
        return text

    def _type_str(self, t: TensorType) -> str:
        text = self._types.get(t)
        if text is None:
            text = self._types[t] = str(t)
        return text

    def _external(self, grp: Group, prev: Group | None) -> tuple[tuple[str, int, str, int], ...]:
        """Inputs of ``grp`` from outside it and outside ``prev``: (target, slot, source, index)."""
        inside = set(grp.nodes)
        before = set(prev.nodes) if prev is not None else set()
        cut = len(grp.path) + 1
        out = []
        for name in grp.nodes:
            for slot, r in enumerate(self.g.by_name[name].inputs):
                if r.node not in inside and r.node not in before:
                    out.append((self.vname[name][cut:], slot, r.node, r.index))
        return tuple(out)

    def _extends(self, run: list[Group], cand: Group, earlier: set[str]) -> bool:
        first, prev = run[0], run[-1]
        a, b = list_index(prev.unit), list_index(cand.unit)
        if a is None or b is None or a[0] != b[0] or b[1] != a[1] + 1 or cand.block != first.block:
            return False
        strict = first.scope is None
        if self.signature(cand, strict) != self.signature(first, strict):
            return False
        # chaining: prev's outside readers are all in cand; cand reads prev and nothing earlier in the run
        cand_nodes = set(cand.nodes)
        prev_nodes = set(prev.nodes)
        for name in prev.nodes:
            if any(c not in prev_nodes and c not in cand_nodes for c in self.consumers[name]):
                return False
        reads_prev = False
        for name in cand.nodes:
            for r in self.g.by_name[name].inputs:
                if r.node in earlier:
                    return False
                reads_prev = reads_prev or r.node in prev_nodes
        if not reads_prev:
            return False
        # other inputs: the same sources for every instance
        ext = self._external(cand, prev)
        if len(run) >= 2:
            return ext == self._external(run[1], run[0])
        for target, slot, src, idx in ext:
            node = self.g.by_name.get(self.by_vname.get(first.path + "." + target, ""))
            if node is None or len(node.inputs) <= slot or (node.inputs[slot].node, node.inputs[slot].index) != (src, idx):
                return False
        return True

    def _period(self, run: list[Group]) -> int:
        sigs = [self.signature(m, True) for m in run]
        n = len(run)
        for p in range(1, n // 2 + 1):
            if n % p == 0 and all(sigs[i] == sigs[i % p] for i in range(n)):
                return p
        return n


def varying_args(rep: Repeat) -> dict[str, list[object]]:
    """The block arguments whose values differ between a run's instances (rates aside)."""
    out: dict[str, list[object]] = {}
    scopes = [m.scope for m in rep.members]
    if any(s is None for s in scopes):
        return out
    first = scopes[0]
    assert first is not None
    for i, a in enumerate(first.args):
        if a.name in RATE_ARGS:
            continue
        vals = [s.args[i].value if i < len(s.args) else None for s in scopes]  # type: ignore[union-attr]
        if any(v != vals[0] for v in vals):
            out[a.name] = vals
    return out
