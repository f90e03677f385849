"""Modern LLM blocks against Hugging Face transformers: rotary embeddings, Llama and Mistral.

Takes: the ``rope`` op (archlang/ops/position.py), the LLM blocks of std.nn and
specs/llama.arch, specs/mistral.arch; transformers' own implementations (LlamaRotaryEmbedding
with apply_rotary_pos_emb, Phi's partial rotary, LlamaForCausalLM, MistralForCausalLM) built
from random tiny configs (no weights are downloaded). Produces: failures when a rotation,
a state_dict key, a logit (1e-5, float32, eval), a parameter count, a FLOP count
(FlopCounterMode, math SDPA) or an attention-matrix figure differs.
"""

from __future__ import annotations

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
