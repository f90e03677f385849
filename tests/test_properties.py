"""Property tests: the checker never crashes, whatever it is given.

Two sources of input: (a) random but syntactically plausible programs built from the grammar
(archs and blocks with parameters, `in`/`out`, assignments calling real ops from
``SURFACE`` with random arguments, `for`/`if`, labels, lists, arithmetic, adapters), and
(b) mutations of the shipped specs (tokens and lines deleted, duplicated or swapped, numbers
changed, random characters inserted, random `--set` overrides). The property: checking
returns diagnostics and never raises; every diagnostic has a catalogued code and, when it
has a span, the span's line exists in the file it names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archlang.check import check_spec
from archlang.check.program import Program, load
from archlang.check.surface import REQUIRED, SURFACE
from archlang.diagnostics import CODES, Sources, render_json, render_text
from archlang.ir.graph import Graph

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _inline_local_uses(text: str) -> str:
    """A spec as one self-contained text: `use other_spec` (a sibling file) is replaced by that
    file's text, so a mutant loaded from a string still finds its blocks and archs."""
    out = []
    for line in text.split("\n"):
        m = re.fullmatch(r"use (\w+)\s*", line)
        if m and (SPECS / f"{m.group(1)}.arch").is_file():
            out.append(_inline_local_uses((SPECS / f"{m.group(1)}.arch").read_text()))
        else:
            out.append(line)
    return "\n".join(out)


SPEC_TEXTS = {p.name: _inline_local_uses(p.read_text()) for p in sorted(SPECS.glob("*.arch"))}

