"""The activation-checkpoint planner: which block instances to recompute so a training step fits.

Takes: a training :class:`~archlang.cost.report.CostReport` (any report: the training peak is
always computed) and a budget in bytes, and optionally block instances that must be
checkpointed anyway (the spec's ``checkpoint "..."`` statements). Produces: a frozen
:class:`CheckpointPlan`: the block instances to checkpoint (in graph order), the FLOPs their
recomputation costs (and its share of the step), and the estimated training peak before and
after. No torch here.

The candidates are :meth:`Graph.block_instances` (the outermost repeated block instances,
which the generated module can run under ``torch.utils.checkpoint``). Checkpointing instance
``b`` drops the bytes its nodes save for backward, keeps its input tensors instead (the
checkpoint holds them), and costs one more forward of ``b`` in backward, during which ``b``'s
saved tensors are live again. So the estimated peak of checkpointing the set ``C`` is::

    peak(C) = peak - sum(saved(b) - inputs(b) for b in C) + max(saved(b) for b in C)

(the last term is 0 for an empty ``C``). When :meth:`CostReport.training_parts` takes a
``checkpointed`` argument (a schedule-simulating estimate), that figure is used instead, to
check the plan and as the reported peak.

The choice is a covering knapsack: the least recompute FLOPs whose savings reach the excess.
It is solved exactly for each possible value of the max term (ascending thresholds on
``saved(b)``) by dynamic programming over a Pareto frontier of (bytes saved, FLOPs), which
stays small because repeated blocks have equal figures; a frontier over
:data:`MAX_FRONTIER` states is thinned (the result still fits, but may then recompute a
little more than the least). The plan is then checked against the report, and blocks are
added greedily (most bytes saved per FLOP first) until it fits, should the check disagree.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from archlang.cost.report import CostReport
    from archlang.ir.graph import Graph

MAX_FRONTIER = 4096


@dataclass(frozen=True)
class BlockFigures:
    """What checkpointing one block instance changes: ``saved`` (bytes its nodes save for
    backward), ``inputs`` (bytes of its input tensors, which the checkpoint keeps) and
    ``flops`` (one more forward of it)."""

    name: str
    saved: int
    inputs: int
    flops: int

    @property
    def saving(self) -> int:
        return self.saved - self.inputs


@dataclass(frozen=True)
class CheckpointPlan:
    """Block instances to activation-checkpoint in a training step, and what that does.

    ``blocks``: the instances, in graph order (``declared`` ones, from the spec, included);
    ``recompute_flops``: the FLOPs their second forward costs; ``step_flops``: a step's
    FLOPs without it (forward plus backward, 3x the forward); ``peak_before`` and
    ``peak_after``: the estimated training peak without and with the plan; ``budget``: the
    bytes it was planned for (``None`` for a plan that only applies the spec's statements).
    """

    arch: str
    batch: int
    dtype: str
    blocks: tuple[str, ...]
    declared: tuple[str, ...]
    candidates: int
    recompute_flops: int
    step_flops: int
    peak_before: int
    peak_after: int
    budget: int | None

    @property
    def fits(self) -> bool:
        return self.budget is None or self.peak_after <= self.budget

    @property
    def recompute_share(self) -> float:
        """Recompute FLOPs as a fraction of the step's (0.05 = 5%)."""
        return self.recompute_flops / self.step_flops if self.step_flops else 0.0

    def summary(self) -> str:
        """Lines for ``archc build``: which blocks, what they cost, the new peak."""
        from archlang.units import human_bytes

        budget = f" of {human_bytes(self.budget)}" if self.budget is not None else ""
        if not self.blocks:
            return (f"checkpoint plan: none needed; the training step's estimated peak at batch {self.batch} is "
                    f"{human_bytes(self.peak_after)}{budget}")
        return "\n".join([
            f"checkpoint plan: {len(self.blocks)} of {self.candidates} block instances "
            f"({_compact(self.blocks)})",
            f"  recompute: {_flops(self.recompute_flops)} FLOPs per step, {100 * self.recompute_share:.1f}% of "
            f"the step's {_flops(self.step_flops)}",
            f"  estimated training peak at batch {self.batch}: {human_bytes(self.peak_before)} -> "
            f"{human_bytes(self.peak_after)}{budget}",
        ])


def _flops(n: int) -> str:
    for unit, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _compact(names: tuple[str, ...]) -> str:
    """``blocks.0-8, layers.1.downsample``: runs of consecutive indexes written as ranges."""
    out: list[str] = []
    run: tuple[str, int, int] | None = None
    for n in names:
        pre, _, last = n.rpartition(".")
        if last.isdigit() and run is not None and run[0] == pre and run[2] + 1 == int(last):
            run = (pre, run[1], int(last))
            continue
        if run is not None:
            out.append(_run_text(run))
        run = (pre, int(last), int(last)) if last.isdigit() and pre else None
        if run is None:
            out.append(n)
    if run is not None:
        out.append(_run_text(run))
    return ", ".join(out)


def _run_text(run: tuple[str, int, int]) -> str:
    pre, a, b = run
    return f"{pre}.{a}" if a == b else f"{pre}.{a}-{b}"


def resolve(graph: Graph, patterns: tuple[str, ...] | list[str] | None = None) -> tuple[str, ...]:
    """The block instances (:meth:`Graph.block_instances`) that the globs ``patterns`` match
    (default: the graph's own ``checkpoint`` statements), in graph order."""
    pats = graph.checkpoint if patterns is None else tuple(patterns)
    if not pats:
        return ()
    return tuple(b for b in graph.block_instances() if any(fnmatchcase(b, p) for p in pats))


def block_figures(rep: CostReport) -> list[BlockFigures]:
    """The figures of every candidate block instance of the report's graph, in graph order."""
    g = rep.graph
    cands = g.block_instances()
    index = {c: i for i, c in enumerate(cands)}
    saved = [0] * len(cands)
    flops = [0] * len(cands)
    owner: dict[str, int | None] = {}
    for n in g.nodes:
        sc = n.scope
        if not sc:
            continue
        k = owner.get(sc, -1)
        if k == -1:
            k = next((index[sc[:i]] for i, c in enumerate(sc) if c == "." and sc[:i] in index), index.get(sc))
            owner[sc] = k
        if k is None:
            continue
        nc = rep.nodes[n.name]
        saved[k] += nc.saved_train_bytes
        flops[k] += nc.flops
    scopes = {s.path: s for s in g.scopes}
    out = []
    for i, c in enumerate(cands):
        ins = sum(_numel(g.type_of(r).shape, rep.sizes) for r in scopes[c].inputs) * rep.bytes_per
        out.append(BlockFigures(name=c, saved=saved[i], inputs=ins, flops=flops[i]))
    return out


def _numel(shape: tuple, sizes: dict[str, int]) -> int:
    from archlang.cost.report import _eval

    n = 1
    for d in shape:
        n *= _eval(d, sizes)
    return n


def _report_takes_checkpointed() -> bool:
    from archlang.cost.report import CostReport

    return "checkpointed" in inspect.signature(CostReport.training_parts).parameters


def estimated_peak(rep: CostReport, blocks: tuple[str, ...] | frozenset[str],
                   figures: list[BlockFigures] | None = None) -> int:
    """The estimated training peak with ``blocks`` checkpointed: the report's own figure when
    it takes a ``checkpointed`` argument, else the formula in the module docstring."""
    chosen = frozenset(blocks)
    if _report_takes_checkpointed():
        return rep.training_parts(checkpointed=chosen)["peak"]  # type: ignore[call-arg]
    base = rep.training_parts()["peak"]
    if not chosen:
        return base
    figs = [f for f in (figures or block_figures(rep)) if f.name in chosen]
    return base - sum(f.saving for f in figs) + max((f.saved for f in figs), default=0)


def plan_checkpoints(rep: CostReport, budget: int | None, declared: tuple[str, ...] = ()) -> CheckpointPlan:
    """The plan with the least recompute FLOPs whose estimated training peak fits ``budget``
    (bytes), always checkpointing ``declared``; with ``budget=None`` just ``declared``. When
    nothing fits, the plan checkpoints every candidate and ``fits`` is False."""
    figures = block_figures(rep)
    order = {f.name: i for i, f in enumerate(figures)}
    fixed = frozenset(declared)
    before = estimated_peak(rep, (), figures)
    chosen = fixed
    if budget is not None and estimated_peak(rep, tuple(fixed), figures) > budget:
        chosen = _choose(figures, fixed, before, budget) or frozenset(order)
        chosen = _repair(rep, figures, chosen, budget)
    blocks = tuple(sorted(chosen, key=order.__getitem__))
    by_name = {f.name: f for f in figures}
    return CheckpointPlan(
        arch=rep.graph.arch, batch=rep.batch, dtype=rep.dtype, blocks=blocks,
        declared=tuple(b for b in blocks if b in fixed), candidates=len(figures),
        recompute_flops=sum(by_name[b].flops for b in blocks), step_flops=3 * rep.flops,
        peak_before=before, peak_after=estimated_peak(rep, blocks, figures), budget=budget)


def _choose(figures: list[BlockFigures], fixed: frozenset[str], before: int, budget: int) -> frozenset[str] | None:
    """Least-FLOPs set (with ``fixed``) whose formula peak fits, or None when none does."""
    best: tuple[int, int, frozenset[str]] | None = None
    fixed_figs = [f for f in figures if f.name in fixed]
    free = [f for f in figures if f.name not in fixed and f.saving > 0]
    fixed_saving = sum(f.saving for f in fixed_figs)
    fixed_max = max((f.saved for f in fixed_figs), default=0)
    for m in sorted({fixed_max, *(f.saved for f in free if f.saved >= fixed_max)}):
        need = before - budget + m - fixed_saving  # bytes the free blocks must still save
        items = [f for f in free if f.saved <= m]
        picked = _cover(items, need)
        if picked is None:
            continue
        cost = sum(f.flops for f in picked)
        cand = (cost, len(picked), fixed | {f.name for f in picked})
        if best is None or cand[:2] < best[:2]:
            best = cand
    return best[2] if best is not None else None


def _cover(items: list[BlockFigures], need: int) -> list[BlockFigures] | None:
    """The items of least total FLOPs whose savings sum to at least ``need`` (None if even all
    fall short): DP over the Pareto frontier of (capped bytes, FLOPs)."""
    if need <= 0:
        return []
    if sum(f.saving for f in items) < need:
        return None
    # state: capped bytes -> (flops, count, chosen indexes as a tuple)
    front: dict[int, tuple[int, int, tuple[int, ...]]] = {0: (0, 0, ())}
    for i, f in enumerate(items):
        nxt = dict(front)
        for b, (c, k, ch) in front.items():
            nb = min(need, b + f.saving)
            cand = (c + f.flops, k + 1, (*ch, i))
            old = nxt.get(nb)
            if old is None or cand[:2] < old[:2]:
                nxt[nb] = cand
        front = _pareto(nxt)
    hit = front.get(need)
    return [items[i] for i in hit[2]] if hit is not None else None


def _pareto(states: dict[int, tuple[int, int, tuple[int, ...]]]) -> dict[int, tuple[int, int, tuple[int, ...]]]:
    """Drop states that save fewer bytes for no fewer FLOPs; thin to MAX_FRONTIER states."""
    out: dict[int, tuple[int, int, tuple[int, ...]]] = {}
    best: tuple[int, int] | None = None
    for b in sorted(states, reverse=True):
        s = states[b]
        if best is None or s[:2] < best:
            out[b] = s
            best = s[:2]
    if len(out) > MAX_FRONTIER:
        keys = sorted(out)
        step = len(keys) / MAX_FRONTIER
        keep = {keys[int(j * step)] for j in range(MAX_FRONTIER)} | {keys[-1]}
        out = {b: out[b] for b in keep}
    return out


def _repair(rep: CostReport, figures: list[BlockFigures], chosen: frozenset[str], budget: int) -> frozenset[str]:
    """Add blocks, most bytes saved per FLOP first, until the report's peak fits (or all are in)."""
    rest = sorted((f for f in figures if f.name not in chosen),
                  key=lambda f: -(f.saving / f.flops if f.flops else float("inf")))
    while estimated_peak(rep, tuple(chosen), figures) > budget and rest:
        chosen = chosen | {rest.pop(0).name}
    return chosen


def fitting_batch(graph: Graph, budget: int, batch: int, dtype: str = "float32",
                  sizes: dict[str, int] | None = None) -> int | None:
    """The largest batch below ``batch`` whose training step fits ``budget`` with every
    candidate block checkpointed, or None when even batch 1 does not (a binary search; the
    peak grows with the batch)."""
    from archlang.cost.report import CostReport

    everything = tuple(graph.block_instances())
    sizes = {k: v for k, v in (sizes or {}).items() if k != "B"}  # a report's sizes hold its batch

    def fits(b: int) -> bool:
        rep = CostReport(graph, batch=b, dtype=dtype, train=True, sizes=sizes)
        return estimated_peak(rep, everything) <= budget

    lo, hi = 0, batch - 1  # lo fits (0: none known), hi + 1 does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo or None
