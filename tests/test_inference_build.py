"""The inference build (``archlang.build(..., inference=True)``, ``archc build --inference``):
for every shipped spec at a small size, with random weights and random BatchNorm running
statistics, it loads the default build's state_dict (and its own), its eval outputs equal
the default build's within 1e-5 (relative to the outputs' scale), and the folds happened:
no BatchNorm that follows a conv runs, no dropout module is left, no LoRA layer is left,
the Swin biases are precomputed buffers. Speed is measured by benchmarks/bench_inference.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from small_sizes import SIZES, SMALL, SMALL_CNNS

import archlang
from archlang.check import choose_arch, load

torch = pytest.importorskip("torch")

from archlang.lower.example import example_inputs  # noqa: E402
from archlang.lower.inference import conv_bn_pairs, inference_source  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.arch"))
TOL = 1e-5
# two blocks in the first stage, so that a shifted window (and its mask) is there at a small size
SHIFTED = {"depths": [2, 2, 1, 1]}
# the ResNets at a smaller image, one block per stage (their widths are fixed)
CHEAPER = {"resnet50": {"img": 32}, "sasa_resnet50": {"img": 32},
           "nonlocal_resnet50": {"img": 32, "layers": [1, 1, 1, 1], "nl": [0, 1, 1, 0]}}


def _params(stem: str) -> dict:
    p = {**SMALL.get(stem, {}), **SMALL_CNNS.get(stem, {}), **CHEAPER.get(stem, {})}
    return {**p, **SHIFTED} if stem.startswith("swin") else p


def _arch(spec: Path) -> str:
    name, _ = choose_arch(load(spec), None)
    assert name is not None
    return name


def randomise(model) -> None:
    """Every float parameter and buffer random (BatchNorm variances positive), in place."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif t.ndim <= 1:
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=gen) if name.endswith("weight")
                        else 0.2 * torch.randn(t.shape, generator=gen))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * fan_in ** -0.5)


def _outputs(model, xs) -> dict:
    with torch.no_grad():
        out = model(*xs)
    return out if isinstance(out, dict) else {"out": out}


def _assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        scale = max(1.0, want[k].abs().max().item())
        err = (got[k].double() - want[k].double()).abs().max().item()
        assert err <= TOL * scale, f"{k}: max |inference - default| = {err:.3g} at output scale {scale:.3g}"


def _case(spec: Path):
    arch = _arch(spec)
    params = _params(spec.stem)
    g = archlang.graph(spec, arch, **params)
    if g.param_count() > 3_000_000 and spec.stem not in SMALL_CNNS:  # the ResNets' widths are fixed
        pytest.skip(f"{spec.stem} has no small configuration")
    torch.manual_seed(0)
    default = archlang.build(spec, arch, max_memory=None, **params).eval()
    randomise(default)
    return arch, params, g, default


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_inference_build_matches_default_and_folds(spec: Path) -> None:
    arch, params, g, default = _case(spec)
    xs = example_inputs(g, batch=2, sizes=SIZES)
    want = _outputs(default, xs)

    torch.manual_seed(1)  # other initial weights: the loaded state_dict must decide everything
    model = archlang.build(spec, arch, max_memory=None, inference=True, **params)
    assert not model.training
    model.load_state_dict(default.state_dict())  # strict: the default keys, folded as they load
    calls: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
    _assert_close(_outputs(model, xs), want)

    pairs = conv_bn_pairs(g)
    folded = {bn for _, bn, _, _ in pairs}
    bn_nodes = [n.name for n in g.nodes if n.op.op == "batchnorm"]
    assert not folded & set(calls), "a BatchNorm that follows a conv still ran"
    assert len(calls) == len(bn_nodes) - len(folded)  # the others (after a non-conv) still run
    kinds = {type(m).__name__ for m in model.modules()}
    assert not kinds & {"Dropout", "DropPath", "LoRALinear", "LoRA"}
    std_convs = {n for n, m in model.named_modules() if type(m).__name__ == "StdConv2d"}
    assert not std_convs & {conv for conv, _, _, std in pairs if std is not None}
    seen_shift: list[bool] = []
    for name, m in model.named_modules():
        if hasattr(m, "fold_constants"):  # Swin: the bias is a precomputed, non-persistent buffer
            assert m.fused_bias is not None and f"{name}.fused_bias" in dict(model.named_buffers())
            assert f"{name}.fused_bias" not in model.state_dict()
            shifted_windows = any(m.shift) and not any(m.pad)  # shift + partition: one gather each way
            assert (m.window_index is not None) == shifted_windows
            seen_shift.append(shifted_windows)
    if spec.stem.startswith("swin"):
        assert any(seen_shift), "the small Swin configuration has no shifted block"

    # its own (folded) state_dict loads too (strict), and changes nothing
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    _assert_close(_outputs(model, xs), want)


