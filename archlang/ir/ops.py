"""The op vocabulary's base classes and the built-in ops of the IR.

Takes: nothing (pure definitions). Produces: one frozen pydantic class per op holding its
typed attributes (the ``op`` field is its tag), and for ops with weights,
:meth:`OpBase.parameters` giving each weight's local name and shape. Defining a subclass of
:class:`OpBase` with a literal ``op`` tag registers it (:func:`op_classes`, :func:`op_class`),
so the vocabulary is open: the family modules of :mod:`archlang.ops` hold each op's rules
(signature, shape, cost, lowering, drawing, interpreter) in one file. The classes below
predate that layout and stay here (every stage, codegen, the cost report and interop name
them as ``O.X`` at import time, some in module-level tuples, so moving them would make
those imports depend on the order the families load); all of their rules are in the family
modules (``archlang/ops/layers.py``, ``norms.py``, ``elementwise.py``, ``shape.py``,
``pooling.py``, ``tokens.py``, ``mixing.py``, ``multihead.py``, ``graph.py``). Newer ops
define their class in their family module too. Tests fail when an op lacks a rule.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from archlang.ir.dims import Dim
from archlang.ir.types import TensorType

DimT = Union[int, Dim]  # noqa: UP007


class ParamSpec(BaseModel):
    """One weight tensor of an op: its name relative to the node, its shape, and its role."""

    model_config = ConfigDict(frozen=True)

    name: str  # "" when the node itself is the parameter (cls_token, pos_embed)
    shape: tuple[int, ...]
    role: Literal["weight", "bias", "norm", "embedding", "token", "pos", "rel_pos"] = "weight"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class BufferSpec(BaseModel):
    """A non-learned tensor computed at construction (masks, index tables, sinusoids)."""

    model_config = ConfigDict(frozen=True)

    name: str
    shape: tuple[int, ...]
    persistent: bool = False


# Every concrete op class, by its tag: filled as classes are defined (here and in the family
# modules of :mod:`archlang.ops`), never listed by hand. See :func:`op_classes`.
_BY_TAG: dict[str, type[OpBase]] = {}


class OpBase(BaseModel):
    """The base of every op. A subclass whose ``op`` field has a literal default is a concrete
    op: defining it registers it under that tag (two classes may not share a tag)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")  # inf bounds round-trip

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: object) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("op")
        tag = field.default if field is not None else None
        if not isinstance(tag, str):
            return  # an abstract base (_AttnCommon)
        other = _BY_TAG.get(tag)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"op tag {tag!r} is taken by {other.__module__}.{other.__qualname__}")
        _BY_TAG[tag] = cls

    def parameters(self) -> tuple[ParamSpec, ...]:
        return ()

    def param_count(self) -> int:
        return sum(p.numel for p in self.parameters())

    def buffers(self) -> tuple[BufferSpec, ...]:
        return ()

    def rows_independent(self, axis: int, rank: int) -> bool:
        """Whether row ``i`` of the output along ``axis`` (0 .. ``rank`` - 1; the output and the
        inputs that have its size there are rank ``rank``) is computed from row ``i`` of those
        inputs alone (inputs broadcast along ``axis`` are read whole), the same random draws
        included: then an op whose output is read only through its first rows there may
        compute only those (:func:`archlang.check.rows.prune_dead_rows`). False unless an op
        says otherwise."""
        return False


def _wb(out_f: int, in_f: int, bias: bool) -> tuple[ParamSpec, ...]:
    w = ParamSpec(name="weight", shape=(out_f, in_f))
    return (w, ParamSpec(name="bias", shape=(out_f,), role="bias")) if bias else (w,)


# --------------------------------------------------------------------------- graph boundary


class Input(OpBase):
    """A declared input of the graph (``in x: [B, C]``): its name and tensor type."""

    op: Literal["input"] = "input"
    name: str
    type: TensorType


class Output(OpBase):
    """A declared output of the graph (``out y = ...``): its name; it passes its input through."""

    op: Literal["output"] = "output"
    name: str


