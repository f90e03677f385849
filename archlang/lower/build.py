"""Turn generated source into a live ``nn.Module``, and write it to disk.

Takes: an IR graph, and the dtype (and optionally the device) to build in. Produces: the
generated module's source (via :mod:`.codegen`), a Python module object executed from that
same source (so the in-process model and the written file are the same code), and the
model instance, constructed directly in that dtype (``device="meta"`` allocates nothing).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path

from archlang.ir.graph import Graph
from archlang.ir.types import FLOAT_DTYPES
from archlang.lower.codegen import generate

DTYPES = tuple(FLOAT_DTYPES)


def load_source(source: str, name: str) -> types.ModuleType:
    """Execute generated ``source`` as a module registered in ``sys.modules``."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    modname = f"archlang_generated.{name}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_loader(modname, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = f"<archlang:{name}>"
    exec(compile(source, f"<archlang:{name}>", "exec"), module.__dict__)
    sys.modules[modname] = module
    return module


def torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype `{dtype}`: choose one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


@contextmanager
def _constructing(dtype: str, device: str | None):
    """Factory functions create ``dtype`` floats (on ``device``) while the model is built."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(dtype))
    try:
        if device is None:
            yield
        else:
            with torch.device(device):
                yield
    finally:
        torch.set_default_dtype(previous)


KERNELS = ("auto", "torch")


def instantiate(graph: Graph, dtype: str = "float32", device: str | None = None, kernels: str = "torch"):
    """Generate, load and instantiate the model for ``graph``; returns ``(model, source)``.

    Parameters and floating-point buffers are created in ``dtype`` ("float32", "bfloat16",
    "float16") as the model is constructed, not cast afterwards, so the peak memory is the
    model's size in that dtype; integer buffers (index tables) stay integers. ``device``
    ("meta", "cuda", ...) is where the tensors are created (default: torch's default).
    ``kernels`` "torch" leaves the generated modules as they are; "auto" also lets the
    linear layers run oneDNN's matmul where no gradient is wanted
    (:func:`archlang.lower.inference_runtime.use_onednn_linears`: the same parameters and
    outputs, to float rounding), runs the GELU that alone reads a linear layer's output in place
    where no gradient is wanted (:class:`~archlang.lower.inference_runtime.InplaceGELU`) and, in a CNN (:meth:`Graph.prefers_channels_last`), keeps the
    convolutions' weights channels-last (:func:`~archlang.lower.inference_runtime.use_channels_last`).
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels is one of {', '.join(map(repr, KERNELS))}, not {kernels!r}")
    target = torch_dtype(dtype)
    source, cls_name = generate(graph)
    module = load_source(source, graph.arch)
    with _constructing(dtype, device):
        model = getattr(module, cls_name)()
    # a helper may compute a small table in float32 explicitly (for accuracy); keep one dtype
    for mod in model.modules():
        for name, buf in list(mod._buffers.items()):
            if buf is not None and buf.is_floating_point() and buf.dtype != target:
                mod._buffers[name] = buf.to(target)
    if kernels == "auto":
        from archlang.lower.inference import linear_gelu_pairs
        from archlang.lower.inference_runtime import use_channels_last, use_inplace_gelus, use_onednn_linears

        use_onednn_linears(model)
        use_inplace_gelus(model, linear_gelu_pairs(graph))
        if graph.prefers_channels_last():
            use_channels_last(model)
    model.archlang_source = source
    return model, source


# Modules a generated file (or the code that imports it) imports: a file named like one of them
# would shadow it for every script in the same folder (`build/ast.py` breaks `import ast`).
THIRD_PARTY = frozenset(("torch", "torchvision", "timm", "einops", "safetensors", "numpy", "archlang", "typing_extensions",
                         "transformers", "huggingface_hub", "onnx", "onnxruntime", "sympy", "networkx", "PIL", "typer",
                         "rich", "pydantic", "lark", "sklearn", "matplotlib", "scipy", "pytest", "hypothesis"))


def module_name(arch: str) -> str:
    """The file stem of an arch's generated module: the arch's name, or ``<arch>_model`` when
    the name would shadow a standard-library or commonly imported module."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", arch):
        raise ValueError(f"arch name {arch[:80]!r} is not an identifier, so it names no file")
    taken = sys.stdlib_module_names | THIRD_PARTY | set(sys.builtin_module_names)
    return f"{arch}_model" if arch in taken or arch.lower() in taken else arch


def write(graph: Graph, out_dir: Path) -> Path:
    """Write the generated module to ``out_dir/<module_name(arch)>.py``."""
    name = module_name(graph.arch)
    source, _ = generate(graph)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.py"
    path.write_text(source)
    return path
