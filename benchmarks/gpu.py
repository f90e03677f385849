"""GPU benchmark: bf16 training throughput and MFU against timm, and FlexAttention against SDPA.

Takes: command-line options (batch sizes, repeats, a time budget). Produces, on a CUDA
machine, in under 5 minutes:

1. **peak**: the bf16 matmul throughput of the GPU, measured (an 8192^3 ``torch.mm``, median
   of 10 after warm-up), the denominator of every MFU;
2. **training steps** of vit_b16 and swin_t (archlang's models built in bf16 with
   ``archlang.build(..., dtype="bfloat16")``, against timm's ``.to(torch.bfloat16)`` as it
   ships and, where timm has its ``fused_attn`` switch off as shipped (Swin), with it on):
   forward, cross-entropy, backward, AdamW step; images/s and MFU = 3 x forward FLOPs
   (archlang's analytic count, equal to ``FlopCounterMode``'s) x batch / step time / peak;
3. **attention kernels**, forward+backward in bf16 (forward only on the CPU, where
   FlexAttention has no backward), each pair checked to agree first:
   - Swin window attention (stage 1 of swin_t: 56 x 56 grid, window 7, 3 heads of 32):
     archlang's ``WindowAttention`` (windows as a batch, SDPA with the relative position
     bias as a mask) against FlexAttention over the whole grid with a same-window
     ``mask_mod`` block mask and the bias as a ``score_mod``;
   - local attention (SASA's first layer: 56 x 56, 7 x 7 neighbourhood, 8 heads of 8):
     archlang's ``LocalAttention`` (halo blocks through SDPA with a mask) against
     FlexAttention with a neighbourhood ``mask_mod``.
   FlexAttention runs compiled (``torch.compile(flex_attention)``), as it is meant to.

Timings use CUDA events around each call, interleaved A/B, warm-up first, medians. Without a
CUDA device the script prints that it skips and exits 0 (``--device cpu --quick`` runs the
attention agreement checks at toy sizes on the CPU instead, for tests).

    python benchmarks/gpu.py                     # on a CUDA machine
    python benchmarks/gpu.py --batch 64 --repeats 10 --budget 280
    python benchmarks/gpu.py --device cpu --quick --only attention   # CPU: agreement at toy sizes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {"vit_b16": ("specs/vit_b16.arch", "vit_b16", "vit_base_patch16_224"),
          "swin_t": ("specs/swin_t.arch", "swin_t", "swin_tiny_patch4_window7_224")}


# ----------------------------------------------------------------------------- timing


def timed(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds per call of each function, interleaved, after ``warmup`` calls each."""
    import torch

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bf16_peak(device: str, n: int) -> float:
    """FLOP/s of an n^3 bf16 matmul on ``device``."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t = timed({"mm": lambda: torch.mm(a, b)}, repeats=10, warmup=3, device=device)["mm"]
    return 2 * n**3 / t


# ----------------------------------------------------------------------------- training steps


def training_step(model, x, y) -> Callable[[], None]:
    """Forward, cross-entropy, backward and an AdamW step (gradients set to None after)."""
    import torch
    import torch.nn.functional as F

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        out = model(x)
        if isinstance(out, dict):
            out = out["logits"]
        F.cross_entropy(out.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_training(key: str, batch: int, repeats: int, peak: float, device: str) -> list[str]:
    import timm
    import torch

    import archlang

    spec, arch, timm_name = MODELS[key]
    flops = archlang.cost(ROOT / spec, arch, batch=batch).flops
    models = {"archlang": archlang.build(ROOT / spec, arch, dtype="bfloat16", max_memory=None).to(device),
              "timm": timm.create_model(timm_name).to(device=device, dtype=torch.bfloat16)}
    switches = [m for m in models["timm"].modules() if getattr(m, "fused_attn", None) is False]
    if switches:
        fused = timm.create_model(timm_name).to(device=device, dtype=torch.bfloat16)
        for m in fused.modules():
            if getattr(m, "fused_attn", None) is False:
                m.fused_attn = True
        models["timm fused"] = fused
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=torch.bfloat16)
    y = torch.randint(0, 1000, (batch,), device=device)
    med = timed({k: training_step(m, x, y) for k, m in models.items()}, repeats, warmup=3, device=device)
    lines = []
    for name, t in med.items():
        lines.append(f"{key:<8} {name:<11} {t * 1e3:8.1f} ms/step {batch / t:8.0f} img/s  "
                     f"MFU {100 * 3 * flops / t / peak:5.1f}%  (x{t / med['archlang']:.2f} of archlang's time)")
    del models
    if device == "cuda":
        torch.cuda.empty_cache()
    return lines


# ----------------------------------------------------------------------------- attention kernels


def window_flex(mod, grid: tuple[int, int]):
    """A FlexAttention twin of prelude.WindowAttention without shift (same weights): attention
    over the whole grid, masked to each query's own window, the relative position bias as a
    score_mod. Returns ``forward(x: [B, H, W, C]) -> [B, H, W, C]``."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    H, W = grid
    wh, ww = mod.window
    device = mod.qkv.weight.device
    table, index = mod.relative_position_bias_table, mod.relative_position_index  # [(2wh-1)(2ww-1), h], [n, n]

    def position(i):  # token -> (window, position inside the window)
        y, x = i // W, i % W
        return (y // wh) * (W // ww) + x // ww, (y % wh) * ww + x % ww

    def same_window(b, h, q_idx, kv_idx):
        return position(q_idx)[0] == position(kv_idx)[0]

    def bias(score, b, h, q_idx, kv_idx):
        return score + table[index[position(q_idx)[1], position(kv_idx)[1]], h].to(score.dtype)

    mask = create_block_mask(same_window, None, None, H * W, H * W, device=device)
    attend = torch.compile(flex_attention)

    def forward(x):
        B, _, _, C = x.shape
        q, k, v = mod.qkv(x.reshape(B, H * W, C)).unflatten(-1, (3, mod.heads, mod.head_dim)).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v, score_mod=bias, block_mask=mask)
        return mod.proj(out.transpose(1, 2).reshape(B, H, W, -1))

    return forward


