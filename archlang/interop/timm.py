"""The timm bridge: archlang archs as timm models, ``timm.create_model("archlang_swin_t")``.

Takes: a spec (``.arch`` path) or a folder of specs. :func:`register` elaborates every arch
of the main file at its defaults (torch is not needed for that) and registers each with
timm's public registry (``timm.models.register_model`` with ``generate_default_cfgs``) as
``archlang_<arch>``. Produces: timm entrypoints that build the model with
:func:`archlang.build` through ``timm.models.build_model_with_cfg``, so the model carries a
timm ``pretrained_cfg``:

- ``input_size`` (C, H, W) from the spec's first input when it is an image ``[B, C, H, W]``
  (``fixed_input_size``: the size is part of the spec), ``mean``/``std`` (ImageNet's for
  3-channel images, 0.5 otherwise), ``first_conv`` (the convolution reading the image);
- ``num_classes`` (the last size of a ``[B, K]`` output) and ``classifier`` (the last linear
  layer feeding the output, e.g. ``head`` or ``head.fc``).

``create_model`` keyword arguments map to spec parameters: ``num_classes`` -> ``classes``,
``in_chans`` -> ``channels``, ``img_size`` -> ``img`` (square), and any other keyword is a spec
parameter by name (``drop_path_rate``, ``depth`` ...); ``max_memory``/``dtype`` go to
:func:`archlang.build`. A ``num_classes`` the arch cannot take (no ``classes`` parameter) is a
clear ``ValueError``.

``pretrained=True`` loads weights from the cfg's local ``file`` (``pretrained_cfg_overlay=
dict(file="x.safetensors")``; a folder written by :func:`archlang.interop.hub.save_pretrained`
also works) or its in-memory ``state_dict``. The file may be a plain timm/archlang state_dict
in safetensors or an :func:`archlang.save` file (whose metadata is validated); it is read with
safetensors only, never with pickle, and then loaded with timm's own ``load_pretrained``
(strict; the classifier is dropped when the file's class count differs from the model's, and
the first convolution adapted to another ``in_chans``, as timm does). The file's class count is
read from its classifier weight. LoRA weights a plain base checkpoint lacks keep their
initialisation (zero update), as :func:`archlang.load_timm_weights` does. URLs and Hub ids
are refused: fetch the file first (or use :func:`archlang.interop.hub.from_pretrained`).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from archlang.check import Program
    from archlang.ir.graph import Graph

PREFIX = "archlang_"
ENTRYPOINT_MODULE = "archlang.interop.archlang_models"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)  # timm.data.IMAGENET_DEFAULT_STD
# create_model keywords that mean a spec parameter under timm's name
TIMM_NAMES = {"num_classes": "classes", "in_chans": "channels", "img_size": "img"}
BUILD_KEYWORDS = ("max_memory", "dtype", "batch", "train", "compile")

_registered: dict[str, str] = {}  # timm name -> the spec file it was registered from


@dataclass(frozen=True)
class ArchInfo:
    """What timm needs to know about one arch, read from its IR at the defaults."""

    arch: str
    file: str
    params: dict[str, Any] = field(default_factory=dict)  # the arch's parameters at their defaults
    input_size: tuple[int, int, int] | None = None  # (C, H, W) of an image input
    num_classes: int | None = None  # K of a [B, K] output
    classifier: str | None = None  # node (= module path) of the last linear feeding the output
    first_conv: str | None = None
    lora: tuple[str, ...] = ()  # state_dict names of the LoRA weights


def _image_size(graph: Graph) -> tuple[int, int, int] | None:
    if not graph.inputs:
        return None
    t = graph.input_nodes()[0].outputs[0]
    if t.dtype != "float" or len(t.shape) != 4 or not all(isinstance(d, int) for d in t.shape[1:]):
        return None
    c, h, w = t.shape[1:]
    return int(c), int(h), int(w)


def _walk_back(graph: Graph, name: str) -> str | None:
    """Follow single-input ops without weights (take, mean, dropout, reshape) back from
    ``name`` to the first node with weights; its name if it is a linear layer."""
    from archlang.ir import ops as O

    seen = 0
    node = graph.node(name)
    while seen < 64:
        seen += 1
        if isinstance(node.op, O.Linear):
            return node.name
        if node.op.param_count() or len(node.inputs) != 1 or isinstance(node.op, O.Input):
            return None
        node = graph.node(node.inputs[0].node)
    return None


def _first_conv(graph: Graph) -> str | None:
    from archlang.ir import ops as O

    inputs = set(graph.inputs)
    for n in graph.nodes:
        if not isinstance(n.op, O.Conv2d):
            continue
        node = n
        for _ in range(16):  # through a reshape or normalisation-free op to the image
            ref = node.inputs[0].node if node.inputs else None
            if ref is None:
                break
            if ref in inputs:
                return n.name
            node = graph.node(ref)
            if node.op.param_count() or len(node.inputs) != 1:
                break
    return None


def arch_info(graph: Graph) -> ArchInfo:
    """Read an arch's timm facts (:class:`ArchInfo`) from its IR."""
    from archlang.ir.adapters import param_table

    num_classes = classifier = None
    if graph.outputs:
        out = graph.output_nodes()[0]
        t = graph.type_of(out.inputs[0])
        if len(t.shape) == 2 and isinstance(t.shape[1], int):
            num_classes = int(t.shape[1])
            classifier = _walk_back(graph, out.inputs[0].node)
    image = _image_size(graph)
    return ArchInfo(arch=graph.arch, file=graph.file, params={p.name: p.value for p in graph.params},
                    input_size=image, num_classes=num_classes, classifier=classifier,
                    first_conv=_first_conv(graph) if image else None,
                    lora=tuple(p.name for p in param_table(graph) if p.role == "lora"))


