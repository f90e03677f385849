"""Focused tests of the checker: parameter counts of the shipped specs, the IR round trip,
hierarchical node names, symbolic sizes, `--set`, arch selection, the op tables, the
light-weight CLI, and regressions for bugs the property tests found."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from archlang.check import check_spec, choose_arch, elaborate, load
from archlang.check import surface as surface_module
from archlang.check.elaborate import MAX_STEPS
from archlang.check.shapes import SHAPE_RULES
from archlang.check.surface import SURFACE
from archlang.diagnostics import CODES, Sources, did_you_mean, render_text
from archlang.ir import ops as O
from archlang.ir.dims import Dim
from archlang.ir.graph import Graph
from archlang.ops.registry import DEFS

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
# the module, not the `elaborate` function that archlang.check re-exports under the same name
elaborate_module = importlib.import_module("archlang.check.elaborate")


def graph(spec: str, arch: str | None = None, sets: list[str] | None = None) -> Graph:
    r = check_spec(SPECS / spec, arch, sets or [])
    assert r.graph is not None, render_text(r.diagnostics, r.program.sources)
    return r.graph


def errors(text: str, arch: str | None = None, sets: list[str] | None = None, name: str = "<test>") -> list:
    r = check_spec(load(name, text=text), arch, sets or [])
    return [d for d in r.diagnostics if d.is_error]


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(("spec", "arch", "params"), [
    ("swin_t.arch", "swin_t", 28_288_354),
    ("vit_b16.arch", "vit_b16", 86_567_656),
    ("vit_b16.arch", "vit_ti16", 5_717_416),
    ("deit_s_distilled.arch", "deit_s_distilled", 22_436_432),
    ("mixer_b16.arch", "mixer_b16", 59_880_472),
    ("transformer.arch", "transformer", 93_324_544),
])
def test_param_counts(spec: str, arch: str, params: int) -> None:
    assert graph(spec, arch).param_count() == params


def test_transformer_core_matches_torch_nn_transformer() -> None:
    g = graph("transformer.arch")
    core = sum(math_prod(p.shape) for n in g.nodes if n.name.startswith(("encoder.", "decoder."))
               for p in n.op.parameters())
    assert core == 44_140_544


def math_prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


# ----------------------------------------------------------------------------- the IR


def all_shipped_archs() -> list[tuple[str, str]]:
    out = []
    for path in sorted(SPECS.glob("*.arch")):
        prog = load(path)
        assert prog.ok, path
        out += [(path.name, a.name) for a in prog.main_archs()]
    return out


@pytest.mark.parametrize(("spec", "arch"), all_shipped_archs())
def test_ir_json_round_trip(spec: str, arch: str) -> None:
    g = graph(spec, arch)
    assert Graph.model_validate_json(g.model_dump_json()) == g


def test_swin_hierarchical_names_and_shifts() -> None:
    g = graph("swin_t.arch", "swin_t")
    names = set(g.by_name)
    assert "layers.1.downsample.reduction" in names
    assert "layers.0.downsample.reduction" not in names  # no merging before stage 0
    assert {"patch_embed.proj", "norm", "head.fc", "layers.0.blocks.0.mlp.fc1"} <= names
    first = g.node("layers.0.blocks.0.attn").op
    shifted = g.node("layers.0.blocks.1.attn").op
    last = g.node("layers.3.blocks.1.attn").op
    assert isinstance(first, O.WindowAttention) and first.shift == (0, 0)
    assert isinstance(shifted, O.WindowAttention) and shifted.shift == (3, 3) and shifted.window == (7, 7)
    # stage 3 runs on a 7x7 grid: the window covers it, so the shift is clamped away
    assert isinstance(last, O.WindowAttention) and last.grid == (7, 7) and last.shift == (0, 0)
    scopes = {s.path: s for s in g.scopes}
    assert scopes["layers.2.blocks.5"].block == "swin_block"
    assert scopes["layers.1.downsample"].block == "patch_merge"


def test_batch_stays_symbolic() -> None:
    g = graph("vit_b16.arch", "vit_b16")
    (x,) = g.input_nodes()
    batch = x.outputs[0].shape[0]
    assert isinstance(batch, Dim) and str(batch) == "B"
    assert x.outputs[0].shape[1:] == (3, 224, 224)
    (out,) = g.output_nodes()
    logits = g.type_of(out.inputs[0])
    assert logits.shape == (Dim.sym("B"), 1000)
    # every tensor of the graph keeps B as its leading dim
    assert all(t.shape[0] == Dim.sym("B") for n in g.nodes for t in n.outputs if t.rank)


def test_sequence_lengths_stay_symbolic() -> None:
    g = graph("transformer.arch")
    src, tgt = g.input_nodes()
    assert src.outputs[0].dtype == "int" and src.outputs[0].shape == (Dim.sym("B"), Dim.sym("S"))
    assert tgt.outputs[0].shape == (Dim.sym("B"), Dim.sym("T"))
    (out,) = g.output_nodes()
    assert g.type_of(out.inputs[0]).shape == (Dim.sym("B"), Dim.sym("T"), 32000)


def test_set_img_384_on_swin() -> None:
    r = check_spec(SPECS / "swin_t.arch", "swin_t", ["img=384"])
    assert r.graph is not None
    grids = [r.graph.node(f"layers.{s}.blocks.0.attn").op.grid for s in range(4)]
    assert grids == [(96, 96), (48, 48), (24, 24), (12, 12)]
    pads = {d.message for d in r.diagnostics if d.code == "W0502"}
    assert pads and all(not d.is_error for d in r.diagnostics)
    # 96, 48 and 24 are not multiples of 7: padded (bottom/right) to 98, 49 and 28
    assert any("96x96" in m and "98x98" in m for m in pads)
    assert any("24x24" in m and "28x28" in m for m in pads)
    assert r.graph.param("img") == 384


def test_set_overrides_keep_param_count_for_img() -> None:
    # the image size changes no weight shape of a ViT except the positional table
    base = graph("vit_b16.arch", "vit_b16").param_count()
    big = graph("vit_b16.arch", "vit_b16", ["img=384"]).param_count()
    assert big - base == (24 * 24 - 14 * 14) * 768


# ----------------------------------------------------------------------------- arch selection

TWO = """
arch small(dim: int = 8) {
  in x: [B, dim]
  out y = linear(x, 2)
}
arch large = small(dim = 16)
"""


def test_arch_named_like_the_file_is_chosen() -> None:
    assert choose_arch(load(SPECS / "swin_t.arch"), None) == ("swin_t", None)
    assert choose_arch(load("large.arch", text=TWO), None) == ("large", None)


def test_single_arch_is_chosen() -> None:
    one = "arch only(dim: int = 8) {\n  in x: [B, dim]\n  out y = x\n}\n"
    assert choose_arch(load("whatever.arch", text=one), None) == ("only", None)


def test_several_archs_without_a_match_is_an_error_listing_them() -> None:
    name, diag = choose_arch(load("models.arch", text=TWO), None)
    assert name is None and diag is not None
    assert diag.code == "E0206"
    assert "small" in (diag.help or "") and "large" in (diag.help or "")


def test_explicit_arch_and_unknown_arch() -> None:
    prog = load("models.arch", text=TWO)
    assert choose_arch(prog, "small") == ("small", None)
    name, diag = choose_arch(prog, "smal")
    assert name is None and diag is not None and diag.code == "E0205"
    assert diag.help == "did you mean `small`?"


def test_no_arch_is_an_error() -> None:
    name, diag = choose_arch(load("blocks.arch", text="block b(x: [B, D]) { return x }\n"), None)
    assert name is None and diag is not None and diag.code == "E0205"


# ----------------------------------------------------------------------------- op tables


def test_every_op_has_a_shape_rule() -> None:
    missing = [c.__name__ for c in O.op_classes() if c not in SHAPE_RULES]
    assert not missing


def test_every_op_is_built_somewhere() -> None:
    """Each op class is constructed by a surface builder, or by the elaborator itself
    (inputs, outputs, tensor arithmetic)."""
    built = set(re.findall(r"\bO\.(\w+)\(", inspect.getsource(surface_module)))
    built |= set(re.findall(r"\bO\.(\w+)\(", inspect.getsource(elaborate_module)))
    for family in DEFS.values():  # an op of archlang/ops is built by its own module's signature
        if re.search(rf"(?<!class )\b{family.cls.__name__}\(", inspect.getsource(sys.modules[family.module])):
            built.add(family.cls.__name__)
    missing = [c.__name__ for c in O.op_classes() if c.__name__ not in built]
    assert not missing


def test_surface_args_are_typed() -> None:
    kinds = {"int", "float", "bool", "str", "str_or_float", "pair", "ints", "tensor", "expr", "expr_score"}
    for s in SURFACE.values():  # sources (param, arange, zeros) take no tensor inputs
        for a in s.args:
            assert a.type in kinds, (s.name, a.name, a.type)
            assert a.min is None or a.type in ("int", "pair", "ints"), (s.name, a.name)


def test_codes_are_well_formed() -> None:
    assert all(re.fullmatch(r"[EW]\d{4}", c) for c in CODES)
    assert len(set(CODES.values())) == len(CODES)


# ----------------------------------------------------------------------------- the CLI stays light


def test_check_list_ir_do_not_import_torch() -> None:
    code = """
