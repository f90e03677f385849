"""Hypothesis strategies for *well-typed* archlang programs (spec text).

tests/test_properties.py generates programs that are merely grammatical (most do not check);
these track the concrete shape of every tensor while they write, so that most programs check
clean and can be built, run and compared with the reference interpreter
(tests/test_differential.py). A program is one arch (and sometimes a variant of it, which is
then the arch under test), optionally with blocks, and covers:

- every primitive op of :data:`archlang.check.surface.SURFACE`, applied only where its
  arguments fit (heads divide the width, kernels fit, a rearrange's groups divide their dims);
- tensor arithmetic ``+ - *  /`` with broadcasting partners (``[D]``, ``[B, N, 1]``,
  ``mean(.., keepdim = true)``), scalars on either side, unary minus, parenthesised mixes
  such as ``(a + b) * c``, and ``@``;
- blocks with tensor and value parameters (defaults that use bound dims), one or several
  returns, called with and without keyword arguments, labelled or not;
- labels: plain, dotted (``enc.fc3``), indexed (``blocks[i].fc``, ``stage[1].norm``);
- ``for`` loops (unrolled; shape-preserving bodies or ``widths[i]`` stages), ``if / elif /
  else`` decided at compile time (on parameters, loop variables, ``x.shape[1]``),
  compile-time arithmetic, lists, ``len``/``sum``/``min``/``max``/``int``/``round``,
  ``x.shape[k]``, ``require``;
- variants (``arch small = net(dim = 8)``) and LoRA / BitFit ``adapt`` / ``freeze`` /
  ``unfreeze`` statements whose selectors match real nodes;
- the standard library (``std.nn`` ``mlp`` / ``transformer_block``, ``std.vision``
  ``patch_merge``), now and then;
- the op families of archlang/ops: elementwise math (every unary function, ``pow``, ``clamp``,
  ``minimum``/``maximum``, comparisons, ``where``, ``cast``, ``floor_div``/``mod``), constants
  (``arange``, ``full``/``zeros``/``ones``, ``param``), ``gather``, ``rmsnorm``, ``rope``, ``attend``
  (grouped-query, causal, bias/mask/score expressions of ``b, h, q_idx, kv_idx``, a bias reading
  a ``param`` as ``slope[h]``), ``attention_scores``, ``interpolate``, ``pad``, ``prepend``,
  ``place_tokens``; the newer options of older ops (``layernorm(bias = false)``, ``dim = 1`` on
  layernorm and channel_scale, ``count_include_pad = false``, ``slice(step = k)``); weight
  sharing (``y = shared3(z)`` after ``shared3: linear(...)`` or a depthwise ``conv2d``) and
  subscripts (``x[:, 0]``, ``x[:, a:b:s]``, ``x[..., ::2]``). Each program starts with one op of
  a family drawn uniformly (``FOCUS``), so that a few hundred programs reach every op.

Tensors stay tiny (every size 1..8 but a few products) so each example builds and runs in
tens of milliseconds. ``programs(drop=False)`` keeps every drop probability at 0 (the
interpreter's oracle needs that in train mode); ``drop=True`` also draws p > 0.

The strategy returns a :class:`Program`: the text, the arch to build, and whether it needs a
batch of at least 2 (BatchNorm on one value per channel cannot train).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar

from hypothesis import strategies as st
from test_properties import KEYWORDS  # the checker's own strategies' reserved words

B = "B"  # the batch: a free size
S = "S"  # a free sequence length (8 unless the test says otherwise)


@dataclass(frozen=True)
class Program:
    text: str
    arch: str
    batch2: bool = False  # BatchNorm somewhere: train mode needs more than one value per channel
    ops: frozenset[str] = frozenset()  # surface ops written (for coverage accounting)

    def __str__(self) -> str:  # shown by hypothesis on failure
        return self.text


@dataclass
class Ten:
    """A tensor variable with its full shape (``B`` first for batched ones)."""

    var: str
    shape: tuple[int | str, ...]
    dtype: str = "float"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def last(self) -> int | str:
        return self.shape[-1]

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == B

    def concrete(self, *idx: int) -> bool:
        return all(isinstance(self.shape[i], int) for i in idx)


@dataclass
class Scope:
    """What the code being written can see: compile-time values by name, tensors, labels."""

    ints: dict[str, int] = field(default_factory=dict)
    lists: dict[str, list[int]] = field(default_factory=dict)
    bools: dict[str, bool] = field(default_factory=dict)
    strs: dict[str, str] = field(default_factory=dict)
    floats: dict[str, float] = field(default_factory=dict)
    env: list[Ten] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)
    indent: int = 1
    in_block: bool = False
    loop: str | None = None  # the innermost loop variable
    protected: set[str] = field(default_factory=set)  # variables an op must not overwrite here

    def child_lines(self) -> Scope:
        s = Scope(ints=dict(self.ints), lists=dict(self.lists), bools=dict(self.bools), strs=dict(self.strs),
                  floats=dict(self.floats), env=list(self.env), labels=self.labels, lines=[],
                  indent=self.indent + 1, in_block=self.in_block, loop=self.loop, protected=set(self.protected))
        return s


def _lit(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    return str(v)


def _divisors(n: int, top: int = 8) -> list[int]:
    return [d for d in range(1, min(n, top) + 1) if n % d == 0]


def _pool_len(n: int, k: int, s: int) -> int:
    return (n + 2 * (k // 2) - k) // s + 1


def broadcast(a: tuple, b: tuple) -> tuple | None:
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            return None
    return tuple(reversed(out))


# the IR op kinds LoRA reaches, and the projections it can name in each
LORA_PARTS = {"attention": ("q", "k", "v", "qkv", "proj"), "window_attention": ("q", "k", "v", "qkv", "proj"),
              "window_attention_v2": ("q", "k", "v", "qkv", "proj"), "local_attention": ("q", "k", "v", "qkv", "proj"),
              "cross_attention": ("q", "k", "v", "kv", "proj")}


class Gen:
    """Writes one program, drawing every choice from hypothesis (so examples shrink)."""

    MAX_NUMEL = 512  # elements per example after the batch: keeps attention and convs cheap

    def __init__(self, draw: st.DrawFn, *, drop: bool, size: int) -> None:
        self.draw = draw
        self.drop = drop
        self.size = size  # statements in the arch body
        self.blocks: list[str] = []
        self.n_blocks = 0
        self.block_cache: dict[str, tuple[str, str, list[tuple]]] = {}
        self.counter = 0
        self.uses: set[str] = set()
        self.ops: set[str] = set()
        self.kinds: set[str] = set()  # IR kinds with parameters anywhere (for `kind:` selectors)
        self.named: list[tuple[str, str]] = []  # (selector naming a node exactly, IR kind) at arch scope
        self.outs: list[str] = []
        self.batch2 = False
        self.emb: tuple[str, int] | None = None  # (label, dim) of an arch-level embedding

    def snapshot(self) -> tuple:
        return (set(self.ops), set(self.kinds), list(self.named), self.emb, self.batch2)

    def restore(self, snap: tuple) -> None:
        ops, kinds, named, self.emb, self.batch2 = snap
        self.ops, self.kinds, self.named = set(ops), set(kinds), list(named)

    # ------------------------------------------------------------------ drawing helpers
    def d(self, strategy):
        return self.draw(strategy)

    # (st.integers favours small values, ~half the time at the low end: useless for odds and
    # bad for variety; sampled_from is close to uniform and still shrinks to its first item)
    def chance(self, p: float) -> bool:
        return self.draw(st.sampled_from(range(20))) >= 20 - round(p * 20)

    def pick(self, xs):
        xs = list(xs)
        return self.draw(st.sampled_from(xs))

    def int_(self, lo: int, hi: int) -> int:
        return self.draw(st.sampled_from(range(lo, hi + 1)))

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    def emit(self, sc: Scope, line: str) -> None:
        sc.lines.append("  " * sc.indent + line)

    # ------------------------------------------------------------------ compile-time values
    def num(self, sc: Scope, v: int, depth: int = 0) -> str:
        """An int expression worth ``v``: a literal, a name, x.shape[k], list items, arithmetic."""
        opts = ["lit", "lit"]
        names = [n for n, x in sc.ints.items() if x == v]
        related = [(n, x) for n, x in sc.ints.items()
                   if x > 0 and ((v > 0 and (v % x == 0 or x % v == 0)) or abs(v - x) <= 3)]
        shapes = [(t.var, i) for t in sc.env for i, s in enumerate(t.shape) if s == v and t.var not in KEYWORDS]
        items = [(n, i) for n, xs in sc.lists.items() for i, x in enumerate(xs) if x == v]
        if names:
            opts += ["name", "name"]
        if related:
            opts.append("related")
        if shapes:
            opts.append("shape")
        if items:
            opts.append("item")
        if depth < 2:
            opts += ["arith", "builtin", "cond"]
        lens = [n for n, xs in sc.lists.items() if len(xs) == v]
        if lens:
            opts.append("len")
        sums = [(n, a, b) for n, xs in sc.lists.items() for a in range(len(xs)) for b in range(a + 1, len(xs) + 1)
                if sum(xs[a:b]) == v]
        if sums:
            opts.append("sum")
        kind = self.pick(opts)
        if kind == "lit":
            return str(v)
        if kind == "name":
            return self.pick(names)
        if kind == "related":
            n, x = self.pick(related)
            if v > 0 and v % x == 0:
                return n if v == x else f"{n} * {v // x}"
            if v > 0 and x % v == 0:
                return f"{n} // {x // v}"
            return f"({n} + {v - x})" if v >= x else f"({n} - {x - v})"
        if kind == "shape":
            var, i = self.pick(shapes)
            return f"{var}.shape[{i}]"
        if kind == "item":
            n, i = self.pick(items)
            return f"{n}[{i}]"
        if kind == "len":
            return f"len({self.pick(lens)})"
        if kind == "sum":
            n, a, b = self.pick(sums)
            return f"sum({n}[{a} .. {b}])"
        if kind == "arith":
            k = self.int_(0, 3)
            form = self.pick(["add", "mul", "floordiv", "mod"])
            if form == "add" or v < 1:
                return f"({self.num(sc, v - k, depth + 1)} + {k})"
            if form == "mul" and v % 2 == 0:
                return f"{self.num(sc, v // 2, depth + 1)} * 2"
            if form == "floordiv":
                return f"({self.num(sc, v * 2 + (k % 2), depth + 1)} // 2)"
            return f"({v + 7 * k} % 7 + {v - (v + 7 * k) % 7})" if k else f"({v} % {v + 1})"
        if kind == "builtin":
            k = self.int_(0, 3)
            return self.pick([f"max({self.num(sc, v, depth + 1)}, {v - k})", f"min({v + k}, {self.num(sc, v, depth + 1)})",
                              f"int({v}.0)", f"round({v}.25)", f"sum([{v - k}, {k}])", f"abs({-abs(v)})" if v >= 0 else str(v)])
        cond, truth = self.cond(sc)
        other = self.int_(1, 8)
        a, b = (self.num(sc, v, depth + 1), str(other)) if truth else (str(other), self.num(sc, v, depth + 1))
        return f"(if {cond} then {a} else {b})"

    def cond(self, sc: Scope) -> tuple[str, bool]:
        """A compile-time condition and its value."""
        opts: list[tuple[str, bool]] = [("true", True), ("false", False), ("1 + 1 == 2", True)]
        for n, v in sc.bools.items():
            opts += [(n, v), (f"not {n}", not v), (f"{n} or 1 > 2", v)]
        for n, v in sc.ints.items():
            k = self.int_(0, 8)
            opts += [(f"{n} > {k}", v > k), (f"{n} % 2 == 0", v % 2 == 0), (f"{n} >= {k} and {n} < {k + 4}", k <= v < k + 4)]
        for n, v in sc.strs.items():
            opts += [(f'{n} == "gelu"', v == "gelu"), (f'{n} != "relu"', v != "relu")]
        for n, xs in sc.lists.items():
            opts += [(f"len({n}) > 1", len(xs) > 1), (f"sum({n}) <= 8", sum(xs) <= 8)]
        for t in sc.env:
            if t.rank > 1 and isinstance(t.shape[1], int):
                opts.append((f"{t.var}.shape[1] > 2", t.shape[1] > 2))
        return self.pick(opts)

    def fnum(self, sc: Scope, v: float) -> str:
        names = [n for n, x in sc.floats.items() if x == v]
        if names and self.chance(0.5):
            return self.pick(names)
        return self.pick([repr(float(v)), f"{v * 2} / 2", f"float({v})"] if v else ["0.0", "0.0 * 3", "float(0)"])

    def p(self, sc: Scope) -> str:
        """A drop probability."""
        if self.drop and self.chance(0.4):
            return self.pick(["0.1", "0.5"])
        return self.fnum(sc, 0.0)

    # ------------------------------------------------------------------ labels
    def label(self, sc: Scope, base: str, kind: str | None = None, p: float = 0.6) -> str:
        """``"lab: "`` or ``""``; records names of labelled nodes with weights for selectors."""
        if not self.chance(p):
            return ""
        for _ in range(10):
            stem = f"{self.pick([base, base, 'fc', 'proj', 'mix', 'head', 'pre'])}{self.int_(0, 9)}"
            if sc.loop is not None:
                lab = f"{self.pick(['blocks', 'layers', 'stage'])}[{sc.loop}].{stem}"
            else:
                form = self.pick(["plain", "plain", "dotted", "indexed"])
                if form == "dotted":
                    lab = f"{self.pick(['enc', 'stem', 'body'])}.{stem}"
                elif form == "indexed":
                    lab = f"{self.pick(['blocks', 'stage'])}[{self.int_(0, 2)}].{stem}"
                else:
                    lab = stem
            key = re.sub(r"\[\w+\]", "[]", lab)
            if key in sc.labels or any(k.startswith(key + ".") or key.startswith(k + ".") for k in sc.labels):
                continue
            sc.labels.add(key)
            if kind is not None and not sc.in_block and sc.loop is None:
                self.named.append((re.sub(r"\[(\d+)\]", r".\1", lab), kind))
            elif kind is not None and not sc.in_block:
                self.named.append((re.sub(r"\[\w+\]", ".*", lab), kind))
            return lab + ": "
        return ""

    # ------------------------------------------------------------------ assignment
    def assign(self, sc: Scope, expr: str, shape: tuple, var: str | None = None, dtype: str = "float") -> Ten:
        var = var or self.pick([v for v in ("x", "x", "h") if v not in sc.protected] + [self.fresh("t")])
        self.emit(sc, f"{var} = {expr}")
        t = Ten(var, tuple(shape), dtype)
        sc.env = [e for e in sc.env if e.var != var] + [t]
        return t

    @staticmethod
    def numel(shape: tuple) -> int:
        """Elements per example (after the batch; a free size counts 8)."""
        n = 1
        for s in shape[1:] if shape and shape[0] == B else shape:
            n *= s if isinstance(s, int) else 8
        return n

    # ------------------------------------------------------------------ ops
    def step(self, sc: Scope, x: Ten, structure: bool = True) -> Ten:
        """Apply one op (or a construct) to ``x``; return the tensor that carries on."""
        if x.dtype == "int":
            return self.op_embedding(sc, x)
        special = [m for name, m in self.OPS.items() if name in SPECIAL and m[0](self, x, sc)]
        if special and self.chance(0.3):  # ops of one layout, else they drown among the generic ones
            _, fn = self.pick(special)
            out = fn(self, sc, x)
            return out if out is not None else x
        structs = [c for c in self.STRUCT if c[0](self, x, sc)] if structure else []
        if structs and self.chance(0.2):  # blocks, loops, branches, bindings
            out = self.pick(structs)[1](self, sc, x)
            return out if out is not None else x
        cands = [m for name, m in self.OPS.items() if m[0](self, x, sc)]
        if structure:
            cands += [c for c in self.STRUCT if c[0](self, x, sc)]
        _, fn = self.pick(cands)
        out = fn(self, sc, x)
        return out if out is not None else x

    # each op: (applies(self, x, scope), write(self, scope, x) -> Ten | None)

    def op_linear(self, sc, x):
        self.ops.add("linear")
        self.kinds.add("linear")
        out = self.int_(1, 8)
        bias = self.pick(["", "", ", bias = false", ", bias = true"])
        lab = self.label(sc, "fc", "linear")
        return self.assign(sc, f"{lab}linear({x.var}, {self.num(sc, out)}{bias})", (*x.shape[:-1], out))

    def op_norm(self, sc, x):
        kind = self.pick(["layernorm", "batchnorm", "groupnorm"] if x.rank >= 2 and isinstance(x.shape[1], int)
                         else ["layernorm"])
        if kind == "layernorm" and not isinstance(x.last, int):
            kind = "batchnorm"
        self.ops.add(kind)
        if kind != "layernorm":
            self.kinds.add(kind)
        if kind == "layernorm":
            extra = self.pick(["", "", ", eps = 1e-6", ", affine = false", ", eps = 0.001, affine = true",
                               ", bias = false"])
            if x.rank >= 3 and isinstance(x.shape[1], int) and self.chance(0.25):
                extra += ", dim = 1"  # over the channels of [B, C, ...] (ConvNeXt's channels-first norm)
            if "false" not in extra:
                self.kinds.add("layernorm")
            return self.assign(sc, f"{self.label(sc, 'norm', 'layernorm' if 'false' not in extra else None)}"
                                   f"layernorm({x.var}{extra})", x.shape)
        if kind == "batchnorm":
            self.batch2 = True
            extra = self.pick(["", ", eps = 1e-3", ", momentum = 0.3", ", eps = 1e-5, momentum = 0.0"])
            return self.assign(sc, f"{self.label(sc, 'bn', 'batchnorm')}batchnorm({x.var}{extra})", x.shape)
        g = self.pick(_divisors(x.shape[1]))
        extra = self.pick(["", ", eps = 1e-6"])
        return self.assign(sc, f"{self.label(sc, 'gn', 'groupnorm')}groupnorm({x.var}, groups = {self.num(sc, g)}{extra})",
                           x.shape)

    def op_act(self, sc, x):
        fn = self.pick(["gelu", "relu", "silu", "tanh", "sigmoid", "gelu_tanh", "act"])
        lab = self.label(sc, "act", p=0.15)
        if fn == "gelu_tanh":
            self.ops.add("gelu")
            return self.assign(sc, f'{lab}gelu({x.var}, approximate = "tanh")', x.shape)
        if fn == "act":
            self.ops.add("act")
            names = [n for n, v in sc.strs.items() if v in ("gelu", "relu", "silu", "tanh", "sigmoid", "gelu_tanh")]
            arg = self.pick(names) if names and self.chance(0.6) else \
                _lit(self.pick(["gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid"]))
            return self.assign(sc, f"{lab}act({x.var}, fn = {arg})", x.shape)
        self.ops.add(fn)
        extra = self.pick(["", ', approximate = "none"']) if fn == "gelu" else ""
        return self.assign(sc, f"{lab}{fn}({x.var}{extra})", x.shape)

    def op_glu(self, sc, x):
        dims = [i for i in range(1, x.rank) if isinstance(x.shape[i], int) and x.shape[i] % 2 == 0]
        i = self.pick(dims)
        self.ops.add("glu")
        dim = self.pick([i, i - x.rank]) if i != x.rank - 1 else self.pick([-1, i, ""])
        arg = "" if dim == "" else f", dim = {dim}"
        shape = list(x.shape)
        shape[i] //= 2
        return self.assign(sc, f"glu({x.var}{arg})", tuple(shape))

    def op_softmax(self, sc, x):
        self.ops.add("softmax")
        i = self.int_(1, x.rank - 1)
        arg = self.pick([f", dim = {i}", f", dim = {i - x.rank}"] + ([""] if i == x.rank - 1 else []))
        return self.assign(sc, f"softmax({x.var}{arg})", x.shape)

    def op_drop(self, sc, x):
        f = self.pick(["dropout", "drop_path", "identity"])
        self.ops.add(f)
        if f == "identity":
            return self.assign(sc, f"identity({x.var})", x.shape)
        return self.assign(sc, f"{f}({x.var}, p = {self.p(sc)})", x.shape)

    def op_scale(self, sc, x):
        kind = self.pick(["channel_scale", "affine", "affine", "scalar"] if x.rank == 3 else ["channel_scale", "scalar"])
        if kind == "channel_scale":
            self.ops.add("channel_scale")
            self.kinds.add("channel_scale")
            init = self.pick(["", ", init = 0.5", ", init = 1e-2", ", init = 2.0"])
            if x.rank >= 3 and isinstance(x.shape[1], int) and self.chance(0.3):
                init += ", dim = 1"
            return self.assign(sc, f"{self.label(sc, 'ls', 'channel_scale')}channel_scale({x.var}{init})", x.shape)
        if kind == "affine":
            self.ops.add("affine")
            self.kinds.add("affine")
            return self.assign(sc, f"{self.label(sc, 'aff', 'affine')}affine({x.var})", x.shape)
        e = self.pick([f"{x.var} * 0.5", f"{x.var} + 1", f"2 * {x.var}", f"1 - {x.var}", f"{x.var} / 4",
                       f"-{x.var}", f"{x.var} - 0.25", f"3 + {x.var} * 2"])
        return self.assign(sc, e, x.shape)

    def op_split(self, sc, x):
        dims = [i for i in range(1, x.rank) if isinstance(x.shape[i], int) and x.shape[i] >= 2]
        i = self.pick(dims)
        n = x.shape[i]
        k = self.int_(2, min(3, n))
        cuts = sorted(self.d(st.lists(st.integers(1, n - 1), min_size=k - 1, max_size=k - 1, unique=True)))
        sizes = [b - a for a, b in pairwise([0, *cuts, n])]
        dim = self.pick([i, i - x.rank])
        names = [self.fresh("s") for _ in sizes]
        self.ops.add("split")
        self.emit(sc, f"{', '.join(names)} = split({x.var}, {_lit(sizes)}, dim = {dim})")
        parts = []
        for nm, s in zip(names, sizes, strict=True):
            shape = list(x.shape)
            shape[i] = s
            parts.append(Ten(nm, tuple(shape)))
        sc.env += parts
        order = self.d(st.permutations(names))
        self.ops.add("concat")
        return self.assign(sc, f"concat([{', '.join(order)}], dim = {dim})", x.shape)

    def op_concat(self, sc, x):
        """concat with a same-shaped tensor (or itself) along some dim."""
        i = self.int_(1, x.rank - 1)
        if not isinstance(x.shape[i], int):
            return None
        others = [t for t in sc.env if t.rank == x.rank and t.dtype == "float" and
                  all(a == b for j, (a, b) in enumerate(zip(t.shape, x.shape, strict=True)) if j != i)
                  and isinstance(t.shape[i], int) and t.shape[i] + x.shape[i] <= 8]
        if not others:
            return None
        ys = [x] + [self.pick(others) for _ in range(self.int_(1, 2))]
        total = sum(t.shape[i] for t in ys)
        if total > 12:
            ys = ys[:2]
            total = sum(t.shape[i] for t in ys)
        shape = list(x.shape)
        shape[i] = total
        self.ops.add("concat")
        dim = self.pick([i, i - x.rank])
        arg = "" if dim == -1 and self.chance(0.5) else f", dim = {dim}"
        return self.assign(sc, f"concat([{', '.join(t.var for t in ys)}]{arg})", tuple(shape))

    def op_mean(self, sc, x):
        dims = sorted(self.d(st.sets(st.integers(1, x.rank - 1), min_size=1, max_size=x.rank - 1)))
        keep = self.chance(0.4)
        if not keep and len(dims) == x.rank - 1:
            keep = True
        self.ops.add("mean")
        shown = [self.pick([i, i - x.rank]) for i in dims]
        arg = ", keepdim = true" if keep else self.pick(["", ", keepdim = false"])
        shape = tuple(1 if (i in dims and keep) else s for i, s in enumerate(x.shape) if keep or i not in dims)
        return self.assign(sc, f"mean({x.var}, dim = {_lit(shown)}{arg})", shape)

    def op_take(self, sc, x):
        dims = [i for i in range(1, x.rank) if isinstance(x.shape[i], int)]
        i = self.pick(dims)
        n = x.shape[i]
        idx = self.int_(-n, n - 1)
        self.ops.add("take")
        dim = self.pick([i, i - x.rank])
        arg = "" if dim == 1 and self.chance(0.5) else f", dim = {dim}"
        return self.assign(sc, f"take({x.var}, {idx}{arg})", x.shape[:i] + x.shape[i + 1:])

    def op_slice(self, sc, x):
        dims = [i for i in range(1, x.rank) if isinstance(x.shape[i], int)]
        i = self.pick(dims)
        n = x.shape[i]
        a = self.int_(0, n - 1)
        b = self.int_(a + 1, n)
        self.ops.add("slice")
        dim = self.pick([i, i - x.rank])
        arg = "" if dim == 1 and self.chance(0.5) else f", dim = {dim}"
        step = self.pick([1, 1, 2, 3])
        if step > 1:
            arg += f", step = {step}"
        shape = list(x.shape)
        shape[i] = -(-(b - a) // step)
        kw = self.pick([f"{self.num(sc, a)}, {self.num(sc, b)}", f"start = {a}, stop = {b}"])
        return self.assign(sc, f"slice({x.var}, {kw}{arg})", tuple(shape))

    def op_roll(self, sc, x):
        dims = sorted(self.d(st.sets(st.integers(1, x.rank - 1), min_size=1, max_size=min(2, x.rank - 1))))
        shifts = [self.int_(-3, 3) for _ in dims]
        shown = [self.pick([i, i - x.rank]) for i in dims]
        self.ops.add("roll")
        return self.assign(sc, f"roll({x.var}, shifts = {_lit(shifts)}, dims = {_lit(shown)})", x.shape)

    def partner(self, sc: Scope, x: Ten, same: bool = False) -> tuple[str, tuple] | None:
        """A tensor expression that broadcasts with ``x`` (an env tensor or a reduction of x)."""
        opts: list[tuple[str, tuple]] = []
        for t in sc.env:
            if t.dtype != "float" or t.rank > x.rank:
                continue
            b = broadcast(x.shape, t.shape)
            if b is not None and b == x.shape and (not same or t.shape == x.shape):
                opts.append((t.var, t.shape))
        if not same:
            for i in range(1, x.rank):
                shape = tuple(1 if j == i else s for j, s in enumerate(x.shape))
                opts.append((f"mean({x.var}, dim = [{i}], keepdim = true)", shape))
        return self.pick(opts) if opts else None

    def op_binary(self, sc, x):
        """x op partner, or a parenthesised mix of three operands."""
        self.ops.add("binary")
        a = (x.var, x.shape)
        b = self.partner(sc, x) or a
        c = self.partner(sc, x) or a
        form = self.pick(["ab", "ab", "(ab)c", "a(bc)", "(ab)(c)", "div", "paren_scale"])
        o1, o2 = self.pick("+-*"), self.pick("+-*")
        if form == "ab":
            e = f"{a[0]} {self.pick('+-*')} {b[0]}"
        elif form == "(ab)c":
            e = f"({a[0]} {o1} {b[0]}) {o2} {c[0]}"
        elif form == "a(bc)":
            e = f"{a[0]} {o1} ({b[0]} {o2} {c[0]})"
        elif form == "(ab)(c)":
            e = f"({a[0]} {o1} {b[0]}) * ({c[0]} {o2} 1)"
        elif form == "div":
            e = f"{a[0]} / (sigmoid({b[0]}) + 0.5)"
            self.ops.add("sigmoid")
        else:
            e = f"({a[0]} {o1} {b[0]}) * 0.5 + {c[0]}"
        return self.assign(sc, e, x.shape)

    def op_matmul(self, sc, x):
        """x [B, n, d] @ y^T with y [B, m, d] -> [B, n, m] (or matmul(...))."""
        others = [t for t in sc.env if t.rank == 3 and t.batched and t.last == x.last and t.dtype == "float"
                  and isinstance(t.shape[1], int)]
        y = self.pick(others) if others else x
        if not isinstance(y.shape[1], int):
            return None
        self.ops.add("rearrange")
        yt = f'rearrange({y.var}, "b m d -> b d m")'
        if self.chance(0.5):
            self.ops.add("binary")
            e = f"{x.var} @ {yt}"
        else:
            self.ops.add("matmul")
            e = f"matmul({x.var}, {yt})"
        if self.chance(0.3):
            e = f"({e}) / {max(1, x.last if isinstance(x.last, int) else 1)}"
        return self.assign(sc, e, (B, x.shape[1], y.shape[1]))

    def heads(self, sc: Scope, width: int) -> tuple[str, int]:
        """(the heads argument text, head_dim) for an attention of ``width``."""
        if self.chance(0.2):
            h, hd = self.int_(1, 3), self.int_(1, 4)
            return f"heads = {h}, head_dim = {hd}", hd
        h = self.pick(_divisors(width, 4))
        return f"heads = {self.num(sc, h)}", width // h

    def attn_extra(self, sc: Scope) -> str:
        out = []
        if self.chance(0.2):
            out.append("qkv_bias = false")
        if self.chance(0.2):
            out.append("proj_bias = false")
        if self.chance(0.2):
            out.append(f"attn_drop = {self.p(sc)}")
        if self.chance(0.2):
            out.append(f"proj_drop = {self.p(sc)}")
        return "".join(", " + o for o in out)

    def op_attention(self, sc, x, kind):
        h, _ = self.heads(sc, x.last)
        extra = self.attn_extra(sc)
        if kind == "cross_attention":
            ctxs = [t for t in sc.env if t.rank == 3 and t.batched and isinstance(t.last, int) and t.dtype == "float"]
            m = self.pick(ctxs)
            self.ops.add(kind)
            self.kinds.add(kind)
            return self.assign(sc, f"{self.label(sc, 'xattn', kind)}cross_attention({x.var}, {m.var}, {h}{extra})",
                               x.shape)
        if kind == "attention" and self.chance(0.4):
            extra += ", causal = true"
        self.ops.add(kind)
        self.kinds.add(kind)
        return self.assign(sc, f"{self.label(sc, 'attn', kind)}{kind}({x.var}, {h}{extra})", x.shape)

    def op_tokens(self, sc, x, kind):
        """Positional embeddings, class tokens, learned tokens, conv1d, pooled attention."""
        n, dd = x.shape[1], x.last
        self.ops.add(kind)
        if kind == "learned_pos":
            self.kinds.add("pos_embed")
            ml = self.pick(["", f", max_len = {self.num(sc, n)}", f", max_len = {n + self.int_(0, 3)}"]) \
                if isinstance(n, int) else f", max_len = {self.int_(8, 12)}"
            return self.assign(sc, f"{self.label(sc, 'pos', 'pos_embed')}learned_pos({x.var}{ml})", x.shape)
        if kind == "sinusoidal_pos":
            lo = n if isinstance(n, int) else 8
            ml = self.pick(["", f", max_len = {lo + self.int_(0, 20)}"])
            return self.assign(sc, f"sinusoidal_pos({x.var}{ml})", x.shape)
        if kind == "prepend_token":
            self.kinds.add("prepend_token")
            n2 = n + 1 if isinstance(n, int) else None
            if n2 is None:
                return None
            return self.assign(sc, f"{self.label(sc, 'cls', 'prepend_token')}prepend_token({x.var})", (B, n2, dd))
        if kind == "learned_tokens":
            self.kinds.add("learned_tokens")
            k = self.int_(1, 3)
            lab = self.label(sc, "q", "learned_tokens")
            if isinstance(n, int) and n + k <= 10 and self.chance(0.6):
                self.ops.add("concat")
                return self.assign(sc, f"concat([{x.var}, {lab}learned_tokens({x.var}, n = {k}, dim = "
                                       f"{self.num(sc, dd)})], dim = 1)", (B, n + k, dd))
            w = self.int_(1, 8)
            t = self.assign(sc, f"{lab}learned_tokens({x.var}, n = {k}, dim = {w})", (B, k, w), var=self.fresh("q"))
            return t if self.chance(0.3) else x
        if kind == "conv1d":
            self.kinds.add("conv1d")
            c, t = dd, n
            x_ = x
            if self.chance(0.5):  # as [B, C, T]: channels first
                c, t = n, dd
            else:
                x_ = self.assign(sc, f'rearrange({x.var}, "b t c -> b c t")', (B, dd, n))
                self.ops.add("rearrange")
            k = self.int_(1, 3)
            pad = self.int_(0, k // 2 + 1)
            if t + 2 * pad < k:
                k = 1
            s = self.pick([1, 1, 2])
            g = self.pick(_divisors(c, 4))
            out = g * self.int_(1, max(1, 8 // g))
            extra = f", stride = {s}" if s > 1 or self.chance(0.3) else ""
            extra += f", padding = {pad}" if pad or self.chance(0.3) else ""
            extra += f", groups = {g}" if g > 1 else ""
            extra += self.pick(["", "", ", bias = false"])
            tout = (t + 2 * pad - k) // s + 1
            return self.assign(sc, f"{self.label(sc, 'conv', 'conv1d')}conv1d({x_.var}, {self.num(sc, out)}, "
                                   f"kernel = {k}{extra})", (B, out, tout))
        # pooled attention
        self.kinds.add("pooled_attention")
        opts = [(c, h, (n - c) // h) for c in (0, 1) for h in range(1, 9)
                if n - c >= 1 and (n - c) % h == 0 and (n - c) // h <= 8]
        cls, gh, gw = self.pick(opts)
        dim_out = dd if self.chance(0.7) else self.int_(1, 8)
        heads = self.pick(_divisors(dim_out, 4))
        args = [f"heads = {heads}", f"grid = [{gh}, {gw}]"]
        if cls:
            args.append("cls = 1")
        if dim_out != dd or self.chance(0.2):
            args.append(f"dim_out = {dim_out}")
        kq, sq, kkv, skv = (self.pick([1, 2, 3]), self.pick([1, 2]), self.pick([1, 2, 3]), self.pick([1, 2]))
        for name, v, dflt in (("kernel_q", kq, 3), ("stride_q", sq, 1), ("kernel_kv", kkv, 3), ("stride_kv", skv, 1)):
            if v != dflt or self.chance(0.2):
                args.append(f"{name} = {v}")
        for flag in ("qkv_bias", "residual_pooling", "rel_pos"):
            if self.chance(0.2):
                args.append(f"{flag} = false")
        qh, qw = _pool_len(gh, kq, sq), _pool_len(gw, kq, sq)
        return self.assign(sc, f"{self.label(sc, 'pool', 'pooled_attention')}pooled_attention({x.var}, "
                               f"{', '.join(args)})", (B, cls + qh * qw, dim_out))

    def op_grid(self, sc, x, kind):
        """[B, H, W, C] ops: window / local attention, shifts."""
        c = x.shape[3]
        self.ops.add(kind)
        if kind == "channel_shift":
            size = self.pick(["", f", size = {self.int_(1, 4)}"])
            return self.assign(sc, f"channel_shift({x.var}, dim = {self.pick([1, 2])}{size})", x.shape)
        if kind == "spatial_shift":
            return self.assign(sc, f"spatial_shift({x.var})", x.shape)
        self.kinds.add(kind)
        hs, _ = self.heads(sc, c)
        extra = self.attn_extra(sc)
        lab = self.label(sc, "attn", kind)
        if kind == "local_attention":
            k = self.pick([1, 3, 5])
            return self.assign(sc, f"{lab}local_attention({x.var}, {hs}, kernel = {k}{extra})", x.shape)
        win = self.int_(1, 5)
        shift = self.int_(0, win - 1)
        if sc.loop is not None and win > 1 and self.chance(0.5):
            sh = f"if {sc.loop} % 2 == 0 then 0 else {self.num(sc, win // 2)}"
        else:
            sh = self.num(sc, shift) if shift or self.chance(0.3) else ""
        return self.assign(sc, f"{lab}{kind}({x.var}, {hs}, window = {self.num(sc, win)}"
                               f"{', shift = ' + sh if sh else ''}{extra})", x.shape)

    def op_image(self, sc, x, kind):
        """[B, C, H, W] ops: conv2d and pooling."""
        _, c, h, w = x.shape
        self.ops.add(kind)
        if kind == "conv2d":
            self.kinds.add("conv2d")
            sq = self.chance(0.7)
            kh = self.int_(1, min(3, h + 2))
            kw = kh if sq else self.int_(1, min(3, w + 2))
            sh = self.pick([1, 1, 2])
            sw = sh if sq else self.pick([1, 2])
            same = self.chance(0.2)
            ph = self.int_(0, kh // 2 + 1) if not same else 0
            pw = ph if sq else (self.int_(0, kw // 2 + 1) if not same else 0)
            tb = max((-(-h // sh) - 1) * sh + kh - h, 0) if same else 0
            lr = max((-(-w // sw) - 1) * sw + kw - w, 0) if same else 0
            oh = (h + tb + 2 * ph - kh) // sh + 1
            ow = (w + lr + 2 * pw - kw) // sw + 1
            if h + tb + 2 * ph < kh or w + lr + 2 * pw < kw:
                return None
            g = self.pick(_divisors(c, 4))
            out = g * self.int_(1, max(1, 8 // g))
            args = [self.num(sc, out), f"kernel = {kh if sq else _lit([kh, kw])}"]
            if sh != 1 or sw != 1 or self.chance(0.2):
                args.append(f"stride = {sh if sq else _lit([sh, sw])}")
            if ph or pw or self.chance(0.2):
                args.append(f"padding = {ph if sq else _lit([ph, pw])}")
            if g > 1:
                args.append(f"groups = {g}")
            if same:
                args.append("same = true")
            if self.chance(0.15):
                args.append("bias = false")
            if self.chance(0.15):
                args.append("standardize = true" + self.pick(["", ", std_eps = 1e-5"]))
            return self.assign(sc, f"{self.label(sc, 'conv', 'conv2d')}conv2d({x.var}, {', '.join(args)})",
                               (B, out, oh, ow))
        k = self.int_(1, min(3, h, w) if min(h, w) >= 1 else 1)
        s = self.pick([0, 1, 2]) if self.chance(0.6) else None
        same = self.chance(0.2)
        pad = 0 if same else self.int_(0, k // 2)
        stride = s if s else k
        tb = max((-(-h // stride) - 1) * stride + k - h, 0) if same else 0
        lr = max((-(-w // stride) - 1) * stride + k - w, 0) if same else 0
        oh = (h + tb + 2 * pad - k) // stride + 1
        ow = (w + lr + 2 * pad - k) // stride + 1
        args = [f"kernel = {k}"]
        if s is not None:
            args.append(f"stride = {s}")
        if pad:
            args.append(f"padding = {pad}")
        if same:
            args.append("same = true")
        if kind == "avg_pool2d" and (pad or same) and self.chance(0.5):
            args.append("count_include_pad = false")
        return self.assign(sc, f"{kind}({x.var}, {', '.join(args)})", (B, c, oh, ow))

    def op_rearrange(self, sc, x):
        self.ops.add("rearrange")
        r = x.rank
        if r == 2:
            d = x.last
            n = self.pick(_divisors(d))
            kw = self.pick([f", n = {self.num(sc, n)}", f", d = {d // n}"])
            return self.assign(sc, f'rearrange({x.var}, "b (n d) -> b n d"{kw})', (B, n, d // n))
        if r == 3:
            n, d = x.shape[1], x.shape[2]
            opts = ["t"]
            if isinstance(n, int) and isinstance(d, int):
                opts += ["flat", "grid", "grid"]
            kind = self.pick(opts)
            if kind == "t":
                return self.assign(sc, f'rearrange({x.var}, "b n d -> b d n")', (B, d, n))
            if kind == "flat":
                return self.assign(sc, f'rearrange({x.var}, "b n d -> b (n d)")', (B, n * d))
            h = self.pick(_divisors(n))
            pat = self.pick([("b (h w) c -> b h w c", (B, h, n // h, d)), ("b (h w) c -> b c h w", (B, d, h, n // h)),
                             ("b (w h) c -> b h w c", (B, n // h, h, d))])
            axis = "h" if pat[0].startswith("b (h") else "w"
            return self.assign(sc, f'rearrange({x.var}, "{pat[0]}", {axis} = {self.num(sc, h)})', pat[1])
        _, a, b_, c = x.shape
        opts = [("b h w c -> b c h w", (B, c, a, b_)), ("b c h w -> b h w c", (B, b_, c, a)),
                ("b h w c -> b (h w) c", (B, a * b_, c)), ("b h w c -> b w h c", (B, b_, a, c)),
                ("b c h w -> b (h w) c", (B, b_ * c, a))]
        if a % 2 == 0 and b_ % 2 == 0:
            opts.append(("b (h p) (w q) c -> b h w (p q c)", (B, a // 2, b_ // 2, 4 * c)))
        pat, shape = self.pick(opts)
        kw = ", p = 2, q = 2" if "(h p)" in pat else ""
        return self.assign(sc, f'rearrange({x.var}, "{pat}"{kw})', shape)

    def op_std(self, sc, x):
        """A block of the standard library."""
        d = x.last
        if x.rank == 4:
            if x.shape[1] % 2 or x.shape[2] % 2:
                return None
            self.uses.add("std.vision")
            self.ops.update({"linear", "layernorm"})
            self.kinds.update({"linear", "layernorm"})
            out = self.pick(["", f", out = {self.int_(1, 8)}"])
            w = int(out.split("= ")[1]) if out else 2 * d
            return self.assign(sc, f"{self.label(sc, 'merge')}patch_merge({x.var}{out})",
                               (B, x.shape[1] // 2, x.shape[2] // 2, w))
        self.uses.add("std.nn")
        self.kinds.update({"linear", "layernorm"})
        if x.rank == 3 and self.chance(0.5):
            self.kinds.add("attention")
            heads = self.pick(_divisors(d, 4))
            return self.assign(sc, f"{self.label(sc, 'blk')}transformer_block({x.var}, heads = {heads}, mlp_ratio = "
                                   f"{self.pick(['1.0', '2.0'])}{self.pick(['', ', causal = true'])})", x.shape)
        out = self.pick(["", f", out = {self.int_(1, 8)}"])
        w = int(out.split("= ")[1]) if out else d
        return self.assign(sc, f"{self.label(sc, 'mlp')}mlp({x.var}, hidden = {self.int_(1, 8)}{out}"
                               f"{self.pick(['', ', act = ' + _lit('relu')])})", (*x.shape[:-1], w))

    def op_embedding(self, sc, x):
        self.ops.add("embedding")
        self.kinds.add("embedding")
        d = self.int_(1, 8)
        lab = f"emb{self.int_(0, 9)}" if not sc.in_block and sc.loop is None else None
        num = self.int_(2, 12)
        if lab:
            sc.labels.add(lab)
            self.named.append((lab, "embedding"))
            self.emb = (lab, d)
        t = self.assign(sc, f"{lab + ': ' if lab else ''}embedding({x.var}, {num}, {self.num(sc, d)})",
                        (*x.shape, d), var=self.fresh("e"))
        return t

    # ------------------------------------------------------------------ the op families of archlang/ops
    def op_math(self, sc, x, form: str | None = None):
        """Elementwise math (archlang/ops/math.py): unary functions, pow, clamp, minimum/maximum,
        comparisons with where and cast."""
        v = x.var
        form = form or self.pick(["unary", "unary", "pow", "clamp", "minmax", "where", "where", "cast", "all"])
        if form == "all":  # every unary function, comparison and minimum/maximum in one expression
            self.ops.update({"sqrt", "rsqrt", "exp", "log", "absolute", "neg", "sin", "cos", "where", "cast",
                             "lt", "le", "gt", "ge", "eq", "ne", "minimum", "maximum", "clamp", "pow", "sigmoid",
                             "identity"})
            self.ops.add("tanh")  # exp of a bounded argument: a loop of these must not overflow
            self.assign(sc, f"sqrt(exp(tanh({v}))) + rsqrt(exp(tanh({v})) + 1.0) + log(exp(tanh({v})) + 2.0)"
                            f" + absolute(neg({v}))"
                            f" + sin({v}) * cos({v})", x.shape, var=(t := self.fresh("m")))
            return self.assign(sc, f'where(lt({t}, 1.5), {t} * 2.0, {v}) + cast(le({v}, 0.5), "float")'
                                   f' + cast(gt({v}, -0.25), "float") * {t} + cast(ge({v}, 0.25), "float")'
                                   f' - cast(eq({v}, 0.0), "float") + cast(ne({v}, 0.0), "float")'
                                   f" + minimum({t}, {v}) + maximum({v}, {t} * 0.5)"
                                   f" + clamp({t}, min = -0.5, max = 0.5) + pow(sigmoid({v}), 1.5) + identity({v})", x.shape)
        if form == "unary":  # one or two terms, arguments kept in each function's domain
            terms = []
            for _ in range(self.pick([1, 2])):
                fn = self.pick(["sqrt", "rsqrt", "exp", "log", "absolute", "neg", "sin", "cos"])
                self.ops.add(fn)
                arg = {"sqrt": f"exp(tanh({v}))", "rsqrt": f"exp(tanh({v})) + 1.0", "log": f"exp(tanh({v})) + 2.0",
                       "exp": f"tanh({v})"}.get(fn, v)
                self.ops.update({"exp", "tanh"} if fn in ("sqrt", "rsqrt", "log", "exp") else set())
                terms.append(f"{fn}({arg})")
            return self.assign(sc, " + ".join(terms), x.shape)
        if form == "pow":
            self.ops.update({"pow", "sigmoid"})
            e = self.pick([f"pow(sigmoid({v}), 1.5)", f"pow(tanh({v}), 2.0)", f"pow(sigmoid({v}) + 0.5, -0.5)"])
            self.ops.add("tanh")
            return self.assign(sc, e, x.shape)
        if form == "clamp":
            self.ops.add("clamp")
            arg = self.pick([", min = -0.5, max = 0.5", ", max = 0.25", ", min = 0.0"])
            return self.assign(sc, f"clamp({v}{arg})", x.shape)
        if form == "minmax":
            fn = self.pick(["minimum", "maximum"])
            self.ops.add(fn)
            b = self.partner(sc, x) or (f"{v} * 2.0", x.shape)
            a, b = (v, b[0]) if self.chance(0.5) else (b[0], v)
            return self.assign(sc, f"{fn}({a}, {b})", x.shape)
        if form == "where":
            fn = self.pick(["lt", "le", "gt", "ge", "eq", "ne"])
            self.ops.update({fn, "where"})
            thr = self.pick(["0.0", "0.5", "-0.25"])
            b = self.partner(sc, x, same=True)
            other = b[0] if b else f"{v} * 0.5"
            e = f"where({fn}({v}, {thr}), {v} * 2.0, {other})"
            if self.chance(0.5):
                fn2 = self.pick(["lt", "le", "gt", "ge", "eq", "ne"])
                self.ops.update({fn2, "cast"})
                e += f' + cast({fn2}({v}, {self.pick(["0.0", "0.25"])}), "float")'
            return self.assign(sc, e, x.shape)
        self.ops.update({"cast", "gt"})
        e = self.pick([f'{v} + cast(gt({v}, 0.0), "float")', f'{v} * 0.5 + cast(cast({v}, "int"), "float")',
                       f'cast(cast({v}, "bool"), "float") * {v}'])
        return self.assign(sc, e, x.shape)

    def op_const(self, sc, x, form: str | None = None):
        """Constants (archlang/ops/tensor.py, math.py): arange, full, zeros, ones, floor_div, mod,
        param, broadcast against ``x``'s last dim (or its last two)."""
        v, n = x.var, x.last
        form = form or self.pick(["arange", "intdiv", "full", "param", "param", "all"])
        if form == "all":
            self.ops.update({"arange", "floor_div", "mod", "cast", "zeros", "ones", "full"})
            k = self.int_(1, 4)
            return self.assign(sc, f'({v} + zeros([{n}])) * ones([{n}]) + full([{n}], 0.5)'
                                   f' + cast(floor_div(arange({n}), {k}) - mod(arange({n}, start = 1), {k}), "float")',
                               x.shape)
        if form == "arange":
            self.ops.add("arange")
            start, step = self.int_(-2, 2), self.pick([1, 1, 2, -1])
            extra = (f", start = {start}" if start else "") + (f", step = {step}" if step != 1 else "")
            if self.chance(0.5):
                return self.assign(sc, f'{v} + arange({self.num(sc, n)}{extra}, dtype = "float") * 0.25', x.shape)
            self.ops.add("cast")
            return self.assign(sc, f'{v} * cast(arange({n}{extra}), "float")', x.shape)
        if form == "intdiv":
            fn = self.pick(["floor_div", "mod"])
            self.ops.update({fn, "arange", "cast"})
            k = self.int_(1, 4)
            return self.assign(sc, f'{v} * cast({fn}(arange({n}), {k}), "float")', x.shape)
        tail = (n,) if x.rank < 3 or not isinstance(x.shape[-2], int) or self.chance(0.5) else x.shape[-2:]
        if form == "full":
            fn = self.pick(["full", "zeros", "ones"])
            self.ops.add(fn)
            arg = f"{_lit(list(tail))}" + (", 2.0" if fn == "full" else "")
            op = "*" if fn != "zeros" else "+"
            return self.assign(sc, f"{v} {op} {fn}({arg})", x.shape)
        self.ops.add("param")
        init = self.pick(["", ', init = "normal"', ', init = "ones"', ", value = 0.5", ', init = "trunc_normal", std = 0.02',
                          ', init = "zeros"'])
        shape = self.pick([list(tail), [], [1, *tail]] if x.rank > len(tail) + 1 else [list(tail), []])
        lab = self.label(sc, "gamma", p=0.5)
        if self.chance(0.5):
            name = self.fresh("w")
            self.emit(sc, f"{name} = {lab}param({_lit(shape)}{init})")
            return self.assign(sc, f"{v} * {name}" if self.chance(0.5) else f"{name} + {v}", x.shape)
        lab = f"({lab}param({_lit(shape)}{init}))"
        return self.assign(sc, f"{v} * {lab}" if self.chance(0.5) else f"{v} + {lab}", x.shape)

    def op_gather(self, sc, x):
        """gather from ``x`` along one dim, or from a parameter table broadcast against ``x``."""
        self.ops.update({"gather", "arange", "mod"})
        dims = [i for i in range(1, x.rank) if isinstance(x.shape[i], int)]
        if self.chance(0.5) or x.rank < 3 or not isinstance(x.shape[-2], int):
            i = self.pick(dims)
            n, k = x.shape[i], self.int_(1, 6)
            idx = self.pick([f"mod(arange({k}, start = {self.int_(0, 3)}), {n})",
                             f"mod({k + n} - arange({k}, start = 1), {n})"])
            shape = list(x.shape)
            shape[i] = k
            return self.assign(sc, f"gather({x.var}, {idx}, dim = {i})", tuple(shape))
        m, k = self.int_(1, 5), x.shape[-2]
        lab = self.label(sc, "table", p=0.7)
        return self.assign(sc, f'{x.var} + gather({lab}param([{m}, {x.last}], init = "normal", std = 1.0), '
                               f"mod(arange({k}), {m}))", x.shape)

    def op_rmsnorm(self, sc, x):
        self.ops.add("rmsnorm")
        extra = self.pick(["", ", eps = 1e-5", ", affine = false"])
        if "false" not in extra:
            self.kinds.add("rmsnorm")
        return self.assign(sc, f"{self.label(sc, 'rms', p=0.5)}rmsnorm({x.var}{extra})", x.shape)

    def op_interpolate(self, sc, x):
        _, c, h, w = x.shape
        self.ops.add("interpolate")
        mode = self.pick(["nearest", "bilinear", "bicubic"])
        args = []
        if self.chance(0.3) and c * h * w * 4 <= self.MAX_NUMEL:
            shape = (B, c, h * 2, w * 2)
            args.append(self.pick(["scale = 2.0", "scale = 2.5"]) if h == w == 1 else "scale = 2.0")
            shape = (B, c, int(h * 2.5), int(w * 2.5)) if "2.5" in args[0] else shape
            if c * shape[2] * shape[3] > self.MAX_NUMEL:
                return None
        else:
            oh, ow = self.int_(1, 7), self.int_(1, 7)
            shape = (B, c, oh, ow)
            args.append(f"size = {_lit([oh, ow])}")
        if mode != "nearest" or self.chance(0.5):
            args.append(f'mode = "{mode}"')
        if mode != "nearest" and self.chance(0.4):
            args.append("align_corners = true")
        return self.assign(sc, f"interpolate({x.var}, {', '.join(args)})", shape)

    def op_pad(self, sc, x):
        self.ops.add("pad")
        dims = [i for i in range(1, x.rank) if isinstance(x.shape[i], int)]
        ds = sorted(self.d(st.sets(st.sampled_from(dims), min_size=1, max_size=min(2, len(dims)))))
        after = [self.int_(0, 2) for _ in ds]
        before = [self.int_(0, 2) for _ in ds]
        shape = list(x.shape)
        for i, a, b in zip(ds, after, before, strict=True):
            shape[i] += a + b
        if self.numel(tuple(shape)) > self.MAX_NUMEL:
            return None
        shown = [self.pick([i, i - x.rank]) for i in ds]
        args = [f"dims = {_lit(shown)}", f"after = {_lit(after)}"]
        if any(before) or self.chance(0.3):
            args.append(f"before = {_lit(before)}")
        if self.chance(0.4):
            args.append(f"value = {self.pick(['-1.0', '0.5', '0.0'])}")
        return self.assign(sc, f"pad({x.var}, {', '.join(args)})", tuple(shape))

    def op_prepend(self, sc, x):
        """prepend a [D] or [K, D] parameter to [B, N, D]."""
        self.ops.update({"prepend", "param"})
        _, n, d = x.shape
        k = self.pick([None, 1, 2])
        shape = [d] if k is None else [k, d]
        lab = self.label(sc, "cls", p=0.7)
        tok = f'{lab}param({_lit(shape)}, init = "normal")'
        if self.chance(0.5):
            name = self.fresh("tok")
            self.emit(sc, f"{name} = {tok}")
            tok = name
        return self.assign(sc, f"prepend({x.var}, {tok})", (B, n + (k or 1), d))

    def op_place(self, sc, x):
        """place_tokens at the positions where ids (computed from x) hold the token; the features
        are as many rows as x has, so there are always enough."""
        self.ops.update({"place_tokens", "cast", "gt", "mean"})
        token = self.pick([0, 1])
        ids = self.fresh("ids")
        self.emit(sc, f'{ids} = cast(gt(mean({x.var}, dim = [2]), 0.0), "int")')
        feats = self.pick([f"{x.var} * 2.0", f"tanh({x.var})", f"roll({x.var}, shifts = [1], dims = [1])"])
        return self.assign(sc, f"place_tokens({x.var}, {ids}, {feats}, token = {token})", x.shape)

    def op_attend(self, sc, x, rope: bool = False):
        """attend on [B, H, N, D] (written from [B, N, C] with rearranges, or a rank-4 tensor
        as it is): grouped-query heads, causal, bias / mask / score expressions, rope."""
        self.ops.add("attend")
        back = None
        if x.rank == 3:
            _, n, c = x.shape
            h = self.pick(_divisors(c, 4))
            self.ops.add("rearrange")
            q = self.fresh("q")
            self.emit(sc, f'{q} = rearrange({x.var}, "b n (h d) -> b h n d", h = {h})')
            shape = (B, h, n, c // h)
            back = '"b h n d -> b n (h d)"'
        else:
            q, shape = x.var, x.shape
            h = shape[1]
        d = shape[3]
        if d % 2 == 0 and (rope or self.chance(0.4)):
            self.ops.add("rope")
            extra = self.pick(["", ", theta = 500000.0", ", offset = 3"] + ([", fraction = 0.5"] if d % 4 == 0 else []))
            q2 = self.fresh("q")
            self.emit(sc, f"{q2} = rope({q}{extra})")
            q = q2
        k = v = q
        if h > 1 and isinstance(h, int) and self.chance(0.4):
            hk = self.pick([g for g in _divisors(h) if g < h])
            self.ops.add("slice")
            k = self.fresh("k")
            self.emit(sc, f"{k} = slice({q}, 0, {hk}, dim = 1)")
            v = self.pick([k, f"{k} * 0.5"])
        args = []
        if self.chance(0.4):
            args.append("causal = true")
        if self.chance(0.2):
            args.append(self.pick(["scale = 0.3", "scale = 1.0"]))
        form = self.pick(["none", "bias", "bias_t", "mask", "score"])
        if form == "bias":
            args.append(self.pick(["bias = 0.1 * (kv_idx - q_idx)", "bias = 0.5 * h - 0.25 * kv_idx",
                                   "bias = 0.2 * b + 0.1 * q_idx"]))
        elif form == "bias_t":
            self.ops.add("param")
            sl = self.fresh("slope")
            self.emit(sc, f"{sl} = {self.label(sc, 'slopes', p=0.5)}param([{h}], value = 0.5)")
            args.append(f"bias = {sl}[h] * (kv_idx - q_idx)")
        elif form == "mask":
            args.append(self.pick([f"mask = q_idx - kv_idx < {self.int_(1, 3)}", "mask = kv_idx <= q_idx",
                                   "mask = q_idx - kv_idx >= 0"]))
            if "causal = true" not in args:
                args.append("causal = true")  # every row keeps a key
        elif form == "score":
            args.append(self.pick(["score = score * 0.5", "score = score + 0.1 * h", "score = score * score * 0.1"]))
        out = self.fresh("o")
        self.emit(sc, f"{out} = attend({q}, {k}, {v}{''.join(', ' + a for a in args)})")
        if back is not None:
            return self.assign(sc, f"rearrange({out}, {back})", x.shape)
        t = Ten(out, shape)
        sc.env.append(t)
        return t

    def op_scores(self, sc, x):
        """A hand-written attention matrix [B, H, N, N] marked with attention_scores."""
        self.ops.update({"attention_scores", "softmax", "rearrange", "matmul"})
        p = self.fresh("p")
        self.emit(sc, f'{p} = softmax(attention_scores({x.var} @ rearrange({x.var}, "b h n d -> b h d n") * 0.5))')
        return self.assign(sc, f"{p} @ {x.var}", x.shape)

    def op_share(self, sc, x):
        """Weight sharing: a labelled linear (or conv2d) used again by its label, ``y = fc(z)``."""
        lab = self.fresh("shared")
        if sc.loop is not None:
            return None
        sc.labels.add(lab)
        if x.rank == 4 and x.concrete(1, 2, 3) and self.chance(0.5) and x.shape[2] >= 1:
            c = x.shape[1]
            self.ops.add("conv2d")
            self.kinds.add("conv2d")
            t = self.assign(sc, f"{lab}: conv2d({x.var}, {c}, kernel = 3, padding = 1, groups = {c})", x.shape)
            return self.assign(sc, f"{lab}({self.pick([t.var, f'{t.var} * 0.5'])})", x.shape)
        self.ops.add("linear")
        self.kinds.add("linear")
        t = self.assign(sc, f"{lab}: linear({x.var}, {x.last})", x.shape)
        return self.assign(sc, f"{lab}(gelu({t.var})) + {t.var}", x.shape)

    def op_subscript(self, sc, x):
        """Tensor subscripts: ``x[:, 0]``, ``x[:, 1:]``, ``x[:, ::2]``, ``x[..., a:b:s]``."""
        dims = [i for i in range(1, x.rank) if isinstance(x.shape[i], int)]
        i = self.pick(dims)
        n = x.shape[i]
        a = self.int_(0, n - 1)
        b = self.int_(a + 1, n)
        s = self.pick([1, 2, 3])
        shape = list(x.shape)
        if self.chance(0.2) and x.rank >= 3:
            shape.pop(i)
            piece = str(self.int_(-n, n - 1))
        else:
            shape[i] = -(-(b - a) // s)
            piece = self.pick([f"{a}:{b}:{s}", f"{a}:{b}" if s == 1 else f"{a}:{b}:{s}",
                               f"::{s}" if (a, b) == (0, n) else f"{a}:{b}:{s}"])
        sub = f"..., {piece}" if i == x.rank - 1 and self.chance(0.5) else ", ".join([":"] * i + [piece])
        return self.assign(sc, f"{x.var}[{sub}]", tuple(shape))

    OPS: ClassVar[dict] = {}  # filled after the class body

    # ------------------------------------------------------------------ constructs
    def let(self, sc, x):
        """A compile-time binding (int or list), visible to later code."""
        if self.chance(0.3):
            name = self.fresh("ws")
            xs = [self.int_(1, 8) for _ in range(self.int_(1, 3))]
            self.emit(sc, f"{name} = {self.pick([_lit(xs), _lit(xs[:1]) + ' + ' + _lit(xs[1:])])}")
            sc.lists[name] = xs
            return x
        name = self.fresh("k")
        v = self.int_(1, 8)
        self.emit(sc, f"{name} = {self.num(sc, v)}")
        sc.ints[name] = v
        return x

    def require(self, sc, x):
        c, truth = self.cond(sc)
        if not truth:
            c = f"not ({c})"
        self.emit(sc, f"require {c}" + self.pick(["", ', "generated requirement"']))
        return x

    def close(self, sc: Scope, x: Ten, h: Ten, label) -> str | None:
        """An expression that brings ``h`` back to ``x``'s shape (for residual bodies), or None."""
        if h.shape == x.shape and h.dtype == "float":
            return self.pick([f"{x.var} + {h.var}", h.var, f"{h.var} * 0.5 + {x.var}"])
        if h.rank == x.rank and h.shape[:-1] == x.shape[:-1] and isinstance(h.last, int) and isinstance(x.last, int):
            self.kinds.add("linear")
            self.ops.add("linear")
            return f"{x.var} + {label()}linear({h.var}, {self.num(sc, x.last)})"
        return None

    def loop(self, sc, x):
        var = self.pick(["i", "j"])
        if var in sc.ints or sc.loop is not None:
            return None
        if sc.lists and isinstance(x.last, int) and self.chance(0.35):
            name = self.pick(sorted(sc.lists))
            xs = sc.lists[name]
            if "stage[].fc" in sc.labels:
                return None
            sc.labels.add("stage[].fc")
            if not sc.in_block:
                self.named.append(("stage.*.fc", "linear"))
            self.kinds.add("linear")
            self.ops.add("linear")
            self.emit(sc, f"for {var} in 0 .. len({name}) {{")
            self.emit(sc, f"  {x.var} = stage[{var}].fc: linear({x.var}, {name}[{var}])")
            if self.chance(0.5) and "stage[].norm" not in sc.labels:
                sc.labels.add("stage[].norm")
                self.emit(sc, f"  {x.var} = stage[{var}].norm: layernorm({x.var})")
                self.kinds.add("layernorm")
                self.ops.add("layernorm")
            self.emit(sc, "}")
            t = Ten(x.var, (*x.shape[:-1], xs[-1]))
            sc.env = [e for e in sc.env if e.var != x.var] + [t]
            return t
        n = self.int_(1, 3)
        ints = {k: v for k, v in sc.ints.items() if v == n}
        hi = self.pick(sorted(ints)) if ints and self.chance(0.5) else str(n)
        lo = self.pick(["0", "0", "1"])
        if lo == "1":
            hi = f"{hi} + 1"
        snap = self.snapshot()
        body = sc.child_lines()
        body.loop = var
        # the body runs several times: it assigns fresh names only, so that nothing it reads
        # (a partner, x.shape[k]) changes shape from one iteration to the next
        body.protected |= {e.var for e in sc.env} | {"x", "h"}
        t: Ten | None = None
        if not sc.in_block and self.chance(0.4):
            t = self.block_call(body, x, preserve=True)
        else:
            h = self.assign(body, x.var, x.shape, var=self.fresh("h")) if self.chance(0.5) else x
            for _ in range(self.int_(1, 2)):
                h = self.step(body, h, structure=False)
            if self.chance(0.3) and h.dtype == "float":
                c, _truth = self.cond(body)
                c = self.pick([c, f"{var} % 2 == 0", f"{var} > 0"])
                self.emit(body, f"if {c} {{ {h.var} = {h.var} * 0.5 }}"
                          + self.pick(["", f" else {{ {h.var} = -{h.var} }}"]))
            ret = self.close(body, x, h, lambda: self.label(body, "proj", "linear", p=1.0))
            if ret is not None:
                t = self.assign(body, ret, x.shape, var=x.var)
        if t is None or t.shape != x.shape or t.var != x.var:
            self.restore(snap)
            return None
        self.emit(sc, f"for {var} in {lo} .. {hi} {{")
        sc.lines += body.lines
        self.emit(sc, "}")
        kept = {id(e) for e in body.env}
        sc.env = [e for e in sc.env if id(e) in kept and e.var != x.var] + [t]
        return t

    def branch(self, sc, x):
        """if / elif / else decided at compile time: the taken branch is tracked, the others
        written from the same state (they are never elaborated, but they are well-typed)."""
        conds = [self.cond(sc) for _ in range(self.int_(1, 3))]
        has_else = self.chance(0.6)
        taken = next((i for i, (_, t) in enumerate(conds) if t), len(conds) if has_else else None)
        arms: list[Scope] = []
        result: Ten = x
        n_arms = len(conds) + (1 if has_else else 0)
        # every arm ends by binding the same variable (never a protected one: a block's `x`
        # stays its input, which the residual closing the block reads)
        target = x.var if x.var not in sc.protected else self.fresh("b")
        for i in range(n_arms):
            snap = self.snapshot()
            body = sc.child_lines()
            h = x
            for _ in range(self.int_(1, 2)):
                h = self.step(body, h, structure=False)
            if h.var != target:
                h = self.assign(body, h.var, h.shape, var=target, dtype=h.dtype)
            arms.append(body)
            if i == taken:
                result = h
                sc.env = body.env
            else:
                self.restore(snap)
        for i, body in enumerate(arms):
            head = f"if {conds[0][0]} {{" if i == 0 else (f"}} elif {conds[i][0]} {{" if i < len(conds) else "} else {")
            self.emit(sc, head)
            sc.lines += body.lines
        self.emit(sc, "}")
        return result

    def block_call(self, sc: Scope, x: Ten, preserve: bool = False) -> Ten | None:
        """Call a block made for tensors like ``x`` (written on first use)."""
        if sc.in_block or x.rank < 2 or not all(isinstance(s, int) for s in x.shape[1:]):
            return None
        key = f"{x.shape}{preserve}"
        if key not in self.block_cache:
            if self.n_blocks >= 2:
                return None
            snap = self.snapshot()
            made = self.make_block(x, preserve)
            if made is None:
                self.restore(snap)
                return None
            self.block_cache[key] = made
        name, call, rets = self.block_cache[key]
        lab = self.label(sc, self.pick(["blk", "enc", "layer"]), None, p=0.7)
        if sc.loop is None and not lab and self.chance(0.5):
            lab = ""
        names = [x.var] + [self.fresh("r") for _ in rets[1:]]
        self.emit(sc, f"{', '.join(names)} = {lab}{name}({x.var}{call})")
        outs = [Ten(n, shape) for n, shape in zip(names, rets, strict=True)]
        sc.env = [e for e in sc.env if e.var not in names] + outs
        return outs[0]

    def make_block(self, x: Ten, preserve: bool) -> tuple[str, str, list[tuple]] | None:
        self.n_blocks += 1
        name = f"blk{self.n_blocks}"
        dimnames = {2: ["D"], 3: ["N", "D"], 4: ["H", "W", "C"]}[x.rank]
        ann = "[*, D]" if self.chance(0.15) and x.rank == 2 else "[B, " + ", ".join(dimnames) + "]"
        sc = Scope(in_block=True, indent=1, protected={"x"})
        for n, v in zip(dimnames, x.shape[1:], strict=True):
            sc.ints[n] = v
        params, call = [f"x: {ann}"], []
        last = dimnames[-1]
        # value parameters: (decl, the value the body sees)
        if self.chance(0.6):
            mult = self.pick([1, 2])
            dflt = x.last * mult
            passed = self.chance(0.4)
            v = self.int_(1, 8) if passed else dflt
            params.append(f"hidden: int = {last}" + (f" * {mult}" if mult > 1 else ""))
            if passed:
                call.append(f"hidden = {v}")
            sc.ints["hidden"] = v
        if self.chance(0.5):
            dflt = self.chance(0.5)
            v = self.chance(0.5)
            params.append(f"flag: bool = {_lit(dflt)}")
            if v != dflt or self.chance(0.3):
                call.append(f"flag = {_lit(v)}")
            sc.bools["flag"] = v
        if self.chance(0.4):
            v = self.pick(["gelu", "relu", "tanh"])
            params.append(f'fn: str = "{self.pick(["gelu", "relu"])}"')
            call.append(f'fn = "{v}"')
            sc.strs["fn"] = v
        if self.chance(0.3):
            params.append("scale: float = 0.5")
            sc.floats["scale"] = 0.5
        t = Ten("x", x.shape)
        sc.env = [t]
        if self.chance(0.5):
            t = self.assign(sc, "x", x.shape, var="h")
        for _ in range(self.int_(1, 3)):
            t = self.step(sc, t)
        rets = []
        if "scale" in sc.floats and t.dtype == "float" and self.chance(0.5):
            t = self.assign(sc, f"{t.var} * scale", t.shape, var=t.var)
        ret = self.close(sc, Ten("x", x.shape), t, lambda: self.label(sc, "out_proj", "linear", p=0.7))
        if ret is None:
            if preserve:
                return None
            ret, shape = t.var, t.shape
        else:
            shape = x.shape
        if preserve and shape != x.shape:
            return None
        rets.append(shape)
        extra = []
        if not preserve and self.chance(0.25):
            other = self.pick([e for e in sc.env if e.dtype == "float"])
            extra.append(other.var)
            rets.append(other.shape)
        body = "\n".join(sc.lines)
        self.blocks.append(f"block {name}({', '.join(params)}) {{\n{body}\n  return {', '.join([ret, *extra])}\n}}\n")
        return name, "".join(", " + c for c in call), rets

    STRUCT: ClassVar[list] = []

    # ------------------------------------------------------------------ the program
    def inputs(self, sc: Scope) -> Ten:
        kind = self.pick(["flat", "tok", "tok", "tok", "grid", "grid", "img", "img", "ids"])
        dim = self.int_(1, 8) if kind != "grid" else self.pick([self.int_(1, 8), 4, 8])
        sc.ints["dim"] = dim
        if kind == "flat":
            x = Ten("x", (B, dim))
            decl = "[B, dim]"
        elif kind == "tok":
            n = self.pick([self.int_(1, 6), self.int_(1, 6), S])
            x = Ten("x", (B, n, dim))
            decl = f"[B, {n}, dim]"
        elif kind in ("grid", "img"):
            h, w = self.int_(1, 6), self.int_(1, 6)
            x = Ten("x", (B, h, w, dim) if kind == "grid" else (B, dim, h, w))
            decl = f"[B, {h}, {w}, dim]" if kind == "grid" else f"[B, dim, {h}, {w}]"
        else:
            n = self.pick([self.int_(1, 6), S])
            x = Ten("x", (B, n), "int")
            decl = f"int[B, {n}]"
        self.emit(sc, f"in x: {decl}")
        sc.env.append(x)
        if x.dtype == "float" and self.chance(0.35):  # broadcasting partners
            for nm, shape in self.pick([[("r", (x.last,))], [("c", (*x.shape[:-1], 1))],
                                        [("r", (x.last,)), ("c", (*x.shape[:-1], 1))]]):
                if isinstance(shape[-1], int) or nm == "c":
                    decl = "[" + ", ".join("dim" if (nm == "r" and s == dim) else str(s) for s in shape) + "]"
                    self.emit(sc, f"in {nm}: {decl}")
                    sc.env.append(Ten(nm, shape))
        if self.chance(0.2):
            m, w = self.int_(1, 5), self.int_(1, 8)
            self.emit(sc, f"in ctx: [B, {m}, {w}]")
            sc.env.append(Ten("ctx", (B, m, w)))
        return x

    def program(self) -> Program:
        sc = Scope()
        # arch parameters: the values the arch under test sees
        sc.ints["depth"] = self.int_(1, 3)
        sc.bools["flag"] = self.chance(0.5)
        sc.strs["act"] = self.pick(["gelu", "relu", "silu"])
        sc.lists["widths"] = [self.int_(1, 8) for _ in range(self.int_(1, 3))]
        sc.floats["drop"] = 0.0
        x = self.inputs(sc)
        dim = sc.ints["dim"]
        # one op of a few families first, where it applies (so that between them ~600 programs
        # reach every op, rare choices included, whatever hypothesis's seed)
        name, form = self.pick(FOCUS)
        if name in self.OPS and self.OPS[name][0](self, x, sc):
            fn = self.OPS[name][1]
            x = (fn(self, sc, x, form) if form is not None else fn(self, sc, x)) or x
        values = {"dim": dim, "depth": sc.ints["depth"], "flag": sc.bools["flag"], "act": sc.strs["act"],
                  "widths": sc.lists["widths"], "drop": 0.0}
        types = {"dim": "int", "depth": "int", "flag": "bool", "act": "str", "widths": "[int]", "drop": "float"}
        for _ in range(self.size):
            x = self.step(sc, x)
            if x.dtype == "float" and x.batched and self.chance(0.1) and len(self.outs) < 2:
                o = f"feat{len(self.outs)}"
                self.emit(sc, f"out {o} = {x.var}")
                self.outs.append(o)
        if x.dtype == "int":
            x = self.op_embedding(sc, x)
        if self.emb is not None and x.last == self.emb[1] and x.batched and self.chance(0.7):
            self.ops.add("tied_linear")
            self.emit(sc, f'out logits = tied_linear({x.var}, "{self.emb[0]}")')
        elif isinstance(x.last, int) and x.rank > 2 and self.chance(0.4):
            red = f"mean({x.var}, dim = {_lit(list(range(1, x.rank - 1)))})"
            self.ops.update({"mean", "linear"})
            self.kinds.add("linear")
            if "head" not in sc.labels:
                sc.labels.add("head")
                self.named.append(("head", "linear"))
                self.emit(sc, f"out logits = head: linear({red}, {self.int_(1, 5)})")
            else:
                self.emit(sc, f"out logits = {red}")
        else:
            self.emit(sc, f"out y = {x.var}")
        # variant or not: the arch under test
        variant = self.chance(0.4)
        if variant:
            defaults = dict(values)
            overrides = []
            for k in self.d(st.sets(st.sampled_from(sorted(values)), min_size=1, max_size=3)):
                other = {"dim": self.int_(1, 8), "depth": self.int_(1, 3), "flag": not values["flag"],
                         "act": self.pick(["gelu", "relu"]), "widths": [self.int_(1, 8)], "drop": 0.0}[k]
                defaults[k] = other
                overrides.append(f"{k} = {_lit(values[k])}")
        else:
            defaults = values
        plist = ", ".join(f"{k}: {types[k]} = {_lit(defaults[k])}" for k in values)
        taps = self.adapters() if self.chance(0.35) else []
        base_body = [] if variant else taps
        head = [f"use {u}" for u in sorted(self.uses)]
        text = "\n".join([*head, *self.blocks, f"arch net({plist}) {{", *sc.lines,
                          *("  " + t for t in base_body), "}", ""])
        arch = "net"
        if variant:
            body = " {\n" + "\n".join("  " + t for t in taps) + "\n}" if taps else ""
            text += f"\narch small = net({', '.join(overrides)}){body}\n"
            arch = "small"
        return Program(text, arch, self.batch2, frozenset(self.ops))

    def adapters(self) -> list[str]:
        """freeze / adapt / unfreeze statements whose selectors match nodes of the program."""
        out = []
        if self.chance(0.5):
            out.append('freeze "*"')
        lora_sels = []
        if "linear" in self.kinds:
            lora_sels.append('"linear:*"')
        for k in sorted(self.kinds & set(LORA_PARTS)):
            lora_sels.append(f'"{k}:*.{self.pick(LORA_PARTS[k])}"')
        for name, k in self.named:
            if k == "linear":
                lora_sels.append(f'"{name}"')
            elif k in LORA_PARTS:
                lora_sels.append(f'"{name}.{self.pick(LORA_PARTS[k])}"')
        if lora_sels and self.chance(0.8):
            sels = sorted(self.d(st.sets(st.sampled_from(sorted(set(lora_sels))), min_size=1, max_size=2)))
            args = self.pick(["", "r = 2", "r = 1, alpha = 4", "r = 3, alpha = 2.0, dropout = 0.0", "alpha = 8"])
            out.append(f"adapt lora({args}) on {', '.join(sels)}")
        if self.kinds and self.chance(0.5):
            out.append('adapt bitfit() on "*"')
        if self.named and self.chance(0.6):
            name, _ = self.pick(self.named)
            out.append(f'unfreeze "{name}"')
        return out


def _float(x: Ten) -> bool:
    return x.dtype == "float" and x.batched


def _last(x: Ten) -> bool:
    return _float(x) and x.rank >= 2 and isinstance(x.last, int) and Gen.numel(x.shape) <= Gen.MAX_NUMEL


Gen.OPS = {
    "linear": (lambda g, x, sc: _last(x), Gen.op_linear),
    "norm": (lambda g, x, sc: _float(x) and x.rank >= 2 and (isinstance(x.last, int) or isinstance(x.shape[1], int)),
             Gen.op_norm),
    "act": (lambda g, x, sc: _float(x), Gen.op_act),
    "glu": (lambda g, x, sc: _float(x) and any(isinstance(s, int) and s % 2 == 0 for s in x.shape[1:]), Gen.op_glu),
    "softmax": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_softmax),
    "drop": (lambda g, x, sc: _float(x), Gen.op_drop),
    "scale": (lambda g, x, sc: _last(x), Gen.op_scale),
    "split": (lambda g, x, sc: _float(x) and any(isinstance(s, int) and s >= 2 for s in x.shape[1:]), Gen.op_split),
    "concat": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_concat),
    "mean": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_mean),
    "take": (lambda g, x, sc: _float(x) and x.rank >= 3 and any(isinstance(s, int) for s in x.shape[1:]), Gen.op_take),
    "slice": (lambda g, x, sc: _float(x) and x.rank >= 2 and any(isinstance(s, int) for s in x.shape[1:]),
              Gen.op_slice),
    "roll": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_roll),
    "binary": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_binary),
    "binary2": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_binary),
    "matmul": (lambda g, x, sc: _last(x) and x.rank == 3 and isinstance(x.shape[1], int), Gen.op_matmul),
    "matmul2": (lambda g, x, sc: _last(x) and x.rank == 3 and isinstance(x.shape[1], int), Gen.op_matmul),
}


