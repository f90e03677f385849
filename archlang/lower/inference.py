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
- every ``nn.Linear`` becomes :class:`OneDnnLinear` (the same parameters): on a CPU without
  autograd it calls oneDNN's matmul, 1.2-1.6x faster than ``F.linear``'s MKL GEMM at
  transformer shapes on 2 cores; and an exact GELU that alone reads a linear layer's output
  (an ``nn.GELU()`` submodule in generated code, :func:`linear_gelu_pairs` finds them in the
  IR) becomes that matmul's post-op, its module an ``nn.Identity``. Swin-V2's q/v bias becomes
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

The functions listed in :data:`RUNTIME` import nothing but torch: ``archc build --inference``
copies them into the generated file, with the pairs the IR found (:func:`inference_source`).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
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
    """The (linear, gelu) module paths of every exact GELU whose input is a linear layer's
    output that nothing else reads (through dropout, drop-path and identities read once: the
    code generator's :func:`~archlang.lower.rules.fresh_value`), in graph order. Those GELUs
    are ``nn.GELU()`` submodules of the generated code where both are in one block (a GELU
    applied by the caller of a block that returns the linear output is inline code, and the
    fold passes it over); the fold moves each into its linear layer (oneDNN's GELU post-op).
    A linear layer called more than once is left alone."""
    from archlang.ir import ops as O
    from archlang.lower.rules import state_key

    readers: dict[tuple[str, int], int] = {}
    for n in graph.nodes:
        for r in n.inputs:
            readers[(r.node, r.index)] = readers.get((r.node, r.index), 0) + 1
    shared = {n.shares for n in graph.nodes if n.shares}
    pairs = []
    for n in graph.nodes:
        if not (isinstance(n.op, O.Activation) and n.op.fn == "gelu" and n.inputs) or n.shares:
            continue
        src = n.inputs[0]
        while readers.get((src.node, src.index)) == 1:
            prod = graph.node(src.node)
            if isinstance(prod.op, O.Linear):
                if src.index == 0 and not prod.shares and prod.name not in shared:
                    pairs.append((state_key(prod.name), state_key(n.name)))
                break
            if not isinstance(prod.op, O.Dropout | O.DropPath | O.Identity) or not prod.inputs:
                break
            src = prod.inputs[0]
    return pairs


def fold(model: nn.Module, graph: Graph | None = None) -> nn.Module:
    """Make ``model`` (built from ``graph``, by default ``model.archlang_graph``) its
    inference build, in place; see the module docstring. Returns the model."""
    graph = graph if graph is not None else getattr(model, "archlang_graph", None)
    if graph is None:
        raise ValueError("fold: this model records no IR graph (pass graph=, or build it with archlang.build)")
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


def runtime_sources() -> list[str]:
    """The source text of the :data:`RUNTIME` definitions, in file order."""
    text = Path(__file__).read_text()
    lines = text.splitlines()
    out = []
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in RUNTIME:
            start = node.lineno - 1 - len(node.decorator_list)
            out.append("\n".join(lines[start:node.end_lineno]))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in RUNTIME:
            out.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
    return out


# ----------------------------------------------------------------------------- runtime (torch only)
# Everything below uses only torch, `nn` and builtins: archc build --inference copies it.

