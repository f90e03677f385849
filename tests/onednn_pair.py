"""A test helper for the oneDNN linear layers: an ``OneDnnLinear`` and a plain ``nn.Linear``
with the same weights.

Takes: the input and output widths and the layer's ``act`` and ``pack``. Produces: ``(layer, reference)``,
seeded, so that the kernel tests (tests/test_kernels.py, tests/test_inference_build.py)
compare a converted layer with the module it came from.
"""

from __future__ import annotations

import torch

from archlang.lower.inference_runtime import OneDnnLinear


def onednn_pair(k: int, n: int, act: str = "none", pack: bool = False) -> tuple[OneDnnLinear, torch.nn.Linear]:
    """An ``OneDnnLinear(k, n)`` with ``act`` and ``pack`` and a plain ``nn.Linear`` holding
    its weights."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n)
    ref = torch.nn.Linear(k, n)
    ref.load_state_dict(lin.state_dict())
    lin.__class__ = OneDnnLinear
    lin.act = act
    lin.pack = pack
    return lin, ref
