"""Helper layers that generated modules copy verbatim (only the ones they use).

Takes: nothing; this file is read as *text* by :mod:`archlang.lower.codegen`, which copies
the definitions a model needs into the generated module, so generated code imports only
torch and the standard library. It is also importable, so the helpers are unit-tested.
Each helper mirrors the reference implementation it replaces (timm / torch.nn) closely
enough that their weights load by name and their outputs agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _container(**children: nn.Module | nn.Parameter) -> nn.Module:
    """A plain module holding named children, for name paths such as ``head.fc``."""
    m = nn.Module()
    for name, child in children.items():
        if isinstance(child, nn.Parameter):
            m.register_parameter(name, child)
        else:
            m.add_module(name, child)
    return m


def _trunc_normal(*shape: int, std: float = 0.02) -> nn.Parameter:
    """A parameter drawn from a truncated normal (timm's init for tokens and position tables)."""
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=std, a=-2 * std, b=2 * std))


class DropPath(nn.Module):
    """Stochastic depth: zero whole samples of a residual branch with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:  # eval first: torch.compile then guards on no rate
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (BiT / timm's StdConv2d)."""

    def __init__(self, *args, eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SinusoidalPositions(nn.Module):
    """Add the fixed sinusoidal encoding of Vaswani et al. (2017) to ``[B, N, D]``."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        pos = torch.arange(length, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(length, dim)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
        self.register_buffer("pe", pe[None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


def apply_rotary(x: torch.Tensor, theta: float = 10000.0, dim: int | None = None, offset: int = 0,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of ``[B, H, N, D]`` at positions ``offset ..
    offset + N - 1`` (or at ``positions``: int ``[N]``, or ``[B, N]`` per example), in HF Llama's
    rotate-half layout: ``x * cos + rotate_half(x) * sin`` on the first ``dim`` channels (all of
    them by default), the others passed through. The angles are computed in float32 (float64
    for a float64 model), as HF's LlamaRotaryEmbedding does."""
    rot = x.shape[-1] if dim is None else dim
    dt = torch.promote_types(x.dtype, torch.float32)
    inv_freq = 1.0 / theta ** (torch.arange(0, rot, 2, device=x.device, dtype=dt) / rot)
    if positions is None:
        pos = torch.arange(offset, offset + x.shape[-2], device=x.device, dtype=dt)
    else:
        pos = positions.to(dt)
    ang = pos[..., None] * inv_freq
    ang = torch.cat((ang, ang), dim=-1)  # [N, rot], or [B, N, rot]
    if ang.dim() == 3:
        ang = ang[:, None]  # over the heads
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    xr = x[..., :rot]
    half = torch.cat((-xr[..., rot // 2:], xr[..., : rot // 2]), dim=-1)
    y = xr * cos + half * sin
    return y if rot == x.shape[-1] else torch.cat((y, x[..., rot:]), dim=-1)


class Affine(nn.Module):
    """ResMLP's affine "norm": ``alpha * x + beta`` per channel (timm's Affine)."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


def spatial_shift(x: torch.Tensor) -> torch.Tensor:
    """S2-MLP's spatial shift on [B, H, W, C]: channel quarters move right, left, down, up."""
    g = x.shape[-1] // 4
    out = torch.zeros_like(x)
    out[:, :, 1:, :g] = x[:, :, :-1, :g]
    out[:, :, :-1, g:2 * g] = x[:, :, 1:, g:2 * g]
    out[:, 1:, :, 2 * g:3 * g] = x[:, :-1, :, 2 * g:3 * g]
    out[:, :-1, :, 3 * g:] = x[:, 1:, :, 3 * g:]
    return out


def channel_shift(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """CycleMLP's cycle pattern: channel i reads position p + (i + 1) % size - size // 2 along
    ``dim`` of [B, H, W, C] (zeros past the border), as CycleFC's fixed deformable offsets do."""
    out = torch.zeros_like(x)
    n = x.shape[dim]
    for r in range(size):
        s = (r + 1) % size - size // 2
        src = x[..., r::size]
        if s > 0:
            part = torch.cat([src.narrow(dim, s, n - s), src.new_zeros(*src.shape[:dim], s, *src.shape[dim + 1:])], dim)
        elif s < 0:
            part = torch.cat([src.new_zeros(*src.shape[:dim], -s, *src.shape[dim + 1:]), src.narrow(dim, 0, n + s)], dim)
        else:
            part = src
        out[..., r::size] = part
    return out


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
         dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, except where the attention written out (two matmuls
    and a softmax) may be faster: on the CPU in bfloat16, at most 256 queries and keys, no
    dropout and no gradient wanted. There the written-out form was 1.5-2x faster than SDPA's
    flash kernel on one machine (Swin's 49-token windows, ViT's 197 tokens), 0.78-1.12x on
    an AMX one (``benchmarks/attention_kernels.py``), so at a shape of at least
    ``_AttentionRace.min_scores`` scores the two are raced once and the faster kept; smaller
    ones write it out. A compiled graph (no race there) calls SDPA: in whole compiled models
    it beat Inductor's fusion of the written-out form (Swin-T bf16: 0.89x the time; ViT-B/16
    bf16: 0.98x; ``benchmarks/variants.py``), though at Swin's 49-token windows alone the
    fused form was faster.
    ``attn_mask`` is None or an additive float mask in which no row is entirely ``-inf``
    (where SDPA's flash kernel gives zeros, the softmax would give NaN): the callers' biases
    and Swin's -100 shift masks."""
    if (q.device.type == "cpu" and q.dtype == torch.bfloat16 and dropout_p == 0.0 and q.shape[-2] <= 256
            and not (is_causal and attn_mask is not None)  # SDPA refuses both
            and k.shape[-2] <= 256 and (attn_mask is None or attn_mask.dtype == q.dtype)
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad
                                                  or (attn_mask is not None and attn_mask.requires_grad)))
            and not torch.compiler.is_compiling()  # compiled graphs: SDPA (above); no race in a graph
            and _AttentionRace.written_out(q, k, v, attn_mask, is_causal, scale)):
        return _written_attention(q, k, v, attn_mask, is_causal, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                          scale=scale)


def _written_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                       is_causal: bool, scale: float | None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v, as timm's ``fused_attn=False`` computes it."""
    scores = (q * (q.shape[-1] ** -0.5 if scale is None else scale)) @ k.transpose(-2, -1)
    if is_causal:  # SDPA's causal mask: key j <= query i
        later = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(later, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask
    return scores.softmax(dim=-1) @ v


class _AttentionRace:
    """Whether the written-out attention beats SDPA at a shape on this machine, raced on the
    first eager call at that shape (as cudnn.benchmark does) and kept per process."""

    min_scores = 1 << 19  # smaller attentions (under ~2 ms) are written out unraced
    # one per process: (q, k and mask shapes, causal, dtype, threads) -> the written-out form faster
    faster: dict[tuple, bool] = {}  # noqa: RUF012

    @classmethod
    def written_out(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                    is_causal: bool, scale: float | None) -> bool:
        if q.numel() // q.shape[-1] * k.shape[-2] < cls.min_scores:
            return True
        key = (tuple(q.shape), tuple(k.shape), None if attn_mask is None else tuple(attn_mask.shape), is_causal,
               q.dtype, torch.get_num_threads())
        faster = cls.faster.get(key)
        if faster is None:
            faster = cls.faster[key] = cls._race(q, k, v, attn_mask, is_causal, scale)
        return faster

    @staticmethod
    def _race(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
              is_causal: bool, scale: float | None) -> bool:
        """One warm-up each, then the best of three interleaved calls each; the written-out
        form wins only by 2% or more (a tie takes SDPA, which holds no scores)."""
        import time

        kernels = (lambda: _written_attention(q, k, v, attn_mask, is_causal, scale),
                   lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                                          scale=scale))
        best = [float("inf"), float("inf")]
        for rep in range(4):
            for i, kernel in enumerate(kernels):
                t0 = time.perf_counter()
                kernel()
                if rep:
                    best[i] = min(best[i], time.perf_counter() - t0)
        return best[0] < 0.98 * best[1]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's Attention), via SDPA
    (:func:`sdpa`: written out for short bfloat16 CPU inputs)."""

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool = True, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, causal: bool = False):
        super().__init__()
        self.heads, self.head_dim, self.causal, self.attn_drop = heads, head_dim, causal, attn_drop
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
        x = sdpa(q, k, v, is_causal=self.causal, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).flatten(2)))


class PrefixAttention(Attention):
    """:class:`Attention` in which only the first ``queries`` tokens attend (keys and values
    still come from every token): [B, N, C] -> [B, queries, C], with the same parameters.
    archlang lowers an attention to it where nothing downstream reads the other tokens' outputs
    (a ViT's last block, whose class token alone reaches the head)."""

    def __init__(self, dim: int, heads: int, head_dim: int, queries: int, qkv_bias: bool = True,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, causal: bool = False):
        super().__init__(dim, heads, head_dim, qkv_bias, proj_bias, attn_drop, proj_drop, causal)
        self.queries = queries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
        x = sdpa(q[:, :, :self.queries], k, v, is_causal=self.causal,  # causal: query i sees keys 0 .. i
                 dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).flatten(2)))


def _rel_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal encodings of the relative offsets length-1, ..., 0, ..., -(length-1): [2L-1, dim]."""
    pos = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(2 * length - 1, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe.to(dtype)


class RelPosAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (Dai et al. 2019), the
    MHSA module of Conformer: scores = (q + u) k^T + shift((q + v) p^T), p = pos(sinusoids)."""

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool = True, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.attn_drop = heads, head_dim, attn_drop
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=proj_bias)
        self.pos = nn.Linear(dim, heads * head_dim, bias=False)
        self.pos_bias_u = _trunc_normal(heads, head_dim)
        self.pos_bias_v = _trunc_normal(heads, head_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, T, C = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
        p = self.pos(_rel_positions(T, C, x.device, x.dtype)).view(2 * T - 1, self.heads, self.head_dim)
        content = (q + self.pos_bias_u[:, None]) @ k.transpose(-2, -1)  # [B, h, T, T]
        position = (q + self.pos_bias_v[:, None]) @ p.permute(1, 2, 0)  # [B, h, T, 2T-1]
        # relative shift: row i keeps offsets i - j for j = 0 .. T-1
        position = F.pad(position, (1, 0))  # a zero column in front
        position = position.view(-1, self.heads, 2 * T, T)[:, :, 1:].reshape(-1, self.heads, T, 2 * T - 1)[..., :T]
        attn = ((content + position) * self.head_dim ** -0.5).softmax(dim=-1)
        x = F.dropout(attn, self.attn_drop, self.training) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).flatten(2)))


class CrossAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context`` (encoder-decoder attention), via SDPA
    (:func:`sdpa`)."""

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, qkv_bias: bool = True,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.attn_drop = heads, head_dim, attn_drop
        self.q = nn.Linear(dim, heads * head_dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.q(x).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)
        k, v = self.kv(context).unflatten(-1, (2, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
        x = sdpa(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).flatten(2)))


def _relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """Pairwise relative-position index inside a wh x ww window (Swin)."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    return rel[:, :, 0] * (2 * ww - 1) + rel[:, :, 1]


def _shift_mask(h: int, w: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """The additive mask (0 / -100) that keeps cyclically shifted windows from mixing regions."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            img[:, hs[0]:hs[1], ws[0]:ws[1], :] = cnt
            cnt += 1
    win = img.view(1, h // window[0], window[0], w // window[1], window[1], 1)
    win = win.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1])
    mask = win[:, None, :] - win[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Swin (shifted-)window attention on ``[B, H, W, C]``: cyclic shift, pad, partition into
    windows, attention with a relative position bias (and the shift mask), then the reverse.
    The batch is -1 in every reshape, so an exported graph takes any batch size."""

    def __init__(self, dim: int, heads: int, head_dim: int, window: tuple[int, int], grid: tuple[int, int],
                 shift: tuple[int, int] = (0, 0), pad: tuple[int, int] = (0, 0), qkv_bias: bool = True,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.attn_drop = heads, head_dim, attn_drop
        self.window, self.shift, self.pad = tuple(window), tuple(shift), tuple(pad)
        wh, ww = self.window
        self.relative_position_bias_table = _trunc_normal((2 * wh - 1) * (2 * ww - 1), heads)
        self.register_buffer("relative_position_index", _relative_position_index(wh, ww), persistent=False)
        mask = _shift_mask(grid[0] + pad[0], grid[1] + pad[1], self.window, self.shift) if any(shift) else None
        self.register_buffer("attn_mask", mask, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)  # set by fold_constants() (inference)
        self.grid = tuple(grid)
        self.register_buffer("window_index", None, persistent=False)  # shifted windows as one gather (inference)
        self.register_buffer("window_index_inverse", None, persistent=False)
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, C = x.shape
        if self.window_index is not None:  # inference: shift and partition in one gather, and back
            x = x.reshape(-1, H * W, C).index_select(1, self.window_index).view(-1, self.window[0] * self.window[1], C)
            x = self.proj_drop(self.proj(self.attend(x)))
            return x.view(-1, H * W, C).index_select(1, self.window_index_inverse).view(-1, H, W, C)
        (wh, ww), (sh, sw), (ph, pw) = self.window, self.shift, self.pad
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        Hp, Wp = H + ph, W + pw
        n = wh * ww
        x = x.view(-1, Hp // wh, wh, Wp // ww, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, C)
        x = self.proj_drop(self.proj(self.attend(x)))  # attention inside each window: [B * windows, n, C]
        x = x.view(-1, Hp // wh, Wp // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, Hp, Wp, C)
        if ph or pw:
            x = x[:, :H, :W, :].contiguous()
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head attention inside windows: [B * windows, n, C] -> [B * windows, n, heads * head_dim]."""
        n = x.shape[1]
        q, k, v = self.qkv(x).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias() if self.fused_bias is None else self.fused_bias
        if self.attn_mask is not None:  # windows differ: they are folded into the head axis, broadcast over B
            nw = self.attn_mask.shape[0]
            q, k, v = (t.reshape(-1, nw * self.heads, n, self.head_dim) for t in (q, k, v))
        x = sdpa(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.attn_drop if self.training else 0.0)
        return x.reshape(-1, self.heads, n, self.head_dim).transpose(1, 2).reshape(-1, n, self.heads * self.head_dim)

    def position_bias(self) -> torch.Tensor:
        """The relative position bias gathered from the table, plus the shift mask when there is
        one: [1, heads, n, n], or [1, windows * heads, n, n] with the windows in the head axis."""
        n = self.window[0] * self.window[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # [1, heads, n, n]
        if self.attn_mask is not None:
            nw = self.attn_mask.shape[0]
            bias = (bias + self.attn_mask.unsqueeze(1)).reshape(1, nw * self.heads, n, n)
        return bias

    @torch.no_grad()
    def fold_constants(self) -> None:
        """For inference: compute the position bias (shift mask included) once, into the
        non-persistent buffer ``fused_bias`` that ``attend`` then reads instead of gathering it
        from the table on every call. The table stays (``state_dict`` is unchanged); call this
        again after the table changes (archlang's inference build does, after each
        ``load_state_dict``). Shifted windows without padding also get ``window_index``: the
        cyclic shift and the window partition as one gather (and its inverse), in place of two
        rolls and two copies."""
        self.fused_bias = self.position_bias().detach().clone()
        self._fold_window_index()

    def _fold_window_index(self) -> None:
        """``window_index`` (and its inverse): for each position of the shifted windows, in
        window-major order, its position in the unshifted grid; only for shifted windows
        without padding (where it replaces two rolls and two copies by two gathers)."""
        if any(self.shift) and not any(self.pad):
            (wh, ww), (sh, sw), (H, W) = self.window, self.shift, self.grid
            dev = self.relative_position_index.device
            rows = (torch.arange(H // wh, device=dev)[:, None, None, None] * wh
                    + torch.arange(wh, device=dev)[None, None, :, None] + sh) % H
            cols = (torch.arange(W // ww, device=dev)[None, :, None, None] * ww
                    + torch.arange(ww, device=dev)[None, None, None, :] + sw) % W
            index = (rows * W + cols).flatten()
            self.window_index, self.window_index_inverse = index, torch.argsort(index)


def _log_spaced_coords(wh: int, ww: int) -> torch.Tensor:
    """Swin-V2's relative coordinates, scaled to [-8, 8] and log-spaced: [1, 2wh-1, 2ww-1, 2]."""
    h = torch.arange(-(wh - 1), wh, dtype=torch.float32) / max(wh - 1, 1)
    w = torch.arange(-(ww - 1), ww, dtype=torch.float32) / max(ww - 1, 1)
    table = torch.stack(torch.meshgrid(h, w, indexing="ij")).permute(1, 2, 0).unsqueeze(0) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class WindowAttentionV2(WindowAttention):
    """Swin-V2 window attention (Liu et al. 2022): cosine attention with a learned logit scale
    and a continuous relative position bias from a small MLP on log-spaced coordinates."""

    def __init__(self, dim: int, heads: int, head_dim: int, window: tuple[int, int], grid: tuple[int, int],
                 shift: tuple[int, int] = (0, 0), pad: tuple[int, int] = (0, 0), qkv_bias: bool = True,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, heads, head_dim, window, grid, shift, pad, qkv_bias=False, proj_bias=proj_bias,
                         attn_drop=attn_drop, proj_drop=proj_drop)
        del self.relative_position_bias_table
        inner = heads * head_dim
        self.logit_scale = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, heads, bias=False))
        self.q_bias = nn.Parameter(torch.zeros(inner)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(inner)) if qkv_bias else None
        self.register_buffer("relative_coords_table", _log_spaced_coords(*self.window), persistent=False)
        self.register_buffer("fused_scale", None, persistent=False)  # set by fold_constants() (inference)
        self.fused_qkv_bias = False  # fold_constants() (inference): the qkv layer holds the q/v bias

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if self.fused_bias is not None:
            return self._attend_folded(x)
        qkv = self._qkv_with_bias(x)
        q, k, v = qkv.reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()
        attn = attn + self.position_bias()
        if self.attn_mask is not None:
            nw = self.attn_mask.shape[0]
            attn = attn.view(-1, nw, self.heads, n, n) + self.attn_mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = F.dropout(attn.softmax(dim=-1), self.attn_drop, self.training)
        return (attn @ v).transpose(1, 2).reshape(-1, n, self.heads * self.head_dim)

    def _qkv_with_bias(self, x: torch.Tensor) -> torch.Tensor:
        """The qkv projection plus the q/0/v bias: one ``F.linear`` with that bias (one matmul,
        as timm's computes it) where ``qkv`` is a plain linear layer without hooks; otherwise
        the module is called (so that a LoRA tap or a hook on ``qkv`` takes part) and the bias
        added after it."""
        if self.q_bias is None:
            return self.qkv(x)
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        lin = self.qkv
        plain = type(lin) is nn.Linear or type(lin).__name__ == "OneDnnLinear"  # not a LoRA layer
        if (plain and lin.bias is None and not (lin._forward_hooks or lin._forward_pre_hooks)
                and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)):
            return F.linear(x, lin.weight, bias)
        return lin(x) + bias

    def position_bias(self) -> torch.Tensor:
        """The continuous position bias, 16 * sigmoid(cpb_mlp(coords)) at each pair: [1, heads, n, n]."""
        n = self.window[0] * self.window[1]
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
        rel = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(rel).unsqueeze(0)

    @torch.no_grad()
    def fold_constants(self) -> None:
        """For inference: evaluate the CPB MLP once (its bias, with the shift mask, goes into
        ``fused_bias``), the clamped logit scale (``fused_scale``) and, for a plain ``qkv``
        linear, its q/0/v bias, which becomes that layer's own ``bias`` buffer (so the linear
        layer adds it in its matmul); ``attend`` then runs one SDPA call on the scaled cosine
        queries. Non-persistent buffers: ``state_dict`` is unchanged."""
        bias = self.position_bias()
        if self.attn_mask is not None:
            nw = self.attn_mask.shape[0]
            n = bias.shape[-1]
            bias = (bias + self.attn_mask.unsqueeze(1)).reshape(1, nw * self.heads, n, n)
        self.fused_bias = bias.detach().clone()
        self.fused_scale = torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp().detach().clone()
        plain = isinstance(self.qkv, nn.Linear) and not any(k.startswith("lora") for k, _ in self.qkv.named_children())
        if plain and self.q_bias is not None and "bias" not in self.qkv._buffers and self.qkv.bias is None:
            del self.qkv._parameters["bias"]  # becomes a buffer below: the qkv layer's own (folded) bias
            self.qkv.register_buffer("bias", None, persistent=False)
        self.fused_qkv_bias = plain and "bias" in self.qkv._buffers
        if self.fused_qkv_bias:  # q, 0, v: the layer adds it itself (non-persistent, so state_dict keeps its keys)
            self.qkv.bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias)).detach()
        self._fold_window_index()  # shifted windows: one gather each way, as in WindowAttention

    def _attend_folded(self, x: torch.Tensor) -> torch.Tensor:
        """``attend`` with the constants folded (see :meth:`fold_constants`): one SDPA call."""
        n = x.shape[1]
        qkv = self.qkv(x)
        if self.q_bias is not None and not self.fused_qkv_bias:
            qkv = qkv + torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        q, k, v = qkv.reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        # cosine queries times the logit scale in one pass: q * (scale / |q|), |q| >= 1e-12 as F.normalize
        q = q * (self.fused_scale / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-12))
        k = F.normalize(k, dim=-1)
        if self.attn_mask is not None:
            nw = self.attn_mask.shape[0]
            q, k, v = (t.reshape(-1, nw * self.heads, n, self.head_dim) for t in (q, k, v))
        x = sdpa(q, k, v, attn_mask=self.fused_bias.to(q.dtype), scale=1.0,
                 dropout_p=self.attn_drop if self.training else 0.0)
        return x.reshape(-1, self.heads, n, self.head_dim).transpose(1, 2).reshape(-1, n, self.heads * self.head_dim)


