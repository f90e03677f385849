"""Distributed training helpers that wrap per block instance, from the IR's scopes.

Takes: a model built by :func:`archlang.build` and an initialised ``torch.distributed``
process group (for :func:`fsdp2_shard` and :func:`ddp`). Produces:

- :func:`block_instances`: the module paths of the top-level repeated block instances, read
  from ``graph.scopes`` (``blocks.0`` ... in ViT, ``layers.1.blocks.0`` and
  ``layers.2.downsample`` in Swin): the outermost block calls whose block is instantiated
  more than once, i.e. the units FSDP shards and activation checkpointing recomputes;
- :func:`fsdp2_shard`: ``torch.distributed.fsdp.fully_shard`` on each block instance, then on
  the root (bottom-up, as FSDP2 requires), on a 1-d mesh over the world by default;
- :func:`ddp`: ``DistributedDataParallel`` with the settings a tapped model needs (frozen
  parameters are simply not reduced);
- :func:`checkpoint_blocks`: activation checkpointing (``torch.utils.checkpoint``, non-
  reentrant) of each block instance's forward, in place: module paths and state_dict keys do
  not change, so it composes with FSDP2 (apply it first), DDP, :func:`archlang.save` and the
  adapter files.

Every helper returns the model it was given (wrapped, for :func:`ddp`). The IR-only
:func:`block_instances` needs no torch.distributed.
"""

from __future__ import annotations

import types
from collections import Counter
from typing import TYPE_CHECKING, Any

from archlang.interop._model import base_model, graph_of

if TYPE_CHECKING:
    from torch import nn

    from archlang.ir.graph import Graph


def _outermost(graph: Graph) -> list[tuple[str, str]]:
    scopes = [(s.path, s.block) for s in graph.scopes]
    paths = {p for p, _ in scopes}
    out = []
    for path, block in scopes:
        parts = path.split(".")
        if not any(".".join(parts[:i]) in paths for i in range(1, len(parts))):
            out.append((path, block))
    return out


def block_instances(model_or_graph: Any, *, repeated: bool = True) -> list[str]:
    """Module paths of the outermost block instances of a model (or an IR graph), in graph order.

    With ``repeated`` (the default) only blocks instantiated at least twice count (the
    transformer blocks, the stage downsamplers), not a one-off patch embedding; paths with
    no module or no parameters are left out for a model.
    """
    from archlang.ir.graph import Graph

    graph = model_or_graph if isinstance(model_or_graph, Graph) else graph_of(model_or_graph, "block_instances")
    scopes = _outermost(graph)
    counts = Counter(block for _, block in scopes)
    paths = [p for p, b in scopes if not repeated or counts[b] > 1]
    if isinstance(model_or_graph, Graph):
        return paths
    model = base_model(model_or_graph)
    out = []
    for p in paths:
        try:
            m = model.get_submodule(p)
        except AttributeError:
            continue
        if any(True for _ in m.parameters()):
            out.append(p)
    return out


def _modules(model: nn.Module, blocks: list[str] | None) -> list[tuple[str, nn.Module]]:
    names = block_instances(model) if blocks is None else list(blocks)
    base = base_model(model)
    out = []
    for n in names:
        try:
            out.append((n, base.get_submodule(n)))
        except AttributeError:
            raise ValueError(f"`{n}` is not a submodule of this model (block instances: "
                             f"{', '.join(block_instances(model)[:8])} ...)") from None
    return out


def fsdp2_shard(model: nn.Module, mesh: Any = None, *, blocks: list[str] | None = None,
                reshard_after_forward: bool | int | None = None, mp_policy: Any = None,
                offload_policy: Any = None, **kwargs: Any) -> nn.Module:
    """Shard ``model`` with FSDP2: ``fully_shard`` on each block instance (:func:`block_instances`,
    or the module paths in ``blocks``), then on the root; returns the model (now an
    ``FSDPModule``).

    ``mesh`` is a 1-d ``DeviceMesh`` (default: every rank of the default process group, on
    the CUDA device when there is one, else the CPU); ``reshard_after_forward``,
    ``mp_policy``, ``offload_policy`` and other keywords go to ``fully_shard`` unchanged.
    Frozen parameters are sharded like the others and get no gradients. The linear layers
    become plain ``nn.Linear`` again (:func:`~archlang.lower.inference_runtime.use_plain_linears`:
    oneDNN's no-gradient path is for inference, and in a gloo job it made a rank abort at exit
    now and then), and the convolutions' weights contiguous
    (:func:`~archlang.lower.inference_runtime.use_channels_last`: FSDP shards a parameter along
    its first dimension, whose channels-last slices would not be dense).
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from archlang.lower.inference_runtime import use_channels_last, use_plain_linears

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("fsdp2_shard needs an initialised process group (torch.distributed.init_process_group)")
    if mesh is None:
        from torch.distributed.device_mesh import init_device_mesh

        device = "cuda" if torch.cuda.is_available() and dist.get_backend() != "gloo" else "cpu"
        mesh = init_device_mesh(device, (dist.get_world_size(),))
    opts: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": reshard_after_forward, **kwargs}
    if mp_policy is not None:
        opts["mp_policy"] = mp_policy
    if offload_policy is not None:
        opts["offload_policy"] = offload_policy
    use_plain_linears(model)
    use_channels_last(model, channels_last=False)
    for _, m in _modules(model, blocks):
        fully_shard(m, **opts)
    fully_shard(base_model(model), **opts)
    return model


def ddp(model: nn.Module, *, device_ids: list[int] | None = None, find_unused_parameters: bool = False,
        **kwargs: Any) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` (gradients of the trainable parameters
    averaged over the ranks); ``device_ids`` defaults to the current CUDA device for a model
    on CUDA and to ``None`` on the CPU. The archlang model stays reachable as ``.module``; its
    linear layers become plain ``nn.Linear`` again, as for :func:`fsdp2_shard`.
    """
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from archlang.lower.inference_runtime import use_plain_linears

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("ddp needs an initialised process group (torch.distributed.init_process_group)")
    if device_ids is None:
        p = next(model.parameters(), None)
        if p is not None and p.device.type == "cuda":
            device_ids = [p.device.index if p.device.index is not None else torch.cuda.current_device()]
    use_plain_linears(model)
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters,
                                   **kwargs)


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    import torch
    from torch.utils.checkpoint import checkpoint

    forward = types.MethodType(self._archlang_forward, self)
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)


def checkpoint_blocks(model: nn.Module, *, blocks: list[str] | None = None) -> nn.Module:
    """Activation-checkpoint each block instance (:func:`block_instances`, or ``blocks``):
    its activations are recomputed in backward instead of kept. In place; returns ``model``.

    The block's forward becomes a non-reentrant ``torch.utils.checkpoint`` of the original
    (with the RNG state preserved, so dropout and drop-path replay the same masks); under
    ``torch.no_grad`` it runs directly. Module paths and state_dict keys are unchanged.
    Calling it twice is harmless. Apply it before :func:`fsdp2_shard`.
    """
    for _, m in _modules(model, blocks):
        if "_archlang_forward" in m.__dict__:
            continue
        m.__dict__["_archlang_forward"] = type(m).forward
        m.forward = types.MethodType(_checkpointed_forward, m)
    return model
