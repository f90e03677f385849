"""Turn generated source into a live ``nn.Module``, and write it to disk.

Takes: an IR graph. Produces: the generated module's source (via :mod:`.codegen`), a
Python module object executed from that same source (so the in-process model and the
written file are the same code), and the model instance.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from pathlib import Path

from archlang.ir.graph import Graph
from archlang.lower.codegen import generate


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


def instantiate(graph: Graph):
    """Generate, load and instantiate the model for ``graph``; returns ``(model, source)``."""
    source, cls_name = generate(graph)
    module = load_source(source, graph.arch)
    model = getattr(module, cls_name)()
    model.archlang_source = source
    return model, source


def write(graph: Graph, out_dir: Path) -> Path:
    source, _ = generate(graph)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{graph.arch}.py"
    path.write_text(source)
    return path
