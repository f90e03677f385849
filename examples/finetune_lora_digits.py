"""Train a small ViT on scikit-learn's digits, then LoRA-fine-tune it on rotated digits.

1. Builds `vit_digits` from specs/vit_digits.arch and trains it on digits upsampled to 16x16.
2. Rotates every image by 90 degrees (a shifted task): the trained model does badly.
3. Builds `vit_digits_lora` (LoRA r=4 on every attention's q and v, the head trainable,
   everything else frozen), loads the trained weights into it, and fine-tunes the adapters.
4. Merges the adapters into the base weights and checks the outputs did not change.

    python examples/finetune_lora_digits.py            # about a minute on 2 CPU cores
    python examples/finetune_lora_digits.py --quick    # the reduced form CI runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import Progress
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import archlang

SPEC = Path(__file__).resolve().parent.parent / "specs" / "vit_digits.arch"


def data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return xtr, xte, ytr, yte


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, label: str,
          progress: Progress) -> None:
    opt = torch.optim.AdamW(archlang.param_groups(model, weight_decay=0.05), lr=lr)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    task = progress.add_task(label, total=steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            progress.update(task, advance=1, description=f"{label} loss {loss.item():.3f}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer epochs (the CI form)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny matrices: one thread beats two that contend
    base_epochs, lora_epochs = (8, 8) if args.quick else (30, 25)
    t0 = time.perf_counter()
    xtr, xte, ytr, yte = data()
    rot = lambda t: torch.rot90(t, 1, dims=(2, 3))  # noqa: E731 - the shifted task

    model = archlang.build(SPEC, "vit_digits")
    with Progress(transient=True) as progress:
        train(model, xtr, ytr, base_epochs, 3e-3, "pre-training", progress)
    base_acc = accuracy(model, xte, yte)
    before = accuracy(model, rot(xte), yte)
    print(f"vit_digits on digits:            {base_acc:.1%} test accuracy")
    print(f"the same model on rotated digits: {before:.1%}")

    tuned = archlang.build(SPEC, "vit_digits_lora")
    archlang.load_timm_weights(tuned, model.state_dict())  # strict for the base; adapters stay at init
    assert accuracy(tuned, rot(xte), yte) == before  # B starts at zero: nothing changed yet
    trainable = sum(p.numel() for p in tuned.parameters() if p.requires_grad)
    total = sum(p.numel() for p in tuned.parameters())
    with Progress(transient=True) as progress:
        train(tuned, rot(xtr), ytr, lora_epochs, 5e-3, "LoRA fine-tuning", progress)
    after = accuracy(tuned, rot(xte), yte)
    print(f"after LoRA fine-tuning:           {after:.1%} on rotated digits "
          f"({trainable:,} of {total:,} parameters trained, {trainable / total:.1%})")

    tuned.eval()
    with torch.no_grad():
        y_lora = tuned(rot(xte))
        archlang.merge_adapters(tuned)
        drift = (tuned(rot(xte)) - y_lora).abs().max().item()
    print(f"merged the adapters into the base weights: max output change {drift:.1e}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return {"base": base_acc, "before": before, "after": after, "fraction": trainable / total, "drift": drift}


if __name__ == "__main__":
    main()
