"""The command line's conventions: --version, help text, colour only on a terminal (NO_COLOR
honoured), output wrapped to the terminal width, quiet notes, `archc explain`, and summaries
that agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archlang.cli import app
from archlang.diagnostics import CODES, explanation

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BAD = "arch net() {\n  in x: [B, 4, 8]\n  out y = layernorm(x, eps = -1.0)\n}\n"


def run(*args: str, env: dict[str, str] | None = None):
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "100", **(env or {})})
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    return res.exit_code, res.output


def test_version() -> None:
    from importlib.metadata import version

    for flag in ("--version", "-V"):
        code, out = run(flag)
        assert code == 0 and out.strip() == f"archc (archlang) {version('archlang')}"


@pytest.mark.parametrize("command", ["check", "list", "ir", "build", "cost", "render", "ops", "explain"])
def test_help_reads_like_a_posix_tool(command) -> None:
    code, out = run(command, "--help")
    assert code == 0
    assert "<bool>" not in out
    usage = out.split("Usage:")[1].split("\n")[0]
    assert "{" not in usage and "}" not in usage


def test_colour_only_when_asked_or_on_a_terminal(tmp_path) -> None:
    spec = tmp_path / "net.arch"
    spec.write_text(BAD)
    _, plain = run("check", str(spec))  # the runner is not a terminal
    assert not ANSI.search(plain) and "error[E0406]" in plain
    _, coloured = run("check", str(spec), env={"FORCE_COLOR": "1"})
    assert ANSI.search(coloured) and ANSI.sub("", coloured) == plain
    _, no_colour = run("check", str(spec), env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert no_colour == plain


@pytest.mark.parametrize("args", [("check", "specs"), ("list", "specs"), ("ops",)])
def test_lines_fit_a_100_column_terminal(args) -> None:
    code, out = run(*(str(ROOT / a) if a == "specs" else a for a in args))
    assert code == 0
    widest = max(out.splitlines(), key=len)
    assert len(widest) <= 100, widest


def test_cost_of_the_inference_build_counts_its_packed_weights() -> None:
    """``archc cost --inference``: the inference build's peak holds a packed copy of each linear
    weight (the JSON's ``packed_bytes``, and no training step); with --train it is a usage error."""
    import json

    spec = str(ROOT / "specs" / "vit_b16.arch")
    code, out = run("cost", spec, "--inference", "--json")
    plain = json.loads(run("cost", spec, "--json")[1])
    rep = json.loads(out)
    assert code == 0 and rep["inference_build"] and rep["packed_bytes"] > 0.99 * rep["param_bytes"]
    # the copies are resident; reading them, the linear layers' oneDNN scratch shrinks to a row's
    assert plain["peak_inference_bytes"] < rep["peak_inference_bytes"] <= (plain["peak_inference_bytes"]
                                                                            + rep["packed_bytes"])
    assert rep["peak_training_bytes"] is None and plain["packed_bytes"] == 0
    code, out = run("cost", spec, "--inference")
    assert code == 0 and "inference build ~" in out and "packed linear weights" in out
    code, out = run("cost", spec, "--inference", "--train")
    assert code == 2 and "eval-only" in out


def test_notes_need_verbose() -> None:
    spec = str(ROOT / "specs" / "swin_t.arch")
    _, quiet = run("check", spec)
    assert "note[" not in quiet and quiet.count("ok  ") == 4
    _, loud = run("-v", "check", spec)
    assert "note[W0501]" in loud and "in archs `swin`, `swin_t`, `swin_s`, `swin_b`" in loud


def test_explain_every_code() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    for code in CODES:
        assert f"## {code}: {CODES[code]}" in doc, f"docs/errors.md lacks a section for {code}"
        text = explanation(code)
        assert text is not None and text.startswith(f"{code}: ") and len(text) > len(code) + 20
    code, out = run("explain", "e0501")
    assert code == 0 and out.startswith("E0501: divisibility constraint failed")
    code, out = run("explain", "E0999")
    assert code == 2 and "did you mean `E0901`?" in out


def test_every_code_the_source_emits_is_catalogued() -> None:
    used = set()
    for path in (ROOT / "archlang").rglob("*.py"):
        used |= set(re.findall(r'"([EW]0[0-9]{3})"', path.read_text()))
    assert used <= set(CODES), f"codes missing from diagnostics.CODES: {sorted(used - set(CODES))}"


def test_list_shows_a_variants_body() -> None:
    code, out = run("list", str(ROOT / "specs" / "swin_t_lora.arch"))
    assert code == 0
    lora, bitfit = out.split("swin_t_bitfit")
    assert 'adapt lora(r = 8, alpha = 16, dropout = 0.0) on "layers.*.attn.q"' in lora
    assert 'adapt bitfit() on "*"' in bitfit and "lora" not in bitfit


def test_check_and_cost_agree_on_params() -> None:
    import json

    spec = str(ROOT / "specs" / "swin_t_lora.arch")
    _, out = run("check", spec, "--arch", "swin_t_lora", "--format", "json")
    checked = json.loads(out)["archs"][0]
    _, out = run("cost", spec, "--arch", "swin_t_lora", "--json")
    costed = json.loads(out)
    assert checked["params"] == costed["params"] == 28_429_666
    assert checked["trainable_params"] == costed["trainable_params"] == 910_312


def test_export_onnx_with_a_dynamic_batch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "vit.onnx"
    code, text = run("export", str(ROOT / "specs" / "vit_digits.arch"), "-o", str(out))
    assert code == 0, text
    assert out.is_file() and "dynamic batch; onnxruntime agrees with PyTorch within" in text
    diff = float(text.split("within ")[1].split()[0])
    assert diff <= 1e-4


def test_export_usage_errors(tmp_path) -> None:
    spec = str(ROOT / "specs" / "vit_digits.arch")
    assert run("export", spec, "--format", "tflite")[0] == 2
    assert run("export", spec, "-o", str(tmp_path / "missing" / "x.onnx"))[0] == 2
    assert run("export", spec, "--weights", str(tmp_path / "nothing.safetensors"))[0] == 2
    assert run("export", str(ROOT / "specs"))[0] == 2
