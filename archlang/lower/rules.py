"""Lowering rules: the :class:`Rule` type, the table, and the kit the rules share.

A rule takes an op (for every instance of the generated class that holds the node, so
rules can tell constant attributes from per-instance ones), the code of its inputs and
attribute accessors (:class:`Ctx`), and produces the constructor expression of its
submodule or parameter (if any) and the forward expression. Each op's rule lives in its
family module of :mod:`archlang.ops` (``define(..., lower=Rule(...))``); ``LOWER_RULES``
holds one rule per op class and a test fails when an op lacks one. This module keeps the
code-building kit (``ident``/``attr``, ``lit``, ``call``, ``E``, ``call_module``,
``in_place``, ``kwargs_of``...; public names at the bottom). Helper layers named in
``helpers`` are copied from the prelude.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from archlang.ir import ops as O
from archlang.ir.dims import Dim
from archlang.ir.types import TensorType


class LoweringError(Exception):
    pass


# ----------------------------------------------------------------------------- names in generated code
#
# Every name taken from the IR that generated code writes as Python (variables, arguments,
# attributes, class names) passes through `ident`; every other text goes through `repr`
# (strings), `doc` (docstrings) or `comment_text` (comments).

PRELUDE = Path(__file__).resolve().parent / "prelude.py"


def _prelude_names() -> set[str]:
    tree = ast.parse(PRELUDE.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}


# Names generated code must not rebind. Module level and inside functions: what the code
# itself refers to (torch, F, builtins, the prelude helpers, keywords).
RESERVED = frozenset({"self", "torch", "nn", "F", "math", "x_", "build", "annotations"} | set(keyword.kwlist)
                     | set(dir(builtins)) | _prelude_names())
# Attributes of a generated module: what nn.Module itself defines, and what codegen adds.
ATTR_RESERVED = frozenset(set(keyword.kwlist) | {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile",
    "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer",
    "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters",
    "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state",
    "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train", "type", "xpu", "zero_grad",
    "training", "arch_name", "arch_params", "input_names", "output_names", "no_weight_decay"})
_NOT_WORD = re.compile(r"[^A-Za-z0-9_]")
MAX_INDEX_GAP = 10_000  # missing entries a ModuleList may be padded with (nn.Identity) before it is refused


def ident(name: str, reserved: frozenset[str] | set[str] = RESERVED) -> str:
    """THE way a name from the IR becomes a Python identifier in generated code: the result
    matches ``[A-Za-z_][A-Za-z0-9_]*``, is not a keyword and is not in ``reserved``. Names that
    already qualify come back unchanged; others are mangled (``_`` for other characters, a
    ``v`` before a leading digit, a trailing ``_`` while reserved)."""
    s = _NOT_WORD.sub("_", name)
    if not s or s[0].isdigit():
        s = f"v{s}"
    while s in reserved or keyword.iskeyword(s):
        s = f"{s}_"
    return s


def attr(name: str) -> str:
    """A submodule or parameter attribute name (one level of a node's dotted name)."""
    if name.startswith("_"):  # nn.Module keeps its own state in underscored attributes
        name = f"v{name}"
    return ident(name, ATTR_RESERVED)


def is_index(part: str) -> bool:
    """A level of a dotted name that indexes a ModuleList (``blocks.3``)."""
    return part.isascii() and part.isdigit() and len(part) <= 9


def camel(name: str) -> str:
    """A class name from a block or arch name (``swin_block`` -> ``SwinBlock``), through :func:`ident`."""
    return ident("".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p) or "Block")


def comment_text(text: str) -> str:
    """Text for a ``#`` comment (shapes, names): one line of printable characters, no quotes
    or backslashes (a name altered to carry code reads as ``__import__(?os?)``)."""
    return "".join(ch if (ch.isprintable() and ch not in "\"'\\`") else "?" for ch in text)


