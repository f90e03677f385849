"""Cost rules: one per IR op, from the node's input/output types to its analytic cost.

Takes: an op and its input/output tensor types (shapes of ``int | Dim``, so a free batch
``B`` stays symbolic). Produces: an :class:`OpCost` whose counts are polynomials in the
free sizes. Conventions:

- ``flops`` counts what PyTorch's ``FlopCounterMode`` counts: 2 per multiply-add in
  matmuls (linear, attention's QK^T and AV, ``@``) and convolutions; bias adds are not
  counted, and attention is counted as the math SDPA backend computes it (full matrices,
  also when causal).
- ``other_flops`` estimates the rest: 1 per output element for elementwise ops, 5 per
  element for norms, 3 per score for softmax.
- what autograd keeps for backward: ``saves_inputs`` (inputs kept whole, whenever the output
  needs a gradient), ``weight_inputs`` (inputs kept only for the gradient of the op's own
  trainable weights: a frozen linear keeps nothing of its input), ``saves_output`` (the output
  itself: relu, sigmoid, tanh, softmax), and ``saved``, the elements of intermediates inside
  the op (attention probabilities where the lowering computes them explicitly, unfolded
  neighbourhoods, norm statistics). The report counts each graph tensor once however many
  ops keep it (a ReLU's output is the next convolution's input), sees through views
  (rearrange, slices) and saves nothing where no gradient flows.
- device differences: ``saved_cpu`` (when not ``None``) replaces ``saved`` on the CPU, where
  attention with dropout or an additive mask that needs a gradient takes SDPA's math path
  (copies of q, k, v, the probabilities, and with dropout the float mask and the dropped
  probabilities) instead of the fused kernel's q, k, v, output and log-sum-exp; dropout
  masks (counted by the report) are a byte per element on CUDA and the input's dtype on the
  CPU. ``saved_int64`` counts saved int64 elements (max pooling's argmax), 8 bytes whatever
  the dtype.
- the schedule (:mod:`archlang.cost.schedule`) also needs ``temp``, the elements of
  temporaries an op holds beside its output while it runs forward (the fused qkv output,
  the scores of an explicit attention, the reordered weight of a oneDNN convolution), and
  ``grad_temp``, those its backward holds beside the gradients it returns.
- ``attn_entries`` is the number of attention scores of the layer (batch x heads x the
  entries of every head's matrices); ``attn_per_head`` those of one example and one head,
  summed over windows; ``attn_global_per_head`` what one global matrix over the same tokens
  would hold (shown beside windowed and local attention).
- ``buffer_float`` and ``buffer_int64`` count the elements of the buffers the op's lowering
  registers (``register_buffer`` in :mod:`archlang.lower.prelude`, and torch's own, such as
  BatchNorm's running statistics), split by dtype: floating-point buffers take the build
  dtype (``model.to(dtype)`` casts them), index tables stay int64 (8 bytes) whatever it is.
  They are allocated when the model is built, before any input arrives: the sinusoidal
  table of ``sinusoidal_pos(x, max_len = 4000000)`` over 160 channels is 2.56 GB in float32.
- ``build_scratch`` is the bytes of the temporaries that constructing the op's module holds
  beside its buffers (float32 sines and cosines of the sinusoidal table: as much again).

``COST_RULES`` holds one rule per op class; a test fails when an op lacks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archlang.ir import ops as O
from archlang.ir.dims import DimLike, add, product
from archlang.ir.types import TensorType


@dataclass
class OpCost:
    flops: DimLike = 0
    other_flops: DimLike = 0
    saved: DimLike = 0  # elements of intermediates saved for backward (not graph tensors)
    saves_inputs: tuple[int, ...] = ()  # inputs saved whole when the output needs a gradient
    weight_inputs: tuple[int, ...] = ()  # inputs saved only for the op's trainable weights' gradients
    saves_output: bool = False  # the output is saved (relu, sigmoid, tanh, softmax)
    saved_cpu: DimLike | None = None  # ``saved`` on the CPU, where it differs (SDPA's math path)
    saved_int64: DimLike = 0  # int64 elements saved (max pooling's argmax)
    temp: DimLike = 0  # elements of forward temporaries beside the output, in inference
    temp_cpu: DimLike | None = None  # ... on the CPU, where it differs
    temp_train: DimLike | None = None  # the same in a training forward (None: as in inference)
    temp_train_cpu: DimLike | None = None  # ... on the CPU, where it differs
    grad_temp: DimLike = 0  # elements of backward temporaries beside the gradients it returns
    grad_temp_cpu: DimLike | None = None  # ... on the CPU, where it differs
    attn_entries: DimLike = 0
    attn_per_head: DimLike = 0
    attn_global_per_head: DimLike = 0
    buffer_float: int = 0  # elements of floating-point buffers (build dtype)
    buffer_int64: int = 0  # elements of int64 buffers (index tables)
    build_scratch: int = 0  # bytes of temporaries while the module is constructed

    def buffer_bytes(self, bytes_per: int) -> int:
        """The op's buffers in bytes when floating-point tensors take ``bytes_per`` bytes."""
        return self.buffer_float * bytes_per + self.buffer_int64 * INT64_BYTES


