"""The memory budget keeps its promise: a model whose estimated peak exceeds the budget is
refused before anything is allocated, and the estimate counts what the built model holds.

- Buffers: every spec's built model registers exactly the buffer bytes (and parameter
  bytes) that its cost report estimates, in float32 and bfloat16; a sinusoidal table of
  4,000,000 positions (2.56 GB) is refused under 100 MiB, naming its node and formula.
- Sizes: a batch or free size below 1 is a clear ValueError; the peak always names a node
  and ``budget_diagnostic`` never raises, whatever the report.
- Time: the cost report of a 100k-node graph takes well under 10 s.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

import archlang
from archlang.check import choose_arch, load
from archlang.cost import cost_graph
from archlang.cost.report import budget_diagnostic, param_and_buffer_bytes

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.arch"))
MiB = 2**20


def _every_spec_settings() -> tuple[dict[str, dict], dict[str, int]]:
    """The small configurations of tests/test_every_spec.py (one list to keep up to date)."""
    spec = importlib.util.spec_from_file_location("_every_spec_settings", ROOT / "tests" / "test_every_spec.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SMALL, mod.SIZES


SMALL, SIZES = _every_spec_settings()

SINUSOIDAL = """
use std.nn
arch long_table(d: int = 160) {
  in x: [B, 16, d]
  out y = pos: sinusoidal_pos(x, max_len = 4000000)
}
"""


def _arch(spec: Path) -> str:
    name, _ = choose_arch(load(spec), None)
    assert name is not None
    return name


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _node_of(name: str, nodes: dict) -> str:
    """The graph node a state name (``layers.0.blocks.1.attn.attn_mask``) belongs to."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in nodes:
            return ".".join(parts[:i])
    raise AssertionError(f"no node owns `{name}`")


# ----------------------------------------------------------------------------- buffers


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_buffers_and_params_equal_the_built_model_small(spec: Path) -> None:
    """Built for real at the small size of test_every_spec: buffer and parameter bytes equal
    the estimate, in float32 and after casting to bfloat16 (index tables stay int64)."""
    torch = pytest.importorskip("torch")
    arch = _arch(spec)
    small = SMALL.get(spec.stem, {})
    g = archlang.graph(spec, arch, **small)
    if g.param_count() > 3_000_000:
        pytest.skip("no small configuration; the full-size test builds it on the meta device")
    model = archlang.build(spec, arch, **small)
    for dtype, torch_dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = model.to(torch_dtype)
        rep = archlang.cost(spec, arch, dtype=dtype, sizes=SIZES, **small)
        assert _bytes(model.buffers()) == rep.buffer_bytes, dtype
        assert _bytes(model.parameters()) == rep.param_bytes, dtype
        assert param_and_buffer_bytes(rep) == rep.buffer_bytes + rep.param_bytes


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_buffers_and_params_equal_the_built_model_full_size(spec: Path) -> None:
    """At the default (full) size, built on the meta device so nothing is allocated."""
    torch = pytest.importorskip("torch")
    from archlang.lower.build import instantiate

    arch = _arch(spec)
    g = archlang.graph(spec, arch)
    with torch.device("meta"):
        model, _ = instantiate(g)
    rep = cost_graph(g)
    assert _bytes(model.buffers()) == rep.buffer_bytes
    assert _bytes(model.parameters()) == rep.param_bytes
    half = cost_graph(g, dtype="bfloat16")
    assert _bytes(model.to(torch.bfloat16).buffers()) == half.buffer_bytes


def test_buffers_per_node_for_every_op() -> None:
    """Each node's estimate is the bytes of the buffers under its module (all_ops has batch
    norm, shifted window attention and a sinusoidal table); Swin-V2 adds its coordinates."""
    pytest.importorskip("torch")
    for spec, params in (("tests/specs/all_ops.arch", {}),
                         ("specs/swinv2_t.arch", SMALL["swinv2_t"]),
                         ("specs/transformer.arch", SMALL["transformer"])):
        g = archlang.graph(spec, **params)
        model = archlang.build(spec, **params)
        built: dict[str, int] = {}
        for name, b in model.named_buffers():
            node = _node_of(name, g.by_name)
            built[node] = built.get(node, 0) + b.numel() * b.element_size()
        rep = archlang.cost(spec, **params)
        estimated = {n.name: n.buffer_bytes for n in rep.nodes.values() if n.buffer_bytes}
        assert estimated == built, spec
        assert sum(built.values()) > 0


