"""Save and load generated models with safetensors, the spec sources and parameters included.

Takes: a model built by :func:`archlang.build`. Produces: a ``.safetensors`` file whose
metadata holds the arch, its parameters, every spec source the program read (the main file
and each ``use``d module, standard library included) with the import links between them, the
dtype, and the sha256 digest of the canonical IR JSON.

:func:`load` trusts none of it. It rebuilds the program from the stored sources in memory
(never reading the disk, never reading code from the file), checks it like any spec,
elaborates the stored arch with the stored parameters and refuses unless the IR's digest is
the stored one. It then builds the model on the meta device (nothing allocated), compares
its state_dict names, shapes and dtypes with the file's header, applies the memory budget,
and only then builds the model for real and copies the weights in, one tensor at a time.
Every refusal is a :class:`LoadError` that says what differs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from archlang.check import Program
    from archlang.ir.graph import Graph

FORMAT = "archlang/2"
KEYS = ("format", "arch", "main", "params", "sources", "links", "dtype", "ir_sha256")

MAX_META_BYTES = 32 * 2**20  # all metadata values together
MAX_SOURCES_BYTES = 16 * 2**20  # the spec sources together
MAX_PARAMS_BYTES = 2**20
MAX_LINKS_BYTES = 2**20
MAX_NAME = 4096  # characters of a file's display name
MAX_VALUE_DEPTH = 8  # nesting of list-valued parameters
MAX_SHOWN = 8  # keys listed per kind of mismatch

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ST_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
# safetensors' dtype names -> torch's, for the tensors a generated model holds
_ST_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class LoadError(ValueError):
    """A file that :func:`load` refuses; the message says why. ``.diagnostics`` holds the
    spec's diagnostics when the stored spec does not check (or does not fit the budget)."""

    def __init__(self, message: str, diagnostics: list | None = None):
        super().__init__(message)
        self.diagnostics = diagnostics or []


def ir_digest(graph: Graph) -> str:
    """sha256 of the canonical IR JSON: two graphs with the same digest are the same graph."""
    return hashlib.sha256(graph.model_dump_json().encode()).hexdigest()


# ----------------------------------------------------------------------------- save


def _unwrap(model: Any) -> Any:
    return getattr(model, "_orig_mod", model)  # a torch.compile wrapper holds the module here


def _program_of(model: Any, graph: Graph) -> Program:
    """The program the model was built from: the one it carries, else the spec re-read
    (from its text for a spec given as text), verified to give the same IR."""
    from archlang.check import check_spec, load

    prog = getattr(model, "archlang_program", None)
    if prog is None:
        text = getattr(model, "archlang_spec_text", None)
        if graph.file.startswith("<"):
            if not text:
                raise ValueError("this model records no spec text, so it cannot be saved with its spec")
            prog = load(graph.file, text=text)
        else:
            prog = load(Path(graph.file))
            main = prog.sources.get(prog.main_file)
            if text and main is not None and main != text:
                raise ValueError(f"`{graph.file}` changed since the model was built; rebuild it, then save")
        r = check_spec(prog, graph.arch, {p.name: p.value for p in graph.params})
        if r.graph is None or ir_digest(r.graph) != ir_digest(graph):
            raise ValueError(f"the spec `{graph.file}` (or a module it uses) no longer gives this model's IR; "
                             "rebuild the model, then save")
    return prog


