"""Random well-formed archlang programs, built from the language's constructs.

The generator tracks the concrete shape of every tensor it has made (the batch ``B`` and
free sizes stay symbolic), so that most programs check clean and reach the cost model and
the renderer: ops are only applied where their arguments fit (heads divide the width, the
kernel fits the image, a rearrange's groups divide their dims). A program has typed
parameters, ``in``/``out``, labels (hierarchical and indexed in loops), blocks (one or more
returns), calls of the primitive ops of :data:`archlang.check.surface.SURFACE` and of the
standard library, ``for`` loops, ``if``/``elif``/``else``, compile-time arithmetic, lists,
``require``, and variants with adapters. Deterministic from a ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SYM = "?"  # a size that is not known at compile time (a free size such as N)


@dataclass
class T:
    """A tensor: its variable, layout and sizes after the batch."""

    var: str
    kind: str  # tok [N, D] | grid [H, W, C] | img [C, H, W] | flat [D] | ids [S] (int)
    dims: tuple[int | str, ...]

    @property
    def last(self) -> int | str:
        return self.dims[-1]


def _divisors(n: int, pool: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)) -> list[int]:
    return [d for d in pool if n % d == 0]


@dataclass
class _Ctx:
    params: dict[str, object]
    lines: list[str] = field(default_factory=list)
    indent: int = 1
    labels: set[str] = field(default_factory=set)
    env: list[T] = field(default_factory=list)  # tensors in scope (for cross attention, residuals)
    loop_var: str | None = None
    in_block: bool = False
    counter: int = 0


WILD_ATOMS = ("0", "1", "-1", "2", "3", "7", "64", "1000", str(2**31), str(2**62), "0.0", "0.5", "-2.5", "1e308",
              "1e-300", "true", "false", '""', '"gelu"', '"b n d -> b d n"', "[]", "[1, 2]", "[[1], [2]]",
              "[1.5, 2]", "dim", "depth", "heads", "widths", "flag", "act", "p", "x", "B", "N", "nope", "x.shape",
              "x.shape[0]", "x.shape[-1]", "x.shape[9]", "widths[0 .. 9]", "widths[-1]", "range(3)")
WILD_BINOPS = ("+", "-", "*", "/", "//", "%", "**", "@", "==", "!=", "<", ">=", "and", "or")
WILD_CALLS = ("len", "sum", "min", "max", "int", "float", "round", "range", "abs")


def wild(rng: random.Random, depth: int = 2) -> str:
    """A random compile-time expression, often ill-typed: the checker must answer each with a diagnostic."""
    if depth <= 0 or rng.random() < 0.3:
        return rng.choice(WILD_ATOMS)
    r = rng.random()
    sub = lambda: wild(rng, depth - 1)  # noqa: E731
    if r < 0.35:
        return f"({sub()} {rng.choice(WILD_BINOPS)} {sub()})"
    if r < 0.45:
        return f"{rng.choice(('-', 'not '))}{sub()}"
    if r < 0.55:
        return f"(if {sub()} then {sub()} else {sub()})"
    if r < 0.7:
        return f"{rng.choice(WILD_CALLS)}({', '.join(sub() for _ in range(rng.randrange(0, 3)))})"
    if r < 0.8:
        return "[" + ", ".join(sub() for _ in range(rng.randrange(0, 4))) + "]"
    if r < 0.9:
        return f"{sub()}[{sub()}]"
    return f"{sub()}[{sub()} .. {sub()}]"


class ProgramGen:
    """``ProgramGen(rng).program()`` -> spec text; ``wild`` is the chance that a number is replaced
    by a random, often ill-typed expression (:func:`wild`)."""

    WIDTHS = (8, 12, 16, 24, 32, 48, 64)

    def __init__(self, rng: random.Random, wild: float = 0.0) -> None:
        self.rng = rng
        self.wild = wild
        self.blocks: list[str] = []  # block definitions, text
        self.block_sigs: dict[str, tuple[str, str]] = {}  # kind -> (block name, call args template)
        self.uses_nn = rng.random() < 0.5
        self.uses_vision = rng.random() < 0.25
        self.n_blocks = 0
        self._two: set[str] = set()  # blocks that return two tensors

    # ------------------------------------------------------------------ helpers
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, xs):
        return self.rng.choice(list(xs))

    def emit(self, c: _Ctx, line: str) -> None:
        c.lines.append("  " * c.indent + line)

    def fresh(self, c: _Ctx, base: str) -> str:
        c.counter += 1
        return f"{base}{c.counter}"

    def label(self, c: _Ctx, base: str) -> str:
        """A label for the next node ("" for none): plain, dotted, or indexed in a loop."""
        if self.chance(0.35):
            return ""
        for _ in range(20):
            stem = self.pick((base, "fc", "proj", "norm", "attn", "mix", "conv", "head", "pre"))
            if c.loop_var is not None:
                lab = f"{self.pick(('blocks', 'layers', 'stage'))}[{c.loop_var}].{stem}"
            elif self.chance(0.3):
                lab = f"{self.pick(('enc', 'stem', 'body', 'neck'))}.{stem}{self.rng.randrange(9)}"
            else:
                lab = f"{stem}{self.rng.randrange(99)}"
            if lab not in c.labels:
                c.labels.add(lab)
                return lab + ": "
        return ""

    def num(self, c: _Ctx, v: int) -> str:
        """An int expression worth ``v``: a literal, a parameter, or some arithmetic."""
        p = c.params
        if self.wild and self.chance(self.wild):
            return wild(self.rng)
        r = self.rng.random()
        if not c.in_block:
            for name, val in p.items():
                if isinstance(val, int) and not isinstance(val, bool) and r < 0.5 and not name.startswith("_"):
                    if val == v:
                        return name
                    if val * 2 == v:
                        return f"2 * {name}"
                    if val and v % val == 0 and self.chance(0.3):
                        return f"{name} * {v // val}"
            w = p.get("widths")
            if isinstance(w, list) and v in w and r < 0.6:
                return f"widths[{w.index(v)}]"
        if r < 0.7:
            return str(v)
        k = self.rng.randrange(1, 5)
        return self.pick((f"({v - k} + {k})", f"max({v}, {k})", f"int({v}.0)", f"({v * k} // {k})",
                          f"min({v}, {v + k})", f"(if {v} > {k} then {v} else {v})", f"sum([{v - k}, {k}])"))

    # ------------------------------------------------------------------ ops on one tensor
    def step(self, c: _Ctx, x: T) -> T:
        """Apply one op (or a residual, a block call, a loop, an if) to ``x``; return the new tensor."""
        kinds = {"tok": self.tok_op, "grid": self.grid_op, "img": self.img_op, "flat": self.flat_op,
                 "ids": self.ids_op}
        return kinds[x.kind](c, x)

    def assign(self, c: _Ctx, expr: str, kind: str, dims: tuple, var: str | None = None) -> T:
        var = var or self.pick(("x", "x", "h", "y", "t"))
        self.emit(c, f"{var} = {expr}")
        t = T(var, kind, dims)
        c.env = [e for e in c.env if e.var != var] + [t]
        return t

    def common(self, c: _Ctx, x: T) -> T | None:
        """Ops valid for any float tensor with a concrete last dim."""
        d = x.last
        if not isinstance(d, int):
            return None
        r = self.rng.random()
        if r < 0.25:
            out = self.pick(self.WIDTHS) if self.chance(0.7) else d
            bias = self.pick(("", "", ", bias = false", ", bias = true"))
            return self.assign(c, f"{self.label(c, 'fc')}linear({x.var}, {self.num(c, out)}{bias})", x.kind,
                               (*x.dims[:-1], out))
        if r < 0.38:
            eps = self.pick(("", "", ", eps = 1e-6", ", affine = false"))
            return self.assign(c, f"{self.label(c, 'norm')}layernorm({x.var}{eps})", x.kind, x.dims)
        if r < 0.5:
            fn = self.pick(("gelu", "relu", "silu", "tanh", "sigmoid"))
            e = self.pick((f"{fn}({x.var})", f'act({x.var}, fn = "{fn}")', f'gelu({x.var}, approximate = "tanh")'))
            return self.assign(c, e, x.kind, x.dims)
        if r < 0.58:
            p = self.pick(("0.0", "0.1", "0.25"))
            f = self.pick(("dropout", "drop_path"))
            return self.assign(c, f"{f}({x.var}, p = {p})", x.kind, x.dims)
        if r < 0.66:  # residual
            inner = self.pick((f"{self.label(c, 'fc')}linear({x.var}, {self.num(c, d)})", f"gelu({x.var})",
                               f"{self.label(c, 'norm')}layernorm({x.var})", f"{x.var} * 0.5",
                               f"identity({x.var})", f"{self.label(c, 'ls')}channel_scale({x.var}, init = 0.1)"))
            op = self.pick(("+", "+", "-", "*"))
            return self.assign(c, f"{x.var} {op} {inner}", x.kind, x.dims)
        if r < 0.7 and d % 2 == 0:
            return self.assign(c, f"glu({x.var})", x.kind, (*x.dims[:-1], d // 2))
        if r < 0.74 and d >= 2:
            a = self.rng.randrange(1, d)
            v1, v2 = self.fresh(c, "a"), self.fresh(c, "b")
            self.emit(c, f"{v1}, {v2} = split({x.var}, [{a}, {d - a}], dim = -1)")
            c.env += [T(v1, x.kind, (*x.dims[:-1], a)), T(v2, x.kind, (*x.dims[:-1], d - a))]
            order = [v2, v1] if self.chance(0.5) else [v1, v2]
            return self.assign(c, f"concat([{', '.join(order)}], dim = -1)", x.kind, x.dims)
        if r < 0.78:
            return self.assign(c, f"softmax({x.var}, dim = -1)", x.kind, x.dims)
        if r < 0.86 and not c.in_block:
            return self.block_call(c, x)
        if r < 0.93 and c.loop_var is None:
            return self.loop(c, x)
        if c.loop_var is None:
            return self.branch(c, x)
        return self.assign(c, f"{x.var} + {x.var}", x.kind, x.dims)

    def heads(self, c: _Ctx, d: int) -> str:
        if self.wild and self.chance(self.wild):
            return wild(self.rng)
        h = c.params.get("heads")
        if not c.in_block and isinstance(h, int) and d % h == 0 and self.chance(0.5):
            return "heads"
        return str(self.pick(_divisors(d, (1, 2, 4, 8))))

    def tok_op(self, c: _Ctx, x: T) -> T:
        n, d = x.dims
        r = self.rng.random()
        if not isinstance(d, int):
            return self.assign(c, f'rearrange({x.var}, "b n d -> b d n")', "tok", (d, n))
        if r < 0.12:
            causal = self.pick(("", "", ", causal = true", ", qkv_bias = false", ", head_dim = 8"))
            op = self.pick(("attention", "attention", "rel_pos_attention")) if "causal" not in causal else "attention"
            return self.assign(c, f"{self.label(c, 'attn')}{op}({x.var}, heads = {self.heads(c, d)}{causal})",
                               "tok", x.dims)
        if r < 0.17:
            others = [e for e in c.env if e.kind == "tok" and isinstance(e.last, int) and e.var != x.var]
            if others:
                m = self.pick(others)
                return self.assign(c, f"{self.label(c, 'xattn')}cross_attention({x.var}, {m.var}, heads = "
                                      f"{self.heads(c, d)})", "tok", x.dims)
        if r < 0.22 and isinstance(n, int):
            op = self.pick((f"learned_pos({x.var})", f"sinusoidal_pos({x.var}, max_len = {max(n, 1) * 2})",
                            f"{self.label(c, 'pos')}learned_pos({x.var}, max_len = {n})"))
            return self.assign(c, op, "tok", x.dims)
        if r < 0.26:
            return self.assign(c, f"{self.label(c, 'cls')}prepend_token({x.var})", "tok",
                               (n + 1 if isinstance(n, int) else SYM, d))
        if r < 0.3 and isinstance(n, int) and n > 1:
            k = self.rng.randrange(1, n + 1)
            return self.assign(c, f"slice({x.var}, start = 0, stop = {k}, dim = 1)", "tok", (k, d))
        if r < 0.34 and isinstance(n, int):
            return self.assign(c, f'rearrange({x.var}, "b n d -> b d n")', "tok", (d, n))
        if r < 0.38 and isinstance(n, int):
            for h in (2, 3, 4, 7):
                if n % h == 0 and n // h > 0:
                    return self.assign(c, f'rearrange({x.var}, "b (h w) c -> b h w c", h = {h})', "grid",
                                       (h, n // h, d))
        if r < 0.41 and isinstance(n, int):
            k = self.pick((1, 3))
            out = self.pick(self.WIDTHS)
            t = max((d + 2 * (k // 2) - k) // 1 + 1, 1)
            return self.assign(c, f"{self.label(c, 'conv')}conv1d({x.var}, {out}, kernel = {k}, padding = {k // 2})",
                               "tok", (out, t))
        if r < 0.44:
            return self.assign(c, f"{self.label(c, 'aff')}affine({x.var})", "tok", x.dims)
        if r < 0.47 and self.uses_nn:
            blk = self.pick((f"transformer_block({x.var}, heads = {self.heads(c, d)}, mlp_ratio = 2.0)",
                             f"mlp({x.var}, hidden = {d * 2})",
                             f"prenorm_layer({x.var}, heads = {self.heads(c, d)}, ff = {d * 2})",
                             f"encoder_layer({x.var}, heads = {self.heads(c, d)}, ff = {d})"))
            return self.assign(c, f"{self.label(c, 'blk')}{blk}", "tok", x.dims)
        if r < 0.49 and isinstance(n, int):
            for h in (2, 3, 4):
                if n % h == 0 and h * h == n:
                    return self.assign(c, f"{self.label(c, 'pool')}pooled_attention({x.var}, heads = "
                                          f"{self.heads(c, d)}, grid = [{h}, {h}])", "tok", x.dims)
        if r < 0.5:
            return self.assign(c, f"{x.var} @ rearrange({x.var}, \"b n d -> b d n\")", "tok", (n, n)) \
                if isinstance(n, int) else self.assign(c, f"{x.var} * 2.0", "tok", x.dims)
        return self.common(c, x) or x

    def grid_op(self, c: _Ctx, x: T) -> T:
        h, w, ch = x.dims
        r = self.rng.random()
        if not (isinstance(h, int) and isinstance(w, int) and isinstance(ch, int)):
            return self.common(c, x) or x
        if r < 0.14:
            win = self.pick((1, 2, 3, 4, 7))
            shift = self.rng.randrange(win) if self.chance(0.5) else 0
            op = self.pick(("window_attention", "window_attention", "window_attention_v2"))
            return self.assign(c, f"{self.label(c, 'wattn')}{op}({x.var}, heads = {self.heads(c, ch)}, window = "
                                  f"{win}, shift = {shift})", "grid", x.dims)
        if r < 0.19:
            return self.assign(c, f"{self.label(c, 'local')}local_attention({x.var}, heads = {self.heads(c, ch)}, "
                                  f"kernel = {self.pick((1, 3))})", "grid", x.dims)
        if r < 0.23:
            return self.assign(c, f"roll({x.var}, shifts = [1, -1], dims = [1, 2])", "grid", x.dims)
        if r < 0.27:
            return self.assign(c, f"channel_shift({x.var}, dim = {self.pick((1, 2))})", "grid", x.dims)
        if r < 0.3 and ch % 4 == 0:
            return self.assign(c, f"spatial_shift({x.var})", "grid", x.dims)
        if r < 0.36:
            return self.assign(c, f'rearrange({x.var}, "b h w c -> b c h w")', "img", (ch, h, w))
        if r < 0.42:
            return self.assign(c, f'rearrange({x.var}, "b h w c -> b (h w) c")', "tok", (h * w, ch))
        if r < 0.46 and h % 2 == 0 and w % 2 == 0:
            if self.uses_vision:
                return self.assign(c, f"{self.label(c, 'merge')}patch_merge({x.var})", "grid", (h // 2, w // 2, 2 * ch))
            return self.assign(c, f'rearrange({x.var}, "b (h h2) (w w2) c -> b h w (w2 h2 c)", h2 = 2, w2 = 2)',
                               "grid", (h // 2, w // 2, 4 * ch))
        if r < 0.5 and self.uses_vision:
            return self.assign(c, f"{self.label(c, 'swin')}swin_block({x.var}, heads = {self.heads(c, ch)}, window = "
                                  f"{self.pick((2, 3, 7))})", "grid", x.dims)
        if r < 0.53:
            return self.assign(c, f"mean({x.var}, dim = [1, 2])", "flat", (ch,))
        return self.common(c, x) or x

    def img_op(self, c: _Ctx, x: T) -> T:
        ch, h, w = x.dims
        r = self.rng.random()
        if not (isinstance(h, int) and isinstance(w, int) and isinstance(ch, int)):
            return self.assign(c, f"{self.label(c, 'bn')}batchnorm({x.var})", "img", x.dims) \
                if isinstance(ch, int) else x
        if r < 0.3:
            k = self.pick((1, 2, 3))
            s = self.pick((1, 1, 2))
            p = self.pick((0, k // 2))
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if oh >= 1 and ow >= 1:
                out = self.pick((8, 16, 24, ch))
                g = self.pick(_divisors(ch, (1, 1, 2, 4)))
                groups = f", groups = {g}" if g > 1 and out % g == 0 else ""
                extra = self.pick(("", "", ", bias = false", ", standardize = true"))
                return self.assign(c, f"{self.label(c, 'conv')}conv2d({x.var}, {self.num(c, out)}, kernel = {k}, "
                                      f"stride = {s}, padding = {p}{groups}{extra})", "img", (out, oh, ow))
        if r < 0.4:
            return self.assign(c, f"{self.label(c, 'bn')}batchnorm({x.var})", "img", x.dims)
        if r < 0.46:
            g = self.pick(_divisors(ch, (1, 2, 4, 8)))
            return self.assign(c, f"{self.label(c, 'gn')}groupnorm({x.var}, groups = {g})", "img", x.dims)
        if r < 0.55 and h >= 2 and w >= 2:
            kind = self.pick(("max", "avg"))
            if self.chance(0.5):
                return self.assign(c, f"{kind}_pool2d({x.var}, kernel = 2)", "img", (ch, h // 2, w // 2))
            return self.assign(c, f"{kind}_pool2d({x.var}, kernel = 3, stride = 1, padding = 1)", "img", x.dims)
        if r < 0.62:
            return self.assign(c, f'rearrange({x.var}, "b c h w -> b h w c")', "grid", (h, w, ch))
        if r < 0.7:
            return self.assign(c, f'rearrange({x.var}, "b c h w -> b (h w) c")', "tok", (h * w, ch))
        if r < 0.74 and self.uses_vision:
            for p in (2, 4):
                if h % p == 0 and w % p == 0:
                    d = self.pick(self.WIDTHS)
                    return self.assign(c, f"{self.label(c, 'pe')}patch_embed({x.var}, patch = {p}, dim = {d})", "tok",
                                       ((h // p) * (w // p), d))
        if r < 0.78:
            return self.assign(c, f"mean({x.var}, dim = [2, 3])", "flat", (ch,))
        if r < 0.85:
            return self.assign(c, f"{x.var} + relu({x.var})", "img", x.dims)
        return self.assign(c, f"{self.label(c, 'act')}silu({x.var})", "img", x.dims)

    def flat_op(self, c: _Ctx, x: T) -> T:
        return self.common(c, x) or x

    def ids_op(self, c: _Ctx, x: T) -> T:
        (s,) = x.dims
        d = self.pick(self.WIDTHS)
        lab = self.label(c, "emb") or "wte: "
        if lab in ("",):
            lab = "wte: "
        c.labels.add(lab[:-2])
        c.params.setdefault("_emb", lab[:-2])
        c.params.setdefault("_emb_dim", d)
        return self.assign(c, f"{lab}embedding({x.var}, {self.pick((10, 50, 100))}, {self.num(c, d)})", "tok",
                           (s, d), var="t")

    # ------------------------------------------------------------------ structure
    def block_call(self, c: _Ctx, x: T) -> T:
        name, args = self.block_for(x)
        lab = self.label(c, "blk")
        if name in self._two:
            self.emit(c, f"{x.var}, {self.fresh(c, 'skip')} = {lab}{name}({x.var}{args})")
            return x
        return self.assign(c, f"{lab}{name}({x.var}{args})", x.kind, x.dims)

    def block_for(self, x: T) -> tuple[str, str]:
        """A shape-preserving block for tensors like ``x`` (made on first use)."""
        key = f"{x.kind}{x.dims}"
        if key in self.block_sigs:
            return self.block_sigs[key]
        self.n_blocks += 1
        name = f"blk{self.n_blocks}_{x.kind}"
        names = {"tok": ("N", "D"), "grid": ("H", "W", "C"), "img": ("C", "H", "W"), "flat": ("D",)}[x.kind]
        ann = "[B, " + ", ".join(names) + "]" if self.chance(0.8) or x.kind != "tok" else "[*, D]"
        last = names[-1] if x.kind != "img" else "C"
        c = _Ctx(params={}, in_block=True)
        c.labels = set()
        t = T("x", x.kind, x.dims)
        self.emit(c, "h = x")
        t = T("h", x.kind, x.dims)
        for _ in range(self.rng.randrange(1, 4)):
            t = self.step(c, t)
        # back to the input's shape
        if t.kind == x.kind and t.dims == x.dims:
            ret = f"x + {t.var}" if self.chance(0.6) else t.var
        elif t.kind == x.kind and t.dims[:-1] == x.dims[:-1] and x.kind != "img":
            ret = f"x + out_proj: linear({t.var}, {last})"
        else:
            c.lines = ["  h = x"]
            ret = f"x + {self.pick(('gelu', 'relu', 'identity'))}(h)"
        two = self.chance(0.2)
        if two:
            self.emit(c, f"return {ret}, x")
        else:
            self.emit(c, f"return {ret}")
        extra = self.pick(("", ", scale: float = 1.0", ", act: str = \"gelu\"", f", width: int = {last} * 2",
                           ", flag: bool = false"))
        body = "\n".join(c.lines)
        self.blocks.append(f"block {name}(x: {ann}{extra}) {{\n{body}\n}}\n")
        call = ""
        if "scale" in extra and self.chance(0.5):
            call = ", scale = 0.5"
        elif "flag" in extra and self.chance(0.5):
            call = ", flag = true"
        if two:
            self._two.add(name)
        self.block_sigs[key] = (name, call)
        return name, call

    def loop(self, c: _Ctx, x: T) -> T:
        var = self.pick(("i", "j", "k"))
        depth = c.params.get("depth")
        hi = "depth" if isinstance(depth, int) and self.chance(0.6) else str(self.rng.randrange(0, 4))
        if self.wild and self.chance(self.wild):
            hi = wild(self.rng, 1)
        lo = "0" if self.chance(0.85) else "1"
        w = c.params.get("widths")
        if isinstance(w, list) and w and self.chance(0.3) and x.kind in ("tok", "flat", "grid"):
            self.emit(c, f"for {var} in 0 .. len(widths) {{")
            c.indent += 1
            self.emit(c, f"{x.var} = stage[{var}].fc: linear({x.var}, widths[{var}])")
            if self.chance(0.5):
                self.emit(c, f"{x.var} = stage[{var}].norm: layernorm({x.var})")
            c.indent -= 1
            self.emit(c, "}")
            return T(x.var, x.kind, (*x.dims[:-1], w[-1]))
        self.emit(c, f"for {var} in {lo} .. {hi} {{")
        c.indent += 1
        c.loop_var = var
        if self.chance(0.6):
            name, args = self.block_for(x)
            lab = f"{self.pick(('blocks', 'layers'))}[{var}]"
            if name in self._two:
                self.emit(c, f"{x.var}, skip = {lab}: {name}({x.var}{args})")
            else:
                dpr = ""
                self.emit(c, f"{x.var} = {lab}: {name}({x.var}{args}{dpr})")
        else:
            lab = f"blocks[{var}].fc"
            d = x.last
            if isinstance(d, int):
                self.emit(c, f"{x.var} = {x.var} + {lab}: linear(gelu({x.var}), {d})")
            else:
                self.emit(c, f"{x.var} = {x.var} * 1.0")
            if self.chance(0.4):
                self.emit(c, f"if {var} % 2 == 0 {{ {x.var} = blocks[{var}].norm: layernorm({x.var}) }}")
        c.loop_var = None
        c.indent -= 1
        self.emit(c, "}")
        return x

    def branch(self, c: _Ctx, x: T) -> T:
        conds = ["flag", "dim > 16", "depth >= 2", "not flag", "act == \"gelu\"", "len(widths) > 1",
                 "dim % 8 == 0 and depth < 3", "true", "false"]
        if c.in_block:
            conds = ["true", "false", f"{x.var}.shape[1] > 2", "1 + 1 == 2"]
        self.emit(c, f"if {self.pick(conds)} {{")
        c.indent += 1
        self.emit(c, f"{x.var} = {x.var} + {self.pick(('gelu', 'relu', 'tanh'))}({x.var})")
        c.indent -= 1
        if self.chance(0.5):
            self.emit(c, f"}} elif {self.pick(conds)} {{")
            c.indent += 1
            self.emit(c, f"{x.var} = {x.var} * 0.5")
            c.indent -= 1
        if self.chance(0.6):
            self.emit(c, "} else {")
            c.indent += 1
            self.emit(c, f"{x.var} = identity({x.var})")
            c.indent -= 1
        self.emit(c, "}")
        return x

    # ------------------------------------------------------------------ a program
    def program(self) -> str:
        rng = self.rng
        dim = self.pick((8, 16, 24, 32))
        params: dict[str, object] = {
            "dim": dim, "depth": rng.randrange(1, 4), "heads": self.pick(_divisors(dim, (1, 2, 4))),
            "flag": self.chance(0.5), "act": self.pick(("gelu", "relu")), "p": self.pick((0.0, 0.1)),
            "widths": [self.pick((8, 16, 24)) for _ in range(rng.randrange(1, 4))],
        }
        entry = self.pick(("tok", "tok", "grid", "img", "img", "flat", "ids"))
        if entry == "img":
            params["img"] = self.pick((4, 8, 12, 16))
        c = _Ctx(params=params)
        ins: list[T] = []
        if entry == "tok":
            n = self.pick((4, 9, 16, "N"))
            decl = f"[B, {n}, dim]"
            ins.append(T("x", "tok", (n if isinstance(n, int) else SYM, dim)))
        elif entry == "grid":
            h = self.pick((4, 6, 8, 14))
            decl = f"[B, {h}, {h}, dim]"
            ins.append(T("x", "grid", (h, h, dim)))
        elif entry == "img":
            decl = f"[B, {self.pick((1, 3))}, img, img]"
            ch = int(decl.split(",")[1])
            ins.append(T("x", "img", (ch, params["img"], params["img"])))
        elif entry == "flat":
            decl = "[B, dim]"
            ins.append(T("x", "flat", (dim,)))
        else:
            decl = f"int[B, {self.pick((8, 'S'))}]"
            s = decl.split(",")[1].strip(" ]")
            ins.append(T("x", "ids", (int(s) if s.isdigit() else SYM,)))
        self.emit(c, f"in x: {decl}")
        if entry == "tok" and self.chance(0.3):
            self.emit(c, "in ctx: [B, 5, dim]")
            ins.append(T("ctx", "tok", (5, dim)))
        c.env = list(ins)
        if self.chance(0.3):
            self.emit(c, "require dim % heads == 0, \"heads divide dim\"")
        if self.chance(0.3):
            self.emit(c, f"k = {self.pick(('dim // heads', 'len(widths) + depth', 'sum(widths[0 .. 1])', 'x.shape[1]', 'max(widths) * 2'))}")
        x = ins[0]
        outs = []
        for _ in range(rng.randrange(2, 9)):
            if self.wild and self.chance(self.wild):
                self.emit(c, self.pick((f"k{rng.randrange(3)} = {wild(rng, 3)}", f"require {wild(rng)}",
                                        f"require {wild(rng)}, \"wild\"")))
            x = self.step(c, x)
            if self.chance(0.08) and len(outs) < 2:
                o = f"feat{len(outs)}"
                self.emit(c, f"out {o} = {x.var}")
                outs.append(o)
        if x.kind == "ids":
            x = self.step(c, x)
        if x.kind == "tok" and "_emb" in params and x.last == params["_emb_dim"] and self.chance(0.7):
            self.emit(c, f"out logits = tied_linear({x.var}, \"{params['_emb']}\")")
        elif isinstance(x.last, int) and self.chance(0.6):
            red = {"tok": f"mean({x.var}, dim = [1])", "grid": f"mean({x.var}, dim = [1, 2])",
                   "img": f"mean({x.var}, dim = [2, 3])", "flat": x.var}[x.kind]
            if x.kind == "tok" and self.chance(0.4):
                red = f"take({x.var}, 0, dim = 1)"
            self.emit(c, f"out logits = head: linear({red}, {self.pick((10, 1000, 2))})" if "head" not in c.labels
                      else f"out logits = {red}")
        else:
            self.emit(c, f"out y = {x.var}")
        ptypes = {"dim": "int", "depth": "int", "heads": "int", "flag": "bool", "act": "str", "p": "float",
                  "widths": "[int]", "img": "int"}

        def lit(v: object) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return f'"{v}"'
            if isinstance(v, list):
                return "[" + ", ".join(map(str, v)) + "]"
            return str(v)

        plist = ", ".join(f"{k}: {ptypes[k]} = {lit(v)}" for k, v in params.items() if k in ptypes)
        name = f"net{rng.randrange(100)}"
        body = "\n".join(c.lines)
        parts = []
        if self.uses_nn:
            parts.append("use std.nn")
        if self.uses_vision:
            parts.append("use std.vision")
        parts += self.blocks
        parts.append(f"arch {name}({plist}) {{\n{body}\n}}\n")
        for v in range(rng.randrange(0, 3)):
            k = self.pick(("depth", "flag", "p", "dim", "heads", "widths"))
            val = {"depth": str(rng.randrange(0, 5)), "flag": self.pick(("true", "false")),
                   "p": "0.2", "dim": str(self.pick((8, 16, 32))), "heads": str(self.pick((1, 2, 3))),
                   "widths": "[8, 8]"}[k]
            taps = ""
            if self.chance(0.3):
                sel = self.pick(('"*"', '"blocks.*.fc"', '"linear:*"', '"head"', '"fc*"', '"attn*"'))
                kind = self.pick((f"lora(r = {self.pick((1, 2, 4))}, alpha = 8)", "bitfit()"))
                taps = f' {{\n  freeze "*"\n  adapt {kind} on {sel}\n  unfreeze "head"\n}}'
            parts.append(f"arch {name}_v{v} = {name}({k} = {val}){taps}\n")
        return "\n".join(parts)


def program(rng: random.Random, wild: float = 0.0) -> str:
    return ProgramGen(rng, wild).program()
