"""Generate a standalone PyTorch module (Python source) from a checked IR graph.

Takes: a :class:`~archlang.ir.Graph`. Produces: Python source that imports only torch and
the standard library: the prelude helpers it needs, one ``nn.Module`` class per distinct
block structure, and the model class, whose ``forward`` is straight-line code with shape
comments. Block instances that differ only in attribute values share a class; the values
that differ become constructor arguments (named after the block's parameters where they
match). Submodules are named after the IR hierarchy, so ``state_dict`` keys equal node names.
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlang.check.rows import prune_dead_rows
from archlang.ir import ops as O
from archlang.ir.dims import Dim, fmt
from archlang.ir.graph import Graph, Node, Scope, ValueRef
from archlang.ir.types import FLOAT_DTYPES, TensorType
from archlang.lower.rules import (
    LOWER_RULES,
    MAX_INDEX_GAP,
    Ctx,
    E,
    LoweringError,
    access_node,
    attr,
    call,
    camel,
    code,
    comment_text,
    doc,
    fresh_value,
    helpers_of,
    ident,
    is_index,
    state_key,
    tied_alias,
)
from archlang.lower.rules import lit as _lit

PRELUDE = Path(__file__).resolve().parent / "prelude.py"
# attributes whose per-instance values the lowering rule handles itself (not constructor arguments)
RULE_HANDLED = {("rearrange", "axes"), ("const", "steps")}
# attributes that change the code itself, not just a value: instances differing in them get
# different classes
STRUCTURAL = (("activation", "fn"), ("binary", "fn"), ("pos_embed", "kind"), ("conv2d", "standardize"),
              ("rearrange", "lhs"), ("rearrange", "rhs"), ("tied_linear", "source"), ("pool2d", "kind"),
              ("mean", "keepdim"), ("const", "steps"),  # a build-time constant's code (archlang.ops.tensor)
              # attend's expressions are written into the code as lambdas (archlang.ops.attention)
              ("attend", "bias"), ("attend", "mask"), ("attend", "score"), ("attend", "causal"))


def lit(v: Any) -> ast.expr:
    """A value as an expression; a symbolic size is refused with its name."""
    if isinstance(v, Dim):
        raise LoweringError(f"a symbolic size `{fmt(v)}` cannot be a constructor argument")
    if isinstance(v, tuple):
        return ast.Tuple(elts=[lit(x) for x in v], ctx=ast.Load())
    return _lit(v)


def literal(v: Any) -> str:
    return code(lit(v))


def _attr_value(op: O.OpBase, name: str) -> Any:
    if name.startswith("axis:") and isinstance(op, O.Rearrange):  # one rearrange axis size
        return next(a.size for a in op.axes if a.name == name[5:])
    v = getattr(op, name)
    if isinstance(v, tuple) and v and hasattr(v[0], "model_dump"):
        return tuple(tuple(x.model_dump().values()) for x in v)
    return v


# ----------------------------------------------------------------------------- instance tree


@dataclass(eq=False)
class Inst:
    """The root graph or one block instance, with its items in execution order."""

    path: str
    scope: Scope | None
    items: list[Node | Inst] = field(default_factory=list)
    cls: ClassPlan | None = None
    ctor: dict[str, Any] = field(default_factory=dict)  # constructor argument values for this instance

    def local(self, name: str) -> str:
        return name[len(self.path) + 1:] if self.path else name

    def node_at(self, local: str) -> Node | None:
        """The first node item named ``local`` (relative to this instance), in O(1)."""
        return self._index()[0].get(local)

    def children_at(self, local: str) -> list[Inst]:
        """The child instances at ``local``."""
        return self._index()[1].get(local, [])

    def _index(self) -> tuple[dict[str, Node], dict[str, list[Inst]]]:
        idx = self.__dict__.get("_idx")
        if idx is None:
            nodes: dict[str, Node] = {}
            children: dict[str, list[Inst]] = {}
            for it in self.items:
                if isinstance(it, Node):
                    nodes.setdefault(self.local(it.name), it)
                else:
                    children.setdefault(self.local(it.path), []).append(it)
            idx = self.__dict__["_idx"] = (nodes, children)
        return idx

    @property
    def inputs(self) -> tuple[ValueRef, ...]:
        return self.scope.inputs if self.scope else ()

    @property
    def outputs(self) -> tuple[ValueRef, ...]:
        return self.scope.outputs if self.scope else ()


def build_tree(g: Graph) -> Inst:
    root = Inst(path="", scope=None)
    insts: dict[str, Inst] = {"": root}
    by_path = {s.path: s for s in g.scopes}
    chains: dict[str, list[str]] = {"": []}

    def parent_path(path: str) -> str:
        """The longest scope path that is a dotted prefix of ``path`` ("" for the top level)."""
        i = path.rfind(".")
        while i >= 0:
            if path[:i] in by_path:
                return path[:i]
            i = path.rfind(".", 0, i)
        return ""

    def chain(path: str) -> list[str]:
        """The scope paths from the outermost down to ``path``."""
        todo = []
        while path not in chains:
            todo.append(path)
            path = parent_path(path)
        for p in reversed(todo):
            chains[p] = [*chains[path], p]
            path = p
        return chains[path]

    for n in g.nodes:
        parent = root
        for p in chain(n.scope):
            if p not in insts:
                insts[p] = Inst(path=p, scope=by_path[p])
                parent.items.append(insts[p])
            parent = insts[p]
        parent.items.append(n)
    return root


# ----------------------------------------------------------------------------- class plans


@dataclass(eq=False)
class ClassPlan:
    name: str
    block: str
    instances: list[Inst]
    args: list[str] = field(default_factory=list)  # constructor arguments, in order
    # (item local, field) -> (constructor argument, multiple): the value is `multiple * argument`
    arg_of: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    helpers: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)  # names the generated class mentions
    uses_container: bool = False
    uses_checkpoint: bool = False  # forward runs blocks through torch.utils.checkpoint


def _wiring(inst: Inst, ref: ValueRef, produced: dict[tuple[str, int], tuple]) -> tuple:
    if ref in inst.inputs:
        return ("in", inst.inputs.index(ref))
    key = (ref.node, ref.index)
    if key in produced:
        return produced[key]
    raise LoweringError(f"`{inst.path}` reads `{ref.node}`, which is outside the block")


def structure(inst: Inst, lora: dict[str, tuple]) -> tuple:
    """The structure of an instance: items, op kinds and wiring, but not attribute values."""
    produced: dict[tuple[str, int], tuple] = {}
    out = []
    for it in inst.items:
        if isinstance(it, Node):
            wires = tuple(_wiring(inst, r, produced) for r in it.inputs)
            shape_of_code = tuple(getattr(it.op, f) for op_name, f in STRUCTURAL if op_name == it.op.op)
            out.append(("node", inst.local(it.name), it.op.op, wires, len(it.outputs), lora.get(it.name),
                        shape_of_code, inst.local(it.shares) if it.shares else None))
            for i in range(len(it.outputs)):
                produced[(it.name, i)] = ("node", inst.local(it.name), i)
        else:
            assert it.cls is not None
            wires = tuple(_wiring(inst, r, produced) for r in it.inputs)
            out.append(("child", inst.local(it.path), it.cls.name, wires))
            for i, r in enumerate(it.outputs):
                if (r.node, r.index) not in produced:
                    produced[(r.node, r.index)] = ("child", inst.local(it.path), i)
    outs = tuple(_wiring(inst, r, produced) for r in inst.outputs)
    return (tuple(out), outs)


def fields_of(inst: Inst) -> dict[tuple[str, str], Any]:
    """Every attribute value of an instance: op attributes and children's constructor values."""
    vals: dict[tuple[str, str], Any] = {}
    for it in inst.items:
        if isinstance(it, Node):
            for f in type(it.op).model_fields:
                if f != "op" and (it.op.op, f) not in RULE_HANDLED:
                    vals[(inst.local(it.name), f)] = _attr_value(it.op, f)
            if isinstance(it.op, O.Rearrange):  # concrete axis sizes may become arguments
                for a in it.op.axes:
                    if isinstance(a.size, int):
                        vals[(inst.local(it.name), f"axis:{a.name}")] = a.size
        else:
            for k, v in it.ctor.items():
                vals[(inst.local(it.path), k)] = v
    return vals


