"""Export a generated model with a dynamic batch: to ONNX and to a ``torch.export`` program.

Takes: a model built by :func:`archlang.build` (it carries its IR graph as
``model.archlang_graph``) or an IR :class:`~archlang.ir.graph.Graph` (the model is then built
here, freshly initialised), an example batch size and sizes for other free dims. Produces: an
``.onnx`` file written by the TorchScript-based ``torch.onnx.export`` (``dynamo=False``, with
``dynamic_axes``), or a :class:`torch.export.ExportedProgram` (``torch.export.export`` with a
``torch.export.Dim`` for the batch); :func:`verify_onnx` and :func:`verify_program` run them at
other batch sizes and return the largest difference from the PyTorch model.

The batch is the free size ``B``: every input and output axis whose size is exactly ``B`` is
marked dynamic. Other free sizes (sequence lengths) are fixed at their example values. The
generated code and the prelude helpers never write the batch into a reshape (they use ``-1``
or sizes that do not depend on it), so the exported graph takes any batch size.

onnx and onnxruntime are optional (``pip install onnx onnxruntime``, or the ``dev`` extra);
without them :func:`export_onnx` and :func:`verify_onnx` raise :class:`ExportError` with that
instruction, never an ``ImportError`` traceback.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archlang.ir.dims import Dim
from archlang.ir.graph import Graph
from archlang.lower.example import example_inputs

BATCH = "B"  # the free size that is the batch
DEFAULT_OPSET = 17
MAX_BATCH = 4096  # upper bound of the exported program's batch dim


class ExportError(Exception):
    """The model cannot be exported (a missing package, or an exporter's refusal), said plainly."""


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportError(f"`{name}` is not installed; exporting to ONNX needs onnx and onnxruntime: "
                          "pip install onnx onnxruntime (or pip install -e '.[dev]')") from None


_SYMBOLICS: list[str] = []


def _register_symbolics() -> None:
    """Rules for the ops the TorchScript exporter lacks, in ONNX primitives (registered once):
    ``aten::rms_norm`` (``nn.RMSNorm``; ONNX has RMSNormalization only from opset 23)."""
    if _SYMBOLICS:
        return
    import torch
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    @symbolic_helper.parse_args("v", "is", "v", "f")
    def rms_norm(g: Any, x: Any, shape: list[int], weight: Any, eps: float | None) -> Any:
        axes = list(range(-len(shape), 0))
        sq = g.op("Mul", x, x)
        if g.opset >= 18:
            ms = g.op("ReduceMean", sq, g.op("Constant", value_t=torch.tensor(axes, dtype=torch.long)), keepdims_i=1)
        else:
            ms = g.op("ReduceMean", sq, axes_i=axes, keepdims_i=1)
        eps_v = g.op("CastLike", g.op("Constant", value_t=torch.tensor(
            torch.finfo(torch.float32).eps if eps is None else eps, dtype=torch.float32)), x)
        y = g.op("Div", x, g.op("Sqrt", g.op("Add", ms, eps_v)))
        return y if symbolic_helper._is_none(weight) else g.op("Mul", y, weight)

    register_custom_op_symbolic("aten::rms_norm", rms_norm, 9)
    _SYMBOLICS.append("aten::rms_norm")


def _model_and_graph(model_or_graph: Any) -> tuple[Any, Graph]:
    """The model in eval mode and its IR graph."""
    if isinstance(model_or_graph, Graph):
        from archlang.lower.build import instantiate

        model, _ = instantiate(model_or_graph)
        model.archlang_graph = model_or_graph
        return model.eval(), model_or_graph
    graph = getattr(model_or_graph, "archlang_graph", None)
    if not isinstance(graph, Graph):
        raise ExportError("export a model made by archlang.build (it carries its IR graph), "
                          "or the graph itself")
    return model_or_graph.eval(), graph


def _batch_axes(shape: Sequence[Any]) -> list[int]:
    """The axes of a shape whose size is exactly the free size ``B``."""
    batch = Dim.sym(BATCH)
    return [i for i, d in enumerate(shape) if isinstance(d, Dim) and d == batch]


def input_batch_axes(graph: Graph) -> dict[str, list[int]]:
    """Input name -> its batch axes."""
    return {n.op.name: _batch_axes(n.outputs[0].shape) for n in graph.input_nodes()}


def output_batch_axes(graph: Graph) -> dict[str, list[int]]:
    """Output name -> its batch axes."""
    return {n.op.name: _batch_axes(graph.type_of(n.inputs[0]).shape) for n in graph.output_nodes()}


def _outputs(graph: Graph, out: Any) -> list[Any]:
    """A model's result as a list in ``graph.outputs`` order (it returns a dict when there are several)."""
    return [out[name] for name in graph.outputs] if isinstance(out, dict) else [out]


def export_onnx(model_or_graph: Any, path: str | Path, *, batch: int = 2, dynamic_batch: bool = True,
                opset: int = DEFAULT_OPSET, sizes: dict[str, int] | None = None) -> Path:
    """Write ``model_or_graph`` to ``path`` as ONNX, traced at ``batch`` (with ``sizes`` for other
    free dims); with ``dynamic_batch`` every batch axis of the inputs and outputs is the dynamic
    dim ``batch``. Inputs and outputs are named as in the spec. Returns the path."""
    import torch

    _require("onnx")
    model, graph = _model_and_graph(model_or_graph)
    args = tuple(example_inputs(graph, batch=batch, sizes=sizes))
    dynamic_axes = None
    if dynamic_batch:
        axes = {**input_batch_axes(graph), **output_batch_axes(graph)}
        dynamic_axes = {name: {i: "batch" for i in ax} for name, ax in axes.items() if ax}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _register_symbolics()
    with warnings.catch_warnings():
        # the TorchScript exporter warns that it is deprecated and about Python values in the
        # trace; verify_onnx checks the result at other batch sizes instead
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, args, str(path), input_names=list(graph.inputs),
                              output_names=list(graph.outputs), dynamic_axes=dynamic_axes,
                              opset_version=opset, dynamo=False)
        except Exception as e:  # the exporter's own errors (an op ONNX lacks) become one line
            raise ExportError(f"{graph.arch}: torch.onnx.export failed: {_first_line(e)}") from e
    return path


