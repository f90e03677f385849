"""The ``archc`` command line: a thin layer over :mod:`archlang.api`.

Takes: command-line arguments. Produces: reports on stdout, diagnostics on stderr, and
exit codes 0 (clean), 1 (errors in the spec) and 2 (usage errors). ``check``, ``list``,
``ir``, ``render`` and ``ops`` never import torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core

from archlang.diagnostics import Diagnostic, Severity, Sources, render_json, render_text
from archlang.ir.types import FLOAT_DTYPES
from archlang.units import human_bytes, human_count

if TYPE_CHECKING:
    from archlang.check.surface import Arg, Surface
    from archlang.ir.graph import Graph

class _Command(typer.core.TyperCommand):
    """A command whose usage line reads `archc build [OPTIONS] SPEC`, as POSIX tools write it."""

    def collect_usage_pieces(self, ctx):  # type: ignore[no-untyped-def]
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]

    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        return _flag(super().get_help_option(ctx))


class _Group(typer.core.TyperGroup):
    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        return _flag(super().get_help_option(ctx))


def _flag(opt):  # type: ignore[no-untyped-def]
    if opt is not None:
        opt.metavar = ""  # `--help` is a flag: no `<bool>` in the type column
    return opt


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="archlang: compile neural-architecture specs (.arch) to checked IR, costs, diagrams and PyTorch.")

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("archlang")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            v = "unknown"
        typer.echo(f"archc (archlang) {v}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", "-V", metavar="", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="",
                                                help="Also show notes that need no action.")] = False) -> None:
    _Out.verbose = verbose


ArchOpt = Annotated[str | None, typer.Option("--arch", "-a", metavar='NAME', help="Which arch of the file (default: the one named "
                                                                  "like the file, or the only one).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", metavar='KEY=VALUE', help="Override a parameter: --set img=384 "
                                                                      "(repeatable).")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", metavar='text|json', help="text or json.")]


def _usage(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _spec_files(path: Path) -> list[Path]:
    """The spec files of a command that takes a file or a folder (every .arch file in it)."""
    if path.is_dir():
        files = sorted(p for p in path.glob("*.arch") if p.is_file())
        if not files:
            raise _usage(f"no .arch files in {path}")
        return files
    if not path.exists():
        raise _usage(f"no such file: {path}")
    return [path]


def _one_spec(path: Path, command: str) -> Path:
    """The spec file of a command that takes exactly one."""
    if path.is_dir():
        raise _usage(f"`archc {command}` takes one spec file, and {path} is a folder; "
                     f"`archc check {path}` checks every spec in it")
    if not path.exists():
        raise _usage(f"no such file: {path}")
    return path


def _need(module: str, extra: str, what: str) -> None:
    """A usage error naming the install command when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise _usage(f"{what} needs {module}, which is not installed: pip install '{extra}'")


class _Out:
    """How this run prints: verbosity (``-v`` shows notes), colour and the terminal width."""

    verbose = False

    @staticmethod
    def colour(stream) -> bool:  # type: ignore[no-untyped-def]
        import os

        if os.environ.get("NO_COLOR"):
            return False
        if os.environ.get("FORCE_COLOR"):
            return True
        return bool(getattr(stream, "isatty", lambda: False)())

    @staticmethod
    def width() -> int:
        import shutil

        return max(40, shutil.get_terminal_size((100, 24)).columns)


def _progress(message: str):  # type: ignore[no-untyped-def]
    """A spinner on stderr while long work runs (checking a big spec, a sweep, compiling), on a
    terminal only: piped output and tests see nothing."""
    import contextlib
    import os

    if not getattr(sys.stderr, "isatty", lambda: False)():
        return contextlib.nullcontext(None)
    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR"))).status(message)


