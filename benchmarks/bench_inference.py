"""Inference build vs default build vs timm, in one process: interleaved, warm-up, medians.

Takes: command-line options (models, batch, repeats). Produces: a table of median eager
forward times (fp32, ``torch.inference_mode``) of archlang's inference build
(``archlang.build(..., inference=True)``), its default build and timm's model, with the
ratios timm / inference and default / inference (above 1: the inference build is faster),
and the inference build's FLOP rate (FLOPs from ``archlang.cost``) as a share of the fp32
matmul rate, measured in the same loop on a GEMM of the model's MLP shape
(``[batch * tokens, dim] @ [dim, 4 * dim]``, here ``[8 * 197, 768] @ [768, 3072]``).

    python benchmarks/bench_inference.py                              # swin_t, swinv2_t, resnet50, vit_b16
    python benchmarks/bench_inference.py --models resnet50 --batch 8 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import timm
import torch

import archlang

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # key: (spec, arch, timm model, image size)
    "swin_t": ("specs/swin_t.arch", "swin_t", "swin_tiny_patch4_window7_224", 224),
    "swinv2_t": ("specs/swinv2_t.arch", "swinv2_t", "swinv2_tiny_window8_256", 256),
    "resnet50": ("specs/resnet50.arch", "resnet50", "resnet50", 224),
    "vit_b16": ("specs/vit_b16.arch", "vit_b16", "vit_base_patch16_224", 224),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"fp32 eager, inference_mode, {args.repeats} interleaved repeats after {args.warmup} warm-up, medians")
    print(f"{'model':<9} {'inference ms':>12} {'default ms':>11} {'timm ms':>9} {'timm/inf':>9} {'default/inf':>12} "
          f"{'of matmul':>10}")
    a, w = torch.randn(args.batch * 197, 768), torch.randn(768, 3072)
    gemm_flops = 2 * a.shape[0] * a.shape[1] * w.shape[1]
    for key in args.models:
        spec, arch, timm_name, img = MODELS[key]
        default = archlang.build(ROOT / spec, arch, max_memory="off").eval()
        inference = archlang.build(ROOT / spec, arch, max_memory="off", inference=True)
        inference.load_state_dict(default.state_dict())
        ref = timm.create_model(timm_name).eval()
        x = torch.randn(args.batch, 3, img, img)
        flops = archlang.cost(ROOT / spec, arch, batch=args.batch).flops
        impls = {"inference": inference, "default": default, "timm": ref, "matmul": lambda _x: a @ w}
        times: dict[str, list[float]] = {k: [] for k in impls}
        with torch.inference_mode():
            err = (inference(x) - default(x)).abs().max().item()
            for m in impls.values():
                for _ in range(args.warmup):
                    m(x)
            for _ in range(args.repeats):  # interleaved: A, B, C, A, B, C, ...
                for k, m in impls.items():
                    t0 = time.perf_counter()
                    m(x)
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        share = (flops / med["inference"]) / (gemm_flops / med["matmul"])
        print(f"{key:<9} {med['inference']:>12.1f} {med['default']:>11.1f} {med['timm']:>9.1f} "
              f"{med['timm'] / med['inference']:>9.3f} {med['default'] / med['inference']:>12.3f} {share:>9.0%}"
              f"   (max |inference - default| {err:.1e})", flush=True)


if __name__ == "__main__":
    main()
