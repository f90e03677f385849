"""The multi-head attention layers with their own projections: global/causal
self-attention, Conformer's relative-position attention, cross-attention, Swin (V1 and V2)
window attention, local neighbourhood attention and MViT's pooled attention.

Takes: nothing at import but the rule kits of each stage. Produces: the rules (language
signature, shape, cost, lowering, drawing, interpreter) of :class:`~archlang.ir.ops.Attention`, :class:`~archlang.ir.ops.RelPosAttention`,
:class:`~archlang.ir.ops.CrossAttention`, :class:`~archlang.ir.ops.WindowAttention`,
:class:`~archlang.ir.ops.WindowAttentionV2`, :class:`~archlang.ir.ops.LocalAttention` and
:class:`~archlang.ir.ops.PooledAttention`, registered with
:func:`archlang.ops.registry.define`. The op classes stay in :mod:`archlang.ir.ops` (the
stages and interop refer to them there); helpers several rules of a stage share stay in
that stage's module, its rule kit (the attention cost kit, the interpreter's attention and
window helpers). ``attend`` (scaled dot-product attention on given q, k, v) is
:mod:`archlang.ops.attention`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from archlang.check.shapes import ShapeError, expect_attn_input, expect_equal, expect_rank
from archlang.check.surface import ATTN_ARGS, Arg, BuildError, attn_common, const_dim, last_dim, op, pair
from archlang.cost.rules import (
    OpCost,
    attn_core,
    explicit_probs,
    local_halo_axis,
    m,
    math_saved,
    proj_cost,
    s,
    sdpa_cost,
    sum_costs,
)
from archlang.ir import ops as O
from archlang.ir.dims import fmt
from archlang.ir.types import TensorType
from archlang.lower.rules import ATTN_COMMON, ATTN_DEFAULTS, ATTN_WINDOW, Rule, call, call_module, kwargs_of
from archlang.ops.registry import define
from archlang.render import rules as render
from archlang.render.rules import Look, heads_label, square

if TYPE_CHECKING:
    import ast

    from torch import Tensor

    from archlang.lower.interpret import EvalCtx
    from archlang.lower.rules import Ctx


# --------------------------------------------------------------------------- signatures


@op("attention", ("x",), (*ATTN_ARGS, Arg("causal", "bool", False)),
    "Multi-head self-attention over [B, N, C] (global, or causal), fused qkv, SDPA.")
def _attention_signature(ctx, ins, a):
    return O.Attention(**attn_common(ctx, last_dim(ctx, ins[0], "attention"), a), causal=a["causal"])


@op("cross_attention", ("x", "context"), ATTN_ARGS,
    "Queries from x [B, N, C]; keys/values from context [B, M, Ck].")
def _cross_signature(ctx, ins, a):
    c = attn_common(ctx, last_dim(ctx, ins[0], "cross_attention"), a)
    return O.CrossAttention(**c, context_dim=last_dim(ctx, ins[1], "cross_attention context"))


@op("window_attention", ("x",), (*ATTN_ARGS, Arg("window", "int", min=1), Arg("shift", "int", 0, min=0)),
    "Swin (shifted-)window attention on [B, H, W, C] with a relative position bias.")
def _window_signature(ctx, ins, a):
    x = ins[0]
    if x.rank != 4:
        raise BuildError("E0302", f"window_attention expects [B, H, W, C], got {x}")
    h = const_dim(ctx, x.shape[1], "the grid height of window_attention")
    w = const_dim(ctx, x.shape[2], "the grid width of window_attention")
    win, shift = a["window"], a["shift"]
    if win <= 0:
        raise BuildError("E0406", f"window must be positive, got {win}", arg="window")
    if not 0 <= shift < win:
        raise BuildError("E0406", f"shift must be in 0 .. window-1 = {win - 1}, got {shift}", arg="shift")
    # The Swin clamping rule (as in the reference and timm): a window as large as the grid
    # covers it entirely, so it shrinks to the grid and there is nothing to shift.
    wins, shifts = [], []
    for g in (h, w):
        if g <= win:
            wins.append(g)
            shifts.append(0)
        else:
            wins.append(win)
            shifts.append(shift)
    if (wins[0] != win or wins[1] != win) or (shift and shifts != [shift, shift]):
        ctx.notes.append(("W0501", f"window {win} covers the whole {h}x{w} grid of `{ctx.node_name}`: "
                          f"window -> {wins[0]}x{wins[1]}, shift {shift} -> {shifts[0]}",
                          "Swin's rule (and timm's): a window that covers the whole grid has nothing to shift; "
                          "expected in the last stage, nothing to change"))
    pad = tuple((ww - g % ww) % ww for g, ww in zip((h, w), wins, strict=True))
    if any(pad):
        ctx.notes.append(("W0502", f"window {wins[0]}x{wins[1]} does not divide the {h}x{w} grid of "
                          f"`{ctx.node_name}`: padded to {h + pad[0]}x{w + pad[1]} (bottom/right), as timm does",
                          "pick a window that divides every stage's grid to avoid padding"))
    return O.WindowAttention(**attn_common(ctx, last_dim(ctx, x, "window_attention"), a), window=tuple(wins),
                             shift=tuple(shifts), grid=(h, w), pad=pad)


@op("local_attention", ("x",), (*ATTN_ARGS, Arg("kernel", "int", min=1)),
    "Stand-alone self-attention on [B, H, W, C] over each pixel's kernel x kernel neighbourhood.")
def _local_signature(ctx, ins, a):
    if ins[0].rank != 4:
        raise BuildError("E0302", f"local_attention expects [B, H, W, C], got {ins[0]}")
    if a["kernel"] <= 0 or a["kernel"] % 2 == 0:
        raise BuildError("E0406", f"kernel must be a positive odd size, got {a['kernel']}", arg="kernel")
    return O.LocalAttention(**attn_common(ctx, last_dim(ctx, ins[0], "local_attention"), a), kernel=a["kernel"])


@op("pooled_attention", ("x",), (Arg("heads", "int", min=1), Arg("grid", "ints", min=1),
                                 Arg("dim_out", "int", 0, min=0), Arg("cls", "int", 0, min=0),
                                 Arg("kernel_q", "pair", 3, min=1), Arg("stride_q", "pair", 1, min=1),
                                 Arg("kernel_kv", "pair", 3, min=1), Arg("stride_kv", "pair", 1, min=1),
                                 Arg("qkv_bias", "bool", True), Arg("residual_pooling", "bool", True),
                                 Arg("rel_pos", "bool", True)),
    "MViTv2 pooling attention on [B, cls + H*W, C] tokens laid out on `grid`.")
def _pooled_signature(ctx, ins, a):
    dim = last_dim(ctx, ins[0], "pooled_attention")
    dim_out = a["dim_out"] or dim
    if len(a["grid"]) != 2:
        raise BuildError("E0406", f"grid is [H, W], got {list(a['grid'])}", arg="grid")
    if dim_out % a["heads"]:
        raise BuildError("E0503", f"{a['heads']} heads do not divide the width {dim_out}",
                         help=ctx.describe_arg("heads"), arg="heads")
    return O.PooledAttention(dim=dim, dim_out=dim_out, heads=a["heads"], grid=pair(tuple(a["grid"])), cls=a["cls"],
                             kernel_q=pair(a["kernel_q"]), stride_q=pair(a["stride_q"]),
                             kernel_kv=pair(a["kernel_kv"]), stride_kv=pair(a["stride_kv"]),
                             qkv_bias=a["qkv_bias"], residual_pooling=a["residual_pooling"], rel_pos=a["rel_pos"])


@op("rel_pos_attention", ("x",), ATTN_ARGS,
    "Self-attention with Transformer-XL relative positional encoding (Conformer's MHSA).")
def _rel_pos_attention_signature(ctx, ins, a):
    return O.RelPosAttention(**attn_common(ctx, last_dim(ctx, ins[0], "rel_pos_attention"), a))


@op("window_attention_v2", ("x",), (*ATTN_ARGS, Arg("window", "int"), Arg("shift", "int", 0)),
    "Swin-V2 (shifted-)window attention: cosine attention, learned logit scale, continuous position bias.")
def _window_v2_signature(ctx, ins, a):
    v1 = _window_signature(ctx, ins, a)
    return O.WindowAttentionV2(**v1.model_dump(exclude={"op"}))


# --------------------------------------------------------------------------- shape rules


def _attention_shape(op: O.Attention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    x = ins[0]
    expect_attn_input(op, x, 3, "attention ([B, N, C])")
    if not op.queries:
        return (x,)
    n = x.shape[1]
    if not isinstance(n, int) or op.queries > n:
        raise ShapeError("E0301", f"attention of the first {op.queries} queries needs at least as many tokens, "
                         f"got {fmt(n)}")
    return (TensorType(shape=(x.shape[0], op.queries, x.shape[2]), dtype=x.dtype),)


def _rel_pos_shape(op: O.RelPosAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    expect_attn_input(op, ins[0], 3, "rel_pos_attention ([B, T, C])")
    return (ins[0],)


def _cross_shape(op: O.CrossAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    x, ctx = ins
    expect_attn_input(op, x, 3, "cross_attention ([B, N, C])")
    expect_rank(ctx, 3, "cross_attention context ([B, M, C])", 1)
    expect_equal(ctx.shape[0], x.shape[0], f"cross_attention: batch {fmt(x.shape[0])} vs context batch {fmt(ctx.shape[0])}",
        "the queries `x` and the keys/values `context` must come from the same batch: dim 0 of both must agree",
        i=1)
    expect_equal(ctx.shape[2], op.context_dim, f"context width {fmt(ctx.shape[2])} != {op.context_dim}", i=1)
    return (x,)


def _window_shape(op: O.WindowAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_attn_input(op, x, 4, "window_attention ([B, H, W, C])")
    expect_equal(x.shape[1], op.grid[0], f"window_attention built for a {op.grid[0]}-high grid, got {fmt(x.shape[1])}")
    expect_equal(x.shape[2], op.grid[1], f"window_attention built for a {op.grid[1]}-wide grid, got {fmt(x.shape[2])}")
    for g, p, w in zip(op.grid, op.pad, op.window, strict=True):
        if (g + p) % w:
            raise ShapeError("E0501", f"window {w} does not divide the padded grid {g + p}")
    return (x,)


def _local_shape(op: O.LocalAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    expect_attn_input(op, ins[0], 4, "local_attention ([B, H, W, C])")
    return (ins[0],)


def _pooled_shape(op: O.PooledAttention, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_rank(x, 3, "pooled_attention ([B, N, C])")
    expect_equal(x.shape[2], op.dim, f"pooled_attention expects width {op.dim}, got {fmt(x.shape[2])}")
    want = op.cls + op.grid[0] * op.grid[1]
    expect_equal(x.shape[1], want, f"pooled_attention on a {op.grid[0]}x{op.grid[1]} grid (+{op.cls}) expects "
        f"{want} tokens, got {fmt(x.shape[1])}")
    qh, qw = op.out_grid()
    return (TensorType(shape=(x.shape[0], op.cls + qh * qw, op.dim_out)),)


# --------------------------------------------------------------------------- cost rules


def _attention_cost(op: O.Attention, ins, outs) -> OpCost:
    b, n, c = ins[0].shape
    nq = op.queries or n  # queries > 0: the first tokens attend, every token is a key and a value
    rows = m(b, n)
    rows_q = m(b, nq) if op.queries else rows
    out = sum_costs(proj_cost(rows, c, 3 * op.inner, op.qkv_bias), attn_core(b, op.heads, nq, n, op.head_dim),
               proj_cost(rows_q, op.inner, c, op.proj_bias))
    # SDPA's output is laid out [B, N, heads, head_dim]: the projection's input is a view of it
    # queries > 0: q is a view of the whole qkv output, so its left-out rows stay allocated with it
    sdpa_cost(out, rows_q, rows, op.inner, op.heads, m(b, op.heads, nq, n), op.attn_drop, op.attn_drop > 0,
              extra=m(b, n - nq, op.inner) if op.queries else 0, lengths=(nq, n))
    if op.queries and isinstance(c, int):
        out.grad_temp = _prefix_grad_temp(op, b, n, nq, c)
    out.weight_inputs = (0,)
    return out


def _prefix_grad_temp(op: O.Attention, b: Any, n: int, nq: int, c: int) -> Any:
    """The backward temporaries of an attention of the first ``nq`` of ``n`` queries, beside its
    input's gradient (which the schedule counts), measured against the profiler in three
    moments (per sample, in elements; R = n * inner, the qkv output's part for each of q, k, v):
    SDPA's backward, with its saved q, k, v views of the qkv output still held, allocates the
    projection input's gradient and those of q, k and v (``2 nq inner + 2 R``); it then frees
    what it saved (``3 R + nq inner + nq heads``: the whole qkv output, the output, the
    log-sum-exp) before q's gradient is padded to every token and the three are stacked for the
    qkv layer (``3 R + 3 R``); the qkv layer's backward then returns the input's gradient
    (``n c``) beside the stack. The largest, less the input's gradient."""
    r, rq, lse = n * op.inner, nq * op.inner, nq * op.heads
    released = 3 * r + rq + lse
    moments = (2 * rq + 2 * r, 6 * r - released, n * c + 3 * r - released)
    return m(b, max(0, max(moments) - n * c))


def _cross_cost(op: O.CrossAttention, ins, outs) -> OpCost:
    b, n, c = ins[0].shape
    _, k_len, ck = ins[1].shape
    inner = op.heads * op.head_dim
    out = sum_costs(proj_cost(m(b, n), c, inner, op.qkv_bias), proj_cost(m(b, k_len), ck, 2 * inner, op.qkv_bias),
               attn_core(b, op.heads, n, k_len, op.head_dim), proj_cost(m(b, n), inner, c, op.proj_bias))
    sdpa_cost(out, m(b, n), m(b, k_len), inner, op.heads, m(b, op.heads, n, k_len), op.attn_drop, op.attn_drop > 0,
              lengths=(n, k_len))
    out.weight_inputs = (0, 1)
    return out


def _window_cost(op: O.WindowAttention, ins, outs) -> OpCost:
    b = ins[0].shape[0]
    hp, wp = op.grid[0] + op.pad[0], op.grid[1] + op.pad[1]
    n = op.window[0] * op.window[1]
    n_win = (hp // op.window[0]) * (wp // op.window[1])
    rows = m(b, hp * wp)
    core = attn_core(m(b, n_win), op.heads, n, n, op.head_dim)
    core.attn_per_head = n_win * n * n
    core.attn_global_per_head = (op.grid[0] * op.grid[1]) ** 2
    out = sum_costs(proj_cost(rows, op.dim, 3 * op.inner, op.qkv_bias), core, proj_cost(rows, op.inner, op.dim, op.proj_bias))
    # the additive mask (relative position bias, plus the shift mask per window) is kept once,
    # broadcast over the batch
    mask = op.heads * n * n * (n_win if any(op.shift) else 1)
    # the mask needs a gradient (the bias table is a parameter): the CPU takes SDPA's math path
    sdpa_cost(out, rows, rows, op.inner, op.heads, core.attn_entries, op.attn_drop, True, mask, lengths=(n, n))
    out.saved_cpu = math_saved(rows, rows, op.inner, core.attn_entries, op.attn_drop, op.heads)
    out.weight_inputs = (0,)
    # buffers: relative_position_index [n, n] (int64) and, for shifted windows, attn_mask
    # [windows, n, n] (float; None, so no buffer, without a shift)
    out.buffer_int64 = n * n
    out.buffer_float = n_win * n * n if any(op.shift) else 0
    return out


def _local_cost(op: O.LocalAttention, ins, outs) -> OpCost:
    """Blocked local attention, as lowered (prelude.LocalAttention): the grid is cut into
    blocks of bh x bw queries (:func:`local_halo_axis`), each attending through SDPA to its
    (bh+k-1) x (bw+k-1) halo of keys under a mask; the scores of a whole halo are computed."""
    b, h, w, c = ins[0].shape
    k = op.kernel
    (bh, nh), (bw, nw) = local_halo_axis(k, h), local_halo_axis(k, w)
    blocks, queries, keys = m(nh, nw), bh * bw, (bh + k - 1) * (bw + k - 1)
    core = attn_core(m(b, blocks), op.heads, queries, keys, op.head_dim)
    core.attn_per_head = m(blocks, queries, keys)
    core.attn_global_per_head = m(h, w, h, w)
    rows, padded = m(b, h, w), m(b, blocks, queries)  # pixels, and pixels with the padded queries
    out = sum_costs(proj_cost(rows, c, 3 * op.inner, op.qkv_bias), core, proj_cost(rows, op.inner, c, op.proj_bias))
    # kept for backward: the blocked queries and each block's halo of keys and values, SDPA's
    # output and log-sum-exp per query and head (or, with attention dropout, the math kernel's
    # probabilities), the mask [blocks, 1, queries, keys], the gather index (int64: two
    # elements of float32 each) and the projection's input (a copy of the pixels, cut out)
    halo = m(2, b, blocks, keys, op.inner)
    if op.attn_drop > 0:
        attend = s(m(padded, op.inner), halo, explicit_probs(core.saved, op.attn_drop))
    else:
        attend = s(m(padded, op.inner), halo, m(padded, op.inner), m(padded, op.heads))
    out.saved = s(attend, m(blocks, queries, keys), m(2, blocks, keys), m(rows, op.inner))
    out.weight_inputs = (0,)
    return out


def _pooled_cost(op: O.PooledAttention, ins, outs) -> OpCost:
    b, n, c = ins[0].shape
    hd = op.head_dim
    qh, qw = op.out_grid()
    kh, kw = op.kv_grid()
    nq, nk = op.cls + qh * qw, op.cls + kh * kw
    bh = m(b, op.heads)
    pools = [
        OpCost(flops=m(2, bh, gh * gw, hd, kern[0] * kern[1]))  # depthwise: 1 input channel per group
        for (gh, gw), kern in (((qh, qw), op.kernel_q), ((kh, kw), op.kernel_kv), ((kh, kw), op.kernel_kv))
    ]
    rel = OpCost(flops=m(2, bh, qh * qw, hd, kh + kw)) if op.rel_pos else OpCost()
    core = attn_core(b, op.heads, nq, nk, hd)
    out = sum_costs(proj_cost(m(b, n), c, 3 * op.dim_out, op.qkv_bias), *pools, rel, core,
               proj_cost(m(b, nq), op.dim_out, op.dim_out, True))
    # explicit, as lowered: the pooling convs' inputs (q, k, v on the grid), the LayerNorms'
    # inputs and statistics, the scaled q and the normed k and v for the matmuls, the
    # queries and position tables of the decomposed relative positions, the probabilities
    # (the scores, explicit) and the projection's input
    grid = op.grid[0] * op.grid[1]
    do = op.dim_out
    # decomposed relative positions: each einsum keeps its copy of the queries on the grid and
    # the gathered table rows ([qh, kh, head_dim] and [qw, kw, head_dim]), and the gathers
    # their int64 indices
    rel_saved = s(m(2, b, qh * qw, do), qh * kh * hd + qw * kw * hd) if op.rel_pos else 0
    out.saved = s(m(3, b, grid, do), m(2, b, nq, do), m(4, b, nk, do), m(2, bh, s(nq, m(2, nk))), rel_saved,
                  core.saved, m(b, nq, do))
    out.weight_inputs = (0,)
    out.saved_int64 = qh * kh + qw * kw if op.rel_pos else 0
    return out


def _rel_pos_attention_cost(op: O.RelPosAttention, ins, outs) -> OpCost:
    b, t, c = ins[0].shape
    rows = m(b, t)
    positions = s(m(2, t), -1)  # relative offsets T-1 .. -(T-1)
    core = attn_core(b, op.heads, t, t, op.head_dim)
    pos_scores = OpCost(flops=m(2, b, op.heads, t, positions, op.head_dim))  # (q + v) @ p^T
    out = sum_costs(proj_cost(rows, c, 3 * op.inner, op.qkv_bias), OpCost(flops=m(2, positions, c, op.inner)), pos_scores,
               core, proj_cost(rows, op.inner, c, op.proj_bias))
    # explicit, as lowered: the qkv output (k and v are views of it), q + u and q + v and the
    # position projections for the two score matmuls, the probabilities (and, with attention
    # dropout, its mask and the dropped probabilities), the projection's input
    out.saved = s(m(6, rows, op.inner), m(positions, op.inner), explicit_probs(core.saved, op.attn_drop))
    out.weight_inputs = (0,)
    return out


def _window_v2_cost(op: O.WindowAttentionV2, ins, outs) -> OpCost:
    coords = (2 * op.window[0] - 1) * (2 * op.window[1] - 1)
    # relative_coords_table [1, 2wh-1, 2ww-1, 2] (float) beside the buffers of window attention
    cpb = OpCost(flops=m(2, coords, 2, op.cpb_hidden) + 2 * coords * op.cpb_hidden * op.heads,
                 buffer_float=coords * 2)
    out = sum_costs(_window_cost(op, ins, outs), cpb)
    # cosine attention, explicit as lowered: the qkv output (q and k normalised, v), the
    # normalised q and k, the scores (scaled by the learned logit scale) and the probabilities,
    # the projection's input
    b = ins[0].shape[0]
    rows = m(b, (op.grid[0] + op.pad[0]) * (op.grid[1] + op.pad[1]))
    # (and a copy of v for the matmul unless one head makes it a view), the two norms and their
    # clamped denominators per row and head, the position bias's sigmoid and the exp'd scale
    n = op.window[0] * op.window[1]
    v_copy = m(rows, op.inner) if op.heads > 1 else 0
    out.saved = s(m(6, rows, op.inner), v_copy, m(4, rows, op.heads), out.attn_entries,
                  explicit_probs(out.attn_entries, op.attn_drop), m(coords, op.cpb_hidden), op.heads * n * n + op.heads)
    out.weight_inputs = (0,)
    return out


# --------------------------------------------------------------------------- drawing rules


def _attention_draw(op: O.Attention, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    detail = (heads_label(op), f"first {op.queries} queries") if op.queries else (heads_label(op),)
    return Look("Masked multi-head attention" if op.causal else "Multi-head attention", detail, "attention")


def _cross_draw(op: O.CrossAttention, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Cross-attention", (heads_label(op), "keys, values: context"), "attention")


def _window_draw(op: O.WindowAttention, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    shifted = any(op.shift)
    detail = f"{op.heads} heads, window {square(op.window)}"
    second = f"shift {render.pair(op.shift)}" if shifted else "no shift"
    if any(op.pad):
        second += f", pad {render.pair(op.pad)}"
    return Look("SW-MSA" if shifted else "W-MSA", (detail, second), "attention")


def _local_draw(op: O.LocalAttention, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Local attention", (f"{op.heads} heads, {op.kernel}×{op.kernel} neighbourhood",), "attention")


def _pooled_draw(op: O.PooledAttention, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    detail = [f"{op.heads} heads, {op.dim} → {op.dim_out}"]
    if op.stride_q != (1, 1) or op.stride_kv != (1, 1):
        detail.append(f"stride q {render.pair(op.stride_q)}, kv {render.pair(op.stride_kv)}")
    return Look("Pooling attention", tuple(detail), "attention")


def _rel_pos_attention_draw(op: Any, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Rel-pos multi-head attention", (heads_label(op), "Transformer-XL positions"), "attention")


def _window_v2_draw(op: Any, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    base = _window_draw(op, ins, outs)
    return Look(f"{base.title} v2", (*base.detail, "cosine attention, log-CPB"), "attention")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _attention_interpret(c: EvalCtx) -> Tensor:
    import torch

    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.Attention)
    interp.no_random(c, op.attn_drop, "attention dropout")
    interp.no_random(c, op.proj_drop, "projection dropout")
    x = c.x()
    n = x.shape[1]
    qkv = c.linear("qkv", x, op.qkv_bias)  # [B, N, 3 * inner]: q, k, v blocks, heads inside each
    q, k, v = (interp.split_heads(t, op.heads) for t in qkv.split(op.inner, dim=-1))
    nq = op.queries or n
    q = q[:, :, :nq]  # queries > 0: only the first tokens attend
    bias = None
    if op.causal:
        future = torch.arange(n)[None, :] > torch.arange(nq)[:, None]  # key j after query i
        bias = torch.zeros(nq, n, dtype=x.dtype, device=x.device).masked_fill(future.to(x.device), float("-inf"))
    out = interp.attend(q, k, v, op.head_dim ** -0.5, bias)
    return c.linear("proj", interp.merge_heads(out), op.proj_bias)


def _cross_attention_interpret(c: EvalCtx) -> Tensor:
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.CrossAttention)
    interp.no_random(c, op.attn_drop, "attention dropout")
    interp.no_random(c, op.proj_drop, "projection dropout")
    x, ctx = c.x(0), c.x(1)
    inner = op.heads * op.head_dim
    q = interp.split_heads(c.linear("q", x, op.qkv_bias), op.heads)
    k, v = (interp.split_heads(t, op.heads) for t in c.linear("kv", ctx, op.qkv_bias).split(inner, dim=-1))
    return c.linear("proj", interp.merge_heads(interp.attend(q, k, v, op.head_dim ** -0.5)), op.proj_bias)


def _rel_pos_attention_interpret(c: EvalCtx) -> Tensor:
    """Transformer-XL attention (Dai et al. 2019): score(i, j) = (q_i + u) . k_j + (q_i + v) . r_{i-j},
    with r_d the projection (``pos``) of the sinusoidal encoding of the offset d = i - j
    (the encoding has the model's width), scaled by ``head_dim ** -0.5``."""
    import torch

    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.RelPosAttention)
    interp.no_random(c, op.attn_drop, "attention dropout")
    interp.no_random(c, op.proj_drop, "projection dropout")
    x = c.x()
    _, t, dim = x.shape
    q, k, v = (interp.split_heads(z, op.heads) for z in c.linear("qkv", x, op.qkv_bias).split(op.inner, dim=-1))
    u, w = c.p("pos_bias_u"), c.p("pos_bias_v")  # [heads, head_dim]
    offsets = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).to(x.device)  # [T, T]: i - j
    enc = interp.sinusoids(offsets.reshape(-1).to(x.dtype), dim)  # [T*T, dim]
    r = (enc @ c.p("pos.weight").t()).reshape(t, t, op.heads, op.head_dim).permute(2, 0, 1, 3)  # [h, T, T, d]
    content = (q + u[:, None, :]) @ k.transpose(-2, -1)  # [B, h, T, T]
    position = ((q + w[:, None, :])[:, :, :, None, :] * r[None]).sum(-1)  # [B, h, T, T]
    attn = interp.softmax((content + position) * op.head_dim ** -0.5, -1)
    return c.linear("proj", interp.merge_heads(attn @ v), op.proj_bias)


def _window_attention_interpret(c: EvalCtx) -> Tensor:
    """Swin (Liu et al. 2021): attention inside each window with a learned relative position
    bias per head (and the shift mask), scale ``head_dim ** -0.5``."""
    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.WindowAttention)

    def attend(win: Tensor, mask: Tensor | None) -> Tensor:
        n = win.shape[-2]
        q, k, v = (interp.split_heads(t, op.heads) for t in c.linear("qkv", win, op.qkv_bias).split(op.inner, dim=-1))
        table = c.p("relative_position_bias_table")  # [(2wh-1)(2ww-1), heads]
        bias = table[interp.relative_index(*op.window).reshape(-1).to(table.device)].reshape(n, n, op.heads)
        bias = bias.permute(2, 0, 1)  # [heads, n, n]
        if mask is not None:
            bias = bias + mask[:, :, None]  # [nH, nW, heads, n, n]
        return interp.merge_heads(interp.attend(q, k, v, op.head_dim ** -0.5, bias))

    return interp.windowed(c, attend)


def _window_attention_v2_interpret(c: EvalCtx) -> Tensor:
    """Swin-V2 (Liu et al. 2022): cosine similarity of q and k times exp(min(logit_scale,
    log 100)), plus 16 sigmoid(cpb_mlp(log-spaced offsets)); q and v biases, none on k."""
    import torch

    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.WindowAttentionV2)

    def attend(win: Tensor, mask: Tensor | None) -> Tensor:
        n = win.shape[-2]
        bias = None
        if op.qkv_bias:
            q_bias, v_bias = c.p("q_bias"), c.p("v_bias")
            bias = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        qkv = c.project("qkv", win, c.p("qkv.weight"), bias)
        q, k, v = (interp.split_heads(t, op.heads) for t in qkv.split(op.inner, dim=-1))
        qn = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        kn = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scale = torch.exp(torch.clamp(c.p("logit_scale"), max=math.log(100.0)))  # [heads, 1, 1]
        scores = (qn @ kn.transpose(-2, -1)) * scale
        coords = interp.log_coords(*op.window, win.dtype, win.device)
        hidden = torch.relu(coords @ c.p("cpb_mlp.0.weight").t() + c.p("cpb_mlp.0.bias"))
        table = hidden @ c.p("cpb_mlp.2.weight").t()  # [(2wh-1)(2ww-1), heads]
        rel = table[interp.relative_index(*op.window).reshape(-1).to(table.device)].reshape(n, n, op.heads)
        scores = scores + 16 * torch.sigmoid(rel.permute(2, 0, 1))
        if mask is not None:
            scores = scores + mask[:, :, None]
        return interp.merge_heads(interp.softmax(scores, -1) @ v)

    return interp.windowed(c, attend)


def _local_attention_interpret(c: EvalCtx) -> Tensor:
    """Stand-alone self-attention (Ramachandran et al. 2019) on [B, H, W, C]: the query at (y, x)
    attends to the keys at (y + dy, x + dx), dy, dx in -k//2 .. k - 1 - k//2, that lie inside
    the image (the others are masked out); scale ``head_dim ** -0.5``."""
    import torch

    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.LocalAttention)
    interp.no_random(c, op.attn_drop, "attention dropout")
    interp.no_random(c, op.proj_drop, "projection dropout")
    x = c.x()
    b, h, w, _ = x.shape
    q, k, v = c.linear("qkv", x, op.qkv_bias).split(op.inner, dim=-1)
    hd = op.head_dim
    q = q.reshape(b, h, w, op.heads, hd)
    lo = op.kernel // 2
    keys, values, inside = [], [], []
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    for dy in range(-lo, op.kernel - lo):
        for dx in range(-lo, op.kernel - lo):
            keys.append(interp.shifted(interp.shifted(k, 1, -dy), 2, -dx))  # keys[y, x] = k[y + dy, x + dx]
            values.append(interp.shifted(interp.shifted(v, 1, -dy), 2, -dx))
            inside.append((ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w))
    kn = torch.stack(keys, 3).reshape(b, h, w, -1, op.heads, hd)  # [B, H, W, k*k, heads, hd]
    vn = torch.stack(values, 3).reshape(b, h, w, -1, op.heads, hd)
    ok = torch.stack(inside, -1).to(x.device)  # [H, W, k*k]
    scores = (q[:, :, :, None] * kn).sum(-1) * hd ** -0.5  # [B, H, W, k*k, heads]
    scores = scores.masked_fill(~ok[None, :, :, :, None], float("-inf"))
    attn = interp.softmax(scores, 3)
    out = (attn[..., None] * vn).sum(3)  # [B, H, W, heads, hd]
    return c.linear("proj", out.reshape(b, h, w, op.inner), op.proj_bias)


def _pooled_attention_interpret(c: EvalCtx) -> Tensor:
    """MViTv2 pooling attention (Li et al. 2022; timm's MultiScaleAttention): q, k, v per head
    are pooled on the grid by strided depthwise convs (padding kernel // 2; the ``cls`` leading
    tokens bypass the pooling), then LayerNorm(eps 1e-6) over the head dim (class tokens
    included); scores ``q k^T * head_dim ** -0.5`` plus the decomposed relative position bias
    (q . Rh[qy, ky] + q . Rw[qx, kx], no bias on class tokens); ``attn v + q`` with residual
    pooling; then ``proj``."""
    import torch
    import torch.nn.functional as F

    from archlang.lower import interpret as interp

    op = c.op
    assert isinstance(op, O.PooledAttention)
    x = c.x()
    b = x.shape[0]
    hd = op.head_dim
    q, k, v = (interp.split_heads(t, op.heads) for t in c.linear("qkv", x, op.qkv_bias).split(op.dim_out, dim=-1))

    def pool(t: Tensor, name: str, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
        cls, grid = t[:, :, : op.cls], t[:, :, op.cls:]  # [B, h, cls, hd], [B, h, H*W, hd]
        img = grid.reshape(b * op.heads, op.grid[0], op.grid[1], hd).permute(0, 3, 1, 2)
        img = F.conv2d(img, c.p(f"pool_{name}.weight"), stride=stride, padding=(kernel[0] // 2, kernel[1] // 2),
                       groups=hd)
        pooled = img.reshape(b, op.heads, hd, -1).transpose(-2, -1)
        t = torch.cat([cls, pooled], dim=2)
        return interp.normalise(t, (-1,), 1e-6) * c.p(f"norm_{name}.weight") + c.p(f"norm_{name}.bias")

    q = pool(q, "q", op.kernel_q, op.stride_q)
    k = pool(k, "k", op.kernel_kv, op.stride_kv)
    v = pool(v, "v", op.kernel_kv, op.stride_kv)
    scores = (q * hd ** -0.5) @ k.transpose(-2, -1)
    if op.rel_pos:
        (qh, qw), (kh, kw) = op.out_grid(), op.kv_grid()

        def rel(qs: int, ks: int, table: Tensor) -> Tensor:
            # the offset of query row i and key row j, each scaled to the finer grid
            q_ratio, k_ratio = max(ks / qs, 1.0), max(qs / ks, 1.0)
            dist = [[int(i * q_ratio - j * k_ratio + (ks - 1) * k_ratio) for j in range(ks)] for i in range(qs)]
            return table[torch.tensor(dist, device=table.device)]  # [qs, ks, hd]

        rh, rw = rel(qh, kh, c.p("rel_pos_h")), rel(qw, kw, c.p("rel_pos_w"))
        rq = q[:, :, op.cls:].reshape(b, op.heads, qh, qw, hd)
        bias_h = (rq[:, :, :, :, None, :] * rh[None, None, :, None, :, :]).sum(-1)  # [B, h, qh, qw, kh]
        bias_w = (rq[:, :, :, :, None, :] * rw[None, None, None, :, :, :]).sum(-1)  # [B, h, qh, qw, kw]
        bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, op.heads, qh * qw, kh * kw)
        full = scores.new_zeros(scores.shape)
        full[:, :, op.cls:, op.cls:] = bias
        scores = scores + full
    out = interp.softmax(scores, -1) @ v
    if op.residual_pooling:
        out = out + q
    return c.linear("proj", interp.merge_heads(out), True)


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t() {
  in x: [B, 7, 12]
  in m: [B, 5, 10]
  in g: [B, 6, 10, 8]
  in p: [B, 36, 8]
  a = att: attention(x, heads = 3)
  b = causal: attention(x, heads = 2, head_dim = 5, causal = true, qkv_bias = false)
  c = xatt: cross_attention(x, m, heads = 2, head_dim = 4, proj_bias = false)
  d = rel: rel_pos_attention(x, heads = 4)
  out y = a + b + c + d
  w = w1: window_attention(g, heads = 2, window = 4, shift = 2)
  v = w2: window_attention_v2(g, heads = 2, window = 4, shift = 2)
  out z = w + v + l1: local_attention(g, heads = 2, kernel = 3)
  out u = p1: pooled_attention(p, heads = 2, grid = [4, 9], stride_q = 2, stride_kv = 2)
}
"""

def _attention_module(c: Ctx) -> ast.expr:
    """``Attention(...)``, or ``PrefixAttention(..., queries=k)`` where only the first k tokens attend."""
    if c.op.queries:
        return call("PrefixAttention", **kwargs_of(c, [*ATTN_COMMON[:3], "queries", *ATTN_COMMON[3:], "causal"],
                                                    ATTN_DEFAULTS))
    return call("Attention", **kwargs_of(c, [*ATTN_COMMON, "causal"], ATTN_DEFAULTS))


define(O.Attention, shape=_attention_shape, cost=_attention_cost,
       lower=Rule(
           forward=call_module, helpers=lambda c: ("Attention", "PrefixAttention") if c.op.queries else ("Attention",),
           module=_attention_module),
       draw=_attention_draw, interpret=_attention_interpret, example=_EXAMPLE)
define(O.CrossAttention, shape=_cross_shape, cost=_cross_cost,
       lower=Rule(
           forward=call_module, helpers=("CrossAttention",),
           module=lambda c: call("CrossAttention", **kwargs_of(c, ["dim", "context_dim", *ATTN_COMMON[1:]], ATTN_DEFAULTS))),
       draw=_cross_draw, interpret=_cross_attention_interpret, example=_EXAMPLE)
define(O.LocalAttention, shape=_local_shape, cost=_local_cost,
       lower=Rule(
           forward=call_module, helpers=("LocalAttention", "_halo_block", "_halo_mask"),
           module=lambda c: call("LocalAttention", **kwargs_of(c, [*ATTN_COMMON, "kernel"], ATTN_DEFAULTS))),
       draw=_local_draw, interpret=_local_attention_interpret, example=_EXAMPLE)
define(O.PooledAttention, shape=_pooled_shape, cost=_pooled_cost,
       lower=Rule(
           forward=call_module, helpers=("PooledAttention", "_trunc_normal"),
           module=lambda c: call("PooledAttention", **kwargs_of(
               c, ["dim", "dim_out", "heads", "grid", "cls", "kernel_q", "stride_q", "kernel_kv", "stride_kv", "qkv_bias",
                   "residual_pooling", "rel_pos"],
               {"cls": 0, "qkv_bias": True, "residual_pooling": True, "rel_pos": True}))),
       draw=_pooled_draw, interpret=_pooled_attention_interpret, example=_EXAMPLE)
define(O.RelPosAttention, shape=_rel_pos_shape, cost=_rel_pos_attention_cost,
       lower=Rule(
           forward=call_module, helpers=("RelPosAttention", "_rel_positions", "_trunc_normal"),
           module=lambda c: call("RelPosAttention", **kwargs_of(c, ATTN_COMMON, ATTN_DEFAULTS))),
       draw=_rel_pos_attention_draw, interpret=_rel_pos_attention_interpret, example=_EXAMPLE)
define(O.WindowAttention, shape=_window_shape, cost=_window_cost,
       lower=Rule(
           forward=call_module, helpers=("WindowAttention", "_relative_position_index", "_shift_mask", "_trunc_normal"),
           module=lambda c: call("WindowAttention", **kwargs_of(c, ATTN_WINDOW, ATTN_DEFAULTS))),
       draw=_window_draw, interpret=_window_attention_interpret, example=_EXAMPLE)
define(O.WindowAttentionV2, shape=_window_shape, cost=_window_v2_cost,
       lower=Rule(
           forward=call_module, helpers=("WindowAttentionV2", "WindowAttention", "_relative_position_index", "_shift_mask",
                                   "_trunc_normal", "_log_spaced_coords"),
           module=lambda c: call("WindowAttentionV2", **kwargs_of(c, ATTN_WINDOW, ATTN_DEFAULTS))),
       draw=_window_v2_draw, interpret=_window_attention_v2_interpret, example=_EXAMPLE)