def plan_classes(root: Inst, arch: str, lora: dict[str, tuple], graph: Graph | None = None) -> list[ClassPlan]:
    """Group instances bottom-up into classes; decide each class's constructor arguments."""
    depth: dict[int, list[Inst]] = defaultdict(list)

    def walk(i: Inst, d: int) -> None:
        depth[d].append(i)
        for it in i.items:
            if isinstance(it, Inst):
                walk(it, d + 1)

    walk(root, 0)
    plans: list[ClassPlan] = []
    names: Counter[str] = Counter()
    taken: set[str] = set()
    for d in sorted(depth, reverse=True):
        groups: dict[tuple, list[Inst]] = {}
        for inst in depth[d]:
            key = (inst.scope.block if inst.scope else f"arch:{arch}", structure(inst, lora))
            groups.setdefault(key, []).append(inst)
        for (block, _), insts in groups.items():
            base = camel(arch) if block.startswith("arch:") else camel(block)
            names[base] += 1
            name = base if names[base] == 1 else f"{base}{names[base]}"
            while name in taken:  # `Mlp2` may also be the name of a block called `mlp2`
                names[base] += 1
                name = f"{base}{names[base]}"
            taken.add(name)
            plan = ClassPlan(name=name, block=block, instances=insts)
            _choose_args(plan, graph)
            for inst in insts:
                inst.cls = plan
            plans.append(plan)
    return plans  # innermost blocks first, the model class last


# op attributes and child-constructor arguments that are sizes: in a class shared by several
# instances they become constructor arguments when a block dim or parameter names them, even
# where every instance has the same value (`nn.Linear(C, hidden)`, not `nn.Linear(768, 3072)`)
SIZE_FIELDS = frozenset({"in_features", "out_features", "dim", "channels", "in_channels", "out_channels", "heads",
                         "num", "context_dim", "dim_out", "hidden", "groups"})
SIZE_ONLY_EXACT = frozenset({"heads", "head_dim", "groups", "num"})  # never written as `m * C`
MULTIPLES = range(2, 9)  # `4 * C`: a size that is a small multiple of a block dim


def _is_size(v: Any) -> bool:
    return type(v) is int and v >= 2


def _choose_args(plan: ClassPlan, graph: Graph | None = None) -> None:
    per_inst = [fields_of(i) for i in plan.instances]
    if len(plan.instances) == 1 or not per_inst[0]:
        return
    scope0 = plan.instances[0].scope
    dims = [p.name for p in scope0.dims] if scope0 is not None else []
    params = [p.name for p in scope0.args] if scope0 is not None else []
    scope_values = [_scope_values(i.scope) for i in plan.instances]
    series: dict[str, list[Any]] = {}

    def values_of(cand: str) -> list[Any]:
        if cand not in series:
            series[cand] = [sv.get(cand) for sv in scope_values]
        return series[cand]

    int_params = {p.name for p in scope0.args if p.type == "int"} if scope0 is not None else set()
    # the dims that are an input's last (channel) axis: only they are scaled (`4 * C`, never `2 * N`)
    last_axes = [[graph.type_of(r).shape[-1] for r in i.inputs if graph.type_of(r).rank]
                 for i in plan.instances] if graph is not None else []
    channels = {d for d in dims if last_axes and all(values_of(d)[k] in axes for k, axes in enumerate(last_axes))}

    def int_param(cand: str) -> bool:
        return cand in int_params

    def size_like(field_name: str) -> bool:
        return field_name in SIZE_FIELDS or field_name in dims or "dim" in field_name or "hidden" in field_name \
            or (len(field_name) == 1 and field_name.isupper())

    used: dict[str, list[Any]] = {}
    for key in per_inst[0]:
        values = [v[key] for v in per_inst]
        varies = any(v != values[0] for v in values[1:])
        local, f = key
        size = size_like(f) and all(_is_size(v) for v in values)
        # 1. a block dim (the input's sizes) or parameter with exactly these values names it
        choice: tuple[str, int] | None = None
        for cand in dims + params:
            if values_of(cand) == values and (varies or (size and (cand in dims or cand == f or int_param(cand)))):
                choice = (cand, 1)
                break
        # 2. a small multiple of a block dim or integer parameter, the smallest there is: `4 * C`
        if choice is None and size and f not in SIZE_ONLY_EXACT:
            for cand in [d for d in dims if d in channels] + \
                    [p for p in params if int_param(p) and size_like(p) and p not in SIZE_ONLY_EXACT]:
                cv = values_of(cand)
                if all(_is_size(v) for v in cv):
                    m = next((m for m in MULTIPLES if all(m * c == v for c, v in zip(cv, values, strict=True))),
                             None)
                    if m is not None and (choice is None or m < choice[1]):
                        choice = (cand, m)
        if choice is None and not varies:
            continue
        if choice is not None:
            name = ident(choice[0] if choice[0] != "B" else "batch")
            mult = choice[1]
            values = values_of(choice[0])
        else:
            mult = 1
            name = next((n for n, vs in used.items() if vs == values), None) or ident(
                f"{local.split('.')[-1] if not local.split('.')[-1].isdigit() else local}_{f}".replace(".", "_"))
        while name in used and used[name] != values:
            name = f"{name}_"
        used[name] = values
        plan.arg_of[key] = (name, mult)
        if name not in plan.args:
            plan.args.append(name)
    for inst, sv in zip(plan.instances, range(len(plan.instances)), strict=True):
        inst.ctor = {n: used[n][sv] for n in plan.args}


def _scope_values(scope: Scope | None) -> dict[str, Any]:
    """Every parameter and dim of a block instance by name (the first, like :func:`_scope_value`)."""
    out: dict[str, Any] = {}
    for p in (*scope.args, *scope.dims) if scope is not None else ():
        out.setdefault(p.name, p.value)
    return out


def _scope_value(scope: Scope | None, name: str) -> Any:
    if scope is None:
        return None
    for p in (*scope.args, *scope.dims):
        if p.name == name:
            return p.value
    return None


# ----------------------------------------------------------------------------- code for one class


