"""The Hugging Face Hub layout: ``save_pretrained``, ``from_pretrained``, ``push_to_hub``.

Takes: a model built by :func:`archlang.build` (or :func:`archlang.load`). Produces a folder:

- ``model.safetensors``: exactly what :func:`archlang.save` writes (weights, and in the
  metadata the spec sources, import links, parameters, dtype and the IR's sha256);
- ``config.json``: the same record as JSON (``format``, ``arch``, ``main``, ``params``,
  ``sources``, ``links``, ``dtype``, ``ir_sha256``), plus ``library_name`` and counts;
- ``README.md``: a model card (Hub front matter ``library_name: archlang``) with the cost
  table of :func:`archlang.cost` (parameters, FLOPs, memory) computed from the model's IR,
  and ``diagram.svg`` (:func:`archlang.render`) when Graphviz's ``dot`` is installed.

:func:`from_pretrained` trusts none of it, exactly as :func:`archlang.load`: it validates
``config.json`` with the loader's own metadata rules, requires it to agree with the weights
file's metadata, and then loads through :func:`archlang.lower.io.load` (the stored spec
parsed and checked again in memory, the IR digest compared, the header compared on the meta
device and the memory budget applied before anything is allocated; no code, no pickle). For
a Hub repo id it downloads those files with ``huggingface_hub.snapshot_download`` first;
:func:`push_to_hub` uploads a saved folder with ``HfApi.upload_folder``. huggingface_hub is
imported only by those two paths.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlang.interop._model import base_model, graph_of

if TYPE_CHECKING:
    from torch import nn

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
DIAGRAM = "diagram.svg"
HUB_FORMAT = "archlang-hub/1"
LIBRARY = "archlang"
FILES = (CONFIG, WEIGHTS, CARD, DIAGRAM)
_JSON_KEYS = ("params", "sources", "links")  # stored as JSON text in the safetensors metadata
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


# ----------------------------------------------------------------------------- save


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _config(meta: dict[str, str], n_params: int, n_trainable: int) -> dict[str, Any]:
    from archlang import __version__

    cfg: dict[str, Any] = {"format": HUB_FORMAT, "library_name": LIBRARY, "archlang_version": __version__,
                           "weights": WEIGHTS, "weights_format": meta["format"]}
    for k, v in meta.items():
        if k == "format":
            continue
        cfg[k] = json.loads(v) if k in _JSON_KEYS else v
    cfg["num_parameters"] = n_params
    cfg["num_trainable_parameters"] = n_trainable
    return cfg


def save_pretrained(model: nn.Module, save_directory: str | Path, *, diagram: bool | None = None,
                    card: bool = True) -> Path:
    """Write ``model`` as a Hub folder (``config.json``, ``model.safetensors``, ``README.md``,
    ``diagram.svg``) into ``save_directory`` (created if needed); return the folder.

    ``diagram``: ``None`` draws it when Graphviz's ``dot`` is installed and skips it quietly
    otherwise; ``True`` requires it; ``False`` skips it. ``card=False`` writes no README.
    """
    from archlang.lower.io import save
    from archlang.render import dot_available

    model = base_model(model)
    graph = graph_of(model, "save_pretrained")
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = save(model, out / WEIGHTS)
    meta = _metadata(weights)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    (out / CONFIG).write_text(json.dumps(_config(meta, n_params, n_trainable), indent=2) + "\n")
    drew = False
    if diagram or (diagram is None and dot_available()):
        drew = _draw(graph, out / DIAGRAM, required=bool(diagram))
    if not drew and (out / DIAGRAM).exists():
        (out / DIAGRAM).unlink()  # a stale drawing of an earlier save
    if card:
        (out / CARD).write_text(model_card(model, diagram=DIAGRAM if drew else None, meta=meta))
    return out


def _draw(graph: Any, path: Path, required: bool) -> bool:
    from archlang.render import RenderError, render_graph

    try:
        render_graph(graph).save(path)
    except (RenderError, OSError):
        if required:
            raise
        return False
    return path.suffix == ".svg" and path.exists()


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def model_card(model: nn.Module, *, diagram: str | None = None, meta: dict[str, str] | None = None,
               repo_id: str | None = None) -> str:
    """The README.md model card: front matter, how to load, the cost table, the diagram."""
    from archlang.cost import cost_graph
    from archlang.lower.io import ir_digest
    from archlang.units import human_bytes, human_count

    model = base_model(model)
    graph = graph_of(model, "model_card")
    dtype = (meta or {}).get("dtype", "float32")
    rep = cost_graph(graph, batch=1, dtype=dtype, train=False)
    train = cost_graph(graph, batch=1, dtype=dtype, train=True)
    params = {p.name: p.value for p in graph.params}
    where = repo_id or "path/to/this/folder"
    lines = [
        "---",
        f"library_name: {LIBRARY}",
        "tags:",
        f"- {LIBRARY}",
        f"- {graph.family}",
        "---",
        "",
        f"# {graph.arch}",
        "",
        f"An archlang model: arch `{graph.arch}` (family `{graph.family}`) "
        f"from `{graph.file}`, built from the spec stored in `{CONFIG}` and `{WEIGHTS}`.",
        "",
        "```python",
        "from archlang.interop.hub import from_pretrained",
        f'model = from_pretrained("{where}")   # the stored spec is checked again; no code is run',
        "```",
        "",
        "Parameters: " + ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in params.items()) if params else
        "Parameters: none.",
        "",
        f"## Cost (batch 1, {dtype}, from the IR)",
        "",
        _row(["node", "params", "FLOPs", "other FLOPs", "activations", "attention"]),
        _row(["---", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for name, fig in rep.breakdown(depth=1):
        lines.append(_row([f"`{name}`", human_count(fig["params"]), human_count(fig["flops"]),
                           human_count(fig["other_flops"]), human_bytes(fig["activation_bytes"]),
                           human_bytes(fig["attention_bytes"]) if fig["attention_bytes"] else "-"]))
    lines.append(_row(["**total**", human_count(rep.params), human_count(rep.flops), human_count(rep.other_flops),
                       human_bytes(rep.activation_bytes),
                       human_bytes(rep.attention_bytes) if rep.attention_bytes else "-"]))
    peak, at = rep.peak_bytes()
    tpeak, _ = train.peak_bytes()
    lines += [
        "",
        _row(["figure", "value"]),
        _row(["---", "---"]),
        _row(["parameters", f"{rep.params:,} ({rep.trainable_params:,} trainable, {rep.frozen_params:,} frozen)"]),
        _row(["FLOPs", f"{rep.flops:,} ({human_count(rep.flops)}) in matmul, conv and attention; "
                       f"+{human_count(rep.other_flops)} elementwise, norm and softmax"]),
        _row(["activations", human_bytes(rep.activation_bytes)]),
        _row(["attention matrices", human_bytes(rep.attention_bytes)]),
        _row(["peak memory, inference", f"~{human_bytes(peak)} (at `{at}`)"]),
        _row(["peak memory, AdamW training step", f"~{human_bytes(tpeak)}"]),
        "",
    ]
    if diagram:
        lines += ["## Diagram", "", f"![{graph.arch}]({diagram})", ""]
    lines += [f"IR sha256: `{(meta or {}).get('ir_sha256') or ir_digest(graph)}`", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- load


def _read_config(path: Path) -> dict[str, str]:
    """config.json as the metadata strings archlang.save writes (validated by the loader)."""
    from archlang.lower.io import FORMAT, KEYS, MAX_META_BYTES, LoadError

    try:
        size = path.stat().st_size
    except OSError:
        raise LoadError(f"{path}: no such file (a from_pretrained folder holds {CONFIG} and {WEIGHTS})") from None
    if size > MAX_META_BYTES + 2**20:
        raise LoadError(f"{path} is {size:,} bytes; a config larger than {MAX_META_BYTES // 2**20} MiB is refused")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise LoadError(f"{path} is not valid JSON") from None
    if not isinstance(cfg, dict) or cfg.get("format") != HUB_FORMAT:
        raise LoadError(f"{path} was not written by archlang's save_pretrained (no `format: {HUB_FORMAT}`)")
    if cfg.get("weights_format") != FORMAT:
        raise LoadError(f"{path} describes weights in format `{str(cfg.get('weights_format'))[:40]}`; "
                        f"this archlang reads `{FORMAT}`")
    meta: dict[str, str] = {"format": FORMAT}
    for k in KEYS[1:]:
        if k not in cfg:
            raise LoadError(f"{path} lacks `{k}`")
        v = cfg[k]
        meta[k] = json.dumps(v) if k in _JSON_KEYS else v
        if not isinstance(meta[k], str):
            raise LoadError(f"{path}: `{k}` is not a string")
    return meta


def _agree(cfg_meta: dict[str, str], file_meta: dict[str, str], folder: Path) -> None:
    from archlang.lower.io import KEYS, LoadError

    for k in KEYS:
        a, b = cfg_meta.get(k), file_meta.get(k)
        if k in _JSON_KEYS and a is not None and b is not None:
            try:
                same = json.loads(a) == json.loads(b)
            except (ValueError, RecursionError):
                same = False
        else:
            same = a == b
        if not same:
            raise LoadError(f"{folder}: {CONFIG} and {WEIGHTS} disagree on `{k}`; the folder was altered "
                            "(save it again with save_pretrained)")


def _snapshot(repo_id: str, *, revision: str | None, cache_dir: str | Path | None, token: str | bool | None,
              local_files_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    from archlang import __version__

    return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                  local_files_only=local_files_only, allow_patterns=[CONFIG, WEIGHTS, CARD],
                                  library_name=LIBRARY, library_version=__version__))


def resolve_folder(dir_or_repo_id: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
                   token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """A local folder as is; otherwise a Hub repo id (``owner/name``), downloaded."""
    from archlang.lower.io import LoadError

    p = Path(dir_or_repo_id)
    if p.is_dir():
        return p
    if p.exists():
        raise LoadError(f"{p} is a file; from_pretrained takes a folder written by save_pretrained "
                        "(use archlang.load for a single .safetensors file)")
    if isinstance(dir_or_repo_id, str) and _REPO_ID.fullmatch(dir_or_repo_id):
        return _snapshot(dir_or_repo_id, revision=revision, cache_dir=cache_dir, token=token,
                         local_files_only=local_files_only)
    raise LoadError(f"{dir_or_repo_id}: no such folder, and not a Hub repo id (`owner/name`)")


def from_pretrained(dir_or_repo_id: str | Path, *, max_memory: int | str | None = "auto",
                    revision: str | None = None, cache_dir: str | Path | None = None,
                    token: str | bool | None = None, local_files_only: bool = False) -> nn.Module:
    """Rebuild a model from a :func:`save_pretrained` folder, or a Hub repo id (downloaded
    with ``huggingface_hub.snapshot_download``; ``revision``, ``cache_dir``, ``token``,
    ``local_files_only`` are its options).

    Exactly as :func:`archlang.load`: the stored spec is parsed and checked again in memory,
    the IR's digest compared, the weights' header compared on the meta device and
    ``max_memory`` applied before allocating. ``config.json`` must agree with the weights'
    metadata. Raises :class:`archlang.lower.io.LoadError` for anything it will not load.
    """
    from archlang.lower.io import LoadError, _read_meta, load

    folder = resolve_folder(dir_or_repo_id, revision=revision, cache_dir=cache_dir, token=token,
                            local_files_only=local_files_only)
    cfg_meta = _read_config(folder / CONFIG)
    _read_meta(cfg_meta, folder / CONFIG)  # the loader's own rules: bounded, well-formed, names
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise LoadError(f"{folder}: no {WEIGHTS}")
    try:
        file_meta = _metadata(weights)
    except Exception as e:  # safetensors raises its own error type for a malformed header
        raise LoadError(f"{weights} is not a readable .safetensors file: {str(e)[:300]}") from None
    _agree(cfg_meta, file_meta, folder)
    return load(weights, max_memory=max_memory)


# ----------------------------------------------------------------------------- push


def push_to_hub(model: nn.Module, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                token: str | bool | None = None, revision: str | None = None, create_pr: bool = False,
                diagram: bool | None = None) -> Any:
    """Save ``model`` with :func:`save_pretrained` into a temporary folder and upload it to the
    Hub model repo ``repo_id`` (created if missing) with ``HfApi.upload_folder``; returns its
    ``CommitInfo``. ``token``/``private``/``revision``/``create_pr`` are huggingface_hub's."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="archlang-hub-"))
    try:
        folder = save_pretrained(model, tmp, diagram=diagram, card=False)
        (folder / CARD).write_text(model_card(model, diagram=DIAGRAM if (folder / DIAGRAM).exists() else None,
                                              meta=_metadata(folder / WEIGHTS), repo_id=repo_id))
        graph = graph_of(model)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                                 create_pr=create_pr, allow_patterns=list(FILES),
                                 commit_message=commit_message or f"Upload archlang model `{graph.arch}`")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
