"""What the differential tests share when they compare a generated module with the interpreter.

Takes: models and tensors. Produces: :func:`perturb` (random parameters and running statistics,
so zero-initialised biases and LoRA's B take part in the comparison) and :func:`rel_err` (the
error measure both tests bound: max |got - want| over max(1, max |want|)).
"""

from __future__ import annotations

import torch


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=b.dtype))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    return ((got - want).abs().max() / max(1.0, want.abs().max().item())).item() if want.numel() else 0.0