def local_flex(mod, grid: tuple[int, int]):
    """A FlexAttention twin of prelude.LocalAttention (same weights): attention over the whole
    grid, each query masked to its k x k neighbourhood inside the image."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    H, W = grid
    lo, hi = mod.kernel // 2, mod.kernel - 1 - mod.kernel // 2
    device = mod.qkv.weight.device

    def neighbour(b, h, q_idx, kv_idx):
        dy, dx = kv_idx // W - q_idx // W, kv_idx % W - q_idx % W
        return (dy >= -lo) & (dy <= hi) & (dx >= -lo) & (dx <= hi)

    mask = create_block_mask(neighbour, None, None, H * W, H * W, device=device)
    attend = torch.compile(flex_attention)

    def forward(x):
        B, _, _, C = x.shape
        q, k, v = mod.qkv(x.reshape(B, H * W, C)).unflatten(-1, (3, mod.heads, mod.head_dim)).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v, block_mask=mask)
        return mod.proj(out.transpose(1, 2).reshape(B, H, W, -1))

    return forward


def bench_attention(batch: int, repeats: int, device: str, quick: bool) -> list[str]:
    """Window and local attention: archlang's SDPA modules against FlexAttention twins."""
    import torch

    from archlang.lower.prelude import LocalAttention, WindowAttention

    torch.manual_seed(0)
    side = 14 if quick else 56
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    cases = {
        "window 7x7, 3 heads": (WindowAttention(96, 3, 32, (7, 7), (side, side)), window_flex, 96),
        "local 7x7, 8 heads": (LocalAttention(64, 8, 8, 7, qkv_bias=False, proj_bias=False), local_flex, 64),
    }
    lines = []
    for label, (mod, twin, dim) in cases.items():
        mod = mod.to(device=device, dtype=dtype)
        with torch.no_grad():  # a bias table that is not all zeros, so that the score_mod matters
            for p in mod.parameters():
                p.normal_(0, 0.02 if p.ndim > 1 else 1.0)
        flex = twin(mod, (side, side))
        x = torch.randn(batch, side, side, dim, device=device, dtype=dtype)
        with torch.no_grad():
            want, got = mod(x).float(), flex(x).float()
        err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        if err > tol:
            raise SystemExit(f"{label}: FlexAttention differs from archlang's module by {err:.2e} (relative)")

        backward = device == "cuda"  # FlexAttention has no backward on the CPU: forward only there

        def step(f, x=x, backward=backward):
            def run() -> None:
                if backward:
                    f(x.detach().requires_grad_()).float().sum().backward()
                else:
                    with torch.no_grad():
                        f(x)
            return run

        med = timed({"sdpa": step(mod), "flex": step(flex)}, repeats, warmup=3, device=device)
        lines.append(f"{label:<20} batch {batch} grid {side}x{side}: archlang SDPA {med['sdpa'] * 1e3:7.2f} ms, "
                     f"FlexAttention {med['flex'] * 1e3:7.2f} ms {'fwd+bwd' if backward else 'fwd'} "
                     f"(flex/sdpa {med['flex'] / med['sdpa']:.2f}); outputs agree to {err:.1e}")
    return lines


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batch", type=int, default=64, help="training batch (attention: batch / 8)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--budget", type=float, default=270.0, help="seconds; later parts are skipped past it")
    ap.add_argument("--only", choices=["training", "attention"], default=None)
    ap.add_argument("--quick", action="store_true", help="toy sizes (for a check on the CPU)")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; skipped (run it on a GPU machine)")
        return 0
    t_start = time.perf_counter()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    peak = bf16_peak(args.device, 1024 if args.quick else 8192)
    print(f"bf16 matmul peak (measured): {peak / 1e12:.1f} TFLOP/s", flush=True)

    def over() -> bool:
        if time.perf_counter() - t_start > args.budget:
            print(f"time budget of {args.budget:.0f} s spent: the rest is skipped", flush=True)
            return True
        return False

    if args.only in (None, "training"):
        for key in MODELS:
            if over():
                return 0
            for line in bench_training(key, args.batch, args.repeats, peak, args.device):
                print(line, flush=True)
    if args.only in (None, "attention") and not over():
        for line in bench_attention(max(1, args.batch // 8), args.repeats, args.device, args.quick):
            print(line, flush=True)
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