INT64_BYTES = 8
Rule = Callable[[O.OpBase, list[TensorType], tuple[TensorType, ...]], OpCost]
COST_RULES: dict[type[O.OpBase], Rule] = {}


def rule(*classes: type[O.OpBase]) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for c in classes:
            COST_RULES[c] = fn
        return fn
    return deco


def numel(t: TensorType) -> DimLike:
    return product(t.shape)


def s(*xs: DimLike) -> DimLike:
    """Sum; constants are added first so that symbolic terms are combined once."""
    const = sum(x for x in xs if isinstance(x, int))
    out: DimLike = const
    for x in xs:
        if not isinstance(x, int):
            out = add(out, x)
    return out


def m(*xs: DimLike) -> DimLike:
    return product(xs)


def _free(op: O.OpBase, ins: list[TensorType], outs: tuple[TensorType, ...]) -> OpCost:
    return OpCost()


def cpu_threads() -> int:
    """The threads torch's CPU kernels use by default here (one per core the OS reports); the
    scratch of some oneDNN kernels is per thread."""
    import os

    return max(1, os.cpu_count() or 1)


def _attn_core(batch: DimLike, heads: int, q_len: DimLike, k_len: DimLike, hd: int) -> OpCost:
    scores = m(batch, heads, q_len, k_len)
    return OpCost(flops=m(4, scores, hd), other_flops=m(4, scores), saved=scores,
                  attn_entries=scores, attn_per_head=m(q_len, k_len), attn_global_per_head=m(q_len, k_len))


def _proj(rows: DimLike, a: int, b: int, bias: bool) -> OpCost:
    return OpCost(flops=m(2, rows, a, b), other_flops=m(rows, b) if bias else 0, saved=m(rows, a))


def _sum(*costs: OpCost) -> OpCost:
    out = OpCost()
    for c in costs:
        out.flops = add(out.flops, c.flops)
        out.other_flops = add(out.other_flops, c.other_flops)
        out.saved = add(out.saved, c.saved)
        out.attn_entries = add(out.attn_entries, c.attn_entries)
        out.attn_per_head = add(out.attn_per_head, c.attn_per_head)
        out.attn_global_per_head = add(out.attn_global_per_head, c.attn_global_per_head)
        out.buffer_float += c.buffer_float
        out.buffer_int64 += c.buffer_int64
    return out


def _explicit_probs(scores: DimLike, drop: float) -> DimLike:
    """What explicit attention keeps of its probabilities: the softmax output, and with
    dropout also the mask (float on the CPU; a byte on CUDA) and the dropped probabilities."""
    return m(3, scores) if drop > 0 else scores


def _math_saved(rows_q: DimLike, rows_kv: DimLike, inner: int, scores: DimLike, drop: float, heads: int = 2,
                v_width: int = 3) -> DimLike:
    """What autograd keeps for SDPA's math path (the CPU's, with dropout or an additive mask
    that needs a gradient): contiguous copies of the scaled q, of k and of v for the batched
    matmuls, the probabilities (with dropout also the float mask and the dropped
    probabilities), and the output re-laid for the projection (a copy: the math path's output
    is [B, heads, N, head_dim]). With one head, v needs no copy: the matmul keeps a view of the
    fused projection's output, ``v_width`` times v's size (3 for qkv, 2 for kv)."""
    v = m(rows_kv, inner * (v_width if heads == 1 else 1))
    return s(m(rows_q, inner), m(rows_kv, inner), v, _explicit_probs(scores, drop), m(rows_q, inner))


