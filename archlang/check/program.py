"""Load a spec and everything it ``use``s into one program of definitions.

Takes: a path to a ``.arch`` file (or source text). Produces: a :class:`Program` holding
every parsed module, the blocks and archs they define, and the diagnostics of loading
(syntax errors, unknown modules, import cycles, duplicate definitions). ``use std.x``
resolves to the standard library shipped in ``archlang/stdlib``; ``use a.b`` resolves to
``a/b.arch`` beside the importing file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from archlang.diagnostics import Diagnostic, DiagnosticError, Label, Sources, did_you_mean
from archlang.syntax import ast as A
from archlang.syntax.parser import parse_text

STDLIB = Path(__file__).resolve().parent.parent / "stdlib"


@dataclass
class Program:
    main_file: str
    sources: Sources = field(default_factory=Sources)
    modules: dict[str, A.Module] = field(default_factory=dict)
    blocks: dict[str, A.BlockDef] = field(default_factory=dict)
    archs: dict[str, A.ArchDef | A.ArchAlias] = field(default_factory=dict)
    diags: list[Diagnostic] = field(default_factory=list)

    @property
    def main(self) -> A.Module | None:
        return self.modules.get(self.main_file)

    def main_archs(self) -> list[A.ArchDef | A.ArchAlias]:
        m = self.main
        return list(m.archs) if m else []

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diags)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stdlib_modules() -> list[str]:
    return sorted(f"std.{p.stem}" for p in (STDLIB / "std").glob("*.arch"))


def load(source: str | Path, *, text: str | None = None) -> Program:
    """Load ``source`` (a path), or ``text`` named ``source``, with all its imports."""
    if text is None:
        path = Path(source)
        name = _display(path)
        prog = Program(main_file=name)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            prog.diags.append(Diagnostic("E0702", f"cannot read `{source}`: {getattr(e, 'strerror', None) or e}",
                                         help="check the path; specs are `.arch` files"))
            return prog
        base_dir = path.resolve().parent
    else:
        name = str(source)
        prog = Program(main_file=name)
        base_dir = Path.cwd()
    _load_module(prog, name, text, base_dir, stack=[])
    return prog


def _load_module(prog: Program, name: str, text: str, base_dir: Path, stack: list[str]) -> None:
    prog.sources.add(name, text)
    try:
        module = parse_text(text, name)
    except DiagnosticError as e:
        prog.diags.append(e.diag)
        return
    except RecursionError:
        prog.diags.append(Diagnostic("E0101", "the spec is nested too deeply to parse", None))
        return
    prog.modules[name] = module
    for use in module.uses:
        target = _resolve(use.module, base_dir)
        if target is None:
            hint = did_you_mean(use.module, _stdlib_modules())
            prog.diags.append(Diagnostic(
                "E0203", f"cannot find module `{use.module}`", use.span,
                help=hint or f"standard modules: {', '.join(_stdlib_modules())}; "
                             f"`use a.b` reads a/b.arch next to this file"))
            continue
        tname = _display(target)
        if tname in stack or tname == name:
            chain = " -> ".join([*stack, name, tname])
            prog.diags.append(Diagnostic("E0602", f"import cycle: {chain}", use.span,
                                         help="move the shared blocks into a module both can use"))
            continue
        if tname in prog.modules:
            continue
        try:
            sub_text = target.read_text()
        except OSError as e:  # pragma: no cover - resolved paths exist
            prog.diags.append(Diagnostic("E0702", f"cannot read `{tname}`: {e}", use.span))
            continue
        _load_module(prog, tname, sub_text, target.parent, [*stack, name])
    _register(prog, module)


def _resolve(module: str, base_dir: Path) -> Path | None:
    parts = module.split(".")
    if parts[0] == "std":
        p = STDLIB.joinpath(*parts).with_suffix(".arch")
    else:
        p = base_dir.joinpath(*parts).with_suffix(".arch")
    return p if p.is_file() else None


def _register(prog: Program, module: A.Module) -> None:
    for b in module.blocks:
        _define(prog, b.name, b, prog.blocks, "block")
    for a in module.archs:
        _define(prog, a.name, a, prog.archs, "arch")


def _define(prog: Program, name: str, node, table: dict, kind: str) -> None:
    other = prog.blocks.get(name) or prog.archs.get(name)
    if other is not None:
        prog.diags.append(Diagnostic(
            "E0603", f"`{name}` is defined twice", node.span,
            notes=[Label("first defined here", other.span)],
            help=f"rename one of them; a {kind} name must be unique across a spec and the modules it uses"))
        return
    table[name] = node