class ModuleTree:
    """Attribute paths of a class's submodules/parameters -> constructor expressions, as a tree."""

    def __init__(self, taken: set[str] | None = None) -> None:
        self.root: dict[str, Any] = {}
        self.uses_container = False
        self.taken = set(taken or ())  # names bound in __init__ (a comprehension's variable must differ)
        self.names: set[str] = set()  # the bare names the written code mentions

    def add(self, local: str, expr: ast.expr) -> None:
        parts = [p if is_index(p) else attr(p) for p in local.split(".")]
        d = self.root
        for p in parts[:-1]:
            nxt = d.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise LoweringError(f"`{local}` is nested under a layer of its own")
            d = nxt
        if parts[-1] in d:
            raise LoweringError(f"two layers are named `{local}`")
        d[parts[-1]] = expr

    def expr(self, d: dict[str, Any], indent: str) -> str:
        keys = list(d)
        inner = indent + "    "
        if all(is_index(k) for k in keys):
            n = max(int(k) for k in keys) + 1
            if n - len(keys) > MAX_INDEX_GAP:
                raise LoweringError(f"index {n - 1} leaves {n - len(keys):,} empty entries in a module list "
                                    f"(at most {MAX_INDEX_GAP:,})")
            items = [d.get(str(i), IDENTITY) for i in range(n)]
            if n >= 2 and not any(isinstance(x, dict) for x in items):
                comp = self._comprehension(items)
                # all but a different last one (ViT's, on the class token alone: archlang.check.rows)
                tail = self._comprehension(items[:-1]) if comp is None and n >= 3 else None
                if comp is not None or tail is not None:
                    one, loop = comp or tail  # type: ignore[misc]
                    last = "" if comp is not None else f" + [{code(items[-1], self.names)}]"
                    if len(indent) + len(one) + len(loop) + len(last) + 30 <= 120:
                        return f"nn.ModuleList([{one} {loop}]{last})"
                    return f"nn.ModuleList([\n{inner}{one}\n{inner}{loop}\n{indent}]{last})"
            parts = [self.expr(x, inner) if isinstance(x, dict) else code(x, self.names) for x in items]
            return "nn.ModuleList([\n" + "".join(f"{inner}{p},\n" for p in parts) + f"{indent}])"
        self.uses_container = True
        parts = [f"{k}={self.expr(v, inner) if isinstance(v, dict) else code(v, self.names)}" for k, v in d.items()]
        return "_container(\n" + "".join(f"{inner}{p},\n" for p in parts) + f"{indent})"

    def _comprehension(self, items: list[ast.expr]) -> tuple[str, str] | None:
        """``Block(dim=96, shift=(0, 0) if i % 2 == 0 else (3, 3)) for i in range(n)`` when the
        entries are calls of one constructor whose arguments are equal or follow ``i``."""
        first = items[0]
        if not isinstance(first, ast.Call):
            return None
        func = code(first.func)
        kw_names = [k.arg for k in first.keywords]
        calls: list[ast.Call] = []
        for x in items:
            if not (isinstance(x, ast.Call) and code(x.func) == func and len(x.args) == len(first.args)
                    and [k.arg for k in x.keywords] == kw_names):
                return None
            calls.append(x)
        var = "i"
        while var in self.taken:
            var += "_"
        i = ast.Name(id=var, ctx=ast.Load())
        uses_i = False
        args: list[ast.expr] = []
        for j in range(len(first.args)):
            e = _series([c.args[j] for c in calls], i)
            if e is None:
                return None
            uses_i |= e[1]
            args.append(e[0])
        keywords = []
        for j, k in enumerate(kw_names):
            e = _series([c.keywords[j].value for c in calls], i)
            if e is None:
                return None
            uses_i |= e[1]
            keywords.append(ast.keyword(arg=k, value=e[0]))
        one = ast.Call(func=first.func, args=args, keywords=keywords)
        return code(one, self.names), f"for {var if uses_i else '_'} in range({len(items)})"

    def lines(self) -> list[str]:
        out = []
        for k, v in self.root.items():
            text = self.expr(v, "        ") if isinstance(v, dict) else code(v, self.names)
            out.append(f"        self.{k} = {text}")
        return out


IDENTITY = E("nn.Identity()")


def _series(values: list[ast.expr], i: ast.expr) -> tuple[ast.expr, bool] | None:
    """One expression of ``i`` that gives ``values[i]`` for each i (and whether it mentions ``i``):
    the common value, ``dpr[k0 + i]``, ``a + b * i`` or ``a if i % 2 == 0 else b``; None if none does."""
    texts = [code(v) for v in values]
    n = len(values)
    if all(t == texts[0] for t in texts):
        return values[0], False
    # consecutive entries of one list: dpr[2 + i]
    if all(isinstance(v, ast.Subscript) and isinstance(v.slice, ast.Constant) and type(v.slice.value) is int
           for v in values):
        subs = [v for v in values if isinstance(v, ast.Subscript)]
        base = code(subs[0].value)
        k0 = subs[0].slice.value  # type: ignore[attr-defined]
        if all(code(s.value) == base and s.slice.value == k0 + j for j, s in enumerate(subs)):  # type: ignore[attr-defined]
            return ast.Subscript(value=subs[0].value, slice=E("k + i", k=k0, i=i) if k0 else i, ctx=ast.Load()), True
    nums = [v.value if isinstance(v, ast.Constant) and type(v.value) is int else None for v in values]
    if n >= 3 and all(x is not None for x in nums):
        a, b = nums[0], nums[1] - nums[0]  # type: ignore[operator]
        if all(x == a + b * j for j, x in enumerate(nums)):  # type: ignore[operator]
            step = i if b == 1 else E("b * i", b=b, i=i)
            return (step if a == 0 else E("a + s", a=a, s=step)), True
    numeric = all(isinstance(v, ast.Constant) and type(v.value) in (int, float) for v in values)
    if (n >= 3 or not numeric) and texts[0] != texts[1] and \
            all(t == texts[j % 2] for j, t in enumerate(texts)):
        return E("a if i % 2 == 0 else b", a=values[0], b=values[1], i=i), True
    return None


def _schedules(calls: list[ast.Call], taken: set[str]) -> list[str]:
    """Per-instance float series (a drop-path schedule) that are exactly linear in the instance
    index become one list (``dpr = [0.2 * k / 11 for k in range(12)]``) that the calls index;
    returns the lines that define the lists (the calls are changed in place)."""
    by_name: dict[str, list[ast.keyword]] = {}
    for c in calls:
        for k in c.keywords:
            if k.arg and isinstance(k.value, ast.Constant) and type(k.value.value) is float:
                by_name.setdefault(k.arg, []).append(k)
    lines = []
    for arg, kws in by_name.items():
        vals = [k.value.value for k in kws]  # type: ignore[attr-defined]
        n = len(vals)
        if n < 3 or vals[0] != 0.0 or len(set(vals)) < 3:
            continue
        d = n - 1
        # the rate as the spec wrote it (0.05, where the last value is 0.05000000000000001)
        r = next((r for r in (float(f"{vals[-1]:.12g}"), vals[-1])
                  if all(r * k / d == v for k, v in enumerate(vals))), None)
        if r is None:
            continue
        var = ident(arg)
        while var in taken:
            var += "_"
        taken.add(var)
        lines.append(f"        {var} = {code(E('[r * k / d for k in range(n)]', r=r, d=d, n=n))}"
                     f"  # `{comment_text(arg)}` of each block in turn")
        for j, k in enumerate(kws):
            k.value = ast.Subscript(value=ast.Name(id=var, ctx=ast.Load()), slice=ast.Constant(j), ctx=ast.Load())
    return lines


def shape_comment(types: list[TensorType], dims: dict[str, list[int]] | None = None,
                  named: frozenset[str] | set[str] = frozenset()) -> str:
    """``[B, 197, 768]``; for a class shared by instances of different sizes, dims that vary
    are written by name (``[B, H, W, C]``) when a block dim matches them."""
    per_pos = []
    first = types[0]
    taken: set[str] = set()
    for i, d in enumerate(first.shape):
        vals = [t.shape[i] if i < t.rank else None for t in types]
        constant = all(v == d for v in vals)
        if constant and not any(k in named and series[:1] == [d] for k, series in (dims or {}).items()):
            per_pos.append(fmt(d))
            continue
        name = None
        for k, series in (dims or {}).items():
            if (k in named or not constant) and series == ([d] * len(series) if constant else vals) \
                    and k not in taken:
                name = k
                break
        if name:
            taken.add(name)
        per_pos.append(name or (fmt(d) if constant else "…"))
    return "[" + ", ".join(per_pos) + "]"