def _wrap(text: str, indent: int = 4) -> str:
    """``text`` wrapped to the terminal width, continuation lines indented."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width=_Out.width(), subsequent_indent=" " * indent,
                                    break_long_words=False, break_on_hyphens=False)) or text


_STYLES = (("error", "bold red"), ("warning", "bold yellow"), ("note", "bold cyan"), ("help:", "bold green"))


def _styled(text: str) -> str:
    """Diagnostics with ANSI colour, as rustc prints them on a terminal."""
    from rich.console import Console
    from rich.text import Text

    console = Console(force_terminal=True, color_system="standard", width=10_000, highlight=False)
    out = []
    for line in text.split("\n"):
        t = Text(line)
        stripped = line.lstrip()
        for prefix, style in _STYLES:
            if stripped.startswith(prefix):
                head = line.find(":") + 1 if prefix != "help:" else line.find("help:") + 5
                t.stylize(style, 0, head)
                if prefix != "help:":
                    t.stylize("bold", head)
                break
        else:
            if stripped.startswith("-->") or (stripped[:1].isdigit() and " | " in line) or stripped.startswith("|"):
                bar = line.find("|") + 1 if "|" in line else line.find("-->") + 3
                t.stylize("bold blue", 0, bar)
            if set(stripped.removeprefix("|").strip()) == {"^"}:
                t.stylize("bold red", line.find("^"))
            if stripped.startswith("= note:"):
                t.stylize("bold", 0, line.find(":") + 1)
        with console.capture() as cap:
            console.print(t, end="")
        out.append(cap.get())
    return "\n".join(out)


def _print_diags(diags: list[Diagnostic], sources: Sources, fmt: str) -> None:
    """Errors and warnings on stderr; notes only with ``-v`` (they need no action)."""
    if fmt == "json":
        return
    shown = [d for d in diags if _Out.verbose or d.severity is not Severity.NOTE]
    if not shown:
        return
    text = render_text(shown, sources)
    colour = _Out.colour(sys.stderr)
    typer.echo(_styled(text) if colour else text, err=True, color=colour)


def _dedupe(found: list[tuple[Diagnostic, str | None]]) -> list[Diagnostic]:
    """One copy of each diagnostic of a file's archs (they share its blocks); a warning or note
    says which archs it concerns."""
    from archlang.diagnostics import Label

    seen: dict[tuple, tuple[Diagnostic, list[str]]] = {}
    for d, arch in found:
        _, archs = seen.setdefault((d.code, d.message, str(d.span)), (d, []))
        if arch is not None and not d.is_error and arch not in archs:
            archs.append(arch)
    out = []
    for d, archs in seen.values():
        if archs:
            names = ", ".join(f"`{a}`" for a in archs)
            d = Diagnostic(d.code, d.message, d.span, d.help,
                           [*d.notes, Label(f"in arch{'s' if len(archs) > 1 else ''} {names}")], d.severity)
        out.append(d)
    return out


def _checked(spec: Path, command: str, arch: str | None, sets: list[str] | None, *, warnings: bool = False):
    """Check the one spec a command takes (a spinner on a terminal while it runs); print its
    errors (and warnings and notes with ``warnings``); exit 1 or 2 unless it gave a graph."""
    from archlang.check import check_spec

    path = _one_spec(spec, command)
    with _progress(f"checking {spec}"):
        r = check_spec(path, arch, sets or [])
    _print_diags(r.diagnostics if warnings else [d for d in r.diagnostics if d.is_error], r.program.sources, "text")
    if r.graph is None:
        raise typer.Exit(_exit_code(r.diagnostics) or 1)
    return r


def _params(g: Graph) -> tuple[int, int]:
    """All and trainable parameters, adapters included: the figures `archc cost` reports."""
    from archlang.ir.adapters import param_table

    table = param_table(g)
    return sum(p.numel for p in table), sum(p.numel for p in table if p.trainable)


def _exit_code(diags: list[Diagnostic]) -> int:
    errors = [d for d in diags if d.is_error]
    if not errors:
        return 0
    return 2 if all(d.code.startswith("E07") and d.code != "E0703" for d in errors) else 1


@app.command(cls=_Command)
def check(spec: Annotated[Path, typer.Argument(metavar="SPEC|DIR", help="A .arch file or a folder of them.")],
          arch: ArchOpt = None, set: SetOpt = None, format: FormatOpt = "text") -> None:
    """Parse, elaborate and shape-check a spec; print one summary line per arch."""
    from archlang.check import check_spec, load

    if format not in ("text", "json"):
        raise _usage(f"--format is text or json, not {format}")
    all_diags: list[Diagnostic] = []
    report = []
    files = _spec_files(spec)
    for f in files:
        prog = load(f)
        names = [arch] if arch else [a.name for a in prog.main_archs()] or [None]
        found: list[tuple[Diagnostic, str | None]] = []
        for name in names:
            r = check_spec(prog, name, set or [])
            found.extend((d, r.arch) for d in r.diagnostics)
            if r.graph is not None:
                g = r.graph
                params, trainable = _params(g)
                entry = {"file": str(f), "arch": g.arch, "ok": True, "params": params, "trainable_params": trainable,
                         "nodes": len(g.nodes),
                         "inputs": {n.op.name: str(n.outputs[0]) for n in g.input_nodes()},
                         "outputs": {n.op.name: str(g.type_of(n.inputs[0])) for n in g.output_nodes()}}
                report.append(entry)
                if format == "text":
                    ins = ", ".join(f"{k}: {v}" for k, v in entry["inputs"].items())
                    outs = ", ".join(f"{k}: {v}" for k, v in entry["outputs"].items())
                    typer.echo(_wrap(f"ok  {g.arch:<20} in {ins} -> out {outs}  ({len(g.nodes)} nodes, "
                                     f"{human_count(params, sep='')} params)", indent=24))
            elif r.arch is not None:
                report.append({"file": str(f), "arch": r.arch, "ok": False})
        diags = _dedupe(found)
        if format == "text":
            _print_diags(diags, prog.sources, format)
        all_diags.extend(diags)
    if format == "json":
        typer.echo(json.dumps({"archs": report, "diagnostics": json.loads(render_json(all_diags))}, indent=2))
    elif spec.is_dir():
        typer.echo(f"checked {len(files)} spec file{'s' if len(files) != 1 else ''} in {spec}", err=True)
    raise typer.Exit(_exit_code(all_diags))


@app.command("list", cls=_Command)
def list_(spec: Annotated[Path, typer.Argument(metavar="SPEC|DIR", help="A .arch file or a folder of them.")]) -> None:
    """List the archs each spec defines, with their parameters and defaults."""
    from archlang.api import arch_signatures
    from archlang.check import load

    code = 0
    for f in _spec_files(spec):
        prog = load(f)
        if not prog.ok:
            _print_diags(prog.diags, prog.sources, "text")
            code = 1
            continue
        typer.echo(f"{f}:")
        for name, params, body in arch_signatures(prog, bodies=True):
            typer.echo(_wrap(f"  {name}({', '.join(params)})", indent=6))
            for line in body:
                typer.echo(_wrap(f"      {line}", indent=8))
    raise typer.Exit(code)


@app.command(cls=_Command)
def ir(spec: Annotated[Path, typer.Argument(metavar="SPEC", help="A .arch file.")], arch: ArchOpt = None, set: SetOpt = None) -> None:
    """Print the elaborated IR of one arch as JSON."""

    r = _checked(spec, "ir", arch, set)
    typer.echo(r.graph.model_dump_json(indent=1))


@app.command(cls=_Command)
def build(spec: Annotated[Path, typer.Argument(metavar="SPEC", help="A .arch file.")], arch: ArchOpt = None, set: SetOpt = None,
          out: Annotated[Path, typer.Option("--out", "-o", metavar='DIR', help="Output folder.")] = Path("build"),
          compile: Annotated[bool, typer.Option("--compile", metavar="", help="Also check that torch.compile(fullgraph=True) "
                                                               "compiles the model (takes a while).")] = False,
          max_memory: Annotated[str, typer.Option("--max-memory", metavar='SIZE', help="Refuse the model if its estimated peak "
                                                  "memory exceeds this, e.g. 16GiB; `auto` (the default) is the "
                                                  "memory available now, `off` is no limit.")] = "auto",
          batch: Annotated[int, typer.Option("--batch", "-b", metavar='N', min=1, help="Batch size for the cost report and "
                                                                          "--max-memory.")] = 1,
          train: Annotated[bool, typer.Option("--train", metavar="", help="Budget a training step, not inference: "
                                              "activation-checkpoint the fewest block FLOPs that make it fit.")] = False,
          inference: Annotated[bool, typer.Option("--inference", metavar="", help="Also write build_inference(): the "
                                                  "model with BatchNorm folded into convs, LoRA merged, dropout "
                                                  "removed, attention biases precomputed (eval only; loads the "
                                                  "default state_dict).")] = False,
          dtype: Annotated[str, typer.Option("--dtype", metavar='DTYPE', help="float32, bfloat16 or float16: the dtype of the "
                                                             "model, the cost report and --max-memory.")] = "float32",
          attention: Annotated[str, typer.Option("--attention", metavar="auto|sdpa|flex", help="Lowering of `attend`: "
                                                 "SDPA, FlexAttention, or auto (archlang.ops.attention).")] = "auto",
          compile_regions: Annotated[bool, typer.Option(
              "--compile-regions", metavar="", help="Mark the outermost repeated blocks that can share code "
              "@torch.compiler.nested_compile_region: torch.compile compiles one instance and reuses it for "
              "the ones alike (faster compiles, no fusion across blocks).")] = False,
          keep_dead_rows: Annotated[bool, typer.Option(
              "--keep-dead-rows", metavar="", help="Compute every row the spec writes, also those no output "
              "reads (by default a ViT's last block runs on its class token alone), as timm's models do.")] = False,
          ) -> None:
    """Generate a standalone PyTorch module, DIR/<arch>.py, with <arch>.cost.json beside it.

    With --train, the block instances to activation-checkpoint so that the training step's
    estimated peak fits --max-memory are planned (least recomputation) and written into the
    module; the plan is printed."""
    from archlang.api import BudgetError, _plan_budget, budget_bytes, planned_graph
    from archlang.cost import cost_graph

    if dtype not in FLOAT_DTYPES:
        raise _usage(f"--dtype is {', '.join(FLOAT_DTYPES)}, not {dtype}")
    from archlang.ops.attention import LOWERINGS, attention_lowering

    if attention not in LOWERINGS:
        raise _usage(f"--attention is {', '.join(LOWERINGS)}, not {attention}")
    try:
        budget_bytes(max_memory)
    except ValueError as e:
        raise _usage(f"--max-memory: {str(e).removeprefix('max_memory: ')}") from None
    if out.exists() and not out.is_dir():
        raise _usage(f"--out {out} is a file; give a folder for the generated module")
    if compile:
        _need("torch", ".[torch]", "--compile")
    r = _checked(spec, "build", arch, set, warnings=True)
    g = r.graph
    try:
        rep, plan = _plan_budget(g, max_memory, batch=batch, train=train, dtype=dtype, sources=r.program.sources,
                                 inference=inference and not train, as_written=keep_dead_rows)
    except BudgetError as e:
        _print_diags(e.diagnostics, r.program.sources, "text")
        raise typer.Exit(1) from None
    if rep is None:  # --max-memory off: the report is still written
        rep = cost_graph(g, batch=batch, train=train, dtype=dtype, inference_build=inference and not train,
                         as_written=keep_dead_rows)
    from archlang.lower.codegen import compile_regions as regions
    from archlang.lower.codegen import dead_rows, generate
    from archlang.lower.rules import LoweringError

    try:
        with attention_lowering(attention), regions(compile_regions), dead_rows(not keep_dead_rows):
            source, cls_name = generate(planned_graph(g, plan), dtype=dtype)
    except LoweringError as e:
        typer.echo(f"error[E0801]: cannot lower `{g.arch}` to PyTorch: {e}", err=True)
        raise typer.Exit(1) from None
    if inference:
        from archlang.lower.inference import inference_source

        source = inference_source(source, g, cls_name)
    from archlang.lower.build import module_name

    stem = module_name(g.arch)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{stem}.py"
        path.write_text(source)
        cost_path = out / f"{g.arch}.cost.json"
        cost_path.write_text(rep.json())
    except OSError as e:
        raise _usage(f"cannot write to {out}: {e.strerror or e}") from None
    ins = ", ".join(f"{n.op.name}: {n.outputs[0]}" for n in g.input_nodes())
    outs = ", ".join(f"{n.op.name}: {g.type_of(n.inputs[0])}" for n in g.output_nodes())
    params, trainable = _params(g)
    typer.echo(f"{g.arch}  ({human_count(params, sep='')} params, {params:,}"
               + (f"; {trainable:,} trainable)" if trainable != params else ")"))
    typer.echo(f"  in   {ins}")
    typer.echo(f"  out  {outs}")
    entry = "build_inference" if inference else "build"
    typer.echo(f"  wrote {path}  (class {cls_name}; `from {stem} import {entry}; model = {entry}()`)")
    typer.echo(f"  wrote {cost_path}  ({human_count(rep.flops, 'FLOP')}, peak ~{human_bytes(rep.peak_bytes()[0])} "
               f"at batch {batch})")
    if plan is not None and (plan.blocks or plan.budget is not None):
        typer.echo("  " + plan.summary().replace("\n", "\n  "))
    _write_diagram(g, out)
    if compile:
        _compile_check(g, source)
    raise typer.Exit(0)


def _write_diagram(g: Graph, out: Path) -> None:
    """Write DIR/<arch>.svg beside the module; a missing `dot` (or any drawing problem) never fails the build."""
    try:
        from archlang.render import INSTALL_HINT, dot_available, render_graph

        diagram = render_graph(g)
        if not dot_available():
            path = diagram.save(out / f"{g.arch}.dot")
            typer.echo(f"  wrote {path}  (no SVG: {INSTALL_HINT})")
            return
        path = diagram.save(out / f"{g.arch}.svg")
        typer.echo(f"  wrote {path}  (diagram, depth {diagram.depth}; `archc render` for others)")
    except Exception as e:  # the diagram is a by-product of the build
        typer.echo(f"  no diagram: {type(e).__name__}: {e}")


def _compile_check(g, source: str) -> None:
    """Compile the model with ``torch.compile(fullgraph=True)`` and run it once, saying so
    first (it takes a while); torch's own log lines are kept unless compiling fails."""
    import contextlib
    import io
    import time

    typer.echo("  compiling with torch.compile(fullgraph=True) (about a minute for a full-size model) ...")
    log = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            import torch

            from archlang.lower.build import load_source
            from archlang.lower.example import example_inputs

            module = load_source(source, g.arch)
            model = module.build().eval()
            inputs = example_inputs(g, batch=1)
            compiled = torch.compile(model, fullgraph=True)
            with torch.no_grad():
                compiled(*inputs)
    except Exception as e:  # a graph break or a compiler error: say what torch said
        typer.echo(log.getvalue()[-4000:], err=True)
        typer.echo(f"error[E0801]: torch.compile(fullgraph=True) failed: {type(e).__name__}: {str(e)[:500]}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"  torch.compile(fullgraph=True): ok, no graph breaks ({time.perf_counter() - t0:.1f} s)")


def _parse_sizes(items: list[str] | None) -> dict[str, int]:
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        v = v.strip()
        if not k.strip().isidentifier() or not v.isdigit() or len(v) > 18 or int(v) < 1:
            raise _usage(f"--size takes NAME=INT with INT at least 1, e.g. --size S=128 (got `{it[:60]}`)")
        out[k.strip()] = int(v)
    return out


def _parse_sweep(sweep: str, params: list[str]) -> tuple[str, list[int]]:
    from archlang.diagnostics import did_you_mean

    param, eq, vals = sweep.partition("=")
    param = param.strip()
    if not eq or not vals.strip():
        raise _usage(f"--sweep takes PARAM=INT,INT,..., e.g. --sweep img=224,384 (got `{sweep[:60]}`)")
    if param not in params:
        hint = did_you_mean(param, params)
        raise _usage(f"--sweep: the arch has no parameter `{param[:40]}`"
                     + (f"; {hint}" if hint else f" (parameters: {', '.join(params)})"))
    items = [v.strip() for v in vals.split(",")]
    if len(items) > 64 or not all(v.isdigit() and len(v) <= 18 and int(v) >= 1 for v in items):
        raise _usage(f"--sweep takes up to 64 positive integers, e.g. --sweep {param}=224,384 (got `{sweep[:60]}`)")
    return param, [int(v) for v in items]


@app.command(cls=_Command)
def cost(spec: Annotated[Path, typer.Argument(metavar="SPEC", help="A .arch file.")], arch: ArchOpt = None, set: SetOpt = None,
         batch: Annotated[int, typer.Option("--batch", "-b", metavar='N', min=1, help="Batch size.")] = 1,
         dtype: Annotated[str, typer.Option("--dtype", metavar='DTYPE', help="float32, bfloat16 or float16.")] = "float32",
         train: Annotated[bool, typer.Option("--train", metavar="", help="Count a training step (saved activations, "
                                                             "gradients, AdamW state).")] = False,
         depth: Annotated[int, typer.Option("--depth", "-d", metavar='N', help="Levels of the hierarchy to show.")] = 1,
         size: Annotated[list[str] | None, typer.Option("--size", metavar='NAME=N', help="Value of a free size, e.g. S=128.")] = None,
         sweep: Annotated[str | None, typer.Option("--sweep", metavar='PARAM=V1,V2,...', help="Vary a parameter: img=224,384,512.")] = None,
         plot: Annotated[Path | None, typer.Option("--plot", metavar='FILE', help="With --sweep: draw curves to FILE.png|svg.")] = None,
         as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the report as JSON.")] = False,
         device: Annotated[str, typer.Option("--device", metavar="cpu|cuda", help="Saved-tensor and optimizer "
                                             "rules of this device (docs/memory.md).")] = "cpu",
         inference: Annotated[bool, typer.Option("--inference", metavar="", help="Cost the inference build "
                                                 "(its linear layers' packed weights counted).")] = False,
         as_written: Annotated[bool, typer.Option("--as-written", metavar="", help="Count every row the spec "
                                                  "writes, also those no output reads, which the build leaves out "
                                                  "(as timm's models compute them and papers count them).")] = False,
         ) -> None:
    """Cost report before training: params, FLOPs, activation and attention memory, formulas."""
    from rich.console import Console

    from archlang.cost import cost_graph
    from archlang.cost.sweep import growth as growth_fn
    from archlang.cost.sweep import plot as plot_fn
    from archlang.cost.sweep import size_param
    from archlang.cost.sweep import sweep as sweep_fn
    from archlang.cost.view import summary, sweep_table, table

    if dtype not in FLOAT_DTYPES:
        raise _usage(f"--dtype is {', '.join(FLOAT_DTYPES)}, not {dtype}")
    if device not in ("cpu", "cuda"):
        raise _usage(f"--device is cpu or cuda, not {device}")
    if plot and not sweep:
        raise _usage("--plot draws a sweep; add --sweep PARAM=V1,V2,...")
    if inference and train:
        raise _usage("--inference costs the eval-only inference build: drop --train, or --inference")
    if plot:
        _need("matplotlib", "matplotlib", "--plot")
        if plot.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise _usage(f"--plot writes .png, .svg or .pdf, not {plot.name}")
        if not plot.parent.is_dir():
            raise _usage(f"--plot: no folder {plot.parent}")
    sizes = _parse_sizes(size)
    r = _checked(spec, "cost", arch, set)
    g = r.graph
    free = sorted({s_ for n in g.nodes for t in n.outputs for d in t.shape if not isinstance(d, int)
                   for s_ in d.symbols} - {"B"})
    for k in sizes:
        if k not in free:
            from archlang.diagnostics import did_you_mean

            hint = did_you_mean(k, free)
            raise _usage(f"--size: `{g.arch}` has no free size `{k}`"
                         + (f"; {hint}" if hint else f" (its free sizes: {', '.join(free) or 'none but B'}; "
                                                     "the batch is --batch)"))
    rep = cost_graph(g, batch=batch, dtype=dtype, train=train, sizes=sizes, device=device, inference_build=inference,
                     as_written=as_written)
    console = Console(width=100)
    kw = dict(batch=batch, dtype=dtype, train=train, sizes=sizes, device=device, inference_build=inference,
              as_written=as_written)
    overrides = dict(a.split("=", 1) for a in (set or []))
    if sweep:
        param, values = _parse_sweep(sweep, [p.name for p in g.params])
        try:
            rows = []
            with _progress(f"sweeping {param}") as status:
                for i, v in enumerate(values):
                    if status is not None:
                        status.update(f"sweeping {param}: {param}={v} ({i + 1} of {len(values)})")
                    rows += sweep_fn(r.program, g.arch, param, [v], overrides, **kw)
        except ValueError as e:  # a value of the sweep that does not check: its diagnostics
            typer.echo(f"--sweep {param}: a value does not check:\n{e}", err=True)
            raise typer.Exit(1) from None
        if as_json:
            typer.echo(json.dumps([{"value": v, **{k: x for k, x in rep_.to_json().items() if k != "nodes"}}
                                   for v, rep_ in rows], indent=1))
        else:
            console.print(sweep_table(rows, param))
        if plot:
            typer.echo(f"wrote {plot_fn(rows, param, plot)}")
        raise typer.Exit(0)
    if as_json:
        typer.echo(rep.json())
        raise typer.Exit(0)
    console.print(table(rep, depth))
    sp = size_param({p.name: p.value for p in g.params})
    try:
        gr = growth_fn(r.program, g.arch, sp, g.param(sp), overrides, base=rep, **kw) if sp else None
    except ValueError:  # twice the size does not check (a window that no longer divides...): no growth line
        gr = None
    console.print(summary(rep, gr, sp))
    if not as_written:
        written = cost_graph(g, **kw | {"as_written": True})
        if written.flops != rep.flops:
            from archlang.units import human_count

            console.print(f"The build leaves out {human_count(written.flops - rep.flops, 'FLOP')} that no output "
                          f"reads (rows nothing uses); as written (--as-written, as timm computes it): "
                          f"{human_count(written.flops, 'FLOP')}.")
    raise typer.Exit(0)


@app.command(cls=_Command)
def render(spec: Annotated[Path, typer.Argument(metavar="SPEC", help="A .arch file.")], arch: ArchOpt = None, set: SetOpt = None,
           out: Annotated[Path | None, typer.Option("--out", "-o", metavar='FILE', help="FILE.svg, .png, .pdf or .dot "
                                                    "(default: <arch>.svg in the current folder).")] = None,
           depth: Annotated[int | None, typer.Option("--depth", "-d", metavar='N', min=1, help=(
               "Levels of the name hierarchy drawn open: 1 shows the top level (Swin-T: patch embedding, "
               "four stages, head) with groups as boxes; each level more opens them (2: a stage's blocks, "
               "3: a block's ops). Default: the deepest level whose drawing is at most 12 nodes tall, so it "
               "fits one screen (Swin-T, ViT-B/16, MLP-Mixer: 1; the Transformer: 2)."))] = None,
           cost: Annotated[bool, typer.Option("--cost", metavar="", help="Colour nodes by their share of FLOPs "
                                                             "(see --cost-by) and annotate params.")] = False,
           cost_by: Annotated[str, typer.Option("--cost-by", metavar='flops|memory|params', help="With --cost: flops, memory (activations) "
                                                                  "or params.")] = "flops",
           no_collapse: Annotated[bool, typer.Option("--no-collapse", metavar="", help="Draw every instance of repeated "
                                                                           "blocks (no ×N boxes).")] = False,
           dropout: Annotated[bool, typer.Option("--dropout", metavar="", help="Also draw dropout and drop-path nodes "
                                                                   "(identities at inference).")] = False,
           dpi: Annotated[int | None, typer.Option("--dpi", metavar='N', min=1, help="Resolution of a PNG "
                                                                         "(Graphviz's default: 96).")] = None
           ) -> None:
    """Draw the architecture from its IR: clusters for stages and blocks, ×N for repeats, shapes on edges."""
    from archlang.render import INSTALL_HINT, dot_available, render_graph
    from archlang.render.diagram import COST_METRICS, FORMATS

    if cost_by not in COST_METRICS:
        raise _usage(f"--cost-by is flops, memory or params, not {cost_by}")
    if out is not None and out.suffix.lower() not in FORMATS:
        raise _usage(f"cannot tell the format of {out}: use .svg, .png, .pdf or .dot")
    if out is not None and not out.parent.is_dir():
        raise _usage(f"--out: no folder {out.parent}")
    if out is not None and out.is_dir():
        raise _usage(f"--out {out} is a folder; give a file such as {out / 'model.svg'}")
    r = _checked(spec, "render", arch, set)
    g = r.graph
    from archlang.render import RenderError

    target = out if out is not None else Path(f"{g.arch}.svg")
    try:
        diagram = render_graph(g, depth, cost=cost_by if cost else False, collapse=not no_collapse, dropout=dropout)
        if target.suffix.lower() not in (".dot", ".gv") and not dot_available():
            path = diagram.save(target.with_suffix(".dot"))
            typer.echo(f"wrote {path} (DOT only): {INSTALL_HINT}")
            raise typer.Exit(0)
        path = diagram.save(target, dpi=dpi)
    except RenderError as e:
        d = Diagnostic(e.code, e.message, None, e.help)
        _print_diags([d], r.program.sources, "text")
        raise typer.Exit(2 if e.code in ("E0704", "E0706") else 1) from None
    typer.echo(f"wrote {path}  ({g.arch}, depth {diagram.depth} of {diagram.max_depth}, {diagram.node_count} nodes)")
    raise typer.Exit(0)


@app.command(cls=_Command)
def export(spec: Annotated[Path, typer.Argument(metavar="SPEC", help="A .arch file.")], arch: ArchOpt = None,
           set: SetOpt = None,
           format: Annotated[str, typer.Option("--format", "-f", metavar="onnx|exported-program",
                                               help="ONNX (checked with onnxruntime) or a torch.export program "
                                                    "(.pt2).")] = "onnx",
           out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FILE", help="Output file (default: "
                                                    "<arch>.onnx or <arch>.pt2).")] = None,
           dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--static-batch", metavar="",
                                                       help="Make the batch axis dynamic.")] = True,
           batch: Annotated[int, typer.Option("--batch", "-b", min=1, metavar="N",
                                              help="Example batch size to trace at.")] = 2,
           weights: Annotated[Path | None, typer.Option("--weights", "-w", metavar="FILE",
                                                        help="A file written by archlang.save to export with "
                                                             "its weights (default: fresh initial weights).")] = None,
           ) -> None:
    """Export the model with a dynamic batch (ONNX or torch.export), and verify it at two batch sizes."""
    from archlang.api import BudgetError, _check_budget

    if format not in ("onnx", "exported-program"):
        raise _usage(f"--format is onnx or exported-program, not {format}")
    _need("torch", ".[torch]", "archc export")
    if format == "onnx":
        _need("onnx", "onnx onnxruntime", "--format onnx")
        _need("onnxruntime", "onnx onnxruntime", "--format onnx")
    if out is not None and not out.parent.is_dir():
        raise _usage(f"--out: no folder {out.parent}")
    if weights is not None and not weights.is_file():
        raise _usage(f"--weights: no such file {weights}")
    r = _checked(spec, "export", arch, set)
    g = r.graph
    try:
        _check_budget(g, "auto", batch=max(batch, 3), sources=r.program.sources)
    except BudgetError as e:
        _print_diags(e.diagnostics, r.program.sources, "text")
        raise typer.Exit(1) from None
    from archlang.lower.build import instantiate
    from archlang.lower.export import ExportError, export_onnx, export_program, verify_onnx, verify_program

    if weights is not None:
        import archlang

        try:
            model = archlang.load(weights)
        except ValueError as e:
            typer.echo(f"error: cannot load {weights}: {e}", err=True)
            raise typer.Exit(1) from None
        if model.archlang_graph.arch != g.arch:
            raise _usage(f"--weights holds `{model.archlang_graph.arch}`, not `{g.arch}`")
    else:
        model, _ = instantiate(g)
        model.archlang_graph = g
    model.eval()
    batches = (1, batch + 1) if dynamic_batch else (batch,)
    try:
        if format == "onnx":
            path = export_onnx(model, out or Path(f"{g.arch}.onnx"), batch=batch, dynamic_batch=dynamic_batch)
            diff = verify_onnx(path, model, batches=batches)
            what = "onnxruntime"
        else:
            import torch

            program = export_program(model, batch=max(batch, 2), dynamic_batch=dynamic_batch)
            diff = verify_program(program, model, batches=batches)
            path = out or Path(f"{g.arch}.pt2")
            torch.export.save(program, str(path))
            what = "the exported program"
    except ExportError as e:
        typer.echo(f"error[E0801]: {e}", err=True)
        raise typer.Exit(1) from None
    except OSError as e:
        raise _usage(f"cannot write {out}: {e.strerror or e}") from None
    shown = ", ".join(str(b) for b in batches)
    typer.echo(f"wrote {path}  ({g.arch}, {'dynamic' if dynamic_batch else 'static'} batch; {what} agrees with "
               f"PyTorch within {diff:.1e} at batch {shown})")
    if diff > 1e-4:
        typer.echo(f"error[E0801]: {what} differs from PyTorch by {diff:.2e} (more than 1e-4)", err=True)
        raise typer.Exit(1)
    raise typer.Exit(0)


