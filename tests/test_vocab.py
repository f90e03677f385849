"""The open vocabulary's tensor ops against references nobody here wrote (torch, timm): params
of any shape, build-time constants, gather, interpolate, elementwise math, and the old ops'
new options (layernorm over NCHW channels or without bias, channel_scale over dim 1, average
pooling that leaves padding out). Each case checks the generated module and the interpreter
against the reference at 1e-5 (float64), and the diagnostics of bad calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import archlang  # noqa: E402
from archlang.api import SpecError  # noqa: E402
from archlang.lower.interpret import interpret  # noqa: E402

F = torch.nn.functional


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.arch"
    p.write_text(text)
    return p


def _both(tmp_path: Path, text: str, *inputs: torch.Tensor, seed: int = 0) -> tuple[torch.nn.Module, list, list]:
    """The generated model (float64, parameters randomised) and its outputs, and the interpreter's."""
    spec = _spec(tmp_path, text)
    torch.manual_seed(seed)
    model = archlang.build(spec).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
        out = model(*inputs)
    outs = list(out.values()) if isinstance(out, dict) else [out]
    params = dict(model.state_dict())
    ref = list(interpret(model.archlang_graph, params, list(inputs)))
    return model, outs, ref


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-5


def test_params_of_any_shape_are_state_dict_entries_with_their_init(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """
arch t() {
  in x: [B, 3, 4]
  a = x * (gamma: param([4], value = 0.25)) + mean(table: param([7, 3, 4], init = "trunc_normal", std = 0.5), dim = [0])
  out y = a * (s: param([], init = 1.5)) + (z: param([1, 1, 4]))
}
""")
    torch.manual_seed(0)
    m = archlang.build(spec)
    sd = m.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {"gamma": (4,), "table": (7, 3, 4), "s": (), "z": (1, 1, 4)}
    assert torch.equal(sd["gamma"], torch.full((4,), 0.25)) and sd["s"].item() == 1.5 and not sd["z"].any()
    assert sd["table"].abs().max().item() <= 1.0 and sd["table"].std().item() > 0.2  # within 2 std of 0.5
    assert archlang.cost(spec).params == 4 + 84 + 1 + 4


def test_constants_are_buffers_built_once(tmp_path: Path) -> None:
    """An index table written with arange/rearrange/broadcasting is a non-persistent buffer with
    torch's values; forward reads it; the cost report counts it as a buffer (int64)."""
    text = """
arch t() {
  in x: [B, 12]
  p = arange(12)
  out y = x * (rowcol: identity(floor_div(p, 4) * 10 + mod(p, 4)))
}
"""
    x = torch.randn(2, 12, dtype=torch.float64)
    model, (got,), (ref,) = _both(tmp_path, text, x)
    want_table = torch.arange(12) // 4 * 10 + torch.arange(12) % 4
    assert torch.equal(model.rowcol, want_table) and model.rowcol.dtype == torch.long
    assert "rowcol" not in model.state_dict() and "rowcol" in dict(model.named_buffers())
    _close(got, x * want_table)
    _close(ref, x * want_table)
    g = model.archlang_graph
    assert [n.op.op for n in g.nodes] == ["input", "const", "binary", "output"]
    assert archlang.cost(_spec(tmp_path, text)).buffer_bytes == 12 * 8


def test_gather_is_torch_indexing(tmp_path: Path) -> None:
    text = """
arch t() {
  in t: [5, 3]
  in x: [B, 2, 6, 4]
  idx = rearrange(4 - mod(arange(8), 5), "(a b) -> a b", b = 4)
  out a = gather(t, idx)
  out b = gather(x, rearrange(arange(3) * 2, "(i j) -> i j", j = 1), dim = 2)
}
"""
    t = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(2, 2, 6, 4, dtype=torch.float64)
    _, got, ref = _both(tmp_path, text, t, x)
    idx = (4 - torch.arange(8) % 5).reshape(2, 4)
    for outs in (got, ref):
        _close(outs[0], t[idx])
        _close(outs[1], x[:, :, torch.tensor([[0], [2], [4]])])


