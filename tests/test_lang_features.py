"""Language features of issue 12 ("lang"): list comprehensions, labels with computed parts,
tensor subscripts with strided slices, and weight sharing by calling a labelled layer again.

Takes: small specs written here. Checks: the values and graphs the elaborator makes, the
diagnostics for misuse (codes, spans, help lines), the cost (a shared layer's parameters
counted once, its FLOPs at every use), the generated module (one submodule called twice, one
state_dict copy) against torch written by hand and against the IR interpreter (float64, eval
and train, outputs and gradients), and the drawing. The torch tests build tiny models only.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archlang
from archlang.check.elaborate import FREE_STEPS, MAX_LIST, MAX_LOOP
from archlang.ir import ops as O

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def errors(spec: str, arch: str | None = None, **params) -> list:
    return [d for d in archlang.check(spec, arch, **params) if d.is_error]


def one_error(spec: str, code: str, arch: str | None = None, **params):
    errs = errors(spec, arch, **params)
    assert errs, "expected an error"
    assert errs[0].code == code, [(d.code, d.message) for d in errs]
    return errs[0]


def line_of(spec: str, d) -> str:
    return spec.split("\n")[d.span.line - 1]


# ----------------------------------------------------------------------------- comprehensions

COMPREHENSIONS = """
block stage(x: [B, C], depth: int, widths: [int]) {
  require len(widths) == depth
  for i in 0 .. depth {
    x = fc{i}: linear(x, widths[i])
  }
  return x
}
arch t(dims: [int] = [1, 2, 3, 4], n: int = 3) {
  in x: [B, 8]
  doubled = [d * 2 for d in dims if d > 1]
  require doubled == [4, 6, 8], "filtered and mapped"
  pairs = [[i, j] for i in 0 .. n for j in 0 .. i]
  require pairs == [[1, 0], [2, 0], [2, 1]], "nested, the inner bound uses the outer variable"
  require [i * i for i in range(4)] == [0, 1, 4, 9]
  require [s for s in ["a", "b"] if s != "a"] == ["b"]
  require [x for x in dims if x > 10] == []
  parts = [linear(x, d) for d in doubled]
  y = concat([relu(p) for p in parts], dim = 1)
  z = s1: stage(x, depth = 2, widths = [w * 8 for w in [1, 2]])
  out a = y
  out b = z
}
"""


def test_comprehensions_compute_values_and_tensors() -> None:
    g = archlang.graph(COMPREHENSIONS)
    assert [o.outputs[0].shape[1] for o in g.nodes if o.name in ("concat",)] == [4 + 6 + 8]
    assert [n.name for n in g.nodes if isinstance(n.op, O.Linear)] == ["linear", "linear_1", "linear_2", "s1.fc0",
                                                                        "s1.fc1"]
    assert g.type_of(g.node("b").inputs[0]).shape[1] == 16


def test_a_failing_require_in_that_spec_is_caught() -> None:  # the requires above can fail
    d = one_error(COMPREHENSIONS.replace("== [4, 6, 8]", "== [4, 6]"), "E0502")
    assert d.message == "filtered and mapped"


def test_comprehension_variable_is_local() -> None:
    spec = "arch t() {\n  in x: [B, 4]\n  l = [i for i in 0 .. 3]\n  out y = linear(x, i)\n}\n"
    d = one_error(spec, "E0201")
    assert "`i`" in d.message


@pytest.mark.parametrize(("expr", "code", "text"), [
    ("[i for i in 4]", "E0401", "loops over a list"),
    ("[i for i in 0 .. 2.5]", "E0401", "integers"),
    ("[i for i in [1, 2] if i]", "E0404", "compile-time bool"),
    (f"[i for i in 0 .. {MAX_LOOP + 1}]", "E0406", "too long"),
    ("[[0] * 50000 for i in 0 .. 3]", "E0406", f"more than {MAX_LIST:,} items"),  # nested lists count in full
    (f"[i for i in 0 .. {MAX_LOOP} if false]", "E0406", "statements"),  # the step limit: no nodes made
    ("[x for i in 0 .. 2]", "E0201", "unknown name `x`"),
])
def test_comprehension_misuse(expr: str, code: str, text: str) -> None:
    spec = f"arch t() {{\n  in y: [B, 4]\n  l = {expr}\n  out z = y\n}}\n"
    d = one_error(spec, code)
    assert text in d.message
    assert d.span is not None and d.span.line == 3


def test_comprehension_step_limit_counts_items() -> None:
    assert FREE_STEPS < MAX_LOOP  # a filtered-out comprehension this long is refused, quickly
    spec = f"arch t() {{\n  in y: [B, 4]\n  l = [i for i in 0 .. {FREE_STEPS - 100} if false]\n  out z = y\n}}\n"
    assert not errors(spec)


def test_comprehension_of_tensor_list_from_block_outputs() -> None:
    spec = """
