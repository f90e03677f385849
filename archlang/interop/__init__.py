"""Bridges from archlang models to the rest of the ecosystem: timm, the Hugging Face Hub,
adapter-only files and torch.distributed.

Takes: specs and models built by :func:`archlang.build`. Produces, per submodule:

- :mod:`archlang.interop.timm`: ``register(spec_or_dir)`` adds every arch of a spec (or of a
  folder of specs) to timm's registry as ``archlang_<arch>``, with a ``pretrained_cfg``
  (input size, mean/std, classifier, num_classes) and weights from a local safetensors ``file``;
- :mod:`archlang.interop.hub`: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``, a
  Hub folder of ``config.json`` (the stored spec), ``model.safetensors`` and a ``README.md``
  model card with the cost table;
- :mod:`archlang.interop.adapters_io`: ``save_adapters`` / ``load_adapters``, files holding only
  the trainable tensors (LoRA, BitFit biases, unfrozen heads) and the taps they belong to;
- :mod:`archlang.interop.distributed`: ``fsdp2_shard``, ``ddp`` and ``checkpoint_blocks``, which
  wrap per block instance from the IR's scopes.

Importing this package is cheap: the submodules, and torch, timm and huggingface_hub with
them, load on first use of a name (``archlang.interop.save_pretrained`` imports
:mod:`archlang.interop.hub`). ``archc check``, ``cost`` and ``render`` never import it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "register": "timm",
    "pretrained_cfg": "timm",
    "save_pretrained": "hub",
    "from_pretrained": "hub",
    "push_to_hub": "hub",
    "save_adapters": "adapters_io",
    "load_adapters": "adapters_io",
    "adapter_state_dict": "adapters_io",
    "AdapterError": "adapters_io",
    "block_instances": "distributed",
    "fsdp2_shard": "distributed",
    "ddp": "distributed",
    "checkpoint_blocks": "distributed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'archlang.interop' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"archlang.interop.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
