"""The inference build's run-time half: folding a built model in place (torch only).

Takes: a model built by :func:`archlang.build` (or a generated module's ``build()``) and the
(conv, BatchNorm) and (linear, GELU) pairs :mod:`archlang.lower.inference` found in its IR.
Produces: the model folded for inference (see that module's docstring), and the load-time
hooks that fold a default build's state_dict as it loads. Everything here uses only torch,
``nn`` and builtins: ``archc build --inference`` copies the definitions named in
``archlang.lower.inference.RUNTIME`` into the generated file (``runtime_sources``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` (the same parameters, state_dict and outputs, to float rounding) whose
    forward on a CPU input with no gradient wanted calls whichever of oneDNN's matmul
    (``torch.ops.mkldnn._linear_pointwise``, the kernel Inductor's frozen CPU graphs call) and
    ``F.linear``'s MKL GEMM is the faster at the input's shape on this machine, raced once per
    shape (:func:`_onednn_linear`): oneDNN was 1.2-1.6x faster at Swin-T's and ViT-B's shapes on
    one 2-core machine, but 0.86-1.55x on an AMX one, where MKL wins at most of them
    (``benchmarks/linear_kernels.py``). Float32 always; bfloat16 where the CPU has
    oneDNN's bf16 kernels. Everything else takes ``F.linear``: a gradient wanted for the input,
    the weight or the bias, autocast, another device or dtype, ``torch.export``, ``torch.jit``
    and ``torch.fx`` tracing (so the TorchScript-based ONNX export sees ``F.linear``),
    ``torch.func`` transforms (over the input or the parameters), forward-mode AD, a dispatch
    mode (``FlopCounterMode`` counts ``aten`` ops), a tensor subclass (DTensor, fake tensors),
    oneDNN switched off (``torch.backends.mkldnn.flags(enabled=False)``), an input that is not
    contiguous (oneDNN would copy it; ``F.linear`` reads its strides).

    Under ``torch.compile`` a float32 layer with no gradient wanted makes the same choice,
    through the opaque op ``archlang::onednn_linear`` (Inductor would call MKL's GEMM; it
    lowers oneDNN's matmul only for frozen weights); in bfloat16, and in a standalone generated file,
    it calls ``F.linear``, which Inductor compiles.

    :func:`use_onednn_linears` turns the ``nn.Linear`` layers (exactly that class) of a default
    build into this one in place (``__class__``), so parameters, hooks and keys stay, with
    ``act`` "none". The inference build also sets ``act`` "gelu" where the layer's only reader
    was an exact GELU, which oneDNN then applies to the output (a forward hook on the layer
    sees the activated output). Tools that match ``type(m) is nn.Linear``
    (``torch.ao.quantization.quantize_dynamic``) pass it over: build with
    ``kernels="torch"`` to quantize.

    ``pack`` (set by the inference build): oneDNN reads a copy of the weight reordered once
    into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, as Inductor's frozen
    graphs hold it) instead of reordering the plain weight on every call: Swin-T's inference
    build 6% faster, ViT-B/16's 2-5% on a 2-core AVX2 machine (``benchmarks/variants.py
    --inference``, docs/benchmarks.md part G). The copy is
    made on the first call that takes oneDNN (and freed where ``F.linear`` won the race),
    holds the weight's bytes again (the ``packed`` part of the cost model's inference peak
    for this build), is not in the state_dict, is left out of pickles and deep copies, and
    is made again when the weight changes (``load_state_dict``, an in-place update: its
    version counter) or moves."""

    act: str = "none"  # "gelu": oneDNN applies an exact GELU to the output (the inference build)
    pack: bool = False  # oneDNN reads a blocked copy of the weight, made on first use (the inference build)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # Dynamo: no test below that it cannot trace
            if _COMPILED_OP and self._compiled_onednn_applies(x):
                return _COMPILED_OP[0](x, self.weight, self.bias, self.act)
        elif self._onednn_applies(x):
            return self._onednn(x)
        if self.act == "gelu" and self._gelu_in_place(x):
            return _gemm(x, self.weight, self.bias, "gelu")  # the GELU overwrites this call's own output
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if self.act == "gelu" else y

    def _gelu_in_place(self, x: torch.Tensor) -> bool:
        """Whether ``F.linear``'s output may take its GELU in place: not compiled (Inductor
        fuses it), traced or transformed, and no gradient wanted (autograd would keep it)."""
        if torch.compiler.is_compiling() or _traced_or_transformed(x, self.weight, self.bias):
            return False
        return not torch.is_grad_enabled() or not (
            x.requires_grad or self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad))

    def _onednn_applies(self, x: torch.Tensor) -> bool:
        if _traced_or_transformed(x, self.weight, self.bias) or torch._C._len_torch_dispatch_stack():
            return False  # and a dispatch mode (FlopCounterMode counts aten ops)
        if type(x) is not torch.Tensor or not self._plain_parameters():
            return False  # a tensor subclass (DTensor, a quantised or fake tensor): its own F.linear
        if x.dtype != torch.float32 and not (x.dtype == torch.bfloat16 and _onednn_bf16()):
            return False
        return self._fits(x)

    def _compiled_onednn_applies(self, x: torch.Tensor) -> bool:
        """Under ``torch.compile`` (not export): float32 only (in bfloat16 Inductor's GEMM is
        oneDNN's already), on CPUs whose ATen capability (:data:`_CPU_CAPABILITY`) is in
        :data:`_COMPILED_ONEDNN_CAPABILITIES`, where oneDNN beat the GEMM Inductor calls."""
        return (not torch.compiler.is_exporting() and x.dtype == torch.float32 and self._plain_parameters()
                and _CPU_CAPABILITY in _COMPILED_ONEDNN_CAPABILITIES and self._fits(x))

    def _plain_parameters(self) -> bool:
        return all(type(t) in (torch.Tensor, nn.Parameter) for t in (
            self.weight, self.weight if self.bias is None else self.bias))

    def _fits(self, x: torch.Tensor) -> bool:
        """A contiguous CPU input of the weight's dtype, no autocast, oneDNN on, no gradient wanted."""
        if x.device.type != "cpu" or x.dim() < 2 or self.weight.dtype != x.dtype or not x.is_contiguous():
            return False
        if torch.is_autocast_enabled("cpu") or not torch.backends.mkldnn.enabled:
            return False
        return not torch.is_grad_enabled() or not (
            x.requires_grad or self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad))

    def _onednn(self, x: torch.Tensor) -> torch.Tensor:
        return _onednn_linear(x, self.weight, self.bias, self.act, self if self.pack else None)

    def packed_weight(self) -> torch.Tensor:
        """oneDNN's blocked copy of the weight (``pack``), made again when the weight is not the
        tensor it was made from: another storage (a weak reference to the storage it read, which
        dies with that storage, so a new one at the same address is not taken for it), another
        place in it, or a newer version (an in-place update)."""
        w = self.weight
        held = self.__dict__.get("_packed")
        stamp = (w.storage_offset(), tuple(w.shape), w.stride(), w.dtype, w._version)
        if held is None or held[0]() is not w.untyped_storage() or held[1] != stamp:
            import weakref

            with torch.no_grad():
                held = (weakref.ref(w.untyped_storage()), stamp,
                        torch.ops.mkldnn._reorder_linear_weight(w.detach()))
            self.__dict__["_packed"] = held
        return held[2]

    def drop_packed_weight(self) -> None:
        """Free the blocked copy (made again on the next oneDNN call)."""
        self.__dict__.pop("_packed", None)

    def __getstate__(self) -> dict:
        """Without the blocked copy (``copy.deepcopy``, pickling): it is made again on use."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {k: v for k, v in state.items() if k != "_packed"}


def _traced_or_transformed(*tensors: torch.Tensor | None) -> bool:
    """Whether a ``torch.jit``/``torch.fx`` tracer is running (checked first: it then sees the
    plain op, and no test of the tensors), forward-mode AD is on, or any of ``tensors`` is
    wrapped by ``torch.func`` (vmap, grad, jvp): where the eager-only kernels step aside
    (oneDNN's op has no batching rule and no derivative; an in-place GELU would be traced)."""
    if torch.jit.is_tracing() or torch.fx._symbolic_trace.is_fx_symbolic_tracing():
        return True
    return torch.autograd.forward_ad._current_level >= 0 or any(
        torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors if t is not None)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str,
                   layer: OneDnnLinear | None = None) -> torch.Tensor:
    """``x`` by ``weight``, plus ``bias``, then an exact GELU when ``act`` is "gelu", on whichever
    of oneDNN's matmul (the GELU a post-op) and MKL's GEMM (``F.linear``, the GELU in place) is
    the faster at this shape on this machine: raced once per shape (:func:`_onednn_is_faster`),
    products under :data:`RACE_MACS` multiply-adds take oneDNN unraced. With ``layer`` (one
    that packs), oneDNN reads the layer's blocked copy of the weight, in the race too, and a
    lost race frees it. No gradient: the caller (:class:`OneDnnLinear`) checked that none is
    wanted."""
    bias = None if bias is None else bias.contiguous()  # oneDNN reads the bias as dense
    k, n = x.shape[-1], weight.shape[0]
    rows = x.numel() // max(k, 1)

    def dnn_weight() -> torch.Tensor:  # what oneDNN reads: the weight or the layer's blocked copy
        return weight if layer is None else layer.packed_weight()

    if rows * k * n < RACE_MACS:
        return _onednn_matmul(x, dnn_weight(), bias, act)
    key = (rows, k, n, x.dtype, act, bias is not None, torch.get_num_threads(), layer is not None)
    faster = _ONEDNN_FASTER.get(key)
    if faster is None:
        faster = _ONEDNN_FASTER[key] = _onednn_is_faster(x, dnn_weight(), weight, bias, act)
    if faster:
        return _onednn_matmul(x, dnn_weight(), bias, act)
    if layer is not None:
        layer.drop_packed_weight()
    return _gemm(x, weight, bias, act)


