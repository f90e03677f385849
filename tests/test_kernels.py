"""The default build's kernel choices: oneDNN linear layers (``kernels="auto"``, eager and
compiled), the ``sdpa`` helper that writes short bfloat16 CPU attention out, and a CNN's
channels-last convolution weights. Each must
compute what the plain modules compute (to float rounding) on every path, and step aside
where it cannot: autograd, tracing, ``torch.func``, tensor subclasses, other dtypes.
Speed is measured by benchmarks/bench_vs_timm.py and benchmarks/attention_kernels.py.
"""

from __future__ import annotations

import operator
from pathlib import Path

import pytest
from small_sizes import SIZES, SMALL

import archlang

torch = pytest.importorskip("torch")

from onednn_pair import onednn_pair  # noqa: E402

from archlang.lower.example import example_inputs  # noqa: E402
from archlang.lower.inference_runtime import OneDnnLinear  # noqa: E402
from archlang.lower.prelude import sdpa  # noqa: E402

F = torch.nn.functional
ROOT = Path(__file__).resolve().parent.parent
ONEDNN = torch.backends.mkldnn.is_available()
VIT = ROOT / "specs" / "vit_b16.arch"



def _vit(**kw):
    torch.manual_seed(0)
    return archlang.build(VIT, "vit_b16", max_memory=None, **SMALL["vit_b16"], **kw).eval()


def _inputs(spec, arch):
    return example_inputs(archlang.graph(spec, arch, **SMALL.get(arch, {})), batch=2, sizes=SIZES)