block two(x: [B, C]) {
  return linear(x, C), linear(x, 2 * C)
}
arch t() {
  in x: [B, 4]
  a, b = two(x)
  out y = concat([t for t in [a, b, x]], dim = 1)
}
"""
    g = archlang.graph(spec)
    assert g.type_of(g.node("y").inputs[0]).shape[1] == 4 + 8 + 4


# ----------------------------------------------------------------------------- computed labels

LABELS = """
block unit(x: [B, C]) {
  return proj: linear(x, C)
}
arch t(kinds: [str] = ["q", "kv"]) {
  in x: [B, 3, 4, 4]
  for i in 0 .. 3 {
    x = patch_embed{i}: conv2d(x, 3, kernel = 3, padding = 1)
  }
  t = rearrange(x, "b c h w -> b (c h w)")
  for s in 0 .. 2 {
    for j in 0 .. 2 {
      t = stage{s}.mix{j}: linear(t, 48)
    }
  }
  for k in 0 .. 2 {
    t = to_{kinds[k]}: linear(t, 48)
    t = blk{k}: unit(t)
  }
  out y = t
}
"""


def test_computed_labels_name_nodes_and_block_instances() -> None:
    g = archlang.graph(LABELS)
    names = [n.name for n in g.nodes if n.op.parameters()]
    assert names == ["patch_embed0", "patch_embed1", "patch_embed2", "stage0.mix0", "stage0.mix1", "stage1.mix0",
                     "stage1.mix1", "to_q", "blk0.proj", "to_kv", "blk1.proj"]
    assert [s.path for s in g.scopes] == ["blk0", "blk1"]


def test_computed_labels_are_state_dict_keys() -> None:
    pytest.importorskip("torch")
    model = archlang.build(LABELS)
    keys = set(model.state_dict())
    for k in ("patch_embed0.weight", "patch_embed2.bias", "stage1.mix0.weight", "to_kv.weight", "blk1.proj.bias"):
        assert k in keys


@pytest.mark.parametrize(("label", "code", "text"), [
    ('proj{"-x"}', "E0207", "`proj-x` cannot be a label"),
    ('train{"ing"}', "E0207", "`training` cannot be a label"),  # the reserved-name rules apply to the result
    ("proj{-1}", "E0401", "non-negative int or a str"),
    ("proj{true}", "E0401", "non-negative int or a str"),
    ("proj{1.5}", "E0401", "non-negative int or a str"),
])
def test_computed_label_misuse(label: str, code: str, text: str) -> None:
    spec = f"arch t() {{\n  in x: [B, 4]\n  out y = {label}: linear(x, 4)\n}}\n"
    d = one_error(spec, code)
    assert text in d.message


def test_computed_label_duplicate_names_both_sites() -> None:
    spec = "arch t() {\n  in x: [B, 4]\n  for i in 0 .. 3 {\n    x = fc{i // 2}: linear(x, 4)\n  }\n  out y = x\n}\n"
    d = one_error(spec, "E0604")
    assert "`fc0`" in d.message and "computed parts" in d.help
    assert [n.message for n in d.notes] == ["first used here"]


def test_computed_label_part_is_not_a_value() -> None:
    d = one_error("arch t(i: int = 1) {\n  in x: [B, 4]\n  y = fc{i}.shape\n  out z = x\n}\n", "E0404")
    assert "computed label" in d.message


# ----------------------------------------------------------------------------- subscripts and strided slices

SLICES = """
arch t() {
  in x: [2, 10, 12]
  out a = x[:, ::2]
  out b = x[:, 1:7:2, -1]
  out c = x[:, -3:, 2:11:4]
  out d = x[0]
  out e = slice(x, 1, 8, dim = 2, step = 3)
  out f = x[:, :]
  out g = x[:, 3]
  out h = x[..., ::3]
  out i = x[1:, ..., 2]
}
"""
SLICE_REFS = {  # the same subscripts in torch
    "a": lambda x: x[:, ::2], "b": lambda x: x[:, 1:7:2, -1], "c": lambda x: x[:, -3:, 2:11:4],
    "d": lambda x: x[0], "e": lambda x: x[:, :, 1:8:3], "f": lambda x: x, "g": lambda x: x[:, 3],
    "h": lambda x: x[..., ::3], "i": lambda x: x[1:, ..., 2],
}


def test_subscripts_check_to_torch_shapes() -> None:
    torch = pytest.importorskip("torch")
    g = archlang.graph(SLICES)
    x = torch.empty(2, 10, 12)
    for name, ref in SLICE_REFS.items():
        shape = g.type_of(g.node(name).inputs[0]).shape
        assert tuple(shape) == tuple(ref(x).shape), name
    assert sum(isinstance(n.op, O.SliceOp) and n.op.step != 1 for n in g.nodes) == 5


def test_strided_slices_match_torch_and_the_interpreter() -> None:
    torch = pytest.importorskip("torch")
    from test_interpret import assert_agree

    model = archlang.build(SLICES).double().eval()
    src = model.archlang_source
    assert "x[:, ::2]" in src and "[:, 1:7:2]" in src and "[:, :, 1:8:3]" in src
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    out = model(x)
    for name, ref in SLICE_REFS.items():
        torch.testing.assert_close(out[name], ref(x), rtol=0, atol=0)
    assert_agree(SLICES)


def test_list_slices_with_colons() -> None:
    spec = """
