"""Tensors that are not computed from the inputs: parameters of any shape, constant tensors
evaluated when the model is built, gather by an index tensor, and the attention-score marker.

Takes: nothing at import but the rule kits of each stage. Produces these ops, each with its
signature and its shape, cost, lowering, drawing and interpreter rules:

- ``param(shape, init = "zeros", value = 0.0, std = 0.02, role = "")`` (:class:`Param`): a
  learned tensor of any shape (``param([], init = 1.0)`` is a learnable scalar); the node is
  the parameter, so its state_dict key is its label (``gamma_1``, ``q_bias``,
  ``relative_position_bias_table``). ``init`` is a number, ``zeros``, ``ones``, ``constant``
  (``value``), ``normal`` or ``trunc_normal`` (``std``; timm's truncation at two standard
  deviations); ``role`` ``token``, ``pos`` or ``rel_pos`` lists it in ``no_weight_decay``.
- ``arange(n, start = 0, step = 1, dtype = "int")`` and ``full(shape, value, dtype = "float")``
  / ``zeros(shape)`` / ``ones(shape)`` (:class:`Arange`, :class:`Full`): constant sources.
- :class:`Const`: what the elaborator makes of a constant expression. Every node whose inputs
  are all constant and whose op is pure (arithmetic, rearrange, concat, comparisons, the
  elementwise math of :mod:`archlang.ops.math` ...) is constant too; :func:`fold_constants`
  (run on every elaborated graph) replaces each constant value the rest of the graph reads by
  one ``Const`` node holding the sub-graph that computes it. Its lowering evaluates that
  sub-graph once, in ``__init__``, into a non-persistent buffer (``nn.Buffer(...,
  persistent=False)``: not in the state_dict, moved by ``.to()``); forward only reads it. A
  relative-position index table is written in the language this way (see specs/beit.arch).
  A constant source read directly (``zeros([dim])`` as BEiT's ``k_bias``) is its own buffer.
- ``gather(table, index, dim = 0)`` (:class:`Gather`): ``table[index]`` along ``dim``; the
  result's shape is ``table.shape[:dim] + index.shape + table.shape[dim + 1:]``.
- ``attention_scores(s)`` (:class:`AttentionScores`): the identity on ``[B, H, N, M]`` that
  marks an attention matrix written by hand (talking heads cannot use a fused kernel), so it
  appears in the attention-memory report with ``B * H * N * M`` entries.
"""

from __future__ import annotations

import ast
import copy
from typing import Any, Literal

from archlang.check import shapes
from archlang.check.surface import Arg, BuildError, const_dim, op
from archlang.cost.rules import OpCost, numel
from archlang.ir import ops as O
from archlang.ir.dims import fmt, product
from archlang.ir.graph import Graph, Node
from archlang.ir.ops import BufferSpec, OpBase, ParamSpec
from archlang.ir.types import TensorType
from archlang.lower.rules import LOWER_RULES, Ctx, E, LoweringError, Rule, call, code, helpers_of, lit
from archlang.ops.registry import define
from archlang.render.rules import Look

_DTYPES = ("float", "int", "bool")
_TORCH_DTYPE = {"float": None, "int": "torch.long", "bool": "torch.bool"}


def _shape_arg(ctx: Any, shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    for d in shape:
        if d < 1:
            raise BuildError("E0406", f"{what}: every dim is at least 1, got {list(shape)}", arg="shape")
    return tuple(shape)


def _dtype_arg(v: str) -> str:
    if v not in _DTYPES:
        raise BuildError("E0406", f"dtype is \"float\", \"int\" or \"bool\", got \"{v}\"", arg="dtype")
    return v


# ----------------------------------------------------------------------------- param


class Param(OpBase):
    """A learned tensor of any shape (``[]``: a scalar); the node is the parameter."""

    op: Literal["param"] = "param"
    shape: tuple[int, ...]
    init: Literal["zeros", "ones", "constant", "normal", "trunc_normal"] = "zeros"
    value: float = 0.0
    std: float = 0.02
    role: Literal["weight", "norm", "bias", "token", "pos", "rel_pos"] = "weight"

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="", shape=self.shape, role=self.role),)


