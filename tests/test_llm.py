"""Modern LLM blocks against Hugging Face transformers: rotary embeddings, Llama, Mistral, LLaVA.

Takes: the ``rope`` op (archlang/ops/position.py), the LLM blocks of std.nn (gqa_attention,
swiglu, geglu, llama_layer), specs/llama.arch, specs/mistral.arch and specs/llava.arch;
transformers' own implementations (LlamaRotaryEmbedding with apply_rotary_pos_emb, Phi's
partial rotary, LlamaMLP, GemmaMLP, LlamaForCausalLM, MistralForCausalLM,
LlavaForConditionalGeneration) built from random tiny configs (no weights are downloaded;
references run with attn_implementation="eager"). Produces: failures when a rotation, a
state_dict key, a logit (1e-5, float32, eval), a parameter count, a FLOP count
(FlopCounterMode, math SDPA) or an attention-matrix figure differs.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import archlang  # noqa: E402

TOL = 1e-5


def _rope_model(theta: float, fraction: float = 1.0, offset: int = 0, heads: int = 4, dim: int = 16):
    spec = (f"arch t() {{\n  in x: [B, {heads}, T, {dim}]\n"
            f"  out y = rope(x, theta = {theta!r}, fraction = {fraction!r}, offset = {offset})\n}}\n")
    return archlang.build(spec).eval()


def _hf_cos_sin(theta: float, head_dim: int, positions: torch.Tensor, fraction: float = 1.0):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = {"rope_type": "default", "rope_theta": theta}
    if fraction != 1.0:  # Phi / GPT-NeoX: the inverse frequencies of the rotated channels only
        from transformers import PhiConfig
        from transformers.models.phi.modeling_phi import PhiRotaryEmbedding

        cfg = PhiConfig(hidden_size=4 * head_dim, num_attention_heads=4, partial_rotary_factor=fraction,
                        rope_theta=theta)
        emb = PhiRotaryEmbedding(cfg)
    else:
        cfg = LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, rope_parameters=params)
        emb = LlamaRotaryEmbedding(cfg)
    x = torch.zeros(1)
    return emb(x, positions[None])


@pytest.mark.parametrize(("theta", "T"), [(10000.0, 16), (10000.0, 300), (500000.0, 300)])
def test_rope_equals_hf_llama_rotary(theta: float, T: int) -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    q, k = torch.randn(2, 4, T, 16), torch.randn(2, 2, T, 16)
    cos, sin = _hf_cos_sin(theta, 16, torch.arange(T))
    want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin)
    model = _rope_model(theta)
    with torch.no_grad():
        got_q = model(q)
        got_k = _rope_model(theta, heads=2)(k)
    assert (got_q - want_q).abs().max().item() <= TOL
    assert (got_k - want_k).abs().max().item() <= TOL
    assert (got_q - q).abs().max().item() > 0.1  # it does rotate


def test_partial_rope_and_offset_equal_hf_phi() -> None:
    from transformers.models.phi.modeling_phi import apply_rotary_pos_emb

    torch.manual_seed(0)
    T, off = 40, 7
    q = torch.randn(2, 4, T, 16)
    cos, sin = _hf_cos_sin(500000.0, 16, torch.arange(off, off + T), fraction=0.5)
    rot, _ = apply_rotary_pos_emb(q[..., :8], q[..., :8], cos, sin)  # Phi's partial rotary
    want = torch.cat([rot, q[..., 8:]], dim=-1)
    with torch.no_grad():
        got = _rope_model(500000.0, fraction=0.5, offset=off)(q)
    assert (got - want).abs().max().item() <= TOL
    assert torch.equal(got[..., 8:], q[..., 8:])


def test_rope_at_given_positions_equals_hf_position_ids() -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    T = 24
    q = torch.randn(2, 4, T, 16)
    # HF's position_ids: two sequences packed in the first row, a KV cache's positions in the second
    pos = torch.stack([torch.cat([torch.arange(10), torch.arange(14)]), torch.arange(100, 100 + T)])
    for p, spec_pos in ((pos, "int[B, T]"), (pos[1], "int[T]")):
        per = [_hf_cos_sin(500000.0, 16, row) for row in (p if p.dim() == 2 else p[None])]  # a table per example
        cos, sin = torch.cat([c for c, _ in per]), torch.cat([s_ for _, s_ in per])
        want, _ = apply_rotary_pos_emb(q, q, cos, sin)
        spec = (f"arch t() {{\n  in x: [B, 4, T, 16]\n  in pos: {spec_pos}\n"
                f"  out y = rope(x, theta = 500000.0, positions = pos)\n}}\n")
        with torch.no_grad():
            got = archlang.build(spec).eval()(q, p)
        assert (got - want).abs().max().item() <= TOL, spec_pos


def test_rope_costs_no_parameters_or_buffers_and_no_counted_flops() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    spec = "arch t() {\n  in x: [B, 4, T, 16]\n  out y = rope(x, theta = 500000.0)\n}\n"
    rep = archlang.cost(spec, batch=1, sizes={"T": 32})
    model = archlang.build(spec)
    assert rep.params == 0 and not list(model.buffers()) and not model.state_dict()
    with FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 4, 32, 16))
    assert rep.flops == fc.get_total_flops() == 0


def test_rope_refuses_an_odd_number_of_rotated_channels() -> None:
    diags = archlang.check("arch t() {\n  in x: [B, 4, T, 10]\n  out y = rope(x, fraction = 0.5)\n}\n")
    assert any(d.code == "E0406" and "fraction" in d.message for d in diags)



@pytest.mark.parametrize(("block", "hf_module", "act"), [("swiglu", "llama.modeling_llama.LlamaMLP", "silu"),
                                                         ("geglu", "gemma.modeling_gemma.GemmaMLP", "gelu_pytorch_tanh")])
def test_gated_mlps_equal_hf(block: str, hf_module: str, act: str) -> None:
    import importlib

    from transformers import LlamaConfig

    mod, cls = hf_module.rsplit(".", 1)
    ref = getattr(importlib.import_module(f"transformers.models.{mod}"), cls)(
        LlamaConfig(hidden_size=64, intermediate_size=172, hidden_act=act))
    extra = ', approximate = "tanh"' if block == "geglu" else ""
    spec = f"use std.nn\narch t() {{\n  in x: [B, N, 64]\n  out y = mlp: {block}(x, hidden = 172{extra})\n}}\n"
    ours = archlang.build(spec).eval()
    ours.load_state_dict({f"mlp.{k}": v for k, v in _perturbed(ref).state_dict().items()}, strict=True)
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= TOL


# ----------------------------------------------------------------------------- Llama

LLAMA = "specs/llama.arch"
TINY = {"vocab": 101, "dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 172, "norm_eps": 1e-5}


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every tensor moved off its initial value (RMSNorm gains start at exactly 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _hf_llama(theta: float, tie: bool = False, cls_name: str = "LlamaForCausalLM", **extra):
    cfg_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))
    cfg = cfg_cls(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=172, vocab_size=101, rms_norm_eps=1e-5, max_position_embeddings=512,
                  rope_parameters={"rope_type": "default", "rope_theta": theta}, tie_word_embeddings=tie,
                  attn_implementation="eager", **extra)
    torch.manual_seed(0)
    return _perturbed(getattr(transformers, cls_name)(cfg))


def _logits_gap(ours: torch.nn.Module, hf: torch.nn.Module, T: int, seed: int = 1) -> float:
    ids = torch.randint(0, 101, (2, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        got = ours(ids)
    assert got.shape == want.shape == (2, T, 101)
    assert want.abs().max().item() > 0.5  # logits are not all near zero
    return (got - want).abs().max().item()


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_llama_loads_hf_state_dict_strictly_and_matches_logits(theta: float) -> None:
    hf = _hf_llama(theta)
    ours = archlang.build(LLAMA, "llama", **TINY, rope_theta=theta).eval()
    assert set(ours.state_dict()) == set(hf.state_dict())  # the same keys (no mapping)
    ours.load_state_dict(hf.state_dict(), strict=True)
    for T in (16, 300):
        assert _logits_gap(ours, hf, T) <= TOL, f"T = {T}"


def test_llama_config_options_head_dim_and_biases_match_hf() -> None:
    hf = _hf_llama(10000.0, head_dim=24, attention_bias=True, mlp_bias=True)
    ours = archlang.build(LLAMA, "llama", **TINY, head_dim=24, attention_bias=True, mlp_bias=True).eval()
    assert "model.layers.0.self_attn.o_proj.bias" in ours.state_dict()
    ours.load_state_dict(hf.state_dict(), strict=True)
    assert _logits_gap(ours, hf, 16) <= TOL


def test_llama_with_a_tied_head_shares_the_embedding() -> None:
    hf = _hf_llama(10000.0, tie=True)
    ours = archlang.build(LLAMA, "llama", **TINY, tie=True).eval()
    sd = hf.state_dict()
    # HF lists the tied head under its own key too, as the embedding's tensor; so does ours
    assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
    assert set(ours.state_dict()) == set(sd)
    ours.load_state_dict(sd, strict=True)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert archlang.cost(LLAMA, "llama", **TINY, tie=True).params == sum(p.numel() for p in hf.parameters())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
    assert _logits_gap(ours, hf, 16) <= TOL
    # and back: HF loads ours strictly
    hf2 = _hf_llama(10000.0, tie=True)
    hf2.load_state_dict(_perturbed(ours, seed=3).state_dict(), strict=True)
    assert _logits_gap(ours, hf2, 16) <= TOL


def test_llama_flops_and_attention_memory_match_torch() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from archlang.lower.codegen import generate

    rep = archlang.cost(LLAMA, "llama", **TINY, batch=1, sizes={"T": 16})
    model = archlang.build(LLAMA, "llama", **TINY).eval()
    assert rep.params == sum(p.numel() for p in model.parameters())
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randint(0, 101, (1, 16)))
    assert rep.flops == fc.get_total_flops()
    # every attention layer is in the attention-matrix report: layers x heads x T x T float32 scores
    assert len(rep.attention_layers()) == 2
    assert rep.attention_bytes == 2 * 4 * 16 * 16 * 4
    source, _ = generate(archlang.graph(LLAMA, "llama", **TINY))
    assert source.count("F.scaled_dot_product_attention(") >= 1 and "softmax" not in source


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_compiled_llama_matches_hf(attention: str) -> None:
    """torch.compile'd (about a minute on 2 CPU cores): rope and attend trace, FlexAttention fused."""
    hf = _hf_llama(500000.0)
    ours = archlang.build(LLAMA, "llama", **TINY, rope_theta=500000.0, compile=True, attention=attention).eval()
    ours._orig_mod.load_state_dict(hf.state_dict(), strict=True)
    assert _logits_gap(ours, hf, 64) <= TOL


