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

(the last term is 0 for an empty ``C``). Under this formula the choice is a covering
knapsack, the least recompute FLOPs whose savings reach the excess, solved exactly for each
possible value of the max term (ascending thresholds on ``saved(b)``) by dynamic programming
over a Pareto frontier of (bytes saved, FLOPs), which stays small because repeated blocks
have equal figures (a frontier over :data:`MAX_FRONTIER` states is thinned: the result still
fits, but may recompute a little more than the least).

When :meth:`CostReport.training_parts` takes a ``checkpointed`` argument (its schedule
simulation: the recomputation of a block comes when the blocks after it have freed what they
saved, so checkpointing early blocks saves more), that figure decides: the formula's plan is
the start, blocks are added greedily (most bytes saved per FLOP first) until the simulated
peak fits, then dropped (least saved per FLOP first, later blocks first) while it still fits.
That is a heuristic, not an exact optimum: no block of the plan can be left out, but another
set might recompute less.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
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


def additive_peak(rep: CostReport) -> int:
    """The training peak as if everything were live at once: parameters, their gradients and
    AdamW moments, buffers, every byte saved for backward, and the forward's largest
    activation with its attention scores (or the build's high-water mark, when higher). The
    formula's ``peak``: an upper bound on the schedule's."""
    trainable = rep.trainable_params
    nodes = rep.nodes.values()
    # a gradient and AdamW's two moments per trainable parameter, in its dtype
    step = (rep.param_bytes + trainable * 3 * rep.bytes_per + rep.buffer_bytes
            + sum(n.saved_train_bytes for n in nodes)
            + max((n.attention_bytes + n.activation_bytes for n in nodes), default=0))
    return max(step, rep.build_peak_bytes()[0])


def estimated_peak(rep: CostReport, blocks: tuple[str, ...] | frozenset[str],
                   figures: list[BlockFigures] | None = None, simulate: bool | None = None) -> int:
    """The estimated training peak with ``blocks`` checkpointed: the report's own figure when
    it takes a ``checkpointed`` argument (and ``simulate`` is not False), else the formula in
    the module docstring."""
    chosen = frozenset(blocks)
    if simulate is not False and _report_takes_checkpointed():
        return rep.training_parts(checkpointed=chosen)["peak"]  # type: ignore[call-arg]
    base = additive_peak(rep)
    if not chosen:
        return base
    figs = [f for f in (figures or block_figures(rep)) if f.name in chosen]
    return base - sum(f.saving for f in figs) + max((f.saved for f in figs), default=0)


def plan_checkpoints(rep: CostReport, budget: int | None, declared: tuple[str, ...] = (),
                     simulate: bool | None = None) -> CheckpointPlan:
    """The plan with the least recompute FLOPs whose estimated training peak fits ``budget``
    (bytes), always checkpointing ``declared``; with ``budget=None`` just ``declared``. When
    nothing fits, the plan checkpoints every candidate and ``fits`` is False.

    With the formula (``simulate=False``, or a report without a ``checkpointed`` argument)
    the plan is exact. With the report's simulated peak the formula's plan is the start:
    blocks are added (most bytes saved per FLOP first) until it fits, then dropped (least
    saved per FLOP, later blocks first: their recomputation comes when more is live) while
    it still fits, so no block of the plan can be left out."""
    figures = block_figures(rep)
    order = {f.name: i for i, f in enumerate(figures)}
    fixed = frozenset(declared)
    sim = simulate is not False and _report_takes_checkpointed()

    def peak(c: frozenset[str]) -> int:
        return estimated_peak(rep, c, figures, sim)

    before = peak(frozenset())
    chosen = fixed
    if budget is not None and peak(fixed) > budget:
        chosen = _choose(figures, fixed, additive_peak(rep), budget) or frozenset(order)
        if sim:
            chosen = _prune(figures, _repair(figures, chosen, budget, peak), fixed, budget, peak)
    blocks = tuple(sorted(chosen, key=order.__getitem__))
    by_name = {f.name: f for f in figures}
    return CheckpointPlan(
        arch=rep.graph.arch, batch=rep.batch, dtype=rep.dtype, blocks=blocks,
        declared=tuple(b for b in blocks if b in fixed), candidates=len(figures),
        recompute_flops=sum(by_name[b].flops for b in blocks), step_flops=3 * rep.flops,
        peak_before=before, peak_after=peak(frozenset(blocks)), budget=budget)


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


def _efficiency(f: BlockFigures) -> float:
    return f.saving / f.flops if f.flops else float("inf")


def _repair(figures: list[BlockFigures], chosen: frozenset[str], budget: int,
            peak: Callable[[frozenset[str]], int]) -> frozenset[str]:
    """Add blocks, most bytes saved per FLOP first (earlier first), until ``peak`` fits (or all are in)."""
    rest = sorted((f for f in figures if f.name not in chosen), key=lambda f: -_efficiency(f))
    while rest and peak(chosen) > budget:
        chosen = chosen | {rest.pop(0).name}
    return chosen


def _prune(figures: list[BlockFigures], chosen: frozenset[str], fixed: frozenset[str], budget: int,
           peak: Callable[[frozenset[str]], int]) -> frozenset[str]:
    """Drop blocks (not ``fixed`` ones) while ``peak`` still fits: the least bytes saved per
    FLOP first, and of equal ones the later block, until no block can be dropped."""
    if peak(chosen) > budget:
        return chosen
    pos = {f.name: i for i, f in enumerate(figures)}
    order = sorted((f for f in figures if f.name in chosen and f.name not in fixed),
                   key=lambda f: (_efficiency(f), -f.flops, -pos[f.name]))
    changed = True
    while changed:
        changed = False
        for f in order:
            if f.name in chosen and peak(chosen - {f.name}) <= budget:
                chosen = chosen - {f.name}
                changed = True
    return chosen


def fitting_batch(graph: Graph, budget: int, batch: int, dtype: str = "float32",
                  sizes: dict[str, int] | None = None, *, as_written: bool = False) -> int | None:
    """The largest batch below ``batch`` whose training step fits ``budget`` with every
    candidate block checkpointed, or None when even batch 1 does not (a binary search; the
    peak grows with the batch). ``as_written``: every row computed, as a ``keep_dead_rows``
    build does (:func:`archlang.cost.report.cost_graph`); by default the dead rows are pruned."""
    from archlang.cost.report import cost_graph

    everything = tuple(graph.block_instances())
    sizes = {k: v for k, v in (sizes or {}).items() if k != "B"}  # a report's sizes hold its batch

    def fits(b: int) -> bool:
        rep = cost_graph(graph, batch=b, dtype=dtype, train=True, sizes=sizes, as_written=as_written)
        return estimated_peak(rep, everything) <= budget

    lo, hi = 0, batch - 1  # lo fits (0: none known), hi + 1 does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo or None
