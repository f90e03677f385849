"""torch.compile(fullgraph=True) compiles every generated model without graph breaks.

Small configurations keep this quick; full-size compiles live in benchmarks/."""

from __future__ import annotations

import re

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


def test_compile_regions_mark_the_outermost_repeated_blocks() -> None:
    """``compile_regions``: the forward of each outermost block class with two or more instances
    is a nested compile region (Swin's blocks and patch merges, not the MLPs inside the blocks);
    the default code has none, and in eager mode the marked model computes the same."""
    from archlang.lower.codegen import compile_regions, generate

    g = archlang.graph("specs/swin_t.arch", "swin_t", **SMALL[2][2])
    plain, _ = generate(g)
    with compile_regions():
        marked, _ = generate(g)
    assert "nested_compile_region" not in plain
    parts = re.split(r"    @torch\.compiler\.nested_compile_region\(max_reuse_entries=(\d+)\)\n", marked)
    marked_classes = [(parts[i].rsplit("\nclass ", 1)[1].split("(")[0], int(parts[i + 1]))
                      for i in range(0, len(parts) - 1, 2)]
    assert marked_classes == [("SwinBlock", 5), ("PatchMerge", 3)]  # one reuse entry per instance
    assert "".join(parts[::2]) == plain
    torch.manual_seed(0)
    model = archlang.build("specs/swin_t.arch", "swin_t", compile_regions=True, **SMALL[2][2]).eval()
    ref = archlang.build("specs/swin_t.arch", "swin_t", **SMALL[2][2]).eval()
    ref.load_state_dict(model.state_dict())
    x = example_inputs(model.archlang_graph)
    with torch.no_grad():
        assert torch.equal(model(*x), ref(*x))


@pytest.mark.slow
def test_compile_regions_compile_without_graph_breaks() -> None:
    spec, arch, params = SMALL[0][0], SMALL[0][1], {**SMALL[0][2], "depth": 3}
    torch._dynamo.reset()
    model = archlang.build(spec, arch, compile_regions=True, **params).eval()
    inputs = example_inputs(model.archlang_graph)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=1e-5, rtol=1e-5)