RUNTIME = ("OneDnnLinear", "_BF16", "_onednn_bf16", "fold_for_inference", "_fold_conv_bn", "_merge_lora_rows",
           "_fold_state", "_refresh_constants", "_module_at", "_replace")


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` (the same parameters, state_dict and outputs, to float rounding) whose
    forward on a CPU input with no gradient wanted calls oneDNN's matmul
    (``torch.ops.mkldnn._linear_pointwise``, the kernel Inductor's frozen CPU graphs call)
    instead of ``F.linear``'s MKL GEMM: 1.2-1.6x faster at Swin-T's and ViT-B's shapes on
    2 cores (``benchmarks/linear_kernels.py``). Float32 always; bfloat16 where the CPU has
    oneDNN's bf16 kernels. Everything else takes ``F.linear``: a gradient wanted for the input,
    the weight or the bias, autocast, another device or dtype, ``torch.compile`` (which chooses
    its own kernels), ``torch.jit`` tracing (so the TorchScript-based ONNX export sees
    ``F.linear``), oneDNN switched off (``torch.backends.mkldnn.flags(enabled=False)``).

    The inference build turns its ``nn.Linear`` layers (exactly that class) into this one in
    place (``__class__``), so parameters, hooks and keys stay, and sets ``act``: "gelu" where
    the layer's only reader was an exact GELU, which oneDNN then applies to the output (a
    forward hook on the layer sees the activated output), else "none". Tools that match
    ``type(m) is nn.Linear`` (``torch.ao.quantization.quantize_dynamic``) pass it over: quantize
    the default build."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and self._onednn_applies(x):
            return self._onednn(x)
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if self.act == "gelu" else y

    def _onednn_applies(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or x.dim() < 2 or self.weight.dtype != x.dtype:
            return False
        if x.dtype != torch.float32 and not (x.dtype == torch.bfloat16 and _onednn_bf16()):
            return False
        if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu") or not torch.backends.mkldnn.enabled:
            return False
        return not torch.is_grad_enabled() or not (
            x.requires_grad or self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad))

    def _onednn(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.contiguous()  # oneDNN reads the bias as dense
        if self.act == "gelu":
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, bias, "none", [], "")


_BF16: list[bool] = []


def _onednn_bf16() -> bool:
    """Whether this CPU runs oneDNN's bfloat16 matmul (AVX-512 BF16 or AMX), asked once."""
    if not _BF16:
        _BF16.append(bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    return _BF16[0]


def fold_for_inference(model: nn.Module, conv_bn: list, linear_gelu: list = ()) -> nn.Module:
    """Fold ``model`` for inference in place and return it (eval mode): each (conv, bn, eps,
    std_eps) of ``conv_bn`` folds the BatchNorm into the conv, LoRA merges, dropout goes,
    linear layers run oneDNN's matmul (:class:`OneDnnLinear`), each (linear, gelu) of
    ``linear_gelu`` moves the ``nn.GELU`` module into the linear layer, attention helpers
    precompute their constants. Loads the default state_dict (pre-hook)."""
    model.eval()
    folds = getattr(model, "inference_folds", None)
    if folds is None:
        folds = {"conv_bn": [], "lora": []}
        model.inference_folds = folds
        model.register_load_state_dict_pre_hook(_fold_state)
        model.register_load_state_dict_post_hook(_refresh_constants)
    with torch.no_grad():
        for conv_path, bn_path, eps, std_eps in conv_bn:
            conv, bn = _module_at(model, conv_path), _module_at(model, bn_path)
            if not isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d) or not isinstance(conv, nn.Conv1d | nn.Conv2d):
                continue  # folded already
            w, b = _fold_conv_bn(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                 eps, std_eps)
            if std_eps is not None:  # a weight-standardised conv becomes a plain one
                plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                  conv.dilation, conv.groups, bias=True, device=w.device, dtype=w.dtype)
                _replace(model, conv_path, plain)
                conv = plain
            conv.weight.copy_(w)
            if conv.bias is None:
                conv.bias = nn.Parameter(b)
            else:
                conv.bias.copy_(b)
            _replace(model, bn_path, nn.Identity())
            folds["conv_bn"].append((conv_path, bn_path, eps, std_eps))
        replaced: list[str] = []
        for path, m in list(model.named_modules()):
            if any(path.startswith(f"{r}.") for r in replaced):
                continue  # inside a layer replaced already (a LoRA layer's adapters)
            if type(m).__name__ == "LoRALinear":
                replaced.append(path)
                size = m.out_features // (len(m.fused) or 1)
                taps = {p: getattr(m, f"lora_{p}" if p else "lora") for p in m.parts}
                parts = {p: t.scale for p, t in taps.items()}
                merged = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device=m.weight.device,
                                   dtype=m.weight.dtype)
                merged.weight.copy_(_merge_lora_rows(m.weight, m.fused, size, parts,
                                                     {p: (t.A, t.B) for p, t in taps.items()}))
                if m.bias is not None:
                    merged.bias.copy_(m.bias)
                folds["lora"].append((path, tuple(m.fused), size, parts))
                _replace(model, path, merged)
            elif type(m).__name__ == "DropPath" or isinstance(m, nn.Dropout):
                _replace(model, path, nn.Identity())
        for m in model.modules():
            if isinstance(getattr(m, "attn_drop", None), float):
                m.attn_drop = 0.0
            if type(m) is nn.Linear and torch.backends.mkldnn.is_available():
                m.__class__ = OneDnnLinear  # same parameters; oneDNN's matmul when no gradient is wanted
                m.act = "none"
        for lin_path, act_path in linear_gelu:
            try:
                lin, act = _module_at(model, lin_path), _module_at(model, act_path)
            except AttributeError:  # the GELU is not a module (code across a block boundary)
                continue
            if isinstance(lin, OneDnnLinear) and isinstance(act, nn.GELU) and act.approximate == "none":
                lin.act = "gelu"  # the GELU that alone read this layer's output, now its post-op
                _replace(model, act_path, nn.Identity())
        if folds["conv_bn"]:  # a CNN: its conv weights channels-last (their outputs follow)
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    _refresh_constants(model, None)
    return model


def _fold_conv_bn(w: torch.Tensor, b: torch.Tensor | None, gamma: torch.Tensor, beta: torch.Tensor,
                  mean: torch.Tensor, var: torch.Tensor, eps: float, std_eps: float | None = None):
    """The (weight, bias) of ``bn(conv(x))`` as one conv, computed in float64, in ``w``'s dtype
    (the weight standardised first when ``std_eps`` is given, as StdConv2d does)."""
    w64 = w.detach().double()
    if std_eps is not None:
        flat = w64.reshape(w64.shape[0], -1)
        w64 = ((flat - flat.mean(1, keepdim=True)) / torch.sqrt(flat.var(1, unbiased=False, keepdim=True) + std_eps)
               ).reshape(w64.shape)
    scale = gamma.detach().double() / torch.sqrt(var.detach().double() + eps)
    b64 = b.detach().double() if b is not None else torch.zeros_like(scale)
    weight = w64 * scale.reshape(-1, *([1] * (w64.ndim - 1)))
    bias = (b64 - mean.detach().double()) * scale + beta.detach().double()
    return weight.to(w.dtype), bias.to(w.dtype)


def _merge_lora_rows(w: torch.Tensor, fused: tuple, size: int, parts: dict, lora: dict) -> torch.Tensor:
    """``w`` plus each LoRA part's ``scale * B @ A`` on its rows (all rows for part "")."""
    out = w.detach().clone()
    for part, scale in parts.items():
        a, b = lora[part]
        delta = (b.detach().double() @ a.detach().double() * scale).to(out.dtype)
        if not part:
            out += delta
        else:
            i = list(fused).index(part)
            out[i * size:(i + 1) * size] += delta
    return out


def _fold_state(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """load_state_dict pre-hook: fold the BatchNorm and LoRA entries of a default build's
    state_dict into the conv and linear entries the inference build holds (a state_dict
    without them, the inference build's own, passes unchanged)."""
    folds = module.inference_folds
    stats = ("weight", "bias", "running_mean", "running_var")
    for conv, bn, eps, std_eps in folds["conv_bn"]:
        c, n = f"{prefix}{conv}.", f"{prefix}{bn}."
        if f"{c}weight" not in state_dict or not all(f"{n}{s}" in state_dict for s in stats):
            continue
        gamma, beta, mean, var = (state_dict.pop(f"{n}{s}") for s in stats)
        state_dict.pop(f"{n}num_batches_tracked", None)
        w, b = _fold_conv_bn(state_dict[f"{c}weight"], state_dict.get(f"{c}bias"), gamma, beta, mean, var,
                             eps, std_eps)
        state_dict[f"{c}weight"], state_dict[f"{c}bias"] = w, b
    for path, fused, size, parts in folds["lora"]:
        p = f"{prefix}{path}."
        keys = {part: (f"{p}lora_{part}." if part else f"{p}lora.") for part in parts}
        if f"{p}weight" not in state_dict or not all(f"{k}A" in state_dict and f"{k}B" in state_dict
                                                      for k in keys.values()):
            continue
        lora = {part: (state_dict.pop(f"{k}A"), state_dict.pop(f"{k}B")) for part, k in keys.items()}
        state_dict[f"{p}weight"] = _merge_lora_rows(state_dict[f"{p}weight"], fused, size, parts, lora)


def _refresh_constants(module: nn.Module, incompatible_keys: object) -> None:
    """load_state_dict post-hook (and the last step of folding): recompute the constants
    attention helpers precompute from their (possibly new) parameters."""
    for m in module.modules():
        if hasattr(m, "fold_constants"):
            m.fold_constants()


def _module_at(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at dotted ``path`` under ``root`` (a ModuleList index included)."""
    parent, _, name = path.rpartition(".")
    _module_at(root, parent)._modules[name] = new
