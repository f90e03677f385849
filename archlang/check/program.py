"""Load a spec and everything it ``use``s into one program of definitions.

Takes: a path to a ``.arch`` file (or source text). Produces: a :class:`Program` holding
every parsed module, the blocks and archs they define, and the diagnostics of loading
(syntax errors, unknown modules, import cycles, duplicate definitions). ``use std.x``
resolves to the standard library shipped in ``archlang/stdlib``; ``use a.b`` resolves to
``a/b.arch`` beside the importing file, and only to ``.arch`` files under the main spec's
folder (symlinks followed) or the standard library. :func:`load_sources` loads a program
from texts held in memory (a saved model's) without reading the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from archlang.diagnostics import Diagnostic, DiagnosticError, Label, Sources, did_you_mean
from archlang.syntax import ast as A
from archlang.syntax.parser import parse_text

STDLIB = Path(__file__).resolve().parent.parent / "stdlib"


MAX_MODULE_NAME = 200  # characters of a `use` path; longer ones are refused before touching the disk
MAX_MODULES = 256  # files one program may read


@dataclass
class Program:
    main_file: str
    sources: Sources = field(default_factory=Sources)
    modules: dict[str, A.Module] = field(default_factory=dict)
    blocks: dict[str, A.BlockDef] = field(default_factory=dict)
    archs: dict[str, A.ArchDef | A.ArchAlias] = field(default_factory=dict)
    diags: list[Diagnostic] = field(default_factory=list)
    # importer file name -> {module named in its `use` -> the file name it resolved to}
    links: dict[str, dict[str, str]] = field(default_factory=dict)

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


class _Found:
    """A resolved `use`: the file's display name and its text (``None`` with a reason when unreadable)."""

    def __init__(self, name: str, text: str | None, error: str | None = None, base: Path | None = None):
        self.name, self.text, self.error, self.base = name, text, error, base


class _Disk:
    """Resolves `use a.b` to ``a/b.arch`` beside the importing file, and `use std.x` to the
    standard library. Only ``.arch`` files under the main spec's folder (after following
    symlinks) or under the standard library are read."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.std = STDLIB.resolve()

    def resolve(self, module: str, importer: str, base: Path | None) -> _Found | None:
        parts = module.split(".")
        assert base is not None
        p = (STDLIB if parts[0] == "std" else base).joinpath(*parts).with_suffix(".arch")
        try:
            if not p.is_file():
                return None
            real = p.resolve()
        except (OSError, RuntimeError):  # a name too long, a symlink loop
            return None
        allowed = self.std if parts[0] == "std" else self.root
        if real.suffix != ".arch" or not real.is_relative_to(allowed):
            where = "the standard library" if parts[0] == "std" else f"the spec's folder ({_display(self.root)})"
            return _Found(_display(p), None, f"`{_display(p)}` leads outside {where}; `use` reads only .arch "
                                             "files there")
        name = _display(real)
        try:
            data = real.read_bytes()
        except OSError as e:
            return _Found(name, None, f"cannot read `{name}`: {e.strerror or e}")
        try:
            return _Found(name, data.decode("utf-8"), base=real.parent)
        except UnicodeDecodeError:
            return _Found(name, None, f"`{name}` is not UTF-8 text, so it is not a spec")


class _Memory:
    """Resolves `use` from sources held in memory (a saved model's), never touching the disk."""

    def __init__(self, sources: dict[str, str], links: dict[str, dict[str, str]]):
        self.sources, self.links = sources, links

    def resolve(self, module: str, importer: str, base: Path | None) -> _Found | None:
        target = self.links.get(importer, {}).get(module)
        if target is None or target not in self.sources:
            return None
        return _Found(target, self.sources[target])


def load(source: str | Path, *, text: str | None = None) -> Program:
    """Load ``source`` (a path), or ``text`` named ``source``, with all its imports."""
    if text is None:
        path = Path(source)
        name = _display(path)
        prog = Program(main_file=name)
        try:
            data = path.read_bytes()
        except OSError as e:
            prog.diags.append(Diagnostic("E0702", f"cannot read `{source}`: {e.strerror or e}",
                                         help="check the path; specs are `.arch` files"))
            return prog
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            prog.diags.append(Diagnostic("E0702", f"`{source}` is not UTF-8 text, so it is not a spec",
                                         help="specs are UTF-8 `.arch` files"))
            return prog
        base_dir = path.resolve().parent
    else:
        name = str(source)
        prog = Program(main_file=name)
        base_dir = Path.cwd()
    _load_module(prog, _Disk(base_dir), name, text, base_dir, stack=[])
    return prog


def load_sources(main: str, sources: dict[str, str], links: dict[str, dict[str, str]]) -> Program:
    """Load a program from texts held in memory (``main`` names one of ``sources``); `use`
    follows ``links`` (importer -> module -> file name) only. Nothing is read from disk."""
    prog = Program(main_file=main)
    if main not in sources:
        prog.diags.append(Diagnostic("E0702", f"no source for the main file `{main}`"))
        return prog
    _load_module(prog, _Memory(sources, links), main, sources[main], None, stack=[])
    return prog


def _load_module(prog: Program, resolver: _Disk | _Memory, name: str, text: str, base_dir: Path | None,
                 stack: list[str]) -> None:
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
    links = prog.links.setdefault(name, {})
    for use in module.uses:
        if len(use.module) > MAX_MODULE_NAME:
            prog.diags.append(Diagnostic(
                "E0203", f"module name of {len(use.module)} characters", use.span,
                help=f"`use` names a module such as `std.vision` (at most {MAX_MODULE_NAME} characters)"))
            continue
        found = resolver.resolve(use.module, name, base_dir)
        if found is None:
            hint = did_you_mean(use.module, _stdlib_modules())
            prog.diags.append(Diagnostic(
                "E0203", f"cannot find module `{use.module}`", use.span,
                help=hint or f"standard modules: {', '.join(_stdlib_modules())}; "
                             f"`use a.b` reads a/b.arch next to this file"))
            continue
        if found.text is None:
            prog.diags.append(Diagnostic("E0203", f"cannot use module `{use.module}`", use.span,
                                         help=found.error))
            continue
        tname = found.name
        links[use.module] = tname
        if tname in stack or tname == name:
            chain = " -> ".join([*stack, name, tname])
            prog.diags.append(Diagnostic("E0602", f"import cycle: {chain}", use.span,
                                         help="move the shared blocks into a module both can use"))
            continue
        if tname in prog.modules:
            continue
        if len(prog.modules) >= MAX_MODULES:
            prog.diags.append(Diagnostic("E0203", f"more than {MAX_MODULES} modules", use.span,
                                         help="a spec and what it uses read at most this many files"))
            return
        _load_module(prog, resolver, tname, found.text, found.base, [*stack, name])
    _register(prog, module)


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
