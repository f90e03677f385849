"""Save and load generated models with safetensors, spec and parameters included.

Takes: a model built by :func:`archlang.build`. Produces: a ``.safetensors`` file whose
metadata holds the arch, its parameters, the spec source and the IR, so that
:func:`load` rebuilds the same model and fills in its weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from archlang.ir.graph import Graph
from archlang.lower.build import instantiate

FORMAT = "archlang/1"


def save(model: nn.Module, path: str | Path) -> Path:
    from safetensors.torch import save_file

    graph: Graph | None = getattr(model, "archlang_graph", None)
    if graph is None:
        raise ValueError("this model was not built by archlang.build(); nothing records its spec")
    meta = {
        "format": FORMAT,
        "arch": graph.arch,
        "params": json.dumps({p.name: p.value for p in graph.params}),
        "spec_file": graph.file,
        "spec": getattr(model, "archlang_spec_text", "") or "",
        "ir": graph.model_dump_json(),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    save_file(state, str(path), metadata=meta)
    return path


def load(path: str | Path) -> nn.Module:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by archlang.save() (no `{FORMAT}` metadata)")
    graph = Graph.model_validate_json(meta["ir"])
    model, _ = instantiate(graph)
    model.archlang_graph = graph
    model.archlang_spec_text = meta.get("spec", "")
    model.load_state_dict(load_file(str(path)), strict=True)
    return model