import sys
from typer.testing import CliRunner
from archlang.cli import app
runner = CliRunner()
for args in (["check", "specs/swin_t.arch"], ["list", "specs/swin_t.arch"],
             ["ir", "specs/swin_t.arch", "--arch", "swin_t"]):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, (args, r.output)
assert "torch" not in sys.modules, "torch was imported"
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- collected diagnostics


def test_independent_errors_are_all_reported() -> None:
    text = """
arch net(dim: int = 64) {
  in x: [B, 16, dim]
  a = lienar(x, dim)
  b = attention(x, heads = 5)
  out y = x + dimm
}
"""
    codes = [d.code for d in errors(text)]
    assert codes == ["E0202", "E0503", "E0201"]


def test_poison_silences_follow_on_errors() -> None:
    text = """
arch net(dim: int = 64) {
  in x: [B, dim]
  h = lienar(x, dim)
  h = relu(h)
  out y = linear(h, 10)
}
"""
    assert [d.code for d in errors(text)] == ["E0202"]


def test_recursion_is_reported_once() -> None:
    text = """
block ping(x: [B, D]) { return pong(x) }
block pong(x: [B, D]) { return ping(x) }
arch net() {
  in x: [B, 4]
  out y = ping(x)
}
"""
    assert [d.code for d in errors(text)] == ["E0601"]


