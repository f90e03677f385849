"""Benchmark generated models against timm in one process: A/B interleaved, warm-up, medians.

Takes: command-line options (models, batch, repeats, modes). Produces: a table of median
times per (model, mode, implementation) and the ratio generated/timm. timm's Swin does not
use SDPA in eager mode by default, so Swin is also measured against timm with fused
attention switched on (the in-process equivalent of TIMM_FUSED_ATTN=2).

    python benchmarks/bench_vs_timm.py                       # eager, forward and forward+backward
    python benchmarks/bench_vs_timm.py --compiled            # also torch.compile (slow on CPU)
    python benchmarks/bench_vs_timm.py --models swin_t --batch 8 --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from timm.layers import set_fused_attn

import archlang

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "swin_t": ("specs/swin_t.arch", "swin_t", "swin_tiny_patch4_window7_224"),
    "vit_b16": ("specs/vit_b16.arch", "vit_b16", "vit_base_patch16_224"),
}


def make_step(model: torch.nn.Module, x: torch.Tensor, train: bool) -> Callable[[], None]:
    if train:
        model.train()

        def step() -> None:
            out = model(x)
            if isinstance(out, dict):
                out = out["logits"]
            out.float().sum().backward()
            for p in model.parameters():
                p.grad = None
    else:
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(x)
    return step


def bench(contenders: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):  # interleaved: A, B, C, A, B, C, ...
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compiled", action="store_true", help="also benchmark torch.compile'd models")
    ap.add_argument("--no-train", action="store_true", help="skip forward+backward")
    args = ap.parse_args()

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, fp32, {args.repeats} interleaved repeats after {args.warmup} warm-up, medians")
    print(f"{'model':<8} {'mode':<18} {'archlang ms':>12} {'timm ms':>10} {'ratio':>6}   {'timm fused ms':>13} {'ratio':>6}")
    modes = [("eager", False, False)] + ([("eager", True, False)] if not args.no_train else [])
    if args.compiled:
        modes += [("compiled", False, True)] + ([("compiled", True, True)] if not args.no_train else [])
    for key in args.models:
        spec, arch, timm_name = MODELS[key]
        ours = archlang.build(ROOT / spec, arch)
        set_fused_attn(False, experimental=False)
        ref = timm.create_model(timm_name)
        fused = None
        if key.startswith("swin"):
            set_fused_attn(True, experimental=True)  # TIMM_FUSED_ATTN=2
            fused = timm.create_model(timm_name)
            set_fused_attn(True, experimental=False)
        x = torch.randn(args.batch, 3, 224, 224)
        for mode, train, compiled in modes:
            impls = {"archlang": ours, "timm": ref, **({"timm_fused": fused} if fused is not None else {})}
            if compiled:
                torch._dynamo.reset()
                impls = {k: torch.compile(m) for k, m in impls.items()}
            steps = {k: make_step(m, x, train) for k, m in impls.items()}
            med = bench(steps, args.repeats, args.warmup + (1 if compiled else 0))
            label = f"{mode} {'fwd+bwd' if train else 'fwd'}"
            a, t = med["archlang"] * 1e3, med["timm"] * 1e3
            line = f"{key:<8} {label:<18} {a:>12.1f} {t:>10.1f} {a / t:>6.3f}"
            if "timm_fused" in med:
                f = med["timm_fused"] * 1e3
                line += f"   {f:>13.1f} {a / f:>6.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