arch t(dims: [int] = [1, 2, 3, 4, 5]) {
  require dims[1:] == [2, 3, 4, 5]
  require dims[::2] == [1, 3, 5]
  require dims[-2:] == [4, 5]
  require dims[1:4:2] == [2, 4]
  require dims[1 .. 3] == [2, 3]
  in x: [B, 4]
  out y = x
}
"""
    assert not errors(spec)
    assert one_error(spec.replace("[1, 3, 5]", "[1, 3]"), "E0502")


@pytest.mark.parametrize(("expr", "code", "text"), [
    ("x[:, ::0]", "E0406", "step must be positive"),
    ("x[:, ::-1]", "E0406", "step must be positive"),
    ("x[:, 2:11]", "E0304", "slice bound 11 is out of range"),
    ("x[:, 5:2]", "E0304", "is empty"),
    ("x[:, 0, 0, 0]", "E0304", "4 indices for a tensor of rank 3"),
    ("x[:, 10]", "E0304", "index 10 is out of range"),
    ("x[1:, 0]", "E0404", "free size `B`"),
    ('x[:, "a"]', "E0401", "an index must be an int"),
    ("x[:, 0:2.5]", "E0401", "slice bounds are ints"),
    ("x[:, x]", "E0401", "ints and slices"),
    ("[1, 2][0, 1]", "E0401", "a list takes one index"),
    ("[1, 2][...]", "E0401", "`...` stands for tensor dims"),
    ("x[..., 0, ...]", "E0406", "at most one `...`"),
    ("x[0, ..., 0, 0, 0]", "E0304", "4 indices for a tensor of rank 3"),
    ("(1)[::2]", "E0401", "cannot index int"),
])
def test_subscript_misuse(expr: str, code: str, text: str) -> None:
    spec = f"arch t() {{\n  in x: [B, 10, 12]\n  y = {expr}\n  out z = x\n}}\n"
    d = one_error(spec, code)
    assert text in d.message
    assert d.span is not None and d.span.line == 3


def test_unit_steps_keep_the_ir_json() -> None:
    """A slice of step 1 and a node that shares nothing serialise as before (IR digests stay)."""
    g = archlang.graph("arch t() {\n  in x: [B, 8]\n  out y = x[:, 2:5]\n}\n")
    text = g.model_dump_json()
    assert '"step"' not in text and '"shares"' not in text
    strided = archlang.graph("arch t() {\n  in x: [B, 8]\n  out y = x[:, 2:5:2]\n}\n")
    assert '"step":2' in strided.model_dump_json()
    assert type(strided).model_validate_json(strided.model_dump_json()) == strided


@FEW
@given(n=st.integers(1, 9), start=st.none() | st.integers(-9, 9), stop=st.none() | st.integers(-9, 9),
       step=st.none() | st.integers(1, 4))
def test_slice_shapes_follow_python(n: int, start, stop, step) -> None:
    """Any in-range, non-empty slice has Python's length; any other is refused with E0304."""
    part = f"{'' if start is None else start}:{'' if stop is None else stop}" + ("" if step is None else f":{step}")
    spec = f"arch t() {{\n  in x: [B, {n}]\n  out y = x[:, {part}]\n}}\n"
    length = len(range(n)[slice(start, stop, step)])
    in_range = all(b is None or -n <= b <= n for b in (start, stop))
    errs = errors(spec)
    if in_range and length > 0:
        assert not errs, errs
        g = archlang.graph(spec)
        assert g.type_of(g.node("y").inputs[0]).shape[1] == length
    else:
        assert errs and errs[0].code == "E0304"


