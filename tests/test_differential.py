"""Differential tests of the lowering: generated programs, the generated module against the
reference interpreter (archlang.lower.interpret).

Programs come from tests/strategies.py: well-typed specs written while tracking shapes, which
cover every primitive op and every construct of the language (blocks, labels, loops,
compile-time branches and arithmetic, broadcasting arithmetic, variants, adapters). Programs
that do not check are rejected (``assume``), so each run compares ``ARCHLANG_DIFF_EXAMPLES``
(default 70) programs that do.

- ``test_generated_module_agrees_with_the_interpreter``: built with ``archlang.build`` and
  converted to float64, the module and the interpreter fed its parameters and persistent
  buffers agree in eval and in train mode (drop rates 0): outputs within 1e-6, input and
  parameter gradients within 1e-5, measured as in tests/test_interpret.py
  (``max|got - want| / max(1, max|want|)``). Parameters are perturbed first so that zero
  biases, LoRA's B and layer scales take part.
- ``test_everything_that_checks_builds_and_runs``: anything the checker accepts lowers,
  builds (float32, the budget guard on) and runs forward in eval and train mode (drop rates
  above 0 too), and each output has the shape the checker gave it.

CI runs are derandomized (reproducible); ``ARCHLANG_DIFF_EXAMPLES=5000 ARCHLANG_DIFF_RANDOM=1
pytest tests/test_differential.py`` runs longer, random campaigns locally.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from oracle import perturb, rel_err  # noqa: E402
from strategies import Program, programs  # noqa: E402

import archlang  # noqa: E402
from archlang.check import check_spec  # noqa: E402
from archlang.check.program import load  # noqa: E402
from archlang.ir.dims import Dim  # noqa: E402
from archlang.lower.example import example_inputs  # noqa: E402
from archlang.lower.interpret import Interpreter  # noqa: E402

OUT_TOL, GRAD_TOL = 1e-6, 1e-5
EXAMPLES = int(os.environ.get("ARCHLANG_DIFF_EXAMPLES", "70"))
RANDOM = os.environ.get("ARCHLANG_DIFF_RANDOM", "") not in ("", "0")
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=not RANDOM, suppress_health_check=HEALTH,
                    database=None if not RANDOM else settings.default.database)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Toy tensors gain nothing from threads (and a busy 2-core machine loses a lot)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_DIR = tempfile.TemporaryDirectory(prefix="archlang-diff-")


def _checked(p: Program):
    """The graph of ``p``'s arch, or None when it does not check."""
    r = check_spec(load("<generated>", text=p.text), p.arch)
    return r.graph


def _write(p: Program) -> Path:
    """The spec as a file (long texts cannot be passed as strings: they are stat'ed as paths)."""
    path = Path(_DIR.name) / "gen.arch"
    path.write_text(p.text)
    return path


def _as_dict(out) -> dict[str, torch.Tensor]:
    return out if isinstance(out, dict) else {"out": out}


def compare(model: torch.nn.Module, graph, inputs: list[torch.Tensor], train: bool) -> None:
    """Assert ``model`` agrees with the interpreter in one mode (outputs and gradients)."""
    mode = "train" if train else "eval"
    oracle = Interpreter(graph, model.state_dict(keep_vars=True))
    model.train(train)
    oracle.train(train)
    xa = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    xb = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    got, want = _as_dict(model(*xa)), _as_dict(oracle(*xb))
    assert set(got) == set(want), (mode, sorted(got), sorted(want))
    for k in want:
        e = rel_err(got[k], want[k])
        assert e <= OUT_TOL, f"{mode}: output `{k}` differs by {e:.3g}"
    names = [n for n, par in model.named_parameters() if par.requires_grad]
    mine, theirs = dict(model.named_parameters()), oracle.tensors()
    leaves_a = [x for x in xa if x.requires_grad] + [mine[n] for n in names]
    leaves_b = [x for x in xb if x.requires_grad] + [theirs[n] for n in names]
    labels = [f"input {i}" for i, x in enumerate(xa) if x.requires_grad] + names
    g = torch.Generator().manual_seed(1)
    weights = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in want.items()}
    loss_a = sum((got[k] * weights[k]).sum() for k in want)
    loss_b = sum((want[k] * weights[k]).sum() for k in want)
    assert torch.is_tensor(loss_a) and torch.is_tensor(loss_b)
    assert loss_a.requires_grad == loss_b.requires_grad, f"{mode}: only one side needs gradients"
    if not leaves_a or not loss_a.requires_grad:
        return
    ga = torch.autograd.grad(loss_a, leaves_a, allow_unused=True)
    gb = torch.autograd.grad(loss_b, leaves_b, allow_unused=True)
    for label, a, b, leaf in zip(labels, ga, gb, leaves_b, strict=True):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        e = rel_err(a, b)
        assert e <= GRAD_TOL, f"{mode}: gradient of {label} differs by {e:.3g}"


