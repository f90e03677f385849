"""Lowering: generated modules match timm and torch.nn.Transformer exactly, build standalone,
train, save/load, and every op has a lowering rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import archlang  # noqa: E402
from archlang.ir.ops import op_classes  # noqa: E402
from archlang.lower.example import example_inputs  # noqa: E402
from archlang.lower.rules import LOWER_RULES  # noqa: E402
from archlang.lower.weights import WeightImportError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def perturb(model: torch.nn.Module) -> None:
    """timm zero-initialises some heads; noise on every parameter keeps a wrong body visible."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)


def assert_parity(spec: str, arch: str | None, timm_name: str, size: int = 224, params: int | None = None,
                  timm_kwargs: dict | None = None, **overrides) -> None:
    torch.manual_seed(0)
    ours = archlang.build(spec, arch, **overrides).eval()
    ref = timm.create_model(timm_name, pretrained=False, **(timm_kwargs or {})).eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ours == n_ref
    if params is not None:
        assert n_ours == params
        assert ours.archlang_graph.param_count() == params
    perturb(ref)
    archlang.load_timm_weights(ours, ref.state_dict())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(x), ref(x)
    if isinstance(got, dict):
        got = got["logits"]
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("spec", "arch", "timm_name", "params"), [
    ("specs/vit_b16.arch", "vit_b16", "vit_base_patch16_224", 86_567_656),
    ("specs/vit_b16.arch", "vit_ti16", "vit_tiny_patch16_224", 5_717_416),
    ("specs/deit_s_distilled.arch", "deit_s_distilled", "deit_small_distilled_patch16_224", 22_436_432),
    ("specs/swin_t.arch", "swin_t", "swin_tiny_patch4_window7_224", 28_288_354),
    ("specs/mixer_b16.arch", "mixer_b16", "mixer_b16_224", 59_880_472),
])
def test_timm_parity_table(spec: str, arch: str, timm_name: str, params: int) -> None:
    assert_parity(spec, arch, timm_name, params=params)


@pytest.mark.parametrize(("spec", "arch", "timm_name", "overrides", "timm_kwargs", "img"), [
    ("specs/vit_b16.arch", "vit_s32", "vit_small_patch32_224", {"depth": 4}, {"depth": 4}, 224),
    ("specs/vit_b16.arch", "vit_ti16", "vit_tiny_patch16_224", {"img": 96, "depth": 2}, {"img_size": 96, "depth": 2}, 96),
    ("specs/deit_s_distilled.arch", "deit_ti_distilled", "deit_tiny_distilled_patch16_224", {"depth": 3},
     {"depth": 3}, 224),
    ("specs/swin_t.arch", "swin_t", "swin_tiny_patch4_window7_224", {"img": 384, "depths": [2, 2, 2, 2]},
     {"img_size": 384, "depths": (2, 2, 2, 2)}, 384),
    ("specs/swin_t.arch", "swin_t", "swin_tiny_patch4_window7_224", {"img": 256, "window": 8, "depths": [1, 1, 2, 1]},
     {"img_size": 256, "window_size": 8, "depths": (1, 1, 2, 1)}, 256),
    ("specs/swin_t.arch", "swin_b", "swin_base_patch4_window7_224", {"depths": [1, 1, 1, 1]},
     {"depths": (1, 1, 1, 1)}, 224),
    ("specs/mixer_b16.arch", "mixer_s32", "mixer_s32_224", {}, {}, 224),
])
def test_timm_parity_family(spec, arch, timm_name, overrides, timm_kwargs, img) -> None:
    """Parity is a property of the lowering: other depths, widths, patches, windows and sizes."""
    assert_parity(spec, arch, timm_name, size=img, timm_kwargs=timm_kwargs, **overrides)


