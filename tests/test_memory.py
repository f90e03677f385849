"""Exact sizes and memory: floor division in symbolic sizes (strided convolutions over a free
length), fitted formulas that warn off their lattice, the schedule simulation of peaks on
hand-computed graphs (archlang.cost.schedule), and the memory estimates against what torch
measures (saved tensors, profiler peaks, activation checkpointing) on small specs."""

from __future__ import annotations

import warnings
from fractions import Fraction

import pytest

import archlang
from archlang.ir.dims import Dim, DimTooLarge, Floor, ceildiv, floordiv, mul


def test_floor_division_is_exact_and_normal() -> None:
    T, B = Dim.sym("T"), Dim.sym("B")
    once = floordiv(T - 3, 2) + 1  # conv kernel 3, stride 2
    twice = floordiv(once - 3, 2) + 1
    assert str(once) == "floor((T + 1)/2) - 1"
    assert str(twice) == "floor((T + 1)/4) - 1"  # nested floors fold
    assert floordiv(2 * T, 2) == T and floordiv(T + 4, 2) == floordiv(T, 2) + 2
    assert floordiv(T - 3, 4) == twice  # floor((T - 3)/4) = floor((T + 1)/4) - 1
    assert str(ceildiv(T, 4)) == "floor((T + 3)/4)"
    for t in range(1, 300):
        assert twice.subs({"T": t}) == ((t - 3) // 2 + 1 - 3) // 2 + 1
        assert ceildiv(T, 4).subs({"T": t}) == -(-t // 4)
        assert floordiv(-T, 4).subs({"T": t}) == -t // 4
        assert floordiv(mul(T, Fraction(1, 3)), 2).subs({"T": t}) == (t / 3) // 2  # a rational coefficient
    sq = mul(mul(twice, twice), B)  # a floor is an atom of the polynomial
    assert sq == mul(B, mul(twice, twice)) and hash(sq) == hash(mul(B, mul(twice, twice)))
    assert sq.symbols == {"B", "T"} and sq.subs({"T": 128}) == mul(961, B) and sq.subs({"T": 128, "B": 2}) == 1922
    assert any(isinstance(a, Floor) for t in twice.terms for a, _ in t.powers)


def test_floor_division_keeps_the_guards() -> None:
    x = Dim.sym("T")
    with pytest.raises(DimTooLarge):
        for _ in range(300):  # 2**300 as a divisor
            x = floordiv(x - 3, 2) + 1


def test_a_constant_times_a_dim_equals_the_general_product() -> None:
    """``mul`` of a Dim and a constant scales the coefficients (the checker's hot path); it
    equals the product of the two as polynomials, in either order, and keeps the guard."""
    from archlang.ir.dims import Dim as D
    from archlang.ir.dims import _as_map, product

    T, B = D.sym("T"), D.sym("B")
    dims = [T, T + 1, mul(B, T) - 3, floordiv(T - 3, 2) + 1, mul(T, Fraction(1, 3)) + B]
    for d in dims:
        for c in (2, 3, -1, Fraction(1, 2), Fraction(-7, 4), 10**20):
            general = D._from_map({p_: q * Fraction(c) for p_, q in _as_map(d).items()})
            assert mul(d, c) == mul(c, d) == general, (d, c)
            for t in (1, 7, 64):
                assert mul(d, c).subs({"T": t, "B": 3}) == d.subs({"T": t, "B": 3}) * c
        assert mul(d, 1) is d and mul(d, 0) == 0 and mul(0, d) == 0
    assert product([2, T, 3, B]) == mul(mul(T, B), 6) and product([4, 5]) == 20
    with pytest.raises(DimTooLarge):
        mul(T, 2**300)


def test_floor_dims_round_trip_through_json() -> None:
    g = archlang.graph("specs/conformer.arch")
    assert type(g).model_validate_json(g.model_dump_json()) == g
    assert str(g.nodes[-2].outputs[0]) == "[B, floor((T + 1)/4) - 1, 1025]"


@pytest.mark.parametrize("frames", [100, 127, 128, 1000])
def test_conformer_flops_equal_flop_counter_mode(frames: int) -> None:
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from archlang.lower.example import example_inputs

    model = archlang.build("specs/conformer.arch").eval()
    inputs = example_inputs(model.archlang_graph, batch=1, sizes={"T": frames})
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        out = model(*inputs)
    rep = archlang.cost("specs/conformer.arch", sizes={"T": frames})
    assert out.shape[1] == ((frames - 3) // 2 + 1 - 3) // 2 + 1
    assert counter.get_total_flops() == rep.flops
    if frames == 128:
        assert rep.flops == 795_377_664 and rep.attention_bytes == 246_016  # 31 frames, 4 heads, fp32


def test_fit_formula_warns_when_it_holds_only_on_its_lattice() -> None:
    import sympy

    from archlang.check import load
    from archlang.cost.sweep import LatticeWarning, fit_formula

    prog = load("specs/swin_t.arch")
    with pytest.warns(LatticeWarning, match=r"holds only on those sizes: at img = 352 .* \(-23.6%\)"):
        fit = fit_formula(prog, None, "img", "attention_bytes")
    assert fit.lattice_only and fit.off_value == 352 and 352 in fit.valid and 336 in fit.tried  # 336: 21 is odd
    assert fit.off_fitted < fit.off_actual
    img, B = sympy.symbols("img B", positive=True, integer=True)
    at_384 = archlang.cost("specs/swin_t.arch", img=384).attention_bytes
    assert -0.15 < float(fit.subs({img: 384, B: 1})) / at_384 - 1 < -0.13  # 14% low where windows are padded
    assert sympy.expand(fit - 2793 * B * img**2 / 16) == 0  # it still behaves as the expression

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vit = fit_formula(load("specs/vit_b16.arch"), None, "img", "flops")  # a polynomial at every size
    assert not vit.lattice_only and vit.checked_off_lattice and vit.off_fitted == vit.off_actual



def _memory_truth():
    """benchmarks/memory_truth.py as a module: its measure_* functions are the method."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "memory_truth.py"
    mod_spec = importlib.util.spec_from_file_location("memory_truth", path)
    assert mod_spec is not None and mod_spec.loader is not None
    truth = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(truth)
    return truth


# tiny configurations of the specs whose saved-tensor estimates were fixed (unfolded
# neighbourhoods, explicit score matrices, a tensor kept by two ops counted once, frozen
# weights keep nothing, SDPA's math path under a mask, argmax in int64, rel-pos einsums),
# measured with benchmarks/memory_truth.py's method: within 3%, the bar
PINNED = [
    ("resnet50", {"img": 32, "layers": [1, 1, 1, 1], "classes": 10}, 0.03),
    ("sasa_resnet50", {"img": 32, "layers": [1, 1, 1, 1], "classes": 10}, 0.03),
    ("swinv2_t", {"img": 32, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]}, 0.03),
    ("swin_t_lora", {"img": 32, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]}, 0.03),
    ("mvitv2_t", {"img": 64, "embed": 16, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2]}, 0.03),
]


@pytest.mark.parametrize(("spec", "params", "tol"), PINNED, ids=[s for s, _, _ in PINNED])
def test_saved_bytes_agree_with_autograd(spec: str, params: dict, tol: float) -> None:
    pytest.importorskip("torch")
    truth = _memory_truth()
    import torch

    from archlang.lower.example import example_inputs

    torch.manual_seed(0)
    model = archlang.build(f"specs/{spec}.arch", **params)
    measured = truth.measure_saved(model, lambda: example_inputs(model.archlang_graph, batch=2))
    est = archlang.cost(f"specs/{spec}.arch", batch=2, train=True, **params).saved_bytes
    assert abs(est / measured - 1) <= tol, (est, measured)


def _truth():
    truth = _memory_truth()
    return truth


# ----------------------------------------------------------------------------- the schedule, by hand

def _chain(train: bool = True, block: str = "") -> list:
    """x (100 B) -> a = f(x) (200 B, saves x) -> b = g(a) (50 B, saves a and 8 B of its own,
    a 130 B temporary) -> out; f has a 40 B weight, g a 20 B one."""
    from archlang.cost.schedule import Step

    return [
        Step("x", outputs=(0,), sizes=(100,)),
        Step("f", inputs=(0,), outputs=(1,), sizes=(200,), saves=(0,) if train else (), grads=(False,),
             weight_grad=40 if train else 0, block=block),
        Step("g", inputs=(1,), outputs=(2,), sizes=(50,), temp=130, saves=(1,) if train else (),
             saved_internal=8 if train else 0, grads=(True,), weight_grad=20 if train else 0, grad_temp=5, block=block),
        Step("out", inputs=(2,), outputs=(3,), sizes=(0,), views=(0,), grads=(True,), grad_views=(True,),
             is_output=True),
    ]


def test_schedule_inference_frees_after_the_last_use() -> None:
    from archlang.cost.schedule import simulate

    peak = simulate(_chain(train=False), resident=1000, train=False)
    # at f: x (100) and a (200); at g: x is freed (its last use was f), a (200) and b (50) are
    # live, and g's temporary (130)
    assert (peak.bytes, peak.phase, peak.at) == (1000 + 200 + 50 + 130, "forward", "g")
    assert peak.parts["transient"] == 380 and peak.parts["saved"] == 0


def test_schedule_training_step_by_hand() -> None:
    from archlang.cost.schedule import Optimizer, simulate

    steps = _chain()
    # forward peak at g: x (saved) 100 + a (saved) 200 + b 50 + g's own saved 8 + temp 130 = 488;
    # backward at g: those minus nothing yet, + a's gradient 200 + g's weight gradient 20 + 5;
    # b's gradient is sum()'s expanded one (free) and b itself was freed after the loss
    peak = simulate(steps, resident=1000, train=True, optimizer=Optimizer())
    assert (peak.bytes, peak.phase, peak.at) == (1000 + 100 + 200 + 8 + 200 + 20 + 5, "backward", "g")
    assert peak.parts["saved"] == 308 and peak.parts["grads"] == 20 and peak.parts["transient"] == 205
    # the optimizer: moments (2 x 60) + a step counter per tensor (2 x 4) + temporaries; the
    # gradients (60) are live; on the CPU twice the largest parameter (2 x 40), CUDA's foreach
    # all of them (60)
    big = Optimizer(trainable=600, largest=400, tensors=2)
    cpu = simulate(steps, resident=1000, train=True, optimizer=big)
    assert (cpu.bytes, cpu.phase) == (1000 + 60 + 1200 + 8 + 800, "step")
    cuda = simulate(steps, resident=1000, train=True, optimizer=Optimizer(600, 400, 2, foreach=True))
    assert cuda.bytes == 1000 + 60 + 1200 + 8 + 600 and cuda.parts["optimizer"] == 1808


def test_schedule_views_and_a_tensor_used_twice() -> None:
    from archlang.cost.schedule import Step, simulate

    steps = [
        Step("x", outputs=(0,), sizes=(100,)),
        Step("w", inputs=(0,), outputs=(1,), sizes=(100,), weight_grad=10, grads=(False,), saves=(0,)),
        Step("v", inputs=(1,), outputs=(2,), sizes=(100,), views=(0,), grads=(True,), grad_views=(True,)),
        Step("m", inputs=(1, 2), outputs=(3,), sizes=(100,), saves=(1, 2), grads=(True, True)),
        Step("out", inputs=(3,), outputs=(4,), sizes=(0,), views=(0,), grads=(True,), grad_views=(True,),
             is_output=True),
    ]
    # w's output and its view v are one storage, kept once for m; m's backward makes a gradient
    # for each input (100 + 100); v's passes its gradient on as a view and adds into w's output's
    # gradient (the second contribution is freed after being added)
    peak = simulate(steps, resident=0, train=True)
    assert peak.phase == "backward" and peak.at == "m"
    assert peak.bytes == 100 + 100 + 200 and peak.parts["saved"] == 200


def test_schedule_checkpointed_block_by_hand() -> None:
    from archlang.cost.schedule import Optimizer, simulate

    steps = _chain(block="blk")
    plain = simulate(steps, resident=1000, train=True, optimizer=Optimizer())
    ck = simulate(steps, resident=1000, train=True, optimizer=Optimizer(), checkpointed={"blk"})
    # forward: the block keeps only its input x (100) and saves nothing: at g 100 + a 200 + b 50
    # + temp 130 = 480 (its saved bytes are not allocated). Backward: the block runs again (at g:
    # x 100 + a 200 + own 8 + b 50 + temp 130 = 488), then its backward is as before (533)
    assert plain.bytes == ck.bytes == 1533 and ck.phase == "backward"
    fwd = simulate(steps, resident=1000, train=True, optimizer=Optimizer(), checkpointed={"other"})
    assert fwd.bytes == plain.bytes  # a block that is not in the graph changes nothing
    # two blocks, each f (1000 B out, saves its 10 B input) then g (10 B out, saves f's output):
    # without checkpointing, block 2's backward (its a2's gradient, 1000) runs while everything
    # saved is live: x 10 + a1 1000 + b1 10 + a2 1000 + 1000 = 3020. With block 1 checkpointed its
    # a1 is gone then (2020); recomputed in backward, a1 and its gradient are live with x and
    # b1's gradient: 10 + 1000 + 10 + 1000 = 2020. Checkpointing saves exactly a1's 1000 bytes
    from archlang.cost.schedule import Step

    def two_blocks() -> list[Step]:
        out = [Step("x", outputs=(0,), sizes=(10,))]
        for k, blk in enumerate(("b1", "b2")):
            t = 2 * k
            out += [Step(f"{blk}.f", inputs=(t,), outputs=(t + 1,), sizes=(1000,), saves=(t,), grads=(k > 0,),
                         block=blk),
                    Step(f"{blk}.g", inputs=(t + 1,), outputs=(t + 2,), sizes=(10,), saves=(t + 1,), grads=(True,),
                         block=blk)]
        return [*out, Step("out", inputs=(4,), outputs=(5,), sizes=(0,), views=(0,), grads=(True,),
                           grad_views=(True,), is_output=True)]

    p0 = simulate(two_blocks(), resident=0, train=True)
    p1 = simulate(two_blocks(), resident=0, train=True, checkpointed={"b1"})
    assert (p0.bytes, p0.at) == (3020, "b2.g") and p1.bytes == 2020 and p0.bytes - p1.bytes == 1000
    p2 = simulate(two_blocks(), resident=0, train=True, checkpointed={"b1", "b2"})
    assert p2.bytes == 2020  # block 2's own a2 and its gradient remain the peak


# ----------------------------------------------------------------------------- estimates against torch

PEAKS = [  # (spec, params, tolerance of the inference and training peaks)
    pytest.param("resnet50", {"img": 32, "layers": [1, 1, 1, 1], "classes": 10}, 0.02, marks=pytest.mark.slow,
                 id="resnet50"),  # 23.5M parameters: the AdamW step takes a while
    pytest.param("gpt", {"layers": 1, "dim": 32, "heads": 2, "vocab": 64, "block_size": 64}, 0.10, id="gpt"),
    pytest.param("swinv2_t", {"img": 32, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]},
                 0.06, id="swinv2_t"),
    # a 16 x 16 patch conv: oneDNN's gemm-based weight gradient and its per-thread scratch
    pytest.param("ast", {"mel": 32, "frames": 64, "dim": 32, "depth": 1, "heads": 2, "classes": 5}, 0.05, id="ast"),
]


@pytest.mark.parametrize(("spec", "params", "tol"), PEAKS)
def test_peaks_agree_with_the_profiler(spec: str, params: dict, tol: float) -> None:
    pytest.importorskip("torch")
    import torch

    from archlang.cost.rules import cpu_threads
    from archlang.lower.example import example_inputs

    truth = _truth()
    torch.manual_seed(0)
    model = archlang.build(f"specs/{spec}.arch", **params)

    def make():
        return example_inputs(model.archlang_graph, batch=2, sizes={"T": 63})

    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())  # the threads the estimate assumes (oneDNN scratch is per thread)
    try:
        _compare_peaks(truth, model, make, spec, params, tol)
    finally:
        torch.set_num_threads(threads)


def _compare_peaks(truth, model, make, spec: str, params: dict, tol: float) -> None:
    inf = archlang.cost(f"specs/{spec}.arch", batch=2, sizes={"T": 63}, **params).peak_inference_bytes()[0]
    tr = archlang.cost(f"specs/{spec}.arch", batch=2, train=True, sizes={"T": 63}, **params)
    got_inf, got_tr = truth.measure_inference_peak(model, make), truth.measure_training_peak(model, make)
    assert abs(inf / got_inf - 1) <= tol, (inf, got_inf)
    assert abs(tr.peak_training_bytes()[0] / got_tr - 1) <= tol, (tr.training_parts(), got_tr)
    assert abs(tr.saved_bytes / truth.measure_saved(model, make) - 1) <= 0.03


def test_the_in_place_gelu_is_held_once_in_the_inference_peak() -> None:
    """Mixer's MLPs peak at their hidden tensor. The default build's GELU overwrites fc1's
    output (InplaceGELU) and the schedule counts that storage once: estimate and profiler
    agree within 1%, and the estimate without the in-place GELU would be over by a hidden
    tensor."""
    pytest.importorskip("torch")
    import dataclasses

    from archlang.cost.schedule import simulate
    from archlang.lower.example import example_inputs

    params = {"img": 64, "depth": 2}
    truth = _truth()
    model = archlang.build("specs/mixer_b16.arch", **params)
    rep = archlang.cost("specs/mixer_b16.arch", batch=4, **params)
    est, at = rep.peak_inference_bytes()
    got = truth.measure_inference_peak(model, lambda: example_inputs(model.archlang_graph, batch=4))
    assert abs(est / got - 1) <= 0.01, (est, got, at)
    gelus = {act for _, act in rep.graph.gelus_after_linears()}
    steps = rep.schedule_steps()
    assert gelus and all(st.eval_view for st in steps if st.name in gelus)
    out_of_place = [dataclasses.replace(st, eval_view=False) if st.name in gelus else st for st in steps]
    resident = rep.resident_bytes()
    assert simulate(out_of_place, resident=resident, train=False).bytes > simulate(steps, resident=resident,
                                                                                  train=False).bytes


def _measured_isa() -> bool:
    """Whether the CPU's vector ISA is one the blocked layout was measured on (AVX2, AVX-512)."""
    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def test_the_inference_builds_packed_weights_are_what_the_profiler_sees(monkeypatch) -> None:
    """The inference build's linear layers make a blocked copy of their weight on their first
    call (``OneDnnLinear.pack``): its bytes (``packed_linear_weight``, widths that are and are
    not multiples of 64), the copies a cold first forward leaves, and the warm peak, against the
    profiler, within 1%; the default build's estimate holds none. Every layer takes oneDNN here
    (no race): a layer whose race ``F.linear`` wins keeps no copy, and the estimate is then an
    upper bound."""
    torch = pytest.importorskip("torch")
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    if not _measured_isa():
        pytest.skip("the blocked layout was measured on AVX2 and AVX-512; others may block differently")
    import sys
    from pathlib import Path

    import archlang.lower.inference_runtime as rt
    from archlang.lower.example import example_inputs
    from archlang.lower.inference_runtime import OneDnnLinear
    from archlang.ops.layers import packed_linear_weight

    monkeypatch.setattr(rt, "RACE_MACS", 1 << 62)  # oneDNN at every shape, unraced

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from memory_truth import _peak_of, _profile

    for k, n in ((48, 96), (96, 96), (100, 40), (17, 65), (768, 64), (2, 512), (1, 1), (100, 1), (3, 2)):
        lin = torch.nn.Linear(k, n)
        lin.__class__ = OneDnnLinear
        lin.pack = True
        with _profile() as prof:
            packed = lin.packed_weight()
        assert _peak_of(prof) == 4 * packed_linear_weight(n, k), (k, n)
        del packed
    params = {"img": 64, "depth": 2}
    truth = _truth()
    model = archlang.build("specs/mixer_b16.arch", inference=True, **params)
    rep = archlang.cost("specs/mixer_b16.arch", batch=4, inference=True, **params)
    assert rep.packed_bytes == 4 * sum(packed_linear_weight(*m.weight.shape) for m in model.modules()
                                       if type(m) is OneDnnLinear)
    assert archlang.cost("specs/mixer_b16.arch", batch=4, **params).packed_bytes == 0
    def make():
        return example_inputs(model.archlang_graph, batch=4)

    with torch.no_grad(), _profile() as prof:  # cold: the copies are made
        out = model(*make())
        del out
    held = truth._net_of(prof)  # the copies the layers keep
    assert abs(held / rep.packed_bytes - 1) <= 0.01, (held, rep.packed_bytes)
    est, at = rep.peak_inference_bytes()
    got = truth.measure_inference_peak(model, make) + held  # warm: the copies are resident
    assert abs(est / got - 1) <= 0.01, (est, got, at, rep.inference_parts())
    vit = archlang.cost("specs/vit_b16.arch", batch=8, inference=True)  # the figure in docs/memory.md
    assert (round(vit.packed_bytes / 2**20), round(vit.param_bytes / 2**20)) == (327, 330)


def test_checkpointing_lowers_the_peak_as_measured() -> None:
    """ViT with four blocks under torch.utils.checkpoint (set_grad_checkpointing): the estimate
    with every block instance checkpointed follows the profiler, and so does the saving."""
    pytest.importorskip("torch")
    import torch

    from archlang.lower.example import example_inputs

    truth = _truth()
    params = {"img": 64, "patch": 4, "depth": 4, "dim": 32, "heads": 2}
    torch.manual_seed(0)
    model = archlang.build("specs/vit_b16.arch", **params)
    rep = archlang.cost("specs/vit_b16.arch", batch=2, train=True, **params)
    blocks = frozenset(model.archlang_graph.block_instances())
    assert blocks == {f"blocks.{i}" for i in range(4)}

    def make():
        return example_inputs(model.archlang_graph, batch=2)

    plain = truth.measure_training_peak(model, make)
    model.set_grad_checkpointing(True)
    ck = truth.measure_training_peak(model, make)
    est_plain, est_ck = rep.peak_training_bytes()[0], rep.peak_training_bytes(checkpointed=blocks)[0]
    assert abs(est_plain / plain - 1) < 0.02 and abs(est_ck / ck - 1) < 0.03, (est_plain, plain, est_ck, ck)
    assert est_ck < 0.5 * est_plain  # the saved activations of four blocks dominate this step
    assert abs((est_plain - est_ck) / (plain - ck) - 1) < 0.03
    parts = rep.training_parts(checkpointed=blocks)
    assert parts["phase"] in ("backward", "recompute") and parts["peak"] == est_ck
    # one block checkpointed saves less than all four; an unknown name changes nothing
    one = rep.peak_training_bytes(checkpointed=frozenset({"blocks.0"}))[0]
    assert est_ck < one < est_plain
    assert rep.peak_training_bytes(checkpointed=frozenset({"nope"}))[0] == est_plain


def test_device_rules_differ_where_autograd_does() -> None:
    """GPT's attention has dropout: on the CPU SDPA's math path keeps three score matrices, on
    CUDA the flash kernel none; its dropout masks are float32 on the CPU and bytes on CUDA."""
    params = {"layers": 1, "dim": 32, "heads": 2, "vocab": 64, "block_size": 64}
    cpu = archlang.cost("specs/gpt.arch", batch=2, train=True, sizes={"T": 63}, **params)
    cuda = archlang.cost("specs/gpt.arch", batch=2, train=True, sizes={"T": 63}, device="cuda", **params)
    scores = 2 * 2 * 63 * 63  # batch x heads x T x T
    attn = "h.0.self_attn"
    rows, inner = 2 * 63, 32
    # math: copies of q, k, v (3 rows x inner), 3 score matrices, the output re-laid (rows x
    # inner); flash: the qkv output (3 rows x inner), the output and a log-sum-exp per row and head
    assert cpu.nodes[attn].saved_bytes == 4 * (4 * rows * inner + 3 * scores) + 4 * rows * 32  # + its input
    assert cpu.nodes[attn].saved_bytes - cuda.nodes[attn].saved_bytes == 4 * (3 * scores - rows * 2)
    drop = "h.0.dropout_1"  # after the MLP's first linear: [2, 63, 128]
    assert cpu.nodes[drop].saved_bytes == 4 * 2 * 63 * 128 and cuda.nodes[drop].saved_bytes == 2 * 63 * 128
    with pytest.raises(ValueError, match="device is one of cpu, cuda"):
        archlang.cost("specs/gpt.arch", device="tpu")
    # CUDA's foreach AdamW holds the square roots of every moment at once
    big = archlang.cost("specs/vit_b16.arch", "vit_ti16", train=True)
    big_cuda = archlang.cost("specs/vit_b16.arch", "vit_ti16", train=True, device="cuda")
    assert big.training_parts()["phase"] == big_cuda.training_parts()["phase"] == "step"
    assert big_cuda.training_parts()["optimizer"] > big.training_parts()["optimizer"]


def test_cli_cost_takes_a_device() -> None:
    import json

    from typer.testing import CliRunner

    from archlang.cli import app

    args = ["cost", "specs/gpt.arch", "--set", "layers=1", "--train", "--json", "--size", "T=64"]
    cpu, cuda = (CliRunner().invoke(app, [*args, "--device", d]) for d in ("cpu", "cuda"))
    assert cpu.exit_code == 0 and cuda.exit_code == 0, cpu.output + cuda.output
    a, b = json.loads(cpu.output), json.loads(cuda.output)
    assert (a["device"], b["device"]) == ("cpu", "cuda")
    assert b["saved_bytes"] < a["saved_bytes"]  # no score matrices, byte masks
    assert a == json.loads(CliRunner().invoke(app, args).output)  # cpu is the default
    bad = CliRunner().invoke(app, [*args, "--device", "tpu"])
    assert bad.exit_code != 0 and "--device is cpu or cuda" in bad.output


def test_adamw_step_by_dtype_and_device() -> None:
    """The step holds every gradient, both moments in the parameters' dtype (torch.zeros_like),
    a float32 step counter per tensor and the update's temporaries: twice the largest
    parameter on the CPU (single-tensor AdamW), all of them again on CUDA (foreach)."""
    from archlang.cost import cost_graph
    from archlang.ir.adapters import param_table

    g = archlang.graph("specs/vit_b16.arch", "vit_ti16")
    table = [p for p in param_table(g) if p.trainable]
    total, largest, tensors = sum(p.numel for p in table), max(p.numel for p in table), len(table)
    for dtype, b in (("float32", 4), ("bfloat16", 2)):
        for device in ("cpu", "cuda"):
            parts = cost_graph(g, train=True, dtype=dtype, device=device).training_parts()
            assert parts["phase"] == "step" and parts["grads"] == total * b
            temp = total * b if device == "cuda" else 2 * largest * b
            assert parts["optimizer"] == 2 * total * b + 4 * tensors + temp
            assert parts["peak"] == parts["params"] + parts["buffers"] + parts["grads"] + parts["optimizer"] \
                + parts["saved"] + parts["transient"]


LLM = {"vocab": 64, "dim": 32, "layers": 1, "heads": 4, "kv_heads": 2, "ffn": 64}


@pytest.mark.parametrize(("spec", "params"), [("llama", LLM), ("mistral", {**LLM, "window": 8})])
def test_saved_bytes_follow_memory_layouts(spec: str, params: dict) -> None:
    """Llama: attend's output is laid out as its (strided) query, so the rearrange before o_proj
    is a view and its storage is counted once; Mistral: SDPA also keeps the window mask that
    forward computes at a free length. Within 3% of saved_tensors_hooks."""
    pytest.importorskip("torch")
    truth = _memory_truth()
    import torch

    from archlang.lower.example import example_inputs

    torch.manual_seed(0)
    model = archlang.build(f"specs/{spec}.arch", **params)
    measured = truth.measure_saved(model, lambda: example_inputs(model.archlang_graph, batch=2, sizes={"T": 63}))
    est = archlang.cost(f"specs/{spec}.arch", batch=2, train=True, sizes={"T": 63}, **params).saved_bytes
    assert abs(est / measured - 1) <= 0.03, (est, measured)


def test_a_permuting_rearrange_is_a_strided_view() -> None:
    from archlang.cost.report import _rearranged_layout
    from archlang.ir import ops as O

    def rearr(lhs, rhs, sizes):
        return O.Rearrange(lhs=lhs, rhs=rhs, axes=tuple(O.RearrangeAxis(name=k, size=v) for k, v in sizes.items()))

    split = rearr((("b",), ("n",), ("h", "d")), (("b",), ("h",), ("n",), ("d",)), {"b": 2, "n": 5, "h": 4, "d": 8})
    merge = rearr((("b",), ("h",), ("n",), ("d",)), (("b",), ("n",), ("h", "d")), {"b": 2, "n": 5, "h": 4, "d": 8})
    lay = _rearranged_layout(split, None)
    assert lay == (0, 2, 1, 3)  # memory order b, n, h, d: h and n swapped
    assert _rearranged_layout(merge, lay) == (0, 1, 2)  # back to contiguous: a view
    assert _rearranged_layout(merge, None) is None  # merging h and d of a contiguous b h n d copies
