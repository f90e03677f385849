"""A reference interpreter of the IR: the oracle the generated PyTorch code is tested against.

Takes: a checked :class:`~archlang.ir.graph.Graph`, a mapping of ``state_dict``-style names
to tensors (the parameters and persistent buffers: node ``n``'s parameter ``p`` is at
``f"{n.name}.{p.name}"``, or at ``n.name`` when ``p.name`` is ``""``; LoRA weights where
:func:`archlang.ir.adapters.lora_param_name` puts them), and one tensor per graph input.
Produces: the graph's outputs, in ``graph.outputs`` order, computed node by node.

Each op class has one *eval rule* in :data:`EVAL_RULES` (a test fails when one is missing),
written in the op's family module of :mod:`archlang.ops` (``define(..., interpret=...)``,
importing torch inside its body) and merged here when this module loads; this module keeps
the evaluator and the helpers the rules share (``attend``, ``split_heads``, ``windowed``,
``normalise``...; public names at the bottom). A rule is a small, unfused torch function written from the op's definition (the docstrings
of :mod:`archlang.ir.ops`, the language section of the README, and what timm / PyTorch
compute); it may call ``torch.nn.functional`` for convolutions but never the prelude helpers
(:mod:`archlang.lower.prelude`) or generated classes. Attention is written as explicit
``softmax(q @ k^T * scale + bias) @ v``; Swin windows, shift masks, relative position
indices, Swin-V2's log-spaced coordinates, local neighbourhoods, MViT's pooling and the
Transformer-XL relative shift are computed here from their definitions. Non-persistent
buffers (masks, index tables, sinusoidal tables) are never read from a model: the
interpreter computes them itself, in the dtype of the data.

Conventions that match the generated code (and timm / torch.nn): LayerNorm / BatchNorm /
GroupNorm normalise with the biased variance; MViT's pooled q/k/v norms use eps 1e-6; the
attention scale is ``head_dim ** -0.5`` (Swin-V2: a learned logit scale clamped at
``log(100)`` on cosine similarities); the Swin shift mask is -100 between regions; GELU is
exact (``gelu_tanh`` is the tanh approximation); avg pooling counts padded zeros.

Limits of the oracle:
- Dropout, drop-path and LoRA dropout are the identity in eval mode and when ``p == 0``; in
  train mode with ``p > 0`` a rule raises :class:`InterpretError` (random masks cannot be
  compared); the oracle covers ``p = 0`` only.
- BatchNorm in train mode normalises with the batch statistics and does *not* update the
  running statistics (the interpreter is pure; it never writes the tensors it is given).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlang.ir import ops as O
from archlang.ir.adapters import lora_module, lora_param_name, lora_targets
from archlang.ir.graph import Graph, Node
from archlang.ops.registry import eval_rules


class InterpretError(Exception):
    """The interpreter cannot evaluate a node (a missing parameter, random dropout in training)."""


@dataclass
class EvalCtx:
    """What an eval rule sees: the node, its input tensors, its parameters and the mode."""

    node: Node
    xs: list[Tensor]
    params: Mapping[str, Tensor]
    train: bool
    lora: dict[str | None, tuple[int, float, float]]  # part -> (r, alpha, dropout) for this node

    @property
    def op(self) -> O.OpBase:
        return self.node.op

    def x(self, i: int = 0) -> Tensor:
        return self.xs[i]

    def p(self, local: str, node: str | None = None) -> Tensor:
        """Parameter ``local`` of this node (or of ``node``), by its state_dict name."""
        return param_lookup(self.params, node or self.node.name, local)

    def has(self, local: str) -> bool:
        try:
            self.p(local)
        except InterpretError:
            return False
        return True

    def project(self, attr: str, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``x W^T + b`` for the projection ``attr`` ("" for a linear node itself), plus every
        LoRA update tapped on it: ``(x A^T B^T) * alpha / r`` on all rows or on a row block
        of a fused projection (q, k, v of qkv; k, v of kv)."""
        y = x @ weight.t()
        if bias is not None:
            y = y + bias
        for part, (r, alpha, dropout) in self.lora.items():
            at, sub, fused = lora_module(self.node, part)
            if at != attr:
                continue
            if dropout > 0 and self.train:
                raise InterpretError(f"`{self.node.name}`: LoRA dropout {dropout} in train mode is random; "
                                     "the oracle covers dropout 0 only")
            a = self.params[lora_param_name(self.node, part, "A")]
            b = self.params[lora_param_name(self.node, part, "B")]
            delta = (x @ a.t() @ b.t()) * (alpha / r)
            if not sub:
                y = y + delta
            else:
                size = y.shape[-1] // len(fused)
                i = fused.index(sub)
                zeros_before = delta.new_zeros(*delta.shape[:-1], i * size)
                zeros_after = delta.new_zeros(*delta.shape[:-1], (len(fused) - 1 - i) * size)
                y = y + torch.cat([zeros_before, delta, zeros_after], dim=-1)
        return y

    def linear(self, attr: str, x: Tensor, bias: bool = True) -> Tensor:
        """The projection ``attr`` of this node (``qkv``, ``proj``...), weights read by name."""
        b = self.p(f"{attr}.bias") if bias else None
        return self.project(attr, x, self.p(f"{attr}.weight"), b)