def test_torch_transformer_parity() -> None:
    from torch import nn

    full = archlang.graph("specs/transformer.arch")
    core = sum(p.numel() for p in nn.Transformer().parameters())
    assert core == 44_140_544
    assert sum(n.op.param_count() for n in full.nodes if n.name.startswith(("encoder.", "decoder."))) == core

    ours = archlang.build("specs/transformer.arch", enc_layers=2, dec_layers=2, src_vocab=50, tgt_vocab=60).eval()
    ref = nn.Transformer(d_model=512, nhead=8, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=2048,
                         batch_first=True).eval()
    perturb(ref)
    archlang.load_torch_transformer(ours, ref)
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randint(0, 50, (2, 7), generator=g), torch.randint(0, 60, (2, 5), generator=g)
    with torch.no_grad():
        got = ours(src, tgt)
        # feed nn.Transformer the same embeddings; compare through the same generator
        se = ours.sinusoidal_pos(ours.src_embed(src) * 512 ** 0.5)
        te = ours.sinusoidal_pos_1(ours.tgt_embed(tgt) * 512 ** 0.5)
        mask = nn.Transformer.generate_square_subsequent_mask(5)
        want = ours.generator(ref(se, te, tgt_mask=mask, tgt_is_causal=True))
    assert (got - want).abs().max().item() <= 1e-5


def test_strict_import_lists_keys() -> None:
    ours = archlang.build("specs/vit_b16.arch", "vit_ti16", depth=2)
    ref = timm.create_model("vit_tiny_patch16_224", depth=3)
    with pytest.raises(WeightImportError) as err:
        archlang.load_timm_weights(ours, ref.state_dict())
    assert "blocks.2.attn.qkv.weight" in str(err.value)
    bad = {k: v for k, v in timm.create_model("vit_small_patch16_224", depth=2).state_dict().items()}
    with pytest.raises(WeightImportError) as err:
        archlang.load_timm_weights(ours, bad)
    assert "model [192] vs source [384]" in str(err.value)


def test_every_op_has_a_lowering_rule() -> None:
    missing = [c.__name__ for c in op_classes() if c not in LOWER_RULES]
    assert not missing


def test_all_ops_forward_backward() -> None:
    torch.manual_seed(0)
    model = archlang.build("tests/specs/all_ops.arch")
    out = model(*example_inputs(model.archlang_graph))
    assert set(out) == {"vocab", "logits", "seq", "att"}
    sum(v.float().sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_training_mode_and_seeds() -> None:
    torch.manual_seed(0)
    a = archlang.build("specs/vit_b16.arch", "vit_ti16", img=32, patch=8, depth=2, drop_path_rate=0.5)
    torch.manual_seed(0)
    b = archlang.build("specs/vit_b16.arch", "vit_ti16", img=32, patch=8, depth=2, drop_path_rate=0.5)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(4, 3, 32, 32)
    a.train()
    y1, y2 = a(x), a(x)
    assert not torch.allclose(y1, y2)  # stochastic depth is active
    a.eval()
    with torch.no_grad():
        assert torch.equal(a(x), a(x))
    a.train()
    a(x).sum().backward()
    assert all(p.grad is not None for p in a.parameters())


def test_save_and_load(tmp_path: Path) -> None:
    m = archlang.build("specs/swin_t.arch", img=64, window=4, depths=[1, 1, 1, 1], embed=32, heads=[1, 2, 4, 8]).eval()
    path = archlang.save(m, tmp_path / "m.safetensors")
    m2 = archlang.load(path).eval()
    assert m2.arch_name == "swin_t" and m2.arch_params["img"] == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_generated_module_is_standalone(tmp_path: Path) -> None:
    """`archc build` writes a module that runs where archlang is not importable."""
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "archlang.cli", "build", "specs/swin_t.arch", "-o", str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    script = (
        "import sys\n"
        "sys.modules['archlang'] = None  # archlang is not importable in this process\n"
        f"sys.path.insert(0, {str(out)!r})\n"
        "try:\n    import archlang\n    raise SystemExit('archlang importable')\nexcept ImportError:\n    pass\n"
        "import torch\nfrom swin_t import build\n"
        "m = build().eval()\n"
        "with torch.no_grad():\n    y = m(torch.randn(1, 3, 224, 224))\n"
        "assert y.shape == (1, 1000), y.shape\n"
        "assert not any(k.startswith('archlang') for k, v in sys.modules.items() if v is not None)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
