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
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlang.ir import ops as O
from archlang.ir.dims import Dim, fmt
from archlang.ir.graph import Graph, Node, Scope, ValueRef
from archlang.ir.types import TensorType
from archlang.lower.rules import (
    LOWER_RULES,
    MAX_INDEX_GAP,
    Ctx,
    LoweringError,
    access,
    attr,
    camel,
    comment_text,
    doc,
    helpers_of,
    ident,
    is_index,
    state_key,
)

PRELUDE = Path(__file__).resolve().parent / "prelude.py"
# attributes whose per-instance values the lowering rule handles itself (not constructor arguments)
RULE_HANDLED = {("rearrange", "axes")}
# attributes that change the code itself, not just a value: instances differing in them get
# different classes
STRUCTURAL = (("activation", "fn"), ("binary", "fn"), ("pos_embed", "kind"), ("conv2d", "standardize"),
              ("rearrange", "lhs"), ("rearrange", "rhs"), ("tied_linear", "source"), ("pool2d", "kind"),
              ("mean", "keepdim"))


def literal(v: Any) -> str:
    if isinstance(v, bool | int | str):
        return repr(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else f"float({repr(v)!r})"
    if isinstance(v, tuple):
        return "(" + ", ".join(literal(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, Dim):
        raise LoweringError(f"a symbolic size `{fmt(v)}` cannot be a constructor argument")
    raise LoweringError(f"cannot write {v!r} as a literal")


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
    arg_of: dict[tuple[str, str], str] = field(default_factory=dict)  # (item local, field) -> argument
    code: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)


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
                        shape_of_code))
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


def plan_classes(root: Inst, arch: str, lora: dict[str, tuple]) -> list[ClassPlan]:
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
            _choose_args(plan)
            for inst in insts:
                inst.cls = plan
            plans.append(plan)
    return plans  # innermost blocks first, the model class last


def _choose_args(plan: ClassPlan) -> None:
    per_inst = [fields_of(i) for i in plan.instances]
    if len(plan.instances) == 1 or not per_inst[0]:
        return
    varying = [k for k in per_inst[0] if any(v.get(k) != per_inst[0][k] for v in per_inst[1:])]
    used: dict[str, list[Any]] = {}
    # a block parameter or a dim whose value matches in every instance names the argument
    candidates: list[str] = []
    scope0 = plan.instances[0].scope
    if scope0 is not None:
        candidates = [p.name for p in scope0.args] + [p.name for p in scope0.dims]
    scope_values = [_scope_values(i.scope) for i in plan.instances]
    cand_series: dict[str, list[Any]] = {}
    for key in varying:
        values = [v[key] for v in per_inst]
        name = None
        for cand in candidates:
            if cand not in cand_series:
                cand_series[cand] = [sv.get(cand) for sv in scope_values]
            cvals = cand_series[cand]
            if cvals == values:
                name = ident(cand if cand not in ("B",) else "batch")
                break
        if name is None:
            name = next((n for n, vs in used.items() if vs == values), None)
        if name is None:
            local, f = key
            name = ident(f"{local.split('.')[-1] if not local.split('.')[-1].isdigit() else local}_{f}"
                         .replace(".", "_"))
        while name in used and used[name] != values:
            name = f"{name}_"
        used[name] = values
        plan.arg_of[key] = name
        if name not in plan.args:
            plan.args.append(name)
    for inst, vals in zip(plan.instances, per_inst, strict=True):
        inst.ctor = {plan.arg_of[k]: vals[k] for k in varying}


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
    """Attribute paths of a class's submodules/parameters -> constructor code, as a tree."""

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}

    def add(self, local: str, code: str) -> None:
        parts = [p if is_index(p) else attr(p) for p in local.split(".")]
        d = self.root
        for p in parts[:-1]:
            nxt = d.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise LoweringError(f"`{local}` is nested under a layer of its own")
            d = nxt
        if parts[-1] in d:
            raise LoweringError(f"two layers are named `{local}`")
        d[parts[-1]] = code

    @staticmethod
    def expr(d: dict[str, Any], indent: str) -> str:
        keys = list(d)
        inner = indent + "    "
        if all(is_index(k) for k in keys):
            n = max(int(k) for k in keys) + 1
            if n - len(keys) > MAX_INDEX_GAP:
                raise LoweringError(f"index {n - 1} leaves {n - len(keys):,} empty entries in a module list "
                                    f"(at most {MAX_INDEX_GAP:,})")
            items = [d.get(str(i), "nn.Identity()") for i in range(n)]
            parts = [ModuleTree.expr(x, inner) if isinstance(x, dict) else x for x in items]
            return "nn.ModuleList([\n" + "".join(f"{inner}{p},\n" for p in parts) + f"{indent}])"
        parts = [f"{k}={ModuleTree.expr(v, inner) if isinstance(v, dict) else v}" for k, v in d.items()]
        return "_container(\n" + "".join(f"{inner}{p},\n" for p in parts) + f"{indent})"

    def lines(self) -> list[str]:
        out = []
        for k, v in self.root.items():
            code = self.expr(v, "        ") if isinstance(v, dict) else v
            out.append(f"        self.{k} = {code}")
        return out