# Whether oneDNN's matmul beats MKL's GEMM at a (rows, in, out, dtype, act, bias, threads), raced
# on the first call at that shape, as cudnn.benchmark does: on one 2-core machine oneDNN was
# 1.2-1.6x faster at every shape of Swin-T and ViT-B/16, on an AMX one 0.86-0.93x at 7 of 9
# (benchmarks/linear_kernels.py). Products under RACE_MACS (under half a millisecond) skip the race.
_ONEDNN_FASTER: dict[tuple, bool] = {}
RACE_MACS: int = 1 << 26


def _onednn_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> torch.Tensor:
    if act == "gelu":
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> torch.Tensor:
    y = F.linear(x, weight, bias)
    return torch.ops.aten.gelu_(y) if act == "gelu" else y  # in place: no second output held


def _onednn_is_faster(x: torch.Tensor, dnn_weight: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      act: str) -> bool:
    """Race the two kernels on this call's own tensors (oneDNN reading ``dnn_weight``, the
    weight or its blocked copy; ``F.linear`` the weight): one warm-up each, then the best of
    three interleaved calls each; oneDNN wins only by 2% or more (a tie takes ``F.linear``,
    which holds no scratch). Holds one output at a time, as a single call does."""
    import time

    calls = (lambda: _onednn_matmul(x, dnn_weight, bias, act), lambda: _gemm(x, weight, bias, act))
    best = [float("inf"), float("inf")]
    for rep in range(4):
        for i, call in enumerate(calls):
            t0 = time.perf_counter()
            call()
            if rep:
                best[i] = min(best[i], time.perf_counter() - t0)
    return best[0] < 0.98 * best[1]


