"""Load reference weights into generated models, strictly.

Takes: a generated model and a reference state_dict (timm's, or torch.nn.Transformer's).
Produces: the model with every tensor loaded, or a :class:`WeightImportError` that lists
every unmatched and mismatched key. Nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class WeightImportError(ValueError):
    """Some reference tensors had no home in the model, or some model tensors no source."""

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]]):
        lines = ["the weights do not match the model strictly:"]
        if missing:
            lines.append(f"  {len(missing)} model tensors have no source: " + ", ".join(missing[:12])
                         + (" ..." if len(missing) > 12 else ""))
        if unexpected:
            lines.append(f"  {len(unexpected)} source tensors have no home: " + ", ".join(unexpected[:12])
                         + (" ..." if len(unexpected) > 12 else ""))
        for k, a, b in mismatched[:12]:
            lines.append(f"  {k}: model {list(a)} vs source {list(b)}")
        super().__init__("\n".join(lines))
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


def is_adapter_key(name: str) -> bool:
    """LoRA weights (``...lora.A``, ``...lora_q.B``) are not in reference checkpoints."""
    return any(part == "lora" or part.startswith("lora_") for part in name.split("."))


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``state`` so that every tensor is consumed and every model tensor filled, except
    LoRA weights, which a reference cannot have and which stay at their initialisation. An
    inference build takes a default build's (or a reference's) state: its BatchNorm and LoRA
    entries are folded first, as its ``load_state_dict`` does, and then matched."""
    if getattr(model, "inference_folds", None) is not None:
        from archlang.lower.inference_runtime import fold_state_dict

        state = fold_state_dict(model, state)
    ours = model.state_dict()
    missing = sorted(k for k in ours if k not in state and not is_adapter_key(k))
    unexpected = sorted(k for k in state if k not in ours)
    mismatched = [(k, tuple(ours[k].shape), tuple(state[k].shape)) for k in ours
                  if k in state and tuple(ours[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        raise WeightImportError(missing, unexpected, mismatched)
    model.load_state_dict({**{k: v for k, v in ours.items() if is_adapter_key(k)}, **state}, strict=True)
    return model


def load_timm_weights(model: nn.Module, timm_state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a timm model's ``state_dict()`` into a generated model; names match by design."""
    return load_state_strict(model, timm_state_dict)


def torch_transformer_state(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a ``torch.nn.Transformer`` state_dict to archlang's names.

    ``nn.MultiheadAttention`` keeps a fused ``in_proj_weight`` and an ``out_proj``; archlang's
    self-attention has ``qkv`` and ``proj``, and its cross-attention ``q``, ``kv`` and ``proj``.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        key = prefix + k
        if ".multihead_attn.in_proj_" in k:
            d = v.shape[0] // 3
            kind = "weight" if k.endswith("weight") else "bias"
            base = key.replace(f"in_proj_{kind}", "")
            out[f"{base}q.{kind}"] = v[:d]
            out[f"{base}kv.{kind}"] = v[d:]
        elif ".in_proj_" in k:
            out[key.replace("in_proj_weight", "qkv.weight").replace("in_proj_bias", "qkv.bias")] = v
        elif ".out_proj." in k:
            out[key.replace(".out_proj.", ".proj.")] = v
        else:
            out[key] = v
    return out


def load_torch_transformer(model: nn.Module, transformer: nn.Transformer | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load an ``nn.Transformer``'s encoder/decoder weights into a generated encoder-decoder.

    Only the core is loaded (embeddings and the generator are not part of nn.Transformer);
    every core tensor must be consumed and every model core tensor filled.
    """
    state = transformer.state_dict() if isinstance(transformer, nn.Module) else transformer
    mapped = torch_transformer_state(state)
    ours = model.state_dict()
    core = {k for k in ours if k.startswith(("encoder.", "decoder."))}
    missing = sorted(core - set(mapped))
    unexpected = sorted(set(mapped) - core)
    mismatched = [(k, tuple(ours[k].shape), tuple(mapped[k].shape)) for k in core & set(mapped)
                  if tuple(ours[k].shape) != tuple(mapped[k].shape)]
    if missing or unexpected or mismatched:
        raise WeightImportError(missing, unexpected, mismatched)
    model.load_state_dict({**ours, **mapped}, strict=True)
    return model
