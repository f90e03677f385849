"""The fused attention primitive ``attend``: parity, errors, cost and lowerings.

Takes: small specs that call ``attend``. Produces: failures when the generated model (SDPA
or FlexAttention lowering) disagrees with the interpreter (float64) or with a reference
written from torch's own SDPA, when the FLOPs differ from ``FlopCounterMode`` under the math
backend, or when the attention-memory report misses an ``attend``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import archlang
from archlang.api import SpecError
from archlang.lower.interpret import interpret


def _spec(call: str, q: str = "[B, 4, 7, 8]", k: str = "[B, 2, 9, 8]", v: str = "[B, 2, 9, 6]",
          extra: str = "") -> str:
    return f"arch t() {{\n  in q: {q}\n  in k: {k}\n  in v: {v}\n{extra}  out y = {call}\n}}\n"


def _inputs(g, batch: int = 2, dtype=torch.float64, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs: floats, sorted document ids for int inputs, and bool masks that keep
    each query's own position (no row is fully masked)."""
    torch.manual_seed(seed)
    out = []
    for name in g.inputs:
        t = g.node(name).outputs[0]
        shape = [batch if not isinstance(d, int) else d for d in t.shape]
        if t.dtype == "int":
            out.append(torch.randint(0, 3, shape).sort(dim=-1).values)
        elif t.dtype == "bool":
            keep = torch.rand(shape) < 0.6
            keep[..., torch.arange(min(shape[-2:])), torch.arange(min(shape[-2:]))] = True
            out.append(keep)
        else:
            out.append(torch.randn(*shape, dtype=dtype))
    return out


# name -> (call, extra inputs, q, k/v heads and lengths): every kind the issue lists
CASES = {
    "plain": ("attend(q, k, v)", "", "[B, 4, 7, 8]", "[B, 4, 9, 8]", "[B, 4, 9, 6]"),
    "causal": ("attend(q, k, v, causal = true)", "", "[B, 4, 7, 8]", "[B, 4, 7, 8]", "[B, 4, 7, 6]"),
    "gqa": ("attend(q, k, v, causal = true, scale = 0.2)", "", "[B, 4, 7, 8]", "[B, 2, 7, 8]", "[B, 2, 7, 6]"),
    "bias_tensor": ("attend(q, k, v, bias = pos)", "  in pos: [4, 7, 9]\n", "[B, 4, 7, 8]", "[B, 2, 9, 8]",
                    "[B, 2, 9, 8]"),
    "mask_tensor": ("attend(q, k, v, mask = keep)", "  in keep: bool[B, 1, 7, 9]\n", "[B, 4, 7, 8]",
                    "[B, 4, 9, 8]", "[B, 4, 9, 8]"),
    "sliding_window": ("attend(q, k, v, mask = q_idx - kv_idx < window, causal = true)", "", "[B, 4, 9, 8]",
                       "[B, 2, 9, 8]", "[B, 2, 9, 8]"),
    "alibi": ("attend(q, k, v, bias = slope[h] * (kv_idx - q_idx), causal = true)", "  in slope: [4]\n",
              "[B, 4, 7, 8]", "[B, 4, 7, 8]", "[B, 4, 7, 8]"),
    "document": ("attend(q, k, v, mask = doc[b, q_idx] == doc[b, kv_idx])", "  in doc: int[B, 7]\n",
                 "[B, 4, 7, 8]", "[B, 4, 7, 8]", "[B, 4, 7, 8]"),
}


def _case(name: str) -> str:
    call, extra, q, k, v = CASES[name]
    return _spec(call, q, k, v, extra).replace("arch t() {", "arch t(window: int = 3) {")


