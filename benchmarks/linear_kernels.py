"""F.linear (MKL's GEMM) against oneDNN's matmul, the kernel of the inference build's linear layers.

Takes: command-line options (repeats, threads). Produces: one line per GEMM shape of Swin-T and
ViT-B/16 at batch 8 (tokens x in -> out, fp32): the median milliseconds of ``F.linear``,
``F.gelu(F.linear(...))``, oneDNN's ``torch.ops.mkldnn._linear_pointwise`` (what
:class:`archlang.lower.inference_runtime.OneDnnLinear` races against ``F.linear`` when no gradient is wanted) with and
without its GELU post-op, MKL's GEMM on a weight packed once for the shape
(``torch.ops.mkl._mkl_linear``, what Inductor's frozen CPU graphs call; not used by archlang:
its packed copy took 4x the weight's bytes at ViT-B's shapes), oneDNN's matmul reading a copy of
the weight reordered once into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``:
``blocked``, what the inference build's layers run, ``OneDnnLinear.pack``), the speed-ups over
``F.linear`` and the largest difference from ``F.linear`` relative to the output's scale (the
packed GEMM's separately: ``packed diff``). The six run interleaved (A, B, C, D, E, F, A, ...)
after warm-up, under ``torch.inference_mode``.

    python benchmarks/linear_kernels.py
    python benchmarks/linear_kernels.py --repeats 21 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

# (model, layer, tokens, in, out) at batch 8
SHAPES = [
    ("swin_t", "stage 1 qkv", 8 * 3136, 96, 288),
    ("swin_t", "stage 1 fc1", 8 * 3136, 96, 384),
    ("swin_t", "stage 1 fc2", 8 * 3136, 384, 96),
    ("swin_t", "stage 2 fc1", 8 * 784, 192, 768),
    ("swin_t", "stage 3 fc1", 8 * 196, 384, 1536),
    ("swin_t", "stage 3 fc2", 8 * 196, 1536, 384),
    ("vit_b16", "qkv", 8 * 197, 768, 2304),
    ("vit_b16", "fc1", 8 * 197, 768, 3072),
    ("vit_b16", "fc2", 8 * 197, 3072, 768),
]


def median_ms(fns: dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call of each function, run interleaved after ``warmup`` calls each
    (also used by benchmarks/attention_kernels.py)."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _contenders(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    dnn = torch.ops.mkldnn._linear_pointwise
    packed = torch.ops.mkl._mkl_reorder_linear_weight(w, x.shape[0]) if torch.backends.mkl.is_available() else None
    blocked = torch.ops.mkldnn._reorder_linear_weight(w)
    return {
        "blocked": lambda: dnn(x, blocked, b, "none", [], ""),
        **({"packed": lambda: torch.ops.mkl._mkl_linear(x, packed, w, b, x.shape[0])} if packed is not None else {}),
        "linear": lambda: F.linear(x, w, b),
        "dnn": lambda: dnn(x, w, b, "none", [], ""),
        "linear_gelu": lambda: F.gelu(F.linear(x, w, b)),
        "dnn_gelu": lambda: dnn(x, w, b, "gelu", [], "none"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be at least 1 and --warmup at least 0")
    if not torch.backends.mkldnn.is_available():
        print("this torch has no oneDNN: nothing to compare")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dnn = torch.ops.mkldnn._linear_pointwise
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, inference_mode, "
          f"{args.repeats} interleaved repeats after {args.warmup} warm-up, median ms")
    print(f"{'model':<8} {'layer':<12} {'shape':>18} {'F.linear':>9} {'oneDNN':>8} {'x':>5} "
          f"{'+gelu':>7} {'+gelu dnn':>10} {'x':>5} {'rel diff':>9} {'packed':>7} {'x':>5} {'packed diff':>11} "
          f"{'blocked':>8} {'x':>5}")
    with torch.inference_mode():
        for model, layer, m, k, n in SHAPES:
            x, w, b = torch.randn(m, k), torch.randn(n, k) * k ** -0.5, torch.randn(n) * 0.1
            fns = _contenders(x, w, b)
            ref = F.linear(x, w, b)
            scale = ref.abs().max().item()
            diff = max((dnn(x, w, b, "none", [], "") - ref).abs().max().item(),
                       (dnn(x, w, b, "gelu", [], "none") - F.gelu(ref)).abs().max().item()) / scale
            pdiff = (fns["packed"]() - ref).abs().max().item() / scale if "packed" in fns else float("nan")
            t = median_ms(fns, args.repeats, args.warmup)
            tp = t.get("packed", float("nan"))
            print(f"{model:<8} {layer:<12} {f'{m}x{k}x{n}':>18} {t['linear']:>9.2f} {t['dnn']:>8.2f} "
                  f"{t['linear'] / t['dnn']:>5.2f} {t['linear_gelu']:>7.2f} {t['dnn_gelu']:>10.2f} "
                  f"{t['linear_gelu'] / t['dnn_gelu']:>5.2f} {diff:>9.1e} {tp:>7.2f} {t['linear'] / tp:>5.2f} "
                  f"{pdiff:>11.1e} {t['blocked']:>8.2f} {t['linear'] / t['blocked']:>5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