def shape_comment(types: list[TensorType], dims: dict[str, list[int]] | None = None) -> str:
    """``[B, 197, 768]``; for a class shared by instances of different sizes, dims that vary
    are written by name (``[B, H, W, C]``) when a block dim matches them."""
    per_pos = []
    first = types[0]
    taken: set[str] = set()
    for i, d in enumerate(first.shape):
        vals = [t.shape[i] if i < t.rank else None for t in types]
        if all(v == d for v in vals):
            per_pos.append(fmt(d))
            continue
        name = None
        for k, series in (dims or {}).items():
            if series == vals and k not in taken:
                name = k
                break
        if name:
            taken.add(name)
        per_pos.append(name or "…")
    return "[" + ", ".join(per_pos) + "]"


def gen_class(plan: ClassPlan, is_root: bool, graph: Graph, lora: dict[str, tuple]) -> list[str]:
    insts = plan.instances
    inst0 = insts[0]
    fwd_args_used: set[str] = set()
    tree = ModuleTree()
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
    for idx, it in enumerate(inst0.items):
        for r in it.inputs:
            uses[(r.node, r.index)] += 1
            last_use[(r.node, r.index)] = idx
    for r in inst0.outputs:
        uses[(r.node, r.index)] += 1
        last_use[(r.node, r.index)] = len(inst0.items)
    dims_series: dict[str, list[int]] = {}
    if inst0.scope is not None:
        for p in inst0.scope.dims:
            dims_series[p.name] = [_scope_value(i.scope, p.name) for i in insts]

    body: list[str] = []
    # single-use values are inlined into their consumer when it is the very next statement
    pending: dict[tuple[str, int], tuple[str, str, str]] = {}  # key -> (expr, comment, preferred name)
    live_names: dict[str, tuple[str, int]] = {p: (r.node, r.index) for r, p in zip(in_refs, params, strict=False)}

    def ref_code(r: ValueRef, bare: bool = False) -> str:
        key = (r.node, r.index)
        if key in pending:
            expr = pending.pop(key)[0]
            return f"({expr})" if _needs_parens(expr) and not bare else expr
        return names[key]

    def flush(consumer_inputs: list[ValueRef], at: int) -> None:
        wanted = {(r.node, r.index) for r in consumer_inputs}
        for key in [k for k in pending if k not in wanted]:
            expr, comment, pref = pending.pop(key)
            v = fresh(pref, at)
            names[key] = v
            live_names[v] = key
            body.append(f"        {v} = {expr}{comment}")

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

    for idx, it in enumerate(inst0.items):
        if not (isinstance(it, Node) and isinstance(it.op, O.Input)):
            flush(list(it.inputs), idx)
        if isinstance(it, Inst):
            child_local = inst0.local(it.path)
            assert it.cls is not None
            ctor_args = []
            for a in it.cls.args:
                key = (child_local, a)
                if key in plan.arg_of:
                    ctor_args.append(f"{a}={plan.arg_of[key]}")
                else:
                    ctor_args.append(f"{a}={literal(it.ctor[a])}")
            tree.add(child_local, f"{it.cls.name}({', '.join(ctor_args)})")
            args = ", ".join(ref_code(r, bare=True) for r in it.inputs)
            call = f"{access(child_local)}({args})"
            outs = it.outputs
            comment = "  # " + comment_text(", ".join(
                shape_comment([i2.cls and _child_out_type(graph, i2, k) for i2 in _matching_children(insts, child_local)],
                              dims_series) for k in range(len(outs))))
            keys = [(r.node, r.index) for r in outs]
            first_in = names.get((it.inputs[0].node, it.inputs[0].index)) if it.inputs else None
            nxt = inst0.items[idx + 1] if idx + 1 < len(inst0.items) else None
            if len(keys) == 1 and keys[0] not in names and uses[keys[0]] == 1 and len(call) <= 70 \
                    and isinstance(nxt, Node) and not isinstance(nxt.op, O.Output):
                pref = (it.scope.output_vars[0] if it.scope and it.scope.output_vars else "") \
                    or child_local.split(".")[-1]
                pending[keys[0]] = (call, comment, first_in or "x" if pref.isdigit() else pref)
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
            body.append(f"        {', '.join(var_names)} = {call}{comment}")
            continue
        node = it
        local = inst0.local(node.name)
        same = [_node_in(i, local) for i in insts]
        rule = LOWER_RULES[type(node.op)]
        if isinstance(node.op, O.Input):
            continue

        def init_attr(f: str, _local: str = local, _op: O.OpBase = node.op) -> str:
            key = (_local, f)
            return plan.arg_of[key] if key in plan.arg_of else literal(_attr_value(_op, f))

        def fwd_attr(f: str, _local: str = local, _op: O.OpBase = node.op) -> str:
            key = (_local, f)
            if key in plan.arg_of:
                fwd_args_used.add(plan.arg_of[key])
                return f"self.{plan.arg_of[key]}"
            return literal(_attr_value(_op, f))

        ctx = Ctx(ops=[n.op for n in same], ins=[], mod=access(local),
                  in_types=[graph.type_of(r) for r in node.inputs], out_types=node.outputs,
                  init_attr=init_attr, fwd_attr=fwd_attr)
        mod = rule.module(ctx)
        if mod is not None and node.name in lora:
            mod = _wrap_lora(mod, lora[node.name])
            plan.helpers |= {"LoRA", "LoRALinear", "add_lora"}
        if mod is not None:
            tree.add(local, mod)
        plan.helpers.update(helpers_of(rule, ctx))
        if isinstance(node.op, O.Output):
            continue
        if rule.reuses_input or (isinstance(node.op, O.PosEmbed) and node.op.kind == "learned"):
            flush([], idx)
        ctx.ins = [ref_code(r, bare=True) for r in node.inputs]
        expr = rule.forward(ctx)
        types = [[n.outputs[k] for n in same] for k in range(len(node.outputs))]
        comment = "  # " + comment_text(", ".join(shape_comment(t, dims_series) for t in types))
        keys = [(node.name, k) for k in range(len(node.outputs))]
        if len(keys) == 1 and uses[keys[0]] == 1 and len(expr) <= 70:
            pref = (node.vars[0] if node.vars and node.vars[0] else local.split(".")[-1])
            pending[keys[0]] = (expr, comment, "x" if pref.isdigit() else pref)
            continue
        first_in = names.get((node.inputs[0].node, node.inputs[0].index)) if node.inputs else None
        var_names = []
        for k, key in enumerate(keys):
            pref = node.vars[k] if k < len(node.vars) and node.vars[k] else local.split(".")[-1]
            hinted = k < len(node.vars) and bool(node.vars[k])
            if not hinted and k == 0 and first_in and is_dead(first_in, idx) and len(keys) == 1 \
                    and first_in in live_names:
                pref = first_in
            if pref.isdigit():
                pref = "x"
            v = fresh(pref if len(keys) == 1 else f"{pref}_{k}", idx)
            names[key] = v
            live_names[v] = key
            var_names.append(v)
        body.append(f"        {', '.join(var_names)} = {expr}{comment}")

    # outputs
    flush([o.inputs[0] for o in graph.output_nodes()] if is_root else list(inst0.outputs), len(inst0.items))
    if is_root:
        outs = graph.output_nodes()
        rets = [ref_code(o.inputs[0], bare=len(outs) == 1) for o in outs]
        if len(rets) == 1:
            body.append(f"        return {rets[0]}")
        else:
            body.append("        return {" + ", ".join(f"{o.op.name!r}: {r}" for o, r in zip(outs, rets, strict=True))
                        + "}")
    else:
        rets = [ref_code(r, bare=len(inst0.outputs) == 1) for r in inst0.outputs]
        body.append(f"        return {', '.join(rets)}")

    # assemble
    lines = [f"class {plan.name}(nn.Module):"]
    lines.append(f'    """{doc(_class_doc(plan, is_root, graph))}"""')
    lines.append("")
    if is_root:
        lines.append(f"    arch_name = {graph.arch!r}")
        lines.append(f"    arch_params = {{{', '.join(f'{p.name!r}: {literal(p.value)}' for p in graph.params)}}}")
        lines.append(f"    input_names = {tuple(graph.inputs)!r}")
        lines.append(f"    output_names = {tuple(graph.outputs)!r}")
        lines.append("")
    body_text = "\n".join([*tree.lines(), *body, *(f"self.{a}" for a in fwd_args_used)])
    plan.args = [a for a in plan.args if re.search(rf"\b{re.escape(a)}\b", body_text)]  # drop unused ones
    sig = ", ".join(["self", *plan.args])
    lines.append(f"    def __init__({sig}):")
    lines.append("        super().__init__()")
    for a in plan.args:
        if a in fwd_args_used:
            lines.append(f"        self.{a} = {a}")
    lines.extend(tree.lines())
    if is_root and (rules := _trainability_rules(graph)):
        plan.helpers.add("set_trainable")
        lines.append("        # fine-tuning, as the spec says: LoRA weights train; these rules set the rest")
        lines.append(f"        set_trainable(self, {rules!r})")
    if is_root and (nwd := _no_weight_decay(graph)):
        lines.append("")
        lines.append("    def no_weight_decay(self) -> set[str]:")
        lines.append('        """Parameters that take no weight decay (timm convention): tokens, positions, bias tables."""')
        lines.append("        return {" + ", ".join(repr(n) for n in nwd) + "}")
    lines.append("")
    in_types = [graph.type_of(r) for r in in_refs] if not is_root else [n.outputs[0] for n in graph.input_nodes()]
    lines.append(f"    def forward(self, {', '.join(params)}):")
    for p, t in zip(params, in_types, strict=False):
        if is_root:
            lines.append(f"        # {comment_text(f'{p}: {t}')}")
        else:
            series = [graph.type_of(i.inputs[params.index(p)]) for i in insts]
            lines.append(f"        # {comment_text(f'{p}: {shape_comment(series, dims_series)}')}")
    lines.extend(body)
    return lines