def test_conv_bn_pairs_follow_the_graph() -> None:
    """ResNet-50: every BatchNorm reads a conv (the stem, three per bottleneck, the shortcut)."""
    g = archlang.graph(ROOT / "specs" / "resnet50.arch", "resnet50", **SMALL_CNNS["resnet50"])
    pairs = conv_bn_pairs(g)
    assert ("conv1", "bn1", 1e-5, None) in pairs
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1", 1e-5, None) in pairs
    assert len(pairs) == sum(n.op.op == "batchnorm" for n in g.nodes) == 1 + 4 * 3 + 4


def test_fold_after_load_and_train_mode_is_inert() -> None:
    """Folding a model that already holds trained weights gives its outputs; running stats are
    baked in, so train() no longer changes what the model computes."""
    from archlang.lower.inference import fold

    spec = ROOT / "specs" / "resnet50.arch"
    params = {**SMALL_CNNS["resnet50"], "img": 32}
    default = archlang.build(spec, "resnet50", max_memory=None, **params).eval()
    randomise(default)
    x = torch.randn(2, 3, 32, 32)
    want = _outputs(default, [x])
    model = archlang.build(spec, "resnet50", max_memory=None, **params)
    model.load_state_dict(default.state_dict())
    fold(model)
    _assert_close(_outputs(model, [x]), want)
    model.train()
    _assert_close(_outputs(model, [x]), want)
    assert fold(model) is model  # folding twice changes nothing
    _assert_close(_outputs(model.eval(), [x]), want)


def test_written_module_has_a_standalone_inference_build(tmp_path: Path) -> None:
    """``archc build --inference`` writes build_inference(), which needs nothing but torch."""
    from typer.testing import CliRunner

    from archlang.cli import app
    from archlang.lower.build import load_source

    spec = ROOT / "specs" / "resnet50.arch"
    params = {**SMALL_CNNS["resnet50"], "img": 32}
    sets = [a for k, v in params.items() for a in ("--set", f"{k}={list(v) if isinstance(v, tuple) else v}")]
    r = CliRunner().invoke(app, ["build", str(spec), *sets, "--inference", "--out", str(tmp_path),
                                 "--max-memory", "off"])
    assert r.exit_code == 0, r.output
    assert "build_inference" in r.output
    source = (tmp_path / "resnet50.py").read_text()
    assert "import archlang" not in source and "from archlang" not in source
    module = load_source(source, "resnet50_inference_test")
    default = archlang.build(spec, "resnet50", max_memory=None, **params).eval()
    randomise(default)
    model = module.build_inference()
    model.load_state_dict(default.state_dict())
    x = torch.randn(2, 3, 32, 32)
    _assert_close(_outputs(model, [x]), _outputs(default, [x]))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    g = archlang.graph(spec, "resnet50", **params)
    assert inference_source("", g, "Resnet50").count("def build_inference") == 1


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["swin_t", "swinv2_t", "resnet50"])
def test_inference_build_compiles_without_graph_breaks(stem: str) -> None:
    spec = ROOT / "specs" / f"{stem}.arch"
    arch, params, g, default = _case(spec)
    model = archlang.build(spec, arch, max_memory=None, inference=True, **params)
    model.load_state_dict(default.state_dict())
    xs = example_inputs(g, batch=2, sizes=SIZES)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    _assert_close(_outputs(compiled, xs), _outputs(default, xs))


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["swin_t", "resnet50"])
def test_inference_build_exports(stem: str, tmp_path: Path) -> None:
    """torch.export and ONNX (dynamic batch) of the inference build agree with it at batches 1 and 3."""
    from archlang.lower.export import export_onnx, export_program, verify_onnx, verify_program

    spec = ROOT / "specs" / f"{stem}.arch"
    arch, params, _, default = _case(spec)
    model = archlang.build(spec, arch, max_memory=None, inference=True, **params)
    model.load_state_dict(default.state_dict())
    assert verify_program(export_program(model), model) <= 1e-4
    assert verify_onnx(export_onnx(model, tmp_path / f"{stem}.onnx"), model) <= 1e-4