_INITS = ("zeros", "ones", "constant", "normal", "trunc_normal")


_ROLES = ("weight", "norm", "bias", "token", "pos", "rel_pos")


@op("param", (), (Arg("shape", "ints", min=0), Arg("init", "str_or_float", ""), Arg("value", "float", 0.0),
                  Arg("std", "float", 0.02, range="positive"), Arg("role", "str", "")),
    "A learned tensor of `shape` ([] for a scalar), initialised by `init`: a number (every entry), zeros, "
    "ones, constant (`value`; the default when `value` is given), normal or trunc_normal (`std`). `role` "
    "token, pos or rel_pos puts it in no_weight_decay (timm's convention for tokens and position tables).")
def _param_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Param:
    from archlang.diagnostics import did_you_mean

    if isinstance(a["init"], float):  # param([], init = 1.0)
        a = {**a, "init": "constant", "value": a["init"]}
    init = a["init"] or ("constant" if a["value"] != 0.0 else "zeros")
    if init not in _INITS:
        raise BuildError("E0406", f"unknown init \"{init}\"", help=did_you_mean(init, _INITS) or
                         f"inits: {', '.join(_INITS)}", arg="init")
    role = a["role"] or ("weight" if len(a["shape"]) > 1 else "norm")
    if role not in _ROLES:
        raise BuildError("E0406", f"unknown role \"{role}\"", help=did_you_mean(role, _ROLES) or
                         f"roles: {', '.join(_ROLES)}", arg="role")
    return Param(shape=_shape_arg(ctx, a["shape"], "param"), init=init, value=a["value"], std=a["std"], role=role)


def _param_shape(o: Param, ins: list[TensorType]) -> tuple[TensorType, ...]:
    return (TensorType(shape=o.shape),)


def _param_module(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Param)
    if not c.const("init"):
        raise LoweringError("a parameter's init must be the same in every instance of a block")
    shape = c.init_attr("shape")
    if o.init == "trunc_normal":
        kw = {} if c.const("std") and o.std == 0.02 else {"std": c.init_attr("std")}
        if c.const("shape") and not o.shape:  # a scalar: the prelude's _trunc_normal(*shape) needs a size
            return E("nn.Parameter(nn.init.trunc_normal_(torch.empty(()), std=s, a=-2 * s, b=2 * s))",
                     s=c.init_attr("std"))
        dims = [lit(d) for d in o.shape] if c.const("shape") else [ast.Starred(value=shape, ctx=ast.Load())]
        return call("_trunc_normal", *dims, **kw)
    if o.init == "normal":
        return E("nn.Parameter(torch.randn(s) * std)", s=shape, std=c.init_attr("std"))
    if o.init == "zeros" or (o.init == "constant" and c.const("value") and o.value == 0.0):
        return E("nn.Parameter(torch.zeros(s))", s=shape)
    if o.init == "ones" or (o.init == "constant" and c.const("value") and o.value == 1.0):
        return E("nn.Parameter(torch.ones(s))", s=shape)
    return E("nn.Parameter(torch.full(s, v))", s=shape, v=c.init_attr("value"))


def _param_interpret(c: Any) -> Any:
    return c.p("")


define(Param, shape=_param_shape,
       cost=lambda o, ins, outs: OpCost(),
       lower=Rule(forward=lambda c: c.mod, module=_param_module,
                  helpers=lambda c: ("_trunc_normal",) if c.op.init == "trunc_normal"  # type: ignore[attr-defined]
                  and not (c.const("shape") and not c.op.shape) else ()),  # type: ignore[attr-defined]
       draw=lambda o, ins, outs: Look("param", (f"{list(o.shape)}", o.init), "position"),
       interpret=_param_interpret,
       example="""
arch t() {
  in x: [B, 5, 6]
  y = x * (gamma: param([6], value = 0.5)) + (bias: param([6]))
  s = y * (scale: param([], init = "ones"))
  out z = s + (pos: param([1, 5, 6], init = "trunc_normal", std = 0.02))
}
""")


# ----------------------------------------------------------------------------- constant sources


