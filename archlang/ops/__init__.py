"""The op families: one module per family, each op with all of its rules in one place.

Takes: nothing. Produces: on import, every module of this package is imported (found by
listing the package, not from a hand-kept list), and each one defines its op classes, their
language signatures (:func:`archlang.check.surface.op`) and their rules through
:func:`archlang.ops.registry.define`. ``import archlang`` imports this package, so the whole
vocabulary is in place before any stage runs.

Every op's rules live here, also those of the ops that predate the layout (linear, conv,
the norms, attention...): their classes stay in :mod:`archlang.ir.ops`, because the stages,
codegen, the cost report and interop refer to them as ``archlang.ir.ops.X`` at import time
(module-level tuples of classes), which must not wait for the families to load; a family
module imports those classes and the stage kits, never the reverse (a stage module never
imports :mod:`archlang.ops` at module level). :func:`~archlang.ops.registry.define` records
the family module that calls it. Newer ops define their class in their family module.

Adding an op is one file here (see README, "Adding an op") and its test; the test suite
walks :data:`archlang.ops.registry.DEFS` and fails when an op lacks a rule or when its
example does not check, cost, draw, lower and agree with the interpreter.
"""

from __future__ import annotations

import importlib
import pkgutil

from archlang.ops.registry import DEFS, OpDef, define


def _load_families() -> tuple[str, ...]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "registry" and not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return tuple(names)


FAMILIES = _load_families()

__all__ = ["DEFS", "FAMILIES", "OpDef", "define"]