def _index_split(local: str) -> tuple[str, int] | None:
    """``layers.0.blocks.3`` -> (``layers.0.blocks``, 3); None when the last level is not an index."""
    pre, _, last = local.rpartition(".")
    return (pre, int(last)) if pre and is_index(last) else None


_REGIONS: ContextVar[bool] = ContextVar("archlang_compile_regions", default=False)


@contextmanager
def compile_regions(on: bool = True) -> Iterator[None]:
    """Inside the block, :func:`generate` marks the ``forward`` of the outermost repeated block
    classes whose instances can share code (:func:`_region_classes`)
    ``@torch.compiler.nested_compile_region``: ``torch.compile`` then compiles one instance and
    reuses the code for the instances that match it (hierarchical compilation), instead of
    compiling every instance inlined; eager runs compute the same. The price is that Inductor
    no longer fuses across block boundaries (``benchmarks/compile_time.py`` measures both).
    Not tested with activation checkpointing or ``torch.export``: export the default build."""
    token = _REGIONS.set(on)
    try:
        yield
    finally:
        _REGIONS.reset(token)


_DEAD_ROWS: ContextVar[bool] = ContextVar("archlang_dead_rows", default=True)


@contextmanager
def dead_rows(on: bool = True) -> Iterator[None]:
    """Whether :func:`generate` leaves out the rows that no output reads inside the block
    (:func:`archlang.check.rows.prune_dead_rows`: a ViT's last block runs on its class token
    alone). On by default, as the cost report (``cost_graph``) assumes; ``dead_rows(False)``
    (``archlang.build(..., keep_dead_rows=True)``, ``archc build --keep-dead-rows``) computes
    every row the spec writes, as timm's models do."""
    token = _DEAD_ROWS.set(on)
    try:
        yield
    finally:
        _DEAD_ROWS.reset(token)


def _region_classes(plans: list[ClassPlan]) -> set[str]:
    """The classes :func:`compile_regions` marks, outermost first: a class with two instances
    alike (the same constructor arguments, so that they can share compiled code), none of its
    instances inside an instance of a class marked already. A class whose instances all differ
    (stages of different widths, blocks with their own drop-path rates) is passed over for the
    repeated blocks inside it."""
    def alike(p: ClassPlan) -> bool:
        seen: list[dict] = []
        for i in p.instances:
            if i.ctor in seen:
                return True
            seen.append(i.ctor)
        return False

    marked: set[str] = set()
    inside: list[str] = []  # the paths of the marked instances
    for p in sorted(plans, key=lambda p: min(i.path.count(".") for i in p.instances) if p.instances else 0):
        if len(p.instances) < 2 or not alike(p):
            continue
        if any(i.path.startswith(f"{o}.") for i in p.instances for o in inside):
            continue
        marked.add(p.name)
        inside.extend(i.path for i in p.instances)
    return marked


def _shortened_blocks(graph: Graph, pruned: Graph) -> frozenset[str]:
    """The repeated block instances (:meth:`Graph.block_instances`) in which ``pruned`` computes
    fewer rows than ``graph``: each has a class of its own, called outside the loop over the others."""
    before = graph.by_name
    changed = {n.scope for n in pruned.nodes if before.get(n.name) != n}
    return frozenset(b for b in graph.block_instances() if any(s == b or s.startswith(b + ".") for s in changed))