def _sdpa_cost(out: OpCost, rows_q: DimLike, rows_kv: DimLike, inner: int, heads: int, scores: DimLike,
               drop: float, cpu_math: bool, extra: DimLike = 0) -> None:
    """Saved tensors and temporaries of a projection + SDPA + projection op, in place.

    Fused (CUDA; the CPU's flash kernel without dropout or mask): q, k, v, the output and the
    log-sum-exp are saved (:func:`_fused_saved`) and, in inference, live beside the output;
    its backward holds the output's gradient, the gradients of q, k and v and their stacked
    copy for the qkv projection. The math path (``cpu_math``: with dropout, or a mask that needs
    a gradient) saves :func:`_math_saved` and also holds the qkv output, the scores before the
    softmax and the output in [B, heads, N, head_dim]; its backward also holds two score-sized
    gradients. ``extra`` (a mask) is saved in both."""
    fused = s(_fused_saved(rows_q, rows_kv, inner, heads), extra)
    qkv, o = s(m(rows_q, inner), m(rows_kv, 2 * inner)), m(rows_q, inner)
    out.saved, out.temp, out.temp_train = fused, fused, 0
    out.grad_temp = s(o, m(2, qkv))
    math = s(_math_saved(rows_q, rows_kv, inner, scores, drop, heads, 3 if rows_q is rows_kv else 2), extra)
    if cpu_math:
        out.saved_cpu = math
        out.temp_train_cpu = s(qkv, o, scores)
        out.grad_temp_cpu = s(o, m(2, qkv), m(2, scores))


def _fused_saved(rows_q: DimLike, rows_kv: DimLike, inner: int, heads: int) -> DimLike:
    """What autograd keeps for SDPA's fused kernel: q, k, v (their projections' outputs), the
    output and the log-sum-exp per query and head; never the score matrix."""
    return s(m(rows_q, inner), m(rows_kv, 2 * inner), m(rows_q, inner), m(rows_q, heads))


@rule(O.Attention)
def _attention(op: O.Attention, ins, outs) -> OpCost:
    b, n, c = ins[0].shape
    rows = m(b, n)
    out = _sum(_proj(rows, c, 3 * op.inner, op.qkv_bias), _attn_core(b, op.heads, n, n, op.head_dim),
               _proj(rows, op.inner, c, op.proj_bias))
    # SDPA's output is laid out [B, N, heads, head_dim]: the projection's input is a view of it
    _sdpa_cost(out, rows, rows, op.inner, op.heads, m(b, op.heads, n, n), op.attn_drop, op.attn_drop > 0)
    out.weight_inputs = (0,)
    return out


@rule(O.CrossAttention)
def _cross(op: O.CrossAttention, ins, outs) -> OpCost:
    b, n, c = ins[0].shape
    _, k_len, ck = ins[1].shape
    inner = op.heads * op.head_dim
    out = _sum(_proj(m(b, n), c, inner, op.qkv_bias), _proj(m(b, k_len), ck, 2 * inner, op.qkv_bias),
               _attn_core(b, op.heads, n, k_len, op.head_dim), _proj(m(b, n), inner, c, op.proj_bias))
    _sdpa_cost(out, m(b, n), m(b, k_len), inner, op.heads, m(b, op.heads, n, k_len), op.attn_drop, op.attn_drop > 0)
    out.weight_inputs = (0, 1)
    return out


