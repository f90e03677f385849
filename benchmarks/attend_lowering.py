"""SDPA against FlexAttention for ``attend``, on this machine's CPU: which lowering is faster.

For each attention kind (causal, a causal sliding window, causal ALiBi, a document mask) and
sequence length, one ``attend`` over ``q, k, v: [1, 8, N, 64]`` (float32, inference, no
gradient) is built with ``archlang.build(..., attention="sdpa")`` and ``attention="flex"``,
each eager and under ``torch.compile``; the timings are interleaved (A, B, A, B, ...) after a
warm-up, and the median of the runs is printed in milliseconds with the block sparsity of
FlexAttention's mask. Eager FlexAttention (torch's unfused reference) is timed at the
smallest length only.

    .venv/bin/python benchmarks/attend_lowering.py [--lengths 256,1024,2048] [--runs 15]

Takes several minutes on 2 cores (each compiled FlexAttention variant compiles for ~20 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = {
    "causal": ("attend(q, k, v, causal = true)", ""),
    "window": ("attend(q, k, v, mask = q_idx - kv_idx < 128, causal = true)", ""),
    "alibi": ("attend(q, k, v, bias = slope[h] * (kv_idx - q_idx), causal = true)", "  in slope: [8]\n"),
    "document": ("attend(q, k, v, mask = doc[b, q_idx] == doc[b, kv_idx])", "  in doc: int[1, {n}]\n"),
}


def spec(kind: str, n: int) -> str:
    call, extra = KINDS[kind]
    return (f"arch t() {{\n  in q: [1, 8, {n}, 64]\n  in k: [1, 8, {n}, 64]\n  in v: [1, 8, {n}, 64]\n"
            f"{extra.format(n=n)}  out y = {call}\n}}\n")


def inputs(kind: str, n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, 8, n, 64, generator=g) for _ in range(3)]
    if kind == "alibi":
        xs.append(2.0 ** -torch.arange(1, 9, dtype=torch.float32))
    if kind == "document":
        xs.append((torch.arange(n) // 300)[None])  # documents of 300 tokens
    return xs


def sparsity(model, xs) -> float | None:
    """The block sparsity (%) of the BlockMask the FlexAttention model builds, if any."""
    module = sys.modules[type(model).__module__]
    seen = []
    made = module.block_mask
    module.block_mask = lambda *a, **k: seen.append(made(*a, **k)) or seen[-1]
    try:
        model(*xs)
    finally:
        module.block_mask = made
    return seen[0].sparsity() if seen else None


def main() -> None:
    import torch

    import archlang

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="256,1024,2048")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median ms of {args.runs} interleaved runs")
    print(f"{'kind':9s} {'N':>5s} {'sdpa':>9s} {'sdpa+c':>9s} {'flex+c':>9s} {'flex eager':>10s} {'sparsity':>8s}")
    for kind in args.kinds.split(","):
        for n in lengths:
            text = spec(kind, n)
            xs = inputs(kind, n)
            models = {"sdpa": archlang.build(text, max_memory=None, attention="sdpa").eval(),
                      "flex": archlang.build(text, max_memory=None, attention="flex").eval()}
            sp = sparsity(models["flex"], xs)
            # dynamic=False and a fresh dynamo cache per size: recompiling FlexAttention with
            # dynamic shapes fails in Inductor's CPU template (torch 2.14.1, a document mask)
            torch._dynamo.reset()
            runs = {"sdpa": models["sdpa"], "sdpa+c": torch.compile(models["sdpa"], fullgraph=True, dynamic=False),
                    "flex+c": torch.compile(models["flex"], fullgraph=True, dynamic=False)}
            if n == lengths[0]:
                runs["flex eager"] = models["flex"]
            times: dict[str, list[float]] = {k: [] for k in runs}
            with torch.no_grad():
                for fn in runs.values():  # warm-up (and compilation)
                    fn(*xs)
                    fn(*xs)
                want = runs["sdpa"](*xs)
                err = (runs["flex+c"](*xs) - want).abs().max().item()
                assert err < 1e-4, (kind, n, err)
                for _ in range(args.runs):
                    for name, fn in runs.items():
                        t = time.perf_counter()
                        fn(*xs)
                        times[name].append(time.perf_counter() - t)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            print(f"{kind:9s} {n:5d} {med['sdpa']:9.2f} {med['sdpa+c']:9.2f} {med['flex+c']:9.2f} "
                  f"{med.get('flex eager', float('nan')):10.2f} {'' if sp is None else f'{sp:7.1f}%':>8s}",
                  flush=True)


if __name__ == "__main__":
    main()
