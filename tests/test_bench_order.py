"""benchmarks/bench_vs_timm.py without timing anything: over a full cycle of rounds every
contender runs once per round and comes right after every other one equally often (a
Williams design), for even and odd numbers of contenders; ``bench`` runs them in those
orders; bad arguments are usage errors, not tracebacks.

Takes: the script (imported for its pure functions). Checks: the orders, the calls made and the exit status of bad arguments.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from bench_scripts import load_script

bv = load_script("bench_vs_timm.py")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_each_contender_follows_each_other_equally_often(n: int) -> None:
    orders = bv.round_orders(n)
    assert len(orders) == (n if n % 2 == 0 else 2 * n)
    assert all(sorted(o) == list(range(n)) for o in orders)
    follows = Counter(pair for o in orders for pair in itertools.pairwise(o))
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    assert set(follows) == set(pairs)
    assert len(set(follows.values())) <= 1, follows  # every ordered pair equally often
    firsts = Counter(o[0] for o in orders)
    assert len(set(firsts.values())) == 1 and len(firsts) == n  # and each one first equally often


def test_plain_rotation_is_what_it_replaces() -> None:
    """The old order (A B C, B C A, C A B) put A right after C in two rounds of three, never after B."""
    rotation = [[(c + r) % 3 for c in range(3)] for r in range(3)]
    follows = Counter(pair for o in rotation for pair in itertools.pairwise(o))
    assert follows[(2, 0)] == 2 and follows[(1, 0)] == 0
    assert Counter(p for o in bv.round_orders(3) for p in itertools.pairwise(o))[(1, 0)] == 2


def test_bench_calls_in_the_design_order() -> None:
    calls: list[str] = []
    contenders = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    ticks = itertools.count()
    med = bv.bench(contenders, repeats=6, warmup=1, clock=lambda: float(next(ticks)))
    assert calls[:3] == list("abc")  # the warm-up, in insertion order
    rounds = [calls[3 + 3 * r: 6 + 3 * r] for r in range(6)]
    assert rounds == [["abc"[i] for i in o] for o in bv.round_orders(3)]
    assert med == {"a": 1.0, "b": 1.0, "c": 1.0}  # each call one tick of the fake clock


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--batch", "0"], ["--warmup", "-1"], ["--threads", "0"],
                                  ["--section", "a b"], ["--models", "nope"]])
def test_bad_arguments_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bv.main(args)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
