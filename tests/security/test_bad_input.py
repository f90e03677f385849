"""Bad and hostile input ends in a diagnostic or a usage error: no traceback, exit code 1 or 2,
within 2 s, and nothing written that the input asked for.

Each test reproduces one case of the trust issue with files it creates itself. The CLI runs
in-process (typer's runner), so the 2 s bound measures archlang, not the interpreter start.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archlang.cli import app

ROOT = Path(__file__).resolve().parents[2]
VIT = str(ROOT / "specs" / "vit_b16.arch")
LIMIT_S = 2.0


def archc(*args: str, expect: tuple[int, ...] = (1, 2)):
    """Run ``archc`` in-process; assert a clean failure (or ``expect``) within the time limit."""
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, list(args))
    elapsed = time.perf_counter() - t0
    out = res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"archc {' '.join(a[:80] for a in args)} raised {res.exception!r}\n{out}")
    assert "Traceback" not in out, out
    assert res.exit_code in expect, f"exit {res.exit_code}, expected {expect}:\n{out}"
    assert elapsed < LIMIT_S, f"archc {' '.join(a[:80] for a in args)} took {elapsed:.2f} s"
    return res.exit_code, out


def spec(tmp_path: Path, body: str, name: str = "net.arch") -> str:
    p = tmp_path / name
    p.write_text(body)
    return str(p)


NET = "arch net() {{\n  in x: [B, 8]\n{body}\n  out y = linear(x, 8)\n}}\n"


# ----------------------------------------------------------------------------- denial of service

DOS = {
    "squaring a symbolic size": "  d = B + 1\n  for i in 0 .. 30 { d = d * d }",
    "a product over five free sizes": "  in z: [B, S, T, U, V]\n  d = (B + S + T + U + V + 1)"
                                      + " * (B + S + T + U + V + 1)" * 6,
    "string doubling": '  s = "ab"\n' + "  s = s + s\n" * 64,
    "nested list doubling": "  l = [1]\n" + "  l = [l, l]\n" * 64,
    "list doubling": "  l = [1]\n" + "  l = l + l\n" * 64,
    "triple-nested loops": "  a = 0\n  for i in 0 .. 1000 { for j in 0 .. 1000 { for k in 0 .. 1000 { a = a + 1 } } }",
    "an integer of 5,000 digits": "  n = " + "9" * 5000,
    "a float beyond 1e308": "  f = 1e999",
    "3,000 minus signs": "  n = " + "-" * 3000 + "1",
    "3,000 nested lists": "  n = " + "[" * 3000 + "1" + "]" * 3000,
}


@pytest.mark.parametrize("case", sorted(DOS))
def test_runaway_compile_time_values_end_in_a_diagnostic(tmp_path, case) -> None:
    code, out = archc("check", spec(tmp_path, NET.format(body=DOS[case])))
    assert code == 1 and "error[" in out


def test_the_node_limit_is_reached_while_unrolling(tmp_path) -> None:
    body = ("arch net(layers: int = 65537) {\n  in x: [B, 8]\n  for i in 0 .. layers {\n"
            "    x = blocks[i].a: linear(x, 8)\n    x = blocks[i].b: linear(x, 8)\n    x = blocks[i].n: layernorm(x)\n"
            "  }\n  out y = x\n}\n")
    code, out = archc("check", spec(tmp_path, body))
    assert code == 1 and "E0406" in out and "would make about" in out and "-->" in out


@pytest.mark.parametrize("value", ["9" * 5000, "-" * 3000 + "1", "[" * 2000, "x" * 100_000])
def test_bad_set_values(value) -> None:
    code, out = archc("check", VIT, "--arch", "vit_b16", "--set", f"img={value}")
    assert code == 2 and "E0701" in out
    assert value[:200] not in out  # quoted in a window, not in full


# ----------------------------------------------------------------------------- the budget and sizes

@pytest.mark.parametrize("args", [
    ("cost", VIT, "--batch", "-3"),
    ("cost", VIT, "--batch", "0"),
    ("build", VIT, "--batch", "-100000", "--max-memory", "1KiB"),
    ("build", VIT, "--max-memory", "16"),
    ("build", VIT, "--max-memory", "lots"),
    ("build", VIT, "--dtype", "float64"),
    ("cost", VIT, "--sweep", "foo=1,2"),
    ("cost", VIT, "--sweep", "img"),
    ("cost", VIT, "--sweep", "img=0,-1"),
    ("cost", VIT, "--size", "Q=5"),
    ("cost", VIT, "--size", "S=0"),
    ("cost", VIT, "--plot", "x.png"),
])
def test_bad_arguments_are_usage_errors(args, tmp_path) -> None:
    code, out = archc(*args, "-o", str(tmp_path / "out")) if args[0] == "build" else archc(*args)
    assert code == 2 and "error" in out.lower()
    assert not (tmp_path / "out").exists()


def test_a_size_without_unit_suggests_one() -> None:
    _, out = archc("build", VIT, "--max-memory", "16")
    assert "16GiB" in out and "no unit" in out


def test_unknown_names_get_a_did_you_mean() -> None:
    _, out = archc("cost", VIT, "--sweep", "imgg=224,384")
    assert "did you mean `img`?" in out
    _, out = archc("check", VIT, "--set", "imgg=224")
    assert "did you mean" in out or "parameters:" in out


def test_default_budget_refuses_what_the_machine_cannot_hold(tmp_path) -> None:
    # iGPT-L at res 128: fused attention never holds its 17 GiB of scores per layer and example,
    # but the MLP's activations are 1.2 GiB per example: at batch 64 no machine here has the
    # ~83 GiB of a forward pass.
    code, out = archc("build", str(ROOT / "specs" / "igpt.arch"), "--arch", "igpt_l", "--batch", "64",
                      "-o", str(tmp_path))
    assert code == 1 and "E0901" in out and "of live activations" in out and "available" in out
    assert not list(tmp_path.iterdir())


def test_the_api_refuses_a_batch_below_one() -> None:
    import archlang

    for batch in (0, -10**6):
        with pytest.raises(ValueError, match="batch"):
            archlang.build(VIT, arch="vit_ti16", batch=batch, train=True, max_memory="1KiB")
    with pytest.raises(ValueError, match="no unit"):
        archlang.build(VIT, arch="vit_ti16", max_memory="16")


# ----------------------------------------------------------------------------- files and folders

@pytest.mark.parametrize("command", ["build", "cost", "ir", "render"])
def test_single_spec_commands_refuse_a_folder(command) -> None:
    code, out = archc(command, str(ROOT / "specs"))
    assert code == 2 and "folder" in out


def test_check_of_a_folder_says_how_many_files(tmp_path) -> None:
    spec(tmp_path, NET.format(body=""), "a.arch")
    spec(tmp_path, NET.format(body=""), "b.arch")
    _, out = archc("check", str(tmp_path), expect=(0,))
    assert "checked 2 spec files" in out


def test_build_into_an_existing_file(tmp_path) -> None:
    target = tmp_path / "existing"
    target.write_text("keep me")
    code, _ = archc("build", VIT, "-o", str(target))
    assert code == 2 and target.read_text() == "keep me"


def test_render_into_a_missing_folder(tmp_path) -> None:
    code, _ = archc("render", VIT, "-o", str(tmp_path / "nonexistent" / "x.dot"))
    assert code == 2 and not (tmp_path / "nonexistent").exists()


def test_missing_optional_dependencies(monkeypatch, tmp_path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "matplotlib") else real(name, *a))
    _, out = archc("build", VIT, "--compile", "-o", str(tmp_path / "o"))
    assert "pip install" in out and "torch" in out
    _, out = archc("cost", VIT, "--sweep", "img=224,384", "--plot", str(tmp_path / "x.png"))
    assert "pip install" in out and "matplotlib" in out


def test_use_with_a_very_long_module_name(tmp_path) -> None:
    code, out = archc("check", spec(tmp_path, "use " + "a" * 300 + "\n" + NET.format(body="")))
    assert code == 1 and "E0203" in out


def test_use_of_a_file_that_is_not_utf8(tmp_path) -> None:
    (tmp_path / "lib.arch").write_bytes(b"block f(x: [*, C]) {\n  return x \xff\xfe\n}\n")
    code, out = archc("check", spec(tmp_path, "use lib\n" + NET.format(body="")))
    assert code == 1 and "UTF-8" in out


def test_use_does_not_follow_a_symlink_out_of_the_spec_folder(tmp_path) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:the first line of a private file\n")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "passwd.arch").symlink_to(secret)
    code, out = archc("check", spec(tmp_path / "specs", "use passwd\n" + NET.format(body="")))
    assert code == 1 and "E0203" in out and "outside" in out
    assert "root:x" not in out and "private" not in out


def test_use_reads_only_arch_files(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("block f(x: [*, C]) { return x }\n")
    (tmp_path / "lib.arch").symlink_to(tmp_path / "notes.txt")
    code, out = archc("check", spec(tmp_path, "use lib\n" + NET.format(body="")))
    assert code == 1 and "E0203" in out


# ----------------------------------------------------------------------------- values checked at check time

@pytest.mark.parametrize("body,needle", [
    ("  in z: [B, 0, 8]\n  w = linear(z, 8)", "at least 1"),
    ("  w = layernorm(x, eps = -1e-5)", "greater than 0"),
    ("  in z: [B, 4, 8, 8]\n  w = batchnorm(z, momentum = 1.5)", "between 0 and 1"),
    ("  w = dropout(x, p = 2.0)", "between 0 and 1"),
])
def test_values_that_would_fail_at_build_fail_at_check(tmp_path, body, needle) -> None:
    code, out = archc("check", spec(tmp_path, NET.format(body=body)))
    assert code == 1 and "E0406" in out and needle in out


# ----------------------------------------------------------------------------- the parser runs no cached code

def test_parsing_writes_and_reads_no_cache(tmp_path, monkeypatch) -> None:
    """No pickle anywhere: neither an AST cache under the home folder nor Lark's in /tmp."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ARCHLANG_CACHE", str(tmp_path / "cache"))
    before = set(os.listdir(tempfile.gettempdir()))
    import archlang.syntax.parser as P

    P._parser.cache_clear()
    archc("check", VIT, expect=(0,))
    after = set(os.listdir(tempfile.gettempdir()))
    assert not any("lark" in f for f in after - before)
    assert not (tmp_path / "home").exists() and not (tmp_path / "cache").exists()


