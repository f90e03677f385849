"""The inference build: fold into the weights what is constant at eval time.

Takes: a model built by :func:`archlang.build` (or a generated module's ``build()``) and its
IR graph. Produces: the same model, changed in place and put in eval mode, whose eval
outputs equal the default model's (up to float rounding, within 1e-5) with less work per call:

- a BatchNorm that reads a convolution's only output is folded into that convolution (the
  conv gains a bias; the norm becomes ``nn.Identity``). The IR decides which pairs fold
  (:func:`conv_bn_pairs`), not the module order. A weight-standardised conv followed by a
  BatchNorm becomes a plain conv with the standardised, folded weight;
- LoRA updates are merged into their base weights (the adapters disappear);
- ``Dropout`` and ``DropPath`` modules become ``nn.Identity``; attention dropout rates are 0;
- Swin's relative position bias is gathered from its table once, with the shift mask, into
  one buffer, and a shifted window's cyclic shift and partition become one ``index_select``
  each way (measured faster than two rolls and two copies); Swin-V2's CPB MLP, clamped logit
  scale and q/v bias are evaluated once and its attention is one SDPA call (the helpers'
  ``fold_constants``, refreshed after every ``load_state_dict``);
- a network whose convolutions carry BatchNorms (a CNN) is put in channels-last memory
  format, which oneDNN's convolutions run faster; inputs may stay contiguous;
- every ``nn.Linear`` becomes :class:`~archlang.lower.inference_runtime.OneDnnLinear` (the same parameters): on a CPU without
  autograd it calls oneDNN's matmul or ``F.linear``'s MKL GEMM, whichever it measured faster
  at the shape on this machine, oneDNN reading a copy of the weight reordered once into its
  blocked layout (``pack``; the copy's bytes are the ``packed`` part of
  ``archlang.cost(..., inference=True)``'s peak, and the build's memory budget counts them);
  and an exact GELU that alone reads a linear layer's output
  (an ``nn.GELU()`` submodule in generated code, :func:`linear_gelu_pairs` finds them in the
  IR) becomes that matmul's post-op (in place after ``F.linear``), its module an ``nn.Identity``. Swin-V2's q/v bias becomes
  its qkv layer's own bias (a non-persistent buffer), so that matmul adds it.

Weights: the inference model loads the *default* build's state_dict: a load_state_dict
pre-hook on the model folds the BatchNorm and LoRA entries of a default state_dict into the
conv and linear entries, and a post-hook refreshes the attention buffers, so
``inference_model.load_state_dict(default_model.state_dict())`` gives the default model's
outputs. Its own ``state_dict()`` is the folded one (conv biases, no BatchNorm or LoRA
entries), which it loads as well; keep the default model to train or to ``archlang.save``.

Not folded: channel scales (LayerScale; the generated forward multiplies by the parameter
whatever its value, so folding it into the preceding linear would save nothing without a
codegen change), a BatchNorm after anything but a conv (it stays, and runs), and a
weight-standardised conv without a BatchNorm (its state_dict key holds the raw weight).
The fold works on the root module: ``load_state_dict`` of a submodule is not folded.

This module analyses the IR and writes source; it imports no torch, so ``archc build
--inference`` writes a file without it. The folding itself is
:mod:`archlang.lower.inference_runtime` (torch only), whose :data:`RUNTIME` definitions the
generated file copies, with the pairs the IR found (:func:`inference_source`).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from archlang.ir.graph import Graph


# ----------------------------------------------------------------------------- IR analysis


def conv_bn_pairs(graph: Graph) -> list[tuple[str, str, float, float | None]]:
    """The (conv, batchnorm, bn eps, conv std eps or None) module paths of every BatchNorm
    whose input is a conv2d/conv1d output that nothing else reads, in graph order; a conv or
    BatchNorm whose weights are shared with another call (``y = conv(z)``) is left alone."""
    from archlang.ir import ops as O
    from archlang.lower.rules import state_key

    readers: dict[tuple[str, int], int] = {}
    for n in graph.nodes:
        for r in n.inputs:
            readers[(r.node, r.index)] = readers.get((r.node, r.index), 0) + 1
    shared = {n.shares for n in graph.nodes if n.shares}  # layers called again elsewhere (`y = conv(z)`)
    pairs = []
    for n in graph.nodes:
        if not isinstance(n.op, O.BatchNorm) or not n.inputs:
            continue
        src = n.inputs[0]
        conv = graph.node(src.node)
        if not isinstance(conv.op, O.Conv2d | O.Conv1d) or src.index != 0 or readers.get((src.node, 0)) != 1:
            continue
        if conv.shares or n.shares or conv.name in shared or n.name in shared:
            continue  # the weights serve another call too: folding would change it
        std = conv.op.std_eps if isinstance(conv.op, O.Conv2d) and conv.op.standardize else None
        pairs.append((state_key(conv.name), state_key(n.name), n.op.eps, std))
    return pairs


def linear_gelu_pairs(graph: Graph) -> list[tuple[str, str]]:
    """The (linear, gelu) module paths of :meth:`Graph.gelus_after_linears`: every exact GELU
    that alone reads a linear layer's output. Those GELUs are ``nn.GELU()`` submodules of the
    generated code where both are in one block (a GELU applied by the caller of a block that
    returns the linear output is inline code, which the builds pass over); the fold moves each
    into its linear layer (oneDNN's GELU post-op), the default build runs it in place."""
    from archlang.lower.rules import state_key

    return [(state_key(lin), state_key(act)) for lin, act in graph.gelus_after_linears()]


def fold(model: nn.Module, graph: Graph | None = None) -> nn.Module:
    """Make ``model`` (built from ``graph``, by default ``model.archlang_graph``) its
    inference build, in place; see the module docstring. Returns the model."""
    graph = graph if graph is not None else getattr(model, "archlang_graph", None)
    if graph is None:
        raise ValueError("fold: this model records no IR graph (pass graph=, or build it with archlang.build)")
    from archlang.lower.inference_runtime import fold_for_inference

    return fold_for_inference(model, conv_bn_pairs(graph), linear_gelu_pairs(graph))


def inference_source(source: str, graph: Graph, cls_name: str) -> str:
    """The generated module ``source`` with the inference build appended: the runtime
    helpers, the conv/BatchNorm pairs the IR found and ``build_inference(dtype)``."""
    def listing(pairs: list) -> str:
        return "[\n" + "".join(f"    {p!r},\n" for p in pairs) + "]" if pairs else "[]"

    tail = (
        "# ----- inference build (archc build --inference): BatchNorm folded into the conv before it, LoRA\n"
        "# merged, dropout removed, attention biases precomputed, linear layers on oneDNN's matmul (with\n"
        "# the GELU that alone reads one as its post-op); loads the default build's state_dict\n\n"
        f"CONV_BN = {listing(conv_bn_pairs(graph))}  # (conv, batchnorm, eps, weight-standardisation eps)\n\n"
        f"LINEAR_GELU = {listing(linear_gelu_pairs(graph))}  # (linear, the GELU that alone reads it)\n\n\n"
        + "\n\n\n".join(runtime_sources()) + "\n\n\n"
        f"def build_inference(dtype: torch.dtype = torch.float32) -> {cls_name}:\n"
        f"    \"\"\"The inference build of `build(dtype)` (eval mode); load the default state_dict into it.\"\"\"\n"
        "    return fold_for_inference(build(dtype), CONV_BN, LINEAR_GELU)\n"
    )
    return source.rstrip() + "\n\n\n" + tail


# the definitions of inference_runtime.py that the generated file copies (read as text here, so
# that writing the source needs no torch)
RUNTIME = ("OneDnnLinear", "_traced_or_transformed", "_onednn_linear", "_ONEDNN_FASTER", "RACE_MACS", "_onednn_matmul", "_gemm",
           "_onednn_is_faster", "_COMPILED_OP", "_COMPILED_ONEDNN_CAPABILITIES", "_CPU_CAPABILITY", "use_onednn_linears", "use_channels_last", "_BF16", "_onednn_bf16",
           "fold_for_inference", "_fold_conv_bn", "_merge_lora_rows", "_fold_state", "_refresh_constants",
           "_module_at", "_replace")


def runtime_sources() -> list[str]:
    """The source text of the :data:`RUNTIME` definitions of ``inference_runtime.py``, in file order."""
    text = (Path(__file__).parent / "inference_runtime.py").read_text()
    lines = text.splitlines()
    out = []
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in RUNTIME:
            start = node.lineno - 1 - len(node.decorator_list)
            out.append("\n".join(lines[start:node.end_lineno]))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in RUNTIME:
            out.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
    return out