@FEW
@given(xs=st.lists(st.integers(-20, 20), max_size=8), k=st.integers(-3, 3))
def test_comprehensions_follow_python(xs: list[int], k: int) -> None:
    want = [x * 2 + k for x in xs if x > k]
    spec = (f"arch t(xs: [int] = {xs}, k: int = {k}) {{\n  l = [x * 2 + k for x in xs if x > k]\n"
            f"  require l == {want}\n  in y: [B, 4]\n  out z = y\n}}\n")
    assert not errors(spec)


# ----------------------------------------------------------------------------- weight sharing

SHARED = """
arch t(c: int = 6) {
  in x: [B, c, 8, 8]
  in z: [B, c, 8, 8]
  a = pe1: conv2d(x, c, kernel = 3, padding = 1, groups = c)
  b = pe1(z)
  d = pe1(relu(b))
  out y = a + b + d
}
"""
UNSHARED = SHARED.replace("pe1(z)", "pe2: conv2d(z, c, kernel = 3, padding = 1, groups = c)").replace(
    "pe1(relu(b))", "pe3: conv2d(relu(b), c, kernel = 3, padding = 1, groups = c)")


def test_shared_layer_counts_params_once_and_flops_each_time() -> None:
    g = archlang.graph(SHARED)
    shared = [n for n in g.nodes if n.shares]
    assert [(n.name, n.shares) for n in shared] == [("pe1_1", "pe1"), ("pe1_2", "pe1")]
    one, three = archlang.cost(SHARED), archlang.cost(UNSHARED)
    per_layer = three.params // 3
    assert one.params == per_layer == three.nodes["pe1"].params
    assert one.nodes["pe1_1"].params == 0
    assert one.flops == three.flops and one.nodes["pe1_1"].flops == three.nodes["pe2"].flops > 0
    # training: the shared layer saves its input for its (trainable) weight's gradient, like pe2
    assert archlang.cost(SHARED, train=True).saved_bytes == archlang.cost(UNSHARED, train=True).saved_bytes