@pytest.mark.parametrize("standardize", [False, True])
def test_fold_conv_bn_math(standardize: bool) -> None:
    """One conv (weight-standardised or not, with or without a bias) and a BatchNorm with
    random statistics fold into one conv with the same output."""
    from archlang.lower.inference_runtime import _fold_conv_bn
    from archlang.lower.prelude import StdConv2d

    torch.manual_seed(0)
    conv = (StdConv2d if standardize else torch.nn.Conv2d)(4, 6, 3, padding=1, bias=not standardize)
    bn = torch.nn.BatchNorm2d(6, eps=1e-3).eval()
    randomise(torch.nn.Sequential(conv, bn))
    x = torch.randn(2, 4, 8, 8)
    w, b = _fold_conv_bn(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, 1e-3,
                         conv.eps if standardize else None)
    with torch.no_grad():
        want = bn(conv(x))
    got = torch.nn.functional.conv2d(x, w, b, padding=1)
    assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())


def test_weight_standardised_conv_and_batchnorm_fold_to_a_plain_conv() -> None:
    src = """
arch tiny() {
  in x: [B, 3, 16, 16]
  y = relu(bn: batchnorm(conv: conv2d(x, 8, kernel = 3, padding = 1, bias = false, standardize = true)))
  out logits = fc: linear(mean(y, dim = [2, 3]), 5)
}
"""
    default = archlang.build(src, max_memory=None).eval()
    randomise(default)
    model = archlang.build(src, max_memory=None, inference=True)
    model.load_state_dict(default.state_dict())
    assert type(model.conv) is torch.nn.Conv2d and isinstance(model.bn, torch.nn.Identity)
    x = torch.randn(2, 3, 16, 16)
    _assert_close(_outputs(model, [x]), _outputs(default, [x]))


def test_save_refuses_a_folded_model_and_load_folds(tmp_path: Path) -> None:
    """``archlang.save`` refuses an inference build whose weights were folded (``load`` could not
    rebuild it); the default model saves, and ``archlang.load(..., inference=True)`` folds it."""
    spec = ROOT / "specs" / "resnet50.arch"
    params = {**SMALL_CNNS["resnet50"], "img": 32}
    default = archlang.build(spec, "resnet50", max_memory=None, **params).eval()
    randomise(default)
    with pytest.raises(ValueError, match="inference build"):
        archlang.save(archlang.build(spec, "resnet50", max_memory=None, inference=True, **params), tmp_path / "f.st")
    archlang.save(default, tmp_path / "m.safetensors")
    model = archlang.load(tmp_path / "m.safetensors", inference=True, max_memory=None)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    _assert_close(_outputs(model, [x]), _outputs(default, [x]))