# ----------------------------------------------------------------------------- oneDNN linear layers


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
def test_default_build_runs_onednn_linears_and_kernels_torch_keeps_nn_linear() -> None:
    fast, plain = _vit(), _vit(kernels="torch")
    linears = [m for m in fast.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is OneDnnLinear and m.act == "none" for m in linears)
    assert all(type(m) is torch.nn.Linear for m in plain.modules() if isinstance(m, torch.nn.Linear))
    assert fast.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(fast.state_dict())
    (x,) = _inputs(VIT, "vit_b16")
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    from archlang.lower.inference_runtime import use_plain_linears

    back = use_plain_linears(_vit())  # what the distributed wrappers train
    assert all(type(m) is torch.nn.Linear for m in back.modules() if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValueError, match="kernels is one of"):
        archlang.build(VIT, "vit_b16", max_memory=None, kernels="fast", **SMALL["vit_b16"])


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
def test_onednn_linear_steps_aside_for_tracers_transforms_and_subclasses(monkeypatch) -> None:
    """Under fx tracing, torch.func (vmap, grad), a fake tensor and autograd the layer calls
    F.linear; a call that took oneDNN there would fail or lose its gradient."""
    lin, ref = onednn_pair(12, 7)
    x = torch.randn(5, 12)
    calls: list[int] = []
    real = torch.ops.mkldnn._linear_pointwise

    class Spy:
        def __call__(self, *args):
            calls.append(1)
            return real(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    with torch.no_grad():
        lin(x)
    assert calls, "no oneDNN call where no gradient is wanted"
    calls.clear()
    traced = torch.fx.symbolic_trace(lin)
    assert "mkldnn" not in traced.code
    with torch.no_grad():
        batched = torch.func.vmap(lin)(x.reshape(5, 1, 12))
    torch.testing.assert_close(batched.reshape(5, 7), ref(x), rtol=1e-5, atol=1e-5)
    grads = torch.func.grad(lambda p, x: torch.func.functional_call(lin, p, (x,)).sum())(dict(lin.named_parameters()), x)
    want = torch.func.grad(lambda p, x: torch.func.functional_call(ref, p, (x,)).sum())(dict(ref.named_parameters()), x)
    torch.testing.assert_close(grads["weight"], want["weight"])
    stacked = {k: torch.stack([v.detach(), 2 * v.detach()]) for k, v in lin.named_parameters()}
    with torch.no_grad():  # vmap over the parameters (an ensemble), the input plain
        ens = torch.func.vmap(lambda p: torch.func.functional_call(lin, p, (x,)))(stacked)
    torch.testing.assert_close(ens[1], 2 * ref(x), rtol=1e-5, atol=1e-5)
    import torch.autograd.forward_ad as fwad

    tangent = torch.randn_like(x)
    with torch.no_grad(), fwad.dual_level():  # forward-mode AD under no_grad
        _, jvp = fwad.unpack_dual(lin(fwad.make_dual(x, tangent)))
    torch.testing.assert_close(jvp, tangent @ ref.weight.detach().T, rtol=1e-5, atol=1e-5)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
        fake = mode.from_tensor(x)
        assert lin(fake).shape == (5, 7)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        lin(x)
    assert counter.get_total_flops() == 2 * 5 * 12 * 7
    assert not calls, "oneDNN called under a tracer, a transform or a dispatch mode"


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
@pytest.mark.parametrize("pack", [False, True], ids=["plain", "packed"])
@pytest.mark.parametrize("act", ["none", "gelu"])
def test_onednn_linear_races_the_kernels_once_per_shape_and_keeps_the_winner(monkeypatch, act: str,
                                                                             pack: bool) -> None:
    """Over RACE_MACS a layer races oneDNN against F.linear on its first call at a shape, then
    calls only the winner at that shape; either way the values are F.linear's (and GELU's). A
    layer that packs races oneDNN on its blocked weight, under a key of its own."""
    from archlang.lower import inference_runtime as rt

    monkeypatch.setattr(rt, "RACE_MACS", 1000)
    monkeypatch.setattr(rt, "_ONEDNN_FASTER", {})
    calls: list[str] = []
    for name in ("_onednn_matmul", "_gemm"):
        real = getattr(rt, name)
        monkeypatch.setattr(rt, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    lin, ref = onednn_pair(32, 48, act, pack)
    x = torch.randn(4, 10, 32)
    want = F.gelu(ref(x)) if act == "gelu" else ref(x)
    with torch.no_grad():
        first = lin(x)
        (key, faster), = rt._ONEDNN_FASTER.items()
        winner = "_onednn_matmul" if faster else "_gemm"
        assert len(calls) == 9 and calls[:8] == ["_onednn_matmul", "_gemm"] * 4 and calls[8] == winner, calls
        assert key == (40, 32, 48, torch.float32, act, True, torch.get_num_threads(), pack)
        assert ("_packed" in lin.__dict__) == (pack and faster)  # a lost race frees the copy
        for forced in (faster, not faster):
            rt._ONEDNN_FASTER[key] = forced
            calls.clear()
            got = lin(x)
            assert calls == ["_onednn_matmul" if forced else "_gemm"]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(first, want, rtol=1e-5, atol=1e-5)
        calls.clear()
        lin(x[:2])  # another shape: another race
        assert len(calls) == 9 and len(rt._ONEDNN_FASTER) == 2
        monkeypatch.setattr(rt, "RACE_MACS", 10**9)
        calls.clear()
        lin(x[:1])  # under the threshold: oneDNN, unraced
        assert calls == ["_onednn_matmul"] and len(rt._ONEDNN_FASTER) == 2


# ----------------------------------------------------------------------------- the sdpa helper


def _qkv(b: int, h: int, n: int, d: int, dtype, m: int | None = None):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, n, d, generator=gen).to(dtype)
    k, v = (torch.randn(b, h, m or n, d, generator=gen).to(dtype) for _ in range(2))
    return q, k, v


def _reference(q, k, v, mask=None, causal=False, scale=None):
    """The attention in float64."""
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    if mask is not None:
        s = s + mask.double()
    return s.softmax(-1) @ v


class _CountSdpa:
    def __init__(self, monkeypatch):
        self.calls = 0
        self.real = F.scaled_dot_product_attention
        monkeypatch.setattr(F, "scaled_dot_product_attention", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.mark.parametrize("case", ["plain", "bias", "causal", "cross", "scale"])
def test_sdpa_helper_writes_short_bf16_attention_out(case: str, monkeypatch) -> None:
    q, k, v = _qkv(3, 2, 49, 16, torch.bfloat16, m=30 if case == "cross" else None)
    mask = torch.randn(1, 2, 49, k.shape[-2]).bfloat16() if case == "bias" else None
    kw = {"is_causal": True} if case == "causal" else {"scale": 0.3} if case == "scale" else {}
    spy = _CountSdpa(monkeypatch)
    with torch.no_grad():
        got = sdpa(q, k, v, attn_mask=mask, **kw)
    assert spy.calls == 0, "SDPA called where the written-out attention is faster"
    want = _reference(q, k, v, mask, causal=case == "causal", scale=kw.get("scale"))
    torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=2e-2)  # bfloat16 rounding
    with torch.no_grad():
        sdpa_out = spy.real(q, k, v, attn_mask=mask, **kw)
    torch.testing.assert_close(got, sdpa_out, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("case", ["fp32", "long", "grad", "dropout", "bool mask"])
def test_sdpa_helper_calls_sdpa_everywhere_else(case: str, monkeypatch) -> None:
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    q, k, v = _qkv(2, 2, 300 if case == "long" else 49, 16, dtype)
    mask = torch.rand(1, 1, q.shape[-2], q.shape[-2]) > 0.2 if case == "bool mask" else None
    if mask is not None:
        mask |= torch.eye(q.shape[-2], dtype=torch.bool)
    if case == "grad":
        q.requires_grad_(True)
    spy = _CountSdpa(monkeypatch)
    with torch.set_grad_enabled(case == "grad"):
        got = sdpa(q, k, v, attn_mask=mask, dropout_p=0.5 if case == "dropout" else 0.0)
    assert spy.calls == 1
    if case not in ("dropout",):
        want = spy.real(q, k, v, attn_mask=mask)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    if case == "grad":
        got.sum().backward()
        assert q.grad is not None


@pytest.mark.parametrize("winner", [True, False])
def test_sdpa_helper_races_large_short_attentions_once_and_keeps_the_winner(winner: bool, monkeypatch) -> None:
    """From ``min_scores`` scores up, the first call at a shape races the two forms (each
    called 4 times), then every call there takes the kept winner; the values agree either way."""
    from archlang.lower.prelude import _AttentionRace

    monkeypatch.setattr(_AttentionRace, "min_scores", 1000)
    monkeypatch.setattr(_AttentionRace, "faster", {})
    q, k, v = _qkv(2, 2, 49, 16, torch.bfloat16)
    spy = _CountSdpa(monkeypatch)
    with torch.no_grad():
        first = sdpa(q, k, v)
        assert spy.calls == 4 + (not _AttentionRace.faster[next(iter(_AttentionRace.faster))])
        (key,) = _AttentionRace.faster
        assert key == ((2, 2, 49, 16), (2, 2, 49, 16), None, False, torch.bfloat16, torch.get_num_threads())
        _AttentionRace.faster[key] = winner
        spy.calls = 0
        got = sdpa(q, k, v)
        assert spy.calls == (0 if winner else 1)
        sdpa(q[:1], k[:1], v[:1])  # another shape: another race
        assert len(_AttentionRace.faster) == 2
    want = _reference(q, k, v)
    for out in (first, got):
        torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)


def test_bf16_vit_and_swin_agree_with_their_float32_selves() -> None:
    """A bfloat16 build (written-out attention) against the float32 build of the same weights
    (SDPA), at bfloat16's tolerance: the helper computes the same attention."""
    for stem, arch in (("vit_b16", "vit_b16"), ("swin_t", "swin_t")):
        spec = ROOT / "specs" / f"{stem}.arch"
        torch.manual_seed(0)
        ref = archlang.build(spec, arch, max_memory=None, **SMALL[arch]).eval()
        low = archlang.build(spec, arch, max_memory=None, dtype="bfloat16", **SMALL[arch]).eval()
        low.load_state_dict({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                             for k, v in ref.state_dict().items()})
        (x,) = _inputs(spec, arch)
        with torch.no_grad():
            want, got = ref(x), low(x.bfloat16()).float()
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() <= 0.05 * max(scale, 1.0), stem


@pytest.mark.skipif(not ONEDNN or torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the scratch formula was measured on AVX-512 oneDNN")
@pytest.mark.parametrize(("rows", "k"), [(1, 64), (2, 64), (100, 3), (100, 63), (394, 768), (20, 1500), (7, 520)])
def test_onednn_linear_scratch_is_what_the_profiler_sees(rows: int, k: int) -> None:
    """The cost model's oneDNN scratch (``onednn_linear_scratch``) against the profiler's
    allocations over one call, beyond the output, at the threads the estimate assumes."""
    import sys

    from archlang.cost.rules import cpu_threads
    from archlang.ops.layers import onednn_linear_scratch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from memory_truth import _peak_of, _profile

    lin = torch.nn.Linear(k, 96)
    lin.__class__ = OneDnnLinear
    lin.act = "none"
    x = torch.randn(rows, k)
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    try:
        with torch.no_grad():
            lin(x)
            with _profile() as prof:
                y = lin(x)
                del y
    finally:
        torch.set_num_threads(threads)
    assert _peak_of(prof) - rows * 96 * 4 == 4 * onednn_linear_scratch(rows, k)


@pytest.mark.skipif(getattr(torch._C._cpu, "_init_amx", lambda: False)(), reason="measured on AVX-512 without AMX: with AMX tiles oneDNN's "
                    "bfloat16 matmuls pack their operands and hold ~14% more at this size (not modelled)")
def test_bf16_window_attention_memory_follows_the_profiler() -> None:
    """A bfloat16 Swin's inference peak (its windows' attention written out, scores and all)
    against the profiler, as tests/test_memory.py does for float32."""
    import sys

    from archlang.cost.rules import cpu_threads

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import memory_truth

    spec, params = ROOT / "specs" / "swin_t.arch", {**SMALL["swin_t"], "depths": [2, 2, 1, 1]}
    torch.manual_seed(0)
    model = archlang.build(spec, "swin_t", max_memory=None, dtype="bfloat16", **params)

    def make():
        return [x.bfloat16() for x in example_inputs(model.archlang_graph, batch=4)]

    est = archlang.cost(spec, "swin_t", batch=4, dtype="bfloat16", **params).peak_inference_bytes()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    try:
        got = memory_truth.measure_inference_peak(model, make)
    finally:
        torch.set_num_threads(threads)
    assert abs(est / got - 1) <= 0.05, (est, got)


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
def test_compiled_eval_calls_the_onednn_op_and_training_and_export_do_not(monkeypatch) -> None:
    """The choice is made while Dynamo traces (``OneDnnLinear.forward``), so the traced graph
    shows it; a graph-recording backend sees it without Inductor's C++ builds (the op through
    Inductor: ``test_compile.py``'s ViT). The op is taken on the CPUs listed in
    ``_COMPILED_ONEDNN_CAPABILITIES`` (this one is made one of them here); on the others the
    compiled graph calls ``linear``."""
    from archlang.lower import inference_runtime as rt

    here = rt._CPU_CAPABILITY
    graphs: list[str] = []

    def record(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    model = _vit()
    (x,) = _inputs(VIT, "vit_b16")
    monkeypatch.setattr(rt, "_COMPILED_ONEDNN_CAPABILITIES", ())
    with torch.no_grad():
        want = model(x)
        got = torch.compile(model, fullgraph=True, backend=record)(x)
    assert "onednn" not in graphs[-1] and "linear" in graphs[-1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    monkeypatch.setattr(rt, "_COMPILED_ONEDNN_CAPABILITIES", (here,))
    with torch.no_grad():
        got = torch.compile(model, fullgraph=True, backend=record)(x)
    assert "archlang.onednn_linear" in graphs[-1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    model.train()
    torch.compile(model, fullgraph=True, backend=record)(x)
    assert "onednn" not in graphs[-1] and "linear" in graphs[-1]
    model.eval()
    assert "onednn" not in str(torch.export.export(model, (x,)).graph)


# ----------------------------------------------------------------------------- channels-last CNNs

CNN = """
arch tiny_cnn(img: int = 32, classes: int = 10) {
  in x: [B, 3, img, img]
  y = relu(batchnorm(conv2d(x, 8, kernel = 3, stride = 1, padding = 1, bias = false)))
  y = relu(batchnorm(conv2d(y, 8, kernel = 3, stride = 1, padding = 1, bias = false)))
  y = relu(batchnorm(conv2d(y, 16, kernel = 3, stride = 2, padding = 1, bias = false)))
  y = relu(batchnorm(conv2d(y, 16, kernel = 1, stride = 1, padding = 0, bias = false)))
  y = relu(batchnorm(conv2d(y, 16, kernel = 3, stride = 1, padding = 1, bias = false)))
  y = relu(batchnorm(conv2d(y, 32, kernel = 3, stride = 2, padding = 1, bias = false)))
  y = relu(batchnorm(conv2d(y, 32, kernel = 1, stride = 1, padding = 0, bias = false)))
  y = relu(batchnorm(conv2d(y, 32, kernel = 3, stride = 1, padding = 1, bias = false)))
  out logits = linear(mean(y, dim = [2, 3]), classes)
}
"""


def _convs(model) -> list:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_a_cnn_keeps_its_conv_weights_channels_last_and_a_vit_does_not(tmp_path) -> None:
    cl = torch.channels_last
    assert archlang.graph(CNN, "tiny_cnn").prefers_channels_last()
    assert not archlang.graph(VIT, "vit_b16", **SMALL["vit_b16"]).prefers_channels_last()
    torch.manual_seed(0)
    cnn = archlang.build(CNN, "tiny_cnn", max_memory=None)
    assert all(m.weight.is_contiguous(memory_format=cl) for m in _convs(cnn))
    assert not _convs(cnn)[1].weight.is_contiguous()  # a 3x3 kernel's (a 1x1's is both)
    plain = archlang.build(CNN, "tiny_cnn", max_memory=None, kernels="torch")
    assert all(m.weight.is_contiguous() for m in _convs(plain))
    assert all(m.weight.is_contiguous() for m in _convs(_vit()))  # one patch conv: not a CNN
    # the layout survives loading weights and a dtype cast; the file holds dense tensors
    cnn.load_state_dict(plain.state_dict())
    assert all(m.weight.is_contiguous(memory_format=cl) for m in _convs(cnn.to(torch.float64).float()))
    path = archlang.save(cnn, tmp_path / "cnn.safetensors")
    back = archlang.load(path, max_memory=None)
    assert all(m.weight.is_contiguous(memory_format=cl) for m in _convs(back))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), plain.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_channels_last_cnn_agrees_with_the_interpreter_and_trains_alike() -> None:
    from archlang.lower.interpret import interpret

    g = archlang.graph(CNN, "tiny_cnn")
    torch.manual_seed(0)
    model = archlang.build(CNN, "tiny_cnn", max_memory=None).eval()
    plain = archlang.build(CNN, "tiny_cnn", max_memory=None, kernels="torch")
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model(x)
        (want,) = interpret(g, model.state_dict(), [x])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    model.train(), plain.train()
    model(x).square().sum().backward()
    plain(x).square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_channels_last_cnn_memory_follows_the_profiler() -> None:
    """The cost model's NHWC convolution rules (a reordered weight and per-thread scratch in
    the forward, two weights' worth in the backward) against the profiler, at a size where
    the convolutions' temporaries matter."""
    import sys

    from archlang.cost.rules import cpu_threads

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import memory_truth

    torch.manual_seed(0)
    model = archlang.build(CNN, "tiny_cnn", max_memory=None)

    def make():
        return [torch.randn(4, 3, 32, 32)]

    inf = archlang.cost(CNN, "tiny_cnn", batch=4).peak_inference_bytes()[0]
    tr = archlang.cost(CNN, "tiny_cnn", batch=4, train=True).peak_training_bytes()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    try:
        got_inf = memory_truth.measure_inference_peak(model, make)
        got_tr = memory_truth.measure_training_peak(model, make)
    finally:
        torch.set_num_threads(threads)
    assert abs(inf / got_inf - 1) <= 0.05, (inf, got_inf)
    assert abs(tr / got_tr - 1) <= 0.05, (tr, got_tr)


def test_swinv2_qkv_bias_joins_the_matmul_unless_a_hook_or_tap_needs_the_module_call() -> None:
    """Swin-V2's q/0/v bias is F.linear's bias (one matmul, as timm's) on a plain qkv layer; a
    hook on that layer still fires, and sees the projection without the bias, as before."""
    spec = ROOT / "specs" / "swinv2_t.arch"
    torch.manual_seed(0)
    model = archlang.build(spec, "swinv2_t", max_memory=None, **SMALL["swinv2_t"]).eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "q_bias") and m.q_bias is not None:
                m.q_bias.normal_(), m.v_bias.normal_()
    (x,) = _inputs(spec, "swinv2_t")
    attn = model.get_submodule("layers.0.blocks.0.attn")
    seen: list = []
    with torch.no_grad():
        fused = model(x)
        handle = attn.qkv.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
        hooked = model(x)
        handle.remove()
    assert len(seen) == 1
    inp, out = seen[0]
    torch.testing.assert_close(out, F.linear(inp, attn.qkv.weight), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused, hooked, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- GELU in place


def test_the_gelu_after_a_linear_layer_runs_in_place_where_nothing_else_sees_it() -> None:
    """The default build's MLP GELU (the only reader of fc1's output) overwrites that output
    with no gradient wanted, and computes what ``kernels="torch"`` computes; a hook, autograd,
    a replaced layer or torch.compile each take the out-of-place GELU."""
    import copy

    from archlang.lower.inference_runtime import InplaceGELU

    model, plain = _vit(), _vit(kernels="torch")
    pairs = model.archlang_graph.gelus_after_linears()
    mlp = model.blocks[0].mlp
    assert pairs and type(mlp.act) is InplaceGELU and type(plain.blocks[0].mlp.act) is torch.nn.GELU
    assert sum(type(m) is InplaceGELU for m in model.modules()) == len(pairs)
    (x,) = _inputs(VIT, "vit_b16")
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=1e-5)
        h = torch.randn(2, 5, mlp.fc1.in_features)
        y = mlp.fc1(h)
        assert mlp.act(y).data_ptr() == y.data_ptr()  # in place
        kept = []
        handle = mlp.fc1.register_forward_hook(lambda m, i, o: kept.append(o))
        y = mlp.fc1(h)
        out = mlp.act(y)
        handle.remove()
        assert out.data_ptr() != y.data_ptr()
        torch.testing.assert_close(kept[0], F.linear(h, mlp.fc1.weight, mlp.fc1.bias))  # not overwritten
        twin = copy.deepcopy(model)  # the copy's GELU looks at the copy's layer
        assert twin.blocks[0].mlp.act.producer[0] is twin.blocks[0].mlp
        twin.blocks[0].mlp.fc1 = torch.nn.Sequential(twin.blocks[0].mlp.fc1)  # replaced: not a plain layer
        y = twin.blocks[0].mlp.fc1(h)
        assert twin.blocks[0].mlp.act(y).data_ptr() != y.data_ptr()
    y = mlp.fc1(h.requires_grad_())
    out = mlp.act(y)  # autograd: out of place, and the gradient flows
    assert out.data_ptr() != y.data_ptr()
    out.sum().backward()
    assert h.grad is not None
    compiled = torch.compile(mlp.act, fullgraph=True, backend="eager")
    with torch.no_grad():
        y = mlp.fc1(h.detach())
        assert compiled(y).data_ptr() != y.data_ptr()


@pytest.mark.parametrize("keys", [49, 197])
def test_compiled_sdpa_helper_calls_sdpa(keys: int) -> None:
    """Under torch.compile (no race in a graph) the helper calls SDPA for short bf16
    attention, which eager mode may write out (Swin's 49-key windows, ViT's 197 tokens)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm

    q, k, v = (torch.randn(4, 2, keys, 16, dtype=torch.bfloat16) for _ in range(3))
    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(sdpa, backend=capture, fullgraph=True)(q, k, v)
        want = F.scaled_dot_product_attention(q, k, v)
    calls = {n.target for n in graphs[0].graph.nodes if n.op == "call_function"}
    assert F.scaled_dot_product_attention in calls and not calls & {torch.matmul, operator.matmul}
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)
