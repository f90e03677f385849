"""Expression arguments of ops: a spec's ``mask = q_idx - kv_idx < window`` kept as a tree.

Takes: from the elaborator, an op argument declared ``Arg(name, "expr")`` (kept unevaluated as
a :class:`Deferred`) or ``Arg(name, "tensor")`` (a tensor passed by keyword), the frame it
was written in, and the op's input list. Produces: for a tensor, its position among the op's
inputs (it is appended to them); for an expression, an :mod:`archlang.ir.index_expr` tree
whose tensors are appended to the op's inputs the same way.

In an expression, ``b``, ``h``, ``q_idx`` and ``kv_idx`` (and ``score`` where the op allows it)
are the index variables, whatever else those names mean around the call. Every other name,
and every part of the expression that mentions no index variable (``window // 2``,
``x.shape[1]``), is evaluated at compile time as usual: a number becomes a constant and a
tensor an input of the op (unknown names get E0201 with a did-you-mean). A tensor indexed by
index expressions (``slope[h]``, ``doc[b, q_idx]``, ``doc[b][q_idx]``) reads one element;
a bare tensor in an expression broadcasts over ``[b, h, q_idx, kv_idx]`` from the right, as a
bias tensor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archlang.ir import index_expr as X
from archlang.syntax import ast as A


@dataclass(frozen=True)
class Deferred:
    """An argument the elaborator did not evaluate: its expression and the frame it was written in."""

    expr: A.Expr
    frame: Any


_ALIGN = ("kv_idx", "q_idx", "h", "b")
# the index variables of each argument type
INDEX_VARS: dict[str, tuple[str, ...]] = {"tensor": X.VARS, "expr": X.VARS, "expr_score": (*X.VARS, X.SCORE)}  # a bare tensor's dims from the right


def bind(el: Any, v: Any, arg_type: str, what: str, span: Any, fr: Any, inputs: list, input_spans: list,
         variables: tuple[str, ...] = X.VARS) -> int | X.Expr:
    """The value an op's builder gets for a ``tensor`` or ``expr`` argument (see the module docstring)."""
    from archlang.check.elaborate import Tensor, type_name

    if arg_type == "tensor" or not isinstance(v, Deferred):
        if not isinstance(v, Tensor):
            raise el.fail("E0405", f"{what} must be a tensor, got {type_name(v)}", span)
        return _add(v, span, inputs, input_spans)
    from archlang.check.elaborate import POISON

    conv = _Converter(el, v.frame, inputs, input_spans, variables, what)
    try:
        if not conv.mentions(v.expr):
            value = el.eval(v.expr, v.frame)
            if value is POISON:
                return POISON
            if isinstance(value, Tensor):
                return _add(value, span, inputs, input_spans)
        return conv.convert(v.expr)
    except _Poisoned:
        return POISON


def _add(t: Any, span: Any, inputs: list, input_spans: list) -> int:
    for i, have in enumerate(inputs):
        if i >= 3 and have.ref == t.ref:  # the same tensor used twice is one input
            return i
    inputs.append(t)
    input_spans.append(span)
    return len(inputs) - 1


class _Poisoned(Exception):
    """An expression met a value that already failed (reported once, where it failed)."""


