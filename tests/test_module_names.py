"""Generated files never shadow a module Python, torch or the generated code imports, and the
import line `archc build` prints works for every shipped spec."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from archlang.check import check_spec, choose_arch, load
from archlang.cli import app
from archlang.lower.build import module_name, write

ROOT = Path(__file__).resolve().parent.parent


def test_names_that_would_shadow_get_a_suffix() -> None:
    assert module_name("swin_t") == "swin_t"
    for arch in ("ast", "torch", "json", "math", "timm", "einops", "typing", "sys", "Torch"):
        assert module_name(arch) == f"{arch}_model"


def test_build_prints_an_import_line_that_works(tmp_path) -> None:
    res = CliRunner().invoke(app, ["build", str(ROOT / "specs" / "ast.arch"), "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    line = re.search(r"`(from (\w+) import build); model = build\(\)`", res.output)
    assert line is not None and line.group(2) == "ast_model" and (tmp_path / "ast_model.py").is_file()


def test_every_shipped_spec_imports_by_its_printed_name(tmp_path) -> None:
    stems = []
    for spec in sorted((ROOT / "specs").glob("*.arch")):
        prog = load(spec)
        arch, err = choose_arch(prog, None)
        assert err is None, spec
        r = check_spec(prog, arch)
        assert r.graph is not None, spec
        stems.append(write(r.graph, tmp_path).stem)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import importlib, ast, json, math\n"
            "for stem in sys.argv[2:]:\n"
            "    m = importlib.import_module(stem); assert callable(m.build), stem\n"
            "import ast as a2; assert a2.__file__.startswith(sys.base_prefix) or 'site' not in a2.__file__\n"
            "assert hasattr(a2, 'parse'), 'the standard library ast is shadowed'\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path), *stems], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_build_dtype_is_the_written_modules_default(tmp_path) -> None:
    res = CliRunner().invoke(app, ["build", str(ROOT / "specs" / "vit_digits.arch"), "-o", str(tmp_path),
                                   "--dtype", "bfloat16"])
    assert res.exit_code == 0, res.output
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from vit_digits import build\n"
            "m = build(); assert {p.dtype for p in m.parameters()} == {torch.bfloat16}\n"
            "assert m(torch.randn(2, 1, 16, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16\n"
            "assert torch.get_default_dtype() == torch.float32\n"
            "assert {p.dtype for p in build(torch.float32).parameters()} == {torch.float32}\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
