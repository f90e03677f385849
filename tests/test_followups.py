"""Issue 12 follow-ups: tied heads as HF's aliases, ``table[index]`` as gather, the ``archc ops``
listing and the error-code documentation.

Takes the shipped specs and small inline ones; checks generated modules against HF
transformers, the IR interpreter and torch, and the CLI's listing.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import archlang  # noqa: E402
from archlang.lower.interpret import interpret  # noqa: E402

LLAMA = "specs/llama.arch"
TINY = {"vocab": 101, "dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 172, "norm_eps": 1e-5}


# ----------------------------------------------------------------------------- tied heads


def _tied_llama(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = archlang.build(LLAMA, "llama", **TINY, tie=True).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_a_labelled_tied_head_is_an_alias_of_the_embedding() -> None:
    model = _tied_llama()
    sd = model.state_dict()
    assert "lm_head.weight" in sd and "model.embed_tokens.weight" in sd
    assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    names = [n for n, _ in model.named_parameters()]  # de-duplicated: the embedding's name only
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    params = sum(p.numel() for p in model.parameters())
    assert params == archlang.cost(LLAMA, "llama", **TINY, tie=True).params
    # a conversion keeps the tie (`.to(dtype)` converts in place)
    wide = archlang.build(LLAMA, "llama", **TINY, tie=True).double()
    assert wide.lm_head.weight is wide.model.embed_tokens.weight
    assert wide.lm_head.weight.dtype == torch.float64


def test_a_state_dict_without_the_alias_loads_non_strictly() -> None:
    """A checkpoint written before the alias existed (or a safetensors file, which stores a
    shared tensor once) lacks `lm_head.weight`: it loads with strict=False, the only missing
    key is the alias, and the head then holds the loaded embedding."""
    src, dst = _tied_llama(0), _tied_llama(1)
    old = {k: v for k, v in src.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = dst.load_state_dict(old, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected
    assert torch.equal(dst.lm_head.weight, src.model.embed_tokens.weight)
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(dst(ids), src(ids))


def test_a_tied_model_saves_and_loads_with_safetensors(tmp_path) -> None:
    model = _tied_llama()
    path = archlang.save(model, tmp_path / "tied.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # stored once
    back = archlang.load(path, max_memory=None).eval()
    assert back.lm_head.weight is back.model.embed_tokens.weight
    ids = torch.randint(0, 101, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


def test_a_tied_head_agrees_with_the_interpreter_and_trains_the_embedding_once() -> None:
    model = _tied_llama().double()
    g = archlang.graph(LLAMA, "llama", **TINY, tie=True)
    ids = torch.randint(0, 101, (2, 7), generator=torch.Generator().manual_seed(4))
    got = model(ids)
    (want,) = interpret(g, dict(model.state_dict()), [ids])
    assert (got - want).abs().max().item() <= 1e-10
    got.square().mean().backward()
    assert model.model.embed_tokens.weight.grad is not None  # both uses flow into one gradient


def test_unlabelled_tied_heads_keep_their_functional_form() -> None:
    """gpt's and bert's heads have no label: no alias key, the same code as before."""
    from archlang.lower.codegen import generate

    src, _ = generate(archlang.graph("specs/gpt.arch", "gpt_mini"))
    assert "F.linear(self.ln_f(x), self.wte.weight)" in src and ".weight = self." not in src
    keys = archlang.build("specs/gpt.arch", "gpt_mini").state_dict()
    assert not any(k.startswith("tied_linear") for k in keys)