def _distinct(names: list[str]) -> list[str]:
    """Parameter names, made distinct where mangling made two equal."""
    out: list[str] = []
    for n in names:
        while n in out:
            n = f"{n}_"
        out.append(n)
    return out


def _needs_parens(expr: str) -> bool:
    return any(op in expr for op in (" + ", " - ", " * ", " / ", " @ "))


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
        return f"{graph.arch}: generated by archlang from {graph.file}."
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


def _wrap_lora(mod: str, config: tuple) -> str:
    for proj, fused, parts in config:
        fused_arg = f", fused={fused!r}" if fused else ""
        mod = f"add_lora({mod}, {proj!r}, {dict(parts)!r}{fused_arg})"
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
                out += [state_key(n.name) for n in graph.nodes if n.op.parameters() and matches(sel, n.name, n.op.op)]
        return tuple(out)

    events = [(r.index, ("freeze" if r.freeze else "unfreeze", resolve(r.selectors))) for r in graph.freezes]
    events += [(t.index, ("bitfit", resolve(t.selectors))) for t in graph.adapters if t.kind == "bitfit"]
    return [e for _, e in sorted(events, key=lambda x: x[0])]


def _no_weight_decay(graph: Graph) -> list[str]:
    return sorted(state_key(f"{n.name}.{p.name}" if p.name else n.name) for n in graph.nodes
                  for p in n.op.parameters() if p.role in ("token", "pos", "rel_pos"))


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