def test_gather_needs_an_int_index(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"E0401.*gather indexes with an int tensor"):
        archlang.graph(_spec(tmp_path, "arch t() {\n in t: [5, 3]\n in i: [4]\n out y = gather(t, i)\n}\n"))


@pytest.mark.parametrize(("mode", "align"), [("nearest", False), ("bilinear", False), ("bilinear", True),
                                              ("bicubic", False), ("bicubic", True)])
def test_interpolate_is_f_interpolate(tmp_path: Path, mode: str, align: str) -> None:
    ac = "true" if align else "false"
    extra = "" if mode == "nearest" else f", align_corners = {ac}"
    text = f"""
arch t() {{
  in x: [B, 3, 5, 7]
  out a = interpolate(x, size = [9, 4], mode = "{mode}"{extra})
  out b = interpolate(x, scale = 2.0, mode = "{mode}"{extra})
}}
"""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    _, got, ref = _both(tmp_path, text, x)
    kw = {} if mode == "nearest" else {"align_corners": align}
    for outs in (got, ref):
        _close(outs[0], F.interpolate(x, size=(9, 4), mode=mode, **kw))
        _close(outs[1], F.interpolate(x, scale_factor=2.0, mode=mode, **kw))


def test_interpolate_diagnostics(tmp_path: Path) -> None:
    base = "arch t() {{\n in x: [B, 3, 5, 7]\n out y = interpolate(x, {})\n}}\n"
    with pytest.raises(SpecError, match=r"E0406.*one of `size`"):
        archlang.graph(_spec(tmp_path, base.format("size = [2, 2], scale = 2.0")))
    with pytest.raises(SpecError, match=r"E0406.*not nearest"):
        archlang.graph(_spec(tmp_path, base.format("size = [2, 2], align_corners = true")))
    with pytest.raises(SpecError, match="did you mean `bilinear`"):
        archlang.graph(_spec(tmp_path, base.format("size = [2, 2], mode = \"bilinaer\"")))


def test_elementwise_math_is_torchs(tmp_path: Path) -> None:
    text = """
arch t() {
  in x: [B, 6]
  in y: [B, 6]
  out a = sqrt(absolute(x)) + rsqrt(exp(x)) + log(absolute(x) + 1.0) + neg(sin(x)) * cos(y)
  out b = pow(absolute(x), 1.5) + clamp(x, min = -0.5, max = 0.25) + minimum(x, y) * maximum(x, y)
  out c = where(lt(x - y, 0.0), x, y) + cast(ge(x, 0.1), "float")
}
"""
    x = torch.randn(3, 6, dtype=torch.float64)
    y = torch.randn(3, 6, dtype=torch.float64)
    want = [x.abs().sqrt() + torch.exp(x).rsqrt() + torch.log1p(x.abs()) - torch.sin(x) * torch.cos(y),
            x.abs() ** 1.5 + x.clamp(-0.5, 0.25) + torch.minimum(x, y) * torch.maximum(x, y),
            torch.where(x < y, x, y) + (x >= 0.1).double()]
    _, got, ref = _both(tmp_path, text, x, y)
    for outs in (got, ref):
        for o, w in zip(outs, want, strict=True):
            _close(o, w)


def test_math_diagnostics(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"E0401.*floor_div divides an int tensor"):
        archlang.graph(_spec(tmp_path, "arch t() {\n in x: [B, 4]\n out y = floor_div(x, 2)\n}\n"))
    with pytest.raises(SpecError, match=r"E0406.*clamp needs"):
        archlang.graph(_spec(tmp_path, "arch t() {\n in x: [B, 4]\n out y = clamp(x)\n}\n"))
    with pytest.raises(SpecError, match=r"E0401.*must be a string or a number"):
        archlang.graph(_spec(tmp_path, "arch t() {\n in x: [B, 4]\n out y = x + param([4], init = true)\n}\n"))
    with pytest.raises(SpecError, match=r"did you mean \"trunc_normal\"|did you mean `trunc_normal`"):
        archlang.graph(_spec(tmp_path, "arch t() {\n in x: [B, 4]\n out y = x + param([4], init = \"trunc_norml\")\n}\n"))
    # abs, min, max and floor remain the builtins on numbers
    g = archlang.graph(_spec(tmp_path, "arch t(k: int = 3) {\n in x: [B, 4]\n out y = x * max(abs(-2), floor(1.5))\n}\n"))
    assert [n.op.op for n in g.nodes] == ["input", "scale", "output"]


