"""Diagnostics shared by every stage: source spans, error codes and their rendering.

Takes: a source text registry (file name -> text) and diagnostics raised by the parser,
the elaborator/checker or the CLI. Produces: rustc/Elm-style text (``error[E0301]: ...``,
``--> file:line:col``, the source line with carets, ``= note:`` and ``help:`` lines) or
JSON for editors. No stage ever lets a Python traceback reach the user for bad input:
they collect :class:`Diagnostic` objects instead.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Span(BaseModel):
    """A half-open range of a source file, with 1-based line/column of its start and end."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


# The catalogue of codes. Every diagnostic the tool emits uses one of these; docs/errors.md
# explains each. Ranges: E01 syntax, E02 names, E03 shapes, E04 types/arguments,
# E05 constraints, E06 definitions, E07 command line / usage, W05 rewrites of the spec.
CODES: dict[str, str] = {
    "E0101": "syntax error",
    "E0102": "unexpected end of file",
    "E0103": "invalid character",
    "E0201": "unknown name",
    "E0202": "unknown operation or block",
    "E0203": "unknown module in `use`",
    "E0204": "unknown argument",
    "E0205": "unknown architecture",
    "E0206": "ambiguous architecture",
    "E0207": "reserved name",
    "E0208": "checkpoint selector matches no block instance",
    "E0301": "shape mismatch",
    "E0302": "wrong rank",
    "E0303": "bad rearrange pattern",
    "E0304": "index out of range",
    "E0310": "key/value heads do not divide the query heads",
    "E0401": "wrong argument type",
    "E0402": "missing argument",
    "E0403": "too many arguments",
    "E0404": "not a compile-time value",
    "E0405": "not a tensor",
    "E0406": "bad value",
    "E0407": "wrong number of values",
    "E0501": "divisibility constraint failed",
    "E0502": "constraint failed",
    "E0503": "heads do not divide the width",
    "E0601": "recursive block",
    "E0602": "import cycle",
    "E0603": "duplicate definition",
    "E0604": "duplicate node name",
    "E0605": "missing output",
    "E0606": "block does not return",
    "E0701": "bad --set",
    "E0702": "cannot read spec",
    "E0703": "bad adapter selector",
    "E0704": "drawing too large",
    "E0705": "Graphviz failed",
    "E0706": "cannot write the output",
    "E0801": "cannot lower to PyTorch",
    "E0901": "estimated memory exceeds the budget",
    "W0501": "window clamped to the grid",
    "W0502": "grid padded to a multiple of the window",
}


ERRORS_DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def explanation(code: str) -> str | None:
    """The long explanation of ``code``: its section of docs/errors.md (or, where the docs
    are not installed, its one-line description); ``None`` for an unknown code."""
    if code not in CODES:
        return None
    try:
        text = ERRORS_DOC.read_text()
    except OSError:
        return f"{code}: {CODES[code]}\n(the long explanations are in docs/errors.md of the source tree)"
    head = f"## {code}:"
    if head not in text:
        return f"{code}: {CODES[code]}"
    section = text.split(head, 1)[1].split("\n## ", 1)[0]
    return f"{code}:{section}".rstrip()


@dataclass
class Label:
    """A secondary span with a message, printed as a ``= note:`` line."""

    message: str
    span: Span | None = None


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    help: str | None = None
    notes: list[Label] = field(default_factory=list)
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_json(self) -> dict:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "span": self.span.model_dump() if self.span else None,
            "help": self.help,
            "notes": [{"message": n.message, "span": n.span.model_dump() if n.span else None}
                      for n in self.notes],
        }


class DiagnosticError(Exception):
    """Raised to abort one construct; the caller records ``diag`` and carries on."""

    def __init__(self, diag: Diagnostic):
        super().__init__(diag.message)
        self.diag = diag


class Sources:
    """File name -> text, so diagnostics can quote source lines."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def add(self, name: str, text: str) -> None:
        self._texts[name] = text

    def items(self) -> list[tuple[str, str]]:
        """Every (file name, text) pair, in the order the files were read."""
        return list(self._texts.items())

    def get(self, name: str) -> str | None:
        return self._texts.get(name)

    def line(self, name: str, lineno: int) -> str | None:
        text = self._texts.get(name)
        if text is None:
            return None
        # Split on "\n" only, as the parser counts lines: str.splitlines() would also break at
        # form feeds and other separators and quote the wrong line.
        lines = text.split("\n")
        if 1 <= lineno <= len(lines):
            return lines[lineno - 1].removesuffix("\r")
        return None


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """Return a ``did you mean `x`?`` hint for the closest candidate, if any is close."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


MAX_QUOTED = 120  # characters of a source line quoted under a diagnostic
MAX_SHOWN = 50  # diagnostics printed; the summary line still counts them all


def render_text(diags: Sequence[Diagnostic], sources: Sources) -> str:
    """Render diagnostics in the rustc/Elm layout, followed by a summary line."""
    out: list[str] = []
    for d in diags[:MAX_SHOWN]:
        out.append(f"{d.severity.value}[{d.code}]: {d.message}")
        if d.span is not None:
            src = sources.line(d.span.file, d.span.line)
            gutter = " " * len(str(d.span.line))
            out.append(f"{gutter}--> {d.span}")
            if src is not None:
                src = "".join(ch if ch.isprintable() else " " for ch in src.replace("\t", " "))
                end = d.span.end_col if d.span.end_line == d.span.line else len(src) + 1
                col, width = d.span.col, max(1, end - d.span.col)
                if len(src) > MAX_QUOTED:  # quote a window around the span, not a whole huge line
                    lo = max(0, col - 1 - 20)
                    src = ("..." if lo else "") + src[lo:lo + MAX_QUOTED] + "..."
                    col = col - lo + (3 if lo else 0)
                    width = min(width, MAX_QUOTED - (col - 1) + 3)
                out.append(f"{gutter} |")
                out.append(f"{d.span.line} | {src}")
                out.append(f"{gutter} | {' ' * (col - 1)}{'^' * max(1, width)}")
        for n in d.notes:
            where = f" (at {n.span})" if n.span else ""
            out.append(f"  = note: {n.message}{where}")
        if d.help:
            out.append(f"help: {d.help}")
        out.append("")
    if len(diags) > MAX_SHOWN:
        out.append(f"... and {len(diags) - MAX_SHOWN} more not shown")
        out.append("")
    n_err = sum(1 for d in diags if d.is_error)
    n_warn = sum(1 for d in diags if d.severity is Severity.WARNING)
    if n_err:
        out.append(f"error: {n_err} error{'s' if n_err != 1 else ''}"
                   + (f", {n_warn} warning{'s' if n_warn != 1 else ''}" if n_warn else "") + " found")
    return "\n".join(out)


def render_json(diags: Sequence[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=2)
