"""std.attention: the attention kinds written in archlang over `attend`, against the ops they
stand for and against timm.

For each kind that is an op of the zoo (window_attention with and without shift,
local_attention, ...), a small spec is built twice, with the op and with the library block:
the op version's state_dict loads strictly into the block version (same labels), the outputs
agree within 1e-5 in float32, and both agree with the interpreter (float64, eval and train,
outputs and gradients: tests/test_interpret.py's `assert_agree`). The new kinds are checked
against timm's modules where timm has them (pvt_v2's Attention with sr_ratio, CaiT's
TalkingHeadAttn and ClassAttn), and against the interpreter; sliding window and ALiBi against
a written-out reference.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_interpret import assert_agree  # noqa: E402

import archlang  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "archlang" / "stdlib" / "std" / "attention.arch"


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def _pair(text: str, op: str, block: str, x_shapes: list[tuple[int, ...]], seed: int = 0) -> None:
    """Build arch `op` and arch `block` of `text`; load op's state_dict into block strictly and
    compare them in float32; then each against the interpreter."""
    a = archlang.build(text, op, max_memory=None).eval()
    _randomise(a, seed)
    b = archlang.build(text, block, max_memory=None).eval()
    assert set(a.state_dict()) == set(b.state_dict())
    b.load_state_dict(a.state_dict(), strict=True)
    g = torch.Generator().manual_seed(seed + 1)
    xs = [torch.randn(s, generator=g) for s in x_shapes]
    with torch.no_grad():
        want, got = a(*xs), b(*xs)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5
    src = b.archlang_source
    assert "scaled_dot_product_attention" in src or "flex_attention" in src
    assert_agree(text, op, modes=(False,), max_memory=None)  # (train mode: tests/test_interpret.py)
    assert_agree(text, block, max_memory=None)


def _spec(body: str) -> str:
    return "use std.attention\n" + body


# ----------------------------------------------------------------------------- existing kinds


WINDOW = _spec("""
arch op(shift: int = 0) {
  in x: [B, 8, 8, 16]
  out y = attn: window_attention(x, heads = 2, window = 4, shift = shift)
}
arch lib(shift: int = 0) {
  in x: [B, 8, 8, 16]
  out y = attn: window_mha(x, heads = 2, window = 4, shift = shift)
}
""")


@pytest.mark.parametrize("shift", [pytest.param(0, marks=pytest.mark.slow), 2])
def test_window_mha_is_window_attention(shift: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = WINDOW.replace("shift: int = 0", f"shift: int = {shift}")
    _pair(text, "op", "lib", [(2, 8, 8, 16)])
    # the bias reaches SDPA with 4 dims: CPU SDPA runs its fused kernel for 2-d or 4-d masks
    # only (a 3-d one takes the math path, 10% slower on swin_t: benchmarks/attention_kinds.py)
    import torch.nn.functional as F

    dims: list[int] = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, attn_mask=None, **kw):
        dims.append(attn_mask.dim())
        return sdpa(*args, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        archlang.build(text, "lib", max_memory=None).eval()(torch.randn(1, 8, 8, 16))
    assert dims == [4]


@pytest.mark.slow
def test_window_mha_clamps_a_window_larger_than_the_grid() -> None:
    """Swin's rule: a window as large as the grid shrinks to it and does not shift."""
    text = WINDOW.replace("[B, 8, 8, 16]", "[B, 4, 4, 16]").replace("shift: int = 0", "shift: int = 2") \
        .replace("window = 4", "window = 6")
    _pair(text, "op", "lib", [(2, 4, 4, 16)])


def _swin_with_blocks() -> str:
    """specs/swin_t.arch with std.vision's swin_block calling `window_mha` for the op."""
    vision = (ROOT / "archlang" / "stdlib" / "std" / "vision.arch").read_text()
    block = re.search(r"block swin_block\(.*?\n}\n", vision, re.S).group(0)  # type: ignore[union-attr]
    assert "attn: window_attention(" in block
    mine = block.replace("block swin_block(", "block swin_block_lib(").replace("attn: window_attention(",
                                                                            "attn: window_mha(")
    text = (ROOT / "specs" / "swin_t.arch").read_text().replace("swin_block(", "swin_block_lib(")
    return "use std.attention\n" + text + "\n" + mine


# heads >= 2 in every stage: see the report (an attend whose bias has 1 head in one instance of a
# block and more in another fails to lower: attend writes the broadcast head index as 0)
SWIN_SMALL = {"img": 64, "window": 4, "depths": [1, 2, 1, 1], "embed": 16, "heads": [2, 2, 4, 8]}