def test_window_attention_buffers_are_index_and_mask() -> None:
    """Swin-T's first shifted block: a 49 x 49 int64 index (8 bytes whatever the dtype) and
    an 8 x 8-window mask of 49 x 49 floats (half the bytes in bfloat16)."""
    n, windows = 49, 64
    for dtype, b in (("float32", 4), ("bfloat16", 2)):
        rep = archlang.cost("specs/swin_t.arch", dtype=dtype)
        assert rep.nodes["layers.0.blocks.0.attn"].buffer_bytes == n * n * 8
        assert rep.nodes["layers.0.blocks.1.attn"].buffer_bytes == n * n * 8 + windows * n * n * b
        data = rep.to_json()
        assert data["buffer_bytes"] == rep.buffer_bytes
        assert data["param_bytes"] == rep.params * b
        assert next(x for x in data["nodes"] if x["name"] == "layers.0.blocks.1.attn")["buffer_bytes"] > 0


def test_sinusoidal_table_is_counted_and_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    rep = archlang.cost(SINUSOIDAL)
    assert rep.nodes["pos"].buffer_bytes == 4_000_000 * 160 * 4 == rep.buffer_bytes >= 2_500_000_000
    peak, at = rep.peak_inference_bytes()
    assert peak >= rep.buffer_bytes and at
    assert rep.peak_training_bytes()[0] >= rep.buffer_bytes
    assert str(rep.formula("buffer_bytes", "pos")) == "2560000000"
    diag = budget_diagnostic(rep, 100 * MiB)
    assert diag is not None and diag.code == "E0901"
    text = diag.message + " ".join(n.message for n in diag.notes)
    assert "`pos`" in text and "buffer_bytes = 2560000000" in text and "buffers" in diag.message
    assert rep.build_peak_bytes() == (2 * rep.buffer_bytes, "pos")  # float32 sines beside the table
    assert budget_diagnostic(rep, 3 * 2**30) is not None and budget_diagnostic(rep, 5 * 2**30) is None
    half = archlang.cost(SINUSOIDAL, dtype="bfloat16")
    assert half.buffer_bytes == rep.buffer_bytes // 2

    # the build path refuses before constructing anything (a construction would fail the test)
    import archlang.lower.build as build_mod

    def no_construction(*a, **k):
        raise AssertionError("the model was constructed despite the budget")

    monkeypatch.setattr(build_mod, "instantiate", no_construction)
    with pytest.raises(archlang.api.BudgetError) as err:
        archlang.build(SINUSOIDAL, max_memory="100MiB")
    assert "`pos`" in str(err.value) and "2560000000" in str(err.value)


BUILD_RSS = """
import re, sys
import torch  # noqa: F401 - imported before the first reading: its libraries are not the model
import archlang
import archlang.lower.build

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

spec = sys.argv[1]
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark starts again from now
archlang.build(spec, max_memory="64GiB")
print(status("VmHWM") - before)
"""


def test_build_peak_of_a_sinusoidal_table() -> None:
    """Constructing a 256 MB sinusoidal table needs twice the table (its float32 temporaries)."""
    est, at = archlang.cost(SINUSOIDAL.replace("4000000", "400000")).build_peak_bytes()
    assert at == "pos" and est == 2 * 400_000 * 160 * 4