# The CPUs (torch.backends.cpu.get_cpu_capability()) on which a compiled OneDnnLinear calls
# oneDNN in float32. On a 2-core AVX2 EPYC the op made compiled models faster (docs/benchmarks.md
# part G: ViT-B/16 0.905 of timm). On a 2-core AVX-512/AMX Xeon, Inductor's own GEMMs (what
# kernels="torch" compiles) were faster in every model measured: ViT-B/16 0.944 against 0.974
# of timm, Swin-T 0.739 against 0.765, Mixer-B/16 1.001 against 1.045, Swin-V2-T 1.006 against
# 1.043 (`python benchmarks/variants.py --mode compiled`, part I).
_COMPILED_ONEDNN_CAPABILITIES = ("AVX2",)
# read once (Dynamo cannot trace the call; a module constant it can)
_CPU_CAPABILITY = torch.backends.cpu.get_cpu_capability()

# the custom op that a compiled OneDnnLinear calls (registered below, on import of this module;
# empty in a standalone generated file, whose compiled layers then call F.linear)
_COMPILED_OP: list = []


def _register_compiled_op() -> None:
    """``archlang::onednn_linear(x, weight, bias, act)``: oneDNN's matmul as an opaque op, so
    that a compiled graph calls it (Inductor lowers ``mkldnn._linear_pointwise`` only for
    frozen weights). No autograd formula: compiled layers call it only where no gradient is
    wanted."""
    if _COMPILED_OP or not torch.backends.mkldnn.is_available():
        return

    def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> torch.Tensor:
        return _onednn_linear(x, weight, bias, act)  # the plain weight: no layer reaches the op

    op = torch.library.custom_op("archlang::onednn_linear", onednn_linear, mutates_args=(),
                                 schema="(Tensor x, Tensor weight, Tensor? bias, str act) -> Tensor")

    @op.register_fake
    def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str) -> torch.Tensor:
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    _COMPILED_OP.append(op)