def test_failed_require_skips_the_rest_of_the_block() -> None:
    text = """
use std.vision
arch net() {
  in x: [B, 25, 25, 8]
  out y = patch_merge(x)
}
"""
    # both requires fail; the rearrange that would fail after them is not reported
    assert [d.code for d in errors(text)] == ["E0501", "E0501"]


# ----------------------------------------------------------------------------- regressions


def test_form_feed_does_not_shift_quoted_lines() -> None:
    sources = Sources()
    sources.add("f", "a\fb\nc\n")
    assert sources.line("f", 2) == "c"
    text = "arch net(d: int = 4) {\f\n  in x: [B, d]\n  out y = linear(x, dd)\n}\n"
    prog = load("<ff>", text=text)
    r = check_spec(prog)
    (d,) = r.diagnostics
    assert d.span is not None and prog.sources.line("<ff>", d.span.line) == "  out y = linear(x, dd)"


@pytest.mark.parametrize("call", [
    "conv2d(x, 8, kernel = 3, stride = 0)", "conv2d(x, 8, kernel = 3, groups = 0)", "max_pool2d(x, kernel = 0)",
    "groupnorm(x, groups = 0)", "linear(x, -5)", "rearrange(x, \"b (c p) h w -> b c p h w\", p = 0)",
])
def test_non_positive_sizes_are_diagnosed(call: str) -> None:
    text = f"arch net() {{\n  in x: [B, 8, 16, 16]\n  out y = {call}\n}}\n"
    assert [d.code for d in errors(text)] == ["E0406"]


@pytest.mark.parametrize("expr", ["1e400", "1e308 * 10", "16 ** 16 ** 16", "2 ** 62 * 4", "int(1e300)",
                                  "99999999999999999999999", "len([1] * 10000000000)"])
def test_huge_numbers_are_diagnosed_not_computed(expr: str) -> None:
    text = f"arch net() {{\n  in x: [B, 8]\n  out y = linear(x, {expr})\n}}\n"
    assert [d.code for d in errors(text)] == ["E0406"]


def test_parameter_computed_from_a_failed_parameter() -> None:
    text = "arch net(a: int = nope, l: [int] = [a, 2]) {\n  in x: [B, 4]\n  out y = x\n}\n"
    assert [d.code for d in errors(text)] == ["E0201"]


def test_step_budget_stops_runaway_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_STEPS >= 100_000
    monkeypatch.setattr(elaborate_module, "MAX_STEPS", 1000)
    text = """
arch net(n: int = 100000) {
  in x: [B, 4]
  k = 0
  for i in 0 .. n { for j in 0 .. n { k = k + 1 } }
  out y = x
}
"""
    prog = load("<loop>", text=text)
    graph_, diags = elaborate(prog, "net")
    assert graph_ is None and [d.code for d in diags] == ["E0406"]


def test_did_you_mean() -> None:
    assert did_you_mean("widht", ["width", "depth"]) == "did you mean `width`?"
    assert did_you_mean("zzz", ["width", "depth"]) is None