# --------------------------------------------------------------------------- layers with weights


class Linear(OpBase):
    """An affine map of the last dim: ``[*, in_features] -> [*, out_features]``."""

    op: Literal["linear"] = "linear"
    in_features: int
    out_features: int
    bias: bool = True

    def parameters(self) -> tuple[ParamSpec, ...]:
        return _wb(self.out_features, self.in_features, self.bias)

    def rows_independent(self, axis: int, rank: int) -> bool:
        return axis < rank - 1


class Conv2d(OpBase):
    """A 2-d convolution on ``[B, C, H, W]``; ``standardize`` gives weight standardisation (BiT)."""

    op: Literal["conv2d"] = "conv2d"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    bias: bool = True
    standardize: bool = False
    std_eps: float = 1e-6
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # extra (left, right, top, bottom) zeros: TF "same"

    def parameters(self) -> tuple[ParamSpec, ...]:
        w = ParamSpec(name="weight", shape=(self.out_channels, self.in_channels // self.groups, *self.kernel))
        if self.bias:
            return (w, ParamSpec(name="bias", shape=(self.out_channels,), role="bias"))
        return (w,)


class Conv1d(OpBase):
    """A 1-d convolution on ``[B, C, T]`` (Conformer's depthwise and pointwise convs)."""

    op: Literal["conv1d"] = "conv1d"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = True

    def parameters(self) -> tuple[ParamSpec, ...]:
        w = ParamSpec(name="weight", shape=(self.out_channels, self.in_channels // self.groups, self.kernel))
        if self.bias:
            return (w, ParamSpec(name="bias", shape=(self.out_channels,), role="bias"))
        return (w,)


class LayerNorm(OpBase):
    """LayerNorm over the ``dim`` features of axis ``axis`` (-1: the last; 1: channels of NCHW),
    with a learned weight when ``affine`` and a learned bias when also ``bias``."""

    op: Literal["layernorm"] = "layernorm"
    dim: int
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True
    axis: int = -1

    def rows_independent(self, axis: int, rank: int) -> bool:
        return axis != self.axis % rank

    def parameters(self) -> tuple[ParamSpec, ...]:
        if not self.affine:
            return ()
        w = ParamSpec(name="weight", shape=(self.dim,), role="norm")
        return (w, ParamSpec(name="bias", shape=(self.dim,), role="bias")) if self.bias else (w,)


class BatchNorm(OpBase):
    """Batch norm over dim 1 of ``[B, C, ...]``; running stats are persistent buffers."""

    op: Literal["batchnorm"] = "batchnorm"
    channels: int
    eps: float = 1e-5
    momentum: float = 0.1

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="weight", shape=(self.channels,), role="norm"),
                ParamSpec(name="bias", shape=(self.channels,), role="bias"))

    def buffers(self) -> tuple[BufferSpec, ...]:
        return (BufferSpec(name="running_mean", shape=(self.channels,), persistent=True),
                BufferSpec(name="running_var", shape=(self.channels,), persistent=True),
                BufferSpec(name="num_batches_tracked", shape=(), persistent=True))


class GroupNorm(OpBase):
    """GroupNorm over dim 1 of ``[B, C, ...]``: ``groups`` groups of channels, each normalised with learned weight and bias."""

    op: Literal["groupnorm"] = "groupnorm"
    groups: int
    channels: int
    eps: float = 1e-5

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="weight", shape=(self.channels,), role="norm"),
                ParamSpec(name="bias", shape=(self.channels,), role="bias"))


class Embedding(OpBase):
    """A table lookup: integer ids ``int[*]`` -> ``[*, dim]`` rows of a learned ``[num, dim]`` table."""

    op: Literal["embedding"] = "embedding"
    num: int
    dim: int

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="weight", shape=(self.num, self.dim), role="embedding"),)


class PrependToken(OpBase):
    """Prepend a learned token (class / distillation) to ``[B, N, D]``; the node is the parameter."""

    op: Literal["prepend_token"] = "prepend_token"
    dim: int

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="", shape=(1, 1, self.dim), role="token"),)