# examples per property: 40 by default (the 10 CPU-minute test run); ARCHLANG_PROP_EXAMPLES=2000 for a long run
FAST = settings(max_examples=int(os.environ.get("ARCHLANG_PROP_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

KEYWORDS = {"use", "arch", "block", "in", "out", "for", "if", "elif", "else", "then", "return", "require",
            "adapt", "on", "freeze", "unfreeze", "true", "false", "and", "or", "not"}


# ----------------------------------------------------------------------------- the property


def _line_count(sources: Sources, file: str) -> int:
    n = 0
    while sources.line(file, n + 1) is not None:
        n += 1
    return n


def assert_well_behaved(prog: Program, arch: str | None = None, sets: list[str] | None = None) -> None:
    """Check ``prog`` and assert the result is made of well-formed diagnostics only."""
    result = check_spec(prog, arch, sets or [])  # must not raise
    for d in result.diagnostics:
        assert d.code in CODES, f"uncatalogued code {d.code}: {d.message}"
        assert d.message, d
        if d.span is not None:
            n = _line_count(prog.sources, d.span.file)
            assert 1 <= d.span.line <= n, f"{d.code} {d.message}: line {d.span.line} of {d.span.file} ({n} lines)"
            assert d.span.col >= 1, d
        for note in d.notes:
            if note.span is not None:
                assert 1 <= note.span.line <= _line_count(prog.sources, note.span.file), note
    # rendering never fails either
    render_text(result.diagnostics, prog.sources)
    render_json(result.diagnostics)
    if result.graph is not None:
        g = result.graph
        g.param_count()
        assert Graph.model_validate_json(g.model_dump_json()) == g


def check_text(text: str, arch_index: int = 0, sets: list[str] | None = None) -> None:
    prog = load("<mutant>", text=text)
    archs = [a.name for a in prog.main_archs()]
    arch = archs[arch_index % len(archs)] if archs else None
    assert_well_behaved(prog, arch, sets)


# ----------------------------------------------------------------------------- (a) programs from the grammar

NAMES = ["x", "y", "h", "t", "a", "b", "dim", "heads", "depth", "img", "i", "j", "s", "k", "B", "N", "D", "C",
         "widths", "fc", "attn", "blocks", "stage"]
STRINGS = ["gelu", "relu", "tanh", "b n d -> b d n", "b h w c -> b (h w) c", "b (h p) w c -> b h (p w c)",
           "b c h w -> b (h w) c", "blocks.*.attn.q", "*", "", "none"]

names = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(NAMES),
                  st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in KEYWORDS))
ints = st.integers(min_value=-3, max_value=4100).map(str) | st.sampled_from(["0", "1", "2", "3", "4", "7", "16", "64"])
floats = st.sampled_from(["0.0", "0.1", "0.5", "1.5", "4.0", "1e-6", "2.5e3"])
strings = st.sampled_from(STRINGS).map(lambda s: f'"{s}"')
literals = ints | floats | strings | st.sampled_from(["true", "false"])
ops = st.sampled_from(sorted(SURFACE))
BUILTIN_CALLS = ["len", "sum", "min", "max", "abs", "int", "float", "round", "range", "ceil", "floor"]


def _expr(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binop = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "@", "==", "!=", "<", ">=",
                                                 "and", "or"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    return st.one_of(
        binop,
        children.map(lambda e: f"-({e})"),
        children.map(lambda e: f"(not {e})"),
        st.tuples(children, children, children).map(lambda t: f"(if {t[0]} then {t[1]} else {t[2]})"),
        st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(names, children, children).map(lambda t: f"{t[0]}[{t[1]} .. {t[2]}]"),
        # issue 12's language: subscripts with slices, comprehensions, computed labels, shared layers
        st.tuples(names, st.lists(st.sampled_from([":", "::2", "1:", ":-1", "0", "-1", "1:7:2", "::0", "2:1"]),
                                  min_size=1, max_size=3)).map(lambda t: f"{t[0]}[{', '.join(t[1])}]"),
        st.tuples(children, names, children, st.none() | children).map(
            lambda t: f"[{t[0]} for {t[1]} in {t[2]}" + (f" if {t[3]}]" if t[3] is not None else "]")),
        st.tuples(children, names, ints).map(lambda t: f"[{t[0]} for {t[1]} in 0 .. {t[2]}]"),
        # a label part is a plain name or number: a labelled expression inside braces is not a program
        st.tuples(names, names | ints, op_calls).map(lambda t: f"({t[0]}{{{t[1]}}}: {t[2]})"),
        st.tuples(names, st.lists(children, max_size=2)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(names, st.sampled_from(["shape", "rank", "foo"])).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(names, st.sampled_from(["shape"]), ints).map(lambda t: f"{t[0]}.{t[1]}[{t[2]}]"),
        op_calls,
        st.tuples(st.sampled_from(BUILTIN_CALLS), st.lists(children, max_size=2)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(label, op_calls).map(lambda t: f"({t[0]}: {t[1]})"),
    )


label = st.one_of(names, st.tuples(names, names).map(lambda t: f"{t[0]}.{t[1]}"),
                  st.tuples(names, st.sampled_from(["i", "j", "0", "1"]), names).map(
                      lambda t: f"{t[0]}[{t[1]}].{t[2]}"))


def op_call() -> st.SearchStrategy[str]:
    """A call of a real op: its tensors positionally (usually `x`), then random keyword arguments."""
    children = literals | names | st.tuples(names, st.sampled_from(["*", "+", "//", "-"]), ints).map(
        lambda t: f"{t[0]} {t[1]} {t[2]}")

    @st.composite
    def build(draw: st.DrawFn) -> str:
        s = SURFACE[draw(ops)]
        pos = []
        for tname in s.tensors:
            if tname == "xs":
                pos.append("[" + ", ".join(draw(st.lists(st.sampled_from(["x", "h", "y"]), min_size=1,
                                                         max_size=3))) + "]")
            else:
                pos.append(draw(st.sampled_from(["x", "x", "h", "t", "y"]) | children))
        n_pos = draw(st.integers(0, len(pos)))
        args = pos[:n_pos]
        kws = []
        for a in s.args:
            if draw(st.integers(0, 2)) == 0:
                continue
            value = draw(_arg_value(a.type) | children)
            kws.append(f"{a.name} = {value}")
        if s.extra_kwargs and draw(st.booleans()):
            kws.append(f"{draw(st.sampled_from(['p', 'q', 'h', 'zz']))} = {draw(ints)}")
        if draw(st.integers(0, 9)) == 0:
            kws.append(f"{draw(names)} = {draw(children)}")
        return f"{s.name}({', '.join([*args, *kws])})"

    return build()


def _arg_value(t: str) -> st.SearchStrategy[str]:
    good = {
        "int": st.sampled_from(["1", "2", "3", "4", "8", "16", "64", "dim", "heads", "0", "-1"]),
        "float": st.sampled_from(["0.0", "0.1", "1e-6", "0.9", "1.5"]),
        "bool": st.sampled_from(["true", "false"]),
        "str": strings,
        "pair": st.sampled_from(["1", "2", "3", "[2, 2]", "[1, 3]", "[0, 0]"]),
        "ints": st.sampled_from(["[1]", "[1, 2]", "[-1]", "[0, 5]", "[]", "2"]),
    }
    return good.get(t, literals)


op_calls = op_call()
atoms = literals | names
exprs = st.recursive(atoms, _expr, max_leaves=8)

SHAPES = ["[B, 16, dim]", "[B, dim]", "[B, 3, img, img]", "[B, 14, 14, dim]", "int[B, N]", "[B, N, D]",
          "[*, C]", "[B, H, W, C]", "[]", "[B, 2 * dim, 4]", "bool[B]"]
shapes = st.sampled_from(SHAPES)
value_types = st.sampled_from(["int", "float", "bool", "str", "[int]", "[float]"])


def _stmt(children: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    def indent(body: list[str]) -> str:
        return "\n".join("  " + line for line in body)

    return st.one_of(
        st.tuples(names, children, exprs, exprs).map(
            lambda t: [f"for {t[0]} in {t[2]} .. {t[3]} {{", indent(t[1]), "}"]),
        st.tuples(exprs, children, st.lists(st.tuples(exprs, children), max_size=1),
                  st.none() | children).map(
            lambda t: [f"if {t[0]} {{", indent(t[1]),
                       *[line for c, b in t[2] for line in (f"}} elif {c} {{", indent(b))],
                       *(["} else {", indent(t[3])] if t[3] is not None else []), "}"]),
    )


simple_stmts = st.one_of(
    st.tuples(names, exprs).map(lambda t: [f"{t[0]} = {t[1]}"]),
    st.tuples(label, op_calls).map(lambda t: [f"x = {t[0]}: {t[1]}"]),
    st.tuples(names, names, exprs).map(lambda t: [f"{t[0]}, {t[1]} = {t[2]}"]),
    exprs.map(lambda e: [f"x = x + {e}"]),
    st.tuples(label, op_calls).map(lambda t: [f"{t[0]}: {t[1]}"]),
    st.tuples(exprs, st.none() | strings).map(lambda t: [f"require {t[0]}" + (f", {t[1]}" if t[1] else "")]),
    st.tuples(names, shapes).map(lambda t: [f"in {t[0]}: {t[1]}"]),
    st.tuples(names, st.none() | exprs).map(lambda t: [f"out {t[0]}" + (f" = {t[1]}" if t[1] else "")]),
    exprs.map(lambda e: [f"return {e}"]),
    st.tuples(st.sampled_from(["lora", "bitfit", "lorra"]), st.sampled_from(["r = 8", "r = 4, alpha = 16", ""]),
              st.lists(strings, min_size=1, max_size=2)).map(
        lambda t: [f"adapt {t[0]}({t[1]}) on {', '.join(t[2])}"]),
    st.tuples(st.sampled_from(["freeze", "unfreeze"]), strings).map(lambda t: [f"{t[0]} {t[1]}"]),
)
stmt_lists = st.recursive(simple_stmts, lambda c: _stmt(st.lists(c, max_size=3).map(
    lambda xs: [line for x in xs for line in x])), max_leaves=6)
bodies = st.lists(stmt_lists, max_size=6).map(lambda xs: [line for x in xs for line in x])


@st.composite
def params(draw: st.DrawFn, tensors: bool) -> tuple[str, list[str]]:
    """A parameter list, and the names of its value parameters (for calls)."""
    out = []
    used: set[str] = set()
    values = []
    if tensors:
        for _ in range(draw(st.integers(0, 2))):
            n = draw(st.sampled_from(["x", "y", "m"]))
            if n not in used:
                used.add(n)
                out.append(f"{n}: {draw(shapes)}")
    for _ in range(draw(st.integers(0, 3))):
        n = draw(names)
        if n in used:
            continue
        used.add(n)
        values.append(n)
        t = draw(value_types)
        default = draw(st.none() | exprs | _arg_value(t if not t.startswith("[") else "ints"))
        out.append(f"{n}: {t}" + (f" = {default}" if default is not None else ""))
    return ", ".join(out), values


def _unique(draw: st.DrawFn, pool: list[str], taken: list[str]) -> str:
    """Mostly a fresh name from ``pool``; now and then a clash (to reach E0603)."""
    fresh = [n for n in pool if n not in taken]
    if fresh and draw(st.integers(0, 19)):
        return draw(st.sampled_from(fresh))
    return draw(st.sampled_from(pool))


@st.composite
def programs(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for u in draw(st.lists(st.sampled_from(["std.nn", "std.vision"]), max_size=2, unique=True)):
        lines.append(f"use {u}")
    if not draw(st.integers(0, 19)):
        lines.append(f"use {draw(st.sampled_from(['std.nope', 'modules.missing', 'std']))}")
    blocks: list[tuple[str, list[str]]] = []
    for _ in range(draw(st.integers(0, 2))):
        name = _unique(draw, ["blk", "head", "stage", "enc"], [b for b, _ in blocks])
        plist, values = draw(params(tensors=True))
        blocks.append((name, values))
        body = draw(bodies)
        ret = draw(st.sampled_from(["return x", "return relu(x)", "", "return x, x", f"return {name}(x)",
                                    "return linear(x, 8)"]))
        lines += [f"block {name}({plist}) {{", *("  " + b for b in body), *([f"  {ret}"] if ret else []), "}"]
    arch_names: list[str] = []
    for _ in range(draw(st.integers(1, 2))):
        name = _unique(draw, ["net", "model", "vit"], arch_names)
        arch_names.append(name)
        shape = draw(st.sampled_from(["[B, 16, 64]", "[B, 3, 32, 32]", "[B, 64]", "int[B, 16]", "[B, 8, 8, 32]"]))
        body = draw(bodies)
        calls = []
        for b, values in blocks:
            if draw(st.booleans()):
                kws = [f"{v} = {draw(_arg_value(draw(st.sampled_from(['int', 'float', 'bool', 'ints']))))}"
                       for v in values if draw(st.integers(0, 3))]
                calls.append(f"  x = {draw(label)}: {b}({', '.join(['x', *kws])})")
        out = draw(st.sampled_from(["  out y = x", "  out y = linear(x, 10)", "", "  out x"]))
        plist, _ = draw(params(tensors=False))
        lines += [f"arch {name}({plist}) {{", f"  in x: {shape}", *calls, *("  " + b for b in body),
                  *([out] if out else []), "}"]
    if draw(st.booleans()):
        base = draw(st.sampled_from([*arch_names, "missing"]))
        kw = draw(st.sampled_from(["", "dim = 32", "depth = 2", "img = 64"]))
        extra = draw(st.sampled_from(["", ' { adapt lora(r = 8) on "*" }', ' { freeze "x" }', " { x = 1 }",
                                      ' { adapt bitfit() on "*.fc*", "blocks.*.attn.q" unfreeze "*" }']))
        lines.append(f"arch variant = {base}({kw}){extra}")
    return "\n".join(lines) + "\n"


EDGE_VALUES = {
    "int": ["-1", "0", "1", "2", "3", "4", "7", "8", "16", "1000000000", "1.5", "x.shape[1]", "B"],
    "float": ["-0.5", "0.0", "0.5", "1.0", "1e30", "1e400", "2"],
    "bool": ["true", "false", "0"],
    "str": [f'"{s}"' for s in STRINGS] + ['"b c h w -> b (h w) c"', '"b n c -> b c n"', '"(b) c -> c b"',
                                          '"b (h w) c -> b h w c"', '"a -> a -> a"', '"b c h w -> b (h w)"'],
    "pair": ["-1", "0", "1", "2", "3", "[0, 1]", "[2, 3]", "[1]", "[1, 2, 3]", "[1.5, 2]"],
    "ints": ["[]", "[0]", "[-1]", "[1, 2]", "[5]", "[0, 0]", "[4, 4]", "[16, 16]", "[2, -2]", "1"],
    "str_or_float": ['"zeros"', '"trunc_normal"', '"bogus"', "1.0", "0", "-2.5", "true"],
    "tensor": ["x", "1", "[x, x]", "y"],
    "expr": ["q_idx - kv_idx < 4", "kv_idx <= q_idx", "q_idx // 0", "x", "true", "1.5", "h * kv_idx", "nope < 1"],
    "expr_score": ["score + 1.0", "score * (kv_idx - q_idx)", "q_idx", "x", "score[0]"],
}
INPUT_SHAPES = ["[B, 8, 16, 16]", "[B, 16, 8]", "[B, 8]", "int[B, 16]", "[2, 4, 6, 6]", "[B, 14, 14, 8]",
                "[B, 17, 8]", "[]", "[B, 0, 4]", "[B, 4, img, img]"]


@st.composite
def op_chains(draw: st.DrawFn) -> str:
    """One to three real ops applied in turn to an input, every required argument given,
    arguments drawn from edge values (0, negatives, wrong types, symbolic sizes)."""
    lines = [f"  in x: {draw(st.sampled_from(INPUT_SHAPES))}"]
    for _ in range(draw(st.integers(1, 3))):
        s = SURFACE[draw(ops)]
        args = ["[x, x]" if t == "xs" else "x" for t in s.tensors]
        for a in s.args:
            if a.default is REQUIRED or draw(st.booleans()):
                args.append(f"{a.name} = {draw(st.sampled_from(EDGE_VALUES[a.type]))}")
        if s.extra_kwargs and draw(st.booleans()):
            args.append(f"{draw(st.sampled_from(['h', 'w', 'p', 'c']))} = {draw(st.sampled_from(EDGE_VALUES['int']))}")
        lines.append(f"  x = {s.name}({', '.join(args)})")
    return "arch net(img: int = 32) {\n" + "\n".join(lines) + "\n  out y = x\n}\n"


@FAST
@given(op_chains())
def test_op_calls_with_edge_arguments_never_crash(text: str) -> None:
    check_text(text)


@FAST
@given(programs(), st.integers(0, 3))
def test_generated_programs_never_crash(text: str, arch_index: int) -> None:
    # the generator writes grammatical programs: no syntax error is ever reported
    prog = load("<generated>", text=text)
    syntax = [d for d in prog.diags if d.code.startswith("E01")]
    assert not syntax, (text, [d.message for d in syntax])
    check_text(text, arch_index)


# ----------------------------------------------------------------------------- (b) mutations of the shipped specs

TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\"[^\"\n]*\"|\.\.|\*\*|//|[=!<>]=|.")
JUNK = [*"{}()[],:;.=*+-/%@!<>\"#$'`\\?~&|^", "\t", "\f", "\r", "\x00", "é", "→", "\n", " "]
NUMBERS = ["0", "1", "-1", "2", "3", "5", "7", "13", "99999999", "1e9", "0.5", "2.0", "4096", "10000000000"]


@st.composite
def mutants(draw: st.DrawFn) -> tuple[str, int, list[str]]:
    name = draw(st.sampled_from(sorted(SPEC_TEXTS)))
    text = SPEC_TEXTS[name]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["del_tok", "dup_tok", "swap_tok", "number", "insert", "del_line",
                                     "dup_line", "swap_line", "replace_tok"]))
        if kind.endswith("line"):
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if kind == "del_line":
                del lines[i]
            elif kind == "dup_line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
            continue
        toks = [m.group(0) for m in TOKEN.finditer(text)]
        real = [k for k, t in enumerate(toks) if not t.isspace()]
        if not real:
            break
        i, j = draw(st.sampled_from(real)), draw(st.sampled_from(real))
        if kind == "del_tok":
            toks[i] = ""
        elif kind == "dup_tok":
            toks[i] = toks[i] + " " + toks[i]
        elif kind == "swap_tok":
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "number":
            nums = [k for k, t in enumerate(toks) if t[0].isdigit()]
            if nums:
                toks[draw(st.sampled_from(nums))] = draw(st.sampled_from(NUMBERS))
        elif kind == "replace_tok":
            toks[i] = draw(st.sampled_from([toks[j], "x", "B", "0", "[]", "(", "}", "if", "out", "for", "+",
                                            "true", '"s"', "..", "**", "linear", "depths"]))
        else:
            toks[i] = toks[i] + draw(st.sampled_from(JUNK))
        text = "".join(toks)
    sets = draw(st.lists(st.sampled_from(["img=384", "img=0", "img=-4", "img=225", "depth=0", "depth=1",
                                          "heads=0", "heads=7", "patch=0", "window=0", "window=1", "dim=1",
                                          "depths=[2,2]", "depths=[]", "depths=[1.5]", "embed=97",
                                          "layers=0", "res=0", "ff=0", "d=7", "drop_path_rate=2",
                                          "mlp_ratio=0.001", "classes=0", "nope=1", "img", "img=", "=3",
                                          "img=[1,", "heads=\"x\"", "img=1e12"]), max_size=2))
    return text, draw(st.integers(0, 8)), sets


@FAST
@given(mutants())
def test_mutated_specs_never_crash(case: tuple[str, int, list[str]]) -> None:
    text, arch_index, sets = case
    check_text(text, arch_index, sets)


@FAST
@given(st.sampled_from(sorted(SPEC_TEXTS)), st.integers(0, 8),
       st.lists(st.sampled_from(["img=384", "img=0", "img=-4", "img=225", "img=32", "img=7", "depth=0", "heads=0",
                                 "heads=7", "patch=0", "patch=1", "window=0", "window=1", "window=100", "dim=1",
                                 "depths=[2,2]", "depths=[]", "depths=[0,0,0,0]", "heads=[1,1,1,1]", "embed=97",
                                 "layers=0", "res=0", "res=1", "ff=0", "d=7", "src_vocab=0", "max_len=0",
                                 "enc_layers=0", "drop=1.0", "mlp_ratio=0.001", "tokens_ratio=0", "classes=0",
                                 "channels=0", "width=0"]), max_size=3))
def test_overrides_never_crash(name: str, arch_index: int, sets: list[str]) -> None:
    check_text(SPEC_TEXTS[name], arch_index, sets)


def test_shipped_specs_are_clean() -> None:
    """The unmutated texts (local `use`s inlined) check cleanly, so mutants start from valid specs."""
    for name, text in SPEC_TEXTS.items():
        prog = load(f"<{name}>", text=text)
        assert prog.main_archs(), name
        for a in prog.main_archs():
            r = check_spec(prog, a.name)
            assert r.ok, (name, a.name, [d.message for d in r.diagnostics if d.is_error])