def test_shared_layer_lowers_to_one_submodule_called_again() -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from test_interpret import assert_agree

    model = archlang.build(SHARED).double()
    assert set(model.state_dict()) == {"pe1.weight", "pe1.bias"}
    assert len(re.findall(r"self\.pe1\(", model.archlang_source)) == 3
    x, z = torch.randn(2, 6, 8, 8, dtype=torch.float64), torch.randn(2, 6, 8, 8, dtype=torch.float64)
    w, bias = model.pe1.weight, model.pe1.bias

    def conv(t):
        return F.conv2d(t, w, bias, padding=1, groups=6)

    b = conv(z)
    torch.testing.assert_close(model(x, z), conv(x) + b + conv(torch.relu(b)), rtol=1e-12, atol=1e-12)
    assert_agree(SHARED)


def test_shared_layer_inside_a_block_and_from_the_parent() -> None:
    pytest.importorskip("torch")
    from test_interpret import assert_agree

    spec = """
block mix(x: [B, N, C]) {
  h = fc: linear(x, C)
  return fc(gelu(h)) + x
}
arch t(depth: int = 3) {
  in x: [B, 5, 8]
  for i in 0 .. depth {
    x = blocks[i]: mix(x)
  }
  out y = blocks[0].fc(x)
}
"""
    g = archlang.graph(spec)
    assert [(n.name, n.shares) for n in g.nodes if n.shares] == [
        ("blocks.0.fc_1", "blocks.0.fc"), ("blocks.1.fc_1", "blocks.1.fc"), ("blocks.2.fc_1", "blocks.2.fc"),
        ("fc", "blocks.0.fc")]
    assert archlang.cost(spec).params == 3 * (8 * 8 + 8)
    model = archlang.build(spec)
    src = model.archlang_source
    assert src.count("class Mix(") == 1 and src.count("self.fc(") == 2 and "self.blocks[0].fc(" in src
    assert len(model.state_dict()) == 6
    assert_agree(spec)


def test_shared_layer_with_lora_agrees_with_the_interpreter() -> None:
    pytest.importorskip("torch")
    from test_interpret import assert_agree

    spec = """
arch t() {
  in x: [B, 8]
  h = q: linear(x, 8)
  out y = q(relu(h))
}
arch t_lora = t() {
  adapt lora(r = 2) on "q"
}
"""
    assert archlang.cost(spec, "t_lora").params == archlang.cost(spec, "t").params + 2 * (2 * 8)  # A, B once
    assert_agree(spec, "t_lora")


def test_shared_layer_is_drawn_with_its_weights() -> None:
    dot = archlang.render(SHARED, depth=1).dot
    assert dot.count("weights of pe1") == 2


def test_a_selector_does_not_select_a_shared_use() -> None:
    spec = SHARED + 'arch t_frozen = t() {\n  freeze "pe1_1"\n}\n'
    d = one_error(spec, "E0703", "t_frozen")
    assert '"pe1_1"' in d.message


@pytest.mark.parametrize(("body", "code", "text", "hint"), [
    ("  h = pe1: linear(x, 8)\n  g = pe2(x)", "E0202", "unknown operation or block `pe2`", "did you mean `pe1`?"),
    ("  h = r1: relu(x)\n  g = r1(x)", "E0406", "has no weights to share", "call the op again"),
    ("  h = pe1: linear(x, 8)\n  g = pe1(x, bias = false)", "E0403", "takes its input tensors only", "pe1(x0)"),
    ("  h = pe1: linear(x, 8)\n  g = pe1(x, x)", "E0403", "takes 1 tensor, got 2", None),
    ("  h = pe1: linear(x, 8)\n  g = pe1(3)", "E0405", "expects a tensor", None),
    ("  h = b1: unit(x)\n  g = b1.fcc(x)", "E0201", "no layer labelled `b1.fcc`", "did you mean"),
    ("  h = x\n  g = x(h)", "E0405", "is an input, not a layer", None),
])
def test_sharing_misuse(body: str, code: str, text: str, hint: str | None) -> None:
    spec = f"block unit(x: [B, C]) {{\n  return fc: linear(x, C)\n}}\narch t() {{\n  in x: [B, 8]\n{body}\n  out y = x\n}}\n"
    d = one_error(spec, code)
    assert text in d.message, d.message
    if hint is not None:
        assert hint in (d.help or ""), d.help