def pretrained_cfg(info: ArchInfo) -> dict[str, Any]:
    """The timm pretrained cfg (a ``timm.models.PretrainedCfg`` as a dict) of an arch; no weights."""
    cfg: dict[str, Any] = {
        "num_classes": info.num_classes if info.num_classes is not None else -1,  # < 0: not passed to the model
        "description": f"archlang arch `{info.arch}` from {info.file}",
        "license": None,
    }
    if info.classifier:
        cfg["classifier"] = info.classifier
    if info.input_size is not None:
        c = info.input_size[0]
        cfg.update(input_size=info.input_size, fixed_input_size=True, first_conv=info.first_conv,
                   mean=IMAGENET_MEAN if c == 3 else (0.5,) * c, std=IMAGENET_STD if c == 3 else (0.5,) * c,
                   crop_pct=1.0 if info.input_size[1] < 64 else 0.875, interpolation="bicubic")
    return {k: v for k, v in cfg.items() if v is not None}


# ----------------------------------------------------------------------------- register


def _spec_files(spec_or_dir: str | Path) -> tuple[list[Path], bool]:
    p = Path(spec_or_dir)
    if p.is_dir():
        files = sorted(p.glob("*.arch"))
        if not files:
            raise FileNotFoundError(f"{p} holds no .arch specs")
        return files, True
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such spec file or folder")
    return [p], False


def _program(path: Path) -> Program:
    from archlang.api import SpecError
    from archlang.check import load_source
    from archlang.diagnostics import render_text

    prog = load_source(path)
    if not prog.ok or prog.main is None:
        errors = [d for d in prog.diags if d.is_error]
        raise SpecError(errors, render_text(errors, prog.sources))
    return prog


