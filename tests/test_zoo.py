"""The course's families as specs: each checks, builds, runs forward and backward, and costs;
references match exactly where they exist (GPT's block stack vs nn.TransformerEncoder,
ResMLP vs timm); paper parameter counts where only the paper exists (S2-MLP)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import archlang  # noqa: E402
from archlang.lower.example import example_inputs  # noqa: E402

SMALL = [
    ("specs/gpt.arch", "gpt_mini", {}),
    ("specs/bert.arch", "bert_mini", {}),
    ("specs/igpt.arch", "igpt", {"res": 16, "layers": 2, "width": 64, "heads": 4, "vocab": 32}),
    ("specs/resmlp_12.arch", "resmlp_12", {"img": 64, "depth": 2, "dim": 64}),
    ("specs/s2mlp.arch", "s2mlp_wide", {"img": 56, "depth": 2, "dim": 64}),
    ("specs/unit.arch", "unit_tiny", {}),
]


@pytest.mark.parametrize(("spec", "arch", "params"), SMALL, ids=[a for _, a, _ in SMALL])
def test_builds_runs_backward_and_costs(spec: str, arch: str, params: dict) -> None:
    torch.manual_seed(0)
    model = archlang.build(spec, arch, **params)
    out = model(*example_inputs(model.archlang_graph))
    outs = out if isinstance(out, dict) else {"out": out}
    sum(v.float().sum() for v in outs.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    rep = archlang.cost(spec, arch, **params)
    assert rep.params == sum(p.numel() for p in model.parameters())
    assert rep.flops > 0


def test_gpt_block_stack_matches_torch_transformer_encoder() -> None:
    from torch import nn

    from archlang.lower.weights import torch_transformer_state

    torch.manual_seed(0)
    model = archlang.build("specs/gpt.arch", "gpt_mini").eval()
    layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.1, activation="gelu", batch_first=True,
                                       norm_first=True)
    ref = nn.TransformerEncoder(layer, 4, norm=nn.LayerNorm(128), enable_nested_tensor=False).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    renamed = {("h." + k.removeprefix("layers.")) if k.startswith("layers.") else k.replace("norm.", "ln_f."): v
               for k, v in torch_transformer_state(ref.state_dict()).items()}
    ours = model.state_dict()
    assert set(renamed) == set(ours) - {"wte.weight", "wpe"}  # every block tensor is consumed
    model.load_state_dict({**ours, **renamed}, strict=True)
    # in float64: the tied head's logits are large, so float32 rounding alone reaches ~2e-5
    model, ref = model.double(), ref.double()
    tokens = torch.randint(0, 512, (2, 10))
    with torch.no_grad():
        emb = model.wte(tokens) + model.wpe[:, :10]
        mask = nn.Transformer.generate_square_subsequent_mask(10, dtype=torch.float64)
        want = nn.functional.linear(ref(emb, mask=mask, is_causal=True), model.wte.weight)
        assert (model(tokens) - want).abs().max().item() <= 1e-5


def test_gpt2_and_bert_sizes() -> None:
    assert archlang.cost("specs/gpt.arch", "gpt2").params == 124_439_808  # GPT-2 small, tied head
    # BERT-base encoder (HF BertModel without its pooler: 108,891,648) + the MLM transform (dense + LayerNorm)
    assert archlang.cost("specs/bert.arch", "bert_base").params == 108_891_648 + 768 * 768 + 768 + 2 * 768


def test_s2mlp_within_two_percent_of_the_paper() -> None:
    params = archlang.cost("specs/s2mlp.arch").params
    assert abs(params / 71e6 - 1) < 0.02  # S2-MLP-wide, Yu et al. 2022, Table 1: 71M


def test_conformer_runs_costs_and_compiles() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    small = {"layers": 2, "dim": 64, "vocab": 30}
    model = archlang.build("specs/conformer.arch", **small).eval()
    inputs = example_inputs(model.archlang_graph, batch=2, sizes={"T": 63})
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        assert model(*inputs).shape == (2, 15, 31)  # x4 subsampling in time; vocabulary + blank
    assert counter.get_total_flops() == archlang.cost("specs/conformer.arch", batch=2, sizes={"T": 63}, **small).flops
    model.train()
    model(*inputs).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    sizes = {a: archlang.graph("specs/conformer.arch", a) for a in ("conformer_s", "conformer_m", "conformer_l")}
    assert [(g.param("layers"), g.param("dim"), g.param("heads")) for g in sizes.values()] == [
        (16, 144, 4), (16, 256, 4), (17, 512, 8)]  # the paper's encoder sizes (Table 1)


def test_cyclemlp_matches_the_paper_and_runs() -> None:
    b1 = archlang.cost("specs/cyclemlp_b1.arch")
    assert abs(b1.params / 15.2e6 - 1) < 0.02  # Chen et al. 2022, Table 1: CycleMLP-B1 15.2M
    assert abs(b1.flops / 2 / 2.1e9 - 1) < 0.02  # and 2.1G multiply-adds
    assert abs(archlang.cost("specs/cyclemlp_b1.arch", "cyclemlp_b2").params / 26.8e6 - 1) < 0.02
    model = archlang.build("specs/cyclemlp_b1.arch", img=64)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_channel_shift_is_the_cycle_pattern() -> None:
    from archlang.lower.prelude import channel_shift

    x = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 1, 3).clone()  # value = row index; 3 channels
    got = channel_shift(x, 1, 3)[0, :, 0, :]
    # channel i reads row + (i + 1) % 3 - 1: offsets 0, +1, -1; zeros past the border
    assert got.tolist() == [[0, 1, 0], [1, 2, 0], [2, 3, 1], [3, 0, 2]]


def test_gpt_and_transformer_flops_equal_flop_counter() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    for spec, arch in (("specs/gpt.arch", "gpt_mini"), ("specs/bert.arch", "bert_mini")):
        model = archlang.build(spec, arch).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            model(*example_inputs(model.archlang_graph, batch=2, sizes={"S": 12, "T": 12}))
        assert counter.get_total_flops() == archlang.cost(spec, arch, batch=2, sizes={"S": 12, "T": 12}).flops


@pytest.mark.parametrize(("spec", "timm_name", "params", "size"), [
    ("specs/resmlp_12.arch", "resmlp_12_224", 15_350_872, 224),
    ("specs/swinv2_t.arch", "swinv2_tiny_window8_256", 28_347_154, 256),
    ("specs/mvitv2_t.arch", "mvitv2_tiny", 24_173_320, 224),
    ("specs/vit_s_r26_s32.arch", "vit_small_r26_s32_224", 36_431_912, 224),
])
def test_matches_timm_with_exact_flops(spec: str, timm_name: str, params: int, size: int) -> None:
    """Params equal, timm's weights load strictly, outputs agree, FLOPs equal FlopCounterMode."""
    timm = pytest.importorskip("timm")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    rep = archlang.cost(spec)
    assert rep.params == params
    torch.manual_seed(0)
    ours = archlang.build(spec).eval()
    ref = timm.create_model(timm_name).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    archlang.load_timm_weights(ours, ref.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        ours(x[:1])
    assert counter.get_total_flops() == rep.flops