def _halo_block(kernel: int, n: int) -> int:
    """The side of the query blocks of blocked local attention along an axis of ``n`` pixels:
    ``kernel`` (the whole axis when it is shorter), or else the largest size from ``kernel`` down
    to ``(kernel + 1) // 2`` that divides ``n``, so that no padded queries are computed.
    (archlang.cost.rules mirrors this choice.)"""
    if n <= kernel:
        return n
    for b in range(kernel, (kernel + 1) // 2 - 1, -1):
        if n % b == 0:
            return b
    return kernel


def _halo_mask(size: tuple[int, int], block: tuple[int, int], kernel: int, device: torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    """The additive mask (0 / -inf) of blocked local attention: [blocks, 1, queries, halo keys].
    Query (y, x) of a block sees key (y + dy, x + dx) for dy, dx in -kernel//2 .. kernel-1-kernel//2
    when the key lies inside the image; padded queries (cut off afterwards) see their
    neighbourhood whatever it holds, so that no row is empty."""
    lo, hi = kernel // 2, kernel - 1 - kernel // 2

    def axis(n: int, b: int) -> torch.Tensor:  # [blocks along the axis, b, b + kernel - 1]
        nb = -(-n // b)
        qs = torch.arange(nb * b, device=device).view(nb, b)
        ks = torch.arange(nb, device=device)[:, None] * b - lo + torch.arange(b + kernel - 1, device=device)
        rel = ks[:, None, :] - qs[:, :, None]
        return (rel >= -lo) & (rel <= hi) & (((ks >= 0) & (ks < n))[:, None, :] | (qs >= n)[:, :, None])

    rows, cols = axis(size[0], block[0]), axis(size[1], block[1])
    ok = (rows[:, None, :, None, :, None] & cols[None, :, None, :, None, :]).flatten(4).flatten(2, 3).flatten(0, 1)
    return torch.zeros(ok.shape, device=device, dtype=dtype).masked_fill_(~ok, float("-inf")).unsqueeze(1)


class LocalAttention(nn.Module):
    """Stand-alone self-attention (Ramachandran et al. 2019) on ``[B, H, W, C]``: each pixel's
    query attends to the keys and values of its k x k neighbourhood; positions beyond the
    border are masked out. Computed in blocks (HaloNet's blocking, Vaswani et al. 2021): the
    queries of each bh x bw block attend, through SDPA, to the (bh+k-1) x (bw+k-1) halo of keys
    around it with a mask, so memory grows as H*W*C (halo copies of k and v, ((b+k-1)/b)^2
    each) rather than the k^2 copies of an unfold."""

    def __init__(self, dim: int, heads: int, head_dim: int, kernel: int, qkv_bias: bool = True,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.kernel, self.attn_drop = heads, head_dim, kernel, attn_drop
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, _ = x.shape
        k, heads, hd = self.kernel, self.heads, self.head_dim
        bh, bw = _halo_block(k, H), _halo_block(k, W)
        nh, nw = -(-H // bh), -(-W // bw)
        ph, pw = nh * bh - H, nw * bw - W  # padded queries, cut off at the end
        lo, hi = k // 2, k - 1 - k // 2
        wh, ww = bh + k - 1, bw + k - 1  # the halo window of a block
        q, kv = self.qkv(x).split([heads * hd, 2 * heads * hd], dim=-1)
        if ph or pw:
            q = F.pad(q, (0, 0, 0, pw, 0, ph))
        # blocks first, then batch x heads (the mask broadcasts over them): [blocks, B * heads, bh * bw, hd]
        q = q.reshape(-1, nh, bh, nw, bw, heads, hd).permute(1, 3, 0, 5, 2, 4, 6).reshape(nh * nw, -1, bh * bw, hd)
        # each block's halo of keys and values, gathered from the zero-padded grid (Hk x Wk)
        Hk, Wk = nh * bh + k - 1, nw * bw + k - 1
        rows = torch.arange(nh, device=x.device)[:, None] * bh + torch.arange(wh, device=x.device)  # [nh, wh]
        cols = torch.arange(nw, device=x.device)[:, None] * bw + torch.arange(ww, device=x.device)  # [nw, ww]
        index = (rows[:, None, :, None] * Wk + cols[None, :, None, :]).flatten()  # [blocks * wh * ww]
        kv = F.pad(kv, (0, 0, lo, hi + pw, lo, hi + ph)).reshape(-1, Hk * Wk, 2, heads, hd)
        kv = kv.permute(2, 0, 3, 1, 4).index_select(3, index)  # [2, B, heads, blocks * wh * ww, hd]
        kv = kv.reshape(2, -1, nh * nw, wh * ww, hd).transpose(1, 2)  # [2, blocks, B * heads, wh * ww, hd], a view
        mask = _halo_mask((H, W), (bh, bw), k, x.device, q.dtype)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = out.reshape(nh, nw, -1, heads, bh, bw, hd).permute(2, 0, 4, 1, 5, 3, 6).reshape(-1, nh * bh, nw * bw, heads * hd)
        if ph or pw:
            out = out[:, :H, :W]
        return self.proj_drop(self.proj(out))


class PooledAttention(nn.Module):
    """MViTv2 pooling attention (Li et al. 2022) on ``[B, cls + H*W, C]`` tokens: q, k and v are
    pooled by strided depthwise convs (+ LayerNorm) before attending; decomposed relative
    positions and residual pooling as in the paper (and timm's MultiScaleAttention)."""

    def __init__(self, dim: int, dim_out: int, heads: int, grid: tuple[int, int], cls: int = 0,
                 kernel_q: tuple[int, int] = (3, 3), stride_q: tuple[int, int] = (1, 1),
                 kernel_kv: tuple[int, int] = (3, 3), stride_kv: tuple[int, int] = (1, 1),
                 qkv_bias: bool = True, residual_pooling: bool = True, rel_pos: bool = True):
        super().__init__()
        self.heads, self.head_dim, self.dim_out = heads, dim_out // heads, dim_out
        self.grid, self.cls, self.residual_pooling = tuple(grid), cls, residual_pooling
        self.stride_q, self.stride_kv = tuple(stride_q), tuple(stride_kv)
        hd = self.head_dim
        self.qkv = nn.Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        pad_q = (kernel_q[0] // 2, kernel_q[1] // 2)
        pad_kv = (kernel_kv[0] // 2, kernel_kv[1] // 2)
        self.pool_q = nn.Conv2d(hd, hd, kernel_q, stride=stride_q, padding=pad_q, groups=hd, bias=False)
        self.norm_q = nn.LayerNorm(hd, eps=1e-6)
        self.pool_k = nn.Conv2d(hd, hd, kernel_kv, stride=stride_kv, padding=pad_kv, groups=hd, bias=False)
        self.norm_k = nn.LayerNorm(hd, eps=1e-6)
        self.pool_v = nn.Conv2d(hd, hd, kernel_kv, stride=stride_kv, padding=pad_kv, groups=hd, bias=False)
        self.norm_v = nn.LayerNorm(hd, eps=1e-6)
        self.q_grid = tuple((g + 2 * (k // 2) - k) // s + 1 for g, k, s in zip(grid, kernel_q, stride_q, strict=True))
        self.kv_grid = tuple((g + 2 * (k // 2) - k) // s + 1 for g, k, s in zip(grid, kernel_kv, stride_kv, strict=True))
        self.rel_pos = rel_pos
        if rel_pos:
            size_h, size_w = max(self.q_grid[0], self.kv_grid[0]), max(self.q_grid[1], self.kv_grid[1])
            self.rel_pos_h = _trunc_normal(2 * size_h - 1, hd)
            self.rel_pos_w = _trunc_normal(2 * size_w - 1, hd)

    def _pool(self, t: torch.Tensor, pool: nn.Conv2d, norm: nn.LayerNorm) -> torch.Tensor:
        cls, t = t[:, :, : self.cls], t[:, :, self.cls:]
        t = t.reshape(-1, self.grid[0], self.grid[1], self.head_dim).permute(0, 3, 1, 2)  # [B * heads, hd, h, w]
        t = pool(t)
        t = t.unflatten(0, (-1, self.heads)).flatten(3).transpose(2, 3)
        return norm(torch.cat([cls, t], dim=2))

    def _rel_pos_bias(self, attn: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        (qh, qw), (kh, kw) = self.q_grid, self.kv_grid

        def rel(qs: int, ks: int, table: torch.Tensor) -> torch.Tensor:
            q_ratio, k_ratio = max(ks / qs, 1.0), max(qs / ks, 1.0)
            dist = (torch.arange(qs, device=q.device)[:, None] * q_ratio
                    - torch.arange(ks, device=q.device)[None, :] * k_ratio + (ks - 1) * k_ratio)
            return table[dist.long()]

        rh, rw = rel(qh, kh, self.rel_pos_h), rel(qw, kw, self.rel_pos_w)
        r_q = q[:, :, self.cls:].unflatten(2, (qh, qw))
        bh = torch.einsum("byhwc,hkc->byhwk", r_q, rh)
        bw = torch.einsum("byhwc,wkc->byhwk", r_q, rw)
        bias = (bh[:, :, :, :, :, None] + bw[:, :, :, :, None, :]).reshape(-1, self.heads, qh * qw, kh * kw)
        return attn + F.pad(bias, (self.cls, 0, self.cls, 0))  # no bias on the class tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        q = self._pool(q, self.pool_q, self.norm_q)
        k = self._pool(k, self.pool_k, self.norm_k)
        v = self._pool(v, self.pool_v, self.norm_v)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        if self.rel_pos:
            attn = self._rel_pos_bias(attn, q)
        x = attn.softmax(dim=-1) @ v
        if self.residual_pooling:
            x = x + q
        return self.proj(x.transpose(1, 2).flatten(2))


class LoRA(nn.Module):
    """A low-rank update ``B A`` scaled by alpha/r (Hu et al. 2021): A is Kaiming-initialised
    and B starts at zero, so a tapped layer computes exactly what it did before training."""

    def __init__(self, fan_in: int, fan_out: int, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.scale = alpha / r
        self.A = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(r, fan_in), a=math.sqrt(5)))
        self.B = nn.Parameter(torch.zeros(fan_out, r))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x) @ self.A.t() @ self.B.t()) * self.scale

    def delta_weight(self) -> torch.Tensor:
        return (self.B @ self.A) * self.scale


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` with LoRA updates on all its rows (``lora``) or on named row blocks of
    a fused projection (``lora_q`` and ``lora_v`` of a qkv whose blocks are q, k, v)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if not self.fused:
            return y + self.lora(x)
        # each tapped block's update, zero-padded to the block's rows (padding, not zeros of a
        # size read from x, so an exported graph takes any batch size)
        size = self.out_features // len(self.fused)
        for i, p in enumerate(self.fused):
            if p in self.parts:
                y = y + F.pad(getattr(self, f"lora_{p}")(x), (i * size, self.out_features - (i + 1) * size))
        return y

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the updates folded into its weight."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        w = self.weight.detach().clone()
        if not self.fused:
            w += self.lora.delta_weight()
        else:
            size = self.out_features // len(self.fused)
            for i, p in enumerate(self.fused):
                if p in self.parts:
                    w[i * size:(i + 1) * size] += getattr(self, f"lora_{p}").delta_weight()
        out.weight.copy_(w)
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out.to(self.weight.device)


def add_lora(module: nn.Module, attr: str, lora: dict[str, tuple[int, float, float]],
             fused: tuple[str, ...] = ()) -> nn.Module:
    """Tap ``module.<attr>`` (the module itself when ``attr`` is "") with LoRA and return
    ``module``. ``lora`` maps a part ("" for all rows, or a block of ``fused``) to
    (r, alpha, dropout)."""
    base = getattr(module, attr) if attr else module
    tapped = LoRALinear.__new__(LoRALinear)
    nn.Module.__init__(tapped)
    tapped.in_features, tapped.out_features = base.in_features, base.out_features
    tapped.weight, tapped.bias = base.weight, base.bias
    tapped.fused, tapped.parts = tuple(fused), tuple(lora)
    size = base.out_features // (len(fused) or 1)
    for part, (r, alpha, dropout) in lora.items():
        tapped.add_module(f"lora_{part}" if part else "lora", LoRA(base.in_features, size, r, alpha, dropout))
    if attr:
        setattr(module, attr, tapped)
        return module
    return tapped


def set_trainable(model: nn.Module, rules: list[tuple[str, tuple[str, ...]]]) -> None:
    """Apply the spec's fine-tuning rules in order (see archlang.ir.adapters): ``freeze`` /
    ``unfreeze`` a glob over parameter names or their dotted prefixes, ``bitfit`` trains the
    biases under it. LoRA weights always train."""
    import fnmatch

    def hit(name: str, selectors: tuple[str, ...]) -> bool:
        parts = name.split(".")
        prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatchcase(p, s) for p in prefixes for s in selectors)

    for name, p in model.named_parameters():
        if ".lora" in name:
            continue
        for action, selectors in rules:
            if hit(name, selectors) and (action != "bitfit" or name.endswith("bias")):
                p.requires_grad_(action != "freeze")


def attention_bias(n: int, m: int, heads: int = 1, batch: int = 1, *, bias=None, mask=None, causal: bool = False,
                   device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The additive score bias of attention over ``n`` queries and ``m`` keys: ``bias(b, h,
    q_idx, kv_idx)`` where ``mask(b, h, q_idx, kv_idx)`` holds (and, when ``causal``, the key
    is not after the query), ``-inf`` elsewhere. The index arguments are broadcastable aranges,
    b ``[batch, 1, 1, 1]``, h ``[heads, 1, 1]``, q_idx ``[n, 1]`` and kv_idx ``[m]``, so the result
    broadcasts over ``[batch, heads, n, m]`` (SDPA's ``attn_mask``)."""
    b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    h = torch.arange(heads, device=device).view(-1, 1, 1)
    q_idx = torch.arange(n, device=device).view(-1, 1)
    kv_idx = torch.arange(m, device=device)
    out = torch.zeros((), device=device, dtype=dtype)
    if bias is not None:
        out = out + bias(b, h, q_idx, kv_idx)
    keep = mask(b, h, q_idx, kv_idx) if mask is not None else None
    if causal:
        keep = kv_idx <= q_idx if keep is None else keep & (kv_idx <= q_idx)
    if keep is not None:
        out = torch.where(keep, out, float("-inf"))
    return out.to(dtype or torch.get_default_dtype())


def scored_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, score_mod, attn_mask=None,
                     scale: float | None = None, dropout_p: float = 0.0, enable_gqa: bool = False) -> torch.Tensor:
    """Attention whose scores pass through ``score_mod(score, b, h, q_idx, kv_idx)`` (as
    FlexAttention's), written out as SDPA's math backend computes it: SDPA has no score hook."""
    if enable_gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    score = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    n, m = score.shape[-2:]
    score = score_mod(score, torch.arange(score.shape[0], device=q.device).view(-1, 1, 1, 1),
                      torch.arange(score.shape[1], device=q.device).view(-1, 1, 1),
                      torch.arange(n, device=q.device).view(-1, 1), torch.arange(m, device=q.device))
    if attn_mask is not None:
        score = score + attn_mask
    return F.dropout(score.softmax(dim=-1), dropout_p) @ v


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, score_mod=None, block_mask=None,
                   scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """``torch.nn.attention.flex_attention.flex_attention`` (fused when the model is compiled).
    FlexAttention has no backward on the CPU: there, when a gradient is needed, the same
    attention is written out (``scored_attention`` with the block mask's ``mask_mod``)."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        mask = None if block_mask is None else attention_bias(
            q.shape[-2], k.shape[-2], q.shape[1], q.shape[0], mask=block_mask.mask_mod, device=q.device, dtype=q.dtype)
        return scored_attention(q, k, v, score_mod or (lambda score, b, h, q_idx, kv_idx: score), mask, scale,
                                enable_gqa=enable_gqa)
    from torch.nn.attention.flex_attention import flex_attention as flex

    return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa)


def block_mask(mask_mod, batch: int | None, heads: int | None, n: int, m: int, device: torch.device):
    """FlexAttention's ``BlockMask`` of ``mask_mod(b, h, q_idx, kv_idx)``: blocks where it never
    holds are skipped (``batch``/``heads`` None: the mask is the same for every example/head)."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, batch, heads, n, m, device=device)