def test_swin_t_on_window_mha_loads_and_agrees() -> None:
    ops = archlang.build(ROOT / "specs" / "swin_t.arch", "swin_t", max_memory=None, **SWIN_SMALL).eval()
    _randomise(ops)
    lib = archlang.build(_swin_with_blocks(), "swin_t", max_memory=None, **SWIN_SMALL).eval()
    lib.load_state_dict(ops.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ops(x) - lib(x)).abs().max().item() <= 1e-5
    assert archlang.cost(_swin_with_blocks(), "swin_t", **SWIN_SMALL).params == \
        archlang.cost(ROOT / "specs" / "swin_t.arch", "swin_t", **SWIN_SMALL).params


LOCAL = _spec("""
arch op() {
  in x: [B, 5, 6, 16]
  out y = attn: local_attention(x, heads = 2, kernel = 3)
}
arch lib() {
  in x: [B, 5, 6, 16]
  out y = attn: local_mha(x, heads = 2, kernel = 3)
}
""")


def test_local_mha_is_local_attention() -> None:
    _pair(LOCAL, "op", "lib", [(2, 5, 6, 16)])


# ----------------------------------------------------------------------------- new kinds


def _timm_parity(text: str, ref: torch.nn.Module, x: torch.Tensor, call=None) -> None:
    """Our block (arch `lib`, the layer labelled `attn`) loads ref's state_dict under `attn.`
    strictly and agrees with it within 1e-5; then with the interpreter."""
    timm_sd = {f"attn.{k}": v for k, v in ref.state_dict().items()}
    ours = archlang.build(text, "lib", max_memory=None).eval()
    assert set(ours.state_dict()) == set(timm_sd)
    ours.load_state_dict(timm_sd, strict=True)
    with torch.no_grad():
        want = call(ref, x) if call else ref(x)
        assert (ours(x) - want).abs().max().item() <= 1e-5
    assert_agree(text, "lib", max_memory=None)