def register(spec_or_dir: str | Path, *, prefix: str = PREFIX, archs: list[str] | None = None,
             cfg: dict[str, Any] | None = None) -> list[str]:
    """Register every arch of a spec (or of every ``.arch`` in a folder) with timm as
    ``<prefix><arch>``; return the registered names.

    ``archs`` limits it to those arch names; ``cfg`` overlays every pretrained cfg (e.g.
    ``mean``/``std``/``license``). An arch that does not check at its defaults raises
    :class:`archlang.SpecError` for a single spec; in a folder it is skipped with a warning.
    Registering a name again from the same file replaces it quietly; from another file, timm
    warns that it overwrites it.
    """
    from timm.models import generate_default_cfgs, register_model

    from archlang.api import SpecError
    from archlang.check import check_spec
    from archlang.diagnostics import render_text

    if not prefix.isidentifier() and prefix:
        raise ValueError(f"prefix {prefix!r} must make model names that are Python identifiers")
    module = importlib.import_module(ENTRYPOINT_MODULE)
    files, folder = _spec_files(spec_or_dir)
    names: list[str] = []
    for path in files:
        try:
            prog = _program(path)
        except SpecError as e:
            if not folder:
                raise
            warnings.warn(f"archlang: skipped {path}: it does not parse:\n{e}", stacklevel=2)
            continue
        for a in prog.main_archs():
            if archs is not None and a.name not in archs:
                continue
            r = check_spec(prog, a.name, {})
            errors = [d for d in r.diagnostics if d.is_error]
            if r.graph is None or errors:
                if not folder:
                    raise SpecError(errors, render_text(errors, prog.sources))
                warnings.warn(f"archlang: skipped arch `{a.name}` of {path}: it does not check at its defaults",
                              stacklevel=2)
                continue
            info = arch_info(r.graph)
            name = f"{prefix}{a.name}"
            entry = _entrypoint(name, prog, info)
            module.default_cfgs.update(generate_default_cfgs({name: {**pretrained_cfg(info), **(cfg or {})}}))
            setattr(module, name, entry)
            with warnings.catch_warnings():
                if _registered.get(name) == str(path.resolve()):
                    warnings.filterwarnings("ignore", message=f"Overwriting {name} in registry")
                register_model(entry)
            _registered[name] = str(path.resolve())
            names.append(name)
    return names


