"""Elaborate a program into the typed graph IR, checking shapes as it goes.

Takes: a loaded :class:`~archlang.check.program.Program`, an arch name and parameter
overrides (``--set``). Produces: a :class:`~archlang.ir.Graph` and the list of
diagnostics. Elaboration runs the spec at compile time: parameters and loop indices are
values, loops unroll, conditionals are decided, blocks are inlined under a scope path,
and every primitive call becomes a node whose output types come from the op's shape rule.
Errors are collected, not thrown: a failed statement binds its targets to a poison value
that silences follow-on errors, and elaboration carries on.
"""

from __future__ import annotations

import fnmatch
import keyword
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from archlang.check.index_args import INDEX_VARS, Deferred
from archlang.check.index_args import bind as bind_index_arg
from archlang.check.program import Program
from archlang.check.shapes import ShapeError, infer
from archlang.check.surface import REQUIRED, SURFACE, Arg, BuildCtx, BuildError, Surface
from archlang.diagnostics import Diagnostic, DiagnosticError, Label, Severity, Span, did_you_mean
from archlang.ir import ops as O
from archlang.ir.adapters import lora_parts, matches, split_kind
from archlang.ir.dims import Dim, DimLike, DimTooLarge, add, div_exact, fmt, mul, product
from archlang.ir.graph import AdapterTap, FreezeRule, Graph, Node, ParamValue, Scope, ValueRef
from archlang.ir.types import TensorType
from archlang.syntax import ast as A
from archlang.syntax.parser import parse_expr

MAX_NODES = 150_000
MAX_LOOP = 100_000
MAX_STEPS = 1_000_000  # statements executed while elaborating one arch (nested loops multiply)...
FREE_STEPS = 20_000  # ...and at most this many plus STEPS_PER_NODE for every node made: shipped specs run
STEPS_PER_NODE = 16  # 0.4 to 1.2 statements per node, so only a loop that builds nothing (its
#                      body failing in every iteration, or busy work) reaches the limit, and early
MAX_INT = 2**63 - 1  # compile-time integers beyond this are not sizes; bounding them keeps `**` from hanging
MAX_DIAGNOSTICS = 100  # problems recorded per arch; a spec with more gets one line for the rest
MAX_SIZE = 2**48  # one dim of a tensor (the element count may be larger: it is a product)
MAX_STR = 10_000  # characters of a compile-time string
MAX_LIST = 100_000  # items of a compile-time list, nested lists counted in full
MAX_DIM_TERMS = 16  # terms of one symbolic size (`img/4`, `2*B*S + 1`)
MAX_DIM_DEGREE = 8  # total degree of a symbolic size (`B*S` is 2)
MAX_NUMEL_TERMS = 256  # terms of a tensor's element count, the product of its dims (the cost model multiplies it)
# Labels become attribute names of the generated nn.Module and keys of its state_dict, so a
# label may not be a Python keyword, an attribute or method of torch.nn.Module (its public
# ones are listed here; tests/test_check.py checks the list against torch), one of the
# generated model's own members, or start with `_` (where nn.Module keeps its state).
MODULE_MEMBERS = frozenset((
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu",
    "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
    # the generated model's own members
    "arch_name", "arch_params", "no_weight_decay", "attend",
))
BUILTINS = ("len", "sum", "min", "max", "abs", "int", "float", "round", "range", "ceil", "floor")

# ----------------------------------------------------------------------------- values


class _OutOfSteps(Exception):
    """Aborts the whole elaboration (unlike DiagnosticError, which aborts one statement)."""

    def __init__(self, diag: Diagnostic):
        super().__init__(diag.message)
        self.diag = diag


class _Poison:
    """The value of an expression that already failed; using it reports nothing more."""

    def __repr__(self) -> str:
        return "<error>"


POISON = _Poison()


@dataclass(frozen=True)
class Tensor:
    ref: ValueRef
    type: TensorType
    origin: str  # "output of `blocks.0.attn` at f:3:5"


@dataclass
class Binding:
    value: Any
    span: Span | None
    what: str  # where the value came from, for help lines


@dataclass
class Frame:
    env: dict[str, Binding]
    path: str  # scope prefix for node names
    block: str | None = None


@dataclass
class Override:
    name: str
    text: str
    span: Span  # the value
    key_span: Span | None = None  # the parameter name


def type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, Dim):
        return "size"
    if isinstance(v, Tensor):
        return f"tensor {v.type}"
    if isinstance(v, list):
        return "list"
    if isinstance(v, tuple):
        return f"{len(v)} values"
    return type(v).__name__


def show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Tensor):
        return f"tensor {v.type}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(show(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, Dim):
        return fmt(v)
    return repr(v)


def typed(v: Any) -> str:
    """``int 64``, ``str "ten"``, ``tensor [B, 16, 64]``: a value with its type, for messages."""
    if isinstance(v, Tensor):
        return show(v)
    if isinstance(v, tuple):
        return type_name(v)
    return f"{type_name(v)} {show(v)}"


