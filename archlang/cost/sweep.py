"""Costs across input sizes: sweeps, growth when the input side doubles, fitted formulas, plots.

Takes: a loaded program, an arch, the size parameter to vary (``img``, ``res``...) and its
values. Produces: one :class:`CostReport` per value, growth ratios per figure, formulas in
the size parameter (exact polynomial interpolation, verified on a further point), and
matplotlib plots. Each value is a fresh elaboration, so window clamping or padding at a
given size is accounted for exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archlang.check import Program, check_spec
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


def fit_formula(prog: Program, arch: str | None, param: str, figure: str, node: str | None = None,
                values: list[int] | None = None, sets: dict[str, Any] | None = None, degree: int = 4, **kw: Any):
    """``figure`` (of ``node``, or in total) as a polynomial in ``param`` and the free sizes.

    Interpolates through ``degree + 1`` sizes and checks the polynomial on one more; raises
    ``ValueError`` when the figure is not a polynomial of that degree over those sizes (the
    structure changes, e.g. a window stops being clamped)."""
    import sympy

    if figure not in FIGURES:
        raise KeyError(f"figure is one of {', '.join(FIGURES)}")
    base = (sets or {}).get(param)
    if values is None:
        if base is None:
            r = check_spec(prog, arch, sets or {})
            base = r.graph.param(param) if r.graph else 1
        values = [base * k for k in range(1, degree + 3)]
    pts = [(v, to_sympy(rep.symbolic(figure, node))) for v, rep in sweep(prog, arch, param, values, sets, **kw)]
    x = sympy.Symbol(param, positive=True, integer=True)
    poly = sympy.expand(sympy.interpolate(pts[:-1], x))
    check_x, check_y = pts[-1]
    if sympy.expand(poly.subs(x, check_x) - check_y) != 0:
        raise ValueError(f"{figure} is not a polynomial of degree <= {len(pts) - 2} in {param} over {values}")
    return sympy.factor(poly)


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