EvalRule = Callable[[EvalCtx], "Tensor | tuple[Tensor, ...]"]
EVAL_RULES: dict[type[O.OpBase], EvalRule] = {}


def rule(*classes: type[O.OpBase]) -> Callable[[EvalRule], EvalRule]:
    def deco(fn: EvalRule) -> EvalRule:
        for c in classes:
            EVAL_RULES[c] = fn
        return fn
    return deco


# the rules of the ops defined in archlang.ops family modules (loaded with `import archlang`)
EVAL_RULES.update(eval_rules())


def param_lookup(params: Mapping[str, Tensor], node: str, local: str) -> Tensor:
    """The tensor of parameter ``local`` of node ``node``: ``node.local`` (``node`` when
    ``local`` is ""), else the same under the generated module's mangled attribute names."""
    key = f"{node}.{local}" if local else node
    if key in params:
        return params[key]
    from archlang.lower.rules import state_key  # names a generated module had to mangle

    alt = state_key(key)
    if alt in params:
        return params[alt]
    raise InterpretError(f"no parameter `{key}` in the given mapping")


# ----------------------------------------------------------------------------- small helpers


def _softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``exp(x - max) / sum(exp(x - max))``; ``-inf`` entries get probability 0."""
    m = x.amax(dim=dim, keepdim=True).detach()
    e = torch.exp(x - m)
    return e / e.sum(dim=dim, keepdim=True)


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None = None) -> Tensor:
    """Plain attention on [..., n, d] tensors: ``softmax(q k^T * scale + bias) v``."""
    scores = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        scores = scores + bias
    return _softmax(scores, -1) @ v


def _no_random(c: EvalCtx, p: float, what: str) -> None:
    if c.train and p > 0:
        raise InterpretError(f"`{c.node.name}`: {what} p = {p} in train mode is random; the oracle covers p = 0 only")


def _heads(t: Tensor, heads: int) -> Tensor:
    """[..., N, heads * d] -> [..., heads, N, d]."""
    t = t.reshape(*t.shape[:-1], heads, t.shape[-1] // heads)
    return t.movedim(-2, -3)


def _merge_heads(t: Tensor) -> Tensor:
    """[..., heads, N, d] -> [..., N, heads * d]."""
    t = t.movedim(-3, -2)
    return t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])


def _sinusoids(positions: Tensor, dim: int) -> Tensor:
    """Vaswani et al.'s table: row p is sin(p w_0), cos(p w_0), sin(p w_1), ... with
    w_i = 10000^(-2i/dim), for the given positions (any float values)."""
    i = torch.arange(dim, dtype=positions.dtype, device=positions.device)
    freq = torch.pow(torch.tensor(10000.0, dtype=positions.dtype, device=positions.device), -(2 * (i // 2)) / dim)
    angle = positions[:, None] * freq[None, :]
    even = (torch.arange(dim, device=positions.device) % 2 == 0)
    return torch.where(even, torch.sin(angle), torch.cos(angle))


def _shifted(t: Tensor, dim: int, s: int) -> Tensor:
    """``out[i] = t[i - s]`` along ``dim``, zeros where ``i - s`` is outside (s > 0: towards
    higher indices)."""
    n = t.shape[dim]
    idx = torch.arange(n, device=t.device) - s
    valid = (idx >= 0) & (idx < n)
    out = t.index_select(dim, idx.clamp(0, n - 1))
    shape = [1] * t.ndim
    shape[dim] = n
    return out * valid.reshape(shape).to(t.dtype)


# ----------------------------------------------------------------------------- graph boundary


def _identity(c: EvalCtx) -> Tensor:
    return c.x()


# ----------------------------------------------------------------------------- layers with weights


def _normalise(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


# ----------------------------------------------------------------------------- attention


def _window_partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """[B, Hp, Wp, C] -> [B, Hp/wh, Wp/ww, wh*ww, C]: the windows, row-major inside each."""
    b, hp, wp, ch = x.shape
    x = x.reshape(b, hp // wh, wh, wp // ww, ww, ch).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp // wh, wp // ww, wh * ww, ch)


def _window_merge(x: Tensor, wh: int, ww: int) -> Tensor:
    """The inverse of :func:`_window_partition`."""
    b, nh, nw, _, ch = x.shape
    x = x.reshape(b, nh, nw, wh, ww, ch).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, nh * wh, nw * ww, ch)


def _relative_index(wh: int, ww: int) -> Tensor:
    """For window tokens i = (yi, xi), j = (yj, xj): the row of the (2wh-1)(2ww-1) bias table
    of the offset (yi - yj, xi - xj): (yi - yj + wh - 1) * (2ww - 1) + (xi - xj + ww - 1)."""
    ys = torch.arange(wh).repeat_interleave(ww)
    xs = torch.arange(ww).repeat(wh)
    dy = ys[:, None] - ys[None, :] + wh - 1
    dx = xs[:, None] - xs[None, :] + ww - 1
    return dy * (2 * ww - 1) + dx  # [n, n]


def _shift_regions(hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """Region ids on the padded, cyclically shifted grid [Hp, Wp]: along each shifted axis,
    positions before P - window, between P - window and P - shift, and after P - shift are
    three regions (an unshifted axis is one); the id combines both axes."""
    def axis(p: int, w: int, s: int) -> Tensor:
        i = torch.arange(p)
        if s == 0:
            return torch.zeros(p, dtype=torch.long)
        return (i >= p - w).long() + (i >= p - s).long()
    return axis(hp, window[0], shift[0])[:, None] * 3 + axis(wp, window[1], shift[1])[None, :]


def _window_mask(hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int], dtype, device) -> Tensor:
    """[Hp/wh, Wp/ww, n, n]: 0 between tokens of one region, -100 between different regions."""
    regions = _shift_regions(hp, wp, window, shift)
    win = _window_partition(regions[None, :, :, None], *window)[0, ..., 0]  # [nH, nW, n]
    differ = win[..., :, None] != win[..., None, :]
    return torch.where(differ, -100.0, 0.0).to(dtype=dtype, device=device)


def _windowed(c: EvalCtx, attend: Callable[[Tensor, Tensor | None], Tensor]) -> Tensor:
    """Shift, pad, partition [B, H, W, C] into windows, ``attend(windows, mask)`` (windows
    [B, nH, nW, n, C], mask [nH, nW, n, n] or None), merge, crop and shift back."""
    op = c.op
    assert isinstance(op, O.WindowAttention)
    _no_random(c, op.attn_drop, "attention dropout")
    _no_random(c, op.proj_drop, "projection dropout")
    x = c.x()
    _, h, w, _ = x.shape
    (wh, ww), (sh, sw), (ph, pw) = op.window, op.shift, op.pad
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))  # zeros at the bottom and the right
    mask = _window_mask(h + ph, w + pw, op.window, op.shift, x.dtype, x.device) if (sh or sw) else None
    out = c.linear("proj", attend(_window_partition(x, wh, ww), mask), op.proj_bias)
    x = _window_merge(out, wh, ww)[:, :h, :w]
    if sh or sw:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    return x


def _log_coords(wh: int, ww: int, dtype, device) -> Tensor:
    """Swin-V2's relative coordinates: offsets dy, dx of a wh x ww window, divided by wh - 1
    and ww - 1 (1 for a window of 1), times 8, then sign(t) log2(1 + |t|) / log2(8):
    [(2wh-1)(2ww-1), 2] in table order (dy major)."""
    dy = torch.arange(-(wh - 1), wh, dtype=dtype, device=device) / max(wh - 1, 1) * 8
    dx = torch.arange(-(ww - 1), ww, dtype=dtype, device=device) / max(ww - 1, 1) * 8
    t = torch.stack([dy[:, None].expand(2 * wh - 1, 2 * ww - 1), dx[None, :].expand(2 * wh - 1, 2 * ww - 1)], -1)
    return (torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)).reshape(-1, 2)


# ----------------------------------------------------------------------------- parameter-free ops


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))),
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "silu": lambda x: x / (1.0 + torch.exp(-x)),
    "tanh": torch.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + torch.exp(-x)),
}


_BINARY: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b}


# ----------------------------------------------------------------------------- the interpreter


def _lora_settings(graph: Graph) -> dict[str, dict[str | None, tuple[int, float, float]]]:
    return {node: {part: (s.r, s.alpha, s.dropout) for part, s in parts.items()}
            for node, parts in lora_targets(graph).items()}


def interpret(graph: Graph, params: Mapping[str, Tensor], inputs: Sequence[Tensor], *,
              train: bool = False) -> tuple[Tensor, ...]:
    """Evaluate ``graph`` on ``inputs`` (one tensor per graph input, in declaration order) with
    the parameters and persistent buffers in ``params``; returns the outputs in
    ``graph.outputs`` order. ``train`` selects training behaviour (batch statistics in
    BatchNorm; dropout must then be 0)."""
    if len(inputs) != len(graph.inputs):
        raise InterpretError(f"{graph.arch} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    feed = dict(zip(graph.inputs, inputs, strict=True))
    lora = _lora_settings(graph)
    values: dict[str, tuple[Tensor, ...]] = {}
    for node in graph.nodes:
        fn = EVAL_RULES.get(type(node.op))
        if fn is None:
            raise InterpretError(f"no eval rule for op `{node.op.op}`")
        xs = [feed[node.name]] if isinstance(node.op, O.Input) else \
            [values[r.node][r.index] for r in node.inputs]
        # a shared layer (`y = pe1(z)`) reads the parameters (and LoRA) of the layer it shares
        own = node if node.shares is None else node.model_copy(update={"name": node.shares})
        out = fn(EvalCtx(node=own, xs=xs, params=params, train=train, lora=lora.get(own.name, {})))
        values[node.name] = out if isinstance(out, tuple) else (out,)
    return tuple(values[name][0] for name in graph.outputs)


def _safe(name: str) -> str:
    return name.replace("%", "%25").replace(".", "%2E")


class Interpreter(nn.Module):
    """An ``nn.Module`` that evaluates ``graph`` with :func:`interpret`, for comparing against a
    generated model: ``Interpreter(graph, model.state_dict(keep_vars=True))`` copies the
    parameters (``share=True`` uses the same tensors). ``forward`` returns what the generated
    module returns: the output tensor, or a dict by output name when there are several;
    ``self.training`` selects the mode. :meth:`tensors` gives the parameters by their
    state_dict names (to compare gradients)."""

    def __init__(self, graph: Graph, params: Mapping[str, Tensor], *, share: bool = False):
        super().__init__()
        self.graph = graph
        self._names: dict[str, str] = {}
        for name, t in params.items():
            key = _safe(name)
            self._names[name] = key
            if isinstance(t, nn.Parameter) or (t.is_floating_point() and t.requires_grad):
                p = t if share and isinstance(t, nn.Parameter) else \
                    nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
                self.register_parameter(key, p)
            else:
                self.register_buffer(key, t if share else t.detach().clone())

    def tensors(self) -> dict[str, Tensor]:
        """Parameters and buffers by their state_dict names."""
        own = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return {name: own[key] for name, key in self._names.items()}

    def forward(self, *inputs: Tensor) -> Tensor | dict[str, Tensor]:
        outs = interpret(self.graph, self.tensors(), inputs, train=self.training)
        if len(outs) == 1:
            return outs[0]
        return {self.graph.node(n).op.name: t for n, t in zip(self.graph.outputs, outs, strict=True)}  # type: ignore[attr-defined]


__all__ = ["EVAL_RULES", "EvalCtx", "InterpretError", "Interpreter", "interpret", "param_lookup"]


# the rule kit under public names, for the family modules of archlang.ops
ACTIVATIONS = _ACTIVATIONS
attend = _attend
BINARY = _BINARY
identity = _identity
log_coords = _log_coords
merge_heads = _merge_heads
no_random = _no_random
normalise = _normalise
relative_index = _relative_index
shifted = _shifted
sinusoids = _sinusoids
softmax = _softmax
split_heads = _heads
windowed = _windowed