def agrees(p: Program, batch: int, seq: int) -> None:
    """Build ``p`` (it checks) in float64 and assert it agrees with the interpreter."""
    batch = max(batch, 2) if p.batch2 else batch
    torch.manual_seed(0)
    model = archlang.build(_write(p), p.arch, max_memory=None).double()
    perturb(model)
    inputs = [x.double() if x.is_floating_point() else x
              for x in example_inputs(model.archlang_graph, batch=batch, sizes={"S": seq})]
    for train in (False, True):
        compare(model, model.archlang_graph, inputs, train)


def _shape(t, batch: int, seq: int) -> tuple[int, ...]:
    return tuple(int(d.subs({s: {"B": batch, "S": seq}.get(s, 8) for s in d.symbols})) if isinstance(d, Dim)
                 else d for d in t.shape)


def runs(p: Program, graph, batch: int, seq: int) -> None:
    """Build ``p`` (it checks) as ``archlang.build`` does by default and run it forward in
    both modes; every output has the shape the checker gave it."""
    batch = max(batch, 2) if p.batch2 else batch
    model = archlang.build(_write(p), p.arch)
    inputs = example_inputs(model.archlang_graph, batch=batch, sizes={"S": seq})
    want = {n.op.name: _shape(graph.type_of(n.inputs[0]), batch, seq) for n in graph.output_nodes()}
    for train in (False, True):
        model.train(train)
        with torch.no_grad():
            out = model(*inputs)
        out = out if isinstance(out, dict) else {next(iter(want)): out}
        got = {k: tuple(v.shape) for k, v in out.items()}
        assert got == want, f"{'train' if train else 'eval'}: output shapes {got}, the checker says {want}"


@_settings(EXAMPLES)
@given(programs(), st.integers(1, 3), st.integers(1, 8))
def test_generated_module_agrees_with_the_interpreter(p: Program, batch: int, seq: int) -> None:
    assume(_checked(p) is not None)
    note(p.text)
    agrees(p, batch, seq)


@_settings(max(EXAMPLES // 4, 20))
@given(programs(drop=True, max_size=10), st.integers(1, 3), st.integers(1, 8))
def test_everything_that_checks_builds_and_runs(p: Program, batch: int, seq: int) -> None:
    graph = _checked(p)
    assume(graph is not None)
    note(p.text)
    runs(p, graph, batch, seq)


def test_most_generated_programs_check() -> None:
    """The strategies track shapes well enough that most programs check (and so are tested),
    and between them they reach every primitive op."""
    seen: list[bool] = []
    ops: set[str] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=HEALTH, database=None)
    @given(programs())
    def run(p: Program) -> None:
        ok = _checked(p) is not None
        seen.append(ok)
        if ok:
            ops.update(p.ops)

    run()
    assert sum(seen) / len(seen) > 0.7, f"only {sum(seen)} of {len(seen)} generated programs check"
    from archlang.check.surface import SURFACE

    missing = sorted(set(SURFACE) - ops)
    assert not missing, f"no generated program that checks uses {missing}"