def export_program(model_or_graph: Any, *, batch: int = 2, dynamic_batch: bool = True,
                   sizes: dict[str, int] | None = None) -> Any:
    """``torch.export.export`` of the model, traced at ``batch`` (at least 2: torch.export
    specialises sizes 0 and 1); with ``dynamic_batch`` the batch axes are one
    ``torch.export.Dim("batch")``, so the program runs at any batch from 1 to MAX_BATCH."""
    import torch

    if dynamic_batch and batch < 2:
        raise ExportError("export with a dynamic batch at an example batch of at least 2 "
                          "(torch.export specialises sizes 0 and 1)")
    model, graph = _model_and_graph(model_or_graph)
    args = tuple(example_inputs(graph, batch=batch, sizes=sizes))
    dynamic_shapes = None
    if dynamic_batch:
        dim = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        dynamic_shapes = tuple({i: dim for i in ax} or None for ax in input_batch_axes(graph).values())
    try:
        return torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    except Exception as e:
        raise ExportError(f"{graph.arch}: torch.export.export failed: {_first_line(e)}") from e


def verify_onnx(path: str | Path, model_or_graph: Any, batches: Sequence[int] = (1, 3), *,
                sizes: dict[str, int] | None = None, seed: int = 1) -> float:
    """Run the ONNX file with onnxruntime (CPU) at each batch size in ``batches`` and return the
    largest absolute difference from the PyTorch model over all outputs and batches. (For a
    model given as a graph this builds a fresh model, whose random weights differ from the
    exported ones: pass the model that was exported.)"""
    import torch

    _require("onnx")
    ort = _require("onnxruntime")
    model, graph = _model_and_graph(model_or_graph)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors come back as ExportError, not as onnxruntime's log lines
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        xs = example_inputs(graph, batch=b, sizes=sizes, seed=seed)
        with torch.no_grad():
            want = _outputs(graph, model(*xs))
        feed = {name: x.numpy() for name, x in zip(graph.inputs, xs, strict=True)}
        try:
            got = session.run(list(graph.outputs), feed)
        except Exception as e:
            raise ExportError(f"{graph.arch}: onnxruntime failed at batch {b}: {_first_line(e)}") from e
        for w, g in zip(want, got, strict=True):
            if tuple(w.shape) != tuple(g.shape):
                raise ExportError(f"{graph.arch}: at batch {b} onnxruntime gave shape {tuple(g.shape)}, "
                                  f"PyTorch {tuple(w.shape)}")
            worst = max(worst, float((w.float() - torch.from_numpy(g).float()).abs().max()))
    return worst


def verify_program(program: Any, model_or_graph: Any, batches: Sequence[int] = (1, 3), *,
                   sizes: dict[str, int] | None = None, seed: int = 1) -> float:
    """Run an exported program at each batch size in ``batches``; the largest absolute
    difference from the PyTorch model over all outputs and batches."""
    import torch

    model, graph = _model_and_graph(model_or_graph)
    run = program.module()
    worst = 0.0
    for b in batches:
        xs = example_inputs(graph, batch=b, sizes=sizes, seed=seed)
        with torch.no_grad():
            want = _outputs(graph, model(*xs))
            got = _outputs(graph, run(*xs))
        for w, g in zip(want, got, strict=True):
            worst = max(worst, float((w.float() - g.float()).abs().max()))
    return worst


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:500]
