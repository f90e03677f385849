"""The course's CNN-era families and their attention successors as specs: ResNet-50 (std.cnn),
non-local and stand-alone self-attention ResNets, gMLP, AST and LLaVA.

Parity with timm where a reference exists (weights load strictly, outputs within 1e-5, params
equal, FLOPs equal FlopCounterMode); full-size parameter counts from the cost model alone;
every spec checks, builds and trains (forward + backward) at a small size."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import archlang
from archlang.cli import app

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from torch import nn  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archlang.lower.example import example_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZOO = ["resnet50", "nonlocal_resnet50", "sasa_resnet50", "gmlp_s16", "ast", "llava"]


def perturb(model: nn.Module) -> None:
    """Noise on every parameter, and on BatchNorm running statistics, so that a wrong body,
    a wrong eps or a BatchNorm in the wrong place cannot hide behind the default init."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.mul_(0.5 + torch.rand(m.running_var.shape, generator=g))


def counted_flops(model: nn.Module, inputs: list) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(*inputs)
    return counter.get_total_flops()


def parity(spec: str, arch: str, ref: nn.Module, size: int, **overrides) -> tuple[nn.Module, float]:
    """Build ours, load the perturbed reference strictly, compare eval outputs on batch 2."""
    torch.manual_seed(0)
    ours = archlang.build(spec, arch, **overrides).eval()
    ref = ref.eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    perturb(ref)
    archlang.load_timm_weights(ours, ref.state_dict())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(x), ref(x)
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5, diff
    assert want.abs().max().item() > 1e-2  # the comparison is not between two vanishing outputs
    return ours, diff


