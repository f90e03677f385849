"""Costs across input sizes: sweeps, growth when the input side doubles, fitted formulas, plots.

Takes: a loaded program, an arch, the size parameter to vary (``img``, ``res``...) and its
values. Produces: one :class:`CostReport` per value, growth ratios per figure, formulas in
the size parameter (exact polynomial interpolation, verified on a further point), and
matplotlib plots. Each value is a fresh elaboration, so window clamping or padding at a
given size is accounted for exactly.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

from archlang.check import Program, check_spec, load_source
from archlang.cost.report import FIGURES, CostReport, cost_graph, to_sympy

SIZE_PARAMS = ("img", "res", "image_size", "size", "seq", "seq_len", "frames")


def size_param(params: dict[str, Any]) -> str | None:
    """The parameter that sets the input size, if the arch has one of the usual names."""
    for name in SIZE_PARAMS:
        if isinstance(params.get(name), int) and not isinstance(params.get(name), bool):
            return name
    return None


def report_at(prog: Program, arch: str | None, sets: dict[str, Any], **kw: Any) -> CostReport:
    r = check_spec(prog, arch, sets)
    if r.graph is None:
        from archlang.diagnostics import render_text

        raise ValueError(render_text([d for d in r.diagnostics if d.is_error], r.program.sources))
    return cost_graph(r.graph, **kw)


def sweep(prog: Program, arch: str | None, param: str, values: list[int], sets: dict[str, Any] | None = None,
          **kw: Any) -> list[tuple[int, CostReport]]:
    return [(v, report_at(prog, arch, {**(sets or {}), param: v}, **kw)) for v in values]


def growth(prog: Program, arch: str | None, param: str, value: int, sets: dict[str, Any] | None = None,
           base: CostReport | None = None, **kw: Any) -> dict[str, float]:
    """Each figure's ratio when the input side doubles (``param`` -> 2 x ``param``); ``base``
    is the report at ``value`` when the caller already has it."""
    a = base if base is not None else report_at(prog, arch, {**(sets or {}), param: value}, **kw)
    b = report_at(prog, arch, {**(sets or {}), param: 2 * value}, **kw)
    out = {}
    for f in ("params", "flops", "activation_bytes", "attention_bytes"):
        x, y = getattr(a, f), getattr(b, f)
        out[f] = (y / x) if x else float("nan")
    return out


class LatticeWarning(UserWarning):
    """A fitted formula holds on the sizes it was fitted at but not between them."""


class FittedFormula:
    """A formula from :func:`fit_formula`: the sympy expression (``.expr``; the object also
    behaves as it in arithmetic, ``sympy.simplify``, ``str`` and ``==``) and what checking it
    off the sampled lattice found.

    - ``lattice_only``: ``True`` when the formula disagrees with the model at ``off_value``,
      a size between the sampled ones that the spec accepts;
    - ``off_value``, ``off_fitted``, ``off_actual``: that size, the formula's value and the
      model's there (evaluated at the report's batch and free sizes); ``None`` when no
      size off the lattice was accepted;
    - ``tried``: the off-lattice sizes tried, ``valid``: those the spec accepted.
    """

    def __init__(self, expr: Any, values: list[int], tried: list[int], valid: list[int],
                 off_value: int | None = None, off_fitted: int | None = None, off_actual: int | None = None):
        self.expr, self.values, self.tried, self.valid = expr, values, tried, valid
        self.off_value, self.off_fitted, self.off_actual = off_value, off_fitted, off_actual

    @property
    def lattice_only(self) -> bool:
        return self.off_value is not None and self.off_fitted != self.off_actual

    @property
    def checked_off_lattice(self) -> bool:
        return self.off_value is not None

    def _sympy_(self) -> Any:
        return self.expr

    def __getattr__(self, name: str) -> Any:  # subs, free_symbols, ... of the expression
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["expr"], name)

    def __str__(self) -> str:
        return str(self.expr)

    def __repr__(self) -> str:
        return f"FittedFormula({self.expr}{', lattice only' if self.lattice_only else ''})"

    def __eq__(self, other: object) -> bool:
        return self.expr == (other.expr if isinstance(other, FittedFormula) else other)

    def __hash__(self) -> int:
        return hash(self.expr)

    def __add__(self, o: Any) -> Any:
        return self.expr + o

    def __radd__(self, o: Any) -> Any:
        return o + self.expr

    def __sub__(self, o: Any) -> Any:
        return self.expr - o

    def __rsub__(self, o: Any) -> Any:
        return o - self.expr

    def __mul__(self, o: Any) -> Any:
        return self.expr * o

    def __rmul__(self, o: Any) -> Any:
        return o * self.expr

    def __truediv__(self, o: Any) -> Any:
        return self.expr / o

    def __neg__(self) -> Any:
        return -self.expr


def _off_lattice(values: list[int], limit: int = 16) -> list[int]:
    """Sizes between the sampled ones, most likely to be accepted first: the first midpoint,
    the first sample plus each power of two below the step, the other midpoints, then every
    size in the first step; at most ``limit``."""
    vals = sorted(set(values))
    if len(vals) < 2:
        return []
    lo, step = vals[0], vals[1] - vals[0]
    mids = [(a + b) // 2 for a, b in pairwise(vals) if (a + b) % 2 == 0]
    out: list[int] = mids[:1]
    g = 1 << ((step - 1).bit_length() - 1) if step > 1 else 0
    while g >= 1:
        out.append(lo + g)
        g //= 2
    out += mids[1:] + list(range(lo + 1, lo + step))
    seen: set[int] = set()
    cands = [v for v in out if vals[0] < v < vals[-1] and v not in vals and not (v in seen or seen.add(v))]
    return cands[:limit]


def fit_formula(prog: Program | str | Path, arch: str | None, param: str, figure: str, node: str | None = None,
                values: list[int] | None = None, sets: dict[str, Any] | None = None, degree: int = 4,
                check_off_lattice: bool = True, **kw: Any) -> FittedFormula:
    """``figure`` (of ``node``, or in total) as a polynomial in ``param`` and the free sizes.

    Interpolates through ``degree + 1`` sizes and checks the polynomial on one more; raises
    ``ValueError`` when the figure is not a polynomial of that degree over those sizes (the
    structure changes, e.g. a window stops being clamped). The sizes are a lattice (by
    default multiples of the default), and a figure can be a polynomial on it and not
    between (Swin at multiples of 224 has whole windows; at 384 they are padded): so the
    formula is also checked at a size off the lattice that the spec accepts, and when it
    disagrees there a :class:`LatticeWarning` says so and the result's ``lattice_only`` is
    true. The result is a :class:`FittedFormula`, usable as the sympy expression. ``prog`` is a
    loaded program or a spec (a path, or source text)."""
    import warnings

    import sympy

    if not isinstance(prog, Program):
        prog = load_source(prog)

    if figure not in FIGURES:
        raise KeyError(f"figure is one of {', '.join(FIGURES)}")
    base = (sets or {}).get(param)
    if values is None:
        if base is None:
            r = check_spec(prog, arch, sets or {})
            base = r.graph.param(param) if r.graph else 1
        values = [base * k for k in range(1, degree + 3)]
    rows = sweep(prog, arch, param, values, sets, **kw)
    pts = [(v, to_sympy(rep.symbolic(figure, node))) for v, rep in rows]
    x = sympy.Symbol(param, positive=True, integer=True)
    poly = sympy.expand(sympy.interpolate(pts[:-1], x))
    check_x, check_y = pts[-1]
    if sympy.expand(poly.subs(x, check_x) - check_y) != 0:
        raise ValueError(f"{figure} is not a polynomial of degree <= {len(pts) - 2} in {param} over {values}")
    out = FittedFormula(sympy.factor(poly), list(values), [], [])
    if not check_off_lattice:
        return out
    for v in _off_lattice(list(values)):
        out.tried.append(v)
        r = check_spec(prog, arch, {**(sets or {}), param: v})
        if r.graph is None:
            continue
        rep = cost_graph(r.graph, **kw)
        if node is not None and node not in rep.nodes:
            continue
        out.valid.append(v)
        at = {sympy.Symbol(k, positive=True, integer=True): n for k, n in rep.sizes.items()}
        out.off_value = v
        out.off_fitted = int(sympy.expand(poly.subs(x, v)).subs(at))
        out.off_actual = int(to_sympy(rep.symbolic(figure, node)).subs(at))
        break
    what = f"{figure}{f' of `{node}`' if node else ''} of {rows[0][1].graph.arch}"
    if out.lattice_only:
        assert out.off_fitted is not None and out.off_actual is not None
        err = (out.off_fitted - out.off_actual) / out.off_actual if out.off_actual else float("inf")
        warnings.warn(f"the formula for {what} fitted at {param} = {', '.join(map(str, values))} holds only on "
                      f"those sizes: at {param} = {out.off_value} (which the spec accepts) it gives "
                      f"{out.off_fitted:,} but the model has {out.off_actual:,} ({err:+.1%}); the figure is not "
                      f"one polynomial in {param} (e.g. windows are padded, clamped or rounded at some sizes)",
                      LatticeWarning, stacklevel=2)
    elif out.tried and not out.checked_off_lattice:
        warnings.warn(f"the formula for {what} fitted at {param} = {', '.join(map(str, values))} could not be "
                      f"checked between those sizes: the spec accepts none of {param} = "
                      f"{', '.join(map(str, out.tried))}; it may hold only on the sampled sizes",
                      LatticeWarning, stacklevel=2)
    return out


def plot(rows: list[tuple[int, CostReport]], param: str, path: str | Path,
         figures: tuple[str, ...] = ("attention_bytes", "attention_global_bytes")) -> Path:
    """Figure-versus-size curves on shared log axes (default: windowed vs global attention)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"attention_bytes": "attention matrices (as built)",
              "attention_global_bytes": "attention matrices if every layer were global",
              "activation_bytes": "activations", "flops": "FLOPs", "params": "parameters"}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [v for v, _ in rows]
    for f in figures:
        ys = [getattr(r, f) for _, r in rows]
        if any(ys):
            ax.plot(xs, ys, marker="o", label=labels.get(f, f))
    arch = rows[0][1].graph.arch if rows else ""
    ax.set_xlabel(param)
    ax.set_ylabel("bytes" if any("bytes" in f for f in figures) else "count")
    ax.set_yscale("log")
    ax.set_title(f"{arch}: cost versus {param} (batch {rows[0][1].batch}, {rows[0][1].dtype})" if rows else "")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