class Arange(OpBase):
    """The constant ``[start, start + step, ...]`` of ``n`` values (int or float)."""

    op: Literal["arange"] = "arange"
    n: int
    start: int = 0
    step: int = 1
    dtype: Literal["float", "int"] = "int"

    def buffers(self) -> tuple[BufferSpec, ...]:
        return (BufferSpec(name="", shape=(self.n,)),)


class Full(OpBase):
    """A constant tensor of ``shape`` filled with ``value`` (``zeros``, ``ones``)."""

    op: Literal["full"] = "full"
    shape: tuple[int, ...]
    value: float = 0.0
    dtype: Literal["float", "int", "bool"] = "float"

    def buffers(self) -> tuple[BufferSpec, ...]:
        return (BufferSpec(name="", shape=self.shape),)


@op("arange", (), (Arg("n", "int", min=1), Arg("start", "int", 0), Arg("step", "int", 1),
                   Arg("dtype", "str", "int")),
    "The constant [start, start + step, ...] of n values (an int tensor unless dtype = \"float\"), "
    "computed when the model is built.")
def _arange_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Arange:
    dt = _dtype_arg(a["dtype"])
    if dt == "bool":
        raise BuildError("E0406", "arange counts: dtype is \"int\" or \"float\"", arg="dtype")
    return Arange(n=a["n"], start=a["start"], step=a["step"], dtype=dt)