def test_reference_weights_load_strictly_into_an_inference_build() -> None:
    """``load_timm_weights`` into an inference build takes a reference's state (BatchNorm
    entries and all), folds it and gives the default build's outputs; a missing entry still
    fails with the key named."""
    from archlang.lower.weights import WeightImportError

    spec = ROOT / "specs" / "resnet50.arch"
    params = {**SMALL_CNNS["resnet50"], "img": 32}
    default = archlang.build(spec, "resnet50", max_memory=None, **params).eval()
    randomise(default)
    state = default.state_dict()  # timm's names, by design
    model = archlang.load_timm_weights(archlang.build(spec, "resnet50", max_memory=None, inference=True, **params),
                                       state)
    x = torch.randn(2, 3, 32, 32)
    _assert_close(_outputs(model, [x]), _outputs(default, [x]))
    with pytest.raises(WeightImportError, match=r"fc\.bias"):
        archlang.load_timm_weights(model, {k: v for k, v in state.items() if k != "fc.bias"})


def test_a_shared_conv_is_not_folded() -> None:
    """A conv called twice (weight sharing) keeps its weights: the BatchNorm after one call stays."""
    src = """
arch tiny() {
  in x: [B, 3, 16, 16]
  a = bn: batchnorm(conv: conv2d(x, 3, kernel = 3, padding = 1))
  b = bn2: batchnorm(conv2: conv2d(conv(a), 4, kernel = 1))
  out logits = fc: linear(mean(b, dim = [2, 3]), 5)
}
"""
    default = archlang.build(src, max_memory=None).eval()
    randomise(default)
    assert [p[:2] for p in conv_bn_pairs(default.archlang_graph)] == [("conv2", "bn2")]
    model = archlang.build(src, max_memory=None, inference=True)
    model.load_state_dict(default.state_dict())
    assert isinstance(model.bn, torch.nn.BatchNorm2d) and isinstance(model.bn2, torch.nn.Identity)
    x = torch.randn(2, 3, 16, 16)
    _assert_close(_outputs(model, [x]), _outputs(default, [x]))