def to_ir_value(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(to_ir_value(x) for x in v)
    if isinstance(v, Dim):
        return str(v)
    return v


# ----------------------------------------------------------------------------- the elaborator


class Elaborator:
    def __init__(self, program: Program):
        self.prog = program
        self.diags: list[Diagnostic] = []
        self.gave_up = False  # set once MAX_DIAGNOSTICS errors are recorded
        self.nodes: list[Node] = []
        self.node_at: dict[str, int] = {}  # node name -> its index in self.nodes
        self.block_calls: dict[str, tuple[A.BlockDef, dict[str, Binding]]] = {}  # instance -> block, value args
        self.taken: dict[str, Span] = {}
        self.counters: dict[str, int] = {}
        self.scopes: list[Scope] = []
        self.stack: list[tuple[str, Span]] = []  # block call stack (name, call site)
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.adapt_stmts: list[A.Adapt] = []
        self.freeze_stmts: list[A.Freeze] = []
        self.checkpoint_stmts: list[A.Checkpoint] = []
        self.steps = 0
        self.tap_order: dict[int, int] = {}  # statement -> position among adapt/freeze statements
        # (scope path, node, output index) -> the spec's variable name for that value in that scope
        self.var_hints: dict[tuple[str, str, int], str] = {}
        self.scope_parent: dict[str, str] = {}
        self.scope_spans: dict[str, Span] = {}  # block instance path -> call site

    # -- diagnostics
    def fail(self, code: str, message: str, span: Span | None, help: str | None = None,
             notes: list[Label] | None = None) -> DiagnosticError:
        return DiagnosticError(Diagnostic(code, message, span, help=help, notes=list(notes or [])))

    def record(self, diag: Diagnostic) -> None:
        errors = sum(1 for d in self.diags if d.is_error) if len(self.diags) >= MAX_DIAGNOSTICS else 0
        if errors >= MAX_DIAGNOSTICS and diag.is_error:
            if not self.gave_up:  # elaboration stops at the next statement (exec_stmt): a loop that
                self.gave_up = True  # fails in every iteration would otherwise run to its end
                self.diags.append(Diagnostic("E0406", f"more than {MAX_DIAGNOSTICS} errors; checking stopped here",
                                             diag.span, help="fix these first"))
            return
        for name, site in reversed(self.stack):
            diag.notes.append(Label(f"in block `{name}`, called here", site))
        self.diags.append(diag)

    # -- names
    def full(self, fr: Frame, local: str) -> str:
        return f"{fr.path}.{local}" if fr.path else local

    def claim(self, name: str, span: Span, fr: Frame | None = None) -> None:
        for part in name.split("."):
            if part.isdigit():
                continue
            if keyword.iskeyword(part) or part in MODULE_MEMBERS or part.startswith("_"):
                why = ("a Python keyword" if keyword.iskeyword(part) else
                       "where nn.Module keeps its own state" if part.startswith("_") else
                       "a member of torch.nn.Module" if part not in ("arch_name", "arch_params", "no_weight_decay",
                                                                     "attend") else "a member of the generated model")
                raise self.fail("E0207", f"`{part}` cannot be a label: it is {why}", span,
                                help=f"labels become attribute names and state_dict keys of the generated module; "
                                     f"rename it, e.g. `{part.strip('_')}_{'layer' if part.strip('_') else 'x'}`")
        if name in self.taken:
            raise self.fail("E0604", f"the name `{name}` is already used in this graph", span,
                            help="give this call a different label", notes=[Label("first used here", self.taken[name])])
        # a name inside another block instance's scope would be nested in a layer it does not belong to
        inside = fr.path if fr is not None else ""
        parts = name.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in self.scope_spans and not (inside == prefix or inside.startswith(prefix + ".")):
                raise self.fail("E0604", f"`{name}` would sit inside the block instance `{prefix}`", span,
                                help=f"`{prefix}` is a block call; label this node outside it, e.g. "
                                     f"`{prefix.replace('.', '_')}_{parts[-1]}`",
                                notes=[Label(f"`{prefix}` is created here", self.scope_spans[prefix])])
        self.taken[name] = span

    def auto_name(self, fr: Frame, base: str) -> str:
        if base in MODULE_MEMBERS:  # an op named like a member (`attend`): its nodes are `attend_op`, ...
            base = f"{base}_op"
        key = self.full(fr, base)
        n = self.counters.get(key, 0)
        while True:
            local = base if n == 0 else f"{base}_{n}"
            if self.full(fr, local) not in self.taken:
                self.counters[key] = n + 1
                return self.full(fr, local)
            n += 1

    def add_node(self, name: str, op: O.OpBase, inputs: list[Tensor], outputs: tuple[TensorType, ...],
                 span: Span, fr: Frame) -> None:
        if len(self.nodes) >= MAX_NODES:
            raise self.fail("E0406", f"the graph has more than {MAX_NODES} nodes", span,
                            help="check loop bounds; archlang unrolls every loop")
        self.node_at[name] = len(self.nodes)
        self.nodes.append(Node(name=name, op=op, inputs=tuple(t.ref for t in inputs), outputs=outputs,
                               scope=fr.path, span=span))

    # -- entry point
    def run_arch(self, name: str, overrides: list[Override]) -> Graph | None:
        chain = self.alias_chain(name)
        if chain is None:
            return None
        base = chain[-1]
        assert isinstance(base, A.ArchDef)
        fr = Frame(env={}, path="")
        params = self.bind_arch_params(base, chain, overrides, fr)
        if params is None:
            return None
        try:
            self.exec_block_body(base.body, fr, in_arch=True)
        except _OutOfSteps as e:
            if not self.gave_up:
                self.record(e.diag)
            return None
        for alias in reversed(chain[:-1]):
            assert isinstance(alias, A.ArchAlias)
            for st in alias.body:
                if isinstance(st, A.Adapt | A.Freeze | A.Checkpoint):
                    self.exec_stmt(st, fr, in_arch=True)
                else:
                    self.record(Diagnostic("E0406", "a variant's body may only hold `adapt`, `freeze`, `unfreeze` and `checkpoint`",
                                           st.span, help="put other statements in the base arch"))
        if not self.outputs and not any(d.is_error for d in self.diags):
            self.record(Diagnostic("E0605", f"arch `{name}` has no outputs", base.span,
                                   help="declare one with `out name = expr`"))
        adapters, freezes = self.resolve_adapters()
        if any(d.is_error for d in self.diags):
            return None
        g = Graph(arch=name, family=base.name, file=self.prog.main_file, params=tuple(params),
                  inputs=tuple(self.inputs), outputs=tuple(self.outputs), nodes=tuple(self.hinted_nodes()),
                  scopes=tuple(self.hinted_scopes()), adapters=adapters, freezes=freezes)
        return self.with_checkpoints(g)

    def with_checkpoints(self, g: Graph) -> Graph | None:
        """``g`` with the `checkpoint` selectors; E0208 for one that matches no block instance."""
        if not self.checkpoint_stmts:
            return g
        blocks = g.block_instances()
        shown = ", ".join(f"`{b}`" for b in blocks[:4]) + (", ..." if len(blocks) > 4 else "")
        hint = (f"selectors are globs over the repeated top-level block instances: {shown}" if blocks
                else "only a block called more than once, outside any other block, can be checkpointed")
        sels: list[str] = []
        for st in self.checkpoint_stmts:
            for k, sel in enumerate(st.selectors):
                if not any(fnmatch.fnmatchcase(b, sel) for b in blocks):
                    self.record(Diagnostic("E0208", f"checkpoint selector \"{sel}\" matches no block instance",
                                           _at(st.selector_spans, k, st.span),
                                           help=did_you_mean(sel, blocks) or hint))
                if sel not in sels:
                    sels.append(sel)
        if any(d.is_error for d in self.diags):
            return None
        return g.model_copy(update={"checkpoint": tuple(sels)})

    def hinted_nodes(self) -> list[Node]:
        out = []
        for n in self.nodes:
            names = tuple(self.var_hints.get((n.scope, n.name, i), "") for i in range(len(n.outputs)))
            out.append(n.model_copy(update={"vars": names}) if any(names) else n)
        return out

    def hinted_scopes(self) -> list[Scope]:
        out = []
        for sc in self.scopes:
            parent = self.scope_parent.get(sc.path, "")
            names = tuple(self.var_hints.get((parent, r.node, r.index), "") for r in sc.outputs)
            out.append(sc.model_copy(update={"output_vars": names}) if any(names) else sc)
        return out

    def alias_chain(self, name: str) -> list[A.ArchDef | A.ArchAlias] | None:
        chain: list[A.ArchDef | A.ArchAlias] = []
        cur = self.prog.archs.get(name)
        while isinstance(cur, A.ArchAlias):
            if cur in chain:
                self.record(Diagnostic("E0601", f"arch `{name}` is defined in terms of itself", cur.span,
                                       help="a variant must end at an `arch name(params) { ... }` definition"))
                return None
            chain.append(cur)
            nxt = self.prog.archs.get(cur.base)
            if nxt is None:
                hint = did_you_mean(cur.base, self.prog.archs)
                self.record(Diagnostic("E0205", f"unknown arch `{cur.base}`", cur.base_span,
                                       help=hint or "a variant names an arch defined in this file or a `use`d one"))
                return None
            cur = nxt
        if cur is None:
            return None
        chain.append(cur)
        return chain

    def bind_arch_params(self, base: A.ArchDef, chain: list, overrides: list[Override],
                         fr: Frame) -> list[ParamValue] | None:
        names = [p.name for p in base.params]
        ok = True
        # variant arguments, outermost variant wins
        given: dict[str, tuple[A.Expr, str]] = {}
        for alias in reversed(chain[:-1]):
            if alias.args:
                self.record(Diagnostic("E0401", "variant arguments are given by name", alias.args[0].span,
                                       help=f"e.g. `arch {alias.name} = {alias.base}({names[0] if names else 'p'} = ...)`"))
                ok = False
            for kw in alias.kwargs:
                if kw.name not in names:
                    hint = did_you_mean(kw.name, names)
                    self.record(Diagnostic("E0204", f"`{alias.base}` has no parameter `{kw.name}`", kw.span,
                                           help=hint or f"parameters: {', '.join(names)}"))
                    ok = False
                given[kw.name] = (kw.value, f"variant `{alias.name}`")
        over: dict[str, Override] = {}
        for o in overrides:
            if o.name not in names:
                hint = did_you_mean(o.name, names)
                self.record(Diagnostic("E0701", f"`--set {o.name}`: `{base.name}` has no parameter `{o.name}`",
                                       o.key_span or o.span,
                                       help=hint or f"parameters: {', '.join(names) or '(none)'}"))
                ok = False
            over[o.name] = o
        params: list[ParamValue] = []
        for p in base.params:
            assert isinstance(p.annot, A.ValueType | A.TensorAnnot)
            if isinstance(p.annot, A.TensorAnnot):
                self.record(Diagnostic("E0401", f"arch parameter `{p.name}` cannot be a tensor", p.span,
                                       help="declare tensors with `in name: [dims]` inside the arch"))
                ok = False
                continue
            try:
                if p.name in over:
                    o = over[p.name]
                    try:
                        expr = parse_expr(o.text)
                    except DiagnosticError as err:
                        why = f" ({err.diag.message})" if err.diag.code in ("E0406", "E0701") else ""
                        raise self.fail("E0701", f"`--set {o.name}={_short(o.text, 40)}`: `{_short(o.text, 40)}` is not a value{why}", o.span,
                                        help=f"write a literal of type {p.annot}, e.g. --set {o.name}="
                                             f"{_example(p.annot)}") from None
                    val = self.eval(expr, Frame(env={}, path=""))
                    val = self.coerce(val, p.annot, f"`--set {p.name}`", o.span, code="E0701",
                                      help=f"`{p.name}` is declared `{p.name}: {p.annot}` at {p.span}; e.g. "
                                           f"--set {p.name}={_example(p.annot)}")
                    what = f"--set {p.name}={o.text}"
                    span = o.span
                elif p.name in given:
                    expr, src = given[p.name]
                    val = self.coerce(self.eval(expr, fr), p.annot, f"parameter `{p.name}`", expr.span)
                    what, span = f"{src}", expr.span
                elif p.default is not None:
                    val = self.coerce(self.eval(p.default, fr), p.annot, f"parameter `{p.name}`", p.default.span)
                    what, span = "default", p.default.span
                else:
                    raise self.fail("E0402", f"parameter `{p.name}` of `{base.name}` has no value", p.span,
                                    help=f"give it a default, or pass it: `--set {p.name}=...`")
            except DiagnosticError as e:
                self.record(e.diag)
                ok = False
                fr.env[p.name] = Binding(POISON, p.span, "error")
                continue
            if _has_poison(val):  # computed from a parameter that already failed
                ok = False
                fr.env[p.name] = Binding(POISON, p.span, "error")
                continue
            fr.env[p.name] = Binding(val, span, f"parameter `{p.name}` = {show(val)} ({what})")
            params.append(ParamValue(name=p.name, type=str(p.annot), value=to_ir_value(val)))
        return params if ok else None

    # -- statements
    def exec_block_body(self, body: tuple[A.Stmt, ...], fr: Frame, in_arch: bool) -> list[Any] | None:
        precondition_failed = False  # a block's failed `require`: report the other requires, skip the rest
        for st in body:
            if precondition_failed and not isinstance(st, A.Require):
                continue
            try:
                ret = self.exec_stmt(st, fr, in_arch)
            except DiagnosticError as e:
                self.record(e.diag)
                if isinstance(st, A.Assign):
                    for t in st.targets:
                        fr.env[t] = Binding(POISON, st.span, "error")
                if isinstance(st, A.Return) and not in_arch:
                    return [POISON]  # the block did return; its value is the error
                if isinstance(st, A.Require) and not in_arch:
                    precondition_failed = True
                continue
            except RecursionError:
                self.record(Diagnostic("E0406", "this statement nests too deeply", st.span))
                continue
            if ret is not None:
                return ret
        return [POISON] if precondition_failed else None

    def project_loop(self, st: A.For, done: int, left: int, steps0: int, nodes0: int) -> None:
        """After ``done`` iterations of a loop, refuse it at once when going on at the same
        rate would pass the node or step limit: a spec with `layers = 65537` fails in
        milliseconds, not after building 200,000 nodes."""
        if left <= 0:
            return
        nodes = len(self.nodes) + (len(self.nodes) - nodes0) * left // done
        if nodes > MAX_NODES:
            raise _OutOfSteps(Diagnostic(
                "E0406", f"this loop would make about {nodes:,} nodes, more than the limit of {MAX_NODES:,}",
                st.span, help=f"each of its {done + left:,} iterations adds about "
                              f"{(len(self.nodes) - nodes0) // done:,} nodes; check the loop bounds"))
        steps = self.steps + (self.steps - steps0) * left // done
        if steps > self.step_limit(nodes):
            raise _OutOfSteps(Diagnostic(
                "E0406", f"this loop would run about {steps:,} statements while making {nodes:,} node{'s' if nodes != 1 else ''}, more than "
                         f"the limit of {self.step_limit(nodes):,}", st.span,
                help=f"a spec may run {FREE_STEPS:,} statements plus {STEPS_PER_NODE} per node it makes (at most "
                     f"{MAX_STEPS:,}); check the loop bounds: archlang unrolls every loop at compile time"))

    @staticmethod
    def step_limit(nodes: int) -> int:
        return min(MAX_STEPS, FREE_STEPS + STEPS_PER_NODE * nodes)

    def count_step(self, span: Span | None) -> None:
        """One statement (or comprehension item) more; the whole elaboration stops past the step limit."""
        self.steps += 1
        if self.steps > FREE_STEPS and self.steps > self.step_limit(len(self.nodes)):
            raise _OutOfSteps(Diagnostic(
                "E0406", f"elaboration runs more than {self.step_limit(len(self.nodes)):,} statements while making "
                         f"{len(self.nodes):,} node{'s' if len(self.nodes) != 1 else ''}", span,
                help=f"a spec may run {FREE_STEPS:,} statements plus {STEPS_PER_NODE} per node it makes (at most "
                     f"{MAX_STEPS:,}); check the loop bounds: archlang unrolls every loop at compile time"))

    def exec_stmt(self, st: A.Stmt, fr: Frame, in_arch: bool) -> list[Any] | None:
        if self.gave_up:
            raise _OutOfSteps(self.diags[-1])
        self.count_step(st.span)
        if isinstance(st, A.Assign):
            val = self.eval(st.value, fr)
            if len(st.targets) == 1:
                if isinstance(val, tuple):
                    if len(val) != 1:
                        raise self.fail("E0407", f"this gives {len(val)} values, but one name receives them", st.span,
                                        help=f"unpack them: `{', '.join(f'v{i}' for i in range(len(val)))} = ...`")
                    val = val[0]
                fr.env[st.targets[0]] = Binding(val, st.span, f"`{st.targets[0]}` assigned at {st.span}")
                if isinstance(val, Tensor):
                    self.var_hints.setdefault((fr.path, val.ref.node, val.ref.index), st.targets[0])
            else:
                if val is POISON:
                    vals: tuple = (POISON,) * len(st.targets)
                elif not isinstance(val, tuple | list) or len(val) != len(st.targets):
                    n = len(val) if isinstance(val, tuple | list) else 1
                    raise self.fail("E0407", f"{len(st.targets)} names but the right side gives {n} value"
                                    f"{'s' if n != 1 else ''}", st.span)
                else:
                    vals = tuple(val)
                for t, v in zip(st.targets, vals, strict=True):
                    fr.env[t] = Binding(v, st.span, f"`{t}` assigned at {st.span}")
                    if isinstance(v, Tensor):
                        self.var_hints.setdefault((fr.path, v.ref.node, v.ref.index), t)
            return None
        if isinstance(st, A.ExprStmt):
            self.eval(st.value, fr)
            return None
        if isinstance(st, A.For):
            lo, hi = self.eval(st.start, fr), self.eval(st.stop, fr)
            if lo is POISON or hi is POISON:
                return None
            for v, e in ((lo, st.start), (hi, st.stop)):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise self.fail("E0401", f"loop bounds are integers, got {typed(v)}", e.span)
            if hi - lo > MAX_LOOP:
                raise self.fail("E0406", f"loop of {hi - lo:,} iterations is too long", st.span,
                                help=f"a loop runs at most {MAX_LOOP:,} times; archlang unrolls every loop")
            steps0, nodes0 = self.steps, len(self.nodes)
            for i in range(lo, hi):
                fr.env[st.var] = Binding(i, st.span, f"loop index `{st.var}` = {i}")
                ret = self.exec_block_body(st.body, fr, in_arch)
                if ret is not None:
                    return ret
                self.project_loop(st, i - lo + 1, hi - i - 1, steps0, nodes0)
            return None
        if isinstance(st, A.If):
            for cond, body in st.branches:
                c = self.eval(cond, fr)
                if c is POISON:
                    return None
                if not isinstance(c, bool):
                    raise self.fail("E0404", f"a condition must be a compile-time bool, got {type_name(c)}",
                                    cond.span, help="conditions are decided when the spec is compiled: compare "
                                                    "parameters, indices or sizes, e.g. `if s > 0`")
                if c:
                    return self.exec_block_body(body, fr, in_arch)
            if st.orelse is not None:
                return self.exec_block_body(st.orelse, fr, in_arch)
            return None
        if isinstance(st, A.Return):
            if in_arch:
                raise self.fail("E0406", "`return` is for blocks; an arch declares `out name = expr`", st.span)
            return [self.eval(v, fr) for v in st.values]
        if isinstance(st, A.InStmt):
            return self.exec_in(st, fr, in_arch)
        if isinstance(st, A.OutStmt):
            return self.exec_out(st, fr, in_arch)
        if isinstance(st, A.Require):
            self.exec_require(st, fr)
            return None
        if isinstance(st, A.Adapt):
            if not in_arch:
                raise self.fail("E0406", "`adapt` belongs in an arch or variant body", st.span)
            self.adapt_stmts.append(st)
            self.tap_order[id(st)] = len(self.tap_order)
            return None
        if isinstance(st, A.Checkpoint):
            if not in_arch:
                raise self.fail("E0406", "`checkpoint` belongs in an arch or variant body", st.span)
            self.checkpoint_stmts.append(st)
            return None
        if isinstance(st, A.Freeze):
            if not in_arch:
                raise self.fail("E0406", "`freeze`/`unfreeze` belong in an arch or variant body", st.span)
            self.freeze_stmts.append(st)
            self.tap_order[id(st)] = len(self.tap_order)
            return None
        raise AssertionError(f"unhandled statement {st!r}")  # pragma: no cover

    def exec_in(self, st: A.InStmt, fr: Frame, in_arch: bool) -> None:
        if not in_arch:
            raise self.fail("E0406", "`in` declares an arch input; a block takes tensors as parameters", st.span)
        if not isinstance(st.annot, A.TensorAnnot):
            raise self.fail("E0401", f"input `{st.name}` must be a tensor, e.g. `in {st.name}: [B, 3, 224, 224]`",
                            st.annot.span)
        dims: list[DimLike] = []
        for d in st.annot.dims:
            if isinstance(d, A.Star):
                raise self.fail("E0406", "`*` is for block parameters; an input's dims are all named", d.span)
            if isinstance(d, A.Name) and d.id not in fr.env:
                sym = Dim.sym(d.id)
                fr.env[d.id] = Binding(sym, d.span, f"free size `{d.id}` of input `{st.name}`")
                dims.append(sym)
                continue
            v = self.eval(d, fr)
            if v is POISON:
                return None
            dims.append(self.as_dim(v, d.span, f"a dim of input `{st.name}`"))
        t = TensorType(shape=tuple(dims), dtype=st.annot.dtype)
        self.check_outputs(st.name, (t,), st.span)
        self.claim(st.name, st.span)
        self.add_node(st.name, O.Input(name=st.name, type=t), [], (t,), st.span, fr)
        self.inputs.append(st.name)
        fr.env[st.name] = Binding(Tensor(ValueRef(node=st.name), t, f"input `{st.name}` at {st.span}"), st.span,
                                  f"input `{st.name}`")
        return None

    def exec_out(self, st: A.OutStmt, fr: Frame, in_arch: bool) -> None:
        if not in_arch:
            raise self.fail("E0406", "`out` declares an arch output; a block uses `return`", st.span)
        if st.value is None:
            b = fr.env.get(st.name)
            if b is None:
                raise self.unknown_name(st.name, st.span, fr)
            val = b.value
        else:
            val = self.eval(st.value, fr)
        if val is POISON:
            fr.env[st.name] = Binding(POISON, st.span, "error")
            return None
        if not isinstance(val, Tensor):
            raise self.fail("E0405", f"output `{st.name}` must be a tensor, got {typed(val)}", st.span)
        self.claim(st.name, st.span)
        self.add_node(st.name, O.Output(name=st.name), [val], (), st.span, fr)
        self.outputs.append(st.name)
        fr.env[st.name] = Binding(val, st.span, f"output `{st.name}`")
        return None

    def exec_require(self, st: A.Require, fr: Frame) -> None:
        c = self.eval(st.cond, fr)
        if c is POISON:
            return
        if not isinstance(c, bool):
            raise self.fail("E0404", f"`require` needs a compile-time bool, got {type_name(c)}", st.cond.span)
        if c:
            return
        names = sorted(_names_in(st.cond))
        notes = [Label(fr.env[n].what, fr.env[n].span) for n in names if n in fr.env]
        divis = isinstance(st.cond, A.BinOp) and st.cond.op == "==" and isinstance(st.cond.left, A.BinOp) \
            and st.cond.left.op == "%"
        code = "E0501" if divis else "E0502"
        msg = st.message or "requirement failed"
        values = ", ".join(f"{n} = {show(fr.env[n].value)}" for n in names if n in fr.env)
        if divis:
            assert isinstance(st.cond, A.BinOp) and isinstance(st.cond.left, A.BinOp)
            lhs = self.eval(st.cond.left.left, fr)
            rhs = self.eval(st.cond.left.right, fr)
            help_ = f"{show(rhs)} does not divide {show(lhs)} (with {values})"
        else:
            help_ = f"the constraint does not hold with {values}" if values else None
        raise self.fail(code, msg, st.span, help=help_, notes=notes)

    # -- expressions
    def eval(self, e: A.Expr, fr: Frame) -> Any:
        if isinstance(e, A.IntLit | A.FloatLit) and _too_large(e.value):
            raise self.fail("E0406", "number too large", e.span,
                            help="integers stay below 2**63 and numbers below about 1.8e308")
        if isinstance(e, A.IntLit | A.FloatLit | A.StrLit | A.BoolLit):
            return e.value
        if isinstance(e, A.Name):
            b = fr.env.get(e.id)
            if b is None:
                if e.id in SURFACE or e.id in self.prog.blocks:
                    raise self.fail("E0404", f"`{e.id}` is an operation; call it: `{e.id}(...)`", e.span)
                raise self.unknown_name(e.id, e.span, fr)
            return b.value
        if isinstance(e, A.ListLit):
            items = [self.eval(x, fr) for x in e.items]
            return POISON if any(x is POISON for x in items) else self.check_list(items, e.span)
        if isinstance(e, A.UnaryOp):
            v = self.eval(e.operand, fr)
            if v is POISON:
                return POISON
            if e.op == "not":
                if not isinstance(v, bool):
                    raise self.fail("E0401", f"`not` needs a bool, got {type_name(v)}", e.span)
                return not v
            if isinstance(v, Tensor):
                return self.tensor_scale(v, -1.0, 0.0, e, fr)
            if isinstance(v, bool) or not isinstance(v, int | float | Dim):
                raise self.fail("E0401", f"cannot negate {typed(v)}", e.span)
            return -v
        if isinstance(e, A.BinOp):
            return self.binop(e, fr)
        if isinstance(e, A.CondExpr):
            c = self.eval(e.cond, fr)
            if c is POISON:
                return POISON
            if not isinstance(c, bool):
                raise self.fail("E0404", f"a condition must be a compile-time bool, got {type_name(c)}", e.cond.span)
            return self.eval(e.then if c else e.other, fr)
        if isinstance(e, A.Call):
            return self.call(e, fr, None, e.span)
        if isinstance(e, A.Labeled):
            label = self.label_text(e.label, fr)
            if label is POISON:
                return POISON
            try:
                return self.call(e.call, fr, label, e.span)
            except DiagnosticError as err:
                if err.diag.code == "E0604" and err.diag.span == e.span and any(
                        isinstance(p, A.LabelPart) for p in e.label):
                    err.diag.help = (f"its computed parts give `{label}` again; they must differ on every call, "
                                     "e.g. the loop index itself: `name{i}`")
                raise
        if isinstance(e, A.Index):
            v, i = self.eval(e.value, fr), self.eval(e.index, fr)
            if v is POISON or i is POISON:
                return POISON
            if isinstance(v, Tensor) and (isinstance(i, Tensor) or type(i) is int):  # `x[0]`, `table[index]`: dim 0
                return self.tensor_subscript(e, v, [(e.index, i)], fr)
            if not isinstance(v, list):
                raise self.fail("E0401", f"cannot index {type_name(v)}", e.value.span,
                                help="index lists (`depths[s]`), shapes (`x.shape[1]`) and tensors (`x[0]`, "
                                     "`table[index]`)")
            if not isinstance(i, int) or isinstance(i, bool):
                raise self.fail("E0401", f"an index must be an int, got {type_name(i)}", e.index.span)
            if not -len(v) <= i < len(v):
                where = f"the list is {show(v)}"
                if isinstance(e.value, A.Name) and e.value.id in fr.env:
                    what = fr.env[e.value.id].what
                    where = what if show(v) in what else f"`{e.value.id}` = {show(v)}, {what}"
                valid = f"valid indices are 0 to {len(v) - 1}" if v else "the list is empty"
                raise self.fail("E0304", f"index {i} is out of range for a list of {len(v)}", e.span,
                                help=f"{valid}; {where}")
            return v[i]
        if isinstance(e, A.Slice):
            v, lo, hi = self.eval(e.value, fr), self.eval(e.start, fr), self.eval(e.stop, fr)
            if POISON in (v, lo, hi):
                return POISON
            if not isinstance(v, list):
                raise self.fail("E0401", f"cannot slice {type_name(v)}", e.value.span)
            for b, be in ((lo, e.start), (hi, e.stop)):
                if not isinstance(b, int) or isinstance(b, bool):
                    raise self.fail("E0401", f"slice bounds are ints, got {type_name(b)}", be.span)
            return v[lo:hi]
        if isinstance(e, A.Attr):
            v = self.eval(e.value, fr)
            if v is POISON:
                return POISON
            if isinstance(v, Tensor) and e.attr == "shape":
                return list(v.type.shape)
            if isinstance(v, Tensor) and e.attr == "rank":
                return v.type.rank
            raise self.fail("E0201", f"{type_name(v)} has no attribute `{e.attr}`", e.span,
                            help="tensors have `.shape` and `.rank`")
        if isinstance(e, A.ListComp):
            return self.list_comp(e, fr)
        if isinstance(e, A.Subscript):
            return self.subscript(e, fr)
        if isinstance(e, A.LabelPart):
            raise self.fail("E0404", "`name{...}` is a computed label; it names the call it labels", e.span,
                            help="write it before a call: `patch_embed{i}: conv2d(x, ...)`; use it again as "
                                 "`patch_embed{i}(z)` to share that layer's weights")
        raise AssertionError(f"unhandled expression {e!r}")  # pragma: no cover

    # -- labels with computed parts, comprehensions, subscripts (issue 12, "lang")
    def label_text(self, path: tuple[str | A.Expr, ...], fr: Frame) -> Any:
        """The dotted label ``path`` stands for: names, `[index]` parts and `{part}` suffixes
        evaluated now (`patch_embed{i}` with i = 2 is `patch_embed2`); POISON after an error."""
        parts: list[str] = []
        for p in path:
            if isinstance(p, str):
                parts.append(p)
                continue
            v = self.eval(p.part if isinstance(p, A.LabelPart) else p, fr)
            if v is POISON:
                return POISON
            if isinstance(p, A.LabelPart):
                if isinstance(v, bool) or not isinstance(v, int | str) or (isinstance(v, int) and v < 0):
                    raise self.fail("E0401", f"a computed label part is a non-negative int or a str, got {typed(v)}",
                                    p.part.span, help="e.g. `patch_embed{i}: conv2d(...)` with a loop index `i`, "
                                                      "or `{\"_\" + name}` with a str parameter")
                piece = parts[-1] + str(v)
                if not _LABEL_PIECE(piece):
                    raise self.fail("E0207", f"`{_short(piece, 40)}` cannot be a label: a label piece is a name "
                                             "(letters, digits and `_`, not starting with a digit)", p.span,
                                    help="labels become attribute names and state_dict keys of the generated module; "
                                         "compute a part of letters, digits and `_`")
                parts[-1] = piece
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise self.fail("E0401", f"a label index must be a non-negative int, got {show(v)}", p.span)
            parts.append(str(v))
        return ".".join(parts)

    def list_comp(self, e: A.ListComp, fr: Frame) -> Any:
        """``[elt for v in iter if cond ...]``: each item counts as a statement toward the step
        limit; the list obeys MAX_LIST; the loop variables are local to the comprehension."""
        out: list[Any] = []
        inner = replace(fr, env=dict(fr.env))
        if not self.comp_clause(e, 0, inner, out):
            return POISON
        return self.check_list(out, e.span)

    def comp_clause(self, e: A.ListComp, k: int, fr: Frame, out: list[Any]) -> bool:
        cl = e.clauses[k]
        items = self.comp_items(cl, fr)
        if items is POISON:
            return False
        for v in items:
            self.count_step(cl.span)
            shown = show(v) if isinstance(v, int | float | str) else type_name(v)
            fr.env[cl.var] = Binding(v, cl.span, f"`{cl.var}` = {_short(shown, 40)} (comprehension variable)")
            keep = True
            for cond in cl.conds:
                c = self.eval(cond, fr)
                if c is POISON:
                    return False
                if not isinstance(c, bool):
                    raise self.fail("E0404", f"a comprehension's `if` needs a compile-time bool, got {type_name(c)}",
                                    cond.span, help="e.g. `[x for x in dims if x > 1]`")
                if not c:
                    keep = False
                    break
            if not keep:
                continue
            if k + 1 < len(e.clauses):
                if not self.comp_clause(e, k + 1, fr, out):
                    return False
                continue
            item = self.eval(e.elt, fr)
            if item is POISON:
                return False
            if isinstance(item, tuple):
                raise self.fail("E0407", f"each item is {len(item)} values; a list item is one value", e.elt.span,
                                help="pick one output, or build one list per output")
            out.append(item)
            if len(out) > MAX_LIST:
                raise self.fail("E0406", f"a list of more than {MAX_LIST:,} items", e.span,
                                help=f"compile-time lists hold at most {MAX_LIST:,} items")
        return True

    def comp_items(self, cl: A.Comprehension, fr: Frame) -> Any:
        lo = self.eval(cl.iter, fr)
        if cl.stop is not None:
            hi = self.eval(cl.stop, fr)
            if lo is POISON or hi is POISON:
                return POISON
            for v, ex in ((lo, cl.iter), (hi, cl.stop)):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise self.fail("E0401", f"`{cl.var} in a .. b` counts with integers, got {typed(v)}", ex.span)
            if hi - lo > MAX_LOOP:
                raise self.fail("E0406", f"a comprehension of {hi - lo:,} iterations is too long", cl.span,
                                help=f"a loop runs at most {MAX_LOOP:,} times")
            return range(lo, hi)
        if lo is POISON:
            return POISON
        if isinstance(lo, list | tuple):
            return list(lo)
        help_ = ("count with `for i in 0 .. n` or `range(n)`" if isinstance(lo, int) and not isinstance(lo, bool)
                 else "a tensor's values exist only when the model runs; loop over a list of tensors, or over "
                      "`range(x.shape[1])`" if isinstance(lo, Tensor) else "e.g. `[d * 2 for d in dims]`")
        raise self.fail("E0401", f"a comprehension loops over a list or `a .. b`, got {typed(lo)}", cl.iter.span,
                        help=help_)

    def subscript(self, e: A.Subscript, fr: Frame) -> Any:
        """``l[1:3]``, ``l[::2]`` (one item, on a list); ``x[:, 0]``, ``x[:, ::2]``, ``x[1:7:2]``
        on a tensor (:meth:`tensor_subscript`)."""
        v = self.eval(e.value, fr)
        if v is POISON:
            return POISON
        items: list[tuple[A.Expr | A.SliceItem | A.EllipsisItem, Any]] = []
        for it in e.items:
            if isinstance(it, A.EllipsisItem):
                items.append((it, Ellipsis))
                continue
            if not isinstance(it, A.SliceItem):
                i = self.eval(it, fr)
                if i is POISON:
                    return POISON
                items.append((it, i))
                continue
            bounds: list[int | None] = []
            for b in (it.start, it.stop, it.step):
                if b is None:
                    bounds.append(None)
                    continue
                bv = _intify(self.eval(b, fr))
                if bv is POISON:
                    return POISON
                if isinstance(bv, Dim):
                    raise self.fail("E0404", f"a slice bound must be known at compile time, but it is the free size "
                                             f"`{fmt(bv)}`", b.span, help="give the size a value with --set")
                if not isinstance(bv, int) or isinstance(bv, bool):
                    raise self.fail("E0401", f"slice bounds are ints, got {typed(bv)}", b.span)
                bounds.append(bv)
            if bounds[2] is not None and bounds[2] < 1:
                raise self.fail("E0406", f"a slice step must be positive, got {bounds[2]}", it.step.span if it.step else it.span,
                                help="slices run forward: `x[:, ::2]` keeps every other item")
            items.append((it, tuple(bounds)))
        if isinstance(v, list):
            if any(s is Ellipsis for _, s in items):
                raise self.fail("E0401", "`...` stands for tensor dims; a list takes one index", e.span)
            if len(items) != 1:
                raise self.fail("E0401", f"a list takes one index, got {len(items)}", e.span,
                                help="index a nested list one level at a time: `l[i][j]`")
            (_, b), = items
            if not isinstance(b, tuple):  # pragma: no cover - a lone index parses as A.Index
                raise self.fail("E0401", f"an index must be an int, got {type_name(b)}", e.span)
            return self.check_list(v[slice(*b)], e.span)
        if isinstance(v, Tensor):
            return self.tensor_subscript(e, v, items, fr)
        raise self.fail("E0401", f"cannot index {type_name(v)}", e.value.span,
                        help="index lists (`depths[s]`, `dims[1:]`) and tensors (`x[:, 0]`, `x[:, ::2]`)")

    def tensor_subscript(self, e: A.Expr, v: Tensor, items: list[tuple[Any, Any]], fr: Frame) -> Any:
        """Item k applies to dim k: an int selects (``take``), a slice keeps ``start:stop:step``
        (``slice``), ``:`` keeps the whole dim, an int tensor gathers along the dim (``gather``:
        ``table[index]``, ``x[:, idx]``; the dim's place takes the index's shape). Python's rules
        for negative bounds; a bound past the dim, an empty slice or an index out of range is
        E0304 (nothing is clamped). One tensor item per subscript (NumPy would broadcast several
        together): gather again for another dim."""
        t = v.type
        ells = [j for j, (_, s) in enumerate(items) if s is Ellipsis]
        if len(ells) > 1:
            raise self.fail("E0406", "a subscript holds at most one `...`", items[ells[1]][0].span,
                            help="`...` stands for every dim the other items do not name")
        named = [(it, s) for it, s in items if s is not Ellipsis]
        if len(named) > t.rank:
            raise self.fail("E0304", f"{len(named)} indices for a tensor of rank {t.rank} ({t})", e.span,
                            help=f"index at most {t.rank} dims; {v.origin}")
        # item j applies to dim j; after `...`, the items count from the last dim
        dims = list(range(len(named))) if not ells else \
            [*range(ells[0]), *range(t.rank - (len(named) - ells[0]), t.rank)]
        items = named
        tensor_items = [it for it, s in items if isinstance(s, Tensor)]
        if len(tensor_items) > 1:
            raise self.fail("E0401", f"a subscript takes one index tensor, got {len(tensor_items)}",
                            tensor_items[1].span,
                            help="gather one dim at a time: `x[i][:, j]` (several index tensors are not broadcast "
                                 "together)")
        ops: list[tuple[O.OpBase, Tensor | None, Span]] = []
        for j in reversed(range(len(items))):  # from the last: the dims before keep their numbers
            it, s = items[j]
            k = dims[j]
            n = t.shape[k]
            span = it.span
            if isinstance(s, tuple):
                start, stop, step = s
                if start is None and stop is None and step in (None, 1):
                    continue
                if not isinstance(n, int):
                    raise self.fail("E0404", f"slicing dim {k} of {t} needs its size, but it is the free size "
                                             f"`{fmt(n)}`", span, help="give the size a value with --set")
                lo = 0 if start is None else start + n if start < 0 else start
                hi = n if stop is None else stop + n if stop < 0 else stop
                for b, raw in ((lo, start), (hi, stop)):
                    if not 0 <= b <= n:
                        raise self.fail("E0304", f"slice bound {raw} is out of range for dim {k} of {t}", span,
                                        help=f"bounds run from {-n} to {n}; {v.origin}")
                if hi <= lo:
                    raise self.fail("E0304", f"the slice {_slice_text(s)} of dim {k} ({n} items) is empty", span,
                                    help=f"it keeps items {lo} to {hi - 1}; every dim of a tensor is at least 1")
                ops.append((O.SliceOp(start=lo, stop=hi, dim=k, step=step or 1), None, span))
                continue
            if isinstance(s, Tensor):
                if s.type.dtype != "int":
                    raise self.fail("E0401", f"a tensor subscript takes ints and slices, or an int tensor to gather "
                                             f"by, got {typed(s)}", span,
                                    help="select with an int (`x[:, 0]`) or a slice (`x[:, 1:]`); gather by an int "
                                         "tensor (`table[index]`, built from `arange` or an int graph input)")
                from archlang.ops.tensor import Gather  # a family op (the module imports this one's stage)

                ops.append((Gather(dim=k), s, span))
                continue
            if not isinstance(s, int) or isinstance(s, bool):
                raise self.fail("E0401", f"an index must be an int, got {typed(s)}", span)
            if isinstance(n, int) and not -n <= s < n:
                raise self.fail("E0304", f"index {s} is out of range for dim {k} of {t}", span,
                                help=f"valid indices are {-n} to {n - 1}; {v.origin}")
            ops.append((O.Take(index=s, dim=k), None, span))
        out: Any = v
        for op, index, at in ops:
            if index is None:
                out = self.emit(op, [out], op.op, None, e.span, fr, [e.span])
            else:  # `table[index]`: gather(table, index, dim)
                out = self.emit(op, [out, index], op.op, None, e.span, fr, [e.value.span, at])
        return out

    def check_list(self, v: list, span: Span) -> list:
        """Refuse a compile-time list holding more than :data:`MAX_LIST` items in all (nested
        lists count in full: `l = [l, l]` doubles), counting no further than the limit."""
        todo, seen = [v], 0
        while todo:
            items = todo.pop()
            seen += len(items)
            if seen > MAX_LIST:
                raise self.fail("E0406", f"a list of more than {MAX_LIST:,} items (nested lists counted in full)",
                                span, help=f"compile-time lists hold at most {MAX_LIST:,} items")
            todo.extend(x for x in items if isinstance(x, list))
        self.steps += seen // 64  # building big lists is work too: it counts toward the step limit
        return v

    def check_dim(self, d: Dim, span: Span, what: str = "the symbolic size") -> None:
        if len(d.terms) > MAX_DIM_TERMS or d.degree > MAX_DIM_DEGREE:
            raise self.fail("E0406", f"{what} `{_short(fmt(d))}` has {len(d.terms)} terms of degree up to "
                                     f"{d.degree}", span,
                            help=f"a size is a polynomial of at most {MAX_DIM_TERMS} terms and degree "
                                 f"{MAX_DIM_DEGREE} in the free sizes; give them values with --set")

    def check_outputs(self, name: str, outs: tuple[TensorType, ...], span: Span) -> None:
        """Every dim of a tensor is a size of at least 1, and its element count stays a small polynomial."""
        for t in outs:
            for k, d in enumerate(t.shape):
                if isinstance(d, int) and d < 1:
                    raise self.fail("E0406", f"dim {k} of `{name}` would be {d}: {t}", span,
                                    help="every dim of a tensor is at least 1; check the sizes, strides and "
                                         "slices that lead here")
                if isinstance(d, Dim):
                    self.check_dim(d, span, f"dim {k} of `{name}`")
            try:
                n = product(t.shape)
            except DimTooLarge:
                n = None
            if isinstance(n, int) and n > MAX_SIZE * MAX_SIZE:
                raise self.fail("E0406", f"`{name}` would hold {n:.3g} elements ({t})", span,
                                help="check the sizes that lead here")
            if n is None or (isinstance(n, Dim) and len(n.terms) > MAX_NUMEL_TERMS):
                raise self.fail("E0406", f"the element count of `{name}` ({t}) is too large a polynomial", span,
                                help="give the free sizes values with --set")

    def unknown_name(self, name: str, span: Span, fr: Frame) -> DiagnosticError:
        hint = did_you_mean(name, list(fr.env))
        return self.fail("E0201", f"unknown name `{name}`", span,
                         help=hint or ("names are parameters, inputs, loop indices and earlier assignments"
                                       + (f"; in scope: {', '.join(sorted(fr.env)[:12])}" if fr.env else "")))

    def as_dim(self, v: Any, span: Span, what: str) -> DimLike:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, Dim) or (isinstance(v, int) and not isinstance(v, bool)):
            if isinstance(v, int) and v < 0:
                raise self.fail("E0406", f"{what} is negative ({v})", span)
            if isinstance(v, int) and v > MAX_SIZE:
                raise self.fail("E0406", f"{what} is {_short(str(v), 24)}, larger than any tensor can be", span,
                                help=f"a size is at most 2**{MAX_SIZE.bit_length()}")
            return v
        raise self.fail("E0401", f"{what} must be a size (int), got {typed(v)}", span)

    def binop(self, e: A.BinOp, fr: Frame) -> Any:
        if e.op in ("and", "or"):
            a = self.eval(e.left, fr)
            if a is POISON:
                return POISON
            if not isinstance(a, bool):
                raise self.fail("E0401", f"`{e.op}` needs bools, got {type_name(a)}", e.left.span)
            if (e.op == "and" and not a) or (e.op == "or" and a):
                return a
            b = self.eval(e.right, fr)
            if b is POISON:
                return POISON
            if not isinstance(b, bool):
                raise self.fail("E0401", f"`{e.op}` needs bools, got {type_name(b)}", e.right.span)
            return b
        a, b = self.eval(e.left, fr), self.eval(e.right, fr)
        if a is POISON or b is POISON:
            return POISON
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return self.tensor_binop(e, a, b, fr)
        op = e.op
        if op in ("==", "!="):
            eq = _eq(a, b)
            return eq if op == "==" else not eq
        if isinstance(a, list) or isinstance(b, list):
            if op == "+" and isinstance(a, list) and isinstance(b, list):
                return self.check_list(a + b, e.span)
            if op == "*" and isinstance(a, list) and isinstance(b, int) and not isinstance(b, bool):
                if len(a) * b > MAX_LIST:
                    raise self.fail("E0406", f"a list of {len(a) * b:,} items is too long", e.span,
                                    help=f"compile-time lists hold at most {MAX_LIST:,} items")
                return self.check_list(a * b, e.span)
            raise self.fail("E0401", f"cannot apply `{op}` to {type_name(a)} and {type_name(b)}", e.span)
        if isinstance(a, str) or isinstance(b, str):
            if op == "+" and isinstance(a, str) and isinstance(b, str):
                if len(a) + len(b) > MAX_STR:
                    raise self.fail("E0406", f"a string of {len(a) + len(b):,} characters is too long", e.span,
                                    help=f"compile-time strings hold at most {MAX_STR:,} characters")
                return a + b
            raise self.fail("E0401", f"cannot apply `{op}` to {type_name(a)} and {type_name(b)}", e.span)
        for v, side in ((a, e.left), (b, e.right)):
            if isinstance(v, bool) or not isinstance(v, int | float | Dim):
                raise self.fail("E0401", f"`{op}` needs numbers, got {typed(v)}", side.span)
        try:
            r = self.arith(op, a, b, e)
        except DimTooLarge as err:
            raise self.fail("E0406", f"`{op}` gives a symbolic size too large to handle: {err}", e.span,
                            help="sizes are polynomials of a few terms in the free sizes; give them values "
                                 "with --set") from None
        if isinstance(r, Dim):
            self.check_dim(r, e.span)
        if _too_large(r):
            raise self.fail("E0406", f"`{op}` gives a number too large to represent", e.span,
                            help=f"with {show(a)} and {show(b)}; integers stay below 2**63 and numbers below "
                                 "about 1.8e308")
        return r

    def arith(self, op: str, a: Any, b: Any, e: A.BinOp) -> Any:
        sym = isinstance(a, Dim) or isinstance(b, Dim)
        if not sym:
            try:
                if op == "+":
                    return a + b
                if op == "-":
                    return a - b
                if op == "*":
                    return a * b
                if op == "/":
                    if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
                        return a // b
                    return a / b
                if op == "//":
                    return a // b
                if op == "%":
                    return a % b
                if op == "**":
                    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 \
                            and b * math.log2(abs(a)) > 64:
                        raise OverflowError
                    r = a ** b
                    if isinstance(r, complex):
                        raise ZeroDivisionError
                    return r
                if op in ("<", "<=", ">", ">="):
                    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
                if op == "@":
                    raise self.fail("E0401", "`@` multiplies tensors", e.span)
            except ZeroDivisionError:
                raise self.fail("E0406", f"division by zero in `{op}`", e.span) from None
            except OverflowError:
                raise self.fail("E0406", "number too large", e.span) from None
            raise AssertionError(op)  # pragma: no cover
        # symbolic sizes: B, S, img/4 ...
        if isinstance(a, float) or isinstance(b, float):
            a, b = _intify(a), _intify(b)
            if isinstance(a, float) or isinstance(b, float):
                raise self.fail("E0404", f"cannot combine the symbolic size `{show(a if isinstance(a, Dim) else b)}` "
                                f"with a non-integral number", e.span)
        if op == "+":
            return add(a, b)
        if op == "-":
            return add(a, mul(b, -1))
        if op == "*":
            return mul(a, b)
        if op in ("/", "//", "%") and isinstance(b, int):
            if b == 0:
                raise self.fail("E0406", "division by zero", e.span)
            q = div_exact(a, b)
            integral = q is not None and (isinstance(q, int) or all(t.den == 1 for t in q.terms))
            if op == "%":
                if integral:
                    return 0
                raise self.fail("E0404", f"`{fmt(a)} % {b}` is not known at compile time", e.span,
                                help="give the size a value with --set, or restructure the check")
            if op == "//" and not integral:
                raise self.fail("E0404", f"`{fmt(a)} // {b}` is not known at compile time", e.span,
                                help="use `/` for an exact division of a symbolic size")
            return q
        if op in ("==", "!="):
            return (a == b) == (op == "==")
        if op in ("<", "<=", ">", ">="):
            d = add(a, mul(b, -1))
            if isinstance(d, int):
                return {"<": d < 0, "<=": d <= 0, ">": d > 0, ">=": d >= 0}[op]
            raise self.fail("E0404", f"`{show(a)} {op} {show(b)}` depends on a free size", e.span,
                            help="conditions must be decidable at compile time; set the size with --set")
        raise self.fail("E0404", f"`{op}` is not defined for the symbolic size `{show(a if isinstance(a, Dim) else b)}`",
                        e.span)

    # -- tensor arithmetic
    def tensor_binop(self, e: A.BinOp, a: Any, b: Any, fr: Frame) -> Any:
        op = e.op
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if op == "@":
                return self.emit(O.Matmul(), [a, b], "matmul", None, e.span, fr, [e.left.span, e.right.span])
            fn = {"+": "add", "-": "sub", "*": "mul", "/": "div"}.get(op)
            if fn is None:
                raise self.fail("E0401", f"`{op}` is not defined for tensors", e.span,
                                help="tensors support + - * / and @")
            return self.emit(O.Binary(fn=fn), [a, b], fn, None, e.span, fr, [e.left.span, e.right.span])
        t, c = (a, b) if isinstance(a, Tensor) else (b, a)
        if isinstance(c, bool) or not isinstance(c, int | float):
            raise self.fail("E0401", f"cannot apply `{op}` to a tensor and {typed(c)}", e.span)
        c = float(c)
        tensor_left = isinstance(a, Tensor)
        if op == "*":
            return self.tensor_scale(t, c, 0.0, e, fr)
        if op == "/" and tensor_left:
            if c == 0:
                raise self.fail("E0406", "division by zero", e.span)
            return self.tensor_scale(t, 1.0 / c, 0.0, e, fr)
        if op == "+":
            return self.tensor_scale(t, 1.0, c, e, fr)
        if op == "-":
            return self.tensor_scale(t, 1.0, -c, e, fr) if tensor_left else self.tensor_scale(t, -1.0, c, e, fr)
        raise self.fail("E0401", f"`{op}` is not defined between a tensor and a number", e.span)

    def tensor_scale(self, t: Tensor, factor: float, offset: float, e: A.Expr, fr: Frame) -> Tensor:
        return self.emit(O.Scale(factor=factor, offset=offset), [t], "scale", None, e.span, fr, [e.span])

    def emit(self, op: O.OpBase, inputs: list[Tensor], base: str, label: str | None, span: Span, fr: Frame,
             input_spans: list[Span], name: str | None = None) -> Any:
        name = name or (self.full(fr, label) if label else self.auto_name(fr, base))
        types = [t.type for t in inputs]
        try:
            outs = infer(op, types)
        except DimTooLarge as err:
            raise self.fail("E0406", f"the output shape is too large a polynomial: {err}", span,
                            help="give the free sizes values with --set") from None
        except ShapeError as err:
            notes = [Label(f"input {i} is {t.type}: {t.origin}", None) for i, t in enumerate(inputs)]
            sp = input_spans[err.input_index] if err.input_index is not None and err.input_index < len(input_spans) \
                else span
            raise self.fail(err.code, err.message, sp, help=err.help, notes=notes) from None
        self.check_outputs(name, outs, span)
        self.claim(name, span, fr)
        self.add_node(name, op, inputs, outs, span, fr)
        tensors = tuple(Tensor(ValueRef(node=name, index=i), t, f"output of `{name}` at {span}")
                        for i, t in enumerate(outs))
        return tensors[0] if len(tensors) == 1 else tensors

    # -- calls
    def call(self, c: A.Call, fr: Frame, label: str | None, span: Span) -> Any:
        if c.path:  # `blocks[0].fc(z)`, `pe{s}(z)`: an earlier labelled layer, called again
            return self.call_shared(c, fr, label, span)
        if c.func in SURFACE:
            return self.call_op(SURFACE[c.func], c, fr, label, span)
        if c.func in self.prog.blocks:
            return self.call_block(self.prog.blocks[c.func], c, fr, label, span)
        if c.func in BUILTINS:
            if label:
                raise self.fail("E0406", f"`{c.func}` computes a value at compile time and creates no node to label",
                                span)
            r = self.call_builtin(c, fr)
            if _too_large(r):
                raise self.fail("E0406", f"`{c.func}` gives a number too large to represent", c.span,
                                help="integers stay below 2**63 and numbers below about 1.8e308")
            return r
        if c.func in self.prog.archs:
            raise self.fail("E0202", f"`{c.func}` is an arch; only blocks and ops can be called", c.func_span,
                            help="turn the shared part into a `block` and call it from both archs")
        if self.labelled(fr, c.func) is not None or self.full(fr, c.func) in self.scope_spans \
                or (fr.path and c.func in self.taken):
            return self.call_shared(c, fr, label, span)  # `pe1(z)`: the layer labelled `pe1`, again
        hint = did_you_mean(c.func, [*SURFACE, *self.prog.blocks, *BUILTINS, *self.labels_here(fr)])
        raise self.fail("E0202", f"unknown operation or block `{c.func}`", c.func_span,
                        help=hint or "see `archc ops` for the primitive ops; blocks come from this file or `use`")

    # -- weight sharing: calling an earlier labelled layer
    def labelled(self, fr: Frame, local: str) -> Node | None:
        """The node labelled ``local`` in this scope (a layer made here or in a block instance below)."""
        k = self.node_at.get(self.full(fr, local))
        return self.nodes[k] if k is not None else None

    def labels_here(self, fr: Frame) -> list[str]:
        """Layers with weights that ``fr`` can call again (for did-you-mean)."""
        pre = f"{fr.path}." if fr.path else ""
        return [n.name[len(pre):] for n in self.nodes if n.name.startswith(pre) and n.op.parameters()
                and n.shares is None]

    def call_shared(self, c: A.Call, fr: Frame, label: str | None, span: Span) -> Any:
        """``y = pe1(z)``: a new node that runs the layer labelled ``pe1`` on new inputs with the
        same weights (``Node.shares``): its parameters are counted once, the generated module
        calls the same submodule twice, the state_dict has one copy."""
        local = self.label_text(c.path, fr) if c.path else c.func
        if local is POISON:
            return POISON
        name = self.full(fr, local)
        node = self.labelled(fr, local)
        if node is None:
            if name in self.block_calls:
                return self.call_shared_block(name, local, c, fr, label, span)
            outside = self.nodes[self.node_at[local]] if fr.path and local in self.node_at else None
            if outside is not None:
                raise self.fail("E0201", f"`{local}` is labelled outside this block instance", c.func_span,
                                help="a layer is shared where it is made, or from the block instances around "
                                     "it: make it in this block, or call it from the arch",
                                notes=[Label(f"`{local}` is made here", outside.span)])
            hint = did_you_mean(local, self.labels_here(fr))
            raise self.fail("E0201", f"no layer labelled `{local}` to share", c.func_span,
                            help=hint or "label a layer first (`pe1: conv2d(x, ...)`), then call it on another "
                                         "input: `pe1(z)`")
        if isinstance(node.op, O.Input | O.Output):
            raise self.fail("E0405", f"`{local}` is an {'input' if isinstance(node.op, O.Input) else 'output'}, "
                                     "not a layer", c.func_span, help="call a labelled layer with weights: `pe1(z)`")
        if not node.op.parameters():
            raise self.fail("E0406", f"`{local}` ({node.op.op}) has no weights to share", c.func_span,
                            help="call the op again for the same computation; sharing is for layers with parameters",
                            notes=[Label(f"`{local}` is made here", node.span)])
        if c.kwargs:
            raise self.fail("E0403", f"a shared layer takes its input tensors only; `{local}` keeps the arguments "
                                     "it was made with", c.kwargs[0].span,
                            help=f"e.g. `{local}({', '.join(f'x{i}' for i in range(len(node.inputs))) or 'x'})`",
                            notes=[Label(f"`{local}` is made here", node.span)])
        if len(c.args) != len(node.inputs):
            raise self.fail("E0403", f"`{local}` takes {len(node.inputs)} tensor{'s' if len(node.inputs) != 1 else ''}"
                                     f", got {len(c.args)}", c.span, notes=[Label(f"`{local}` is made here", node.span)])
        inputs: list[Tensor] = []
        for a in c.args:
            v = self.eval(a, fr)
            if v is POISON:
                return POISON
            if not isinstance(v, Tensor):
                raise self.fail("E0405", f"`{local}` expects a tensor, got {typed(v)}", a.span)
            inputs.append(v)
        root = node.shares or node.name  # sharing a shared layer shares the original
        base = local.rsplit(".", 1)[-1]
        if base.isdigit():
            base = node.op.op
        try:
            out = self.emit(node.op, inputs, base, label, span, fr, [a.span for a in c.args])
        except DiagnosticError as err:
            ins = ", ".join(str(self.type_at(r)) for r in node.inputs)
            err.diag.notes.append(Label(f"`{local}` is made here for {ins}; a shared layer needs inputs it fits",
                                        node.span))
            raise
        self.nodes[-1] = self.nodes[-1].model_copy(update={"shares": root})
        return out

    def call_shared_block(self, name: str, local: str, c: A.Call, fr: Frame, label: str | None, span: Span) -> Any:
        """``y = blk(z)``: the block instance ``blk`` run again on new inputs with its weights.
        Its body runs once more with the instance's value arguments; every layer it makes
        shares the layer of ``blk`` at the same place (``blk_1.fc`` runs with ``blk.fc``'s
        weights) and sits in the caller's scope, so the generated module calls ``blk``'s
        submodules (``self.blk.fc(z)``). A block that calls other blocks is refused."""
        b, values = self.block_calls[name]
        made_at = Label(f"`{local}` is created here", self.scope_spans[name])
        if c.kwargs:
            raise self.fail("E0403", f"a shared block instance takes its input tensors only; `{local}` keeps the "
                                     "arguments it was made with", c.kwargs[0].span, notes=[made_at])
        tensor_params = [p for p in b.params if isinstance(p.annot, A.TensorAnnot)]
        if len(c.args) != len(tensor_params):
            raise self.fail("E0403", f"`{local}` takes {len(tensor_params)} tensor{'s' if len(tensor_params) != 1 else ''}"
                                     f" ({', '.join(p.name for p in tensor_params)}), got {len(c.args)}", c.span,
                            notes=[made_at])
        env: dict[str, Binding] = {}
        for p, a in zip(tensor_params, c.args, strict=True):
            v = self.eval(a, fr)
            if v is POISON:
                return POISON
            if not isinstance(v, Tensor):
                raise self.fail("E0405", f"`{local}` expects a tensor for `{p.name}`, got {typed(v)}", a.span)
            self.match_shape(b, p, v, a.span, env)
            env[p.name] = Binding(v, a.span, f"argument `{p.name}`")
        env.update(values)
        path = self.full(fr, label) if label else self.auto_name(fr, local.rsplit(".", 1)[-1])
        self.claim(path, span, fr)
        n0, s0 = len(self.nodes), len(self.scopes)
        n_errors = sum(1 for d in self.diags if d.is_error)
        self.stack.append((b.name, span))
        try:
            ret = self.exec_block_body(b.body, Frame(env=env, path=path, block=b.name), in_arch=False)
        finally:
            self.stack.pop()
        if len(self.scopes) > s0:
            raise self.fail("E0406", f"`{local}` calls other blocks; a shared block instance makes layers only",
                            c.func_span, help="share its layers one by one: `blk.fc(z)`", notes=[made_at])
        if ret is None or sum(1 for d in self.diags if d.is_error) > n_errors or any(v is POISON for v in ret):
            return POISON
        for k in range(n0, len(self.nodes)):
            nd = self.nodes[k]
            update: dict[str, Any] = {"scope": fr.path}
            if nd.op.parameters():
                orig = f"{name}{nd.name[len(path):]}"
                at = self.node_at.get(orig)
                if at is None or self.nodes[at].op != nd.op:
                    raise self.fail("E0406", f"`{nd.name}` would need weights other than `{orig}`'s", c.span,
                                    help=f"the inputs of a shared block instance must fit the weights `{local}` "
                                         "was made with", notes=[made_at])
                update["shares"] = self.nodes[at].shares or orig
            self.nodes[k] = nd.model_copy(update=update)
        return ret[0] if len(ret) == 1 else tuple(ret)

    def type_at(self, r: ValueRef) -> TensorType | None:
        k = self.node_at.get(r.node)
        return self.nodes[k].outputs[r.index] if k is not None and r.index < len(self.nodes[k].outputs) else None

    def bind_args(self, c: A.Call, names: list[str], fr: Frame, what: str, extra: bool = False,
                  deferred: frozenset[str] = frozenset()
                  ) -> tuple[dict[str, tuple[Any, Span]], dict[str, tuple[Any, Span]]]:
        if len(c.args) > len(names):
            raise self.fail("E0403", f"`{what}` takes at most {len(names)} positional argument"
                            f"{'s' if len(names) != 1 else ''}, got {len(c.args)}", c.args[len(names)].span,
                            help=f"parameters: {', '.join(names)}")
        bound: dict[str, tuple[Any, Span]] = {}
        extras: dict[str, tuple[Any, Span]] = {}
        for n, a in zip(names, c.args, strict=False):
            bound[n] = (Deferred(a, fr) if n in deferred else self.eval(a, fr), a.span)
        for kw in c.kwargs:
            if kw.name in bound or kw.name in extras:
                raise self.fail("E0403", f"argument `{kw.name}` is given twice", kw.span)
            if kw.name not in names:
                if extra:
                    extras[kw.name] = (self.eval(kw.value, fr), kw.span)
                    continue
                hint = did_you_mean(kw.name, names)
                raise self.fail("E0204", f"`{what}` has no argument `{kw.name}`", kw.span,
                                help=hint or f"arguments: {', '.join(names)}")
            bound[kw.name] = (Deferred(kw.value, fr) if kw.name in deferred else self.eval(kw.value, fr), kw.span)
        return bound, extras

    def call_op(self, s: Surface, c: A.Call, fr: Frame, label: str | None, span: Span) -> Any:
        names = [*s.tensors, *(a.name for a in s.args)]
        bound, extras = self.bind_args(c, names, fr, s.name, s.extra_kwargs,
                                       frozenset(a.name for a in s.args if a.type.startswith("expr")))
        if any(_has_poison(v) for v, _ in [*bound.values(), *extras.values()]):
            return POISON
        inputs: list[Tensor] = []
        input_spans: list[Span] = []
        for tname in s.tensors:
            if tname not in bound:
                raise self.fail("E0402", f"`{s.name}` needs the tensor `{tname}`", c.func_span,
                                help=f"call it as `{s.name}({', '.join(names[:len(s.tensors) + 1])}, ...)`")
            v, vspan = bound[tname]
            if tname == "xs":
                if not isinstance(v, list) or not v or not all(isinstance(t, Tensor) for t in v):
                    raise self.fail("E0405", f"`{s.name}` takes a list of tensors, got {type_name(v)}", vspan,
                                    help=f"e.g. `{s.name}([a, b], dim = 1)`")
                inputs.extend(v)
                input_spans.extend([vspan] * len(v))
                continue
            if not isinstance(v, Tensor):
                raise self.fail("E0405", f"`{s.name}` expects a tensor for `{tname}`, got {typed(v)}",
                                vspan, help=f"pass a tensor (an input, or the result of an op or block): "
                                            f"`{s.name}({', '.join(s.tensors)}, ...)`")
            inputs.append(v)
            input_spans.append(vspan)
        args: dict[str, Any] = {}
        for a in s.args:
            if a.name in bound:
                v, vspan = bound[a.name]
                if a.type == "tensor" or a.type.startswith("expr"):  # becomes inputs (archlang.check.index_args)
                    args[a.name] = bind_index_arg(self, v, a.type, f"`{s.name}` argument `{a.name}`", vspan, fr,
                                                  inputs, input_spans, INDEX_VARS[a.type])
                    if args[a.name] is POISON:
                        return POISON
                    continue
                args[a.name] = self.coerce_arg(v, a.type, f"`{s.name}` argument `{a.name}`", vspan)
                self.check_min(s, a, args[a.name], vspan, c, names, fr)
            elif a.default is REQUIRED:
                raise self.fail("E0402", f"`{s.name}` needs the argument `{a.name}` ({a.type})", c.func_span,
                                help=f"e.g. `{s.name}({', '.join(s.tensors)}, {a.name} = ...)`")
            else:
                args[a.name] = a.default
        for k, (v, vspan) in extras.items():
            v = _intify(v)
            if isinstance(v, bool) or not isinstance(v, int | Dim):
                raise self.fail("E0401", f"axis size `{k}` must be an int, got {typed(v)}", vspan)
            if isinstance(v, int) and v < 1:
                raise self.fail("E0406", f"axis size `{k}` must be positive, got {v}", vspan)
            args[k] = v
        name = self.full(fr, label) if label else self.auto_name(fr, s.name)
        arg_spans = {k: sp for k, (_, sp) in [*bound.items(), *extras.items()]}

        def describe_arg(n: str) -> str:
            if n in bound:
                return f"`{n}` = {show(args.get(n))} (argument at {arg_spans[n]})"
            return f"`{n}` = {show(args.get(n))} (default)"

        def describe_input(i: int) -> str:
            return f"`{s.tensors[min(i, len(s.tensors) - 1)]}`: {inputs[i].type}, {inputs[i].origin}"

        def lookup(ref: str) -> tuple[str, O.OpBase] | None:
            for cand in (self.full(fr, ref), ref):
                node = next((n for n in reversed(self.nodes) if n.name == cand), None)
                if node is not None:
                    return node.name, node.op
            return None

        ctx = BuildCtx(describe_arg=describe_arg, describe_input=describe_input, node_name=name, lookup=lookup)
        try:
            op = s.build(ctx, [t.type for t in inputs], args)
        except BuildError as err:
            sp = arg_spans.get(err.arg or "", span)
            raise self.fail(err.code, err.message, sp, help=err.help,
                            notes=[Label(n) for n in err.notes]) from None
        for code, msg, help_ in ctx.notes:
            self.record(Diagnostic(code, msg, span, help=help_, severity=Severity.NOTE))
        return self.emit(op, inputs, s.name, label, span, fr, input_spans, name=name)

    def provenance(self, c: A.Call, names: list[str], arg: str, fr: Frame) -> list[Label]:
        """Where an argument's value came from, when it is passed as a plain name (`stride = s`)."""
        exprs = {**dict(zip(names, c.args, strict=False)), **{kw.name: kw.value for kw in c.kwargs}}
        e = exprs.get(arg)
        if isinstance(e, A.Name) and e.id in fr.env:
            return [Label(fr.env[e.id].what, fr.env[e.id].span)]
        return []

    def check_min(self, s: Surface, a: Arg, v: Any, span: Span, c: A.Call, names: list[str], fr: Frame) -> None:
        """Sizes, counts and strides of an op: an int (or each item of a pair/list) at least ``a.min``;
        a float in its domain (``a.range``)."""
        if a.range is not None and isinstance(v, int | float) and not isinstance(v, bool):
            ok = v > 0 if a.range == "positive" else 0 <= v <= 1
            if not ok:
                what = "greater than 0" if a.range == "positive" else "between 0 and 1"
                raise self.fail("E0406", f"`{s.name}` argument `{a.name}` must be {what}, got {show(v)}", span,
                                help=f"`archc ops` lists the arguments of `{s.name}`",
                                notes=self.provenance(c, names, a.name, fr))
        if a.min is None:
            return
        items = v if isinstance(v, tuple) else (v,)
        if all(not isinstance(x, int) or x >= a.min for x in items):
            return
        why = "sizes, counts and strides are positive" if a.min >= 1 else "it cannot be negative"
        got = show(list(v)) if isinstance(v, tuple) else show(v)
        raise self.fail("E0406", f"`{s.name}` argument `{a.name}` must be at least {a.min}, got {got}", span,
                        help=f"{why}; `archc ops` lists the arguments of `{s.name}`",
                        notes=self.provenance(c, names, a.name, fr))

    def coerce_arg(self, v: Any, t: str, what: str, span: Span) -> Any:
        if t == "tensor":
            if not isinstance(v, Tensor):
                raise self.fail("E0405", f"{what} must be a tensor, got {type_name(v)}", span)
            return v
        if t == "int":
            v = _intify(v)
            if isinstance(v, Dim):
                raise self.fail("E0404", f"{what} must be known at compile time, but it is the free size `{fmt(v)}`",
                                span, help="give the size a value, e.g. with --set")
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        elif t == "float":
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        elif t == "bool":
            if isinstance(v, bool):
                return v
        elif t == "str":
            if isinstance(v, str):
                return v
        elif t == "str_or_float":  # a name or a number: param's init = "trunc_normal" or init = 0.5
            if isinstance(v, str):
                return v
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        elif t == "pair":
            v = _intify(v)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if isinstance(v, list) and len(v) == 2:
                items = [_intify(x) for x in v]
                if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
                    return tuple(items)
        elif t == "ints":
            if isinstance(v, int) and not isinstance(v, bool):
                return (v,)
            if isinstance(v, list):
                items = [_intify(x) for x in v]
                if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
                    return tuple(items)
        want = {"pair": "an int or [int, int]", "ints": "a list of ints", "str_or_float": "a string or a number"}.get(t, t)
        raise self.fail("E0401", f"{what} must be {want}, got {typed(v)}", span, help=_type_help(v, t))

    def coerce(self, v: Any, annot: A.ValueType, what: str, span: Span, code: str = "E0401",
               help: str | None = None) -> Any:
        if v is POISON:
            return v
        if annot.name == "list":
            assert annot.elem is not None
            if not isinstance(v, list):
                raise self.fail(code, f"{what} must be {annot}, got {typed(v)}", span,
                                help=help or _type_help(v, str(annot)))
            return [self.coerce(x, annot.elem, f"an item of {what}", span, code, help) for x in v]
        if annot.name == "int":
            v2 = _intify(v)
            if (isinstance(v2, int) and not isinstance(v2, bool)) or isinstance(v2, Dim):
                return v2
        elif annot.name == "float":
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        elif annot.name == "bool":
            if isinstance(v, bool):
                return v
        elif annot.name == "str" and isinstance(v, str):
            return v
        raise self.fail(code, f"{what} must be {annot}, got {typed(v)}", span, help=help or _type_help(v, annot.name))

    def call_block(self, b: A.BlockDef, c: A.Call, fr: Frame, label: str | None, span: Span) -> Any:
        if any(name == b.name for name, _ in self.stack):
            chain = " -> ".join([*(n for n, _ in self.stack), b.name])
            raise self.fail("E0601", f"block `{b.name}` calls itself ({chain})", span,
                            help="archlang unrolls blocks at compile time, so recursion never ends; use a `for` loop")
        names = [p.name for p in b.params]
        bound, _ = self.bind_args(c, names, fr, b.name)
        if any(_has_poison(v) for v, _ in bound.values()):
            return POISON
        path = self.full(fr, label) if label else self.auto_name(fr, b.name)
        self.claim(path, span, fr)
        env: dict[str, Binding] = {}
        # tensors first (they bind dims), then values in order (defaults may use dims)
        for p in b.params:
            if not isinstance(p.annot, A.TensorAnnot):
                continue
            if p.name not in bound:
                raise self.fail("E0402", f"block `{b.name}` needs the tensor `{p.name}`", c.func_span,
                                help=f"parameters: {_sig(b)}")
            v, vspan = bound[p.name]
            if not isinstance(v, Tensor):
                raise self.fail("E0405", f"`{b.name}` expects a tensor for `{p.name}`, got {typed(v)}",
                                vspan, help=f"`{p.name}` is declared `{p.name}: {_annot_str(p.annot)}` at {p.span}; "
                                            f"pass a tensor (an input, or the result of an op or block)")
            self.match_shape(b, p, v, vspan, env)
            env[p.name] = Binding(v, vspan, f"argument `{p.name}`")
        for p in b.params:
            if isinstance(p.annot, A.TensorAnnot):
                continue
            bfr = Frame(env=env, path=path, block=b.name)
            if p.name in bound:
                v, vspan = bound[p.name]
                v = self.coerce(v, p.annot, f"`{b.name}` argument `{p.name}`", vspan)
                env[p.name] = Binding(v, vspan, f"argument `{p.name}` = {show(v)}")
            elif p.default is not None:
                self.stack.append((b.name, span))
                try:
                    v = self.coerce(self.eval(p.default, bfr), p.annot, f"`{b.name}` parameter `{p.name}`",
                                    p.default.span)
                finally:
                    self.stack.pop()
                env[p.name] = Binding(v, p.default.span, f"`{p.name}` = {show(v)} (default of `{b.name}`)")
            else:
                raise self.fail("E0402", f"block `{b.name}` needs the argument `{p.name}` ({p.annot})", c.func_span,
                                help=f"parameters: {_sig(b)}")
        tensor_params = [p for p in b.params if isinstance(p.annot, A.TensorAnnot)]
        self.block_calls[path] = (b, {p.name: env[p.name] for p in b.params if not isinstance(p.annot, A.TensorAnnot)})
        dim_names = {d.id for p in tensor_params for d in p.annot.dims if isinstance(d, A.Name)}
        scope_index = len(self.scopes)
        self.scope_parent[path] = fr.path
        self.scope_spans[path] = span
        self.scopes.append(Scope(
            path=path, block=b.name, span=span,
            args=tuple(ParamValue(name=p.name, type=str(p.annot), value=to_ir_value(env[p.name].value))
                       for p in b.params if not isinstance(p.annot, A.TensorAnnot)
                       and env[p.name].value is not POISON and not isinstance(env[p.name].value, Dim)),
            dims=tuple(ParamValue(name=n, type="int", value=env[n].value) for n in sorted(dim_names)
                       if n in env and isinstance(env[n].value, int) and not isinstance(env[n].value, bool)),
            inputs=tuple(env[p.name].value.ref for p in tensor_params),
            input_names=tuple(p.name for p in tensor_params)))
        self.stack.append((b.name, span))
        n_errors = sum(1 for d in self.diags if d.is_error)
        try:
            ret = self.exec_block_body(b.body, Frame(env=env, path=path, block=b.name), in_arch=False)
        finally:
            self.stack.pop()
        if ret is None and sum(1 for d in self.diags if d.is_error) > n_errors:
            return POISON  # an error in the body (say, in an `if` guarding the `return`) is reported already
        if ret is None:
            raise self.fail("E0606", f"block `{b.name}` does not return a value", b.span,
                            help="end the block with `return expr`")
        if any(v is POISON for v in ret):
            return POISON
        for v in ret:
            if not isinstance(v, Tensor):
                raise self.fail("E0405", f"block `{b.name}` returns {typed(v)}; blocks return tensors",
                                b.span, help="compute values in the caller; a block returns tensors")
        self.scopes[scope_index] = self.scopes[scope_index].model_copy(
            update={"outputs": tuple(v.ref for v in ret)})
        return ret[0] if len(ret) == 1 else tuple(ret)

    def match_shape(self, b: A.BlockDef, p: A.Param, v: Tensor, vspan: Span, env: dict[str, Binding]) -> None:
        annot = p.annot
        assert isinstance(annot, A.TensorAnnot)
        pattern = list(annot.dims)
        stars = [i for i, d in enumerate(pattern) if isinstance(d, A.Star)]
        shape = list(v.type.shape)
        shape_desc = f"`{p.name}` is {v.type}: {v.origin}"
        if len(stars) > 1:
            raise self.fail("E0406", "a shape may contain at most one `*`", annot.span)
        if stars:
            k = stars[0]
            n_fixed = len(pattern) - 1
            if len(shape) < n_fixed:
                raise self.fail("E0302", f"`{b.name}` expects `{p.name}` with at least {n_fixed} dims, got {v.type}",
                                vspan, notes=[Label(shape_desc), Label("parameter declared here", p.span)])
            n_star = len(shape) - n_fixed
            pairs = list(zip(pattern[:k], shape[:k], strict=True)) + \
                list(zip(pattern[k + 1:], shape[k + n_star:], strict=True))
        else:
            if len(shape) != len(pattern):
                raise self.fail("E0302", f"`{b.name}` expects `{p.name}` of rank {len(pattern)} "
                                f"({_annot_str(annot)}), got {v.type}", vspan,
                                notes=[Label(shape_desc), Label("parameter declared here", p.span)])
            pairs = list(zip(pattern, shape, strict=True))
        if v.type.dtype != annot.dtype:
            raise self.fail("E0401", f"`{b.name}` expects a {annot.dtype} tensor for `{p.name}`, got {v.type}", vspan)
        for i, (d, actual) in enumerate(pairs):
            assert not isinstance(d, A.Star)
            if isinstance(d, A.Name) and d.id not in env:
                env[d.id] = Binding(actual, vspan, f"`{d.id}` = {fmt(actual)}: dim {i} of {shape_desc}")
                continue
            want = self.eval(d, Frame(env=env, path=""))
            if want is POISON:
                return
            if not _eq(want, actual):
                notes = [Label(shape_desc, vspan)]
                if isinstance(d, A.Name) and d.id in env:
                    notes.append(Label(f"but {env[d.id].what}", env[d.id].span))
                raise self.fail("E0301", f"shape mismatch: `{b.name}` expects `{p.name}` as {_annot_str(annot)}, "
                                f"but dim {i} is {fmt(actual)}, not {show(want)}", vspan,
                                notes=[*notes, Label(f"`{p.name}` declared here", p.span)])

    def call_builtin(self, c: A.Call, fr: Frame) -> Any:
        if c.kwargs:
            raise self.fail("E0204", f"`{c.func}` takes no keyword arguments", c.kwargs[0].span)
        args = [self.eval(a, fr) for a in c.args]
        if POISON in args:
            return POISON
        f = c.func
        nums = (int, float)

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise self.fail("E0401", f"`{f}` {msg}", c.span)

        if f == "len":
            need(len(args) == 1 and isinstance(args[0], list | str), "takes one list")
            return len(args[0])
        if f in ("sum", "min", "max"):
            items = args[0] if len(args) == 1 and isinstance(args[0], list) else args
            need(bool(items) or f == "sum", "needs at least one value")
            need(all(isinstance(x, (int, float, Dim)) and not isinstance(x, bool) for x in items), "takes numbers")
            if f == "sum":
                total: Any = 0
                for x in items:
                    total = add(total, x) if isinstance(total, Dim) or isinstance(x, Dim) else total + x
                return total
            need(all(not isinstance(x, Dim) for x in items), "cannot order symbolic sizes")
            return min(items) if f == "min" else max(items)
        if f == "range":
            need(len(args) in (1, 2) and all(isinstance(x, int) and not isinstance(x, bool) for x in args),
                 "takes one or two ints")
            lo, hi = (0, args[0]) if len(args) == 1 else args
            if hi - lo > MAX_LOOP:
                raise self.fail("E0406", "range too long", c.span)
            return list(range(lo, hi))
        need(len(args) == 1, "takes one argument")
        x = args[0]
        need(isinstance(x, nums) and not isinstance(x, bool), "takes a number")
        try:
            if f == "abs":
                return abs(x)
            if f == "int":
                return int(x)
            if f == "float":
                return float(x)
            if f == "round":
                return round(x)
            if f == "ceil":
                return math.ceil(x)
            if f == "floor":
                return math.floor(x)
        except (OverflowError, ValueError):
            raise self.fail("E0406", f"`{f}` of {x} is not a finite number", c.span) from None
        raise AssertionError(f)  # pragma: no cover

    # -- adapters
    def resolve_adapters(self) -> tuple[tuple[AdapterTap, ...], tuple[FreezeRule, ...]]:
        linear_like = {n.name: n for n in self.nodes if n.op.parameters() and n.shares is None}
        taps: list[AdapterTap] = []
        for st in self.adapt_stmts:
            if st.kind not in ("lora", "bitfit"):
                hint = did_you_mean(st.kind, ["lora", "bitfit"])
                self.record(Diagnostic("E0202", f"unknown adapter `{st.kind}`", st.span,
                                       help=hint or "adapters: lora, bitfit"))
                continue
            args = []
            fr = Frame(env={}, path="")
            try:
                for kw in st.args:
                    v = self.eval(kw.value, fr)
                    args.append(ParamValue(name=kw.name, type=type_name(v), value=to_ir_value(v)))
            except DiagnosticError as e:
                self.record(e.diag)
                continue
            targets: list[str] = []
            for k, sel in enumerate(st.selectors):
                hits = _select(sel, linear_like)
                if st.kind == "lora":
                    hits = [h for h in hits if _lora_ok(h, linear_like)]
                elif st.kind == "bitfit":
                    hits = [h for h in hits if h in linear_like]
                if not hits:
                    close = did_you_mean(sel, _selector_candidates(linear_like))
                    self.record(Diagnostic("E0703", f"selector \"{sel}\" matches no layer with weights",
                                           _at(st.selector_spans, k, st.span),
                                           help=close or "selectors are glob patterns over node names, e.g. "
                                                         "\"blocks.*.attn.q\"; `archc ir` lists the names"))
                targets.extend(h for h in hits if h not in targets)
            if st.kind == "lora":
                bad = [a.name for a in args if a.name not in ("r", "alpha", "dropout")]
                if bad:
                    self.record(Diagnostic("E0204", f"lora has no argument `{bad[0]}`", st.span,
                                           help=did_you_mean(bad[0], ["r", "alpha", "dropout"])
                                           or "lora(r = 8, alpha = 16, dropout = 0.0)"))
                    continue
            taps.append(AdapterTap(kind=st.kind, args=tuple(args), selectors=st.selectors, targets=tuple(targets),
                                   index=self.tap_order.get(id(st), 0), span=st.span))
        lora = {t: tap for tap in taps if tap.kind == "lora" for t in tap.targets}
        for t, tap in lora.items():
            node, _, part = t.rpartition(".")
            if part == "qkv":
                for sub in ("q", "k", "v"):
                    if f"{node}.{sub}" in lora:
                        self.record(Diagnostic(
                            "E0703", f"LoRA on both `{t}` and `{node}.{sub}`, which is part of it", tap.span,
                            help=f"adapt either the fused projection `{t}` or its parts `{node}.q`, `.k`, `.v`, "
                                 "not both"))
        rules = []
        for st in self.freeze_stmts:
            for k, sel in enumerate(st.selectors):
                if sel != "*" and not any(matches(sel, n, nd.op.op) for n, nd in linear_like.items()):
                    self.record(Diagnostic("E0703", f"selector \"{sel}\" matches no layer with weights",
                                           _at(st.selector_spans, k, st.span),
                                           help=did_you_mean(sel, _selector_candidates(linear_like))
                                           or "`archc ir` lists the node names"))
            rules.append(FreezeRule(freeze=st.freeze, selectors=st.selectors, index=self.tap_order.get(id(st), 0),
                                    span=st.span))
        return tuple(taps), tuple(rules)