def gen_class(plan: ClassPlan, is_root: bool, graph: Graph, lora: dict[str, tuple],
              region: bool = False, alone: frozenset[str] = frozenset()) -> list[str]:
    insts = plan.instances
    inst0 = insts[0]
    head = _classifier_head(graph, lora) if is_root else None
    head_expr: ast.expr | None = None  # the head applied to `x`, for forward_head
    # a checkpoint plan (spec statements or archc build --max-memory): every repeated top-level
    # block instance gets a run-time switch, `blk.grad_checkpointing`; the plan's are on at first
    ckpt_plan = checkpoint_plan(graph) if is_root else ()
    ckpt_blocks = set(graph.block_instances()) if ckpt_plan else set()
    # timm's switch (`self.grad_checkpointing`) covers the loops of repeated blocks, and the
    # blocks of a list in which one has its dead rows left out (`alone`), called outside a loop:
    # ViT's last block, which runs on the class token alone (archlang.check.rows), and the
    # first when there are two
    lists = {_index_split(b)[0] for b in alone if _index_split(b)}
    timm_blocks = ({b for b in graph.block_instances() if (_index_split(b) or ("",))[0] in lists}
                   if head is not None and not ckpt_plan else set())
    fwd_args_used: set[str] = set()
    tree = ModuleTree(set(plan.args) | {"self"})
    tied: list[str] = []  # `self.lm_head.weight = self.wte.weight`: labelled tied heads (tied_alias)
    # value names in forward
    names: dict[tuple[str, int], str] = {}
    if is_root:
        params = _distinct([ident(n) for n in graph.inputs])
    else:
        assert inst0.scope is not None
        params = _distinct([ident(n) for n in inst0.scope.input_names])
    in_refs = [ValueRef(node=n) for n in graph.inputs] if is_root else list(inst0.inputs)
    for r, p in zip(in_refs, params, strict=False):
        names.setdefault((r.node, r.index), p)
    # uses, for liveness-based naming and inlining
    uses: Counter[tuple[str, int]] = Counter()
    last_use: dict[tuple[str, int], int] = {}
    items = inst0.items
    for idx, it in enumerate(items):
        # an output is read by the `return` at the end, not where its `out` statement stands:
        # its name must stay alive until then (`out a = x; x = relu(x)` keeps `a` the input)
        at = len(items) if isinstance(it, Node) and isinstance(it.op, O.Output) else idx
        for r in it.inputs:
            uses[(r.node, r.index)] += 1
            last_use[(r.node, r.index)] = max(at, last_use.get((r.node, r.index), -1))
    for r in inst0.outputs:
        uses[(r.node, r.index)] += 1
        last_use[(r.node, r.index)] = len(items)
    dims_series: dict[str, list[int]] = {}
    if inst0.scope is not None:
        for p in inst0.scope.dims:
            dims_series[p.name] = [_scope_value(i.scope, p.name) for i in insts]
    runs = _chained_runs(items, inst0, uses, last_use)
    producers = {it.name: it for it in items if isinstance(it, Node)}  # nodes of this instance, by name
    arg_names = set(plan.args)  # sizes that are constructor arguments are named in shape comments

    body: list[str] = []
    fwd_names: set[str] = set()  # the bare names forward mentions
    child_calls: list[ast.Call] = []
    # single-use values are inlined into their consumer when it is the very next statement
    pending: dict[tuple[str, int], tuple[ast.expr, str, str]] = {}  # key -> (expr, comment, preferred name)
    live_names: dict[str, tuple[str, int]] = {p: (r.node, r.index) for r, p in zip(in_refs, params, strict=False)}

    def ref_code(r: ValueRef) -> ast.expr:
        key = (r.node, r.index)
        if key in pending:
            return pending.pop(key)[0]
        return ast.Name(id=names[key], ctx=ast.Load())

    def emit(targets: str, expr: ast.expr, comment: str, indent: str = "        ") -> None:
        body.append(f"{indent}{targets} = {code(expr, fwd_names)}{comment}")

    def flush(consumer_inputs: list[ValueRef], at: int) -> None:
        wanted = {(r.node, r.index) for r in consumer_inputs}
        for key in [k for k in pending if k not in wanted]:
            expr, comment, pref = pending.pop(key)
            v = fresh(pref, at)
            names[key] = v
            live_names[v] = key
            emit(v, expr, comment)

    def is_dead(name: str, at: int) -> bool:
        key = live_names.get(name)
        return key is None or last_use.get(key, -1) <= at

    def fresh(preferred: str, at: int) -> str:
        base = ident(preferred)
        cand = base
        n = 1
        while cand in live_names and not is_dead(cand, at):
            cand = f"{base}_{n}"
            n += 1
        return cand

    def add_child(it: Inst) -> str:
        child_local = inst0.local(it.path)
        assert it.cls is not None
        kwargs = {}
        for a in it.cls.args:
            key = (child_local, a)
            kwargs[a] = arg_code(plan.arg_of[key], "") if key in plan.arg_of else lit(it.ctor[a])
        ctor = call(ast.Name(id=it.cls.name, ctx=ast.Load()), **kwargs)
        assert isinstance(ctor, ast.Call)
        child_calls.append(ctor)
        tree.add(child_local, ctor)
        return child_local

    def out_comment(children: list[Inst], k: int) -> str:
        return shape_comment([_child_out_type(graph, c, k) for c in children], dims_series, arg_names)

    skip_to = -1
    for idx, it in enumerate(items):
        if idx < skip_to:
            continue
        if not (isinstance(it, Node) and isinstance(it.op, O.Input)):
            # a classifier's output reads the head, which forward_head applies: keep its input pending
            at_out = head is not None and isinstance(it, Node) and isinstance(it.op, O.Output)
            flush([head.inputs[0]] if at_out and head is not None else list(it.inputs), idx)
        if idx in runs:  # consecutive instances of one class, each feeding the next: a loop
            run = items[idx:runs[idx] + 1]
            skip_to = runs[idx] + 1
            locs = [add_child(c) for c in run if isinstance(c, Inst)]
            r0 = it.inputs[0]
            k0 = (r0.node, r0.index)
            first_out = it.scope.output_vars[0] if it.scope and it.scope.output_vars else ""
            if k0 in pending:
                expr, comment, pref = pending.pop(k0)
                v = fresh(first_out or pref, idx)
                names[k0] = v
                live_names[v] = k0
                emit(v, expr, comment)
            v = names[k0]
            blk = fresh("blk", idx)
            while blk in (v, *params):
                blk += "_"
            split = _index_split(locs[0])
            assert split is not None
            prefix, start = split
            target: ast.expr = access_node(prefix)
            if not (start == 0 and len(run) == _list_length(items, inst0, prefix)):
                target = ast.Subscript(value=target, slice=ast.Slice(lower=lit(start) if start else None,
                                                                     upper=lit(start + len(run))), ctx=ast.Load())
            children = [ch for i in insts for loc in locs for ch in i.children_at(loc)]
            body.append(f"        for {blk} in {code(target)}:")
            rest = [ref_code(r) for r in it.inputs[1:]]
            step = call(ast.Name(id=blk, ctx=ast.Load()), ast.Name(id=v, ctx=ast.Load()), *rest)
            shape = comment_text(out_comment(children, 0))
            if head is not None or ckpt_plan:  # timm's activation checkpointing of repeated blocks
                plan.uses_checkpoint = True
                ckpt = call("torch.utils.checkpoint.checkpoint", ast.Name(id=blk, ctx=ast.Load()),
                            ast.Name(id=v, ctx=ast.Load()), *rest, use_reentrant=lit(False))
                flag = f"{blk}.grad_checkpointing" if ckpt_plan else "self.grad_checkpointing"  # per instance
                body.append(f"            if {flag} and torch.is_grad_enabled() and not torch.jit.is_scripting():")
                body.append(f"                {v} = {code(ckpt, fwd_names)}  # {shape}")
                body.append("            else:")
                body.append(f"                {v} = {code(step, fwd_names)}  # {shape}")
            else:
                body.append(f"            {v} = {code(step, fwd_names)}  # {shape}")
            last = run[-1].outputs[0]
            names[(last.node, last.index)] = v
            live_names[v] = (last.node, last.index)
            continue
        if isinstance(it, Inst):
            child_local = add_child(it)
            args = [ref_code(r) for r in it.inputs]
            call_expr = call(access_node(child_local), *args)
            outs = it.outputs
            comment = "  # " + comment_text(", ".join(
                out_comment(_matching_children(insts, child_local), k) for k in range(len(outs))))
            keys = [(r.node, r.index) for r in outs]
            first_in = names.get((it.inputs[0].node, it.inputs[0].index)) if it.inputs else None
            nxt = items[idx + 1] if idx + 1 < len(items) else None
            # a checkpointable instance of a planned model, or under timm's switch: not inlined
            switched = it.path in ckpt_blocks or it.path in timm_blocks
            if len(keys) == 1 and keys[0] not in names and uses[keys[0]] == 1 and len(code(call_expr)) <= 70 \
                    and isinstance(nxt, Node) and not isinstance(nxt.op, O.Output) and not switched:
                pref = (it.scope.output_vars[0] if it.scope and it.scope.output_vars else "") \
                    or child_local.split(".")[-1]
                pending[keys[0]] = (call_expr, comment, first_in or "x" if pref.isdigit() else pref)
                continue
            var_names = []
            for j, key in enumerate(keys):
                if key in names:  # returned one of its inputs unchanged
                    var_names.append(f"_{j}")
                    continue
                hint = it.scope.output_vars[j] if it.scope and j < len(it.scope.output_vars) else ""
                pref = hint or (first_in if (j == 0 and first_in and is_dead(first_in, idx))
                                else child_local.split(".")[-1])
                if pref.isdigit():
                    pref = first_in or "x"
                v = fresh(pref, idx)
                names[key] = v
                live_names[v] = key
                var_names.append(v)
            if switched:
                plan.uses_checkpoint = True
                mod = access_node(child_local)
                ckpt = call("torch.utils.checkpoint.checkpoint", mod, *args, use_reentrant=lit(False))
                flag = f"{code(mod)}.grad_checkpointing" if ckpt_plan else "self.grad_checkpointing"
                body.append(f"        if {flag} and torch.is_grad_enabled() and not torch.jit.is_scripting():")
                emit(", ".join(var_names), ckpt, comment, "            ")
                body.append("        else:")
                emit(", ".join(var_names), call_expr, comment, "            ")
                continue
            emit(", ".join(var_names), call_expr, comment)
            continue
        node_ = it
        local = inst0.local(node_.name)
        same = [_node_in(i, local) for i in insts]
        rule = LOWER_RULES[type(node_.op)]
        if isinstance(node_.op, O.Input):
            continue

        def init_attr(f: str, _local: str = local, _op: O.OpBase = node_.op) -> ast.expr:
            key = (_local, f)
            return arg_code(plan.arg_of[key], "") if key in plan.arg_of else lit(_attr_value(_op, f))

        def fwd_attr(f: str, _local: str = local, _op: O.OpBase = node_.op) -> ast.expr:
            key = (_local, f)
            if key in plan.arg_of:
                fwd_args_used.add(plan.arg_of[key][0])
                return arg_code(plan.arg_of[key], "self")
            return lit(_attr_value(_op, f))

        # a shared layer (`y = pe1(z)`) calls the submodule of the layer it shares, and makes none
        ctx = Ctx(ops=[n.op for n in same], ins=[], mod=access_node(inst0.local(node_.shares) if node_.shares else local),
                  in_types=[graph.type_of(r) for r in node_.inputs], out_types=node_.outputs,
                  init_attr=init_attr, fwd_attr=fwd_attr,
                  fresh=tuple(fresh_value(r.node, r.index, uses, producers) for r in node_.inputs))
        mod = rule.module(ctx)
        if mod is not None and node_.name in lora:
            mod = _wrap_lora(mod, lora[node_.name])
            plan.helpers |= {"LoRA", "LoRALinear", "add_lora"}
        if mod is not None and not node_.shares:
            tree.add(local, mod)
            if isinstance(node_.op, O.TiedLinear) and tied_alias(local):
                tied.append(f"        {code(access_node(local))}.weight = {code(access_node(node_.op.source))}.weight"
                            "  # tied: one Parameter, two state_dict keys")
        plan.helpers.update(helpers_of(rule, ctx))
        if isinstance(node_.op, O.Output):
            continue
        if node_ is head:  # the classifier: forward_head applies it; forward_features returns its input
            ctx.ins = [ast.Name(id="x", ctx=ast.Load())]
            head_expr = rule.forward(ctx)
            continue
        if rule.reuses_input or (isinstance(node_.op, O.PosEmbed) and node_.op.kind == "learned"):
            flush([], idx)
        # a dropout or drop-path without a name passes its input's name on (`a`, not `drop_path`)
        passed = (pending[(node_.inputs[0].node, node_.inputs[0].index)][2]
                  if isinstance(node_.op, O.Dropout | O.DropPath) and node_.inputs
                  and (node_.inputs[0].node, node_.inputs[0].index) in pending else None)
        ctx.ins = [ref_code(r) for r in node_.inputs]
        expr = rule.forward(ctx)
        types = [[n.outputs[k] for n in same] for k in range(len(node_.outputs))]
        comment = "  # " + comment_text(", ".join(shape_comment(t, dims_series, arg_names) for t in types))
        keys = [(node_.name, k) for k in range(len(node_.outputs))]
        if len(keys) == 1 and uses[keys[0]] == 1 and len(code(expr)) <= 70:
            pref = (node_.vars[0] if node_.vars and node_.vars[0] else passed or local.split(".")[-1])
            pending[keys[0]] = (expr, comment, "x" if pref.isdigit() else pref)
            continue
        first_in = names.get((node_.inputs[0].node, node_.inputs[0].index)) if node_.inputs else None
        var_names = []
        for k, key in enumerate(keys):
            pref = node_.vars[k] if k < len(node_.vars) and node_.vars[k] else local.split(".")[-1]
            hinted = k < len(node_.vars) and bool(node_.vars[k])
            if not hinted and k == 0 and first_in and is_dead(first_in, idx) and len(keys) == 1 \
                    and first_in in live_names:
                pref = first_in
            if pref.isdigit():
                pref = "x"
            v = fresh(pref if len(keys) == 1 else f"{pref}_{k}", idx)
            names[key] = v
            live_names[v] = key
            var_names.append(v)
        emit(", ".join(var_names), expr, comment)

    # outputs
    flush([head.inputs[0]] if head is not None else [o.inputs[0] for o in graph.output_nodes()] if is_root
          else list(inst0.outputs), len(items))
    if head is not None:
        ret: ast.expr = ref_code(head.inputs[0])
    elif is_root:
        outs = graph.output_nodes()
        rets = [ref_code(o.inputs[0]) for o in outs]
        ret = rets[0] if len(rets) == 1 else ast.Dict(
            keys=[ast.Constant(o.op.name) for o in outs], values=rets)  # type: ignore[attr-defined]
    else:
        rets = [ref_code(r) for r in inst0.outputs]
        ret = rets[0] if len(rets) == 1 else ast.Tuple(elts=rets, ctx=ast.Load())
    # `return a, b`, as people write it (a tuple's items never need parentheses here)
    rets_text = [code(e, fwd_names) for e in (ret.elts if isinstance(ret, ast.Tuple) else [ret])]
    body.append(f"        return {', '.join(rets_text)}")

    # assemble
    lines = [f"class {plan.name}(nn.Module):"]
    lines.append(f'    """{doc(_class_doc(plan, is_root, graph))}"""')
    lines.append("")
    if is_root:
        lines.append(f"    arch_name = {graph.arch!r}")
        lines.append(f"    arch_params = {{{', '.join(f'{p.name!r}: {literal(p.value)}' for p in graph.params)}}}")
        lines.append(f"    input_names = {tuple(graph.inputs)!r}")
        lines.append(f"    output_names = {tuple(graph.outputs)!r}")
        if head is not None:
            lines.append(f"    default_cfg = {_default_cfg(graph, head)!r}")
            lines.append("    pretrained_cfg = default_cfg")
        if ckpt_plan:
            lines.append(f"    checkpoint_blocks = {tuple(state_key(b) for b in graph.block_instances())!r}")
            lines.append(f"    checkpoint_plan = {tuple(state_key(b) for b in ckpt_plan)!r}  # checkpointed by default")
        lines.append("")
    schedules = _schedules(child_calls, set(plan.args) | {"self"})
    tree_lines = tree.lines()
    plan.args = [a for a in plan.args if a in tree.names or a in fwd_args_used]  # drop unused ones
    plan.uses = tree.names | fwd_names
    sig = ", ".join(["self", *plan.args])
    lines.append(f"    def __init__({sig}):")
    lines.append("        super().__init__()")
    if head is not None:
        lines.append(f"        self.num_classes = {head.op.out_features!r}")  # type: ignore[attr-defined]
    if head is not None or ckpt_plan:
        lines.append("        self.grad_checkpointing = False")
    for a in plan.args:
        if a in fwd_args_used:
            lines.append(f"        self.{a} = {a}")
    lines.extend(schedules)
    lines.extend(tree_lines)
    lines.extend(tied)
    plan.uses_container = tree.uses_container
    if is_root and (rules := _trainability_rules(graph)):
        plan.helpers.add("set_trainable")
        lines.append("        # fine-tuning, as the spec says: LoRA weights train; these rules set the rest")
        lines.append(f"        set_trainable(self, {rules!r})")
    if ckpt_plan:
        lines.append("        self.set_grad_checkpointing(self.checkpoint_plan)")
    if is_root and (nwd := _no_weight_decay(graph)):
        lines.append("")
        lines.append("    def no_weight_decay(self) -> set[str]:")
        lines.append('        """Parameters that take no weight decay (timm convention): tokens, positions, bias tables."""')
        lines.append("        return {" + ", ".join(repr(n) for n in nwd) + "}")
    if head is not None:
        lines.extend(_classifier_methods(head, planned=bool(ckpt_plan)))
    if ckpt_plan:
        lines.extend(PLANNED_CHECKPOINTING)
    lines.append("")
    in_types = [graph.type_of(r) for r in in_refs] if not is_root else [n.outputs[0] for n in graph.input_nodes()]
    if region:  # compiled once, reused by the instances that match it (room for one entry each)
        lines.append(f"    @torch.compiler.nested_compile_region(max_reuse_entries={len(insts)})")
    lines.append(f"    def {'forward_features' if head is not None else 'forward'}(self, {', '.join(params)}):")
    for p, t in zip(params, in_types, strict=False):
        if is_root:
            lines.append(f"        # {comment_text(f'{p}: {t}')}")
        else:
            series = [graph.type_of(i.inputs[params.index(p)]) for i in insts]
            lines.append(f"        # {comment_text(f'{p}: {shape_comment(series, dims_series, arg_names)}')}")
    lines.extend(body)
    if head is not None:
        assert head_expr is not None
        feats = graph.type_of(head.inputs[0])
        lines.append("")
        lines.append("    def forward_head(self, x, pre_logits: bool = False):")
        lines.append(f"        # {comment_text(f'x: {feats}')}")
        lines.append(f"        return x if pre_logits else {code(head_expr, fwd_names)}")
        lines.append("")
        lines.append(f"    def forward(self, {params[0]}):")
        lines.append(f"        return self.forward_head(self.forward_features({params[0]}))")
    return lines