ONEDNN = torch.backends.mkldnn.is_available()


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
def test_linear_layers_run_onednn_and_take_in_their_gelu() -> None:
    """Every ``nn.Linear`` of the inference build becomes OneDnnLinear (same parameters); a
    GELU that alone reads a linear layer's output is that layer's post-op, its module gone."""
    from archlang.lower.inference import linear_gelu_pairs
    from archlang.lower.inference_runtime import OneDnnLinear

    spec = ROOT / "specs" / "vit_b16.arch"
    arch, params, g, default = _case(spec)
    model = archlang.build(spec, arch, max_memory=None, inference=True, **params)
    model.load_state_dict(default.state_dict())
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    pairs = linear_gelu_pairs(g)
    assert len(pairs) == params["depth"] and all(p[0].endswith("mlp.fc1") for p in pairs), pairs
    for lin, act in pairs:
        assert isinstance(model.get_submodule(lin), OneDnnLinear) and model.get_submodule(lin).act == "gelu"
        assert isinstance(model.get_submodule(act), torch.nn.Identity)
    assert not any(isinstance(m, torch.nn.GELU) for m in model.modules())
    assert model.state_dict().keys() == default.state_dict().keys()
    xs = example_inputs(g, batch=2, sizes=SIZES)
    _assert_close(_outputs(model, xs), _outputs(default, xs))


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
@pytest.mark.parametrize("pack", [False, True], ids=["plain", "packed"])
@pytest.mark.parametrize("act", ["none", "gelu"])
def test_onednn_linear_agrees_with_f_linear_on_every_path(act: str, pack: bool) -> None:
    """oneDNN without autograd (float32 and bfloat16, 2-d and 3-d, strided inputs; reading the
    weight or its blocked copy), and F.linear where a gradient is wanted, under autocast and in
    float64: the same values each way."""
    from onednn_pair import onednn_pair

    F = torch.nn.functional
    lin, ref = onednn_pair(24, 40, act, pack)

    def want(x):
        y = ref(x)
        return F.gelu(y) if act == "gelu" else y

    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        for inp in (x, x[:, 1], x.transpose(0, 1)):
            torch.testing.assert_close(lin(inp), want(inp), rtol=1e-5, atol=1e-5)
        ref.double(), lin.double()
        torch.testing.assert_close(lin(x.double()), want(x.double()), rtol=0, atol=0)  # F.linear exactly
        ref.float(), lin.float()
    out = lin(x)  # autograd: F.linear, gradients as nn.Linear's
    assert out.requires_grad
    out.sum().backward()
    want(x).sum().backward()
    torch.testing.assert_close(lin.weight.grad, ref.weight.grad)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        assert lin(x).dtype == want(x).dtype == torch.bfloat16
    lin.bfloat16(), ref.bfloat16()
    with torch.no_grad():
        torch.testing.assert_close(lin(x.bfloat16()), want(x.bfloat16()), rtol=2e-2, atol=2e-2)
    lin.float(), ref.float()
    with torch.no_grad():  # a strided bias (oneDNN reads biases as dense)
        lin.bias = torch.nn.Parameter(torch.randn(80)[::2])
        ref.bias = torch.nn.Parameter(lin.bias.detach().clone())
        torch.testing.assert_close(lin(x), want(x), rtol=1e-5, atol=1e-5)
    lin.weight.requires_grad_(False), ref.weight.requires_grad_(False)  # BitFit: only the bias trains
    lin.bias.grad = None
    lin(x).sum().backward()
    assert lin.bias.grad is not None
    with torch.no_grad(), warnings.catch_warnings():  # traced: F.linear, whatever the gradient mode
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, ONNX's old exporter uses it
        traced = torch.jit.trace(lin, x)
        assert "mkldnn" not in str(traced.graph)
        torch.testing.assert_close(traced(x), want(x), rtol=1e-5, atol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # mkldnn.flags() mentions TF32 on Intel GPUs
            with torch.backends.mkldnn.flags(enabled=False):
                torch.testing.assert_close(lin(x), want(x), rtol=0, atol=0)


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
def test_packed_weight_is_made_once_kept_out_of_state_and_remade_when_the_weight_changes(monkeypatch) -> None:
    """The inference build's layers pack (``pack``): oneDNN reads a blocked copy of the weight
    made on the first call and reused; an in-place update, ``load_state_dict``, a new weight
    tensor or a dtype change make it again; it is in no state_dict and no deep copy; a race
    that ``F.linear`` wins frees it."""
    import copy

    from onednn_pair import onednn_pair

    import archlang.lower.inference_runtime as rt

    spec = ROOT / "specs" / "vit_b16.arch"
    arch, params, _, default = _case(spec)
    model = archlang.build(spec, arch, max_memory=None, inference=True, **params)
    assert all(m.pack for m in model.modules() if type(m) is rt.OneDnnLinear)
    assert not any(m.pack for m in default.modules() if type(m) is rt.OneDnnLinear)  # the default build: no copy

    lin, ref = onednn_pair(24, 40, "none", pack=True)
    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), ref(x), rtol=1e-5, atol=1e-5)
        first = lin.__dict__["_packed"][2]
        assert first.is_mkldnn and lin.packed_weight() is first and "_packed" not in str(lin.state_dict().keys())
        lin(x)
        assert lin.packed_weight() is first  # reused
        for change in (lambda: lin.weight.mul_(2), lambda: lin.load_state_dict(ref.state_dict()),
                       lambda: setattr(lin, "weight", torch.nn.Parameter(torch.randn(40, 24)))):
            change()
            ref.load_state_dict(lin.state_dict())
            torch.testing.assert_close(lin(x), ref(x), rtol=1e-5, atol=1e-5)
            assert lin.packed_weight() is not first
            first = lin.packed_weight()
        assert "_packed" not in copy.deepcopy(lin).__dict__
        torch.testing.assert_close(copy.deepcopy(lin)(x), ref(x), rtol=1e-5, atol=1e-5)
        lin.double(), ref.double()  # float64: F.linear, exactly
        torch.testing.assert_close(lin(x.double()), ref(x.double()), rtol=0, atol=0)
        lin.float(), ref.float()
        torch.testing.assert_close(lin(x), ref(x), rtol=1e-5, atol=1e-5)
        assert lin.packed_weight().dtype == torch.float32
        monkeypatch.setattr(rt, "RACE_MACS", 10)  # race every shape; F.linear wins
        monkeypatch.setattr(rt, "_ONEDNN_FASTER", {})
        monkeypatch.setattr(rt, "_onednn_is_faster", lambda *a: False)
        torch.testing.assert_close(lin(x), ref(x), rtol=1e-5, atol=1e-5)
        assert "_packed" not in lin.__dict__
        lin(x)
        assert "_packed" not in lin.__dict__  # the race's result is kept: no copy made again


