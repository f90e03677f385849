"""What the interop modules share: reaching the archlang model inside its wrappers.

Takes: a model built by :func:`archlang.build` (or :func:`archlang.load`), possibly wrapped
by ``torch.compile`` (``_orig_mod``) or ``DistributedDataParallel`` (``module``). Produces:
the generated module and its IR graph; a clear error for a module archlang did not build.
No torch import here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archlang.ir.graph import Graph


def base_model(model: Any) -> Any:
    """The generated module inside ``torch.compile`` and ``DistributedDataParallel`` wrappers."""
    for _ in range(8):
        if getattr(model, "archlang_graph", None) is not None:
            return model
        inner = getattr(model, "_orig_mod", None)
        if inner is None and type(model).__name__ == "DistributedDataParallel":
            inner = getattr(model, "module", None)
        if inner is None:
            break
        model = inner
    return model


def graph_of(model: Any, what: str = "this") -> Graph:
    """The IR graph a model was built from; ``ValueError`` for one archlang did not build."""
    graph = getattr(base_model(model), "archlang_graph", None)
    if graph is None:
        raise ValueError(f"{what} needs a model built by archlang.build() or archlang.load(); "
                         f"this {type(model).__name__} records no archlang spec")
    return graph