def _classifier_head(graph: Graph, lora: dict[str, tuple]) -> Node | None:
    """The linear that makes a classifier's only output from its only input (timm's head), at
    the top level and without LoRA; None for any other graph."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return None
    ref = graph.output_nodes()[0].inputs[0]
    node = graph.node(ref.node)
    if not isinstance(node.op, O.Linear) or ref.index != 0 or node.scope or node.name in lora:
        return None
    return node


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _default_cfg(graph: Graph, head: Node) -> dict[str, Any]:
    """timm's ``default_cfg`` of a classifier: the input size of a ``[B, C, H, W]`` input, the
    classes, the head's name and, for 3-channel images, ImageNet's mean and std."""
    cfg: dict[str, Any] = {}
    shape = graph.input_nodes()[0].outputs[0].shape
    image = len(shape) == 4 and type(shape[0]) is not int and all(type(d) is int for d in shape[1:])
    if image:
        cfg["input_size"] = tuple(shape[1:])
    cfg["num_classes"] = head.op.out_features  # type: ignore[attr-defined]
    cfg["classifier"] = state_key(head.name)
    if image and shape[1] == 3:
        cfg["mean"], cfg["std"] = IMAGENET_MEAN, IMAGENET_STD
    return cfg


def _classifier_methods(head: Node, planned: bool = False) -> list[str]:
    """timm's ``reset_classifier`` and ``set_grad_checkpointing`` (unless ``planned``: then
    :data:`PLANNED_CHECKPOINTING` has it) for a classifier's root class."""
    op = head.op
    assert isinstance(op, O.Linear)
    target = code(access_node(state_key(head.name)))
    new = call("nn.Linear", op.in_features, ast.Name(id="num_classes", ctx=ast.Load()),
               **({} if op.bias else {"bias": lit(False)}))
    reset = [
        "",
        "    def reset_classifier(self, num_classes: int):",
        '        """A fresh classifier with `num_classes` outputs (timm convention); 0 leaves none: logits are features."""',
        "        self.num_classes = num_classes",
        f"        {target} = {code(new)} if num_classes > 0 else nn.Identity()",
    ]
    if planned:
        return reset
    return [
        *reset,
        "",
        "    def set_grad_checkpointing(self, enable: bool = True):",
        '        """Run the repeated blocks under activation checkpointing while grad is on (timm convention)."""',
        "        self.grad_checkpointing = enable",
    ]