def test_a_shared_linear_keeps_its_gelu() -> None:
    """A linear layer called twice (weight sharing) takes in neither call's GELU."""
    from archlang.lower.inference import linear_gelu_pairs

    src = """
arch tiny() {
  in x: [B, 8]
  a = gelu(fc: linear(x, 8))
  b = gelu(fc(a))
  c = gelu(fc2: linear(b, 8))
  out logits = head: linear(c, 3)
}
"""
    default = archlang.build(src, max_memory=None).eval()
    randomise(default)
    assert linear_gelu_pairs(default.archlang_graph) == [("fc2", "gelu_2")]
    model = archlang.build(src, max_memory=None, inference=True)
    model.load_state_dict(default.state_dict())
    x = torch.randn(4, 8)
    _assert_close(_outputs(model, [x]), _outputs(default, [x]))


def test_a_gelu_across_a_block_boundary_stays_where_it_is() -> None:
    """A block returns a linear layer's output and the caller applies the GELU: the IR pairs
    them, but the generated GELU is inline code in the caller, so nothing is folded."""
    src = """
block proj(x: [B, C], d: int) {
  return fc: linear(x, d)
}
arch tiny() {
  in x: [B, 8]
  a = gelu(p: proj(x, 8))
  out logits = head: linear(a, 3)
}
"""
    from archlang.lower.inference import linear_gelu_pairs

    default = archlang.build(src, max_memory=None).eval()
    randomise(default)
    assert linear_gelu_pairs(default.archlang_graph) == [("p.fc", "gelu")]
    assert not any(isinstance(m, torch.nn.GELU) for m in default.modules())
    model = archlang.build(src, max_memory=None, inference=True)
    model.load_state_dict(default.state_dict())
    assert all(getattr(m, "act", "none") == "none" for m in model.modules())
    x = torch.randn(4, 8)
    _assert_close(_outputs(model, [x]), _outputs(default, [x]))


def test_a_frozen_inference_build_exports_to_onnx_without_grad(tmp_path: Path) -> None:
    """ONNX export traces F.linear, not oneDNN's op, even where oneDNN would run (no gradient)."""
    from archlang.lower.export import export_onnx, verify_onnx

    src = """
arch tiny() {
  in x: [B, 8]
  out logits = head: linear(gelu(fc: linear(x, 16)), 3)
}
"""
    model = archlang.build(src, max_memory=None, inference=True).requires_grad_(False)
    with torch.no_grad():
        path = export_onnx(model, tmp_path / "tiny.onnx")
    assert verify_onnx(path, model) <= 1e-5


def test_writing_the_inference_build_needs_no_torch(tmp_path: Path) -> None:
    """``archc build --inference`` writes the module (runtime helpers included) without torch:
    the IR analysis and the source live in archlang.lower.inference, the torch half in
    archlang.lower.inference_runtime, which it reads as text."""
    import subprocess
    import sys

    code = f"""
import sys
from typer.testing import CliRunner
from archlang.cli import app
r = CliRunner().invoke(app, ["build", "specs/swin_t.arch", "--inference", "--out", {str(tmp_path)!r},
                             "--max-memory", "off"])
assert r.exit_code == 0, r.output
assert "torch" not in sys.modules, "torch was imported"
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "class OneDnnLinear(nn.Linear)" in (tmp_path / "swin_t.py").read_text()