def test_sharing_an_outer_layer_from_a_block_is_refused() -> None:
    spec = """
block unit(x: [B, C]) {
  return pe(x)
}
arch t() {
  in x: [B, 8]
  h = pe: linear(x, 8)
  out y = u: unit(h)
}
"""
    d = one_error(spec, "E0201")
    assert "labelled outside this block instance" in d.message
    assert d.notes and d.notes[0].message == "`pe` is made here"


def test_shared_layer_with_a_wrong_input_names_its_origin() -> None:
    spec = "arch t() {\n  in x: [B, 8]\n  in z: [B, 16]\n  h = pe: linear(x, 8)\n  out y = pe(z)\n}\n"
    d = one_error(spec, "E0301")
    assert any("`pe` is made here for [B, 8]" in n.message for n in d.notes)


COAT_LIKE = """
# CoaT's serial blocks share one convolutional position encoder per stage (timm coat.py's
# shared_cpe): one depthwise conv, applied before every block of the stage.
arch coat_like(dims: [int] = [8, 16], depth: int = 2, img: int = 8) {
  in x: [B, 3, img, img]
  for s in 0 .. len(dims) {
    x = patch_embed{s + 1}: conv2d(x, dims[s], kernel = 2, stride = 2)
    t = rearrange(x, "b c h w -> b (h w) c")
    for j in 0 .. depth {
      g = rearrange(t, "b (h w) c -> b c h w", h = x.shape[2])
      if j == 0 {
        g = cpe{s + 1}: conv2d(g, dims[s], kernel = 3, padding = 1, groups = dims[s]) + g
      } else {
        g = cpe{s + 1}(g) + g
      }
      t = rearrange(g, "b c h w -> b (h w) c")
      t = t + serial{s + 1}.blocks[j].mlp: linear(gelu(layernorm(t)), dims[s])
    }
    x = rearrange(t, "b (h w) c -> b c h w", h = x.shape[2])
  }
  out y = x
}
"""


def test_coat_like_shared_position_encoders() -> None:
    pytest.importorskip("torch")
    from test_interpret import assert_agree

    g = archlang.graph(COAT_LIKE)
    assert [(n.name, n.shares) for n in g.nodes if n.shares] == [("cpe1_1", "cpe1"), ("cpe2_1", "cpe2")]
    assert type(g).model_validate_json(g.model_dump_json()) == g  # the IR round-trips with `shares`
    rep = archlang.cost(COAT_LIKE)
    assert rep.nodes["cpe2_1"].params == 0 and rep.nodes["cpe2_1"].flops == rep.nodes["cpe2"].flops
    model = archlang.build(COAT_LIKE)
    keys = [k for k in model.state_dict() if k.startswith("cpe")]
    assert keys == ["cpe1.weight", "cpe1.bias", "cpe2.weight", "cpe2.bias"]
    assert sum(p.numel() for p in model.parameters()) == rep.params
    assert_agree(COAT_LIKE, modes=(False,))


def test_computed_labels_in_a_comprehension() -> None:
    spec = "arch t() {\n  in x: [B, 4]\n  out y = concat([head{i}: linear(x, i + 1) for i in 0 .. 3], dim = 1)\n}\n"
    g = archlang.graph(spec)
    assert [n.name for n in g.nodes if n.op.parameters()] == ["head0", "head1", "head2"]
    assert g.type_of(g.node("y").inputs[0]).shape[1] == 6