class PosEmbed(OpBase):
    """Add a positional embedding to ``[B, N, D]``: learned (a parameter) or fixed sinusoidal."""

    op: Literal["pos_embed"] = "pos_embed"
    kind: Literal["learned", "sinusoidal"]
    length: int
    dim: int

    def parameters(self) -> tuple[ParamSpec, ...]:
        if self.kind == "learned":
            return (ParamSpec(name="", shape=(1, self.length, self.dim), role="pos"),)
        return ()

    def buffers(self) -> tuple[BufferSpec, ...]:
        if self.kind == "sinusoidal":
            return (BufferSpec(name="pe", shape=(1, self.length, self.dim)),)
        return ()


class ChannelScale(OpBase):
    """Multiply the last dim by a learned vector (LayerScale, ResMLP's ls): the node is the parameter."""

    op: Literal["channel_scale"] = "channel_scale"
    dim: int
    init: float = 1.0
    axis: int = -1  # the scaled axis: -1 the last, 1 the channels of NCHW

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="", shape=(self.dim,), role="norm"),)

    def rows_independent(self, axis: int, rank: int) -> bool:
        return axis != self.axis % rank


class Affine(OpBase):
    """ResMLP's Affine norm: ``alpha * x + beta`` with learned per-channel alpha and beta."""

    op: Literal["affine"] = "affine"
    dim: int

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="alpha", shape=(1, 1, self.dim), role="norm"),
                ParamSpec(name="beta", shape=(1, 1, self.dim), role="bias"))


class TiedLinear(OpBase):
    """A linear map whose weight is an embedding table's (a tied LM head): ``x @ E^T``."""

    op: Literal["tied_linear"] = "tied_linear"
    source: str  # the embedding node whose weight is shared
    in_features: int
    out_features: int


class LearnedTokens(OpBase):
    """``n`` learned vectors broadcast over the batch of ``like``: [B, n, dim] (task queries)."""

    op: Literal["learned_tokens"] = "learned_tokens"
    n: int
    dim: int

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec(name="", shape=(1, self.n, self.dim), role="token"),)


class SpatialShift(OpBase):
    """S2-MLP's spatial shift on [B, H, W, C]: four channel groups move one step right, left,
    down and up (zeros enter at the border)."""

    op: Literal["spatial_shift"] = "spatial_shift"


class ChannelShift(OpBase):
    """CycleMLP's cycle pattern on [B, H, W, C]: channel i reads its neighbour at offset
    ``(i + 1) % size - size // 2`` along ``dim`` (1 = H, 2 = W), zeros past the border."""

    op: Literal["channel_shift"] = "channel_shift"
    dim: int
    size: int


# --------------------------------------------------------------------------- attention


class _AttnCommon(OpBase):
    dim: int
    heads: int
    head_dim: int
    qkv_bias: bool = True
    proj_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (*_prefix("qkv", _wb(3 * self.inner, self.dim, self.qkv_bias)),
                *_prefix("proj", _wb(self.dim, self.inner, self.proj_bias)))


def _prefix(p: str, specs: tuple[ParamSpec, ...]) -> tuple[ParamSpec, ...]:
    return tuple(s.model_copy(update={"name": f"{p}.{s.name}" if s.name else p}) for s in specs)


class Attention(_AttnCommon):
    """Multi-head self-attention over ``[B, N, C]`` (global, or causal) with a fused qkv.

    ``queries`` > 0: only the first ``queries`` tokens attend (keys and values still come from
    every token) and the output is ``[B, queries, C]``; causal, query ``i`` still sees keys
    ``0 .. i``. The spec does not write it: :func:`archlang.check.rows.prune_dead_rows` sets it
    where nothing reads the other tokens' outputs (ViT's last block, whose class token alone
    reaches the head). Left out of the JSON at 0."""

    op: Literal["attention"] = "attention"
    causal: bool = False
    queries: int = Field(default=0, ge=0, exclude_if=lambda v: v == 0)