def test_layernorm_over_nchw_channels_and_without_bias(tmp_path: Path) -> None:
    """ConvNeXt's LayerNorm2d (timm) and nn.LayerNorm(bias=False), with their state_dict keys."""
    timm_layers = pytest.importorskip("timm.layers")
    text = """
arch t() {
  in x: [B, 6, 5, 4]
  out a = n2d: layernorm(x, dim = 1, eps = 1e-6)
  out b = nb: layernorm(x, bias = false)
}
"""
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    model, got, ref = _both(tmp_path, text, x)
    assert set(model.state_dict()) == {"n2d.weight", "n2d.bias", "nb.weight"}
    ln2d = timm_layers.LayerNorm2d(6, eps=1e-6).double()
    ln2d.load_state_dict(model.n2d.state_dict())
    nb = torch.nn.LayerNorm(4, bias=False).double()
    nb.load_state_dict(model.nb.state_dict())
    with torch.no_grad():
        for outs in (got, ref):
            _close(outs[0], ln2d(x))
            _close(outs[1], nb(x))
    assert archlang.cost(_spec(tmp_path, text)).params == 12 + 4


def test_channel_scale_over_dim_1_and_avg_pool_without_padding(tmp_path: Path) -> None:
    """PoolFormer's pieces: a per-channel scale on NCHW, and average pooling that averages only
    the real inputs (nn.AvgPool2d(count_include_pad=False))."""
    text = """
arch t() {
  in x: [B, 4, 6, 5]
  out a = ls: channel_scale(x, dim = 1, init = 1e-5)
  out b = avg_pool2d(x, 3, stride = 1, padding = 1, count_include_pad = false)
  out c = avg_pool2d(x, 3, stride = 2, padding = 1)
}
"""
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    model, got, ref = _both(tmp_path, text, x)
    gamma = model.ls.detach()
    assert gamma.shape == (4,)
    for outs in (got, ref):
        _close(outs[0], x * gamma[:, None, None])
        _close(outs[1], torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)(x))
        _close(outs[2], torch.nn.AvgPool2d(3, 2, 1)(x))
    fresh = archlang.build(_spec(tmp_path, text))
    assert torch.equal(fresh.ls, torch.full((4,), 1e-5))


def test_constants_round_trip_and_differ_per_instance(tmp_path: Path) -> None:
    """A folded constant survives the IR's JSON; two instances of a block with different
    constants get two classes (one buffer each), equal ones share a class."""
    from archlang.ir.graph import Graph

    spec = _spec(tmp_path, """
block tab(x: [*, N], n: int) {
  return x + (t: identity(arange(n) * 2 + 1))
}
arch t() {
  in x: [B, 4]
  y = a: tab(x, 4)
  z = b: tab(rearrange(y, "b (n k) -> b n k", k = 2), 2)
  out o = rearrange(z, "b n k -> b (n k)") + (c: tab(x, 4))
}
""")
    g = archlang.graph(spec)
    assert Graph.model_validate_json(g.model_dump_json()) == g
    m = archlang.build(spec)
    assert type(m.a) is type(m.c) and type(m.a) is not type(m.b)
    assert torch.equal(m.a.t, torch.tensor([1, 3, 5, 7])) and torch.equal(m.b.t, torch.tensor([1, 3]))
    x = torch.randn(2, 4)
    want = (x + m.a.t).reshape(2, 2, 2) + m.b.t
    _close(m(x), want.reshape(2, 4) + x + m.a.t)