class _Converter:
    def __init__(self, el: Any, fr: Any, inputs: list, input_spans: list, variables: tuple[str, ...], what: str):
        self.el, self.fr, self.inputs, self.input_spans = el, fr, inputs, input_spans
        self.vars, self.what = variables, what

    def mentions(self, e: Any) -> bool:
        """Whether ``e`` mentions an index variable (else it is evaluated as a whole)."""
        if isinstance(e, A.Name):
            return e.id in self.vars
        if isinstance(e, A.Call):
            return any(self.mentions(a) for a in e.args) or any(self.mentions(k.value) for k in e.kwargs)
        if isinstance(e, A.Expr):
            return any(self.mentions(getattr(e, f)) for f in e.__dataclass_fields__ if f != "span")
        if isinstance(e, tuple | list):
            return any(self.mentions(x) for x in e)
        if hasattr(e, "__dataclass_fields__"):  # SliceItem
            return any(self.mentions(getattr(e, f)) for f in e.__dataclass_fields__ if f != "span")
        return False

    def fail(self, code: str, message: str, e: Any, help: str | None = None) -> Exception:
        return self.el.fail(code, message, e.span, help=help)

    def convert(self, e: A.Expr) -> X.Expr:
        if isinstance(e, A.Name) and e.id not in self.vars and e.id not in self.fr.env:
            from archlang.diagnostics import did_you_mean

            raise self.fail("E0201", f"unknown name `{e.id}`", e,
                            help=did_you_mean(e.id, [*self.vars, *self.fr.env])
                            or f"{self.what} uses the index variables {', '.join(self.vars)} and names in scope")
        if not self.mentions(e):
            return self.leaf(self.el.eval(e, self.fr), e)
        if isinstance(e, A.Name):
            return X.Var(name=e.id)  # type: ignore[arg-type]
        if isinstance(e, A.BinOp):
            return self.binop(e)
        if isinstance(e, A.UnaryOp):
            a = self.convert(e.operand)
            if e.op == "not":
                self.want(a, ("bool",), "`not`", e.operand)
                return X.Un(op="not", a=a)
            self.want(a, ("int", "float"), "`-`", e.operand)
            return X.Un(op="-", a=a)
        if isinstance(e, A.CondExpr):
            c, t, o = self.convert(e.cond), self.convert(e.then), self.convert(e.other)
            self.want(c, ("bool",), "the condition of `if`", e.cond)
            if (X.kind(t) == "bool") != (X.kind(o) == "bool"):
                raise self.fail("E0401", "both branches of `if ... then ... else` must be bools, or both numbers", e)
            return X.Where(cond=c, then=t, other=o)
        if isinstance(e, A.Call) and e.func in ("min", "max", "abs") and not e.kwargs:
            args = [self.convert(a) for a in e.args]
            if len(args) != (1 if e.func == "abs" else 2):
                raise self.fail("E0403", f"`{e.func}` in an index expression takes "
                                f"{'one argument' if e.func == 'abs' else 'two arguments'}", e)
            for a, ae in zip(args, e.args, strict=True):
                self.want(a, ("int", "float"), f"`{e.func}`", ae)
            return X.Un(op="abs", a=args[0]) if e.func == "abs" else X.Bin(op=e.func, a=args[0], b=args[1])
        if isinstance(e, A.Index) or type(e).__name__ == "Subscript":
            return self.load(e)
        what = f"`{e.func}(...)`" if isinstance(e, A.Call) else "this"
        raise self.fail("E0401", f"{what} is not allowed in {self.what}", e,
                        help="an index expression uses b, h, q_idx, kv_idx, numbers, + - * / // %, comparisons, "
                             "and/or/not, min/max/abs, `if ... then ... else` and tensors indexed by such "
                             "expressions (`slope[h]`)")

    def binop(self, e: A.BinOp) -> X.Expr:
        a, b = self.convert(e.left), self.convert(e.right)
        if e.op in X.LOGIC:
            self.want(a, ("bool",), f"`{e.op}`", e.left)
            self.want(b, ("bool",), f"`{e.op}`", e.right)
        elif e.op in X.ARITH or e.op in ("<", "<=", ">", ">="):
            self.want(a, ("int", "float"), f"`{e.op}`", e.left)
            self.want(b, ("int", "float"), f"`{e.op}`", e.right)
        elif e.op in ("==", "!="):
            if (X.kind(a) == "bool") != (X.kind(b) == "bool"):
                raise self.fail("E0401", f"`{e.op}` compares two bools or two numbers", e)
        else:
            raise self.fail("E0401", f"`{e.op}` is not allowed in {self.what}", e,
                            help="index expressions use + - * / // %, comparisons and and/or/not")
        return X.Bin(op=e.op, a=a, b=b)  # type: ignore[arg-type]

    def want(self, x: X.Expr, kinds: tuple[str, ...], what: str, e: A.Expr) -> None:
        k = X.kind(x)
        if k not in kinds:
            need = "bools" if kinds == ("bool",) else "ints" if kinds == ("int",) else "numbers"
            raise self.fail("E0401", f"{what} needs {need}, got {'an' if k == 'int' else 'a'} {k} in {self.what}", e)

    def load(self, e: A.Expr) -> X.Expr:
        idx: list[A.Expr] = []
        base: A.Expr = e
        while True:
            if isinstance(base, A.Index) and self.mentions(base.index):
                idx[:0] = [base.index]
                base = base.value
            elif type(base).__name__ == "Subscript" and self.mentions(base.items):  # type: ignore[attr-defined]
                items = list(base.items)  # type: ignore[attr-defined]
                if not all(isinstance(i, A.Expr) for i in items):
                    raise self.fail("E0401", f"slices are not allowed in {self.what}", base,
                                    help="index a tensor by one expression per dim: `table[q_idx, kv_idx]`")
                idx[:0] = items
                base = base.value  # type: ignore[attr-defined]
            elif isinstance(base, A.Index) and not self.mentions(base.value):
                idx[:0] = [base.index]
                base = base.value
            else:
                break
        if self.mentions(base):
            raise self.fail("E0401", f"only tensors can be indexed in {self.what}", base)
        from archlang.check.elaborate import POISON, Tensor, type_name

        t = self.el.eval(base, self.fr)
        if t is POISON:
            raise _Poisoned
        if not isinstance(t, Tensor):
            raise self.fail("E0401", f"only tensors can be indexed by index expressions, got {type_name(t)}", base,
                            help="compile-time lists index by compile-time ints; for a per-head table use a "
                                 "tensor (a parameter or a constant)")
        if len(idx) != t.type.rank:
            raise self.fail("E0304", f"{len(idx)} index{'es' if len(idx) != 1 else ''} for the rank-{t.type.rank} "
                            f"tensor {t.type}", e, help="give one index expression per dim")
        index = []
        for ie in idx:
            x = self.convert(ie)
            self.want(x, ("int",), "an index", ie)
            index.append(x)
        i = _add(t, base.span, self.inputs, self.input_spans)
        return X.Load(input=i, index=tuple(index), kind=t.type.dtype)

    def leaf(self, v: Any, e: A.Expr) -> X.Expr:
        from archlang.check.elaborate import POISON, Tensor, type_name
        from archlang.ir.dims import Dim

        if v is POISON:
            raise _Poisoned
        if isinstance(v, Tensor):
            if v.type.rank > len(_ALIGN):
                raise self.fail("E0302", f"a tensor in {self.what} broadcasts over [B, H, N, M]; got {v.type}", e)
            index = tuple(X.Const(value=0) if d == 1 else X.Var(name=n)  # type: ignore[arg-type]
                          for d, n in zip(v.type.shape, reversed(_ALIGN[:v.type.rank]), strict=True))
            i = _add(v, e.span, self.inputs, self.input_spans)
            return X.Load(input=i, index=index, kind=v.type.dtype)
        if isinstance(v, Dim):
            raise self.fail("E0404", f"the free size `{v}` is not known at compile time", e,
                            help="index expressions use compile-time numbers; give the size a value with --set")
        if isinstance(v, bool | int | float):
            return X.Const(value=v)
        raise self.fail("E0401", f"{type_name(v)} is not allowed in {self.what}", e,
                        help="index expressions use numbers, index variables and tensors")


__all__ = ["INDEX_VARS", "Deferred", "bind"]