def _kind(fn, kind):
    return lambda g, sc, x: fn(g, sc, x, kind)


def _seq(x: Ten) -> bool:
    return _last(x) and x.rank == 3


def _seq_n(x: Ten) -> bool:
    return _seq(x) and isinstance(x.shape[1], int)


def _grid(x: Ten) -> bool:
    return _last(x) and x.rank == 4 and x.concrete(1, 2, 3)


def _pooled_ok(x: Ten) -> bool:
    if not _seq_n(x):
        return False
    n = x.shape[1]
    return any(n - c >= 1 and any((n - c) % h == 0 and (n - c) // h <= 8 for h in range(1, 9)) for c in (0, 1))


for _k in ("attention", "rel_pos_attention", "cross_attention"):
    Gen.OPS[_k] = (lambda g, x, sc: _seq(x), _kind(Gen.op_attention, _k))
for _k in ("learned_pos", "sinusoidal_pos", "prepend_token", "learned_tokens"):
    Gen.OPS[_k] = (lambda g, x, sc: _seq(x), _kind(Gen.op_tokens, _k))
Gen.OPS["conv1d"] = (lambda g, x, sc: _seq_n(x), _kind(Gen.op_tokens, "conv1d"))
Gen.OPS["pooled_attention"] = (lambda g, x, sc: _pooled_ok(x), _kind(Gen.op_tokens, "pooled_attention"))
for _k in ("window_attention", "window_attention_v2", "local_attention", "channel_shift"):
    Gen.OPS[_k] = (lambda g, x, sc: _grid(x), _kind(Gen.op_grid, _k))
Gen.OPS["spatial_shift"] = (lambda g, x, sc: _grid(x) and x.last % 4 == 0, _kind(Gen.op_grid, "spatial_shift"))
for _k in ("conv2d", "conv2d_", "max_pool2d", "avg_pool2d"):
    Gen.OPS[_k] = (lambda g, x, sc: _float(x) and x.rank == 4 and x.concrete(1, 2, 3),
                   _kind(Gen.op_image, _k.rstrip("_")))
Gen.OPS.update({
    "math": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_math),
    "math2": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_math),
    "math3": (lambda g, x, sc: _float(x) and x.rank >= 2, Gen.op_math),
    "act2": (lambda g, x, sc: _float(x), Gen.op_act),
    "scale2": (lambda g, x, sc: _last(x) and x.rank == 3, Gen.op_scale),
    "const": (lambda g, x, sc: _last(x), Gen.op_const),
    "gather": (lambda g, x, sc: _float(x) and x.rank >= 2 and any(isinstance(s, int) for s in x.shape[1:])
               and Gen.numel(x.shape) <= Gen.MAX_NUMEL, Gen.op_gather),
    "rmsnorm": (lambda g, x, sc: _last(x), Gen.op_rmsnorm),
    "pad": (lambda g, x, sc: _float(x) and x.rank >= 2 and any(isinstance(s, int) for s in x.shape[1:]), Gen.op_pad),
    "subscript": (lambda g, x, sc: _float(x) and x.rank >= 2 and any(isinstance(s, int) for s in x.shape[1:]),
                  Gen.op_subscript),
    "share": (lambda g, x, sc: _last(x) and sc.loop is None, Gen.op_share),
})
Gen.OPS["interpolate"] = (lambda g, x, sc: _float(x) and x.rank == 4 and x.concrete(1, 2, 3), Gen.op_interpolate)
Gen.OPS["prepend"] = (lambda g, x, sc: _seq_n(x) and x.shape[1] < 8, Gen.op_prepend)
Gen.OPS["place_tokens"] = (lambda g, x, sc: _seq(x), Gen.op_place)
Gen.OPS["attend"] = (lambda g, x, sc: (_seq(x) or (_last(x) and x.rank == 4 and x.concrete(1))), Gen.op_attend)
Gen.OPS["attention_scores"] = (lambda g, x, sc: _last(x) and x.rank == 4 and x.concrete(1, 2), Gen.op_scores)
Gen.OPS.update({
    "rearrange": (lambda g, x, sc: _float(x) and x.rank in (2, 3, 4) and isinstance(x.last, int)
                  and (x.rank != 4 or x.concrete(1, 2, 3)), Gen.op_rearrange),
    "std": (lambda g, x, sc: _last(x) and x.rank in (2, 3, 4) and g.chance(0.3), Gen.op_std),
})
SPECIAL = {"matmul", "attention", "rel_pos_attention", "cross_attention", "learned_pos", "sinusoidal_pos",
           "prepend_token", "learned_tokens", "conv1d", "pooled_attention", "window_attention",
           "window_attention_v2", "local_attention", "channel_shift", "spatial_shift", "conv2d", "max_pool2d",
           "avg_pool2d", "interpolate", "prepend", "place_tokens", "attend", "attention_scores"}