class RelPosAttention(_AttnCommon):
    """Self-attention over ``[B, T, C]`` with Transformer-XL relative positional encoding
    (Dai et al. 2019), as Conformer uses it: sinusoidal relative positions projected by
    ``pos`` and two learned biases ``pos_bias_u`` (content) and ``pos_bias_v`` (position)."""

    op: Literal["rel_pos_attention"] = "rel_pos_attention"

    def parameters(self) -> tuple[ParamSpec, ...]:
        return (*super().parameters(), ParamSpec(name="pos.weight", shape=(self.inner, self.dim)),
                ParamSpec(name="pos_bias_u", shape=(self.heads, self.head_dim), role="rel_pos"),
                ParamSpec(name="pos_bias_v", shape=(self.heads, self.head_dim), role="rel_pos"))


class CrossAttention(OpBase):
    """Queries from ``x: [B, N, C]``, keys and values from ``context: [B, M, Ck]``."""

    op: Literal["cross_attention"] = "cross_attention"
    dim: int
    context_dim: int
    heads: int
    head_dim: int
    qkv_bias: bool = True
    proj_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0

    def parameters(self) -> tuple[ParamSpec, ...]:
        inner = self.heads * self.head_dim
        return (*_prefix("q", _wb(inner, self.dim, self.qkv_bias)),
                *_prefix("kv", _wb(2 * inner, self.context_dim, self.qkv_bias)),
                *_prefix("proj", _wb(self.dim, inner, self.proj_bias)))


