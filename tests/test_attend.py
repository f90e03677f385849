"""The fused attention primitive ``attend``: parity, errors, cost and lowerings.

Takes: small specs that call ``attend``. Produces: failures when the generated model (SDPA
or FlexAttention lowering) disagrees with the interpreter (float64) or with a reference
written from torch's own SDPA, when the FLOPs differ from ``FlopCounterMode`` under the math
backend, or when the attention-memory report misses an ``attend``.
"""

from __future__ import annotations

import math
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
              "[B, 4, 7, 8]", "[B, 2, 7, 8]", "[B, 2, 7, 8]"),  # h: the query head, also with GQA
    "document": ("attend(q, k, v, mask = doc[b, q_idx] == doc[b, kv_idx])", "  in doc: int[B, 7]\n",
                 "[B, 4, 7, 8]", "[B, 4, 7, 8]", "[B, 4, 7, 8]"),
    "relpos_table": ("attend(q, k, v, bias = table[rel[q_idx, kv_idx], h], score = score * 0.5)",
                     "  in table: [15, 4]\n  in rel: int[7, 9]\n", "[B, 4, 7, 8]", "[B, 4, 9, 8]", "[B, 4, 9, 8]"),
}


# the cases whose FlexAttention lowering the default run checks here (eager FlexAttention
# traces each score_mod/mask_mod, about a second each): a score_mod reading a tensor and a
# mask_mod reading one (a sliding window: test_flex_skips_masked_blocks); the slow tests check
# every case, in float64 and compiled
FLEX_DEFAULT = ("alibi", "document")


def _all_cases(names: tuple[str, ...] = tuple(CASES)) -> str:
    """One spec with each case as an output (its inputs prefixed by the case's name): one
    build per lowering covers them all."""
    import re

    lines = ["arch t(window: int = 3) {"]
    for name, (call, extra, q, k, v) in CASES.items():
        if name not in names:
            continue
        local = ["q", "k", "v", *re.findall(r"in (\w+):", extra)]
        lines += [f"  in {name}_q: {q}", f"  in {name}_k: {k}", f"  in {name}_v: {v}"]
        lines += [f"  in {name}_{line.split()[1]} {' '.join(line.split()[2:])}" for line in extra.splitlines()]
        lines.append(f"  out {name} = " + re.sub(r"\b(" + "|".join(local) + r")\b", rf"{name}_\1", call))
    return "\n".join([*lines, "}", ""])