FOCUS = [("linear", None), ("math", "all"), ("math", "all"), ("const", "all"), ("attend", True), ("attend", True),
         ("attention_scores", None), ("interpolate", None), ("prepend", None), ("place_tokens", None), ("pad", None),
         ("gather", None), ("rmsnorm", None), ("subscript", None), ("share", None), ("act", None), ("scale", None),
         ("norm", None), ("drop", None)]
Gen.STRUCT = [
    (lambda g, x, sc: not sc.in_block, lambda g, sc, x: g.let(sc, x)),
    (lambda g, x, sc: g.chance(0.3), lambda g, sc, x: g.require(sc, x)),
    (lambda g, x, sc: _float(x) and sc.loop is None, lambda g, sc, x: g.loop(sc, x)),
    (lambda g, x, sc: _float(x), lambda g, sc, x: g.branch(sc, x)),
    (lambda g, x, sc: _float(x) and not sc.in_block, lambda g, sc, x: g.block_call(sc, x)),
    (lambda g, x, sc: _float(x) and not sc.in_block, lambda g, sc, x: g.block_call(sc, x)),
]


@st.composite
def programs(draw: st.DrawFn, *, drop: bool = False, max_size: int = 7) -> Program:
    """A well-typed (most of the time) program and the arch to build."""
    size = draw(st.integers(2, max_size))
    return Gen(draw, drop=drop, size=size).program()


__all__ = ["Gen", "Program", "Ten", "broadcast", "programs"]
