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


# Inductor (C++ builds: most of a cold CI run's compile time: 20 s for this ViT, 60-70 s each for
# Swin-T and all_ops) for the ViT by default; the others through AOTAutograd's eager backend, which
# traces the same joint graph that Inductor compiles. Swin-T (the main job's spec) and all_ops
# (every op, both attention kinds) through Inductor are `slow` (pytest -m slow).
INDUCTOR = ("vit_ti16",)


def _compile_and_compare(spec: str, arch: str | None, params: dict, backend: str) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = archlang.build(spec, arch, **params).eval()
    inputs = example_inputs(model.archlang_graph)
    compiled = torch.compile(model, fullgraph=True, backend=backend)  # a graph break raises
    with torch.no_grad():
        try:
            got = compiled(*inputs)
        except torch._dynamo.exc.Unsupported as e:
            pytest.fail(f"graph break under fullgraph=True: {e}")
        want = model(*inputs)
    if isinstance(got, dict):
        for k in want:
            assert torch.allclose(got[k], want[k], atol=1e-4, rtol=1e-4)
    else:
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("spec", "arch", "params"), SMALL, ids=[f"{s.split('/')[-1]}:{a}" for s, a, _ in SMALL])
def test_compiles_without_graph_breaks(spec: str, arch: str | None, params: dict) -> None:
    _compile_and_compare(spec, arch, params, "inductor" if arch in INDUCTOR else "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "arch", "params"), [c for c in SMALL if c[1] == "swin_t" or c[0].endswith("all_ops.arch")],
                         ids=["swin_t", "all_ops"])
def test_inductor_compiles_swin_and_every_op(spec: str, arch: str | None, params: dict) -> None:
    _compile_and_compare(spec, arch, params, "inductor")


def _marked(source: str) -> list[tuple[str, int]]:
    """(class, max_reuse_entries) of each forward marked as a nested compile region, in order."""
    parts = re.split(r"    @torch\.compiler\.nested_compile_region\(max_reuse_entries=(\d+)\)\n", source)
    return [(parts[i].rsplit("\nclass ", 1)[1].split("(")[0], int(parts[i + 1])) for i in range(0, len(parts) - 1, 2)]


STAGED = """
use std.nn

block res(x: [B, N, C]) {
  return x + m: mlp(layernorm(x), hidden = C * 2)
}

block stage(x: [B, N, C], depth: int, out: int) {
  for i in 0 .. depth {
    x = blocks[i]: res(x)
  }
  return proj: linear(x, out)
}

arch staged(dim: int = 8) {
  in x: [B, 4, dim]
  x = s0: stage(x, depth = 2, out = dim * 2)
  x = s1: stage(x, depth = 6, out = dim * 4)
  x = s2: stage(x, depth = 2, out = dim * 8)
  out y = x
}
"""


def test_compile_regions_mark_the_outermost_blocks_that_can_share_code() -> None:
    """``compile_regions``: the forward of each outermost block class with two instances alike
    is a nested compile region, with a reuse entry per instance (ViT's blocks, not the MLPs
    inside them; inside stages of different widths, which share nothing, the residual blocks);
    the default code has none, the decorator lines are the only difference, and eagerly the
    marked model computes the same."""
    from archlang.lower.codegen import compile_regions, generate

    spec, arch, params = SMALL[0][0], SMALL[0][1], {**SMALL[0][2], "depth": 4}
    g = archlang.graph(spec, arch, **params)
    plain, _ = generate(g)
    with compile_regions():
        marked, _ = generate(g)
    assert "nested_compile_region" not in plain
    assert _marked(marked) == [("TransformerBlock", 3)]
    assert re.sub(r"    @torch\.compiler\.nested_compile_region\(.*\)\n", "", marked) == plain
    with compile_regions():
        assert [c for c, _ in _marked(generate(archlang.graph(STAGED))[0])] == ["Res"]
    torch.manual_seed(0)
    model = archlang.build(spec, arch, compile_regions=True, **params).eval()
    assert _marked(model.archlang_source) == [("TransformerBlock", 3)]
    ref = archlang.build(spec, arch, **params).eval()
    ref.load_state_dict(model.state_dict())
    x = example_inputs(model.archlang_graph)
    with torch.no_grad():
        assert torch.equal(model(*x), ref(*x))


def test_archc_build_compile_regions_writes_the_marks(tmp_path) -> None:
    from typer.testing import CliRunner

    from archlang.cli import app

    spec, params = SMALL[0][0], {**SMALL[0][2], "depth": 4}
    sets = [a for k, v in params.items() for a in ("--set", f"{k}={v}")]
    r = CliRunner().invoke(app, ["build", spec, "--arch", "vit_ti16", *sets, "--compile-regions", "--out",
                                 str(tmp_path), "--max-memory", "off"])
    assert r.exit_code == 0, r.output
    assert _marked((tmp_path / "vit_ti16.py").read_text()) == [("TransformerBlock", 3)]


def test_compile_regions_trace_each_kind_of_block_once() -> None:
    """Under torch.compile (Dynamo only, no Inductor: quick), ViT's first three blocks are three
    calls of one invoke_subgraph region (the fourth, on the class token alone, is a class of its
    own: archlang.check.rows), and the compiled model computes what the eager one does."""
    spec, arch, params = SMALL[0][0], SMALL[0][1], {**SMALL[0][2], "depth": 4}
    torch._dynamo.reset()
    model = archlang.build(spec, arch, compile_regions=True, **params).eval()
    inputs = example_inputs(model.archlang_graph)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=capture, fullgraph=True)
    with torch.no_grad():  # 1e-5: compiled linear layers may run another GEMM than the eager race chose
        torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=1e-5, rtol=1e-5)
    assert len(graphs) == 1
    calls = [n for n in graphs[0].graph.nodes if n.target is torch.ops.higher_order.invoke_subgraph]
    assert len(calls) == 3 and len({n.args[0].target for n in calls}) == 1


@pytest.mark.slow
def test_compile_regions_compile_without_graph_breaks() -> None:
    spec, arch, params = SMALL[0][0], SMALL[0][1], {**SMALL[0][2], "depth": 4}
    torch._dynamo.reset()
    model = archlang.build(spec, arch, compile_regions=True, **params).eval()
    inputs = example_inputs(model.archlang_graph)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=1e-5, rtol=1e-5)
