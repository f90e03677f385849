"""Fine-tuning taps: trainable counts agree between the cost report and the built model,
LoRA starts as a no-op, merges exactly, reaches q/v inside a fused qkv, and timm weights load."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import archlang  # noqa: E402

SMALL_SWIN = {"img": 64, "window": 4, "depths": [1, 1, 2, 1], "embed": 32, "heads": [1, 2, 4, 8]}
SMALL_SWIN_TIMM = {"img_size": 64, "window_size": 4, "depths": (1, 1, 2, 1), "embed_dim": 32, "num_heads": (1, 2, 4, 8)}


def requires_grad_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_swin_t_lora_trainable_params() -> None:
    rep = archlang.cost("specs/swin_t_lora.arch")
    assert rep.trainable_params == 910_312 == 141_312 + 769_000
    assert rep.params == 28_288_354 + 141_312
    model = archlang.build("specs/swin_t_lora.arch")
    assert requires_grad_count(model) == 910_312
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora" in n)
    assert lora == 141_312
    assert "layers.0.blocks.0.attn.qkv.lora_q.A" in dict(model.named_parameters())


def test_optimizer_state_counts_trainable_only() -> None:
    full = archlang.cost("specs/swin_t.arch", train=True)
    lora = archlang.cost("specs/swin_t_lora.arch", train=True)
    f, lo = full.training_parts(), lora.training_parts()
    # gradients and AdamW moments exist for trainable parameters only: in the optimizer step
    # every gradient (4 bytes each in fp32) and both moments (8) are live, beside the update's
    # temporaries (twice the largest parameter on the CPU) and a step counter per tensor
    assert f["phase"] == "step" and f["grads"] == full.trainable_params * 4 == 28_288_354 * 4
    assert full.trainable_params * 8 < f["optimizer"] < full.trainable_params * 8 + 2**25
    assert lo["grads"] + lo["optimizer"] < lora.trainable_params * 12 + 2**25
    assert lo["params"] - f["params"] == 141_312 * 4  # the LoRA weights themselves
    # frozen layers keep no inputs for their weights' gradients: the LoRA model saves less
    assert lora.saved_bytes < full.saved_bytes
    assert lo["peak"] < f["peak"]


def test_vit_b16_bitfit_counts_agree() -> None:
    rep = archlang.cost("specs/vit_b16.arch", "vit_b16_bitfit")
    model = archlang.build("specs/vit_b16.arch", "vit_b16_bitfit")
    assert rep.trainable_params == requires_grad_count(model)
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") and not n.startswith("head"))
    assert rep.trainable_params == biases + 768 * 1000 + 1000


def test_lora_starts_as_a_no_op_and_timm_weights_load() -> None:
    torch.manual_seed(0)
    tapped = archlang.build("specs/swin_t_lora.arch", **SMALL_SWIN).eval()
    ref = timm.create_model("swin_tiny_patch4_window7_224", **SMALL_SWIN_TIMM).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    archlang.load_timm_weights(tapped, ref.state_dict())
    for n, p in tapped.named_parameters():
        if n.endswith("lora_q.B"):
            assert torch.count_nonzero(p) == 0
        if n.endswith("lora_q.A"):
            assert torch.count_nonzero(p) > 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (tapped(x) - ref(x)).abs().max().item() <= 1e-5


def test_merge_with_nonzero_b() -> None:
    torch.manual_seed(0)
    model = archlang.build("specs/swin_t_lora.arch", **SMALL_SWIN).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora" in n and n.endswith(".B"):
                p.normal_(std=0.2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        archlang.merge_adapters(model)
        after = model(x)
    assert not any(".lora" in n for n, _ in model.named_parameters())
    assert (before - after).abs().max().item() <= 1e-5


LINEAR_AND_CROSS = """
use std.nn
arch net(d: int = 32) {
  in x: [B, 5, d]
  in m: [B, 7, d]
  h = x + xattn: cross_attention(x, m, heads = 4)
  out y = mlp: mlp(h, hidden = 64)
}
arch net_lora = net() {
  adapt lora(r = 2, alpha = 4) on "mlp.fc1", "xattn.k", "xattn.proj"
}
"""


def test_lora_on_linear_and_cross_attention_parts() -> None:
    torch.manual_seed(0)
    model = archlang.build(LINEAR_AND_CROSS, "net_lora").eval()
    names = dict(model.named_parameters())
    assert {"mlp.fc1.lora.A", "xattn.kv.lora_k.B", "xattn.proj.lora.A"} <= set(names)
    rep = archlang.cost(LINEAR_AND_CROSS, "net_lora")
    assert rep.params == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for n, p in names.items():
            if n.endswith(".B"):
                p.normal_()
    x, m = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    with torch.no_grad():
        before = model(x, m)
        archlang.merge_adapters(model)
        assert (model(x, m) - before).abs().max().item() <= 1e-5


def test_param_groups_follow_timm() -> None:
    model = archlang.build("specs/vit_b16.arch", "vit_ti16", depth=1)
    no_decay, decay = archlang.param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"} <= nd
    assert {"blocks.0.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"} <= d
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    lora = archlang.build("specs/swin_t_lora.arch", **SMALL_SWIN)
    groups = archlang.param_groups(lora)
    assert sum(p.numel() for g in groups for p in g["params"]) == requires_grad_count(lora)


def test_lora_must_target_linear_projections() -> None:
    diags = archlang.check(LINEAR_AND_CROSS.replace('"mlp.fc1"', '"xattn"'), "net_lora")
    errors = [d for d in diags if d.is_error]
    assert [d.code for d in errors] == ["E0703"]
    assert "xattn" in errors[0].message


def test_selectors_by_op_kind() -> None:
    spec = """
use swin_t
arch kinds = swin_t() {
  freeze "*"
  adapt lora(r = 4, alpha = 8) on "window_attention:layers.[23].*.q", "linear:*.mlp.fc1"
  unfreeze "layernorm:*"
}
"""
    from pathlib import Path

    tmp = Path("specs") / "_kinds_test.arch"
    tmp.write_text(spec)
    try:
        rep = archlang.cost(tmp, "kinds", **SMALL_SWIN)
        model = archlang.build(tmp, "kinds", **SMALL_SWIN)
    finally:
        tmp.unlink()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("layers.2.") and ".qkv.lora_q." in n for n in names)
    assert not any(n.startswith(("layers.0.", "layers.1.")) and ".qkv.lora" in n for n in names)
    assert any(n.endswith("mlp.fc1.lora.A") for n in names)
    assert all(".lora" in n or "norm" in n for n in names)  # only adapters and LayerNorms train
    assert rep.trainable_params == requires_grad_count(model)