def _op_family(s: Surface) -> str:
    """The module that declares an op: ``archlang.ops.<family>``, or "built in" for the ops whose
    rules live in the per-stage tables (their signature is in archlang.check.surface)."""
    module = getattr(s.build, "__module__", None) or ""
    return module if module.startswith("archlang.ops.") else "built in"


def _op_arg(a: Arg) -> str:
    """``name``, ``name=value``, or for an optional argument that no value of the language
    stands for (None inside): ``name=<what it defaults to>`` from its doc, else ``[name]``."""
    from archlang.check.surface import REQUIRED

    if a.default is REQUIRED:
        return a.name
    if a.default is None:
        return f"{a.name}=<{a.doc}>" if a.doc else f"[{a.name}]"
    return f"{a.name}={_lit(a.default)}"


@app.command(cls=_Command)
def ops(family: Annotated[str | None, typer.Option(
        "--family", "-f", metavar="NAME", help="Only the ops of one family module (`attention` for "
        "archlang.ops.attention), or `built` for the built-in ones.")] = None) -> None:
    """List the primitive operations: signature, declaring module, doc. `[name]` is an optional
    argument with no default value."""
    import archlang.ops  # noqa: F401 - the family modules register their ops when imported
    from archlang.check.surface import SURFACE

    names = sorted(SURFACE)
    if family is not None:
        want = family.strip().removeprefix("archlang.ops.")
        names = [n for n in names if _op_family(SURFACE[n]).removeprefix("archlang.ops.").startswith(want)]
        if not names:
            known = sorted({_op_family(s).removeprefix("archlang.ops.") for s in SURFACE.values()})
            raise _usage(f"no op family `{family[:40]}`; the families are {', '.join(known)}")
    for name in names:
        s = SURFACE[name]
        args = [*s.tensors, *(_op_arg(a) for a in s.args)]
        if s.extra_kwargs:
            args.append("**sizes")
        typer.echo(_wrap(f"{name}({', '.join(args)})  [{_op_family(s)}]", indent=4))
        typer.echo(_wrap(f"    {s.doc}", indent=4))