def _run(model, ins: list[torch.Tensor], dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager FlexAttention says it is unfused
        return model.to(dtype)(*[x.to(dtype) if x.is_floating_point() else x for x in ins])


def test_both_lowerings_agree_with_the_interpreter_and_each_other() -> None:
    """Every case: SDPA equals the interpreter in float64 (1e-10); FlexAttention (eager:
    torch's unfused reference of it) equals SDPA and the interpreter within 1e-5 in float32 on
    the position expressions (every case in the slow tests below)."""
    text = _all_cases()
    g = archlang.graph(text)
    ins = _inputs(g)
    refs = dict(zip(CASES, interpret(g, {}, [x.double() if x.is_floating_point() else x for x in ins]), strict=True))
    sdpa = archlang.build(text, max_memory=None, attention="sdpa")
    out64, out32 = _run(sdpa, ins, torch.float64), _run(sdpa, ins, torch.float32)
    for name, ref in refs.items():
        assert (out64[name] - ref).abs().max().item() < 1e-10, name
        assert (out32[name].double() - ref).abs().max().item() < 1e-5, name
    text = _all_cases(FLEX_DEFAULT)
    by_name = dict(zip(g.inputs, ins, strict=True))
    flex = _run(archlang.build(text, max_memory=None, attention="flex"),
                [by_name[n] for n in archlang.graph(text).inputs], torch.float32)
    for name in FLEX_DEFAULT:
        assert (flex[name] - out32[name]).abs().max().item() < 1e-5, name
        assert (flex[name].double() - refs[name]).abs().max().item() < 1e-5, name


def _both(names: tuple[str, ...], dtype, seed: int) -> None:
    text = _all_cases(names)
    g = archlang.graph(text)
    ins = _inputs(g, seed=seed)
    refs = interpret(g, {}, [x.double() if x.is_floating_point() else x for x in ins])
    out = _run(archlang.build(text, max_memory=None, attention="flex"), ins, dtype)
    for name, ref in zip(names, refs, strict=True):
        assert (out[name].double() - ref).abs().max().item() < (1e-10 if dtype == torch.float64 else 1e-5), name


@pytest.mark.slow
def test_flex_agrees_with_the_interpreter_on_every_case() -> None:
    _both(tuple(CASES), torch.float32, 3)


@pytest.mark.slow
def test_flex_agrees_with_the_interpreter_in_float64() -> None:
    _both(tuple(CASES), torch.float64, 1)


@pytest.mark.slow
def test_flex_compiled_agrees_with_sdpa() -> None:
    """torch.compile(fullgraph=True) of the FlexAttention lowering (fused on the CPU): no graph
    break, and the same outputs as SDPA within 1e-5; a training step falls back to the
    written-out attention (FlexAttention has no CPU backward) and gives SDPA's gradients."""
    text = _all_cases()
    g = archlang.graph(text)
    ins = _inputs(g, dtype=torch.float32, seed=2)
    sdpa = archlang.build(text, max_memory=None, attention="sdpa")
    flex = torch.compile(archlang.build(text, max_memory=None, attention="flex"), fullgraph=True)
    want, got = _run(sdpa, ins, torch.float32), _run(flex, ins, torch.float32)
    for name in CASES:
        assert (want[name] - got[name]).abs().max().item() < 1e-5, name
    leaves = [x.clone().requires_grad_() if x.is_floating_point() else x for x in ins]
    eager_flex = archlang.build(text, max_memory=None, attention="flex")
    grads = []
    for model in (sdpa, eager_flex):
        out = _run(model, leaves, torch.float32)
        grads.append(torch.autograd.grad(sum(o.sum() for o in out.values()), [x for x in leaves if x.requires_grad]))
    for a, b in zip(*grads, strict=True):
        assert (a - b).abs().max().item() < 1e-5


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


def test_flops_of_every_case_equal_flop_counter() -> None:
    text = _all_cases()
    g = archlang.graph(text)
    model = archlang.build(text, max_memory=None, attention="sdpa")
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(*_inputs(g, batch=1, dtype=torch.float32))
    rep = archlang.cost(text, batch=1)
    assert rep.flops == fc.get_total_flops() > 0
    assert len(rep.attention_layers()) == len(CASES)  # every attend is in the attention report


@pytest.mark.parametrize(("kvh", "dv", "args"), [
    (4, 8, ""),  # the CPU's fused kernel: q, k, v, the output and the log-sum-exp
    (2, 8, ", mask = q_idx - kv_idx < 4, causal = true"),  # fused also with GQA and a constant mask
    (4, 8, ", dropout = 0.1"),  # the math path: probabilities, dropout mask, dropped probabilities
    (2, 12, ""),  # value head dim != key head dim: the math path, with copies of k and v for GQA
    (4, 8, ", bias = pos"),  # a bias with a gradient: the math path
    (4, 8, ", score = score * 0.5"),  # a score rewrite: the prelude's scored_attention
    (2, 8, ", bias = slope[h] * (kv_idx - q_idx)"),  # ALiBi with a learned slope, computed in forward
])
def test_saved_bytes_as_autograd_saves_them_on_the_cpu(kvh: int, dv: int, args: str) -> None:
    """The attend rule's saved tensors (inputs, output, intermediates, int64 indices) against the
    unique storages saved_tensors_hooks sees, q, k and v being leaves that need a gradient."""
    import sys
    from pathlib import Path

    from archlang.cost.rules import COST_RULES
    from archlang.ops.attention import Attend

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from memory_truth import measure_saved

    text = (f"arch t() {{\n  in q: [2, 4, 16, 8]\n  in k: [2, {kvh}, 24, 8]\n  in v: [2, {kvh}, 24, {dv}]\n"
            f"  pos = param(shape = [4, 16, 24])\n  slope = param(shape = [4], value = 0.3)\n"
            f"  out y = attend(q, k, v{args})\n}}\n")
    g = archlang.graph(text)
    (node,) = [n for n in g.nodes if isinstance(n.op, Attend)]
    ins = [g.type_of(r) for r in node.inputs]
    c = COST_RULES[Attend](node.op, ins, node.outputs)
    elems = sum(math.prod(t.shape) for t in ins[:3]) + (math.prod(node.outputs[0].shape) if c.saves_output else 0)
    elems += c.saved if c.saved_cpu is None else c.saved_cpu
    want = 4 * elems + 8 * c.saved_int64
    model = archlang.build(text, max_memory=None, attention="sdpa")
    leaves = [torch.randn(*[d for d in t.shape]).requires_grad_() for t in ins[:3]]
    got = measure_saved(model, lambda: leaves)
    assert abs(want - got) <= 0.01 * got, (want, got)


def test_flex_skips_masked_blocks() -> None:
    """A causal sliding window over 512 positions (FlexAttention's blocks are 128 x 128): only
    the diagonal blocks and those just below it are computed; the sparsity the BlockMask
    reports equals the share of blocks where the mask never holds, counted here by brute force."""
    import sys

    text = _spec("attend(q, k, v, mask = q_idx - kv_idx < 64, causal = true)", "[B, 2, 512, 8]", "[B, 2, 512, 8]",
                 "[B, 2, 512, 8]")
    model = archlang.build(text, max_memory=None, attention="flex")
    module = sys.modules[type(model).__module__]
    seen = []
    made = module.block_mask

    def spy(*args, **kwargs):
        seen.append(made(*args, **kwargs))
        return seen[-1]

    module.block_mask = spy
    try:
        g = archlang.graph(text)
        ins = _inputs(g, batch=1, dtype=torch.float32)
        got = _run(model, ins, torch.float32)
    finally:
        module.block_mask = made
    (bm,) = seen
    i = torch.arange(512)
    keep = (i[:, None] - i[None, :] < 64) & (i[None, :] <= i[:, None])
    blocks = keep.view(4, 128, 4, 128).any(dim=3).any(dim=1)  # [q block, kv block]: any entry kept
    assert blocks.sum().item() == 7  # 4 diagonal blocks and the 3 below them
    assert bm.sparsity() == pytest.approx(100 * (1 - blocks.float().mean().item()))  # 56.25 %
    want = F.scaled_dot_product_attention(*ins, attn_mask=keep)
    assert (got - want).abs().max().item() < 1e-5


def test_the_library_blocks_reproduce_the_attention_ops() -> None:
    """std.nn's `mha` (over `attend`) in place of the `attention` op in ViT-B/16 (small): the
    same state_dict keys load strictly and the logits agree; `cross_mha` likewise for
    `cross_attention`."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    lib = (root / "archlang" / "stdlib" / "std" / "nn.arch").read_text()
    block = re.search(r"block transformer_block\(.*?\n}\n", lib, re.S).group(0)  # type: ignore[union-attr]
    assert "attn: attention(" in block
    mine = block.replace("block transformer_block(", "block transformer_block_attend(") \
        .replace("attn: attention(", "attn: mha(")
    text = (root / "specs" / "vit_b16.arch").read_text().replace("transformer_block(", "transformer_block_attend(")
    sizes = {"img": 32, "patch": 8, "depth": 2, "dim": 64, "heads": 2}
    ops = archlang.build(root / "specs" / "vit_b16.arch", "vit_b16", max_memory=None, **sizes).eval()
    lib_model = archlang.build(text + "\n" + mine, "vit_b16", max_memory=None, **sizes).eval()
    assert "F.scaled_dot_product_attention" in lib_model.archlang_source
    lib_model.load_state_dict(ops.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert (ops(x) - lib_model(x)).abs().max().item() < 1e-5

    cross = "arch t() {{\n  in x: [B, 5, 16]\n  in m: [B, 7, 12]\n  out y = att: {}(x, m, heads = 2)\n}}\nuse std.nn\n"
    a = archlang.build(cross.format("cross_attention"), max_memory=None).eval()
    b = archlang.build(cross.format("cross_mha"), max_memory=None).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x, m = torch.randn(2, 5, 16), torch.randn(2, 7, 12)
    assert (a(x, m) - b(x, m)).abs().max().item() < 1e-5


_BAD = "arch t(window: int = 3) {{\n  in q: [B, 4, 7, 8]\n  in k: [B, 4, 9, 8]\n  in v: [B, 4, 9, 8]\n" \
       "  in slope: [3]\n  in doc: int[B, 7]\n  in table: [15, 4]\n  out y = attend(q, k, v, {})\n}}\n"


@pytest.mark.parametrize(("arg", "code", "needle"), [
    ("mask = q_id - kv_idx < window", "E0201", "did you mean `q_idx`?"),
    ("mask = windo > kv_idx", "E0201", "did you mean `window`?"),
    ("mask = q_idx - kv_idx", "E0401", "attend's mask must be a bool, got an int"),
    ("bias = slope[h]", "E0301", "reads dim 0 of a [3] tensor with `h`, which ranges over 4"),
    ("bias = table[q_idx - kv_idx, h]", "E0304", "which ranges over -8 .. 6"),
    ("mask = doc[b] == doc[b]", "E0304", "1 index for the rank-2 tensor"),
    ("bias = slope[0.5 * h]", "E0401", "an index needs ints, got a float"),
    ("mask = true", "E0406", "is the same for every score"),
    ("score = score ** 2", "E0401", "`**` is not allowed"),
    ("bias = sum(q_idx)", "E0401", "`sum(...)` is not allowed"),
])
def test_bad_expressions_are_diagnosed(arg: str, code: str, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        archlang.graph(_BAD.format(arg))
    text = str(err.value)
    assert text.startswith(f"error[{code}]") and needle in text, text
    assert "^" in text  # the caret under the argument


def test_auto_picks_flex_for_sparse_masks_of_compiled_models() -> None:
    """The "auto" rule: SDPA, except in a compiled model FlexAttention where the position mask
    skips >= 75% of the blocks or a bias is computed from a tensor (compiling is lazy: nothing
    runs here)."""
    from archlang.ops.attention import Attend, block_sparsity

    text = ("arch t() {\n  in q: [1, 2, 1024, 8]\n  in k: [1, 2, 1024, 8]\n  in v: [1, 2, 1024, 8]\n"
            "  out w = attend(q, k, v, mask = q_idx - kv_idx < 128, causal = true)\n"
            "  in slope: [2]\n  out c = attend(q, k, v, causal = true)\n"
            "  out a = attend(q, k, v, bias = slope[h] * (kv_idx - q_idx), causal = true)\n}\n")
    g = archlang.graph(text)
    ops = [n for n in g.nodes if isinstance(n.op, Attend)]
    window, causal, _ = (block_sparsity(n.op, [g.type_of(r) for r in n.inputs]) for n in ops)
    assert window == pytest.approx(1 - 15 / 64) and causal == pytest.approx(1 - 36 / 64)  # 8 x 8 blocks
    compiled = archlang.build(text, max_memory=None, compile=True)._orig_mod.archlang_source
    # the window and ALiBi (its bias read from a tensor in every forward) on FlexAttention
    assert compiled.count("flex_attention(q, k, v") == 2 and compiled.count("F.scaled_dot_product_attention") == 1
    eager = archlang.build(text, max_memory=None).archlang_source
    assert "flex_attention(q" not in eager and eager.count("F.scaled_dot_product_attention") == 3


def _specs_with_attend() -> list:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    return [p for p in sorted((root / "specs").glob("*.arch"))
            if "attend" in p.read_text() or any(b in p.read_text() for b in ("gqa_attention", "llama_layer", "mha("))]


@pytest.mark.slow
@pytest.mark.parametrize("spec", _specs_with_attend(), ids=lambda p: p.stem)
def test_both_lowerings_agree_on_the_shipped_specs(spec) -> None:
    """Every shipped spec with an attend, at its small size: the SDPA and FlexAttention
    lowerings agree within 1e-5 (float32, eval)."""
    import sys
    from pathlib import Path

    from archlang.check import load
    from archlang.check.elaborate import choose_arch
    from archlang.lower.example import example_inputs
    from archlang.ops.attention import Attend

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from small_sizes import SIZES, SMALL

    arch, _ = choose_arch(load(spec), None)
    small = SMALL.get(spec.stem, {})
    g = archlang.graph(spec, arch, **small)
    if not any(isinstance(n.op, Attend) for n in g.nodes):
        pytest.skip(f"{spec.stem}'s default arch has no attend")
    torch.manual_seed(0)
    sdpa = archlang.build(spec, arch, max_memory=None, attention="sdpa", **small).eval()
    flex = archlang.build(spec, arch, max_memory=None, attention="flex", **small).eval()
    flex.load_state_dict(sdpa.state_dict())
    ins = example_inputs(g, batch=2, sizes=SIZES)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = sdpa(*ins), flex(*ins)
    a, b = (x if isinstance(x, dict) else {"out": x} for x in (a, b))
    for k in a:
        if a[k].is_floating_point():
            assert (a[k] - b[k]).abs().max().item() < 1e-5, k


def test_block_instances_with_different_masks_get_their_own_classes() -> None:
    """A block called with two windows: each mask is its own code (a class per mask), and the
    model agrees with the interpreter."""
    text = """block swa(x: [B, N, D], window: int) {
  q = rearrange(x, "b n (h d) -> b h n d", h = 2)
  return rearrange(attend(q, q, q, mask = q_idx - kv_idx < window, causal = true), "b h n d -> b n (h d)")
}
arch t() {
  in x: [B, 9, 8]
  y = l0: swa(x, window = 2)
  y = l1: swa(y, window = 3)
  out z = l2: swa(y, window = 2)
}
"""
    model = archlang.build(text, max_memory=None).double()
    src = model.archlang_source
    assert "q_idx - kv_idx < 2" in src and "q_idx - kv_idx < 3" in src and src.count("class Swa") == 2
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    (want,) = interpret(archlang.graph(text), {}, [x])
    assert (model(x) - want).abs().max().item() < 1e-12


@pytest.mark.parametrize("shape", ["[7, 9]", "[4, 7, 9]", "[B, 4, 7, 9]", "[B, 1, 1, 9]", "[1, 7, 1]"])
def test_bias_tensors_broadcast_over_batch_and_heads(shape: str) -> None:
    text = _spec("attend(q, k, v, bias = pos)", extra=f"  in pos: {shape}\n")
    g = archlang.graph(text)
    ins = _inputs(g)
    (want,) = interpret(g, {}, ins)
    pos = ins[3].expand(2, 4, 7, 9) if ins[3].dim() == 4 else ins[3]
    torch_ref = F.scaled_dot_product_attention(ins[0], ins[1].repeat_interleave(2, 1), ins[2].repeat_interleave(2, 1),
                                               attn_mask=pos)
    assert (want - torch_ref).abs().max().item() < 1e-12
    assert (archlang.build(text, max_memory=None).double()(*ins) - want).abs().max().item() < 1e-12


def test_a_bias_of_the_wrong_shape_is_diagnosed() -> None:
    with pytest.raises(SpecError) as err:
        archlang.graph(_spec("attend(q, k, v, bias = pos)", extra="  in pos: [4, 7, 8]\n"))
    assert "error[E0301]" in str(err.value) and "ranges over 9" in str(err.value)


def test_archc_build_attention_option(tmp_path) -> None:
    from typer.testing import CliRunner

    from archlang.cli import app

    spec = tmp_path / "w.arch"
    spec.write_text(_spec("attend(q, k, v, mask = q_idx - kv_idx < 3, causal = true)", k="[B, 2, 7, 8]",
                          v="[B, 2, 7, 6]"))
    for kind, needle in (("flex", "flex_attention(q, k, v"), ("sdpa", "F.scaled_dot_product_attention(q, k, v")):
        res = CliRunner().invoke(app, ["build", str(spec), "-o", str(tmp_path / kind), "--attention", kind,
                                       "--max-memory", "off"])
        assert res.exit_code == 0, res.output
        assert needle in (tmp_path / kind / "t.py").read_text()
    res = CliRunner().invoke(app, ["build", str(spec), "--attention", "fused"])
    assert res.exit_code == 2 and "--attention is auto, sdpa, flex, not fused" in res.output
