"""Adapter files: only the tensors fine-tuning changed, and the taps they belong to.

Takes: a model built by :func:`archlang.build` from a spec with fine-tuning taps (``adapt
lora(...)``, ``adapt bitfit()``, ``freeze``/``unfreeze``). Produces: with
:func:`save_adapters`, a ``.safetensors`` file holding the trainable tensors (LoRA A/B, BitFit
biases, unfrozen heads: those the spec makes trainable, and any other parameter with
``requires_grad``), plus BatchNorm running statistics when ``running_stats`` (they change in
training even when frozen), and as metadata: the spec file, arch, family and parameters, the
adapter and freeze statements (source text and resolved taps), the LoRA layout, the digest of
the base (:func:`base_digest`: the graph without its taps, spans and dropout rates) and the
full IR digest. The file is about the trainable bytes, far below the whole model.

:func:`load_adapters` loads such a file into a model built from the same spec (or any spec
with the same base and the same LoRA layout): it refuses with :class:`AdapterError`, before
copying anything, a different base, different taps, tensors the model lacks or of another
shape or dtype, and (``strict``) a file missing tensors the model trains. Weights come only
from safetensors; nothing in the file is run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlang.interop._model import base_model, graph_of
from archlang.lower.io import header_mismatches, listing

if TYPE_CHECKING:
    import torch
    from torch import nn

    from archlang.ir.graph import Graph

FORMAT = "archlang-adapters/1"
KEYS = ("format", "arch", "family", "main", "params", "dtype", "base_sha256", "ir_sha256", "lora", "taps",
        "statements")
MAX_META_BYTES = 8 * 2**20
_NO_STRUCTURE = {"dropout": ("p",), "drop_path": ("p",)}  # rates that do not change what the weights mean
_RATES = ("attn_drop", "proj_drop")


class AdapterError(ValueError):
    """An adapter file :func:`load_adapters` refuses, or a model :func:`save_adapters` cannot save."""


def base_digest(graph: Graph) -> str:
    """sha256 of the base network: every node's name, op (dropout rates aside), inputs and
    output types; the taps, freeze rules, spans, scopes and the arch's name are left out, so
    ``swin_t`` and ``swin_t_lora`` (built at the same sizes) have the same base."""
    nodes = []
    for n in graph.nodes:
        op = n.op.model_dump(mode="json")
        for k in (*_NO_STRUCTURE.get(op.get("op", ""), ()), *_RATES):
            op.pop(k, None)
        nodes.append([n.name, op, [[r.node, r.index] for r in n.inputs], [o.model_dump(mode="json") for o in n.outputs]])
    doc = {"inputs": list(graph.inputs), "outputs": list(graph.outputs), "nodes": nodes}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lora_layout(graph: Graph) -> list[list[Any]]:
    """[target, r, alpha] of every LoRA tap, sorted: what decides the adapter tensors and scale."""
    from archlang.ir.adapters import lora_targets

    rows = []
    for node, parts in lora_targets(graph).items():
        for part, spec in parts.items():
            rows.append([f"{node}.{part}" if part else node, spec.r, float(spec.alpha)])
    return sorted(rows)


def _taps(graph: Graph) -> dict[str, Any]:
    return {
        "adapters": [{"kind": t.kind, "args": {a.name: a.value for a in t.args}, "selectors": list(t.selectors),
                      "targets": list(t.targets), "index": t.index} for t in graph.adapters],
        "freezes": [{"freeze": r.freeze, "selectors": list(r.selectors), "index": r.index} for r in graph.freezes],
    }


def _statements(model: Any, graph: Graph) -> list[str]:
    prog = getattr(model, "archlang_program", None)
    spans = sorted([(t.index, t.span) for t in graph.adapters] + [(r.index, r.span) for r in graph.freezes],
                   key=lambda e: e[0])
    out = []
    for _, span in spans:
        line = prog.sources.line(span.file, span.line) if prog is not None else None
        if line:
            end = span.end_col - 1 if span.end_line == span.line else len(line)
            out.append(line[span.col - 1:end].strip())
        else:
            out.append(f"<{span.file}:{span.line}>")
    return out


def _trainable_names(model: nn.Module, graph: Graph) -> list[str]:
    from archlang.ir.adapters import param_table

    params = dict(model.named_parameters())
    spec = [p.name for p in param_table(graph) if p.trainable]
    missing = [n for n in spec if n not in params]
    if missing:
        raise AdapterError(f"the model lacks parameters its spec trains ({listing(missing)}); were the adapters "
                           "merged (archlang.merge_adapters)? Save the adapters before merging")
    extra = [n for n, p in params.items() if p.requires_grad and n not in set(spec)]
    return spec + extra


def _running_stats(model: nn.Module) -> list[str]:
    from torch import nn

    names = []
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                if getattr(m, b, None) is not None:
                    names.append(f"{mname}.{b}" if mname else b)
    return names


def adapter_state_dict(model: nn.Module, *, running_stats: bool = True) -> dict[str, torch.Tensor]:
    """The tensors :func:`save_adapters` writes, by state_dict name (detached, contiguous)."""
    model = base_model(model)
    graph = graph_of(model, "adapter_state_dict")
    state = model.state_dict()
    names = _trainable_names(model, graph) + (_running_stats(model) if running_stats else [])
    return {n: state[n].detach().contiguous() for n in dict.fromkeys(names) if n in state}


def adapter_metadata(model: nn.Module) -> dict[str, str]:
    """The metadata an adapter file carries (all strings, as safetensors stores them)."""
    from archlang.lower.io import ir_digest

    model = base_model(model)
    graph = graph_of(model, "adapter_metadata")
    floats = {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()}
    return {
        "format": FORMAT,
        "arch": graph.arch,
        "family": graph.family,
        "main": graph.file,
        "params": json.dumps({p.name: p.value for p in graph.params}),
        "dtype": ",".join(sorted(floats)) or "float32",
        "base_sha256": base_digest(graph),
        "ir_sha256": ir_digest(graph),
        "lora": json.dumps(lora_layout(graph)),
        "taps": json.dumps(_taps(graph)),
        "statements": json.dumps(_statements(model, graph)),
    }


def save_adapters(model: nn.Module, path: str | Path, *, running_stats: bool = True) -> Path:
    """Write the trainable tensors of ``model`` and its taps to ``path`` (safetensors)."""
    from safetensors.torch import save_file

    tensors = adapter_state_dict(model, running_stats=running_stats)
    if not tensors:
        raise AdapterError("the model has no trainable tensors: nothing to save (does its spec freeze everything?)")
    path = Path(path)
    save_file(tensors, str(path), metadata=adapter_metadata(model))
    return path


# ----------------------------------------------------------------------------- load


def _read(meta: Any, path: Path) -> dict[str, str]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if isinstance(fmt, str) and fmt.startswith("archlang/"):
            raise AdapterError(f"{path} is a whole model saved by archlang.save; load it with archlang.load")
        raise AdapterError(f"{path} was not written by save_adapters (no `{FORMAT}` metadata)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise AdapterError(f"{path}: metadata values must all be strings")
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_META_BYTES:
        raise AdapterError(f"{path}: metadata larger than {MAX_META_BYTES // 2**20} MiB")
    missing = [k for k in KEYS if k not in meta]
    if missing:
        raise AdapterError(f"{path}: metadata lacks {', '.join(f'`{k}`' for k in missing)}")
    return meta


def _json(meta: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError):
        raise AdapterError(f"{path}: metadata `{key}` is not valid JSON") from None


def _describe(meta: dict[str, str]) -> str:
    return f"arch `{meta['arch'][:80]}` from `{meta['main'][:200]}`"


def load_adapters(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load an adapter file written by :func:`save_adapters` into ``model`` (in place).

    The model must be built from the same spec: the same base network (sizes included) and
    the same LoRA layout (targets, rank, alpha). Every tensor of the file must be a tensor of
    the model with the same shape and dtype; with ``strict``, the file must also hold every
    tensor the model's spec trains. Checked before anything is copied; :class:`AdapterError`
    says what differs.
    """
    import torch
    from safetensors import safe_open

    path = Path(path)
    target = base_model(model)
    graph = graph_of(target, "load_adapters")
    try:
        handle = safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise AdapterError(f"{path}: no such file") from None
    except Exception as e:  # safetensors raises its own error type for a malformed header
        raise AdapterError(f"{path} is not a readable .safetensors file: {str(e)[:300]}") from None
    with handle as f:
        meta = _read(f.metadata(), path)
        mine = adapter_metadata(target)
        if meta["base_sha256"] != mine["base_sha256"]:
            raise AdapterError(f"{path} holds adapters for another base network ({_describe(meta)}, parameters "
                               f"{meta['params'][:300]}); this model is {_describe(mine)}, parameters "
                               f"{mine['params'][:300]}. Build the model from the spec the adapters were trained on")
        if _json(meta, "lora", path) != json.loads(mine["lora"]):
            theirs = "; ".join(_json(meta, "statements", path)) or "no taps"
            ours = "; ".join(json.loads(mine["statements"])) or "no taps"
            raise AdapterError(f"{path} was saved with other LoRA taps ({_describe(meta)}: {theirs[:500]}) than this "
                               f"model has ({_describe(mine)}: {ours[:500]})")
        state = target.state_dict()
        keys = list(f.keys())
        unknown, mismatched = header_mismatches(f, state)
        absent = [k for k in _trainable_names(target, graph) if k not in set(keys)] if strict else []
        if unknown or mismatched or absent:
            parts = []
            if unknown:
                parts.append(f"not in the model: {listing(unknown)}")
            if mismatched:
                parts.append(f"different: {listing(mismatched)}")
            if absent:
                parts.append(f"trained by the model but missing from the file: {listing(absent)}")
            raise AdapterError(f"{path} does not fit this model ({_describe(mine)}): " + "; ".join(parts))
        with torch.no_grad():
            for k in keys:
                state[k].copy_(f.get_tensor(k))
    return model