def doc(text: str) -> str:
    """Text for the body of a ``\"\"\"docstring\"\"\"``: the string literal evaluates to ``text``
    (backslashes, quotes and unprintable characters escaped; everything else kept as written)."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)




def state_key(name: str) -> str:
    """The state_dict / named_parameters name that generated code gives node ``name``."""
    return ".".join(p if is_index(p) else attr(p) for p in name.split("."))


def access(local: str, root: str = "self") -> str:
    """Code that reaches the submodule at dotted path ``local``: ``self.layers[0].attn``."""
    return ast.unparse(access_node(local, root))


def access_node(local: str, root: str = "self") -> ast.expr:
    """The expression of :func:`access`, as a tree."""
    out: ast.expr = ast.Name(id=root, ctx=ast.Load())
    for p in local.split("."):
        if is_index(p):
            out = ast.Subscript(value=out, slice=ast.Constant(int(p)), ctx=ast.Load())
        else:
            out = ast.Attribute(value=out, attr=attr(p), ctx=ast.Load())
    return out


# ----------------------------------------------------------------------------- expressions
#
# Generated code is built as `ast` expressions and written with `ast.unparse`, which
# parenthesises by precedence: `E("a * b", a=<a + b>, b=<c>)` is `(a + b) * c`. Templates are
# fixed code written here; only whole subtrees are substituted into them.

_TEMPLATES: dict[str, ast.expr] = {}


def lit(v: object) -> ast.expr:
    """A Python value (bool, int, float, str, None, tuple) as an expression."""
    if v is None or isinstance(v, bool | str):
        return ast.Constant(v)
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            return ast.Call(func=ast.Name(id="float", ctx=ast.Load()), args=[ast.Constant(repr(v))], keywords=[])
        if v < 0 or (isinstance(v, float) and math.copysign(1.0, v) < 0):
            return ast.UnaryOp(op=ast.USub(), operand=ast.Constant(-v))
        return ast.Constant(v)
    if isinstance(v, tuple):
        return ast.Tuple(elts=[lit(x) for x in v], ctx=ast.Load())
    if isinstance(v, Dim):
        raise LoweringError("a symbolic size cannot be written as a literal")
    raise LoweringError(f"cannot write {v!r:.60} as a literal")


def node(v: object) -> ast.expr:
    return v if isinstance(v, ast.expr) else lit(v)


def _fill(t: object, subs: dict[str, ast.expr]) -> object:
    """``t`` with names replaced; subtrees without a replaced name are shared, not copied
    (expression trees are never changed once built)."""
    if isinstance(t, ast.Name):
        return subs.get(t.id, t)
    if not isinstance(t, ast.AST):
        return t
    changed = {}
    for f, v in ast.iter_fields(t):
        nv = [_fill(x, subs) for x in v] if isinstance(v, list) else _fill(v, subs)
        if (any(a is not b for a, b in zip(nv, v, strict=True)) if isinstance(v, list) else nv is not v):
            changed[f] = nv
    if not changed:
        return t
    new = type(t)()
    for f, v in ast.iter_fields(t):
        setattr(new, f, changed.get(f, v))
    return new


def E(template: str, /, **subs: object) -> ast.expr:
    """The expression ``template`` (Python code) with each name in ``subs`` replaced by a subtree."""
    base = _TEMPLATES.get(template)
    if base is None:
        base = _TEMPLATES[template] = ast.parse(template, mode="eval").body
    out = _fill(base, {k: node(v) for k, v in subs.items()}) if subs else base
    assert isinstance(out, ast.expr)
    return out


def name(n: str) -> ast.expr:
    return ast.Name(id=n, ctx=ast.Load())


def call(func: str | ast.expr, *args: object, **kwargs: object) -> ast.expr:
    """``func(*args, **kwargs)``; ``func`` is a dotted name or an expression."""
    f = func if isinstance(func, ast.expr) else E(func)
    return ast.Call(func=f, args=[node(a) for a in args],
                    keywords=[ast.keyword(arg=k, value=node(v)) for k, v in kwargs.items()])


# Python's operator precedence, lowest first (the levels `ast.unparse` uses)
_P_TEST, _P_OR, _P_AND, _P_NOT, _P_CMP, _P_BOR, _P_BXOR, _P_BAND, _P_SHIFT, _P_ARITH, _P_TERM, _P_FACTOR, \
    _P_POWER, _P_AWAIT, _P_ATOM = range(1, 16)
_BINOPS: dict[type, tuple[str, int]] = {
    ast.Add: ("+", _P_ARITH), ast.Sub: ("-", _P_ARITH), ast.Mult: ("*", _P_TERM), ast.Div: ("/", _P_TERM),
    ast.FloorDiv: ("//", _P_TERM), ast.Mod: ("%", _P_TERM), ast.MatMult: ("@", _P_TERM), ast.Pow: ("**", _P_POWER),
    ast.BitOr: ("|", _P_BOR), ast.BitXor: ("^", _P_BXOR), ast.BitAnd: ("&", _P_BAND),
    ast.LShift: ("<<", _P_SHIFT), ast.RShift: (">>", _P_SHIFT)}
_UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~", ast.Not: "not "}
_CMPOPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Is: "is",
           ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


_ATOMS = {ast.Name, ast.Call, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Dict, ast.ListComp}


def _prec(e: ast.AST) -> int:
    t = type(e)
    if t in _ATOMS:
        return _P_ATOM
    if t is ast.Constant:
        v = e.value  # type: ignore[attr-defined]
        return _P_FACTOR if type(v) in (int, float) and v < 0 else _P_ATOM  # `-3` is an operand as `-x` is
    if t is ast.BinOp:
        return _BINOPS[type(e.op)][1]  # type: ignore[attr-defined]
    if t is ast.UnaryOp:
        return _P_NOT if isinstance(e.op, ast.Not) else _P_FACTOR  # type: ignore[attr-defined]
    if t is ast.Compare:
        return _P_CMP
    if t is ast.BoolOp:
        return _P_AND if isinstance(e.op, ast.And) else _P_OR  # type: ignore[attr-defined]
    return 0  # anything else is parenthesised wherever it is an operand


def code(e: ast.AST, names: set[str] | None = None) -> str:
    """Python source of an expression, parenthesised by precedence (what ``ast.unparse`` writes
    for the nodes generated code uses, several times faster); ``names`` collects the bare names.
    The text is kept on the node, so an expression inlined into another is written once."""
    if type(e) is ast.Constant and e.value is not Ellipsis:  # type: ignore[attr-defined]
        return repr(e.value)  # type: ignore[attr-defined]
    memo = e.__dict__.get("_code")
    if memo is None:
        seen: set[str] = set()
        memo = e._code = (_write(e, seen), frozenset(seen))  # type: ignore[attr-defined]
    if names is not None:
        names |= memo[1]
    return memo[0]


def _write(e: ast.AST, names: set[str]) -> str:
    out: list[str] = []
    _go(e, out.append, names)
    return "".join(out)


def _sub(x: ast.AST, need: int, w: Callable[[str], object], names: set[str]) -> None:
    """An operand, parenthesised unless it binds at least as tightly as ``need``."""
    if _prec(x) < need:
        w("(")
        _go(x, w, names)
        w(")")
    else:
        _go(x, w, names)


def _seq(xs: list, w: Callable[[str], object], names: set[str]) -> None:
    for i, x in enumerate(xs):
        if i:
            w(", ")
        _go(x, w, names)


def _go(x: ast.AST, w: Callable[[str], object], names: set[str]) -> None:
    memo = x.__dict__.get("_code")
    if memo is not None:
        names.update(memo[1])
        w(memo[0])
    elif isinstance(x, ast.Name):
        names.add(x.id)
        w(x.id)
    elif isinstance(x, ast.Constant):
        w("..." if x.value is Ellipsis else repr(x.value))
    elif isinstance(x, ast.Attribute):
        if isinstance(x.value, ast.Constant) and type(x.value.value) in (int, float):
            w("(")
            _go(x.value, w, names)
            w(")")
        else:
            _sub(x.value, _P_ATOM, w, names)
        w(f".{x.attr}")
    elif isinstance(x, ast.Call):
        _sub(x.func, _P_ATOM, w, names)
        w("(")
        _seq([*x.args, *x.keywords], w, names)
        w(")")
    elif isinstance(x, ast.keyword):
        w(f"{x.arg}=" if x.arg else "**")
        _go(x.value, w, names)
    elif isinstance(x, ast.Subscript):
        _sub(x.value, _P_ATOM, w, names)
        w("[")
        if isinstance(x.slice, ast.Tuple) and x.slice.elts:
            _seq(x.slice.elts, w, names)
        else:
            _go(x.slice, w, names)
        w("]")
    elif isinstance(x, ast.Slice):
        if x.lower is not None:
            _go(x.lower, w, names)
        w(":")
        if x.upper is not None:
            _go(x.upper, w, names)
        if x.step is not None:
            w(":")
            _go(x.step, w, names)
    elif isinstance(x, ast.BinOp):
        op, p = _BINOPS[type(x.op)]
        right_assoc = isinstance(x.op, ast.Pow)
        _sub(x.left, p + 1 if right_assoc else p, w, names)
        w(f" {op} ")
        _sub(x.right, p if right_assoc else p + 1, w, names)
    elif isinstance(x, ast.UnaryOp):
        w(_UNARY[type(x.op)])
        _sub(x.operand, _prec(x), w, names)
    elif isinstance(x, ast.Compare):
        _sub(x.left, _P_CMP + 1, w, names)
        for op, right in zip(x.ops, x.comparators, strict=True):
            w(f" {_CMPOPS[type(op)]} ")
            _sub(right, _P_CMP + 1, w, names)
    elif isinstance(x, ast.BoolOp):
        p = _prec(x)
        for i, v in enumerate(x.values):
            if i:
                w(" and " if isinstance(x.op, ast.And) else " or ")
            _sub(v, p + 1, w, names)
    elif isinstance(x, ast.IfExp):
        _sub(x.body, _P_OR, w, names)
        w(" if ")
        _sub(x.test, _P_OR, w, names)
        w(" else ")
        _sub(x.orelse, _P_TEST, w, names)
    elif isinstance(x, ast.Tuple):
        w("(")
        _seq(x.elts, w, names)
        w(",)" if len(x.elts) == 1 else ")")
    elif isinstance(x, ast.List):
        w("[")
        _seq(x.elts, w, names)
        w("]")
    elif isinstance(x, ast.Dict):
        w("{")
        for i, (k, v) in enumerate(zip(x.keys, x.values, strict=True)):
            w(", " if i else "")
            _go(k, w, names)  # type: ignore[arg-type]
            w(": ")
            _go(v, w, names)
        w("}")
    elif isinstance(x, ast.ListComp):
        w("[")
        _go(x.elt, w, names)
        for g in x.generators:
            w(" for ")
            _go(g.target, w, names)
            w(" in ")
            _sub(g.iter, _P_OR, w, names)
            for c in g.ifs:
                w(" if ")
                _sub(c, _P_OR, w, names)
        w("]")
    else:  # not written by the rules; the standard library knows every node
        names.update(n.id for n in ast.walk(x) if isinstance(n, ast.Name))
        w(ast.unparse(x))


@dataclass
class Ctx:
    """What a rule sees: the op of each instance, input code, accessors for attributes."""

    ops: list[O.OpBase]
    ins: list[ast.expr]
    mod: ast.expr  # the expression that reaches this node's submodule/parameter, e.g. `self.attn`
    in_types: list[TensorType]
    out_types: tuple[TensorType, ...]
    init_attr: Callable[[str], ast.expr]  # attribute -> code valid in __init__ (literal or argument name)
    fwd_attr: Callable[[str], ast.expr]  # attribute -> code valid in forward (literal or self.<arg>)
    # per input: the op that made it afresh when this node is its only reader (:func:`fresh_value`),
    # else None: the code may overwrite it in place (timm's ReLU(inplace=True), ResNet's `x += s`)
    fresh: tuple[O.OpBase | None, ...] = ()

    @property
    def op(self) -> O.OpBase:
        return self.ops[0]

    def const(self, name: str) -> bool:
        first = _get(self.ops[0], name)
        return all(_get(o, name) == first for o in self.ops)

    def x(self) -> ast.expr:
        return self.ins[0]


def _get(op: O.OpBase, name: str) -> object:
    if name.startswith("axis:") and isinstance(op, O.Rearrange):
        return next((a.size for a in op.axes if a.name == name[5:]), None)
    return getattr(op, name)


@dataclass(frozen=True)
class Rule:
    forward: Callable[[Ctx], ast.expr]
    module: Callable[[Ctx], ast.expr | None] = lambda c: None
    #  prelude definitions the code uses: a tuple, or a function of the context when it depends
    #  on the op (a weight-standardised conv needs StdConv2d, a plain one does not)
    helpers: tuple[str, ...] | Callable[[Ctx], tuple[str, ...]] = ()
    #  True when the forward code mentions an input twice (so inputs must be variables)
    reuses_input: bool = False


LOWER_RULES: dict[type[O.OpBase], Rule] = {}


def helpers_of(rule_: Rule, c: Ctx) -> tuple[str, ...]:
    return rule_.helpers(c) if callable(rule_.helpers) else rule_.helpers


def _call(c: Ctx) -> ast.expr:
    return call(c.mod, *c.ins)


# ----------------------------------------------------------------------------- layers


def _int(v: object) -> ast.expr:
    """An integer written into code; anything else is refused (a graph altered after checking)."""
    if type(v) is not int:
        raise LoweringError(f"expected an integer, got {v!r:.60}")
    return lit(v)


def _padded(c: Ctx, value: ast.expr | None = None) -> ast.expr:
    """The input with TF-same padding applied first, when the op has any."""
    if c.const("pad") and not any(c.op.pad):  # type: ignore[attr-defined]
        return c.x()
    return call("F.pad", c.x(), c.fwd_attr("pad"), **({"value": value} if value is not None else {}))


# ----------------------------------------------------------------------------- attention


def _kwargs(c: Ctx, names: list[str], defaults: dict[str, object]) -> dict[str, ast.expr]:
    parts = {}
    for n in names:
        if n in defaults and c.const(n) and getattr(c.op, n) == defaults[n]:
            continue
        parts[n] = c.init_attr(n)
    return parts


_ATTN_DEFAULTS = {"qkv_bias": True, "proj_bias": True, "attn_drop": 0.0, "proj_drop": 0.0, "causal": False,
                  "shift": (0, 0), "pad": (0, 0)}
_COMMON = ["dim", "heads", "head_dim", "qkv_bias", "proj_bias", "attn_drop", "proj_drop"]
_WINDOW = [*_COMMON, "window", "grid", "shift", "pad"]


# ----------------------------------------------------------------------------- parameter-free


def writable(op: O.OpBase) -> bool:
    """Whether the output of ``op`` is a new tensor that its backward does not read, so its only
    reader may overwrite it: convolutions, norms, linear layers (they keep their inputs) and
    additions (they keep nothing). Not activations that keep their output, nor ops whose
    output may be a view of their input (rearrange, slices, identity, dropout in eval)."""
    if isinstance(op, O.Binary):
        return op.fn in ("add", "sub")
    return isinstance(op, O.Conv2d | O.Conv1d | O.BatchNorm | O.LayerNorm | O.GroupNorm | O.Linear)


def fresh_value(node: str, index: int, uses: Mapping[tuple[str, int], int],
                producers: Mapping[str, object]) -> O.OpBase | None:
    """The :func:`writable` op that made output ``index`` of ``node`` (of one block instance,
    whose nodes are ``producers``) afresh, when that value is read once, possibly passed on
    unchanged by dropout, drop-path (the input itself in eval mode, or a fresh product) and
    identities that are themselves read once; else None."""
    while uses.get((node, index), 0) == 1 and node in producers:
        n = producers[node]
        if writable(n.op):  # type: ignore[attr-defined]
            return n.op  # type: ignore[attr-defined]
        if not isinstance(n.op, O.Dropout | O.DropPath | O.Identity) or not n.inputs:  # type: ignore[attr-defined]
            return None
        node, index = n.inputs[0].node, n.inputs[0].index  # type: ignore[attr-defined]
    return None


def _in_place(c: Ctx, i: int, made_by: tuple[type[O.OpBase], ...] = (O.OpBase,)) -> bool:
    """Input ``i`` may be overwritten with the (same-shaped, same-dtype) output; ``made_by``
    narrows the ops that may have made it."""
    return i < len(c.fresh) and isinstance(c.fresh[i], made_by) and c.in_types[i] == c.out_types[0]


# the residual sum is written into a branch that ends in a convolution or a norm of a CNN
# (timm's ResNet: `x += shortcut`); a transformer's `x + branch` stays out of place, so that
# under autocast a float32 residual stream is not summed into a bfloat16 branch
_CNN_BRANCH = (O.Conv2d, O.Conv1d, O.BatchNorm)


def _choice(v: object, allowed) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise LoweringError(f"unknown choice {v!r:.60}")
    return v


_AUTO_TIED = re.compile(r"tied_linear(_\d+)?")


def tied_alias(local: str) -> bool:
    """Whether the tied head at ``local`` is a labelled one (``lm_head: tied_linear(x, "wte")``):
    it becomes a bias-free ``nn.Linear`` submodule whose weight IS the embedding's Parameter, so
    the state_dict lists both keys (one storage), as HF's tied heads do. An unlabelled head
    (auto-named ``tied_linear``, ``tied_linear_1``...) is ``F.linear(x, emb.weight)`` and adds no key."""
    return bool(local) and _AUTO_TIED.fullmatch(local.rsplit(".", 1)[-1]) is None


__all__ = ["LOWER_RULES", "Ctx", "LoweringError", "Rule", "field"]


# the rule kit under public names, for the family modules of archlang.ops
ATTN_COMMON = _COMMON
ATTN_DEFAULTS = _ATTN_DEFAULTS
ATTN_WINDOW = _WINDOW
call_module = _call
choice = _choice
CNN_BRANCH = _CNN_BRANCH
in_place = _in_place
int_lit = _int
kwargs_of = _kwargs
padded = _padded