def test_no_module_of_archlang_can_unpickle_or_exec_file_contents() -> None:
    """No pickle, marshal or shelve anywhere; `exec` only in the one function that runs the
    code generated from a checked spec (archlang/lower/build.py), and Lark never caches."""
    import ast

    for path in (ROOT / "archlang").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "marshal", "shelve", "dill", "cloudpickle"} & set(names), path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval"):
                assert path.name == "build.py", f"{path}: {node.func.id}() at line {node.lineno}"
            if isinstance(node, ast.keyword) and node.arg == "cache":
                assert not (isinstance(node.value, ast.Constant) and node.value.value), f"{path}: cache=..."


def test_render_refuses_a_drawing_too_large_for_graphviz(tmp_path) -> None:
    body = ("arch big(n: int = 2000) {\n  in x: [B, 8]\n"
            "  for i in 0 .. n { x = blocks[i].fc: linear(x, 8)  x = blocks[i].g: gelu(x) }\n  out y = x\n}\n")
    code, out = archc("render", spec(tmp_path, body), "--no-collapse", "-o", str(tmp_path / "big.svg"))
    assert code == 2 and "E0704" in out and "--no-collapse" in out and not (tmp_path / "big.svg").exists()


def test_a_loop_failing_in_every_iteration_stops_early(tmp_path) -> None:
    body = "  for i in 0 .. 65536 { z = linear(x, 4, bad = 1) }"
    code, out = archc("check", spec(tmp_path, NET.format(body=body)))
    assert code == 1 and "would run about 65,5" in out


def test_checking_stops_after_100_errors(tmp_path) -> None:
    body = "\n".join(f"  z{i} = linear(x, 4, bad = {i})" for i in range(300))
    code, out = archc("check", spec(tmp_path, NET.format(body=body)))
    assert code == 1 and "101 errors found" in out and "... and 51 more not shown" in out