def test_networkx_view() -> None:
    pytest.importorskip("networkx")
    import networkx as nx

    g = check_spec(SPECS / "transformer.arch").graph
    assert g is not None
    view = g.to_networkx()
    assert view.number_of_nodes() == len(g.nodes)
    assert nx.is_directed_acyclic_graph(view)
    # every decoder layer reads the final encoder output
    readers = {v for _, v in view.out_edges("encoder.norm")}
    assert {f"decoder.layers.{i}.multihead_attn" for i in range(6)} <= readers


def test_reserved_labels_are_refused_at_check_time() -> None:
    """Labels become nn.Module attributes and state_dict keys: keywords, nn.Module members and
    underscored names are E0207 with a rename in the help (not a broken or renamed module)."""
    from archlang.check import check_spec

    for label in ("lambda", "forward", "training", "eval", "type", "float", "apply", "parameters", "to",
                  "_modules", "head.class", "blocks[0].None", "arch_params"):
        r = check_spec(f"arch net() {{\n  in x: [B, 8]\n  out y = {label}: linear(x, 8)\n}}\n")
        assert r.graph is None and [d.code for d in r.diagnostics] == ["E0207"], (label, r.diagnostics)
        assert "rename" in (r.diagnostics[0].help or "")
    r = check_spec("arch net() {\n  in x: [B, 8]\n  out y = head.fc: linear(x, 8)\n}\n")
    assert r.ok


def test_reserved_labels_cover_every_public_member_of_nn_module() -> None:
    nn = pytest.importorskip("torch.nn")
    from archlang.check.elaborate import MODULE_MEMBERS

    public = {n for n in set(dir(nn.Module)) | set(vars(nn.Module())) if not n.startswith("_")}
    assert public <= MODULE_MEMBERS, sorted(public - MODULE_MEMBERS)


def test_a_long_spec_string_is_text_not_a_path() -> None:
    from archlang.check import check_spec

    text = "arch net() {\n  in x: [B, 8]\n" + "  # a comment\n" * 2000 + "  out y = linear(x, 8)\n}\n"
    assert check_spec(text).ok


def test_pooling_padding_over_half_the_kernel_is_refused() -> None:
    """torch pools with at most kernel // 2 of padding per side: more is E0406 at check time
    (it used to check clean and fail in forward; found by the differential test)."""
    from archlang.check import check_spec

    for call in ("max_pool2d(x, kernel = 2, padding = 2)", "avg_pool2d(x, kernel = 3, stride = 1, padding = 2)"):
        r = check_spec(f"arch t() {{\n  in x: [B, 3, 5, 5]\n  out y = {call}\n}}\n")
        assert [d.code for d in r.diagnostics] == ["E0406"] and "padding" in r.diagnostics[0].message
    assert check_spec("arch t() {\n  in x: [B, 3, 5, 5]\n  out y = max_pool2d(x, kernel = 3, padding = 1)\n}\n").ok


@pytest.mark.parametrize("body,code", [
    # D4: one value per group: torch refuses it at batch 1, and the layer would output its bias
    ("in x: [B, 2]\n  out y = groupnorm(x, groups = 2)", "E0406"),
    # D5: channel_shift offsets beyond the shifted dim
    ("in x: [B, 2, 1, 3]\n  out y = channel_shift(x, dim = 2, size = 4)", "E0406"),
    # D6: LoRA on a fused qkv and on one of its parts
    ("in x: [B, 5, 4]\n  out y = w: attention(x, heads = 1)\n  adapt lora(r = 2) on \"w.qkv\", \"w.q\"", "E0703"),
    # D7: weight standardisation of a single weight per output channel
    ("in x: [B, 1, 4, 4]\n  out y = conv2d(x, 3, kernel = 1, standardize = true)", "E0406"),
])
def test_differential_findings_are_refused_at_check(body, code) -> None:
    """Specs the differential test found checking clean and then failing in forward."""
    from archlang.check import check_spec

    r = check_spec(f"arch net() {{\n  {body}\n}}\n")
    assert r.graph is None and [d.code for d in r.diagnostics] == [code], r.diagnostics


def test_the_cases_next_to_the_differential_findings_still_check() -> None:
    from archlang.check import check_spec

    for body in ("in x: [B, 4, 3, 3]\n  out y = groupnorm(x, groups = 4)",
                 "in x: [B, 2, 2, 3]\n  out y = channel_shift(x, dim = 2, size = 5)",
                 "in x: [B, 5, 4]\n  out y = w: attention(x, heads = 1)\n  adapt lora(r = 2) on \"w.q\", \"w.v\"",
                 "in x: [B, 2, 4, 4]\n  out y = conv2d(x, 3, kernel = 1, standardize = true)"):
        assert check_spec(f"arch net() {{\n  {body}\n}}\n").ok, body