@pytest.mark.parametrize("sr", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sr_mha_is_pvt_v2_attention(sr: int) -> None:
    from timm.models.pvt_v2 import Attention

    torch.manual_seed(0)
    ref = Attention(32, num_heads=2, sr_ratio=sr, qkv_bias=True).eval()
    _randomise(ref)
    text = _spec(f"""
arch lib() {{
  in x: [B, 48, 32]
  out y = attn: sr_mha(x, heads = 2, grid = [6, 8], sr = {sr})
}}
""")
    _timm_parity(text, ref, torch.randn(2, 48, 32), call=lambda m, x: m(x, [6, 8]))


def test_talking_heads_mha_is_cait_talking_head_attn() -> None:
    from timm.models.cait import TalkingHeadAttn

    ref = TalkingHeadAttn(32, num_heads=4, qkv_bias=True).eval()
    _randomise(ref)
    text = _spec("arch lib() {\n  in x: [B, 10, 32]\n  out y = attn: talking_heads_mha(x, heads = 4)\n}\n")
    _timm_parity(text, ref, torch.randn(2, 10, 32))
    rep = archlang.cost(text, "lib", batch=2)
    assert rep.attention_bytes >= 2 * 4 * 10 * 10 * 4  # the marked score matrix is in the report


def test_class_mha_is_cait_class_attn() -> None:
    from timm.models.cait import ClassAttn

    ref = ClassAttn(32, num_heads=4, qkv_bias=True).eval()
    _randomise(ref)
    text = _spec("arch lib() {\n  in x: [B, 10, 32]\n  out y = attn: class_mha(x, heads = 4)\n}\n")
    _timm_parity(text, ref, torch.randn(2, 10, 32))


def _reference_mha(model: torch.nn.Module, x: torch.Tensor, heads: int, bias: torch.Tensor) -> torch.Tensor:
    """Written-out attention with the model's qkv/proj weights and an additive bias [H|1, N, N]."""
    sd = model.state_dict()
    b, n, d = x.shape
    qkv = x @ sd["attn.qkv.weight"].t() + sd["attn.qkv.bias"]
    q, k, v = (t.reshape(b, n, heads, -1).transpose(1, 2) for t in qkv.split(d, dim=-1))
    s = q @ k.transpose(-2, -1) * (d // heads) ** -0.5 + bias
    a = torch.softmax(s, dim=-1) @ v
    return a.transpose(1, 2).reshape(b, n, d) @ sd["attn.proj.weight"].t() + sd["attn.proj.bias"]


def test_sliding_window_and_alibi_mha() -> None:
    n, heads, window = 12, 4, 4
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    causal = torch.zeros(n, n).masked_fill(j > i, float("-inf"))
    band = torch.zeros(n, n).masked_fill((i - j).abs() >= window, float("-inf"))
    slopes = torch.tensor([2.0 ** (-8 * (h + 1) / heads) for h in range(heads)])
    alibi = slopes[:, None, None] * (j - i)[None].float()
    x = torch.randn(2, n, 32)
    for kind, arg, bias in (("sliding_window_mha", f", window = {window}", causal + band),
                            ("alibi_mha", "", causal + alibi)):
        text = _spec(f"arch lib() {{\n  in x: [B, {n}, 32]\n  out y = attn: {kind}(x, heads = {heads}{arg})\n}}\n")
        m = archlang.build(text, "lib", max_memory=None).eval()
        _randomise(m)
        with torch.no_grad():
            assert (m(x) - _reference_mha(m, x, heads, bias)).abs().max().item() <= 1e-5
        assert_agree(text, "lib", max_memory=None)


REL_POS = _spec("""
arch op() {
  in x: [B, 9, 16]
  out y = attn: rel_pos_attention(x, heads = 2)
}
arch lib() {
  in x: [B, 9, 16]
  out y = attn: rel_pos_mha(x, heads = 2)
}
""")


def test_rel_pos_mha_is_rel_pos_attention() -> None:
    _pair(REL_POS, "op", "lib", [(2, 9, 16)])


@pytest.mark.parametrize("shift", [pytest.param(0, marks=pytest.mark.slow), 2])
def test_window_mha_v2_is_window_attention_v2(shift: int) -> None:
    text = WINDOW.replace("shift: int = 0", f"shift: int = {shift}").replace("window_attention(",
                                                                          "window_attention_v2(") \
        .replace("window_mha(", "window_mha_v2(")
    _pair(text, "op", "lib", [(2, 8, 8, 16)])


POOLED = _spec("""
arch op(cls: int = 0, sq: int = 2, skv: int = 2) {
  in x: [B, cls + 36, 16]
  out y = attn: pooled_attention(x, heads = 2, grid = [6, 6], dim_out = 32, cls = cls, stride_q = sq,
                                 stride_kv = skv)
}
arch lib(cls: int = 0, sq: int = 2, skv: int = 2) {
  in x: [B, cls + 36, 16]
  out y = attn: pooled_mha(x, heads = 2, grid = [6, 6], dim_out = 32, cls = cls, stride_q = sq, stride_kv = skv)
}
""")


@pytest.mark.parametrize(("cls", "sq", "skv"), [pytest.param(0, 2, 2, marks=pytest.mark.slow), (1, 1, 3)])
def test_pooled_mha_is_pooled_attention(cls: int, sq: int, skv: int) -> None:
    text = POOLED.replace("cls: int = 0, sq: int = 2, skv: int = 2", f"cls: int = {cls}, sq: int = {sq}, skv: int = {skv}")
    _pair(text, "op", "lib", [(2, cls + 36, 16)])


@pytest.mark.parametrize("kind", ["window", pytest.param("window_v2", marks=pytest.mark.slow)])
def test_window_blocks_pad_a_grid_the_window_does_not_divide(kind: str) -> None:
    """A 10 x 7 grid in windows of 4: padded to 12 x 8 at the bottom and the right (the `pad`
    op, archlang/ops/pad.py), shifted windows, cut back to 10 x 7."""
    text = WINDOW.replace("[B, 8, 8, 16]", "[B, 10, 7, 16]").replace("shift: int = 0", "shift: int = 2")
    if kind == "window_v2":
        text = text.replace("window_attention(", "window_attention_v2(").replace("window_mha(", "window_mha_v2(")
    _pair(text, "op", "lib", [(2, 10, 7, 16)])


def test_pad_is_f_pad() -> None:
    import torch.nn.functional as F

    text = "arch t() {\n  in x: [B, 3, 5, 4]\n  out y = pad(x, dims = [1, 2], after = [2, 1], before = [1, 0], " \
           "value = 0.5)\n}\n"
    m = archlang.build(text, max_memory=None)
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(m(x), F.pad(x, (0, 0, 0, 1, 1, 2), value=0.5))
    assert archlang.cost(text).flops == 0