def train_step(spec: str, arch: str | None = None, sizes: dict | None = None, **params) -> dict:
    """Build at a small size, run forward and backward, check every parameter gets a gradient
    and that the cost model's FLOPs equal FlopCounterMode's on the built model."""
    torch.manual_seed(0)
    model = archlang.build(spec, arch, **params)
    out = model(*example_inputs(model.archlang_graph, batch=2, sizes=sizes))
    outs = out if isinstance(out, dict) else {"logits": out}
    assert all(torch.isfinite(v).all() for v in outs.values())
    sum(v.float().sum() for v in outs.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    rep = archlang.cost(spec, arch, batch=1, sizes=sizes, **params)
    assert rep.params == sum(p.numel() for p in model.parameters())
    assert rep.flops == counted_flops(model, example_inputs(model.archlang_graph, batch=1, sizes=sizes))
    return {k: tuple(v.shape) for k, v in outs.items()}


# ----------------------------------------------------------------------------- every spec checks


@pytest.mark.parametrize("name", ZOO)
def test_archc_check(name: str) -> None:
    r = CliRunner().invoke(app, ["check", f"specs/{name}.arch"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok") and "error" not in r.output


# ----------------------------------------------------------------------------- ResNet (std.cnn)


def test_resnet50_parity_and_flops() -> None:
    """Full size: timm's resnet50, 25,557,032 params, weights load strictly, logits agree."""
    ours, _ = parity("specs/resnet50.arch", "resnet50", timm.create_model("resnet50"), 224)
    rep = archlang.cost("specs/resnet50.arch")
    assert rep.params == 25_557_032
    assert rep.flops == 8_178_368_512  # 2 x 4.09 GMACs
    assert counted_flops(ours, [torch.randn(1, 3, 224, 224)]) == rep.flops


def test_resnet18_parity_basic_block() -> None:
    ours, _ = parity("specs/resnet50.arch", "resnet18", timm.create_model("resnet18"), 64, img=64)
    assert counted_flops(ours, [torch.randn(1, 3, 64, 64)]) == archlang.cost("specs/resnet50.arch", "resnet18",
                                                                              img=64).flops


@pytest.mark.parametrize(("arch", "params"), [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808),
])
def test_resnet_family_params(arch: str, params: int) -> None:
    """timm's counts for the whole family, from the cost model alone (no torch model built)."""
    assert archlang.cost("specs/resnet50.arch", arch).params == params


def test_std_cnn_stem_and_blocks(tmp_path: Path) -> None:
    """std.cnn's stem, labelled, scopes its weights; the bottleneck's names are timm's."""
    spec = tmp_path / "tiny_resnet.arch"
    spec.write_text("use std.cnn\n"
                    "arch tiny_resnet(img: int = 32) {\n"
                    "  in x: [B, 3, img, img]\n"
                    "  x = stem: resnet_stem(x, width = 16)\n"
                    "  x = block[0]: bottleneck(x, planes = 8, stride = 2)\n"
                    "  x = block[1]: bottleneck(x, planes = 8, groups = 2, base_width = 8)\n"
                    "  out y = basic[0]: basic_block(x, planes = 8)\n"
                    "}\n")
    shapes = train_step(str(spec))
    assert shapes == {"logits": (2, 8, 4, 4)}
    keys = set(archlang.build(str(spec)).state_dict())
    assert {"stem.conv1.weight", "stem.bn1.running_var", "block.0.conv2.weight", "block.0.downsample.0.weight",
            "block.0.downsample.1.weight", "basic.0.downsample.0.weight"} <= keys
    assert "block.1.downsample.0.weight" not in keys  # same shape in and out: identity shortcut


# ----------------------------------------------------------------------------- non-local, SASA


def test_nonlocal_resnet50() -> None:
    rep = archlang.cost("specs/nonlocal_resnet50.arch")
    # resnet50 + 2 blocks at C = 512 (layer2) + 3 at C = 1024 (layer3); a block at C has theta,
    # phi, g (C -> C/2, bias) and W (C/2 -> C, bias) + BatchNorm: 2 C^2 + 4.5 C parameters
    per_block = {c: 2 * c * c + 9 * c // 2 for c in (512, 1024)}
    assert rep.params == 25_557_032 + 2 * per_block[512] + 3 * per_block[1024] == 32_915_496
    assert archlang.cost("specs/nonlocal_resnet50.arch", "nonlocal_resnet50_1").params == 25_557_032 + per_block[1024]
    assert train_step("specs/nonlocal_resnet50.arch", img=64) == {"logits": (2, 1000)}
    keys = set(archlang.build("specs/nonlocal_resnet50.arch", img=64).state_dict())
    assert {f"layer{s}_nonlocal.{j}.theta.weight" for s, j in ((2, 1), (2, 3), (3, 1), (3, 3), (3, 5))} <= keys
    assert set(timm.create_model("resnet50").state_dict()) <= keys  # the backbone loads from resnet50


def test_nonlocal_without_subsampling_attends_everywhere() -> None:
    assert train_step("specs/nonlocal_resnet50.arch", "nonlocal_resnet50_1", img=32, sub_sample=False,
                      classes=10) == {"logits": (2, 10)}


def test_sasa_resnet50() -> None:
    rep = archlang.cost("specs/sasa_resnet50.arch")
    # resnet50 without its 3x3 convs (w x w x 9), plus qkv (w -> 3w) and proj (w -> w) per block
    blocks = {64: 3, 128: 4, 256: 6, 512: 3}
    assert rep.params == 25_557_032 + sum(n * (4 * w * w - 9 * w * w) for w, n in blocks.items()) == 19_269_672
    # the paper's 18.0M is this without the output projection (archlang's local_attention has one)
    assert round((rep.params - sum(n * w * w for w, n in blocks.items())) / 1e6, 1) == 18.0
    assert train_step("specs/sasa_resnet50.arch", img=32) == {"logits": (2, 1000)}


# ----------------------------------------------------------------------------- gMLP


def _timm_gmlp(dim: int, depth: int) -> nn.Module:
    from timm.layers import GatedMlp
    from timm.models.mlp_mixer import MlpMixer, SpatialGatingBlock

    # gmlp_*_224 fix num_blocks, so build the same MlpMixer with fewer blocks directly
    return MlpMixer(patch_size=16, num_blocks=depth, embed_dim=dim, mlp_ratio=6, block_layer=SpatialGatingBlock,
                    mlp_layer=GatedMlp)


def test_gmlp_s16_parity_and_flops() -> None:
    ours, _ = parity("specs/gmlp_s16.arch", "gmlp_s16", _timm_gmlp(256, 2), 224, depth=2)
    rep = archlang.cost("specs/gmlp_s16.arch", depth=2)
    assert counted_flops(ours, [torch.randn(1, 3, 224, 224)]) == rep.flops == 658_018_304


def test_gmlp_ti16_parity() -> None:
    parity("specs/gmlp_s16.arch", "gmlp_ti16", _timm_gmlp(128, 3), 224, depth=3)


@pytest.mark.parametrize(("arch", "params", "flops"), [
    ("gmlp_s16", 19_422_656, 8_784_121_856), ("gmlp_ti16", 5_867_328, None), ("gmlp_b16", 73_075_392, None),
])
def test_gmlp_full_size_counts(arch: str, params: int, flops: int | None) -> None:
    """timm's gmlp_{s,ti,b}16_224 counts (the 30-block models), from the cost model alone."""
    rep = archlang.cost("specs/gmlp_s16.arch", arch)
    assert rep.params == params
    if flops is not None:
        assert rep.flops == flops


# ----------------------------------------------------------------------------- AST


class ASTReference(nn.Module):
    """The authors' ASTModel forward (github.com/YuanGongND/ast, models/ast_models.py), on a
    timm DeiT distilled encoder whose patch conv is replaced by the overlapping one; it takes
    the spectrogram already as [B, 1, mel, frames] (ASTModel transposes its [B, frames, mel])."""

    def __init__(self, mel: int, frames: int, dim: int, depth: int, heads: int, classes: int, stride: int = 10):
        super().__init__()
        from timm.models.deit import VisionTransformerDistilled

        self.v = VisionTransformerDistilled(img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads,
                                            num_classes=0)
        self.v.patch_embed.proj = nn.Conv2d(1, dim, kernel_size=16, stride=stride)
        n = ((mel - 16) // stride + 1) * ((frames - 16) // stride + 1)
        self.v.pos_embed = nn.Parameter(torch.zeros(1, n + 2, dim))
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = self.v.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.v.cls_token.expand(b, -1, -1), self.v.dist_token.expand(b, -1, -1), x), dim=1)
        x = x + self.v.pos_embed
        for blk in self.v.blocks:
            x = blk(x)
        x = self.v.norm(x)
        return self.mlp_head((x[:, 0] + x[:, 1]) / 2)


def test_ast_matches_the_reference_forward() -> None:
    small = {"mel": 48, "frames": 96, "dim": 64, "depth": 2, "heads": 4, "classes": 11}
    torch.manual_seed(0)
    ours = archlang.build("specs/ast.arch", **small).eval()
    ref = ASTReference(**small).eval()
    perturb(ref)
    archlang.load_timm_weights(ours, ref.state_dict())  # strict: names are the authors'
    x = torch.randn(2, 1, 48, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


def test_ast() -> None:
    g = archlang.graph("specs/ast.arch")
    proj = next(n for n in g.nodes if n.name == "v.patch_embed.proj")
    assert tuple(proj.outputs[0].shape[1:]) == (768, 12, 101)  # 1212 overlapping patches
    assert tuple(next(n for n in g.nodes if n.name == "v.pos_embed").outputs[0].shape[1:]) == (1214, 768)
    rep = archlang.cost("specs/ast.arch")
    vit_b_body = 12 * (4 * 768 * 768 + 4 * 768 + 2 * 768 * 3072 + 3072 + 768 + 4 * 768) + 2 * 768
    embed = 768 * 16 * 16 + 768 + 2 * 768 + 1214 * 768
    assert rep.params == vit_b_body + embed + 2 * 768 + 768 * 527 + 527 == 86_594_063
    assert train_step("specs/ast.arch", mel=32, frames=64, depth=1, dim=64, heads=2) == {"logits": (2, 527)}


# ----------------------------------------------------------------------------- LLaVA
#
# specs/llava.arch is HF's LlavaForConditionalGeneration (CLIP tower, projector, Llama): its
# strict load, logits, training, FLOPs and parameter count are tested in tests/test_llm.py.

