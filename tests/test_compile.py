"""torch.compile(fullgraph=True) compiles every generated model without graph breaks.

Small configurations keep this quick; full-size compiles live in benchmarks/."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import archlang  # noqa: E402
from archlang.lower.example import example_inputs  # noqa: E402

SMALL = [
    ("specs/vit_b16.arch", "vit_ti16", {"img": 32, "patch": 8, "depth": 1}),
    ("specs/deit_s_distilled.arch", "deit_ti_distilled", {"img": 32, "patch": 8, "depth": 1}),
    ("specs/swin_t.arch", "swin_t", {"img": 64, "window": 4, "depths": [1, 2, 1, 1], "embed": 16,
                                     "heads": [1, 2, 4, 8]}),
    ("specs/mixer_b16.arch", "mixer_b16", {"img": 32, "patch": 8, "depth": 1, "dim": 32}),
    ("specs/transformer.arch", None, {"enc_layers": 1, "dec_layers": 1, "d": 32, "heads": 4, "ff": 64,
                                      "src_vocab": 50, "tgt_vocab": 50, "max_len": 64}),
    ("specs/igpt.arch", "igpt", {"res": 4, "layers": 1, "width": 32, "heads": 4, "vocab": 16}),
    ("specs/swinv2_t.arch", "swinv2_t", {"img": 64, "window": 4, "depths": [1, 2, 1, 1], "embed": 16,
                                         "heads": [1, 2, 4, 8]}),
    ("specs/mvitv2_t.arch", "mvitv2_t", {"img": 64, "embed": 16, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2]}),
    ("tests/specs/all_ops.arch", None, {}),
]


@pytest.mark.parametrize(("spec", "arch", "params"), SMALL, ids=[f"{s.split('/')[-1]}:{a}" for s, a, _ in SMALL])
def test_compiles_without_graph_breaks(spec: str, arch: str | None, params: dict) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = archlang.build(spec, arch, **params).eval()
    inputs = example_inputs(model.archlang_graph)
    explanation = torch._dynamo.explain(model)(*inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        got, want = compiled(*inputs), model(*inputs)
    if isinstance(got, dict):
        for k in want:
            assert torch.allclose(got[k], want[k], atol=1e-4, rtol=1e-4)
    else:
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