def test_a_brace_after_a_name_still_opens_a_body() -> None:
    """`name{` is a computed label only when a label's `:` (or a call) follows its `}`."""
    spec = "arch t(n: int = 2) {\n  in x: [B, 4]\n  for i in 0 .. n{\n    if i > 0{ x = relu(x) }\n  }\n  out y = x\n}\n"
    assert not errors(spec)
    assert sum(1 for n in archlang.graph(spec).nodes if isinstance(n.op, O.Activation)) == 1


def test_a_computed_label_without_its_call_is_explained() -> None:
    d = one_error("arch t(i: int = 1) {\n  in x: [B, 4]\n  y = fc{i}\n  out z = x\n}\n", "E0101")
    assert "computed label" in d.help and "fc{i}: linear(x, 8)" in d.help


def test_shared_norm_with_buffers_and_freezing() -> None:
    pytest.importorskip("torch")
    from test_interpret import assert_agree

    spec = """
arch t() {
  in x: [B, 4, 6, 6]
  a = bn: batchnorm(x)
  b = bn(relu(a))
  out y = a + b
}
arch t_frozen = t() {
  freeze "bn"
}
"""
    model = archlang.build(spec, "t")
    assert sorted(model.state_dict()) == ["bn.bias", "bn.num_batches_tracked", "bn.running_mean",
                                          "bn.running_var", "bn.weight"]
    assert_agree(spec, "t")  # eval (running statistics) and train (batch statistics)
    frozen = archlang.cost(spec, "t_frozen", train=True)
    assert frozen.trainable_params == 0 and frozen.nodes["bn_1"].saved_bytes == 0


SHARED_BLOCK = """
block cpe(x: [B, C, H, W], k: int = 3) {
  h = proj: conv2d(x, C, kernel = k, padding = k // 2, groups = C)
  return gelu(h) + x
}
arch t() {
  in x: [B, 4, 6, 6]
  in z: [B, 4, 5, 5]
  a = enc: cpe(x)
  b = enc(z)
  c = again: enc(relu(a))
  out y = a + c
  out w = b
}
"""


def test_shared_block_instance_reuses_its_layers() -> None:
    pytest.importorskip("torch")
    from test_interpret import assert_agree

    g = archlang.graph(SHARED_BLOCK)
    assert [(n.name, n.scope, n.shares) for n in g.nodes if n.shares] == [
        ("enc_1.proj", "", "enc.proj"), ("again.proj", "", "enc.proj")]
    rep = archlang.cost(SHARED_BLOCK)
    assert rep.params == 4 * 9 + 4 and rep.nodes["again.proj"].flops == rep.nodes["enc.proj"].flops
    model = archlang.build(SHARED_BLOCK)
    assert list(model.state_dict()) == ["enc.proj.weight", "enc.proj.bias"]
    assert model.archlang_source.count("self.enc.proj(") == 2
    assert_agree(SHARED_BLOCK)
    assert archlang.render(SHARED_BLOCK, depth=2).dot.count("weights of enc.proj") == 2


@pytest.mark.parametrize(("call", "code", "text"), [
    ("enc(z, k = 5)", "E0403", "takes its input tensors only"),
    ("enc(z, z)", "E0403", "takes 1 tensor (x), got 2"),
    ("enc(3)", "E0405", "expects a tensor for `x`"),
    ("enc(rearrange(z, 'b c h w -> b h c w'))".replace("'", '"'), "E0406", "would need weights other than `enc.proj`'s"),
    ("outer(z)", "E0406", "calls other blocks"),
])
def test_shared_block_instance_misuse(call: str, code: str, text: str) -> None:
    spec = SHARED_BLOCK.replace("  b = enc(z)", f"  o = outer: wrap(x)\n  b = {call}").replace(
        "arch t()", "block wrap(x: [B, C, H, W]) {\n  return inner: cpe(x)\n}\narch t()")
    d = one_error(spec, code)
    assert text in d.message, d.message