def use_onednn_linears(model: nn.Module) -> nn.Module:
    """Turn each ``nn.Linear`` (exactly that class) of ``model`` into :class:`OneDnnLinear` in
    place and return ``model``: the same parameters, keys and hooks; oneDNN's matmul where no
    gradient is wanted. A no-op where this torch has no oneDNN."""
    if torch.backends.mkldnn.is_available():
        for m in model.modules():
            if type(m) is nn.Linear:
                m.__class__ = OneDnnLinear
                m.act = "none"
    return model


class InplaceGELU(nn.GELU):
    """``nn.GELU`` that overwrites its input where nothing else can see it: the GELU the IR
    found to be the only reader of a linear layer's output (:meth:`Graph.gelus_after_linears`),
    called with no gradient wanted, in eager mode, outside ``torch.func`` transforms and
    forward-mode AD, while that layer (looked up in its parent
    on every call, so a replaced layer is seen) is a plain or oneDNN linear layer and neither
    it nor this module has a forward hook, and no global forward hook is set: a hook could
    keep the linear output or see this module's input. Everywhere else it is ``nn.GELU``,
    including ``torch.compile`` and ``torch.export`` (Inductor fuses the activation itself)
    and ``torch.jit``/``torch.fx`` tracing. In place saves a second buffer of the MLP's widest
    activation, a fresh allocation on every call (docs/benchmarks.md part F,
    ``benchmarks/variants.py``). :func:`use_inplace_gelus` sets it up; it has the same
    parameters (none) and ``repr`` as ``nn.GELU``."""

    producer: tuple = ()  # (the module holding the linear layer, its attribute name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._may_overwrite(x):
            return torch.ops.aten.gelu_(x, approximate=self.approximate)
        return F.gelu(x, approximate=self.approximate)

    def _may_overwrite(self, x: torch.Tensor) -> bool:
        if torch.compiler.is_compiling() or _traced_or_transformed(x):
            return False
        if torch.is_grad_enabled() and x.requires_grad:
            return False  # autograd keeps the linear output (or checks its version)
        if not self.producer or self._forward_hooks or self._forward_pre_hooks:
            return False
        if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            return False
        parent, name = self.producer
        lin = parent._modules.get(name)
        return (type(lin) is nn.Linear or type(lin) is OneDnnLinear) and not lin._forward_hooks