@app.command(cls=_Command)
def explain(code: Annotated[str, typer.Argument(metavar="CODE", help="A diagnostic code, e.g. E0501.")]) -> None:
    """Explain a diagnostic code: what it means and how to fix it (from docs/errors.md)."""
    from archlang.diagnostics import CODES, did_you_mean, explanation

    key = code.strip().upper()
    text = explanation(key)
    if text is None:
        hint = did_you_mean(key, CODES)
        raise _usage(f"no diagnostic `{code[:20]}`" + (f"; {hint}" if hint else "; codes look like E0501"))
    typer.echo(text)


def _lit(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def main() -> None:
    """Run ``archc``. Bad input ends in a diagnostic or a usage error; an exception that
    escapes a command is a bug in archlang, reported in one line (``ARCHLANG_TRACEBACK=1``
    shows the traceback)."""
    import os

    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except RecursionError:
        typer.echo("error: the input is nested too deeply to process", err=True)
        sys.exit(2)
    except Exception as e:  # pragma: no cover - a bug, not bad input
        if os.environ.get("ARCHLANG_TRACEBACK"):
            raise
        typer.echo(f"error: internal error in archlang ({type(e).__name__}: {str(e)[:200]}); this is a bug, "
                   "please report it with the spec (ARCHLANG_TRACEBACK=1 shows where)", err=True)
        sys.exit(3)


__all__ = ["Severity", "app", "main"]

if __name__ == "__main__":
    main()
