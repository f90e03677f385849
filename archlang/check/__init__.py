"""Elaboration and checking: spec -> typed, shape-checked graph IR plus diagnostics.

Takes: a spec path or text, an arch name and parameter overrides. Produces: the
:class:`~archlang.ir.Graph` (or ``None`` when there are errors) and the diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlang.check.elaborate import choose_arch, elaborate, parse_overrides
from archlang.check.program import Program, load
from archlang.diagnostics import Diagnostic
from archlang.ir.graph import Graph

__all__ = ["CheckResult", "Program", "check_spec", "choose_arch", "elaborate", "load", "parse_overrides"]


@dataclass
class CheckResult:
    program: Program
    arch: str | None
    graph: Graph | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.graph is not None and not any(d.is_error for d in self.diagnostics)


def load_source(spec: str | Path) -> Program:
    """``spec`` is a path to a .arch file, or source text (anything containing a newline or `{`)."""
    if isinstance(spec, str) and ("\n" in spec or "{" in spec) and not _is_file(spec):
        return load("<string>", text=spec)
    return load(Path(spec))


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name too long to be a path, a NUL byte: it is text
        return False


def check_spec(spec: str | Path | Program, arch: str | None = None,
               sets: list[str] | dict[str, Any] | None = None) -> CheckResult:
    prog = spec if isinstance(spec, Program) else load_source(spec)
    diags = list(prog.diags)
    if not prog.ok:
        return CheckResult(prog, None, None, diags)
    name, err = choose_arch(prog, arch)
    if err is not None:
        return CheckResult(prog, None, None, [*diags, err])
    assert name is not None
    overrides, odiags = parse_overrides(sets or [], prog.sources)
    if odiags:
        return CheckResult(prog, name, None, [*diags, *odiags])
    graph, ediags = elaborate(prog, name, overrides)
    return CheckResult(prog, name, graph, [*diags, *ediags])