def _entrypoint(name: str, prog: Program, info: ArchInfo):
    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create(name, prog, info, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = ENTRYPOINT_MODULE
    entry.__doc__ = f"archlang arch `{info.arch}` from {info.file} (registered by archlang.interop.timm.register)."
    return entry


# ----------------------------------------------------------------------------- create


def create(name: str, prog: Program, info: ArchInfo, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """What a registered entrypoint does: build through timm's ``build_model_with_cfg``
    (resolving the pretrained cfg and its overlay), then load the weights if asked."""
    from timm.models import build_model_with_cfg

    if kwargs.pop("features_only", False):
        raise ValueError(f"{name}: features_only is not supported for archlang models (the spec's outputs are "
                         "its features: add outputs to the spec instead)")
    if kwargs.pop("pruned", False):
        raise ValueError(f"{name}: pruned models are not supported for archlang models")
    cache_dir = kwargs.pop("cache_dir", None)
    del cache_dir  # weights come from local files only
    model = build_model_with_cfg(functools.partial(_build, name, prog, info), name, pretrained=False, **kwargs)
    if pretrained:
        load_pretrained_weights(model, model.pretrained_cfg, info)
    image = _image_size(model.archlang_graph)
    if image is not None:  # the spec fixes the input: the cfg and traits say what the built model takes
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": image}
        model.default_cfg = model.pretrained_cfg
        model._traits = {**getattr(model, "_traits", {}), "img_size": image[1:], "in_chans": image[0]}
    return model


def _size2(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    h, w = tuple(v)[-2:]
    return int(h), int(w)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _build(name: str, prog: Program, info: ArchInfo, **kwargs: Any) -> nn.Module:
    from archlang.api import build

    params: dict[str, Any] = {}
    build_kw = {k: kwargs.pop(k) for k in BUILD_KEYWORDS if k in kwargs}
    if "dtype" in build_kw:
        build_kw["dtype"] = _dtype_name(build_kw["dtype"])
    device = kwargs.pop("device", None)
    nc = kwargs.pop("num_classes", None)
    if nc is not None and info.num_classes is not None and nc != info.num_classes:
        if nc <= 0:
            raise ValueError(f"{name}: num_classes={nc} (no classifier) is not supported: the head is part of the "
                             "spec; give a spec without one")
        if "classes" not in info.params:
            raise ValueError(f"{name}: num_classes={nc} differs from the spec's {info.num_classes}, and arch "
                             f"`{info.arch}` has no `classes` parameter to change it "
                             f"(its parameters: {', '.join(info.params) or 'none'})")
        params["classes"] = nc
    if info.input_size is not None:
        c, h, w = info.input_size
        chans = kwargs.pop("in_chans", None)
        if chans is not None and chans != c:
            if "channels" not in info.params:
                raise ValueError(f"{name}: in_chans={chans} differs from the spec's {c} input channels, and arch "
                                 f"`{info.arch}` has no `channels` parameter to change it")
            params["channels"] = chans
        size = kwargs.pop("img_size", None)
        if size is not None and _size2(size) != (h, w):
            sh, sw = _size2(size)
            if sh != sw or "img" not in info.params:
                raise ValueError(f"{name}: img_size={size} differs from the spec's {h}x{w} input, and arch "
                                 f"`{info.arch}` takes only a square size through its `img` parameter"
                                 if "img" in info.params else
                                 f"{name}: img_size={size} differs from the spec's {h}x{w} input, and arch "
                                 f"`{info.arch}` has no `img` parameter to change it")
            params["img"] = sh
    else:  # timm fills these from its default cfg; they mean nothing for a non-image input
        kwargs.pop("in_chans", None)
        kwargs.pop("img_size", None)
    for k, v in kwargs.items():
        if k not in info.params:
            raise ValueError(f"{name}: `{k}` is neither a timm option archlang maps nor a parameter of arch "
                             f"`{info.arch}` (its parameters: {', '.join(info.params) or 'none'})")
        params[k] = v
    model = build(prog, info.arch, **build_kw, **params)
    out = model.archlang_graph.output_nodes()
    if out and info.num_classes is not None:
        model.num_classes = int(model.archlang_graph.type_of(out[0].inputs[0]).shape[1])
    if device is not None:
        model = model.to(device)
    return model


# ----------------------------------------------------------------------------- weights


def _weights_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():  # a save_pretrained folder
        p = p / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"pretrained file {p}: no such file")
    return p


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of a safetensors file (never pickle). An :func:`archlang.save` file's
    metadata is validated first (:class:`archlang.lower.io.LoadError` when malformed)."""
    from safetensors import safe_open

    from archlang.lower.io import LoadError, _read_meta

    p = _weights_file(path)
    try:
        handle = safe_open(str(p), framework="pt")
    except Exception as e:  # safetensors raises its own error type for anything not a safetensors file
        raise LoadError(f"{p} is not a readable .safetensors file (archlang loads weights from safetensors "
                        f"only): {str(e)[:300]}") from None
    with handle as f:
        meta = f.metadata() or {}
        if str(meta.get("format", "")).startswith("archlang/"):
            _read_meta(meta, p)
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle is not a dict


def load_pretrained_weights(model: nn.Module, cfg: dict[str, Any], info: ArchInfo) -> None:
    """Load the weights a timm pretrained cfg names (``state_dict`` or a local ``file``)
    with timm's ``load_pretrained``; see the module docstring for the rules."""
    from timm.models import load_pretrained

    arch = cfg.get("architecture") or info.arch
    state = cfg.get("state_dict")
    if state is None and cfg.get("file"):
        state = read_state_dict(cfg["file"])
    elif state is None:
        where = cfg.get("hf_hub_id") or cfg.get("url")
        if where:
            raise ValueError(f"{arch}: archlang models load weights from a local safetensors file only, not from "
                             f"{str(where)[:200]}; download it and pass pretrained_cfg_overlay=dict(file=...), "
                             "or use archlang.interop.hub.from_pretrained")
        raise RuntimeError(f"No pretrained weights exist for {arch}: pass pretrained_cfg_overlay=dict(file=\"x."
                           "safetensors\") (a timm/archlang state_dict or an archlang.save file), or pretrained=False")
    state = dict(state)
    file_classes = cfg.get("num_classes", -1)
    if info.classifier and f"{info.classifier}.weight" in state:
        file_classes = int(state[f"{info.classifier}.weight"].shape[0])
    own = model.state_dict()
    for k in info.lora:  # a base checkpoint: the LoRA weights keep their init (B = 0: no change)
        if k in own and k not in state:
            state[k] = own[k]
    image = _image_size(model.archlang_graph)
    load_cfg = {**cfg, "state_dict": state, "file": None, "url": None, "hf_hub_id": None, "source": None,
                "num_classes": file_classes}
    load_pretrained(model, pretrained_cfg=load_cfg, num_classes=getattr(model, "num_classes", file_classes),
                    in_chans=image[0] if image else 3, strict=True)
