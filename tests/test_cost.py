"""Cost report: the course's figures, exact params and FLOPs, formulas, sweeps, budget guard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sympy
from typer.testing import CliRunner

import archlang
from archlang.check import load
from archlang.cli import app
from archlang.cost import COST_RULES
from archlang.cost.sweep import fit_formula, growth
from archlang.ir.ops import op_classes

ROOT = Path(__file__).resolve().parent.parent

TOKENS = """
use std.nn
arch tokens(n: int = 14, dim: int = 64, heads: int = 1) {
  in x: [B, n * n, dim]
  out y = blk: transformer_block(x, heads = heads)
}
"""


def test_every_op_has_a_cost_rule() -> None:
    assert [c.__name__ for c in op_classes() if c not in COST_RULES] == []


def test_igpt_attention_is_768_gib() -> None:
    rep = archlang.cost("specs/igpt.arch", res=128, layers=48, heads=16)
    assert rep.attention_bytes == 824_633_720_832 == 768 * 2**30
    assert rep.formula("attention_bytes") == 824_633_720_832 * sympy.Symbol("B", positive=True, integer=True)


@pytest.mark.parametrize(("n", "entries", "kib"), [(14, 38_416, 150), (16, 65_536, 256)])
def test_token_grid_attention_matrix(n: int, entries: int, kib: int) -> None:
    rep = archlang.cost(TOKENS, n=n)
    (layer,) = rep.attention_layers()
    assert layer.attention_per_head == entries
    assert layer.attention_bytes == entries * 4  # one head, batch 1, fp32
    assert round(layer.attention_bytes / 1024) == kib  # 150 KiB (150.06) and 256 KiB


def test_swin_stage1_windowed_vs_global() -> None:
    rep = archlang.cost("specs/swin_t.arch")
    layer = rep.nodes["layers.0.blocks.0.attn"]
    assert layer.attention_global_per_head == 9_834_496 == 56**4
    assert layer.attention_per_head == 153_664 == 7**2 * 56 * 56
    expr, values = rep.local_formula("layers.0.blocks.0.attn")
    assert str(expr) == "B*H*M**2*W*b*h"
    assert expr.subs({sympy.Symbol(k, positive=True, integer=True): v for k, v in values.items()}) \
        == layer.attention_bytes


@pytest.mark.parametrize(("spec", "arch", "params"), [
    ("specs/vit_b16.arch", "vit_b16", 86_567_656),
    ("specs/vit_b16.arch", "vit_ti16", 5_717_416),
    ("specs/deit_s_distilled.arch", None, 22_436_432),
    ("specs/swin_t.arch", None, 28_288_354),
    ("specs/mixer_b16.arch", None, 59_880_472),
])
def test_params_equal_timm(spec: str, arch: str | None, params: int) -> None:
    rep = archlang.cost(spec, arch)
    assert rep.params == rep.trainable_params == params


@pytest.mark.parametrize(("spec", "flops"), [
    ("specs/swin_t.arch", 8_981_133_312),
    ("specs/vit_b16.arch", 35_127_656_448),
    ("specs/deit_s_distilled.arch", 9_248_280_576),
    ("specs/mixer_b16.arch", 25_203_535_872),
])
def test_flops_equal_flop_counter(spec: str, flops: int) -> None:
    """As written, the FLOPs are the published figures (every row), and so is the count of a
    build that keeps every row; the default build computes no row that no output reads (ViT's
    and DeiT's last blocks run on their class and distillation tokens), and the report follows
    it exactly."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from archlang.lower.example import example_inputs

    assert archlang.cost(spec, as_written=True).flops == flops
    rep = archlang.cost(spec)
    assert (rep.flops < flops) == ("vit" in spec or "deit" in spec)
    for model, want in ((archlang.build(spec).eval(), rep.flops),
                        (archlang.build(spec, keep_dead_rows=True).eval(), flops)):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            model(*example_inputs(model.archlang_graph, batch=1))
        assert counter.get_total_flops() == want


def test_flops_equal_flop_counter_for_every_op() -> None:
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from archlang.lower.example import example_inputs

    for spec, params in (("tests/specs/all_ops.arch", {}), ("specs/transformer.arch", {"enc_layers": 1, "dec_layers": 1})):
        model = archlang.build(spec, **params).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            model(*example_inputs(model.archlang_graph, batch=3, sizes={"S": 9, "T": 5}))
        rep = archlang.cost(spec, batch=3, sizes={"S": 9, "T": 5}, **params)
        assert counter.get_total_flops() == rep.flops, spec


def test_growth_when_the_side_doubles() -> None:
    igpt = growth(load(ROOT / "specs/igpt.arch"), "igpt", "res", 16)
    assert igpt["attention_bytes"] == 16.0
    swin = growth(load(ROOT / "specs/swin_t.arch"), "swin_t", "img", 224)
    assert swin["attention_bytes"] == 4.0
    assert swin["params"] == 1.0
    assert 3.99 < swin["flops"] <= 4.0


def test_formula_in_the_size_parameter() -> None:
    prog = load(ROOT / "specs/igpt.arch")
    per_layer = fit_formula(prog, "igpt_l", "res", "attention_bytes", node="blocks.0.attn", values=[8, 16, 24, 32, 40, 48])
    B, res = sympy.symbols("B res", positive=True, integer=True)
    assert sympy.simplify(per_layer - 64 * B * res**4) == 0  # 16 heads x 4 bytes x (res^2)^2


def test_symbolic_batch_and_sequence() -> None:
    rep = archlang.cost("specs/transformer.arch", sizes={"S": 32, "T": 16})
    f = rep.formula("attention_bytes")
    assert {str(s) for s in f.free_symbols} == {"B", "S", "T"}
    B, S, T = sympy.symbols("B S T", positive=True, integer=True)
    assert f.subs({B: 1, S: 32, T: 16}) == rep.attention_bytes


def test_training_memory_counts_optimizer_state() -> None:
    inf = archlang.cost("specs/vit_b16.arch", "vit_ti16")
    tr = archlang.cost("specs/vit_b16.arch", "vit_ti16", train=True)
    weights = tr.params * 4 + tr.trainable_params * (4 + 8)
    # the step holds every weight, gradient and moment; the end of the forward everything saved
    assert tr.peak_training_bytes()[0] >= max(weights, tr.params * 4 + tr.saved_bytes)
    assert tr.saved_bytes > 0 and inf.saved_bytes == 0


def test_cli_report_fits_100_columns_and_no_torch() -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom archlang.cli import app\n"
            "r = CliRunner().invoke(app, ['cost', 'specs/swin_t.arch', '--depth', '2'])\n"
            "assert r.exit_code == 0, r.output\nprint(r.output)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "8,981,133,312" in r.stdout and "153,664" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 100


def test_cli_json_sweep_and_plot(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["cost", "specs/swin_t.arch", "--json"])
    data = json.loads(r.output)
    assert data["flops"] == 8_981_133_312 and data["params"] == 28_288_354
    png = tmp_path / "sweep.png"
    r = CliRunner().invoke(app, ["cost", "specs/swin_t.arch", "--sweep", "img=224,448", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 1000


def test_budget_guard() -> None:
    # fused attention never holds the score matrix in inference: the weights (5.17 GiB) and live
    # activations (1.03 GiB) are what exceed the budget
    r = CliRunner().invoke(app, ["build", "specs/igpt.arch", "--arch", "igpt_l", "--max-memory", "6GiB"])
    assert r.exit_code == 1
    assert "error[E0901]" in r.output and "5.17 GiB of parameters" in r.output and "params = " in r.output
    with pytest.raises(archlang.api.BudgetError):
        archlang.build("specs/igpt.arch", "igpt_l", max_memory="6GiB")


@pytest.mark.parametrize(("spec", "arch"), [("specs/swin_t.arch", "swin_t"), ("specs/vit_b16.arch", "vit_b16")])
def test_saved_activations_match_autograd(spec: str, arch: str) -> None:
    """Training saved-activation bytes within 3% of what autograd keeps (unique storages,
    parameters excluded), at batch 2."""
    torch = pytest.importorskip("torch")
    from archlang.lower.example import example_inputs

    model = archlang.build(spec, arch).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = max(kept.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*example_inputs(model.archlang_graph, batch=2))
    estimated = archlang.cost(spec, arch, batch=2, train=True).saved_bytes
    assert abs(estimated / sum(kept.values()) - 1) < 0.03


def test_buffers_in_the_report_json_and_summary() -> None:
    """Swin-T's relative-position indices (int64) and shift masks: in the JSON, the summary's
    "buffers" row, and both peaks (parameters and buffers are resident)."""
    r = CliRunner().invoke(app, ["cost", "specs/swin_t.arch", "--json"])
    data = json.loads(r.output)
    assert data["buffer_bytes"] == 1_114_064 and data["param_bytes"] == 28_288_354 * 4
    assert sum(n["buffer_bytes"] for n in data["nodes"]) == data["buffer_bytes"]
    rep = archlang.cost("specs/swin_t.arch")
    assert rep.peak_inference_bytes()[0] > rep.param_bytes + rep.buffer_bytes
    assert rep.formula("buffer_bytes") == 1_114_064
    r = CliRunner().invoke(app, ["cost", "specs/swin_t.arch"])
    assert r.exit_code == 0 and "buffers" in r.output and "1,114,064 bytes" in r.output


def test_fit_formula_takes_a_spec_path_as_the_readme_writes_it() -> None:
    per_layer = archlang.fit_formula("specs/igpt.arch", "igpt_l", "res", "attention_bytes", node="blocks.0.attn")
    B, res = sympy.symbols("B res", positive=True, integer=True)
    assert sympy.simplify(per_layer - 64 * B * res**4) == 0
