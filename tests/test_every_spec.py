"""Every shipped spec checks, costs, draws, builds at a small size and runs forward and
backward. Small sizes keep this quick; the family tests check full sizes against references."""

from __future__ import annotations

from pathlib import Path

import pytest
from small_sizes import SIZES, SMALL

import archlang
from archlang.check import choose_arch, load

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.arch"))


def _arch(spec: Path) -> str:
    name, _ = choose_arch(load(spec), None)
    assert name is not None
    return name


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_checks_costs_and_draws(spec: Path) -> None:
    arch = _arch(spec)
    assert not [d for d in archlang.check(spec, arch) if d.is_error]
    text = spec.read_text()
    assert text.lstrip().startswith("#"), "a spec's header comment names its paper"
    rep = archlang.cost(spec, arch)
    assert rep.params > 0 and rep.flops > 0
    assert "digraph" in archlang.render(spec, arch).dot


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_builds_small_and_trains(spec: Path) -> None:
    torch = pytest.importorskip("torch")
    from archlang.lower.example import example_inputs

    arch = _arch(spec)
    small = SMALL.get(spec.stem, {})
    g = archlang.graph(spec, arch, **small)
    if g.param_count() > 3_000_000:
        pytest.skip(f"{spec.stem} has no small configuration here; its family test covers it")
    torch.manual_seed(0)
    model = archlang.build(spec, arch, **small)
    out = model(*example_inputs(g, batch=2, sizes=SIZES))
    outs = out if isinstance(out, dict) else {"out": out}
    sum(v.float().sum() for v in outs.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
