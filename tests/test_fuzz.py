"""Fuzzing: bad input ends in diagnostics, never in an exception, and quickly.

A fixed-seed campaign of :mod:`tests.fuzz`: mutants of the shipped specs and the standard
library, and generated programs, each checked for every arch, then costed and drawn (DOT)
for every arch that checks. It fails on any exception that is not a diagnostic and on any
input over 2 s, printing each finding's shrunk reproducer. Longer runs:
``benchmarks/fuzz.py --seed S --mutants N --programs M``.

Also here: the unit tests of the harness (mutants are deterministic and distinct, generated
programs mostly check clean, shrinking keeps the failure) and of the render limits that
fuzzing asked for (a refused drawing and a failing ``dot`` are :class:`RenderError`).
"""

from __future__ import annotations

import contextlib
import random
import stat
import sys
from pathlib import Path

import pytest
from fuzz.generate import program
from fuzz.mutate import Mutator, join, tokenize
from fuzz.runner import SLOW_S, Case, campaign, mutants, programs, run_case, shrink, summary

from archlang.check import check_spec, load
from archlang.render import MAX_DRAWN_NODES, RenderError, render_graph

SEED = 20240601
N_MUTANTS = 400  # benchmarks/fuzz.py runs longer campaigns (2,000 and 1,000 by default)
N_PROGRAMS = 200


def test_fuzz_campaign() -> None:
    stats, findings = campaign(SEED, N_MUTANTS, N_PROGRAMS, skew=2.0, shrink_budget=120, shrink_seconds=15.0,
                               shrink_slow=False)
    print(summary(stats, findings))
    assert stats.inputs["mutant"] == N_MUTANTS and stats.inputs["program"] == N_PROGRAMS
    assert stats.archs["program", "drawn"] >= N_PROGRAMS // 2, "generated programs should mostly reach cost and render"
    assert stats.archs["mutant", "drawn"] >= N_MUTANTS // 10
    assert not findings, (f"{len(findings)} finding(s) (exceptions, or inputs over {SLOW_S:g} s):\n\n"
                          + "\n".join(f.report() for f in findings) + "\n" + summary(stats, findings))


# ----------------------------------------------------------------------------- the harness


def test_tokens_round_trip() -> None:
    for p in sorted(Path("specs").glob("*.arch")):
        text = p.read_text()
        assert join(tokenize(text)) == text


def test_mutants_are_deterministic_and_distinct() -> None:
    a = [c.text for c in mutants(7, 60)]
    assert a == [c.text for c in mutants(7, 60)]
    assert len(set(a)) == 60
    assert a != [c.text for c in mutants(8, 60)]
    originals = {p.read_text() for p in Path("specs").glob("*.arch")}
    assert not originals & set(a)


def test_many_mutants_still_parse() -> None:
    parsed = 0
    for c in mutants(3, 200):
        with contextlib.suppress(Exception):  # a crash is the campaign's business, not this test's
            parsed += load(c.source, text=c.text).main is not None
    assert parsed >= 100  # most edits keep the program parseable, so the checker sees them


def test_generated_programs_mostly_check_clean() -> None:
    clean = total = 0
    for k in range(60):
        prog = load("gen.arch", text=program(random.Random(k)))
        assert prog.ok, prog.diags
        for a in prog.main_archs():
            total += 1
            clean += check_spec(prog, a.name, []).ok
    assert clean >= 0.6 * total


def test_programs_are_deterministic() -> None:
    assert [c.text for c in programs(5, 20)] == [c.text for c in programs(5, 20)]


def test_run_case_reports_exceptions_and_shrink_keeps_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import archlang.cost  # noqa: F401 - the module; `archlang.cost` the attribute is the API function

    def boom(g, *a, **k):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(sys.modules["archlang.cost"], "cost_graph", boom)
    text = Path("specs/vit_digits.arch").read_text()
    o = run_case(Case("planted", text, "specs/vit_digits.arch"))
    assert o.status == "exception" and o.stage.startswith("cost") and "planted" in o.error
    small = shrink(text, lambda t: run_case(Case("p", t, "specs/vit_digits.arch")).signature == o.signature, 80)
    assert len(small) < len(text) / 2


def test_mutator_edits_apply() -> None:
    m = Mutator(Path("specs/vit_digits.arch").read_text(), [Path("specs/gpt.arch").read_text()])
    rng = random.Random(0)
    for _, edit in m.edits:
        out = edit(rng, list(m.toks))
        assert out is None or isinstance(join(out), str)


# ----------------------------------------------------------------------------- render limits


def _big():
    r = check_spec("specs/vit_digits.arch", "vit_digits", ["depth=300"])
    assert r.graph is not None
    return r.graph


def test_render_refuses_a_drawing_over_the_node_limit() -> None:
    g = _big()
    d = render_graph(g)  # the default depth stays under the limit
    assert d.node_count <= MAX_DRAWN_NODES
    with pytest.raises(RenderError) as e:
        render_graph(g, 3, collapse=False)
    assert e.value.code == "E0704"
    assert f"{MAX_DRAWN_NODES:,}" in e.value.message and "--depth 1" in (e.value.help or "")
    assert render_graph(g, 3, collapse=False, max_nodes=None).node_count > MAX_DRAWN_NODES


def test_save_to_a_missing_folder_is_a_render_error(tmp_path: Path) -> None:
    d = render_graph(check_spec("specs/vit_digits.arch", "vit_digits", []).graph)
    for name in ("x.dot", "x.svg"):
        with pytest.raises(RenderError) as e:
            d.save(tmp_path / "missing" / name)
        assert e.value.code == "E0706" and "does not exist" in e.value.message
    (tmp_path / "dir.dot").mkdir()
    with pytest.raises(RenderError, match="is a folder"):
        d.save(tmp_path / "dir.dot")


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for dot")
def test_a_failing_dot_is_a_render_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = render_graph(check_spec("specs/vit_digits.arch", "vit_digits", []).graph)
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    for body, what in (("echo 'Error: syntax error in line 3' >&2; exit 1", "failed (exit code 1)"),
                       ("kill -SEGV $$", "crashed (SIGSEGV)")):
        fake.write_text(f"#!/bin/sh\ncat > /dev/null\n{body}\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", str(fake.parent))
        with pytest.raises(RenderError) as e:
            d.save(tmp_path / "x.svg")
        assert e.value.code == "E0705" and what in e.value.message, e.value.message
        assert not (tmp_path / "x.svg").exists()