@pytest.mark.parametrize(("arch", "params"), [("llama2_7b", 6_738_415_616), ("llama3_8b", 8_030_261_248)])
def test_llama_variants_have_the_published_parameter_counts(arch: str, params: int) -> None:
    assert archlang.cost(LLAMA, arch).params == params


# ----------------------------------------------------------------------------- Mistral

MISTRAL = "specs/mistral.arch"


def test_mistral_sliding_window_matches_hf_beyond_the_window() -> None:
    hf = _hf_llama(10000.0, cls_name="MistralForCausalLM", sliding_window=8, head_dim=16)
    assert hf.config.sliding_window == 8
    ours = archlang.build(MISTRAL, "mistral", **TINY, window=8).eval()
    assert set(ours.state_dict()) == set(hf.state_dict())
    ours.load_state_dict(hf.state_dict(), strict=True)
    assert _logits_gap(ours, hf, 32) <= TOL  # T = 32, four windows long
    # the window matters: plain causal attention (Llama, same weights) differs past the window
    llama = archlang.build(LLAMA, "llama", **TINY).eval()
    llama.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(0, 101, (1, 32))
    with torch.no_grad():
        a, b = ours(ids), llama(ids)
    assert (a[:, :8] - b[:, :8]).abs().max().item() <= TOL  # the first window is causal attention
    assert (a[:, 8:] - b[:, 8:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("attention", ["sdpa", pytest.param("flex", marks=pytest.mark.slow)])
def test_mistral_runs_its_attention_through_sdpa_or_flex(attention: str) -> None:
    hf = _hf_llama(10000.0, cls_name="MistralForCausalLM", sliding_window=8, head_dim=16)
    ours = archlang.build(MISTRAL, "mistral", **TINY, window=8, attention=attention).eval()
    source = ours.archlang_source
    assert "softmax" not in source[source.index("class GqaAttention"):]  # the generated classes (not the prelude)
    if attention == "flex":
        assert source.count("flex_attention(") >= 1 and "block_mask(" in source
    else:
        assert source.count("F.scaled_dot_product_attention(") >= 1 and "flex_attention(" not in source
    ours.load_state_dict(hf.state_dict(), strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex_attention outside torch.compile warns that it is unfused
        assert _logits_gap(ours, hf, 32) <= TOL


def test_mistral_costs_and_attention_report() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    rep = archlang.cost(MISTRAL, "mistral", **TINY, window=8, batch=1, sizes={"T": 32})
    model = archlang.build(MISTRAL, "mistral", **TINY, window=8).eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randint(0, 101, (1, 32)))
    assert rep.flops == fc.get_total_flops()
    assert len(rep.attention_layers()) == 2 and rep.attention_bytes == 2 * 4 * 32 * 32 * 4
    assert archlang.cost(MISTRAL, "mistral_7b").params == 7_241_732_096  # Mistral-7B-v0.1


# ----------------------------------------------------------------------------- LLaVA

LLAVA = "specs/llava.arch"
LLAVA_TINY = {"img": 28, "patch": 14, "vision_dim": 32, "vision_layers": 3, "vision_heads": 2, "vision_ffn": 64,
              "dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 172, "vocab": 120, "image_token": 110}


def _hf_llava():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=28, patch_size=14)
    text = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=172, vocab_size=120, rms_norm_eps=1e-5)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=110, attn_implementation="eager")
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy) == (-2, "default")
    torch.manual_seed(0)
    return _perturbed(LlavaForConditionalGeneration(cfg))


