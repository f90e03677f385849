"""swin_t with its window attention as the `window_attention` op against std.attention's
`window_mha` block (written over `attend`): forward time, on this machine's CPU.

Both models are built from specs/swin_t.arch (the block version swaps std.vision's
swin_block for a copy whose attention is `attn: window_mha(...)`), the op version's
state_dict is loaded strictly into the block version and their logits are checked to agree
within 1e-4 first; then forward passes (float32, eval, no gradient) are timed interleaved
(op, block, op, block, ...) after a warm-up, and the medians and their ratio are printed.

    .venv/bin/python benchmarks/attention_kinds.py [--img 224] [--batch 2] [--runs 15] [--threads 2]

Measured on the shared 2-core CPU (load average 7-12, so single runs swing 2-3x): block / op =
0.951 (--batch 1 --runs 31 --threads 1: 280.5 against 295.0 ms), 1.021 (--batch 1 --runs 41
--threads 1: 1021 against 1000 ms) and 1.073 (--batch 2 --runs 21, 2 threads: 5248 against
4891 ms): within the noise; both run the same kernels (SDPA's fused CPU kernel, 36 calls per
forward). Before the block gave attend a 4-d bias, CPU SDPA took its math path for the 3-d one
and the block was 1.10 (median; 1.09 min) of the op.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def swin_on_blocks() -> str:
    """specs/swin_t.arch with swin_block's `window_attention` op replaced by `window_mha`."""
    vision = (ROOT / "archlang" / "stdlib" / "std" / "vision.arch").read_text()
    block = re.search(r"block swin_block\(.*?\n}\n", vision, re.S).group(0)  # type: ignore[union-attr]
    mine = block.replace("block swin_block(", "block swin_block_lib(").replace("attn: window_attention(",
                                                                            "attn: window_mha(")
    text = (ROOT / "specs" / "swin_t.arch").read_text().replace("swin_block(", "swin_block_lib(")
    return "use std.attention\n" + text + "\n" + mine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    import archlang

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    op = archlang.build(ROOT / "specs" / "swin_t.arch", "swin_t", img=args.img, max_memory=None).eval()
    lib = archlang.build(swin_on_blocks(), "swin_t", img=args.img, max_memory=None).eval()
    lib.load_state_dict(op.state_dict(), strict=True)
    x = torch.randn(args.batch, 3, args.img, args.img)
    with torch.no_grad():
        err = (op(x) - lib(x)).abs().max().item()
    assert err <= 1e-4, f"the two models disagree by {err:.3g}"
    times: dict[str, list[float]] = {"op": [], "block": []}
    with torch.inference_mode():
        for _ in range(args.warmup):
            op(x)
            lib(x)
        for _ in range(args.runs):
            for name, m in (("op", op), ("block", lib)):
                t0 = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    spread = {k: (min(v) * 1e3, max(v) * 1e3) for k, v in times.items()}
    print(f"swin_t img {args.img} batch {args.batch}, {args.runs} interleaved runs, "
          f"{torch.get_num_threads()} threads, logits agree within {err:.2g}")
    for k in ("op", "block"):
        print(f"  {k:5s}: median {med[k]:8.1f} ms  (min {spread[k][0]:.1f}, max {spread[k][1]:.1f})")
    print(f"  block / op = {med['block'] / med['op']:.3f}")


if __name__ == "__main__":
    main()
