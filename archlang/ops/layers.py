"""The layers with weights: linear, conv2d, conv1d, embedding and the tied LM head.

Takes: nothing at import but the rule kits of each stage. Produces: the rules (language
signature, shape, cost, lowering, drawing, interpreter) of :class:`~archlang.ir.ops.Linear`, :class:`~archlang.ir.ops.Conv2d`,
:class:`~archlang.ir.ops.Conv1d`, :class:`~archlang.ir.ops.Embedding` and
:class:`~archlang.ir.ops.TiedLinear`, registered with
:func:`archlang.ops.registry.define`. The op classes stay in :mod:`archlang.ir.ops` (the
stages and interop refer to them there); helpers several rules of a stage share stay in
that stage's module, its rule kit.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

from archlang.check.shapes import ShapeError, conv_out, expect_equal, expect_min_rank, expect_rank
from archlang.check.surface import Arg, BuildError, const_dim, last_dim, op, pair, same_pad
from archlang.cost.rules import OpCost, cpu_threads, free, m, numel, s
from archlang.ir import ops as O
from archlang.ir.dims import DimLike, add, fmt, product
from archlang.ir.types import TensorType
from archlang.lower.rules import (
    Ctx,
    E,
    LoweringError,
    Rule,
    access_node,
    call,
    call_module,
    int_lit,
    lit,
    padded,
    tied_alias,
)
from archlang.ops.registry import define
from archlang.render import rules as render
from archlang.render.rules import Look, square

if TYPE_CHECKING:
    from torch import Tensor

    from archlang.lower.interpret import EvalCtx


# --------------------------------------------------------------------------- signatures


@op("linear", ("x",), (Arg("out", "int", min=1), Arg("bias", "bool", True)), "Affine map of the last dim: [*, C] -> [*, out].")
def _linear_signature(ctx, ins, a):
    return O.Linear(in_features=last_dim(ctx, ins[0], "linear"), out_features=a["out"], bias=a["bias"])


def _conv_channels(ctx, x, a, name: str, layout: str) -> int:
    """The input channel count of a convolution on ``layout`` ("[B, C, H, W]"), which its
    ``groups`` must divide, as they must divide its output channels."""
    if x.rank != layout.count(",") + 1:
        raise BuildError("E0302", f"{name} expects {layout}, got {x}")
    c = const_dim(ctx, x.shape[1], f"the channel count of {name}'s input")
    if c % a["groups"] or a["out"] % a["groups"]:
        raise BuildError("E0501", f"{name} groups = {a['groups']} must divide in ({c}) and out ({a['out']}) channels",
                         arg="groups")
    return c


@op("conv2d", ("x",), (Arg("out", "int", min=1), Arg("kernel", "pair", min=1), Arg("stride", "pair", 1, min=1),
                       Arg("padding", "pair", 0, min=0), Arg("groups", "int", 1, min=1), Arg("bias", "bool", True),
                       Arg("standardize", "bool", False), Arg("std_eps", "float", 1e-6, range="positive"), Arg("same", "bool", False)),
    "2-d convolution on [B, C, H, W]; `standardize` gives weight standardisation (eps `std_eps`); "
    "`same` pads as TensorFlow's SAME (asymmetric when needed).")
def _conv2d_signature(ctx, ins, a):
    x = ins[0]
    c = _conv_channels(ctx, x, a, "conv2d", "[B, C, H, W]")
    k, st = pair(a["kernel"]), pair(a["stride"])
    if a["standardize"] and c // a["groups"] * k[0] * k[1] == 1:
        raise BuildError("E0406", "weight standardisation of a single weight per output channel",
                         help="a standardised single weight is 0, so the conv would output its bias; use a larger "
                              "kernel or fewer groups, or `standardize = false`", arg="standardize")
    return O.Conv2d(in_channels=c, out_channels=a["out"], kernel=k, stride=st,
                    padding=pair(a["padding"]), groups=a["groups"], bias=a["bias"], standardize=a["standardize"],
                    std_eps=a["std_eps"], pad=same_pad(ctx, x, k, st) if a["same"] else (0, 0, 0, 0))


@op("conv1d", ("x",), (Arg("out", "int", min=1), Arg("kernel", "int", min=1), Arg("stride", "int", 1, min=1),
                       Arg("padding", "int", 0, min=0), Arg("groups", "int", 1, min=1), Arg("bias", "bool", True)),
    "1-d convolution on [B, C, T].")
def _conv1d_signature(ctx, ins, a):
    c = _conv_channels(ctx, ins[0], a, "conv1d", "[B, C, T]")
    return O.Conv1d(in_channels=c, out_channels=a["out"], kernel=a["kernel"], stride=a["stride"],
                    padding=a["padding"], groups=a["groups"], bias=a["bias"])


@op("embedding", ("idx",), (Arg("num", "int", min=1), Arg("dim", "int", min=1)), "Table lookup: int[*] -> [*, dim].")
def _embedding_signature(ctx, ins, a):
    return O.Embedding(num=a["num"], dim=a["dim"])


@op("tied_linear", ("x",), (Arg("source", "str"),),
    "A linear map sharing an embedding's table (a tied LM head): x @ E^T; `source` names the embedding.")
def _tied_linear_signature(ctx, ins, a):
    found = ctx.lookup(a["source"])
    if found is None:
        raise BuildError("E0201", f"no node named `{a['source']}` before this one",
                         help="name the embedding node, e.g. `tied_linear(x, \"wte\")` for `wte: embedding(...)`",
                         arg="source")
    name, emb = found
    if not isinstance(emb, O.Embedding):
        raise BuildError("E0401", f"`{name}` is a {emb.op}, not an embedding", arg="source")
    return O.TiedLinear(source=name, in_features=emb.dim, out_features=emb.num)


# --------------------------------------------------------------------------- shape rules


def _linear_shape(op: O.Linear, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_min_rank(x, 1, "linear")
    expect_equal(x.shape[-1], op.in_features, f"linear expects {op.in_features} input features, got {fmt(x.shape[-1])}")
    return (TensorType(shape=(*x.shape[:-1], op.out_features)),)


def _conv2d_shape(op: O.Conv2d, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_rank(x, 4, "conv2d ([B, C, H, W])")
    expect_equal(x.shape[1], op.in_channels, f"conv2d expects {op.in_channels} channels, got {fmt(x.shape[1])}")
    l_, r_, t_, b_ = op.pad
    h = conv_out(add(x.shape[2], t_ + b_), op.kernel[0], op.stride[0], op.padding[0], "conv2d")
    w = conv_out(add(x.shape[3], l_ + r_), op.kernel[1], op.stride[1], op.padding[1], "conv2d")
    return (TensorType(shape=(x.shape[0], op.out_channels, h, w)),)


def _conv1d_shape(op: O.Conv1d, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_rank(x, 3, "conv1d ([B, C, T])")
    expect_equal(x.shape[1], op.in_channels, f"conv1d expects {op.in_channels} channels, got {fmt(x.shape[1])}")
    t = conv_out(x.shape[2], op.kernel, op.stride, op.padding, "conv1d")
    return (TensorType(shape=(x.shape[0], op.out_channels, t)),)


def _embedding_shape(op: O.Embedding, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    if x.dtype != "int":
        raise ShapeError("E0401", f"embedding looks up integer indices, got a {x.dtype} tensor {x}",
                         help="declare the input as `int[...]`, e.g. `in tokens: int[B, S]`")
    return (TensorType(shape=(*x.shape, op.dim)),)


def _tied_shape(op: O.TiedLinear, ins: list[TensorType]) -> tuple[TensorType, ...]:
    (x,) = ins
    expect_min_rank(x, 1, "tied_linear")
    expect_equal(x.shape[-1], op.in_features, f"tied_linear: the embedding width is {op.in_features}, the input has "
        f"{fmt(x.shape[-1])}")
    return (TensorType(shape=(*x.shape[:-1], op.out_features)),)


# --------------------------------------------------------------------------- cost rules


def _linear_cost(op: O.Linear, ins, outs) -> OpCost:
    rows = m(numel(ins[0]), 1) if op.in_features == 0 else _rows_cost(ins[0], op.in_features)
    return OpCost(flops=m(2, rows, op.in_features, op.out_features),
                  other_flops=m(rows, op.out_features) if op.bias else 0, weight_inputs=(0,),
                  temp_cpu=onednn_linear_scratch(rows, op.in_features), temp_train_cpu=0,
                  temp_cpu_packed=onednn_linear_scratch(1, op.in_features))


def onednn_linear_scratch(rows: DimLike, k: int) -> int:
    """Float32 elements of the scratch oneDNN's matmul holds while it runs (the default build's
    linear layers call it on the CPU when no gradient is wanted: ``OneDnnLinear``), measured
    with the profiler on AVX-512 at 1-4 threads: per thread a packed panel of 64 columns by
    ``kb`` rows of the weight (``kb`` = ``k`` rounded up to 16 up to 512, then 512 up to
    1024, then 1024) and 640 bytes, plus 384 bytes; a single row packs no panel (256 bytes).
    Training (``F.linear``, MKL's GEMM) holds none. An input that is not contiguous takes
    ``F.linear`` too, and so may a product of ``inference_runtime.RACE_MACS`` multiply-adds or
    more, where the layer races the two kernels once and keeps the faster (on an AMX CPU
    mostly ``F.linear``): for those this is an upper bound (by at most 256 KiB per thread)."""
    threads = cpu_threads()
    if rows == 1:
        return (threads * 640 + 256) // 4
    kb = min(-(-k // 16) * 16, 512) if k <= 512 else 512 if k <= 1024 else 1024
    return (threads * (256 * kb + 640) + 384) // 4


def packed_linear_weight(out_features: int, in_features: int) -> int:
    """Elements of the blocked copy of a linear weight that the inference build's layers make
    for oneDNN (``OneDnnLinear.pack``): ``in_features`` rounded up to 16 by ``out_features``
    rounded up to 64, measured with the profiler in float32 on AVX2 and on AVX-512 with AMX
    (``tests/test_memory.py``); a weight of one output feature stays plain (``in_features``
    elements, a matrix-vector product). Reading it, a call packs no weight panel: its scratch
    is a single row's (:func:`onednn_linear_scratch` with ``rows`` 1)."""
    if out_features == 1:
        return in_features
    return -(-in_features // 16) * 16 * (-(-out_features // 64) * 64)


def _rows_cost(t: TensorType, last: int) -> DimLike:
    return product(t.shape[:-1])


def _conv2d_cost(op: O.Conv2d, ins, outs) -> OpCost:
    out = outs[0]
    spatial = m(out.shape[0], out.shape[2], out.shape[3])
    k = op.kernel[0] * op.kernel[1]
    weight = op.out_channels * (op.in_channels // op.groups) * k
    # StdConv2d computes its standardised weight each forward: conv2d keeps it (for the input's
    # gradient), batch_norm its mean and inverse std per output channel
    std = weight + 2 * op.out_channels if op.standardize else 0
    # TF-same padding is an F.pad before the conv: the conv keeps the padded copy, not its input
    x = ins[0]
    padded = m(x.shape[0], x.shape[1], s(x.shape[2], op.pad[2] + op.pad[3]), s(x.shape[3], op.pad[0] + op.pad[1])) \
        if any(op.pad) else 0
    # oneDNN on the CPU (measured): the weight is reordered (a copy), and so is the input when
    # it has 16 channels or more; the output is computed into a buffer of its own size and
    # copied out. Its backward holds the reordered output gradient, input and weight again.
    # CUDA's cuDNN workspaces are not modelled (a weight's worth in backward)
    reordered = (padded or numel(x)) if op.in_channels >= 16 else 0
    work = _max_cost(s(reordered, weight), numel(out))
    # a kernel of 16 x 16 or more (ViT's and AST's patch embeddings) takes oneDNN's gemm-based
    # weight gradient instead: per thread four weights' worth of accumulators and one image's
    # unfolded patches, and 256 bytes (measured at 1, 2 and 4 threads)
    gemm = m(cpu_threads(), s(4 * weight, m(out.shape[2], out.shape[3], (op.in_channels // op.groups) * k)), 1) \
        if k >= 256 else 0
    if gemm:
        gemm = s(gemm, 64)
    # channels-last (NHWC: a CNN's default build, Graph.prefers_channels_last), measured with
    # the profiler at 1, 2 and 4 threads: the forward holds the weight reordered, and 4120
    # bytes per thread and 4096 more; the backward two weights' worth besides its gradients
    # (a 1x1 conv on a few rows takes a GEMM and holds less: this is the upper bound)
    nhwc_scratch = (cpu_threads() * 4120 + 4096) // 4
    return OpCost(flops=m(2, spatial, op.out_channels, op.in_channels // op.groups, k),
                  other_flops=numel(out) if op.bias else 0, weight_inputs=() if any(op.pad) else (0,),
                  saved=s(std, padded), temp=s(std, padded), temp_cpu=s(std, padded, work), temp_train=0,
                  temp_train_cpu=work, grad_temp=weight, grad_temp_cpu=gemm or s(numel(out), reordered, weight),
                  temp_cpu_nhwc=None if op.standardize else s(padded, weight, nhwc_scratch),
                  grad_temp_cpu_nhwc=None if op.standardize else gemm or m(2, weight))


def _max_cost(a: DimLike, b: DimLike) -> DimLike:
    """The larger of two sizes when both are numbers; else their sum (an upper bound that
    stays a polynomial in the free sizes)."""
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return s(a, b)


def _conv1d_cost(op: O.Conv1d, ins, outs) -> OpCost:
    out = outs[0]
    return OpCost(flops=m(2, out.shape[0], out.shape[2], op.out_channels, op.in_channels // op.groups, op.kernel),
                  other_flops=numel(out) if op.bias else 0, weight_inputs=(0,))


def _tied_cost(op: O.TiedLinear, ins, outs) -> OpCost:
    rows = product(ins[0].shape[:-1])
    # the tied weight is another node's (trainable unless frozen there): its input is kept
    return OpCost(flops=m(2, rows, op.in_features, op.out_features), saves_inputs=(0,))


# --------------------------------------------------------------------------- lowering rules


def _linear_mod_lower(c: Ctx) -> ast.expr:
    kw = {} if c.const("bias") and c.op.bias else {"bias": c.init_attr("bias")}  # type: ignore[attr-defined]
    return call("nn.Linear", c.init_attr("in_features"), c.init_attr("out_features"), **kw)


def _conv_kwargs_lower(c: Ctx, defaults: dict[str, object]) -> dict[str, ast.expr]:
    parts = {}
    for n, default in defaults.items():
        if c.const(n) and getattr(c.op, n) == default:
            continue
        parts[{"kernel": "kernel_size"}.get(n, n)] = _pair_lower(c, n)
    return parts


def _pair_lower(c: Ctx, n: str) -> ast.expr:
    """A square (k, k) attribute written as k, as people write kernel sizes."""
    v = getattr(c.op, n)
    if c.const(n) and isinstance(v, tuple) and len(v) == 2 and v[0] == v[1]:
        return int_lit(v[0])
    return c.init_attr(n)


def _conv2d_mod_lower(c: Ctx) -> ast.expr:
    cls = "StdConv2d" if c.op.standardize else "nn.Conv2d"  # type: ignore[attr-defined]
    if not c.const("standardize"):
        raise LoweringError("standardize must be the same in every instance of a block")
    kw = _conv_kwargs_lower(c, {"stride": (1, 1), "padding": (0, 0), "groups": 1, "bias": True})
    if c.op.standardize and not (c.const("std_eps") and c.op.std_eps == 1e-6):  # type: ignore[attr-defined]
        kw["eps"] = c.init_attr("std_eps")
    return call(cls, c.init_attr("in_channels"), c.init_attr("out_channels"), _pair_lower(c, "kernel"), **kw)


def _conv1d_mod_lower(c: Ctx) -> ast.expr:
    kw = _conv_kwargs_lower(c, {"stride": 1, "padding": 0, "groups": 1, "bias": True})
    return call("nn.Conv1d", c.init_attr("in_channels"), c.init_attr("out_channels"), c.init_attr("kernel"), **kw)


def _tied_labelled_lower(c: Ctx) -> bool:
    if not c.const("source"):
        raise LoweringError("a tied head must name the same embedding in every instance of a block")
    return tied_alias(c.mod.attr if isinstance(c.mod, ast.Attribute) else "")


def _tied_lower(c: Ctx) -> ast.expr:
    if _tied_labelled_lower(c):
        return call(c.mod, c.x())
    src = c.op.source  # type: ignore[attr-defined]
    return E("F.linear(x, emb.weight)", x=c.x(), emb=access_node(src))


def _tied_module_lower(c: Ctx) -> ast.expr | None:
    """The alias submodule (its weight is replaced by the embedding's right after; see codegen)."""
    if not _tied_labelled_lower(c):
        return None
    return call("nn.Linear", c.init_attr("in_features"), c.init_attr("out_features"), bias=lit(False))


# --------------------------------------------------------------------------- drawing rules


def _linear_draw(op: O.Linear, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    bias = "" if op.bias else ", no bias"
    return Look("Linear", (f"{op.in_features} → {op.out_features}{bias}",), "linear")


def _conv2d_draw(op: O.Conv2d, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    title = "Conv2d (WS)" if op.standardize else "Conv2d"
    kern = f"{square(op.kernel)}"
    if op.stride != (1, 1):
        kern += f", stride {render.pair(op.stride)}"
    if op.padding != (0, 0):
        kern += f", pad {render.pair(op.padding)}"
    chans = f"{op.in_channels} → {op.out_channels}"
    if op.groups > 1:
        chans += " depthwise" if op.groups == op.in_channels else f", {op.groups} groups"
    return Look(title, (kern, chans), "linear")


def _conv1d_draw(op: O.Conv1d, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    kern = f"kernel {op.kernel}" + (f", stride {op.stride}" if op.stride != 1 else "") \
        + (f", pad {op.padding}" if op.padding else "")
    chans = f"{op.in_channels} → {op.out_channels}"
    if op.groups > 1:
        chans += " depthwise" if op.groups == op.in_channels else f", {op.groups} groups"
    return Look("Conv1d", (kern, chans), "linear")


def _embedding_draw(op: O.Embedding, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Embedding", (f"{op.num} × {op.dim}",), "linear")


def _tied_linear_draw(op: Any, ins: list[TensorType], outs: tuple[TensorType, ...]) -> Look:
    return Look("Linear (tied)", (f"{op.in_features} → {op.out_features}", f"weight of {op.source}"), "linear")


# --------------------------------------------------------------------------- interpreter rules (torch is imported inside each one)


def _linear_interpret(c: EvalCtx) -> Tensor:
    op = c.op
    assert isinstance(op, O.Linear)
    return c.project("", c.x(), c.p("weight"), c.p("bias") if op.bias else None)


def _tied_linear_interpret(c: EvalCtx) -> Tensor:
    op = c.op
    assert isinstance(op, O.TiedLinear)
    return c.x() @ c.p("weight", node=op.source).t()


def _conv2d_interpret(c: EvalCtx) -> Tensor:
    import torch
    import torch.nn.functional as F

    op = c.op
    assert isinstance(op, O.Conv2d)
    x = c.x()
    if any(op.pad):
        left, right, top, bottom = op.pad
        x = F.pad(x, (left, right, top, bottom))
    w = c.p("weight")
    if op.standardize:  # weight standardisation: each output filter to mean 0, variance 1
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = ((w - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        w = (w - mean) / torch.sqrt(var + op.std_eps)
    return F.conv2d(x, w, c.p("bias") if op.bias else None, stride=op.stride, padding=op.padding, groups=op.groups)


def _conv1d_interpret(c: EvalCtx) -> Tensor:
    import torch.nn.functional as F

    op = c.op
    assert isinstance(op, O.Conv1d)
    return F.conv1d(c.x(), c.p("weight"), c.p("bias") if op.bias else None, stride=op.stride,
                    padding=op.padding, groups=op.groups)


def _embedding_interpret(c: EvalCtx) -> Tensor:
    return c.p("weight")[c.x()]


# --------------------------------------------------------------------------- the definitions

_EXAMPLE = """
arch t(img: int = 9) {
  in x: [B, 4, img, img]
  in s: [B, 6, 11]
  in ids: int[B, S]
  a = c1: conv2d(x, 2, kernel = 3, stride = 2, padding = 1, groups = 2)
  b = c2: conv2d(x, 4, kernel = 3, stride = 2, same = true, bias = false)
  c = c3: conv2d(x, 6, kernel = [3, 1], standardize = true, std_eps = 1e-5)
  out y = mean(concat([a, b], dim = 1), dim = [2, 3]) + mean(c, dim = [2, 3]) + l1: linear(mean(a, dim = [2, 3]), 6)
  e = k1: conv1d(s, 6, kernel = 3, stride = 2, padding = 1, groups = 3)
  out z = l2: linear(k2: conv1d(e, 4, kernel = 1, bias = false), 5, bias = false)
  t = emb: embedding(ids, 20, 8)
  out logits = tied_linear(t, "emb") + head: tied_linear(t, "emb")
}
"""

define(O.Conv1d, shape=_conv1d_shape, cost=_conv1d_cost,
       lower=Rule(forward=call_module, module=_conv1d_mod_lower),
       draw=_conv1d_draw, interpret=_conv1d_interpret, example=_EXAMPLE, example_sizes={'S': 9})
define(O.Conv2d, shape=_conv2d_shape, cost=_conv2d_cost,
       lower=Rule(forward=lambda c: call(c.mod, padded(c)), module=_conv2d_mod_lower,
                  helpers=lambda c: ("StdConv2d",) if c.op.standardize else ()),  # type: ignore[attr-defined]
       draw=_conv2d_draw, interpret=_conv2d_interpret, example=_EXAMPLE, example_sizes={'S': 9})
define(O.Embedding, shape=_embedding_shape, cost=free,
       lower=Rule(forward=call_module, module=lambda c: call("nn.Embedding", c.init_attr("num"), c.init_attr("dim"))),
       draw=_embedding_draw, interpret=_embedding_interpret, example=_EXAMPLE, example_sizes={'S': 9})
define(O.Linear, shape=_linear_shape, cost=_linear_cost,
       lower=Rule(forward=call_module, module=_linear_mod_lower),
       draw=_linear_draw, interpret=_linear_interpret, example=_EXAMPLE, example_sizes={'S': 9})
define(O.TiedLinear, shape=_tied_shape, cost=_tied_cost,
       lower=Rule(forward=_tied_lower, module=_tied_module_lower),
       draw=_tied_linear_draw, interpret=_tied_linear_interpret, example=_EXAMPLE, example_sizes={'S': 9})
