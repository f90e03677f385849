"""Tensor types of the IR: a shape of ``int | Dim`` and a dtype class.

Takes: dims from :mod:`archlang.ir.dims`. Produces: the frozen :class:`TensorType`.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict

from archlang.ir.dims import Dim, fmt_shape

DimT = Union[int, Dim]  # noqa: UP007

# The floating-point dtypes a model can be built and costed in, with their bytes per element
# (torch's names: `torch.bfloat16` ...). The one list the API, CLI, cost, lowering and I/O use.
FLOAT_DTYPES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}


class TensorType(BaseModel):
    model_config = ConfigDict(frozen=True)

    shape: tuple[DimT, ...]
    dtype: Literal["float", "int", "bool"] = "float"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        s = fmt_shape(self.shape)
        return s if self.dtype == "float" else f"{self.dtype}{s}"