def _full(value: float | None):
    def build(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Full:
        dt = _dtype_arg(a["dtype"])
        v = a["value"] if value is None else value
        if dt == "int" and not float(v).is_integer():
            raise BuildError("E0406", f"an int tensor cannot hold {v}", arg="value")
        return Full(shape=_shape_arg(ctx, a["shape"], "full"), value=v, dtype=dt)
    return build


op("full", (), (Arg("shape", "ints", min=0), Arg("value", "float"), Arg("dtype", "str", "float")),
   "A constant tensor of `shape` filled with `value`, built with the model.")(_full(None))
op("zeros", (), (Arg("shape", "ints", min=0), Arg("dtype", "str", "float")),
   "A constant tensor of zeros (a non-persistent buffer when read directly: BEiT's k_bias).")(_full(0.0))
op("ones", (), (Arg("shape", "ints", min=0), Arg("dtype", "str", "float")),
   "A constant tensor of ones.")(_full(1.0))


def _arange_expr(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Arange)
    if o.start == 0 and o.step == 1:
        out = call("torch.arange", c.fwd_attr("n"))
    else:
        stop = E("start + n * step", start=c.fwd_attr("start"), n=c.fwd_attr("n"), step=c.fwd_attr("step"))
        out = call("torch.arange", c.fwd_attr("start"), stop, c.fwd_attr("step"))
    return E("x.float()", x=out) if o.dtype == "float" else out


def _full_expr(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Full)
    kw = {} if _TORCH_DTYPE[o.dtype] is None else {"dtype": E(_TORCH_DTYPE[o.dtype])}  # type: ignore[arg-type]
    if o.value == 0.0:
        return call("torch.zeros", c.fwd_attr("shape"), **kw)
    if o.value == 1.0:
        return call("torch.ones", c.fwd_attr("shape"), **kw)
    v = lit(int(o.value)) if o.dtype == "int" else lit(bool(o.value)) if o.dtype == "bool" else c.fwd_attr("value")
    return call("torch.full", c.fwd_attr("shape"), v, **kw)


def _source_rule(expr) -> Rule:
    """A constant source read directly: a non-persistent buffer built once."""
    def module(c: Ctx) -> ast.expr:
        inner = Ctx(ops=c.ops, ins=[], mod=c.mod, in_types=c.in_types, out_types=c.out_types,
                    init_attr=c.init_attr, fwd_attr=c.init_attr)
        return E("nn.Buffer(v, persistent=False)", v=expr(inner))
    return Rule(forward=lambda c: c.mod, module=module)


def _arange_interpret(c: Any) -> Any:
    import torch

    o = c.op
    out = torch.tensor([o.start + o.step * i for i in range(o.n)], dtype=torch.long)
    return out.double() if o.dtype == "float" else out


def _full_interpret(c: Any) -> Any:
    import torch

    o = c.op
    dt = {"float": torch.float64, "int": torch.long, "bool": torch.bool}[o.dtype]
    return torch.full(o.shape, o.value, dtype=torch.float64).to(dt)


def _source_cost(o: OpBase, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    return _buffer_cost(outs[0])


def _buffer_cost(t: TensorType) -> OpCost:
    n = numel(t)
    assert isinstance(n, int)
    if t.dtype == "float":
        return OpCost(buffer_float=n)
    if t.dtype == "bool":
        return OpCost(buffer_int64=-(-n // 8))  # a byte each: counted in 8-byte units
    return OpCost(buffer_int64=n)


define(Arange, shape=lambda o, ins: (TensorType(shape=(o.n,), dtype=o.dtype),), cost=_source_cost,
       lower=_source_rule(_arange_expr),
       draw=lambda o, ins, outs: Look("arange", (f"{o.start} + {o.step}i, i < {o.n}",), "position"),
       interpret=_arange_interpret,
       example="""
arch t() {
  in x: [B, 5]
  out y = x + (positions: arange(5, start = 1, step = 2, dtype = "float"))
}
""")
define(Full, shape=lambda o, ins: (TensorType(shape=o.shape, dtype=o.dtype),), cost=_source_cost,
       lower=_source_rule(_full_expr),
       draw=lambda o, ins, outs: Look("full", (f"{list(o.shape)} = {o.value:g}",), "position"),
       interpret=_full_interpret,
       example="""
arch t() {
  in x: [B, 3, 4]
  y = x + (k: zeros([4]))
  out z = y * (twos: full([3, 4], 2.0))
}
""")


# ----------------------------------------------------------------------------- folded constants

# The ops a constant expression may use besides the sources: pure functions of their inputs
# (no weights, no randomness). Family modules add theirs with :func:`foldable`.
FOLDABLE: set[type[OpBase]] = {O.Binary, O.Scale, O.Rearrange, O.Concat, O.Take, O.SliceOp, O.Roll, O.Matmul,
                               O.Mean, O.Activation, O.Softmax, O.Identity, O.Glu}
SOURCES: set[type[OpBase]] = {Arange, Full}


def foldable(*classes: type[OpBase]) -> None:
    """Declare ops whose value is a pure function of their inputs (constant when they are)."""
    FOLDABLE.update(classes)


class Const(OpBase):
    """A constant tensor: the sub-graph ``steps`` (in order; the last one's output is the
    value) evaluated once when the model is built, into a non-persistent buffer."""

    op: Literal["const"] = "const"
    steps: tuple[Node, ...]

    @property
    def result(self) -> TensorType:
        return self.steps[-1].outputs[0]

    def buffers(self) -> tuple[BufferSpec, ...]:
        return (BufferSpec(name="", shape=tuple(int(d) for d in self.result.shape)),)  # type: ignore[arg-type]


def _const_shape(o: Const, ins: list[TensorType]) -> tuple[TensorType, ...]:
    return (o.result,)


def _attr(o: OpBase, name: str) -> ast.expr:
    if name.startswith("axis:") and isinstance(o, O.Rearrange):
        return lit(next(a.size for a in o.axes if a.name == name[5:]))
    return lit(getattr(o, name))


def _step_ctx(step: Node, ins: list[ast.expr], in_types: list[TensorType]) -> Ctx:
    def attr_(f: str, _o: OpBase = step.op) -> ast.expr:
        return _attr(_o, f)
    return Ctx(ops=[step.op], ins=ins, mod=E("self"), in_types=in_types, out_types=step.outputs,
               init_attr=attr_, fwd_attr=attr_)


_EXPR = {Arange: _arange_expr, Full: _full_expr}


def _const_code(o: Const) -> tuple[ast.expr, set[str]]:
    """The expression that computes the value (each step's own forward rule, inlined), and the
    prelude helpers it needs."""
    exprs: dict[str, ast.expr] = {}
    types: dict[str, TensorType] = {}
    helpers: set[str] = set()
    for st in o.steps:
        ins = [exprs[r.node] for r in st.inputs]
        c = _step_ctx(st, ins, [types[r.node] for r in st.inputs])
        cls = type(st.op)
        if cls in _EXPR:
            e = _EXPR[cls](c)
        else:
            rule = LOWER_RULES[cls]
            if rule.module(c) is not None:
                raise LoweringError(f"`{st.name}` ({st.op.op}) cannot be part of a constant")
            helpers.update(helpers_of(rule, c))
            e = rule.forward(c)
        exprs[st.name] = e
        types[st.name] = st.outputs[0]
    out = exprs[o.steps[-1].name]
    dt = o.result.dtype
    if dt != "float" and not all(st.op.op in _DTYPE_EXACT for st in o.steps):  # torch may have promoted it
        out = E("x.long()" if dt == "int" else "x.bool()", x=out)
    return out, helpers


# ops whose result has the declared dtype in torch too (int stays int): no cast needed after them
_DTYPE_EXACT = {"arange", "full", "binary", "scale", "concat", "rearrange", "take", "slice", "roll", "identity",
                "int_div", "cast", "gather", "where", "minmax", "compare"}


def _const_module(c: Ctx) -> ast.expr:
    if not c.const("steps"):
        raise LoweringError("a constant tensor must be the same in every instance of a block")
    expr, _ = _const_code(c.op)  # type: ignore[arg-type]
    return _wrapped(E("nn.Buffer(v, persistent=False)", v=expr))


_WIDTH = 100  # longer constant expressions are written over several lines


def _wrapped(e: ast.expr) -> ast.expr:
    """``e`` with its code written over several lines when it is long (calls one argument a
    line, long sums split at the operator), as a person would; the text is kept on the node
    (:func:`archlang.lower.rules.code` writes it as it is)."""
    names: set[str] = set()
    flat = code(e, names)
    if len(flat) <= _WIDTH:
        return e
    out = copy.copy(e)
    out._code = (_pretty(e, 8), frozenset(names))  # type: ignore[attr-defined]
    return out


def _pretty(e: ast.expr, indent: int) -> str:
    flat = code(e)
    if indent + len(flat) <= _WIDTH + 8:
        return flat
    pad = " " * (indent + 4)
    if isinstance(e, ast.Call):
        if isinstance(e.func, ast.Attribute) and not e.args and not e.keywords:  # x.long() of a long x
            inner = _pretty(e.func.value, indent)
            if isinstance(e.func.value, ast.BinOp | ast.UnaryOp | ast.Compare | ast.BoolOp | ast.IfExp) \
                    and not inner.startswith("(\n"):
                inner = f"({inner})"
            return f"{inner}.{e.func.attr}()"
        parts = [_pretty(a, indent + 4) for a in e.args]
        parts += [f"{k.arg}={_pretty(k.value, indent + 4 + len(str(k.arg)) + 1)}" for k in e.keywords]
        return f"{code(e.func)}(\n" + "".join(f"{pad}{p},\n" for p in parts) + " " * indent + ")"
    if isinstance(e, ast.List):
        return "[\n" + "".join(f"{pad}{_pretty(x, indent + 4)},\n" for x in e.elts) + " " * indent + "]"
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add | ast.Sub):
        sym = "+" if isinstance(e.op, ast.Add) else "-"
        return f"(\n{pad}{_pretty(e.left, indent + 4)}\n{pad}{sym} {_pretty(e.right, indent + 4)}\n{' ' * indent})"
    return flat


def _const_helpers(c: Ctx) -> tuple[str, ...]:
    return tuple(sorted(_const_code(c.op)[1]))  # type: ignore[arg-type]


def _const_interpret(c: Any) -> Any:
    import torch

    from archlang.lower.interpret import EVAL_RULES, EvalCtx

    o = c.op
    vals: dict[str, Any] = {}
    for st in o.steps:
        xs = [vals[r.node] for r in st.inputs]
        out = EVAL_RULES[type(st.op)](EvalCtx(node=st, xs=xs, params={}, train=False, lora={}))
        vals[st.name] = out[0] if isinstance(out, tuple) else out
    v = vals[o.steps[-1].name]
    dt = o.result.dtype
    return v.long() if dt == "int" else v.bool() if dt == "bool" else v.to(torch.float64)


def _const_draw(o: Const, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    kinds = []
    for st in o.steps:
        if st.op.op not in kinds:
            kinds.append(st.op.op)
    return Look("constant", (str(o.result), ", ".join(kinds[:4]) + (" ..." if len(kinds) > 4 else "")), "position")


define(Const, shape=_const_shape, cost=lambda o, ins, outs: _buffer_cost(outs[0]),
       lower=Rule(forward=lambda c: c.mod, module=_const_module, helpers=_const_helpers),
       draw=_const_draw, interpret=_const_interpret,
       example="""
arch t() {
  in x: [B, 4, 4]
  i = rearrange(arange(4), "(n o) -> n o", o = 1)
  j = rearrange(arange(4), "(o n) -> o n", o = 1)
  out y = x * (table: identity((i - j) * 2 + 1))
}
""")


def fold_constants(g: Graph) -> Graph:
    """``g`` with every constant value that the rest of the graph reads replaced by one
    :class:`Const` node (named as the node that produced it) holding the sub-graph that
    computes it; constant nodes nothing else reads are dropped. The graph is returned as it
    is when it has nothing to fold."""
    const: set[str] = set()
    for n in g.nodes:
        cls = type(n.op)
        if cls in SOURCES or (cls in FOLDABLE and n.inputs and all(r.node in const for r in n.inputs)
                              and len(n.outputs) == 1):
            const.add(n.name)
    derived = {n.name for n in g.nodes if n.name in const and type(n.op) not in SOURCES}
    if not derived:
        return g
    keep: set[str] = set()  # constants read by something that is not constant
    for n in g.nodes:
        if n.name not in const:
            keep.update(r.node for r in n.inputs if r.node in const)
    by_name = {n.name: n for n in g.nodes}
    while True:  # a block that keeps a node keeps its tensor arguments and results as values
        alive = {n.scope for n in g.nodes if n.name not in const or n.name in keep}
        more = {r.node for s in g.scopes if _holds(s.path, alive) for r in (*s.inputs, *s.outputs)
                if r.node in const and r.node not in keep}
        if not more:
            break
        keep |= more

    def steps_of(name: str) -> tuple[Node, ...]:
        order: list[str] = []
        seen: set[str] = set()
        todo = [(name, False)]
        while todo:
            cur, done = todo.pop()
            if done:
                order.append(cur)
                continue
            if cur in seen:
                continue
            seen.add(cur)
            todo.append((cur, True))
            todo.extend((r.node, False) for r in reversed(by_name[cur].inputs))
        pos = {n: i for i, n in enumerate(by_name)}
        order.sort(key=pos.__getitem__)
        # named by position (s0, s1 ...), so that every instance of a block holds the same steps
        local = {n: f"s{i}" for i, n in enumerate(order)}
        return tuple(by_name[n].model_copy(update={
            "name": local[n], "scope": "", "vars": (),
            "inputs": tuple(r.model_copy(update={"node": local[r.node]}) for r in by_name[n].inputs)})
            for n in order)

    nodes: list[Node] = []
    for n in g.nodes:
        if n.name not in const:
            nodes.append(n)
        elif n.name in keep:
            if type(n.op) in SOURCES:
                nodes.append(n)
            else:
                nodes.append(n.model_copy(update={"op": Const(steps=steps_of(n.name)), "inputs": ()}))
    used = {n.scope for n in nodes}
    scopes = tuple(s for s in g.scopes if _holds(s.path, used))
    return g.model_copy(update={"nodes": tuple(nodes), "scopes": scopes})


def _holds(path: str, scopes: set[str]) -> bool:
    """Whether the block instance at ``path`` holds (directly or in a nested block) a node of ``scopes``."""
    return any(u == path or u.startswith(path + ".") for u in scopes)


# ----------------------------------------------------------------------------- gather


class Gather(OpBase):
    """``table[index]`` along ``dim``: shape ``table.shape[:dim] + index.shape + table.shape[dim + 1:]``."""

    op: Literal["gather"] = "gather"
    dim: int = 0


@op("gather", ("table", "index"), (Arg("dim", "int", 0),),
    "Index `table` by the int tensor `index` along `dim` (table[index] for dim 0): "
    "[*pre, n, *post] and int[*I] -> [*pre, *I, *post].")
def _gather_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> Gather:
    return Gather(dim=a["dim"])


def _gather_shape(o: Gather, ins: list[TensorType]) -> tuple[TensorType, ...]:
    t, idx = ins
    shapes.expect_min_rank(t, 1, "gather")
    if not -t.rank <= o.dim < t.rank:
        raise shapes.ShapeError("E0304", f"gather: dim {o.dim} is out of range for {t}")
    if idx.dtype != "int":
        raise shapes.ShapeError("E0401", f"gather indexes with an int tensor, got {idx}", input_index=1,
                                help="build the index from `arange` (an int tensor), or cast it")
    d = o.dim % t.rank
    return (TensorType(shape=(*t.shape[:d], *idx.shape, *t.shape[d + 1:]), dtype=t.dtype),)


def _gather_forward(c: Ctx) -> ast.expr:
    o = c.op
    assert isinstance(o, Gather)
    if not c.const("dim"):
        raise LoweringError("gather's dim must be the same in every instance of a block")
    d = o.dim % c.in_types[0].rank
    if d == 0:
        return ast.Subscript(value=c.ins[0], slice=c.ins[1], ctx=ast.Load())
    elts = [ast.Slice() for _ in range(d)] + [c.ins[1]]
    return ast.Subscript(value=c.ins[0], slice=ast.Tuple(elts=elts, ctx=ast.Load()), ctx=ast.Load())


def _gather_interpret(c: Any) -> Any:
    t, idx = c.x(0), c.x(1)
    d = c.op.dim % t.dim()
    flat = t.index_select(d, idx.reshape(-1).long())
    return flat.reshape(*t.shape[:d], *idx.shape, *t.shape[d + 1:])


def _gather_cost(o: Gather, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    # a copy; the backward scatters through the index, which it keeps (a buffer or a graph
    # tensor already counted where it is made)
    return OpCost()


define(Gather, shape=_gather_shape, cost=_gather_cost, lower=Rule(forward=_gather_forward), draw=lambda o, ins, outs:
       Look("gather", (f"dim {o.dim}",), "reshape"), interpret=_gather_interpret,
       example="""
arch t() {
  in x: [B, 3, 7, 2]
  idx = rearrange(12 - arange(12, start = 1), "(a b) -> a b", b = 6)
  y = gather(table: param([13, 2], init = "normal", std = 1.0), idx)
  out z = gather(x, rearrange(arange(3), "(a b) -> a b", b = 1), dim = 2)
  out w = y
}
""")
foldable(Gather)


# ----------------------------------------------------------------------------- attention scores


class AttentionScores(OpBase):
    """The identity on an attention matrix written by hand, ``[B, H, N, M]``: the cost report
    counts its ``B * H * N * M`` entries as the layer's attention matrix."""

    op: Literal["attention_scores"] = "attention_scores"
    heads: int


@op("attention_scores", ("s",), (),
    "Mark a hand-written attention matrix [B, H, N, M] (talking heads): the identity, counted in the "
    "attention-memory report.")
def _scores_sig(ctx: Any, ins: list[TensorType], a: dict[str, Any]) -> AttentionScores:
    if ins[0].rank != 4:
        raise BuildError("E0302", f"attention_scores expects [B, H, N, M], got {ins[0]}")
    return AttentionScores(heads=const_dim(ctx, ins[0].shape[1], "the head count of attention_scores"))


def _scores_shape(o: AttentionScores, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (s,) = ins
    shapes.expect_rank(s, 4, "attention_scores")
    shapes.expect_equal(s.shape[1], o.heads, f"attention_scores over {o.heads} heads, got {fmt(s.shape[1])}")
    return (s,)


def _scores_cost(o: AttentionScores, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    per_head = product(ins[0].shape[2:])
    return OpCost(attn_entries=numel(ins[0]), attn_per_head=per_head, attn_global_per_head=per_head)


define(AttentionScores, shape=_scores_shape, cost=_scores_cost, lower=Rule(forward=lambda c: c.x()),
       draw=lambda o, ins, outs: Look("scores", (f"{o.heads} heads",), "attention"),
       interpret=lambda c: c.x(),
       example="""
arch t() {
  in q: [B, 2, 5, 4]
  in k: [B, 2, 5, 4]
  out p = softmax(attention_scores(q @ rearrange(k, "b h n d -> b h d n") * 0.5))
}
""")

