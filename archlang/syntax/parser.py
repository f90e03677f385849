"""Parse archlang source text into an AST (:mod:`archlang.syntax.ast`).

Takes: source text and a file name. Produces: an :class:`~archlang.syntax.ast.Module`, or
raises :class:`~archlang.diagnostics.DiagnosticError` with an ``E01xx`` syntax diagnostic.
The grammar lives in ``grammars/archlang.lark``; nothing is cached on disk.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from archlang.diagnostics import Diagnostic, DiagnosticError, Span
from archlang.syntax import ast as A

GRAMMAR = Path(__file__).resolve().parent.parent / "grammars" / "archlang.lark"
VALUE_TYPES = ("int", "float", "bool", "str")
DTYPES = ("float", "int", "bool")

# Human names for terminals in "expected ..." help lines.
_TERMINAL_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`",
    "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "DOT": "`.`", "__ANON_0": "`..`",
    "MINUS": "`-`", "STAR": "`*`", "COMP_OP": "a comparison", "ADD_OP": "`+`/`-`",
    "MUL_OP": "`*`/`/`", "POW_OP": "`**`", "FREEZE": "`freeze`", "CHECKPOINT": "`checkpoint`",
    "LABEL_BRACE": "`{` (a computed label part)", "ELLIPSIS": "`...`",
    "$END": "end of file",
}


@functools.cache
def _parser() -> Lark:
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _span_tok(file: str, tok: Token) -> Span:
    return Span(file=file, line=tok.line or 1, col=tok.column or 1,
                end_line=tok.end_line or tok.line or 1, end_col=tok.end_column or (tok.column or 1) + 1)


def _describe(term: str) -> str:
    if term in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[term]
    if term.isupper() and term.isalpha():
        return f"`{term.lower()}`"
    return term


def _syntax_diag(err: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else "?"
        span = Span(file=file, line=line, col=col, end_line=line, end_col=col + 1)
        shown = f"`{ch}`" if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
        return Diagnostic("E0103", f"invalid character {shown}", span,
                          help="names are letters, digits and `_`; strings use double quotes")
    expected = sorted({_describe(t) for t in getattr(err, "expected", ()) or ()})
    help_ = f"expected {', '.join(expected[:8])}" + (" ..." if len(expected) > 8 else "") if expected else None
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        lines = text.rstrip("\r\n").split("\n")
        last = len(lines)
        span = Span(file=file, line=last, col=len(lines[-1]) + 1, end_line=last, end_col=len(lines[-1]) + 2)
        unclosed = _unclosed(text)
        if unclosed:
            ch, line_, col_ = unclosed[-1]
            closer = {"{": "}", "(": ")", "[": "]"}[ch]
            return Diagnostic("E0102", "unexpected end of file", span,
                              help=f"`{ch}` opened at {file}:{line_}:{col_} is never closed; add `{closer}`")
        return Diagnostic("E0102", "unexpected end of file", span, help=help_)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    span = _span_tok(file, tok)
    pos = tok.start_pos or 0
    if tok.type == "LBRACE" and pos > 0 and (text[pos - 1].isalnum() or text[pos - 1] == "_"):
        return Diagnostic("E0101", "unexpected `{`", span,
                          help="`name{i}` is a computed label: it comes before `:` and the call it names, "
                               "e.g. `fc{i}: linear(x, 8)`, or before `(` to call that layer again: `fc{i}(z)`")
    return Diagnostic("E0101", f"unexpected {_describe(tok.type) if tok.type != 'NAME' else f'`{tok}`'}",
                      span, help=_bracket_help(text, tok, set(err.expected or ()), file) or help_)


_CLOSERS = {"RPAR": ("(", ")"), "RSQB": ("[", "]"), "RBRACE": ("{", "}")}


def _bracket_help(text: str, tok: Token, expected: set[str], file: str) -> str | None:
    """Explain an unexpected token by the brackets around it: a closer that closes nothing,
    or a `(`/`[` left open on an earlier line."""
    pos = tok.start_pos if tok.start_pos is not None else len(text)
    stack = _unclosed(text[:pos])
    if tok.type in _CLOSERS:
        opener, closer = _CLOSERS[tok.type]
        if not stack or stack[-1][0] != opener:
            if stack:
                ch, line, col = stack[-1]
                return f"`{closer}` does not match the `{ch}` opened at {file}:{line}:{col}; remove it or fix the pair"
            return f"`{closer}` closes nothing; remove it"
        return None
    if stack and stack[-1][0] in "([" and stack[-1][1] < (tok.line or 0):
        ch, line, col = stack[-1]
        closer = {"(": ")", "[": "]"}[ch]
        name = {"(": "RPAR", "[": "RSQB"}[ch]
        if name in expected:
            return f"`{ch}` opened at {file}:{line}:{col} is never closed; add `{closer}`"
    return None


def _unclosed(text: str) -> list[tuple[str, int, int]]:
    """Brackets still open at the end of ``text`` (ignoring comments and strings)."""
    stack: list[tuple[str, int, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for lineno, line in enumerate(text.split("\n"), 1):
        in_str = False
        for col, ch in enumerate(line, 1):
            if ch == '"':
                in_str = not in_str
            elif in_str:
                continue
            elif ch == "#":
                break
            elif ch in "([{":
                stack.append((ch, lineno, col))
            elif ch in ")]}" and stack and stack[-1][0] == pairs[ch]:
                stack.pop()
    return stack


class _Builder(Transformer):
    """Lark tree -> AST. Spans come from ``propagate_positions``."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> Span:
        return Span(file=self.file, line=meta.line, col=meta.column, end_line=meta.end_line,
                    end_col=meta.end_column)

    def _tok(self, tok: Token) -> Span:
        return _span_tok(self.file, tok)

    # -- literals and names
    @v_args(meta=True)
    def int_lit(self, meta, c):
        digits = str(c[0]).lstrip("0") or "0"
        if len(digits) > MAX_INT_DIGITS:
            raise DiagnosticError(Diagnostic(
                "E0406", f"integer literal of {len(digits):,} digits", self._span(meta),
                help=f"compile-time integers have at most {MAX_INT_DIGITS} digits"))
        return A.IntLit(self._span(meta), int(c[0]))

    @v_args(meta=True)
    def float_lit(self, meta, c):
        v = float(c[0])
        if not math.isfinite(v) or len(str(c[0])) > 400:
            raise DiagnosticError(Diagnostic(
                "E0406", f"`{str(c[0])[:40]}` is not a finite number", self._span(meta),
                help="write a float such as 1e-6 or 0.5"))
        return A.FloatLit(self._span(meta), v)

    @v_args(meta=True)
    def str_lit(self, meta, c):
        return A.StrLit(self._span(meta), str(c[0])[1:-1])

    @v_args(meta=True)
    def true_lit(self, meta, c):
        return A.BoolLit(self._span(meta), True)

    @v_args(meta=True)
    def false_lit(self, meta, c):
        return A.BoolLit(self._span(meta), False)

    @v_args(meta=True)
    def name(self, meta, c):
        return A.Name(self._span(meta), str(c[0]))

    @v_args(meta=True)
    def list_lit(self, meta, c):
        return A.ListLit(self._span(meta), tuple(x for x in c if x is not None))

    @v_args(meta=True)
    def list_comp(self, meta, c):
        return A.ListComp(self._span(meta), c[0], tuple(c[1:]))

    @v_args(meta=True)
    def comp_for(self, meta, c):
        return A.Comprehension(str(c[0]), c[1], c[2], tuple(c[3:]), self._span(meta))

    def comp_if(self, c):
        return c[0]

    # -- operators
    @v_args(meta=True)
    def binop(self, meta, c):
        return A.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    @v_args(meta=True)
    def compare(self, meta, c):
        return A.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    @v_args(meta=True)
    def pow_op(self, meta, c):
        return A.BinOp(self._span(meta), "**", c[0], c[2])

    @v_args(meta=True)
    def or_op(self, meta, c):
        return A.BinOp(self._span(meta), "or", c[0], c[1])

    @v_args(meta=True)
    def and_op(self, meta, c):
        return A.BinOp(self._span(meta), "and", c[0], c[1])

    @v_args(meta=True)
    def not_op(self, meta, c):
        return A.UnaryOp(self._span(meta), "not", c[0])

    @v_args(meta=True)
    def neg(self, meta, c):
        return A.UnaryOp(self._span(meta), "-", c[0])

    @v_args(meta=True)
    def cond_expr(self, meta, c):
        return A.CondExpr(self._span(meta), c[0], c[1], c[2])

    # -- postfix
    def arguments(self, c):
        return list(c)

    @v_args(meta=True)
    def kwarg(self, meta, c):
        return A.Keyword(str(c[0]), c[1], self._span(meta))

    @v_args(meta=True)
    def call(self, meta, c):
        func, args = c[0], c[1] or []
        path: tuple = ()
        if isinstance(func, A.Attr | A.Index | A.LabelPart):  # `blocks[i].fc(z)`: an earlier layer, again
            path = self._label_path(func, "only named operations, blocks and labelled layers can be called",
                                    "call an op or block by name (`linear(x, 10)`), or a labelled layer "
                                    "to share its weights (`pe1(z)`)")
        elif not isinstance(func, A.Name):
            raise DiagnosticError(Diagnostic(
                "E0101", "only named operations and blocks can be called", func.span,
                help="call an op or block by name, e.g. `linear(x, 10)`"))
        pos = tuple(a for a in args if not isinstance(a, A.Keyword))
        kws = tuple(a for a in args if isinstance(a, A.Keyword))
        seen_kw = False
        for a in args:
            if isinstance(a, A.Keyword):
                seen_kw = True
            elif seen_kw:
                raise DiagnosticError(Diagnostic(
                    "E0101", "positional argument after a keyword argument", a.span,
                    help="put positional arguments first"))
        if path:
            return A.Call(self._span(meta), _path_text(path), func.span, pos, kws, path)
        return A.Call(self._span(meta), func.id, func.span, pos, kws)

    def subscripts(self, c):
        return list(c)

    @v_args(meta=True)
    def subscript(self, meta, c):
        value, items = c[0], c[1]
        span = self._span(meta)
        if len(items) == 1 and isinstance(items[0], tuple):  # `l[a .. b]`
            return A.Slice(span, value, items[0][0], items[0][1])
        if len(items) == 1 and isinstance(items[0], A.Expr):
            return A.Index(span, value, items[0])
        return A.Subscript(span, value, tuple(
            A.SliceItem(span, it[0], it[1]) if isinstance(it, tuple) else it for it in items))

    def range_sub(self, c):
        return (c[0], c[1])

    @v_args(meta=True)
    def colon_sub(self, meta, c):
        return A.SliceItem(self._span(meta), c[0], c[1], c[2])

    @v_args(meta=True)
    def ellipsis_sub(self, meta, c):
        return A.EllipsisItem(self._span(meta))

    @v_args(meta=True)
    def label_part(self, meta, c):
        return A.LabelPart(self._span(meta), c[0], c[2] if len(c) > 2 else c[1])

    @v_args(meta=True)
    def attr(self, meta, c):
        return A.Attr(self._span(meta), c[0], str(c[1]))

    @v_args(meta=True)
    def labeled(self, meta, c):
        label, call = c
        if not isinstance(call, A.Call):
            raise DiagnosticError(Diagnostic(
                "E0101", "a label must name a call", call.span,
                help="write `name: op(...)`, e.g. `fc1: linear(x, 3072)`"))
        return A.Labeled(self._span(meta), self._label_path(label), call)

    def _label_path(self, e, message: str = "a label is a dotted name such as `blocks[i].attn`",
                    help: str = "labels are names, `.name`, `[index]` and computed parts `name{i}` only") -> tuple:
        if isinstance(e, A.Name):
            return (e.id,)
        if isinstance(e, A.Attr):
            return (*self._label_path(e.value, message, help), e.attr)
        if isinstance(e, A.Index):
            return (*self._label_path(e.value, message, help), e.index)
        if isinstance(e, A.LabelPart):  # the part joins the piece before it: `embed{i}` -> embed0
            return (*self._label_path(e.value, message, help), e)
        raise DiagnosticError(Diagnostic("E0101", message, e.span, help=help))

    # -- annotations
    @v_args(meta=True)
    def annot_name(self, meta, c):
        name = str(c[0])
        span = self._span(meta)
        if name not in VALUE_TYPES:
            raise DiagnosticError(Diagnostic(
                "E0401", f"unknown type `{name}`", span,
                help="value types are int, float, bool, str and lists like [int]; tensors are "
                     "written as shapes like [B, N, D]"))
        return A.ValueType(name, span)

    def dims(self, c):
        return [d for d in c if d is not None]

    @v_args(meta=True)
    def dim_star(self, meta, c):
        return A.Star(self._span(meta))

    @v_args(meta=True)
    def annot_bracket(self, meta, c):
        prefix, dims = c[0], c[1] or []
        span = self._span(meta)
        if prefix is None and len(dims) == 1 and isinstance(dims[0], A.Name) and dims[0].id in VALUE_TYPES:
            return A.ValueType("list", span, A.ValueType(dims[0].id, dims[0].span))
        dtype = "float"
        if prefix is not None:
            if str(prefix) not in DTYPES:
                raise DiagnosticError(Diagnostic(
                    "E0401", f"unknown tensor dtype `{prefix}`", self._tok(prefix),
                    help="tensor dtypes are float, int and bool, e.g. int[B, S]"))
            dtype = str(prefix)
        return A.TensorAnnot(tuple(dims), dtype, span)

    # -- statements
    def body(self, c):
        return tuple(c)

    @v_args(meta=True)
    def in_stmt(self, meta, c):
        return A.InStmt(self._span(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def out_stmt(self, meta, c):
        return A.OutStmt(self._span(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def assign(self, meta, c):
        return A.Assign(self._span(meta), tuple(str(t) for t in c[:-1]), c[-1])

    @v_args(meta=True)
    def for_stmt(self, meta, c):
        return A.For(self._span(meta), str(c[0]), c[1], c[2], c[3])

    def elif_clause(self, c):
        return (c[0], c[1])

    def else_clause(self, c):
        return c[0]

    @v_args(meta=True)
    def if_stmt(self, meta, c):
        branches = [(c[0], c[1])]
        orelse = None
        for extra in c[2:]:
            if isinstance(extra, tuple) and len(extra) == 2 and isinstance(extra[0], A.Expr):
                branches.append(extra)
            elif extra is not None:
                orelse = extra
        return A.If(self._span(meta), tuple(branches), orelse)

    @v_args(meta=True)
    def return_stmt(self, meta, c):
        return A.Return(self._span(meta), tuple(c))

    @v_args(meta=True)
    def require_stmt(self, meta, c):
        return A.Require(self._span(meta), c[0], str(c[1])[1:-1] if c[1] is not None else None)

    @v_args(meta=True)
    def expr_stmt(self, meta, c):
        return A.ExprStmt(self._span(meta), c[0])

    def selectors(self, c):
        return tuple(c)  # STRING tokens; the statements keep their text and spans

    @v_args(meta=True)
    def adapt_stmt(self, meta, c):
        kws = []
        for a in c[1] or []:
            if not isinstance(a, A.Keyword):
                raise DiagnosticError(Diagnostic(
                    "E0401", "adapter arguments are given by name", a.span,
                    help="e.g. `adapt lora(r = 8, alpha = 16) on \"blocks.*.attn.q\"`"))
            kws.append(a)
        return A.Adapt(self._span(meta), str(c[0]), tuple(kws), tuple(str(s)[1:-1] for s in c[2]),
                       tuple(self._tok(s) for s in c[2]))

    @v_args(meta=True)
    def freeze_stmt(self, meta, c):
        return A.Freeze(self._span(meta), str(c[0]) == "freeze", tuple(str(s)[1:-1] for s in c[1]),
                        tuple(self._tok(s) for s in c[1]))

    @v_args(meta=True)
    def checkpoint_stmt(self, meta, c):
        return A.Checkpoint(self._span(meta), tuple(str(s)[1:-1] for s in c[1]), tuple(self._tok(s) for s in c[1]))

    # -- definitions
    def params(self, c):
        return tuple(p for p in c if p is not None)

    @v_args(meta=True)
    def param(self, meta, c):
        return A.Param(str(c[0]), c[1], c[2], self._span(meta))

    def dotted(self, c):
        return ".".join(str(t) for t in c)

    @v_args(meta=True)
    def use_stmt(self, meta, c):
        return A.Use(c[0], self._span(meta))

    @v_args(meta=True)
    def arch_def(self, meta, c):
        return A.ArchDef(str(c[0]), c[1] or (), c[2], self._span(meta))

    @v_args(meta=True)
    def arch_alias(self, meta, c):
        name, base, args, body = c
        args = args or []
        pos = tuple(a for a in args if not isinstance(a, A.Keyword))
        kws = tuple(a for a in args if isinstance(a, A.Keyword))
        return A.ArchAlias(str(name), str(base), self._tok(base), pos, kws, body or (), self._span(meta))

    @v_args(meta=True)
    def block_def(self, meta, c):
        return A.BlockDef(str(c[0]), c[1] or (), c[2], self._span(meta))

    def start(self, c):
        return list(c)


def _path_text(path: tuple) -> str:
    """``blocks[i].fc``, ``pe{s}``: a label path as written, for messages."""
    out = ""
    for p in path:
        if isinstance(p, str):
            out += f".{p}" if out else p
        elif isinstance(p, A.LabelPart):
            out += "{…}"
        else:
            out += "[…]"
    return out


MAX_SOURCE_CHARS = 2_000_000  # a spec (or one `use`d module) larger than this is refused unparsed
MAX_SET_CHARS = 1_000  # characters of one --set value
MAX_INT_DIGITS = 40  # integer literals: sizes fit in 64 bits; more digits is a typo or an attack


def parse_text(text: str, file: str = "<input>") -> A.Module:
    """Parse ``text`` into its AST; raise :class:`DiagnosticError` on a syntax error.

    ASTs are kept in memory for the process (an LRU of 256 files). There is no disk cache: parsing every spec and the standard library takes ~0.2 s in all,
    and a cache of Python objects read back from disk (pickle) would let whoever can write
    the cache folder run code as the user. The LALR tables are built in memory once per
    process (~0.07 s), for the same reason (Lark's own ``cache=True`` pickles into /tmp).
    """
    if len(text) > MAX_SOURCE_CHARS:
        raise DiagnosticError(Diagnostic(
            "E0702", f"`{file}` has {len(text):,} characters, more than the limit of {MAX_SOURCE_CHARS:,}",
            Span(file=file, line=1, col=1, end_line=1, end_col=2),
            help="a spec describes an architecture in a few hundred lines; is this the right file?"))
    return _parse_cached(text, file)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str, file: str) -> A.Module:
    """In-memory only (the AST is immutable): the standard library is parsed once per process."""
    return _parse_uncached(text, file)


def _parse_uncached(text: str, file: str) -> A.Module:
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise DiagnosticError(_syntax_diag(err, file, text)) from None
    try:
        items = _Builder(file).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, DiagnosticError):
            raise err.orig_exc from None
        if isinstance(err.orig_exc, RecursionError):
            meta = getattr(err.obj, "meta", None)
            line = getattr(meta, "line", None) or 1
            raise DiagnosticError(Diagnostic(
                "E0101", "this expression is nested too deeply to parse",
                Span(file=file, line=line, col=getattr(meta, "column", None) or 1, end_line=line,
                     end_col=(getattr(meta, "column", None) or 1) + 1),
                help="split it into several assignments")) from None
        raise
    except RecursionError:
        raise DiagnosticError(Diagnostic("E0101", "the spec is nested too deeply to parse",
                                         Span(file=file, line=1, col=1, end_line=1, end_col=2),
                                         help="split deep expressions into several assignments")) from None
    if isinstance(items, Tree):  # pragma: no cover - start always transforms to a list
        items = []
    return A.Module(
        file=file,
        uses=tuple(i for i in items if isinstance(i, A.Use)),
        archs=tuple(i for i in items if isinstance(i, A.ArchDef | A.ArchAlias)),
        blocks=tuple(i for i in items if isinstance(i, A.BlockDef)),
        items=tuple(items),
    )


def parse_expr(text: str, file: str = "<--set>") -> A.Expr:
    """Parse a single expression (used for ``--set key=value`` values)."""
    span = Span(file=file, line=1, col=1, end_line=1, end_col=2)
    if len(text) > MAX_SET_CHARS:
        raise DiagnosticError(Diagnostic("E0701", f"a value of {len(text):,} characters", span,
                                         help=f"--set values have at most {MAX_SET_CHARS:,} characters"))
    try:
        module = parse_text(f"arch __set__() {{ __v__ = {text}\n}}", file)
    except RecursionError:
        raise DiagnosticError(Diagnostic("E0701", "the value is nested too deeply", span,
                                         help="write a literal, e.g. --set img=384 or --set depths=[2,2,6,2]")) from None
    arch = module.archs[0]
    assert isinstance(arch, A.ArchDef)
    stmt = arch.body[0] if arch.body else None
    if not isinstance(stmt, A.Assign) or len(arch.body) != 1:
        raise DiagnosticError(Diagnostic("E0701", f"`{text}` is not a single value", None))
    return stmt.value
