"""The module timm's registry files archlang models under (``timm.list_models(module="archlang_models")``).

Takes: nothing at import; :func:`archlang.interop.timm.register` adds one entrypoint per
registered arch (``archlang_<arch>``) and its default cfgs here, because timm's
``register_model`` reads an entrypoint's module for ``default_cfgs`` and ``__all__``.
Produces: those entrypoints, as module attributes.
"""

from __future__ import annotations

from typing import Any

default_cfgs: dict[str, Any] = {}
__all__: list[str] = []