class WindowAttention(_AttnCommon):
    """Swin (shifted-)window attention on ``[B, H, W, C]`` with a relative position bias.

    ``window`` and ``shift`` are the effective values after the clamping rule;
    ``pad`` is the bottom/right padding that makes the grid a multiple of the window.
    """

    op: Literal["window_attention"] = "window_attention"
    window: tuple[int, int]
    shift: tuple[int, int] = (0, 0)
    grid: tuple[int, int]
    pad: tuple[int, int] = (0, 0)

    def parameters(self) -> tuple[ParamSpec, ...]:
        wh, ww = self.window
        table = ParamSpec(name="relative_position_bias_table",
                          shape=((2 * wh - 1) * (2 * ww - 1), self.heads), role="rel_pos")
        return (table, *super().parameters())

    def buffers(self) -> tuple[BufferSpec, ...]:
        n = self.window[0] * self.window[1]
        out = [BufferSpec(name="relative_position_index", shape=(n, n))]
        if any(self.shift):
            nw = ((self.grid[0] + self.pad[0]) // self.window[0]) * ((self.grid[1] + self.pad[1]) // self.window[1])
            out.append(BufferSpec(name="attn_mask", shape=(nw, n, n)))
        return tuple(out)


class WindowAttentionV2(WindowAttention):
    """Swin-V2 window attention (Liu et al. 2022): cosine similarity scaled by a learned,
    clamped logit scale; a continuous position bias from a small MLP (``cpb_mlp``) on
    log-spaced relative coordinates; q and v biases (no k bias)."""

    op: Literal["window_attention_v2"] = "window_attention_v2"  # type: ignore[assignment]
    cpb_hidden: int = 512

    def parameters(self) -> tuple[ParamSpec, ...]:
        c, h = self.dim, self.heads
        out = [ParamSpec(name="logit_scale", shape=(h, 1, 1), role="rel_pos"),
               ParamSpec(name="cpb_mlp.0.weight", shape=(self.cpb_hidden, 2)),
               ParamSpec(name="cpb_mlp.0.bias", shape=(self.cpb_hidden,), role="bias"),
               ParamSpec(name="cpb_mlp.2.weight", shape=(h, self.cpb_hidden)),
               ParamSpec(name="qkv.weight", shape=(3 * self.inner, c))]
        if self.qkv_bias:
            out += [ParamSpec(name="q_bias", shape=(self.inner,), role="bias"),
                    ParamSpec(name="v_bias", shape=(self.inner,), role="bias")]
        out += list(_prefix("proj", _wb(c, self.inner, self.proj_bias)))
        return tuple(out)


class LocalAttention(_AttnCommon):
    """Stand-alone local self-attention on ``[B, H, W, C]``: each pixel attends to its
    ``kernel`` x ``kernel`` neighbourhood (zero-padded at the borders, masked out)."""

    op: Literal["local_attention"] = "local_attention"
    kernel: int


class PooledAttention(OpBase):
    """MViT pooling attention on ``[B, N, C]`` tokens laid out on a ``grid`` (plus ``cls``
    leading tokens): q, k and v are pooled by strided depthwise convs before attending."""

    op: Literal["pooled_attention"] = "pooled_attention"
    dim: int
    dim_out: int
    heads: int
    grid: tuple[int, int]
    cls: int = 0
    kernel_q: tuple[int, int] = (3, 3)
    stride_q: tuple[int, int] = (1, 1)
    kernel_kv: tuple[int, int] = (3, 3)
    stride_kv: tuple[int, int] = (1, 1)
    qkv_bias: bool = True
    residual_pooling: bool = True
    rel_pos: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim_out // self.heads

    def out_grid(self) -> tuple[int, int]:
        return tuple(_pool_len(g, k, s) for g, k, s in zip(self.grid, self.kernel_q, self.stride_q, strict=True))  # type: ignore[return-value]

    def kv_grid(self) -> tuple[int, int]:
        return tuple(_pool_len(g, k, s) for g, k, s in zip(self.grid, self.kernel_kv, self.stride_kv, strict=True))  # type: ignore[return-value]

    def parameters(self) -> tuple[ParamSpec, ...]:
        hd = self.head_dim
        out = [*_prefix("qkv", _wb(3 * self.dim_out, self.dim, self.qkv_bias)),
               *_prefix("proj", _wb(self.dim_out, self.dim_out, True))]
        for name, k in (("q", self.kernel_q), ("k", self.kernel_kv), ("v", self.kernel_kv)):
            out.append(ParamSpec(name=f"pool_{name}.weight", shape=(hd, 1, *k)))
            out.append(ParamSpec(name=f"norm_{name}.weight", shape=(hd,), role="norm"))
            out.append(ParamSpec(name=f"norm_{name}.bias", shape=(hd,), role="bias"))
        if self.rel_pos:
            qg, kg = self.out_grid(), self.kv_grid()
            size = max(qg[0], kg[0])
            out.append(ParamSpec(name="rel_pos_h", shape=(2 * size - 1, hd), role="rel_pos"))
            size = max(qg[1], kg[1])
            out.append(ParamSpec(name="rel_pos_w", shape=(2 * size - 1, hd), role="rel_pos"))
        return tuple(out)


def _pool_len(n: int, k: int, s: int) -> int:
    return (n + 2 * (k // 2) - k) // s + 1


# --------------------------------------------------------------------------- parameter-free ops


class Activation(OpBase):
    """An elementwise activation chosen by name (GELU exact or tanh, ReLU, SiLU, tanh, sigmoid)."""

    op: Literal["activation"] = "activation"
    fn: Literal["gelu", "gelu_tanh", "relu", "silu", "tanh", "sigmoid"]

    def rows_independent(self, axis: int, rank: int) -> bool:
        return True


class Glu(OpBase):
    """Gated linear unit: split the last (or given) dim in halves, ``a * sigmoid(b)``."""

    op: Literal["glu"] = "glu"
    dim: int = -1


class Softmax(OpBase):
    """Softmax along ``dim``."""

    op: Literal["softmax"] = "softmax"
    dim: int = -1


class Dropout(OpBase):
    """Dropout with probability ``p`` (training only; the identity in eval mode)."""

    op: Literal["dropout"] = "dropout"
    p: float

    def rows_independent(self, axis: int, rank: int) -> bool:
        return self.p == 0  # it draws one number per element: fewer rows, other draws


class DropPath(OpBase):
    """Stochastic depth: drop whole samples of a residual branch with probability ``p``."""

    op: Literal["drop_path"] = "drop_path"
    p: float

    def rows_independent(self, axis: int, rank: int) -> bool:
        return axis != 0  # one draw per sample, whatever the other axes hold


class Binary(OpBase):
    """Elementwise ``+ - * /`` of two tensors, with broadcasting."""

    op: Literal["binary"] = "binary"
    fn: Literal["add", "sub", "mul", "div"]

    def rows_independent(self, axis: int, rank: int) -> bool:
        return True


class Scale(OpBase):
    """Multiply (or add) a tensor by a compile-time constant: ``x * 0.5``, ``x + 1``."""

    op: Literal["scale"] = "scale"
    factor: float = 1.0
    offset: float = 0.0

    def rows_independent(self, axis: int, rank: int) -> bool:
        return True


class RearrangeAxis(BaseModel):
    """One elementary axis of an einops pattern, with its size."""

    model_config = ConfigDict(frozen=True)

    name: str
    size: DimT


class Rearrange(OpBase):
    """einops-style reshape/permute. ``lhs``/``rhs`` are groups of elementary axis names,
    e.g. ``b (h p) (w q) c -> b h w (p q c)`` is lhs ((b,), (h, p), (w, q), (c,))."""

    op: Literal["rearrange"] = "rearrange"
    lhs: tuple[tuple[str, ...], ...]
    rhs: tuple[tuple[str, ...], ...]
    axes: tuple[RearrangeAxis, ...]

    def pattern(self) -> str:
        def side(groups: tuple[tuple[str, ...], ...]) -> str:
            return " ".join(g[0] if len(g) == 1 else "(" + " ".join(g) + ")" for g in groups)
        return f"{side(self.lhs)} -> {side(self.rhs)}"


class Concat(OpBase):
    """Concatenate tensors along ``dim``."""

    op: Literal["concat"] = "concat"
    dim: int


class Split(OpBase):
    """Split ``dim`` into consecutive pieces of ``sizes``."""

    op: Literal["split"] = "split"
    sizes: tuple[int, ...]
    dim: int


class Mean(OpBase):
    """The mean over ``dims`` (kept as size-1 dims when ``keepdim``)."""

    op: Literal["mean"] = "mean"
    dims: tuple[int, ...]
    keepdim: bool = False


class Pool2d(OpBase):
    """Max or average pooling on ``[B, C, H, W]``."""

    op: Literal["pool2d"] = "pool2d"
    kind: Literal["max", "avg"]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # extra (left, right, top, bottom): TF "same", -inf for max
    count_include_pad: bool = True  # avg: the `padding` zeros count in the average (False: only real inputs)


class Take(OpBase):
    """Select one index along ``dim``, removing it: ``x[:, 0]`` is take(index=0, dim=1)."""

    op: Literal["take"] = "take"
    index: int
    dim: int


class SliceOp(OpBase):
    """Keep ``start .. stop`` along ``dim``, every ``step``-th item (``x[:, 1:7:2]``)."""

    op: Literal["slice"] = "slice"
    start: int
    stop: int
    dim: int
    step: int = Field(default=1, exclude_if=lambda v: v == 1)  # left out of the JSON at 1: IR digests stay


class Identity(OpBase):
    """Pass the input through."""

    op: Literal["identity"] = "identity"

    def rows_independent(self, axis: int, rank: int) -> bool:
        return True


class Roll(OpBase):
    """Cyclic shift along dims (``torch.roll``)."""

    op: Literal["roll"] = "roll"
    shifts: tuple[int, ...]
    dims: tuple[int, ...]


class Matmul(OpBase):
    """Batched matrix product ``a @ b`` on the last two dims."""

    op: Literal["matmul"] = "matmul"


def op_classes() -> tuple[type[OpBase], ...]:
    """Every op class defined so far, in definition order. The family modules of
    :mod:`archlang.ops` add theirs when ``archlang`` is imported, so after ``import archlang``
    this is the whole vocabulary."""
    return tuple(_BY_TAG.values())


def op_class(tag: str) -> type[OpBase] | None:
    """The op class with tag ``tag`` (``"linear"``), or None."""
    return _BY_TAG.get(tag)
