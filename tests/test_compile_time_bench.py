"""benchmarks/compile_time.py without compiling anything: ``--help`` runs, bad arguments get a
message rather than a traceback, and the worker's result line parses, summarizes and formats into
the Markdown table (on fabricated results; nothing is timed).

Takes: the script (as a subprocess for --help and a bad argument; imported for its pure
functions). Checks: exit status, what it prints, the parsed result and the table's cells.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bench_scripts import BENCHMARKS, load_script

SCRIPT = BENCHMARKS / "compile_time.py"
ct = load_script("compile_time.py")


def _result(contender: str, compile_s: float, steady_s: float, breaks: int) -> dict:
    return {"model": "resnet50", "contender": contender, "pass": "fwd", "batch": 8, "build": "default",
            "eager_s": 0.5, "first_s": compile_s + steady_s, "steady_s": steady_s, "compile_s": compile_s,
            "graph_breaks": breaks, "graph_break_reasons": [], "graphs": 1 + breaks, "cache_files": 12,
            "threads": 2, "compile_threads": 2, "warm_compiler": True, "torch": "2.x", "timm": "1.x"}


def test_help_runs() -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--models" in r.stdout and "--repeats" in r.stdout and "TORCHINDUCTOR_CACHE_DIR" in r.stdout


@pytest.mark.parametrize("argv, message", [(["--batch", "0"], "--batch must be at least 1"),
                                           (["--models", "nope"], "invalid choice")])
def test_bad_arguments_get_a_message(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        ct.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_worker_output_parses() -> None:
    res = _result("timm", 40.0, 0.1, 0)
    out = "some library warning\n" + ct.MARKER + json.dumps(res) + "\ntrailing noise\n"
    assert ct.parse_worker_output(out) == res
    with pytest.raises(ValueError, match="no result line"):
        ct.parse_worker_output("nothing here\n")
    with pytest.raises(ValueError, match="lacks"):
        ct.parse_worker_output(ct.MARKER + json.dumps({"model": "resnet50"}))


def test_summary_and_table() -> None:
    trials = [_result("archlang", 30.0, 0.10, 1), _result("timm", 40.0, 0.12, 0),
              _result("archlang", 34.0, 0.11, 1), _result("timm", 44.0, 0.12, 0),
              _result("archlang", 32.0, 0.10, 1), _result("timm", 42.0, 0.13, 0)]
    summary = ct.summarize(trials)
    assert summary["archlang"]["compile_s"] == 32.0 and summary["timm"]["compile_s"] == 42.0
    assert summary["archlang"]["compile_range"] == (30.0, 34.0)
    cells = ct.row_cells("resnet50", "fwd", summary)
    assert len(cells) == len(ct.COLUMNS)
    row = dict(zip(ct.COLUMNS, cells, strict=True))
    assert row["archlang compile s"] == "32.0 (30.0–34.0)" and row["timm compile s"] == "42.0 (40.0–44.0)"
    assert row["ratio"] == f"{32 / 42:.2f}"
    assert row["archlang graph breaks"] == "1" and row["timm graph breaks"] == "0"
    assert row["archlang compiled ms"] == "100.0" and row["timm compiled ms"] == "120.0"
    table = ct.markdown_table([cells], "the header")
    lines = table.splitlines()
    assert lines[0] == "the header" and lines[2].startswith("| model | pass |")
    assert lines[3] == "|" + "---|" * len(ct.COLUMNS) and lines[4].startswith("| resnet50 | fwd | 32.0")


def test_one_repeat_has_no_range() -> None:
    summary = ct.summarize([_result("archlang", 30.0, 0.1, 0), _result("timm", 40.0, 0.1, 0)])
    assert ct.row_cells("resnet50", "train", summary)[1:4] == ["fwd+bwd", "30.0", "40.0"]


def test_trial_env_is_fresh(tmp_path) -> None:
    env = ct.trial_env(str(tmp_path))
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
    assert env["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "0" and env["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "0"
    assert env["TRITON_CACHE_DIR"].startswith(str(tmp_path))