def _state_dtype(state: dict) -> str:
    floats = {str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
    if not floats:
        return "float32"
    if len(floats) > 1 or next(iter(floats)) not in _ST_DTYPES:
        raise ValueError(f"the model mixes or uses unsupported dtypes ({', '.join(sorted(floats))}); "
                         f"save it in one of {', '.join(_ST_DTYPES)}")
    return next(iter(floats))


def save(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights to ``path`` with everything :func:`load` needs to rebuild it."""
    from safetensors.torch import save_file

    model = _unwrap(model)
    graph: Graph | None = getattr(model, "archlang_graph", None)
    if graph is None:
        raise ValueError("this model was not built by archlang.build(); nothing records its spec")
    prog = _program_of(model, graph)
    sources = {name: prog.sources.get(name) or "" for name in prog.modules}
    links = {k: dict(v) for k, v in prog.links.items() if v}
    state = {k: v.detach().contiguous() for k, v in unaliased_state(model).items()}
    meta = {
        "format": FORMAT,
        "arch": graph.arch,
        "main": prog.main_file,
        "params": json.dumps({p.name: p.value for p in graph.params}),
        "sources": json.dumps(sources),
        "links": json.dumps(links),
        "dtype": _state_dtype(state),
        "ir_sha256": ir_digest(graph),
    }
    path = Path(path)
    save_file(state, str(path), metadata=meta)
    return path


# ----------------------------------------------------------------------------- load: metadata


def _json(meta: dict[str, str], key: str, limit: int) -> Any:
    text = meta[key]
    if len(text) > limit:
        raise LoadError(f"metadata `{key}` is {len(text):,} characters (at most {limit:,})")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise LoadError(f"metadata `{key}` is not valid JSON") from None


def _check_value(v: Any, depth: int = 0) -> bool:
    if isinstance(v, bool | int):
        return True
    if isinstance(v, float):
        return v == v and v not in (float("inf"), float("-inf"))
    if isinstance(v, str):
        return '"' not in v and "\n" not in v and "\r" not in v and len(v) <= MAX_NAME
    if isinstance(v, list):
        return depth < MAX_VALUE_DEPTH and all(_check_value(x, depth + 1) for x in v)
    return False


def _str_map(obj: Any, what: str) -> dict[str, str]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise LoadError(f"metadata `{what}` is not a map of strings to strings")
    return obj


def _read_meta(meta: Any, path: Path) -> dict[str, Any]:
    """Validate the metadata: every value a bounded string, the JSON ones of the right shape."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if isinstance(fmt, str) and fmt.startswith("archlang/"):
            raise LoadError(f"{path} was written in format `{fmt[:40]}`; this archlang reads `{FORMAT}` "
                            "(rebuild the model from its spec and save it again)")
        raise LoadError(f"{path} was not written by archlang.save() (no `{FORMAT}` metadata)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise LoadError("metadata values must all be strings")
    missing = [k for k in KEYS if k not in meta]
    if missing:
        raise LoadError(f"metadata lacks {', '.join(f'`{k}`' for k in missing)}")
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_META_BYTES:
        raise LoadError(f"metadata larger than {MAX_META_BYTES // 2**20} MiB")
    arch, main, dtype, digest = meta["arch"], meta["main"], meta["dtype"], meta["ir_sha256"]
    if not _IDENT.fullmatch(arch) or len(arch) > MAX_NAME:
        raise LoadError(f"metadata `arch` is not an arch name: {arch[:80]!r}")
    if dtype not in _ST_DTYPES:
        raise LoadError(f"metadata `dtype` {dtype[:40]!r} is not one of {', '.join(_ST_DTYPES)}")
    if not _HEX64.fullmatch(digest):
        raise LoadError("metadata `ir_sha256` is not a sha256 digest")
    params = _json(meta, "params", MAX_PARAMS_BYTES)
    if not isinstance(params, dict):
        raise LoadError("metadata `params` is not a map of parameter names to values")
    for k, v in params.items():
        if not _IDENT.fullmatch(k) or not _check_value(v):
            raise LoadError(f"metadata `params`: `{k[:80]}` is not a parameter name with a plain value")
    sources = _str_map(_json(meta, "sources", MAX_SOURCES_BYTES), "sources")
    from archlang.check.program import MAX_MODULES

    if len(sources) > MAX_MODULES or any(len(n) > MAX_NAME for n in sources):
        raise LoadError(f"metadata `sources` holds more than {MAX_MODULES} files or over-long file names")
    links_obj = _json(meta, "links", MAX_LINKS_BYTES)
    if not isinstance(links_obj, dict):
        raise LoadError("metadata `links` is not a map of files to their imports")
    links = {k: _str_map(v, "links") for k, v in links_obj.items() if isinstance(k, str)}
    if main not in sources:
        raise LoadError(f"metadata `main` names {main[:80]!r}, which is not among the stored sources")
    return {"arch": arch, "main": main, "params": params, "sources": sources, "links": links,
            "dtype": dtype, "digest": digest}


# ----------------------------------------------------------------------------- load


def _rebuild_graph(m: dict[str, Any]) -> tuple[Graph, Program]:
    from archlang.check import check_spec
    from archlang.check.program import load_sources
    from archlang.diagnostics import render_text

    prog = load_sources(m["main"], m["sources"], m["links"])
    r = check_spec(prog, m["arch"], m["params"])
    errors = [d for d in r.diagnostics if d.is_error]
    if r.graph is None or errors:
        raise LoadError(f"the spec stored in the file does not check:\n{render_text(errors, prog.sources)}", errors)
    if ir_digest(r.graph) != m["digest"]:
        raise LoadError(f"the stored spec `{m['main'][:200]}` with the stored parameters gives a different IR "
                        "than the one the weights were saved for (its sha256 differs); the file was altered")
    return r.graph, prog


def listing(names: list[str]) -> str:
    """Names for a message: the first few, then how many more."""
    shown = ", ".join(f"`{n[:120]}`" for n in names[:MAX_SHOWN])
    return shown + (f" and {len(names) - MAX_SHOWN} more" if len(names) > MAX_SHOWN else "")


def header_mismatches(f: Any, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Compare an open safetensors file's header with ``state`` (a state_dict, real or on the
    meta device) without reading any tensor data: the file's names the model lacks, and a line
    for each shared name whose shape or dtype differs."""
    unknown, mismatched = [], []
    names = list(f.keys())  # a safetensors handle, not a dict
    for k in names:
        if k not in state:
            unknown.append(k)
            continue
        sl = f.get_slice(k)
        shape, st = tuple(sl.get_shape()), sl.get_dtype()
        want_shape, want_dtype = tuple(state[k].shape), str(state[k].dtype).removeprefix("torch.")
        if shape != want_shape or _ST_NAMES.get(st, st) != want_dtype:
            mismatched.append(f"{k} is {_ST_NAMES.get(st, st)}{list(shape)} in the file, {want_dtype}"
                              f"{list(want_shape)} in the model")
    return unknown, mismatched


def unaliased_state(model: nn.Module) -> dict[str, Any]:
    """``model``'s state_dict without the keys that name a tensor an earlier key names (a tied
    head's ``lm_head.weight`` is the embedding's Parameter): safetensors refuses shared
    storage, and loading the first key fills the alias too. Works on the meta device (it
    compares the tensors themselves, not their storage)."""
    seen: set[int] = set()
    out = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) not in seen:
            seen.add(id(v))
            out[k] = v
    return out


def _compare_header(model: nn.Module, f: Any, dtype: str) -> None:
    """The file's tensors must be exactly the model's state_dict (less tied aliases): names,
    shapes, dtypes."""
    state = unaliased_state(model)
    unexpected, mismatched = header_mismatches(f, state)
    keys = set(f.keys())
    missing = [k for k in state if k not in keys]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing from the file: {listing(missing)}")
        if unexpected:
            parts.append(f"not in the model: {listing(unexpected)}")
        if mismatched:
            parts.append(f"different: {listing(mismatched)}")
        raise LoadError(f"the file's tensors do not match the model its spec builds ({dtype}): " + "; ".join(parts))


def _check_memory(graph: Graph, prog: Program, max_memory: int | str | None, dtype: str) -> None:
    """The budget of :func:`archlang.build` (default: the memory available now), at batch 1."""
    from archlang import api

    try:
        api._check_budget(graph, max_memory, batch=1, train=False, dtype=dtype, sources=prog.sources)
    except api.SpecError as e:
        raise LoadError(f"the model does not fit the memory budget:\n{e}", e.diagnostics) from None


def load(path: str | Path, *, max_memory: int | str | None = "auto", kernels: str = "auto") -> nn.Module:
    """Rebuild a model saved by :func:`save` from its stored spec and load its weights
    (``kernels`` as for :func:`archlang.lower.build.instantiate`).

    ``max_memory`` ("16GiB", bytes, ``"auto"``: the memory available now, or ``None``/"off"
    for no limit; see :func:`archlang.api.budget_bytes`) refuses, before
    allocating the model, one whose estimated inference peak at batch 1 exceeds it.
    Raises :class:`LoadError` for any file it will not load.
    """
    import torch
    from safetensors import safe_open

    from archlang.lower.build import instantiate
    from archlang.lower.rules import LoweringError

    path = Path(path)
    try:
        handle = safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except Exception as e:  # safetensors raises its own error type for a malformed header
        raise LoadError(f"{path} is not a readable .safetensors file: {str(e)[:300]}") from None
    with handle as f:
        m = _read_meta(f.metadata(), path)
        graph, prog = _rebuild_graph(m)
        dtype = m["dtype"]
        try:
            meta_model, _ = instantiate(graph, dtype=dtype, device="meta")
        except LoweringError as e:
            raise LoadError(f"the stored spec checks but cannot be lowered to PyTorch: {e}") from None
        _compare_header(meta_model, f, dtype)
        del meta_model
        _check_memory(graph, prog, max_memory, dtype)
        model, _ = instantiate(graph, dtype=dtype, kernels=kernels)
        targets = unaliased_state(model)
        with torch.no_grad():
            for k in f.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                targets[k].copy_(f.get_tensor(k))
    model.archlang_graph = graph
    model.archlang_program = prog
    model.archlang_spec_text = prog.sources.get(prog.main_file) or ""
    return model