@pytest.mark.slow  # a measurement of the process's memory: meaningful only on a quiet machine
def test_build_high_water_matches_the_estimate() -> None:
    """The process's resident high-water mark, reset just before the build, is about what
    build_peak_bytes says (measured at 522 MB for a 512 MB estimate)."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    spec = SINUSOIDAL.replace("4000000", "400000")
    est, _ = archlang.cost(spec).build_peak_bytes()
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/status and clear_refs")
    r = subprocess.run([sys.executable, "-c", BUILD_RSS, spec], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0 and "clear_refs" in r.stderr:
        pytest.skip("cannot reset the high-water mark here")
    assert r.returncode == 0, r.stderr
    measured = int(r.stdout.split()[-1])
    assert 0.85 * est < measured < 1.25 * est, (measured, est)


def test_budget_message_counts_every_part() -> None:
    rep = archlang.cost("specs/swin_t.arch")
    diag = budget_diagnostic(rep, 1)
    assert diag is not None
    for part in ("parameters", "buffers", "activations", "attention"):
        assert part in diag.message
    train = archlang.cost("specs/swin_t.arch", train=True, batch=64)
    diag = budget_diagnostic(train, 2**30)
    assert diag is not None and "saved for backward" in diag.message and "buffers" in diag.message


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("batch", [-3, 0, -100_000])
def test_batch_below_one_is_refused(batch: int) -> None:
    with pytest.raises(ValueError, match="batch must be at least 1"):
        archlang.cost("specs/swin_t.arch", batch=batch)
    g = archlang.graph(SINUSOIDAL)
    with pytest.raises(ValueError, match="batch must be at least 1"):
        cost_graph(g, batch=batch, train=True)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_free_size_below_one_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        archlang.cost("specs/transformer.arch", sizes={"S": bad, "T": 16})


def test_huge_batch_is_refused_or_counted() -> None:
    with pytest.raises(ValueError, match="at most"):
        archlang.cost("specs/swin_t.arch", batch=10**400)
    rep = archlang.cost("specs/swin_t.arch", batch=2**60)
    diag = budget_diagnostic(rep, 16 * 2**30)
    assert diag is not None and "layers." in " ".join(n.message for n in diag.notes)


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_budget_never_raises_and_peak_names_a_node(spec: Path) -> None:
    arch = _arch(spec)
    g = archlang.graph(spec, arch)
    for train in (False, True):
        for batch in (1, 3):
            rep = cost_graph(g, batch=batch, train=train, dtype="bfloat16" if batch == 3 else "float32")
            peak, at = rep.peak_inference_bytes()
            assert at in rep.nodes and peak >= param_and_buffer_bytes(rep)
            tr, largest = rep.peak_training_bytes()
            assert largest in rep.nodes and tr >= param_and_buffer_bytes(rep)
            for budget in (-1, 0, 1, peak - 1, peak, 2**200):
                diag = budget_diagnostic(rep, budget)
                assert (diag is None) == (budget >= rep.peak_bytes()[0])
                if diag is not None:
                    assert diag.code == "E0901" and diag.notes


def test_peak_names_a_node_when_nothing_is_positive() -> None:
    """A graph that only passes its input through: no activation bytes anywhere."""
    rep = archlang.cost("arch passthrough() {\n  in x: [B, 4]\n  out y = x\n}\n")
    peak, at = rep.peak_inference_bytes()
    assert at in rep.nodes and peak >= 0
    assert rep.peak_training_bytes()[1] in rep.nodes
    budget_diagnostic(rep, -1)  # refuses (or not) without raising


# ----------------------------------------------------------------------------- time

CHAIN = """
arch chain(n: int = 1000) {
  in x: [B, 8]
  for i in 0 .. n {
    x = blocks[i].fc: linear(x, 8)
    x = blocks[i].act: gelu(x)
    x = blocks[i].fc2: linear(x, 8)
  }
  out y = x
}
"""


def _cost_seconds(g) -> float:
    t0 = time.perf_counter()
    rep = cost_graph(g)
    rep.peak_inference_bytes()
    rep.peak_training_bytes()
    rep.to_json()
    budget_diagnostic(rep, 1)
    return time.perf_counter() - t0


def test_cost_time_is_linear_in_the_nodes() -> None:
    """5x the nodes about 5x the time (quadratic: 25x), and 10k nodes in well under a minute
    (about 1 s on a slow 2-core machine; a backstop against a hang, not a speed claim:
    ``benchmarks/scale.py`` measures the speed at 5k, 20k and 100k nodes)."""
    mid, big = archlang.graph(CHAIN, n=667), archlang.graph(CHAIN, n=3334)  # 2k and 10k nodes
    assert len(big.nodes) == 10_004
    t_mid, t_big = _cost_seconds(mid), _cost_seconds(big)
    assert t_big < 8.0, t_big
    assert t_big < 12 * t_mid + 0.5, (t_mid, t_big)