@rule(O.WindowAttention)
def _window(op: O.WindowAttention, ins, outs) -> OpCost:
    b = ins[0].shape[0]
    hp, wp = op.grid[0] + op.pad[0], op.grid[1] + op.pad[1]
    n = op.window[0] * op.window[1]
    n_win = (hp // op.window[0]) * (wp // op.window[1])
    rows = m(b, hp * wp)
    core = _attn_core(m(b, n_win), op.heads, n, n, op.head_dim)
    core.attn_per_head = n_win * n * n
    core.attn_global_per_head = (op.grid[0] * op.grid[1]) ** 2
    out = _sum(_proj(rows, op.dim, 3 * op.inner, op.qkv_bias), core, _proj(rows, op.inner, op.dim, op.proj_bias))
    # the additive mask (relative position bias, plus the shift mask per window) is kept once,
    # broadcast over the batch
    mask = op.heads * n * n * (n_win if any(op.shift) else 1)
    # the mask needs a gradient (the bias table is a parameter): the CPU takes SDPA's math path
    _sdpa_cost(out, rows, rows, op.inner, op.heads, core.attn_entries, op.attn_drop, True, mask)
    out.saved_cpu = _math_saved(rows, rows, op.inner, core.attn_entries, op.attn_drop, op.heads)
    out.weight_inputs = (0,)
    # buffers: relative_position_index [n, n] (int64) and, for shifted windows, attn_mask
    # [windows, n, n] (float; None, so no buffer, without a shift)
    out.buffer_int64 = n * n
    out.buffer_float = n_win * n * n if any(op.shift) else 0
    return out


@rule(O.LocalAttention)
def _local(op: O.LocalAttention, ins, outs) -> OpCost:
    """Blocked local attention, as lowered (prelude.LocalAttention): the grid is cut into
    blocks of bh x bw queries (:func:`local_halo_axis`), each attending through SDPA to its
    (bh+k-1) x (bw+k-1) halo of keys under a mask; the scores of a whole halo are computed."""
    b, h, w, c = ins[0].shape
    k = op.kernel
    (bh, nh), (bw, nw) = local_halo_axis(k, h), local_halo_axis(k, w)
    blocks, queries, keys = m(nh, nw), bh * bw, (bh + k - 1) * (bw + k - 1)
    core = _attn_core(m(b, blocks), op.heads, queries, keys, op.head_dim)
    core.attn_per_head = m(blocks, queries, keys)
    core.attn_global_per_head = m(h, w, h, w)
    rows, padded = m(b, h, w), m(b, blocks, queries)  # pixels, and pixels with the padded queries
    out = _sum(_proj(rows, c, 3 * op.inner, op.qkv_bias), core, _proj(rows, op.inner, c, op.proj_bias))
    # kept for backward: the blocked queries and each block's halo of keys and values, SDPA's
    # output and log-sum-exp per query and head (or, with attention dropout, the math kernel's
    # probabilities), the mask [blocks, 1, queries, keys], the gather index (int64: two
    # elements of float32 each) and the projection's input (a copy of the pixels, cut out)
    halo = m(2, b, blocks, keys, op.inner)
    if op.attn_drop > 0:
        attend = s(m(padded, op.inner), halo, _explicit_probs(core.saved, op.attn_drop))
    else:
        attend = s(m(padded, op.inner), halo, m(padded, op.inner), m(padded, op.heads))
    out.saved = s(attend, m(blocks, queries, keys), m(2, blocks, keys), m(rows, op.inner))
    out.weight_inputs = (0,)
    return out


def local_halo_axis(kernel: int, n: DimLike) -> tuple[int, DimLike]:
    """The query block side and the number of blocks along an axis of ``n`` pixels, as
    prelude._halo_block chooses them: ``kernel`` (``n`` when shorter), or the largest size from
    ``kernel`` down to ``(kernel + 1) // 2`` that divides ``n``; for a symbolic ``n``,
    ``kernel`` and ``ceil(n / kernel)`` blocks (the last one padded)."""
    from archlang.ir.dims import ceildiv

    if not isinstance(n, int):
        return kernel, ceildiv(n, kernel)
    if n <= kernel:
        return n, 1
    for b in range(kernel, (kernel + 1) // 2 - 1, -1):
        if n % b == 0:
            return b, n // b
    return kernel, -(-n // kernel)


@rule(O.PooledAttention)
def _pooled(op: O.PooledAttention, ins, outs) -> OpCost:
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
    core = _attn_core(b, op.heads, nq, nk, hd)
    out = _sum(_proj(m(b, n), c, 3 * op.dim_out, op.qkv_bias), *pools, rel, core,
               _proj(m(b, nq), op.dim_out, op.dim_out, True))
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


@rule(O.RelPosAttention)
def _rel_pos_attention(op: O.RelPosAttention, ins, outs) -> OpCost:
    b, t, c = ins[0].shape
    rows = m(b, t)
    positions = s(m(2, t), -1)  # relative offsets T-1 .. -(T-1)
    core = _attn_core(b, op.heads, t, t, op.head_dim)
    pos_scores = OpCost(flops=m(2, b, op.heads, t, positions, op.head_dim))  # (q + v) @ p^T
    out = _sum(_proj(rows, c, 3 * op.inner, op.qkv_bias), OpCost(flops=m(2, positions, c, op.inner)), pos_scores,
               core, _proj(rows, op.inner, c, op.proj_bias))
    # explicit, as lowered: the qkv output (k and v are views of it), q + u and q + v and the
    # position projections for the two score matmuls, the probabilities (and, with attention
    # dropout, its mask and the dropped probabilities), the projection's input
    out.saved = s(m(6, rows, op.inner), m(positions, op.inner), _explicit_probs(core.saved, op.attn_drop))
    out.weight_inputs = (0,)
    return out


@rule(O.WindowAttentionV2)
def _window_v2(op: O.WindowAttentionV2, ins, outs) -> OpCost:
    coords = (2 * op.window[0] - 1) * (2 * op.window[1] - 1)
    # relative_coords_table [1, 2wh-1, 2ww-1, 2] (float) beside the buffers of window attention
    cpb = OpCost(flops=m(2, coords, 2, op.cpb_hidden) + 2 * coords * op.cpb_hidden * op.heads,
                 buffer_float=coords * 2)
    out = _sum(_window(op, ins, outs), cpb)
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
                  _explicit_probs(out.attn_entries, op.attn_drop), m(coords, op.cpb_hidden), op.heads * n * n + op.heads)
    out.weight_inputs = (0,)
    return out


# the rule kit under public names, for the family modules of archlang.ops
free = _free