def _lora_ok(target: str, nodes: dict[str, Node]) -> bool:
    """LoRA adapts linear projections: a linear node, or an attention's q/k/v/qkv/proj."""
    if target in nodes:
        return isinstance(nodes[target].op, O.Linear)
    node, _, part = target.rpartition(".")
    return node in nodes and part in lora_parts(nodes[node].op)


def _select(sel: str, nodes: dict[str, Node]) -> list[str]:
    """Glob ``sel`` over node names; ``attn.q``/``.k``/``.v`` address an attention's logical
    projections (even when the lowered projection is a fused qkv)."""
    kind, sel = split_kind(sel)  # "window_attention:*.q": only nodes of that op kind
    out = []
    for name, n in nodes.items():
        if kind is not None and n.op.op != kind:
            continue
        if fnmatch.fnmatchcase(name, sel):
            out.append(name)
        else:
            for part in lora_parts(n.op):
                if fnmatch.fnmatchcase(f"{name}.{part}", sel):
                    out.append(f"{name}.{part}")
    return out


def _selector_candidates(nodes: dict[str, Node]) -> list[str]:
    """Names a selector could have meant: node names, attention projections (``.q``), and
    the same with loop indices as ``*`` (``blocks.*.attn.q``)."""
    out: set[str] = set()
    for name, n in nodes.items():
        names = [name]
        names += [f"{name}.{part}" for part in lora_parts(n.op)]
        for x in names:
            out.add(x)
            out.add(".".join("*" if seg.isdigit() else seg for seg in x.split(".")))
    return sorted(out)


