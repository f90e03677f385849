"""The op registry: every op has every rule, and the family modules' ops work end to end.

Takes: the op classes (:func:`archlang.ir.ops.op_classes`) and the family definitions
(:data:`archlang.ops.registry.DEFS`). Produces: failures naming an op that lacks a rule, a
family op whose example does not check, cost, draw or lower, or a registry that accepts a
broken definition. The numerical agreement of each family example with the interpreter is
in tests/test_interpret.py (``test_family_op_example_agrees_with_the_interpreter``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

import archlang
from archlang.check.shapes import SHAPE_RULES
from archlang.cost.rules import COST_RULES
from archlang.ir.graph import Graph
from archlang.ir.ops import OpBase, op_class, op_classes
from archlang.lower.rules import LOWER_RULES, Rule
from archlang.ops import FAMILIES
from archlang.ops.registry import DEFS, define
from archlang.render.rules import DRAW_RULES

ROOT = Path(__file__).resolve().parent.parent


def test_every_op_has_every_rule() -> None:
    """Shape, cost, lowering and drawing rules (the interpreter's are in test_interpret.py, which needs torch)."""
    tables = {"shape": SHAPE_RULES, "cost": COST_RULES, "lower": LOWER_RULES, "draw": DRAW_RULES}
    missing = [f"{c.__name__}: {kind}" for c in op_classes() for kind, table in tables.items() if c not in table]
    assert not missing


def test_the_families_are_found_by_listing_the_package() -> None:
    files = sorted(p.stem for p in (ROOT / "archlang" / "ops").glob("*.py") if p.stem not in ("__init__", "registry"))
    assert list(FAMILIES) == files
    assert {d.module.rsplit(".", 1)[-1] for d in DEFS.values()} <= set(FAMILIES)


@pytest.mark.parametrize("cls", list(DEFS), ids=lambda c: c.__name__)
def test_a_family_op_is_registered_by_its_tag(cls: type[OpBase]) -> None:
    tag = cls.model_fields["op"].default
    assert op_class(tag) is cls and cls in op_classes()
    assert cls.__doc__, f"{cls.__name__} needs a docstring: the language reference is built from it"


@pytest.mark.parametrize("cls", list(DEFS), ids=lambda c: c.__name__)
def test_a_family_example_checks_costs_draws_and_lowers(cls: type[OpBase], tmp_path: Path) -> None:
    d = DEFS[cls]
    spec = tmp_path / "example.arch"
    spec.write_text(d.example)
    g = archlang.graph(spec)
    assert any(type(n.op) is cls for n in g.nodes), "the example must use the op"
    rep = archlang.cost(spec, batch=2, train=True, sizes=dict(d.example_sizes))
    assert set(rep.nodes) == {n.name for n in g.nodes}  # every node costed
    look = DRAW_RULES[cls]
    node = next(n for n in g.nodes if type(n.op) is cls)
    assert look(node.op, [g.node(r.node).outputs[r.index] for r in node.inputs], node.outputs).title
    assert "digraph" in archlang.render(spec).dot
    from archlang.lower.codegen import generate

    source, _ = generate(g)
    compile(source, "example.py", "exec")  # valid Python (tests/test_interpret.py runs it against the oracle)


def test_a_graph_with_a_family_op_round_trips_through_json(tmp_path: Path) -> None:
    d = next(iter(DEFS.values()))
    spec = tmp_path / "example.arch"
    spec.write_text(d.example)
    g = archlang.graph(spec)
    text = g.model_dump_json()
    assert Graph.model_validate_json(text) == g
    bad = json.loads(text)
    bad["nodes"][1]["op"]["op"] = "no_such_op"
    with pytest.raises(ValueError, match="unknown op tag"):
        Graph.model_validate(bad)


def test_define_refuses_a_broken_definition() -> None:
    class Untagged(OpBase):
        """No tag."""

    rules = {"shape": lambda o, i: i, "cost": lambda o, i, x: None, "lower": Rule(forward=lambda c: c.x()),
             "draw": lambda o, i, x: None, "interpret": lambda c: c.x(), "example": ""}
    with pytest.raises(TypeError, match="no literal `op` tag"):
        define(Untagged, **rules)
    with pytest.raises(TypeError, match="defined twice"):
        define(next(iter(DEFS)), **rules)
    with pytest.raises(TypeError):
        define(next(iter(DEFS)), **{k: v for k, v in rules.items() if k != "draw"})  # type: ignore[arg-type]


def test_two_ops_cannot_share_a_tag() -> None:
    with pytest.raises(TypeError, match="taken by"):
        class Clash(OpBase):
            """Takes linear's tag."""

            op: Literal["linear"] = "linear"


def test_checking_and_costing_a_family_op_never_imports_torch(tmp_path: Path) -> None:
    spec = tmp_path / "example.arch"
    spec.write_text(DEFS[next(iter(DEFS))].example)
    code = ("import sys, archlang; archlang.check(sys.argv[1]); archlang.cost(sys.argv[1]); "
            "archlang.render(sys.argv[1]).dot; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code, str(spec)], check=True, timeout=120)
