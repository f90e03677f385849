"""Dead rows: compute only the rows of a tensor that some output reads.

Takes: a checked :class:`~archlang.ir.graph.Graph`. Produces: an equivalent graph (the same
outputs, to float rounding, and the same parameters, names and state_dict) in which every op
whose output is read only through its first ``k`` rows along one axis computes just those
rows. Both builds lower this graph (:func:`archlang.lower.codegen.generate`; ``keep_dead_rows``
keeps every row) and the cost report describes it (``as_written=True``: the spec's own graph,
every row, as timm's models compute them); the diagram draws the spec's graph.

The reads start at ``take`` (``t[:, 0]``: the first ``index + 1`` rows) and at slices from 0
(``t[:, :k]``), and go back through the ops that say their rows are independent
(:meth:`~archlang.ir.ops.OpBase.rows_independent`: linear layers, norms, activations, residual
sums...) until a self-attention, where the first ``k`` queries need every key and value:
that attention computes ``k`` queries (``queries``) and its input stays whole. A value read
whole anywhere (a graph output, any other op) stays whole, and a shortened consumer of it
reads a slice of it. In a ViT the class token alone reaches the head, so the last block
attends with one query and runs its projection, MLP and norms on one token: 11/12 of that
block's work, 6-7% of ViT-B/16's.

Training is unchanged too: the rows left out reach no output, so they carry no gradient. The
ops that draw random numbers per element (dropout with ``p > 0``, attention dropout) are not
shortened, so that a seeded run draws what the whole graph draws.
"""

from __future__ import annotations

from archlang.check.shapes import infer
from archlang.ir import ops as O
from archlang.ir.graph import Graph, Node, ValueRef
from archlang.ir.types import TensorType

# how a value is read: None (whole), or (axis, k): only its first k rows along axis
Reads = tuple[int, int] | None


def prune_dead_rows(g: Graph) -> Graph:
    """``g`` with the rows no output reads left out (see the module docstring); ``g`` itself
    when every row is read."""
    short = _shortened(g)
    if not short:
        return g
    taken = set(g.by_name)
    nodes: list[Node] = []
    types: dict[str, tuple[TensorType, ...]] = {}  # the rewritten graph's output types so far

    def add(node: Node) -> None:
        nodes.append(node)
        types[node.name] = node.outputs

    for n in g.nodes:
        if n.name not in short:
            add(n)
            continue
        axis, k = short[n.name]
        inputs = []
        for ref in n.inputs:
            t = g.type_of(ref)
            if not _row_input(n, t, axis) or short.get(ref.node) == (axis, k):
                inputs.append(ref)
                continue
            name = _fresh(f"{n.name}_rows", taken)
            cut = TensorType(shape=_with(t.shape, axis, k), dtype=t.dtype)
            add(Node(name=name, op=O.SliceOp(start=0, stop=k, dim=axis), inputs=(ref,), outputs=(cut,),
                     scope=n.scope, span=n.span))
            inputs.append(ValueRef(node=name))
        op = n.op.model_copy(update={"queries": k}) if isinstance(n.op, O.Attention) else n.op
        ins = [types[r.node][r.index] for r in inputs]
        outs = infer(op, ins)  # the op's own shape rule: it checks the shortened inputs
        want = tuple(TensorType(shape=_with(t.shape, axis, k), dtype=t.dtype) for t in n.outputs)
        if outs != want:  # a rule this pass misreads: an internal error, not the user's
            raise AssertionError(f"dead-row pruning of `{n.name}`: expected {want}, the shape rule gives {outs}")
        add(n.model_copy(update={"op": op, "inputs": tuple(inputs), "outputs": outs}))
    # a new Graph, not model_copy: that would carry over the cached node index (by_name)
    return Graph(**{**{f: getattr(g, f) for f in Graph.model_fields}, "nodes": tuple(nodes)})


def _shortened(g: Graph) -> dict[str, tuple[int, int]]:
    """Node -> (axis, k) for every node that may compute only its first k rows along axis:
    every reader of its output reads no more, and the op allows it."""
    readers: dict[tuple[str, int], list[tuple[Node, int]]] = {}
    for n in g.nodes:
        for i, ref in enumerate(n.inputs):
            readers.setdefault((ref.node, ref.index), []).append((n, i))
    short: dict[str, tuple[int, int]] = {}
    for n in reversed(g.nodes):  # readers before producers
        if len(n.outputs) != 1 or not n.inputs:
            continue
        reads = _combine([_reads(r, i, g, short) for r, i in readers.get((n.name, 0), [])])
        if reads is None:
            continue
        axis, k = reads
        size = n.outputs[0].shape[axis]
        if isinstance(size, int) and k < size and _may_shorten(n, axis):
            short[n.name] = (axis, k)
    return short


def _reads(reader: Node, slot: int, g: Graph, short: dict[str, tuple[int, int]]) -> Reads:
    """How ``reader`` reads its input ``slot``."""
    op, t = reader.op, g.type_of(reader.inputs[slot])
    if isinstance(op, O.Take) and _ints(op.index, op.dim) and op.index >= 0:
        return (op.dim % t.rank, op.index + 1)
    if isinstance(op, O.SliceOp) and _ints(op.start, op.stop, op.dim) and op.start >= 0 and op.stop > 0:
        return (op.dim % t.rank, op.stop)
    if reader.name in short and not isinstance(op, O.Attention):
        axis, k = short[reader.name]
        if _row_input(reader, t, axis):
            return (axis, k)
    return None


def _ints(*vs: object) -> bool:
    """Whether every value is an int (a graph altered after checking may hold anything: the
    lowering refuses it, this pass leaves it alone)."""
    return all(type(v) is int for v in vs)


def _combine(reads: list[Reads]) -> Reads:
    """One value's reads by all of its readers: the first rows the most of them read, or None
    (whole) when any reads it whole, along another axis, or nothing reads it."""
    if not reads or any(r is None for r in reads) or len({r[0] for r in reads if r}) > 1:
        return None
    return max(r for r in reads if r)


def _may_shorten(n: Node, axis: int) -> bool:
    op = n.op
    if isinstance(op, O.Attention):  # the first queries need every key: queries along the tokens
        return axis == 1 and not op.queries and op.attn_drop == 0 and op.proj_drop == 0
    return op.rows_independent(axis, n.outputs[0].rank)


def _row_input(n: Node, t: TensorType, axis: int) -> bool:
    """Whether input type ``t`` of ``n`` has ``n``'s rows along ``axis`` (not broadcast there)."""
    out = n.outputs[0]
    return not isinstance(n.op, O.Attention) and t.rank == out.rank and t.shape[axis] == out.shape[axis]


def _with(shape: tuple, axis: int, k: int) -> tuple:
    return (*shape[:axis], k, *shape[axis + 1:])


def _fresh(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


__all__ = ["prune_dead_rows"]