def _run(model, ins: list[torch.Tensor], dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager FlexAttention says it is unfused
        return model.to(dtype)(*[x.to(dtype) if x.is_floating_point() else x for x in ins])


@pytest.mark.parametrize("name", list(CASES))
def test_both_lowerings_agree_with_the_interpreter_and_each_other(name: str) -> None:
    text = _case(name)
    g = archlang.graph(text)
    ins = _inputs(g)
    (ref,) = interpret(g, {}, [x.double() if x.is_floating_point() else x for x in ins])
    got = {}
    for kind in ("sdpa", "flex"):
        model = archlang.build(text, max_memory=None, attention=kind)
        assert (_run(model, ins, torch.float64) - ref).abs().max().item() < 1e-10, kind
        got[kind] = _run(model, ins, torch.float32)
    assert (got["sdpa"] - got["flex"]).abs().max().item() < 1e-5
    assert (got["sdpa"].double() - ref).abs().max().item() < 1e-5


def test_gqa_causal_scale_against_torch_sdpa() -> None:
    """The generated model equals torch's SDPA on the inputs (k, v heads repeated for GQA), float32."""
    text = _spec("attend(q, k, v, causal = true, scale = 0.25)", k="[B, 2, 7, 8]", v="[B, 2, 7, 6]")
    model = archlang.build(text, max_memory=None)
    g = archlang.graph(text)
    q, k, v = _inputs(g, dtype=torch.float32)
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                          is_causal=True, scale=0.25)
    assert (model(q, k, v) - want).abs().max().item() < 1e-5
    (ref,) = interpret(g, {}, [t.double() for t in (q, k, v)])
    assert (ref.float() - want).abs().max().item() < 1e-5


def test_causal_is_top_left_aligned_as_sdpa() -> None:
    """With fewer queries than keys, query i sees keys 0..i (SDPA's is_causal), not the last ones."""
    text = _spec("attend(q, k, v, causal = true)", q="[B, 4, 3, 8]", k="[B, 4, 9, 8]", v="[B, 4, 9, 8]")
    g = archlang.graph(text)
    q, k, v = _inputs(g)
    (got,) = interpret(g, {}, [q, k, v])
    mask = torch.ones(3, 9, dtype=torch.bool).tril()
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (got - want).abs().max().item() < 1e-12


def test_flops_equal_flop_counter_under_the_math_backend() -> None:
    text = _spec("attend(q, k, v, causal = true)")
    g = archlang.graph(text)
    rep = archlang.cost(text, batch=1)
    model = archlang.build(text, max_memory=None)
    ins = _inputs(g, batch=1, dtype=torch.float32)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(*ins)
    assert rep.flops == fc.get_total_flops() == 2 * 4 * 7 * 9 * (8 + 6)


def test_every_attend_is_in_the_attention_report() -> None:
    text = _spec("attend(q, k, v)\n  out z = attend(q, q, q, causal = true)")
    rep = archlang.cost(text, batch=3)
    entries = {r.name: (r.attention_entries, r.attention_bytes) for r in rep.attention_layers()}
    assert entries == {"attend_op": (3 * 4 * 7 * 9, 3 * 4 * 7 * 9 * 4), "attend_op_1": (3 * 4 * 7 * 7, 3 * 4 * 7 * 7 * 4)}


@pytest.mark.parametrize(("k", "v", "code", "needle"), [
    ("[B, 3, 9, 8]", "[B, 3, 9, 6]", "E0310", "3 key/value heads do not divide 4 query heads"),
    ("[B, 2, 9, 8]", "[B, 1, 9, 6]", "E0301", "k has 2 heads but v has 1"),
    ("[B, 2, 9, 5]", "[B, 2, 9, 6]", "E0301", "head dim 8 but k has 5"),
    ("[B, 2, 9]", "[B, 2, 9, 6]", "E0302", "attend expects k as [B, heads, length, head_dim]"),
])
def test_bad_shapes_are_diagnosed(k: str, v: str, code: str, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        archlang.graph(_spec("attend(q, k, v)", k=k, v=v))
    assert f"error[{code}]" in str(err.value) and needle in str(err.value)
    assert "help:" in str(err.value)
