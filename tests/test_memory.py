"""Exact sizes and memory: floor division in symbolic sizes (strided convolutions over a free
length), fitted formulas that warn off their lattice, and the memory estimates against what
torch measures (saved tensors, profiler peaks) on small specs."""

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



# tiny configurations of the specs whose saved-tensor estimates were fixed (unfolded
# neighbourhoods, explicit score matrices, a tensor kept by two ops counted once, frozen
# weights keep nothing), measured with benchmarks/memory_truth.py's method
PINNED = [
    ("resnet50", {"img": 32, "layers": [1, 1, 1, 1], "classes": 10}, 0.05),
    ("sasa_resnet50", {"img": 32, "layers": [1, 1, 1, 1], "classes": 10}, 0.05),
    ("swinv2_t", {"img": 32, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]}, 0.10),
    ("swin_t_lora", {"img": 32, "window": 4, "depths": [1, 1, 2, 1], "embed": 16, "heads": [1, 2, 4, 8]}, 0.10),
    ("mvitv2_t", {"img": 64, "embed": 16, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2]}, 0.10),
]


@pytest.mark.parametrize(("spec", "params", "tol"), PINNED, ids=[s for s, _, _ in PINNED])
def test_saved_bytes_agree_with_autograd(spec: str, params: dict, tol: float) -> None:
    pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "memory_truth.py"
    mod_spec = importlib.util.spec_from_file_location("memory_truth", path)
    assert mod_spec is not None and mod_spec.loader is not None
    truth = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(truth)
    import torch

    from archlang.lower.example import example_inputs

    torch.manual_seed(0)
    model = archlang.build(f"specs/{spec}.arch", **params)
    measured = truth.measure_saved(model, lambda: example_inputs(model.archlang_graph, batch=2))
    est = archlang.cost(f"specs/{spec}.arch", batch=2, train=True, **params).saved_bytes
    assert abs(est / measured - 1) <= tol, (est, measured)
