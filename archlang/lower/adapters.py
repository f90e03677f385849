"""Fine-tuning helpers for built models: merge LoRA into the base weights, optimizer groups.

Takes: a model built by :func:`archlang.build` (or a generated module). Produces: the
model with every LoRA update folded into its linear layer (the adapters removed), and
AdamW parameter groups that follow timm's weight-decay conventions.
"""

from __future__ import annotations

from torch import nn


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight and drop the adapters, in place.

    Outputs are unchanged (up to float rounding); the merged layers are plain ``nn.Linear``.
    """
    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child).__name__ == "LoRALinear" and hasattr(child, "merged"):
                merged = child.merged()
                merged.weight.requires_grad_(child.weight.requires_grad)
                if merged.bias is not None and child.bias is not None:
                    merged.bias.requires_grad_(child.bias.requires_grad)
                setattr(module, child_name, merged)
                replaced += 1
        del name
    if replaced == 0 and any(type(m).__name__ == "LoRALinear" for m in model.modules()):
        raise RuntimeError("could not reach every LoRA layer")  # pragma: no cover - defensive
    return model


def param_groups(model: nn.Module, weight_decay: float = 0.05) -> list[dict]:
    """Two AdamW groups of the trainable parameters, as timm builds them: no weight decay on
    norms, biases (every 1-d tensor) and on ``model.no_weight_decay()`` (tokens, position
    embeddings, relative position tables); ``weight_decay`` on the rest."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
