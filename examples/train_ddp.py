"""Data-parallel training of a small ViT (specs/vit_digits.arch) on scikit-learn's digits, on CPUs.

Takes: the number of processes from torchrun (``WORLD_SIZE``, ``RANK``; gloo backend, CPU
only) and a few options. Produces: the loss every few steps and the test accuracy at the
end, printed by rank 0. Each step draws one global batch (the same permutation on every
rank) and gives each rank its share; gradients are averaged by DDP, or by FSDP2 with
``--fsdp`` (``archlang.interop.fsdp2_shard``: each transformer block, then the root);
``--checkpoint`` recomputes each block's activations in backward
(``archlang.interop.checkpoint_blocks``).

    torchrun --nproc-per-node 2 examples/train_ddp.py                  # DDP, 60 steps (~15 s on 2 cores)
    torchrun --nproc-per-node 2 examples/train_ddp.py --fsdp --checkpoint --steps 20
    python examples/train_ddp.py --steps 10                            # one process, no wrapper
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import archlang
from archlang.interop.distributed import checkpoint_blocks, ddp, fsdp2_shard

SPEC = Path(__file__).resolve().parent.parent / "specs" / "vit_digits.arch"


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits upsampled to 16x16 and standardised; a 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return xtr, xte, ytr, yte


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps (default 60)")
    ap.add_argument("--batch", type=int, default=64, help="global batch size, split over the ranks (default 64)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--fsdp", action="store_true", help="shard with FSDP2 instead of DDP")
    ap.add_argument("--checkpoint", action="store_true", help="activation-checkpoint every block")
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args(argv)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the {world} processes")
    torch.set_num_threads(1)  # one core per process; tiny matrices
    torch.manual_seed(0)  # the same initial weights on every rank
    t0 = time.perf_counter()

    xtr, xte, ytr, yte = digits()
    model = archlang.build(SPEC, "vit_digits")
    if args.checkpoint:
        checkpoint_blocks(model)
    if distributed:
        model = fsdp2_shard(model) if args.fsdp else ddp(model)
    opt = torch.optim.AdamW(archlang.param_groups(archlang_model(model), weight_decay=0.05), lr=args.lr)
    g = torch.Generator().manual_seed(0)  # the same batches on every rank
    perm, pos = torch.randperm(len(xtr), generator=g), 0
    mode = ("FSDP2" if args.fsdp else "DDP") if distributed else "single process"
    if rank == 0:
        print(f"vit_digits on digits: {world} process(es), {mode}{' + checkpointing' if args.checkpoint else ''}, "
              f"global batch {args.batch}, {args.steps} steps")
    model.train()
    for step in range(1, args.steps + 1):
        if pos + args.batch > len(perm):
            perm, pos = torch.randperm(len(xtr), generator=g), 0
        idx = perm[pos:pos + args.batch][rank::world]
        pos += args.batch
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.log_every == 0 or step == 1 or step == args.steps:
            mean = loss.detach().clone()
            if distributed:
                dist.all_reduce(mean)
                mean /= world
            if rank == 0:
                print(f"step {step:4d}  loss {mean.item():.4f}")
    model.eval()
    with torch.no_grad():
        correct = (model(xte).argmax(-1) == yte).float().mean().item()
    if rank == 0:
        print(f"test accuracy {correct:.1%} after {args.steps} steps ({time.perf_counter() - t0:.1f} s)")
    if distributed:
        dist.destroy_process_group()
    return correct


def archlang_model(model: torch.nn.Module) -> torch.nn.Module:
    """The generated module inside a DDP wrapper (param_groups reads its no-decay names)."""
    return getattr(model, "module", model)


if __name__ == "__main__":
    main()