# the run-time switch of a model built with a checkpoint plan (`checkpoint_blocks`, `checkpoint_plan`)
PLANNED_CHECKPOINTING = [
    "",
    "    def set_grad_checkpointing(self, enable=True):",
    '        """Activation checkpointing while grad is on (timm convention): True for every block in',
    "        `checkpoint_blocks`, False for none, or the names of the blocks to checkpoint (built with",
    '        `checkpoint_plan`)."""',
    "        names = set(self.checkpoint_blocks if enable is True else () if enable is False else",
    "                    [enable] if isinstance(enable, str) else enable)",
    "        unknown = sorted(names - set(self.checkpoint_blocks))",
    "        if unknown:",
    '            raise ValueError(f"not a block that can be checkpointed: {unknown[0]!r} (see checkpoint_blocks)")',
    "        self.grad_checkpointing = bool(names)",
    "        for name in self.checkpoint_blocks:",
    "            self.get_submodule(name).grad_checkpointing = name in names",
]


def checkpoint_plan(graph: Graph) -> tuple[str, ...]:
    """The block instances the graph's ``checkpoint`` globs select (:mod:`archlang.cost.plan`)."""
    from archlang.cost.plan import resolve

    return resolve(graph)


def arg_code(arg: tuple[str, int], root: str) -> ast.expr:
    """A constructor argument (``C``, ``self.C``), times its multiple where it has one (``4 * C``)."""
    name, mult = arg
    e: ast.expr = ast.Attribute(value=ast.Name(id=root, ctx=ast.Load()), attr=name, ctx=ast.Load()) if root \
        else ast.Name(id=name, ctx=ast.Load())
    return e if mult == 1 else E("m * a", m=mult, a=e)


def _list_length(items: list[Node | Inst], inst: Inst, prefix: str) -> int:
    """How many entries the module list at ``prefix`` has in this class."""
    n = 0
    for it in items:
        loc = inst.local(it.path if isinstance(it, Inst) else it.name)
        if loc.startswith(prefix + "."):
            part = loc[len(prefix) + 1:].split(".", 1)[0]
            if is_index(part):
                n = max(n, int(part) + 1)
    return n


def _chained_runs(items: list[Node | Inst], inst: Inst, uses: Counter, last_use: dict) -> dict[int, int]:
    """Runs of two or more consecutive items that are instances of one class at consecutive
    indexes of one module list, each taking the previous one's only output as its only input:
    first item index -> last item index."""
    def chainable(it: Node | Inst) -> tuple[str, int] | None:
        if not isinstance(it, Inst) or not it.inputs or len(it.outputs) != 1 or it.outputs[0] in it.inputs:
            return None
        return _index_split(inst.local(it.path))

    # the first input is carried from one instance to the next; any others are the same for all
    # (`for layer in self.layers: x = layer(x, memory)`)
    runs: dict[int, int] = {}
    idx = 0
    while idx < len(items):
        it = items[idx]
        here = chainable(it)
        r0 = it.inputs[0] if it.inputs else None
        if here is None or r0 is None or last_use.get((r0.node, r0.index)) != idx:
            idx += 1
            continue
        j = idx
        while j + 1 < len(items):
            prev, nxt = items[j], items[j + 1]
            there = chainable(nxt)
            out = prev.outputs[0]  # type: ignore[union-attr]
            if there is None or there != (here[0], here[1] + (j + 1 - idx)) or nxt.cls is not it.cls \
                    or nxt.inputs[0] != out or uses[(out.node, out.index)] != 1 \
                    or nxt.inputs[1:] != it.inputs[1:]:  # type: ignore[union-attr]
                break
            j += 1
        if j > idx:
            runs[idx] = j
        idx = j + 1
    return runs


def _distinct(names: list[str]) -> list[str]:
    """Parameter names, made distinct where mangling made two equal."""
    out: list[str] = []
    for n in names:
        while n in out:
            n = f"{n}_"
        out.append(n)
    return out


def _node_in(inst: Inst, local: str) -> Node:
    node = inst.node_at(local)
    if node is not None:
        return node
    raise LoweringError(f"instance `{inst.path}` has no node `{local}`")  # pragma: no cover


def _matching_children(insts: list[Inst], child_local: str) -> list[Inst]:
    return [child for inst in insts for child in inst.children_at(child_local)]


def _child_out_type(graph: Graph, child: Inst, k: int) -> TensorType:
    return graph.type_of(child.outputs[k])