def use_inplace_gelus(model: nn.Module, pairs: list) -> nn.Module:
    """Make each ``nn.GELU`` (exactly that class) that ``pairs`` (linear path, GELU path) names
    an :class:`InplaceGELU` of its linear layer, in place; returns ``model``. A pair whose
    modules are not both there (a GELU that is inline code) is passed over."""
    for lin_path, act_path in pairs:
        parent_path, _, name = lin_path.rpartition(".")
        try:
            parent = _module_at(model, parent_path) if parent_path else model
            act = _module_at(model, act_path)
        except AttributeError:
            continue
        if type(act) is nn.GELU and isinstance(parent._modules.get(name), nn.Linear):
            act.__class__ = InplaceGELU
            act.producer = (parent, name)
    return model


def use_plain_linears(model: nn.Module) -> nn.Module:
    """Undo :func:`use_onednn_linears`: each :class:`OneDnnLinear` of ``model`` that applies no
    post-op becomes a plain ``nn.Linear`` again, in place; returns ``model``. The distributed
    wrappers (:mod:`archlang.interop.distributed`) train with plain layers."""
    for m in model.modules():
        if type(m) is OneDnnLinear and m.act == "none":
            m.drop_packed_weight()
            m.__class__ = nn.Linear
            m.__dict__.pop("act", None)
            m.__dict__.pop("pack", None)
    return model


def use_channels_last(model: nn.Module, channels_last: bool = True, standardized: bool = False) -> nn.Module:
    """Store each 2-d convolution's weight of ``model`` channels-last (NHWC), in place, or
    contiguous again with ``channels_last=False``; returns ``model``. The values, parameter
    objects and state_dict keys stay; a convolution with a channels-last weight writes a
    channels-last output, so the BatchNorm, activation and pooling layers after it run NHWC
    too, and oneDNN skips the per-call input and output reorders (ResNet-50's forward
    faster on the CPU: ``benchmarks/bench_vs_timm.py``). ``load_state_dict``, ``.to(dtype)``
    and the optimisers keep the layout; :func:`archlang.save` writes contiguous tensors. A
    weight-standardised ``StdConv2d`` is left alone unless ``standardized`` (its forward
    reshapes the weight, which would copy a channels-last one and keep the copy for backward)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.dim() == 4 and (standardized or type(m).__name__ != "StdConv2d"):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)
    return model


_BF16: list[bool] = []


def _onednn_bf16() -> bool:
    """Whether this CPU runs oneDNN's bfloat16 matmul (AVX-512 BF16 or AMX), asked once."""
    if not _BF16:
        _BF16.append(bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    return _BF16[0]


def fold_for_inference(model: nn.Module, conv_bn: list, linear_gelu: list = ()) -> nn.Module:
    """Fold ``model`` for inference in place and return it (eval mode): each (conv, bn, eps,
    std_eps) of ``conv_bn`` folds the BatchNorm into the conv, LoRA merges, dropout goes,
    linear layers run oneDNN's matmul (:class:`OneDnnLinear`) on a blocked copy of their
    weight made on first use (``pack``), each (linear, gelu) of
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
        use_onednn_linears(model)  # same parameters; oneDNN's matmul when no gradient is wanted
        if hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
            for m in model.modules():
                if type(m) is OneDnnLinear:
                    m.pack = True  # oneDNN reads a blocked copy of the weight, made on first use
        for lin_path, act_path in linear_gelu:
            try:
                lin, act = _module_at(model, lin_path), _module_at(model, act_path)
            except AttributeError:  # the GELU is not a module (code across a block boundary)
                continue
            if isinstance(lin, OneDnnLinear) and isinstance(act, nn.GELU) and act.approximate == "none":
                lin.act = "gelu"  # the GELU that alone read this layer's output, now its post-op
                _replace(model, act_path, nn.Identity())
        if folds["conv_bn"]:  # a CNN: its conv weights channels-last (their outputs follow)
            use_channels_last(model, standardized=True)
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


def fold_state_dict(model: nn.Module, state: dict) -> dict:
    """A copy of ``state`` (a default build's state_dict) with the BatchNorm and LoRA entries
    of the inference build ``model`` folded in, as its ``load_state_dict`` folds them."""
    folded = dict(state)
    _fold_state(model, folded, "")
    return folded


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


_register_compiled_op()
