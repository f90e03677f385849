"""SDPA against attention written out (two matmuls and a softmax), at the shapes of the models.

Takes: command-line options (dtypes, repeats, threads, ``--compiled``). Produces: one line per
attention shape (Swin-T's windows at each stage, ViT-B/16's tokens, longer sequences) and dtype:
the median milliseconds of ``F.scaled_dot_product_attention``, of the written-out attention
(``(q * scale) @ k^T + bias``, softmax, ``@ v``: what timm's ``fused_attn=False`` computes) and
of archlang's ``sdpa`` helper (:func:`archlang.lower.prelude.sdpa`, which every generated
attention module calls), the speed-up of the written-out form over SDPA, and which path the
helper took. The three run interleaved (A, B, C, A, ...) after warm-up, under ``torch.no_grad``;
with ``--compiled`` each is also ``torch.compile``d and timed the same way.

The helper may write the attention out only on the CPU in bfloat16 at up to 256 queries and
keys (no dropout, no gradient wanted), and calls SDPA everywhere else. There it writes small
attentions out and races the two forms once per shape from ``_AttentionRace.min_scores``
scores up, keeping the faster (the "helper path" column says which it took): this script is
where that rule comes from, and where to check it on another machine.

    python benchmarks/attention_kernels.py
    python benchmarks/attention_kernels.py --dtypes bf16 --repeats 21 --compiled
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from linear_kernels import median_ms

from archlang.lower.prelude import sdpa

# (model, where, batch * windows, heads, tokens, head dim, with a bias) at batch 8
SHAPES = [
    ("swin_t", "stage 1 windows", 8 * 64, 3, 49, 32, True),
    ("swin_t", "stage 2 windows", 8 * 16, 6, 49, 32, True),
    ("swin_t", "stage 3 windows", 8 * 4, 12, 49, 32, True),
    ("swinv2_t", "stage 1 windows", 8 * 64, 3, 64, 32, True),
    ("vit_b16", "tokens", 8, 12, 197, 64, False),
    ("longer", "256 tokens", 8, 12, 256, 64, False),
    ("longer", "512 tokens", 4, 12, 512, 64, False),
    ("longer", "1024 tokens", 2, 12, 1024, 64, False),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def written_out(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ v


def _helper_path(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> str:
    """Which path archlang's helper takes at this call: it calls SDPA or it does not."""
    real, taken = F.scaled_dot_product_attention, []

    def spy(*args, **kwargs):
        taken.append(True)
        return real(*args, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        sdpa(q, k, v, attn_mask=bias)
    finally:
        F.scaled_dot_product_attention = real
    return "sdpa" if taken else "written out"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--compiled", action="store_true", help="also time each contender under torch.compile")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be at least 1 and --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    modes = ("eager", "compiled") if args.compiled else ("eager",)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, no_grad, {args.repeats} interleaved "
          f"repeats after {args.warmup} warm-up, median ms")
    print(f"{'model':<9} {'where':<16} {'shape':>20} {'dtype':<5} {'mode':<8} {'SDPA':>7} {'written':>8} "
          f"{'helper':>7} {'SDPA/written':>12}  helper path")
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for model, where, b, h, n, d, has_bias in SHAPES:
            q, k, v = (torch.randn(b, h, n, d, dtype=dtype) for _ in range(3))
            bias = torch.randn(1, h, n, n, dtype=dtype) if has_bias else None
            fns = {"sdpa": lambda q=q, k=k, v=v, bias=bias: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                   "written": lambda q=q, k=k, v=v, bias=bias: written_out(q, k, v, bias),
                   "helper": lambda q=q, k=k, v=v, bias=bias: sdpa(q, k, v, attn_mask=bias)}
            with torch.no_grad():
                path = _helper_path(q, k, v, bias)
                for mode in modes:
                    run = fns if mode == "eager" else {name: torch.compile(f) for name, f in fns.items()}
                    ms = median_ms(run, args.repeats, args.warmup + (1 if mode == "compiled" else 0))
                    shape = f"{b}x{h}x{n}x{d}"
                    print(f"{model:<9} {where:<16} {shape:>20} {dtype_name:<5} {mode:<8} {ms['sdpa']:7.2f} "
                          f"{ms['written']:8.2f} {ms['helper']:7.2f} {ms['sdpa'] / ms['written']:12.2f}  {path}",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
