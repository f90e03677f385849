"""Golden diagnostics: each tests/golden/diagnostics/NAME.arch is checked with `archc check`
and its output (stdout + stderr + exit code) must equal NAME.expected.

The first lines of a case may hold directives:
    # args: --arch foo --set img=225      extra arguments for `archc check`
    # command: ir                         run another subcommand (default: check)
    # global: -v                          options before the subcommand (-v shows notes)

Re-bless on purpose after reviewing a change in the messages:
    ARCHLANG_BLESS=1 pytest tests/test_golden_diagnostics.py
then read `git diff tests/golden` before committing.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archlang.cli import app

GOLDEN = Path(__file__).resolve().parent / "golden" / "diagnostics"
CASES = sorted(GOLDEN.glob("*.arch"))


def run_case(case: Path) -> str:
    command, extra, glob = "check", [], []
    for line in case.read_text().splitlines():
        if line.startswith("# global:"):
            glob = shlex.split(line.removeprefix("# global:"))
        elif line.startswith("# args:"):
            extra = shlex.split(line.removeprefix("# args:"))
        elif line.startswith("# command:"):
            command = line.removeprefix("# command:").strip()
        elif not line.startswith("#"):
            break
    rel = case.relative_to(GOLDEN.parent.parent.parent)
    result = CliRunner().invoke(app, [*glob, command, str(rel), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return (f"$ archc {' '.join([*glob, command])} {rel} {' '.join(extra)}".rstrip()
            + f"\n{result.output}[exit {result.exit_code}]\n")


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case: Path) -> None:
    got = run_case(case)
    assert "Traceback" not in got
    expected = case.with_suffix(".expected")
    if os.environ.get("ARCHLANG_BLESS"):
        expected.write_text(got)
    assert expected.exists(), f"no golden file for {case.name}; run with ARCHLANG_BLESS=1"
    assert got == expected.read_text()


def test_enough_cases() -> None:
    assert len(CASES) >= 25
