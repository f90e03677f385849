"""Cost rules: the table, the :class:`OpCost` they produce, and the kit they share.

Each op's cost rule lives in its family module of :mod:`archlang.ops` (registered with
``define(..., cost=...)``); this module keeps ``COST_RULES``, :class:`OpCost` and the helpers
several rules use (``numel``, ``s``, ``m``, the attention kit ``attn_core``, ``proj_cost``,
``sum_costs``, ``sdpa_cost``, ``math_saved``...; public names at the bottom).

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

``COST_RULES`` holds one rule per op class (filled by the family modules); a test fails
when an op lacks one.
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
    temp_cpu_bf16: DimLike | None = None  # ... on the CPU in bfloat16, where that differs again
    temp_cpu_packed: DimLike | None = None  # ... on the CPU in the inference build (packed linear weights)
    temp_train: DimLike | None = None  # the same in a training forward (None: as in inference)
    temp_train_cpu: DimLike | None = None  # ... on the CPU, where it differs
    grad_temp: DimLike = 0  # elements of backward temporaries beside the gradients it returns
    grad_temp_cpu: DimLike | None = None  # ... on the CPU, where it differs
    # a channels-last (NHWC) convolution on the CPU (Graph.prefers_channels_last), where it differs:
    temp_cpu_nhwc: DimLike | None = None  # forward temporaries, inference and training alike
    grad_temp_cpu_nhwc: DimLike | None = None  # backward temporaries
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


WRITTEN_OUT_TOKENS = 256  # prelude.sdpa writes bfloat16 CPU attention out up to this many tokens


def _sdpa_cost(out: OpCost, rows_q: DimLike, rows_kv: DimLike, inner: int, heads: int, scores: DimLike,
               drop: float, cpu_math: bool, extra: DimLike = 0, lengths: tuple[DimLike, DimLike] = (0, 0)) -> None:
    """Saved tensors and temporaries of a projection + SDPA + projection op, in place.

    Fused (CUDA; the CPU's flash kernel without dropout or mask): q, k, v, the output and the
    log-sum-exp are saved (:func:`_fused_saved`) and, in inference, live beside the output;
    its backward holds the output's gradient, the gradients of q, k and v and their stacked
    copy for the qkv projection. The math path (``cpu_math``: with dropout, or a mask that needs
    a gradient) saves :func:`_math_saved` and also holds the qkv output, the scores before the
    softmax and the output in [B, heads, N, head_dim]; its backward also holds two score-sized
    gradients. ``extra`` (a mask) is saved in both.

    In bfloat16 on the CPU, at most :data:`WRITTEN_OUT_TOKENS` queries and keys (``lengths``)
    and no dropout, inference writes the attention out (``prelude.sdpa``): beside q, k and v
    it holds the scaled queries, two score-sized tensors (the scores and the next step) and
    the output twice (in [B, heads, N, head_dim] and its copy for the projection). From
    ``prelude._AttentionRace.min_scores`` scores up the helper races that form against SDPA
    once per shape and may keep SDPA (on an AMX CPU it mostly does): there this is an upper
    bound, by the two score-sized tensors."""
    fused = s(_fused_saved(rows_q, rows_kv, inner, heads), extra)
    qkv, o = s(m(rows_q, inner), m(rows_kv, 2 * inner)), m(rows_q, inner)
    out.saved, out.temp, out.temp_train = fused, fused, 0
    if not drop and all(isinstance(n, int) and 0 < n <= WRITTEN_OUT_TOKENS for n in lengths):
        out.temp_cpu_bf16 = s(qkv, o, m(2, scores), m(2, o), extra)
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


# the rule kit under public names, for the family modules of archlang.ops
attn_core = _attn_core
explicit_probs = _explicit_probs
free = _free
math_saved = _math_saved
proj_cost = _proj
sdpa_cost = _sdpa_cost
sum_costs = _sum