def _class_doc(plan: ClassPlan, is_root: bool, graph: Graph) -> str:
    if is_root:
        return f"{graph.arch}: generated by archlang from {_spec_name(graph)}."
    paths = [i.path for i in plan.instances]
    where = paths[0] if len(paths) == 1 else f"{paths[0]}, … ({len(paths)} instances)"
    return f"Block `{plan.block}` ({where})."


# ----------------------------------------------------------------------------- prelude


# ----------------------------------------------------------------------------- fine-tuning taps

def _lora_config(graph: Graph) -> dict[str, tuple]:
    """node name -> ((projection attribute, fused blocks, ((part, (r, alpha, dropout)), ...)), ...)."""
    from archlang.ir.adapters import lora_module, lora_targets

    out: dict[str, tuple] = {}
    for node_name, parts in lora_targets(graph).items():
        node = graph.node(node_name)
        by_attr: dict[str, tuple[tuple[str, ...], dict[str, tuple[int, float, float]]]] = {}
        for part, spec in parts.items():
            attr, sub, fused = lora_module(node, part)
            by_attr.setdefault(attr, (fused, {}))[1][sub] = (spec.r, spec.alpha, spec.dropout)
        out[node_name] = tuple((attr, fused, tuple(sorted(cfg.items()))) for attr, (fused, cfg) in sorted(by_attr.items()))
    return out


def _wrap_lora(mod: ast.expr, config: tuple) -> ast.expr:
    for proj, fused, parts in config:
        cfg = ast.Dict(keys=[ast.Constant(k) for k, _ in parts], values=[lit(v) for _, v in parts])
        mod = call("add_lora", mod, proj, cfg, **({"fused": lit(tuple(fused))} if fused else {}))
    return mod


def _trainability_rules(graph: Graph) -> list[tuple[str, tuple[str, ...]]]:
    """The spec's freeze/unfreeze/bitfit rules in order; selectors that name an op kind
    (``"linear:*"``) are resolved here to the node names they match."""
    from archlang.ir.adapters import matches, split_kind

    def resolve(selectors: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for sel in selectors:
            if split_kind(sel)[0] is None:
                out.append(sel)
            else:
                out += [state_key(n.name) for n in graph.nodes if n.op.parameters() and not n.shares
                        and matches(sel, n.name, n.op.op)]
        return tuple(out)

    events = [(r.index, ("freeze" if r.freeze else "unfreeze", resolve(r.selectors))) for r in graph.freezes]
    events += [(t.index, ("bitfit", resolve(t.selectors))) for t in graph.adapters if t.kind == "bitfit"]
    return [e for _, e in sorted(events, key=lambda x: x[0])]


def _no_weight_decay(graph: Graph) -> list[str]:
    return sorted(state_key(f"{n.name}.{p.name}" if p.name else n.name) for n in graph.nodes
                  for p in n.op.parameters() if p.role in ("token", "pos", "rel_pos") and not n.shares)


_PRELUDE_USES: dict[str, set[str]] = {}


def _prelude_names_used() -> dict[str, set[str]]:
    """Prelude definition -> the names its code mentions (to know which imports it needs)."""
    if not _PRELUDE_USES:
        for n in ast.parse(PRELUDE.read_text()).body:
            if isinstance(n, ast.FunctionDef | ast.ClassDef):
                _PRELUDE_USES[n.name] = {x.id for x in ast.walk(n) if isinstance(x, ast.Name)}
    return _PRELUDE_USES


def prelude_closure(names: set[str]) -> set[str]:
    """``names`` and the prelude definitions their code uses, transitively (a helper class's
    own helpers: ``WindowAttention`` uses ``sdpa``)."""
    uses = _prelude_names_used()
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo += [u for u in uses.get(name, ()) if u in uses and u not in out]
    return out


def prelude_sources(names: set[str]) -> list[str]:
    """The source of the requested prelude definitions, in file order."""
    text = PRELUDE.read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in names:
            start = node.lineno - 1 - len(node.decorator_list)
            out.append("\n".join(lines[start:node.end_lineno]))
    return out


def generate(graph: Graph, dtype: str = "float32") -> tuple[str, str]:
    """Return ``(source, class_name)`` of the generated module for ``graph``; the module's
    ``build()`` constructs the model in ``dtype`` by default."""
    if dtype not in FLOAT_DTYPES:
        raise LoweringError(f"dtype is one of {', '.join(FLOAT_DTYPES)}, not {dtype!r}")
    for n in graph.nodes:
        if type(n.op) not in LOWER_RULES:
            raise LoweringError(f"no lowering rule for op `{n.op.op}`")
    alone: frozenset[str] = frozenset()
    if _DEAD_ROWS.get():  # rows no output reads are not computed (ViT's last block: the class token)
        pruned = prune_dead_rows(graph)
        alone = _shortened_blocks(graph, pruned)
        graph = pruned
    lora = _lora_config(graph)
    root = build_tree(graph)
    plans = plan_classes(root, graph.arch, lora, graph)
    root_plan = root.cls
    assert root_plan is not None
    blocks = []
    helpers: set[str] = set()
    regions = _region_classes(plans) if _REGIONS.get() else set()
    for plan in plans:
        code = gen_class(plan, plan is root_plan, graph, lora, region=plan.name in regions, alone=alone)
        helpers |= plan.helpers
        blocks.append("\n".join(code))
    if any(p.uses_container for p in plans):
        helpers.add("_container")
    params = ", ".join(f"{p.name}={literal(p.value)}" for p in graph.params)
    header = [
        f'"""{doc(graph.arch)}: a PyTorch model generated by archlang from {doc(_spec_name(graph))}.',
        "",
        doc(f"Parameters: {params}."),
        doc("Inputs: " + ", ".join(f"{n.op.name}: {n.outputs[0]}" for n in graph.input_nodes()) + "."),
        doc("Outputs: " + ", ".join(f"{n.op.name}: {graph.type_of(n.inputs[0])}" for n in graph.output_nodes()) + "."),
        "Regenerate with `archc build`; this file imports only torch and the standard library.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    helpers = prelude_closure(helpers)
    src_helpers = prelude_sources(helpers)
    needs_math = any("math" in _prelude_names_used().get(h, ()) for h in helpers) or any("math" in p.uses for p in plans)
    if needs_math:
        header.append("import math")
        header.append("")
    header += ["import torch", "import torch.nn.functional as F"]
    if any(p.uses_checkpoint for p in plans):
        header.append("import torch.utils.checkpoint")
    header += ["from torch import nn", "", ""]
    parts = ["\n".join(header)]
    if src_helpers:
        parts.append("\n\n\n".join(src_helpers))
    parts.extend(blocks)
    parts.append(
        f"def build(dtype: torch.dtype = torch.{dtype}) -> {root_plan.name}:\n"
        f"    \"\"\"A freshly initialised `{doc(graph.arch)}`, its parameters and float buffers created in `dtype`.\"\"\"\n"
        f"    default = torch.get_default_dtype()\n"
        f"    torch.set_default_dtype(dtype)\n"
        f"    try:\n"
        f"        model = {root_plan.name}()\n"
        f"    finally:\n"
        f"        torch.set_default_dtype(default)\n"
        f"    return model.to(dtype)  # tables a helper computes in float32 for accuracy\n")
    source = "\n\n\n".join(p.rstrip() for p in parts) + "\n"
    return source, root_plan.name


def _spec_name(graph: Graph) -> str:
    """The spec's file name, without its folder: the output must not depend on the working
    directory or on how the path was written."""
    return Path(graph.file).name or graph.file