def _at(spans: tuple[Span, ...], k: int, default: Span) -> Span:
    return spans[k] if k < len(spans) else default


def _too_large(v: Any) -> bool:
    """A compile-time number the checker refuses: a non-finite float or an int beyond 2**63."""
    if isinstance(v, float):
        return not math.isfinite(v)
    return isinstance(v, int) and abs(v) > MAX_INT


def _LABEL_PIECE(s: str) -> bool:
    return s.isidentifier() and s.isascii()


def _slice_text(s: tuple[int | None, int | None, int | None]) -> str:
    start, stop, step = s
    return f"{'' if start is None else start}:{'' if stop is None else stop}" + ("" if step is None else f":{step}")


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _has_poison(v: Any) -> bool:
    return v is POISON or (isinstance(v, list | tuple) and any(_has_poison(x) for x in v))


def _intify(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _names_in(e: A.Expr) -> set[str]:
    if isinstance(e, A.Name):
        return {e.id}
    out: set[str] = set()
    for v in vars(e).values():
        if isinstance(v, A.Expr):
            out |= _names_in(v)
        elif isinstance(v, tuple):
            for x in v:
                if isinstance(x, A.Expr):
                    out |= _names_in(x)
    return out


def _annot_str(a: A.TensorAnnot) -> str:
    def d(x: A.Expr | A.Star) -> str:
        if isinstance(x, A.Star):
            return "*"
        if isinstance(x, A.Name):
            return x.id
        if isinstance(x, A.IntLit):
            return str(x.value)
        return "…"
    return "[" + ", ".join(d(x) for x in a.dims) + "]"


def _sig(b: A.BlockDef) -> str:
    return ", ".join(f"{p.name}: {_annot_str(p.annot) if isinstance(p.annot, A.TensorAnnot) else p.annot}"
                     for p in b.params)


def _type_help(v: Any, want: str) -> str | None:
    """A help line for a value of the wrong type: why it does not fit and what would."""
    if isinstance(v, Tensor):
        return ("a tensor's values exist only when the model runs, but this argument is fixed when the spec "
                "compiles: pass a literal, a parameter, or a size such as `x.shape[-1]`")
    if want in ("int", "pair") and isinstance(v, float):
        return f"{show(v)} is not a whole number; round it with `int(...)` or `round(...)`"
    if want in ("ints", "pair", "[int]") and isinstance(v, list):
        for i, x in enumerate(v):
            if not isinstance(_intify(x), int) or isinstance(x, bool):
                return f"item {i} is {typed(x)}, not an int"
        if want == "pair":
            return f"a pair has 2 items, this list has {len(v)}"
    if isinstance(v, str) and want in ("int", "float"):
        return f"write the number without quotes, e.g. {'8' if want == 'int' else '0.5'}"
    examples = {"int": "8", "float": "0.1", "bool": "true or false", "str": '"gelu"', "pair": "3 or [3, 3]",
                "ints": "[1, 2]"}
    if want in examples:
        return f"e.g. {examples[want]}"
    if want.startswith("[") and want.endswith("]"):
        return "e.g. " + {"[int]": "[2, 2, 6, 2]", "[float]": "[0.1, 0.2]", "[bool]": "[true, false]"}.get(
            want, '["a", "b"]')
    return None


def _example(t: A.ValueType) -> str:
    return {"int": "384", "float": "0.1", "bool": "true", "str": '"name"'}.get(t.name, "[2, 2, 6, 2]")


# ----------------------------------------------------------------------------- public entry points


def choose_arch(prog: Program, arch: str | None) -> tuple[str | None, Diagnostic | None]:
    """The arch named ``arch``; else the one named like the file; else the only one."""
    archs = [a.name for a in prog.main_archs()]
    if arch is not None:
        if arch in prog.archs:
            return arch, None
        hint = did_you_mean(arch, archs)
        return None, Diagnostic("E0205", f"no arch `{arch}` in {prog.main_file}", None,
                                help=hint or f"archs: {', '.join(archs) or '(none)'}")
    if not archs:
        return None, Diagnostic("E0205", f"{prog.main_file} defines no arch", None,
                                help="define one with `arch name(params) { ... }`")
    stem = Path(prog.main_file).stem
    if stem in archs:
        return stem, None
    if len(archs) == 1:
        return archs[0], None
    return None, Diagnostic("E0206", f"{prog.main_file} defines {len(archs)} archs; choose one with --arch", None,
                            help=f"archs: {', '.join(archs)}")


def parse_overrides(sets: list[str] | dict[str, Any], sources) -> tuple[list[Override], list[Diagnostic]]:
    """Turn ``["img=384", ...]`` (CLI) or ``{"img": 384}`` (Python) into overrides."""
    out: list[Override] = []
    diags: list[Diagnostic] = []
    items = list(sets.items()) if isinstance(sets, dict) else list(sets)
    for i, item in enumerate(items):
        fname = f"<--set #{i + 1}>"
        if isinstance(item, tuple):
            key, val = item
            text = show(val)
            line = f"{key}={text}"
        else:
            line = item
            if "=" not in line:
                sources.add(fname, line)
                diags.append(Diagnostic("E0701", f"`--set {line}` is not of the form key=value",
                                        Span(file=fname, line=1, col=1, end_line=1, end_col=len(line) + 1),
                                        help="e.g. --set img=384 --set depths=[2,2,18,2]"))
                continue
            key, text = line.split("=", 1)
            key = key.strip()
        sources.add(fname, line)
        col = line.index("=") + 2 if "=" in line else 1
        key_span = Span(file=fname, line=1, col=1, end_line=1, end_col=max(2, col - 1))
        out.append(Override(key, text.strip(), Span(file=fname, line=1, col=col, end_line=1,
                                                    end_col=max(col + 1, len(line) + 1)), key_span))
    return out, diags


def elaborate(prog: Program, arch: str, overrides: list[Override] | None = None
              ) -> tuple[Graph | None, list[Diagnostic]]:
    el = Elaborator(prog)
    graph = el.run_arch(arch, overrides or [])
    if graph is not None:  # constant expressions become build-time buffers (archlang.ops.tensor)
        from archlang.ops.tensor import fold_constants

        graph = fold_constants(graph)
    return graph, el.diags
