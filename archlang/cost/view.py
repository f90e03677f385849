"""Terminal views of a cost report: a hierarchical rich table and a summary.

Takes: a :class:`CostReport` (and optionally growth ratios and a sweep). Produces: rich
renderables in human units (28.29 M, 8.98 GFLOP, 150 KiB) that fit 100 columns.
"""

from __future__ import annotations

from rich.table import Table

from archlang.cost.report import CostReport
from archlang.ir.dims import fmt
from archlang.units import human_bytes, human_count


def table(rep: CostReport, depth: int = 1) -> Table:
    t = Table(title=f"{rep.graph.arch}: batch {rep.batch}, {rep.dtype}, {'training' if rep.train else 'inference'}",
              title_justify="left", header_style="bold", pad_edge=False, expand=False)
    t.add_column("node", overflow="fold", max_width=30)
    t.add_column("params", justify="right")
    t.add_column("FLOPs", justify="right")
    t.add_column("other", justify="right")
    t.add_column("activations", justify="right")
    t.add_column("attention", justify="right")
    if rep.train:
        t.add_column("saved", justify="right")
    for path, f in rep.breakdown(depth):
        indent = "  " * (path.count(".") - sum(p.isdigit() for p in path.split(".")))
        row = [indent + path, human_count(f["params"]), human_count(f["flops"]), human_count(f["other_flops"]),
               human_bytes(f["activation_bytes"]), human_bytes(f["attention_bytes"]) if f["attention_bytes"] else "-"]
        if rep.train:
            row.append(human_bytes(f["saved_bytes"]))
        t.add_row(*row)
    total = ["total", human_count(rep.params), human_count(rep.flops), human_count(rep.other_flops),
             human_bytes(rep.activation_bytes), human_bytes(rep.attention_bytes) if rep.attention_bytes else "-"]
    if rep.train:
        total.append(human_bytes(rep.saved_bytes))
    t.add_section()
    t.add_row(*total, style="bold")
    return t


def summary(rep: CostReport, growth: dict[str, float] | None = None, size_param: str | None = None) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    free = [k for k in rep.free_sizes if k != "B"]
    if free:
        t.add_row("sizes", ", ".join(f"{k} = {rep.sizes[k]}" for k in free)
                  + " (free sizes of the inputs; set them with --size " + f"{free[0]}=...)")
    t.add_row("params", f"{rep.params:,} ({human_count(rep.params)}): {rep.trainable_params:,} trainable, "
                        f"{rep.frozen_params:,} frozen")
    t.add_row("buffers", f"{human_bytes(rep.buffer_bytes)} ({rep.buffer_bytes:,} bytes) registered by the built model "
                         "(position tables, masks, index tables), allocated before any input")
    t.add_row("FLOPs", f"{rep.flops:,} ({human_count(rep.flops, 'FLOP')}) in matmul, conv and attention; "
                       f"+{human_count(rep.other_flops)} elementwise, norm and softmax")
    t.add_row("activations", f"{human_bytes(rep.activation_bytes)} forward"
              + (f"; {human_bytes(rep.saved_bytes)} saved for backward" if rep.train else ""))
    if rep.attention_bytes:
        layers = rep.attention_layers()
        big = max(layers, key=lambda n: n.attention_bytes)
        glob = (f" (one global matrix: {big.attention_global_per_head:,})"
                if big.attention_global_per_head != big.attention_per_head else "")
        t.add_row("attention", f"{human_bytes(rep.attention_bytes)} ({rep.attention_bytes:,} bytes) of attention "
                               f"matrices in {len(layers)} layer{'' if len(layers) == 1 else 's'}; largest `{big.name}`: "
                               f"{big.attention_per_head:,} entries per head{glob}")
    inf, at = rep.peak_inference_bytes()
    if rep.inference_build:  # eval-only: no training step
        packed = (f"{human_bytes(rep.packed_bytes)} packed linear weights" if rep.packed_bytes else
                  "no packed linear weights: oneDNN's copies are made on the CPU in float32 and bfloat16")
        t.add_row("peak memory", f"inference build ~{human_bytes(inf)} (at `{at}`; "
                                 f"{human_bytes(rep.param_bytes + rep.buffer_bytes)} of it parameters and buffers; "
                                 f"{packed})")
    else:
        parts = rep.training_parts()  # simulated forward, backward and AdamW step (docs/memory.md)
        where = {"step": "in the optimizer step", "build": "while the model is built"}.get(
            parts["phase"], f"in {parts['phase']} at `{parts['at']}`")
        t.add_row("peak memory", f"inference ~{human_bytes(inf)} (at `{at}`; {human_bytes(rep.resident_bytes())} of "
                                 f"it parameters and buffers); a training step with AdamW "
                                 f"~{human_bytes(parts['peak'])} (peak {where})")
    t.add_row("formulas", f"FLOPs = {fmt(rep.symbolic('flops'))}; "
                          f"attention bytes = {fmt(rep.symbolic('attention_bytes'))}")
    if growth and size_param:
        g = ", ".join(f"{k.replace('_bytes', '')} x{v:.3g}" for k, v in growth.items() if v == v)
        t.add_row(f"{size_param} x2", g)
    return t


def sweep_table(rows, param: str) -> Table:
    t = Table(title=f"sweep over {param}", title_justify="left", header_style="bold")
    for c in (param, "params", "FLOPs", "activations", "attention", "attention if global", "peak (inference)"):
        t.add_column(c, justify="right")
    for v, rep in rows:
        t.add_row(str(v), human_count(rep.params), human_count(rep.flops), human_bytes(rep.activation_bytes),
                  human_bytes(rep.attention_bytes), human_bytes(rep.attention_global_bytes),
                  human_bytes(rep.peak_inference_bytes()[0]))
    return t