def generate(graph: Graph) -> tuple[str, str]:
    """Return ``(source, class_name)`` of the generated module for ``graph``."""
    for n in graph.nodes:
        if type(n.op) not in LOWER_RULES:
            raise LoweringError(f"no lowering rule for op `{n.op.op}`")
    lora = _lora_config(graph)
    root = build_tree(graph)
    plans = plan_classes(root, graph.arch, lora)
    root_plan = root.cls
    assert root_plan is not None
    blocks = []
    helpers: set[str] = set()
    for plan in plans:
        code = gen_class(plan, plan is root_plan, graph, lora)
        helpers |= plan.helpers
        blocks.append("\n".join(code))
    uses_container = any("_container(" in b for b in blocks)
    if uses_container:
        helpers.add("_container")
    params = ", ".join(f"{p.name}={literal(p.value)}" for p in graph.params)
    header = [
        f'"""{doc(graph.arch)}: a PyTorch model generated by archlang from {doc(graph.file)}.',
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
    src_helpers = prelude_sources(helpers)
    needs_math = any("math." in h for h in src_helpers) or any("math." in b for b in blocks)
    if needs_math:
        header.append("import math")
        header.append("")
    header += ["import torch", "import torch.nn.functional as F", "from torch import nn", "", ""]
    parts = ["\n".join(header)]
    if src_helpers:
        parts.append("\n\n\n".join(src_helpers))
    parts.extend(blocks)
    parts.append(f"def build() -> {root_plan.name}:\n    \"\"\"A freshly initialised `{doc(graph.arch)}`.\"\"\"\n"
                 f"    return {root_plan.name}()")
    source = "\n\n\n".join(p.rstrip() for p in parts) + "\n"
    return source, root_plan.name
