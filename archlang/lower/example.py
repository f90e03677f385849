"""Example inputs for a graph: random tensors of the input shapes, free sizes filled in.

Takes: an IR graph and sizes for its free dims (batch ``B`` and others). Produces: a list
of tensors, one per input, for smoke tests, compile checks and benchmarks.
"""

from __future__ import annotations

import torch

from archlang.ir.dims import Dim
from archlang.ir.graph import Graph

DEFAULT_SIZES = {"B": 2, "S": 8, "T": 6, "N": 8}


def example_inputs(graph: Graph, batch: int = 2, sizes: dict[str, int] | None = None,
                   seed: int = 0) -> list[torch.Tensor]:
    known = {**DEFAULT_SIZES, "B": batch, **(sizes or {})}
    gen = torch.Generator().manual_seed(seed)
    out = []
    for node in graph.input_nodes():
        t = node.outputs[0]
        shape = []
        for d in t.shape:
            if isinstance(d, Dim):
                v = d.subs({s: known.get(s, 8) for s in d.symbols})
                shape.append(int(v))
            else:
                shape.append(d)
        if t.dtype == "int":
            high = _vocab_bound(graph, node.name)
            out.append(torch.randint(0, high, shape, generator=gen))
        elif t.dtype == "bool":
            out.append(torch.rand(shape, generator=gen) > 0.5)
        else:
            out.append(torch.randn(shape, generator=gen))
    return out


def _vocab_bound(graph: Graph, input_name: str) -> int:
    """The smallest embedding table an integer input feeds (so random ids are valid)."""
    from archlang.ir import ops as O

    bound = 2**31 - 1
    for n in graph.nodes:
        if isinstance(n.op, O.Embedding) and any(r.node == input_name for r in n.inputs):
            bound = min(bound, n.op.num)
    return bound if bound < 2**31 - 1 else 16