def _llava_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (2, 12), generator=g)
    ids[0, 2:6] = 110  # one image (2 x 2 patches) per example, at different places
    ids[1, 5:9] = 110
    return torch.randn(2, 3, 28, 28, generator=g), ids


def test_llava_loads_hf_state_dict_strictly_and_matches_logits() -> None:
    hf = _hf_llava()
    ours = archlang.build(LLAVA, "llava", **LLAVA_TINY).eval()
    assert set(ours.state_dict()) == set(hf.state_dict())  # the unused last CLIP layer and post_layernorm too
    ours.load_state_dict(hf.state_dict(), strict=True)
    image, ids = _llava_inputs()
    with torch.no_grad():
        want = hf(input_ids=ids, pixel_values=image).logits
        got = ours(image, ids)
        other = ours(torch.randn(2, 3, 28, 28), ids)
    assert got.shape == want.shape == (2, 12, 120)
    assert (got - want).abs().max().item() <= TOL
    assert (other - got)[0, :2].abs().max().item() == 0  # text before the image does not see it
    assert (other - got)[0, 2:].abs().max().item() > 1e-3  # the image tokens carry the image


def test_llava_trains_the_projector_and_lm_and_costs_as_torch_counts() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = archlang.build(LLAVA, "llava", **LLAVA_TINY)
    image, ids = _llava_inputs()
    model(image, ids).sum().backward()
    grads = {n: p.grad is not None for n, p in model.named_parameters()}
    assert all(g for n, g in grads.items() if not n.startswith("model.vision_tower."))
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("model.vision_tower."))
    rep = archlang.cost(LLAVA, "llava", **LLAVA_TINY, batch=1, sizes={"T": 12})
    assert rep.params == sum(p.numel() for p in model.parameters())
    model.eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(image[:1], ids[:1])
    assert rep.flops == fc.get_total_flops()
    # CLIP's 3 layers (5 tokens, 2 heads) and the LM's 2 (12 tokens, 4 heads), float32 scores
    assert len(rep.attention_layers()) == 5
    assert rep.attention_bytes == (3 * 2 * 5 * 5 + 2 * 4 * 12 * 12) * 4


def test_llava_v15_7b_has_hf_parameter_count() -> None:
    # llava-hf/llava-1.5-7b-hf with the full CLIP tower (its last layer and post_layernorm
    # unused): 7,063,427,072; without them it would be 7,050,828,800
    assert archlang.cost(LLAVA, "llava_v15_7b").params == 7_063_427_072
