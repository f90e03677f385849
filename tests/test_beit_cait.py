"""BEiT and CaiT as specs against timm: strict loads with timm's keys, logits within 1e-5,
FLOPs equal to FlopCounterMode (math SDPA) at batch 1, and every attention in the report.

Small configs (timm accepts embed_dim/depth/num_heads/img_size) run by default; the full
beit_base_patch16_224 and cait_xxs24_224 run under ``slow``. Parameters are randomised
(timm initialises BEiT's bias table to zeros, which would hide a wrong index table).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import archlang  # noqa: E402

BEIT = "specs/beit.arch"
CAIT = "specs/cait.arch"


def _randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05 + p)


def _parity(spec: str, arch: str, timm_name: str, params: dict, timm_kw: dict, img: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    ref = timm.create_model(timm_name, pretrained=False, **timm_kw).eval()
    _randomise(ref)
    ours = archlang.build(spec, arch, **params).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())  # timm's keys, nothing more or less
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5
    rep = archlang.cost(spec, arch, batch=1, **params)
    assert rep.params == sum(p.numel() for p in ref.parameters())
    counter = FlopCounterMode(display=False)
    # (grad on: FlopCounterMode's module tracker cannot hook a block whose input is a
    # parameter viewed under no_grad, as CaiT's class token is; forward FLOPs are the same)
    with sdpa_kernel(SDPBackend.MATH), counter:
        ours(x[:1])
    assert counter.get_total_flops() == rep.flops
    return rep


SMALL_BEIT = {"img": 48, "dim": 64, "depth": 2, "heads": 4, "classes": 10}
SMALL_CAIT = {"img": 48, "dim": 48, "depth": 2, "heads": 4, "classes": 10}


def test_beit_small_matches_timm() -> None:
    rep = _parity(BEIT, "beit", "beit_base_patch16_224", SMALL_BEIT,
                  {"embed_dim": 64, "depth": 2, "num_heads": 4, "img_size": 48, "num_classes": 10}, 48)
    # every block's attention is in the report: heads x (9 patches + class token)^2 scores
    layers = rep.attention_layers()
    assert len(layers) == 2 and rep.attention_entries == 2 * 4 * 10 * 10


def test_cait_small_matches_timm() -> None:
    rep = _parity(CAIT, "cait", "cait_xxs24_224", SMALL_CAIT,
                  {"embed_dim": 48, "depth": 2, "num_heads": 4, "img_size": 48, "num_classes": 10}, 48)
    # talking heads (9 x 9 per head, marked by attention_scores) and class attention (1 x 10)
    assert len(rep.attention_layers()) == 4
    assert rep.attention_entries == 2 * 4 * 9 * 9 + 2 * 4 * 1 * 10


def test_beit_relative_position_index_is_timms() -> None:
    """The index table written in the spec equals timm's gen_relative_position_index, and it
    is a non-persistent buffer computed in __init__ (forward only reads it)."""
    from timm.models.beit import gen_relative_position_index

    ours = archlang.build(BEIT, "beit", img=80, patch=16, dim=32, depth=1, heads=2, classes=3)
    attn = ours.blocks[0].attn
    want = gen_relative_position_index((5, 5))
    assert attn.relative_position_index.dtype == torch.long
    assert torch.equal(attn.relative_position_index, want)
    assert "blocks.0.attn.relative_position_index" not in ours.state_dict()
    assert "blocks.0.attn.relative_position_index" in dict(ours.named_buffers())
    assert ours.no_weight_decay() == {"cls_token", "blocks.0.attn.relative_position_bias_table"}
    from archlang.lower.codegen import generate

    source, _ = generate(ours.archlang_graph)
    forward = source.split("class BeitAttention", 1)[1].split("def forward", 1)[1].split("\nclass ", 1)[0]
    init = source.split("class BeitAttention", 1)[1].split("def forward", 1)[0]
    assert "torch.arange" in init and "arange" not in forward and "torch.full" not in forward


def test_beit_b16_attention_bytes_and_params() -> None:
    rep = archlang.cost(BEIT, "beit_b16", batch=1)
    assert rep.params == 86_530_984
    assert rep.attention_bytes == 12 * 12 * 197 ** 2 * 4
    assert archlang.cost(CAIT, "cait_xxs24", batch=1).params == 11_956_264


@pytest.mark.slow
def test_beit_b16_matches_timm_at_full_size() -> None:
    rep = _parity(BEIT, "beit_b16", "beit_base_patch16_224", {}, {}, 224)
    assert rep.attention_bytes == 12 * 12 * 197 ** 2 * 4


@pytest.mark.slow
def test_cait_xxs24_matches_timm_at_full_size() -> None:
    _parity(CAIT, "cait_xxs24", "cait_xxs24_224", {}, {}, 224)
