"""Storage formats: how one float array is kept between optimizer steps.

Each format is a frozen, hashable dataclass with ``encode(x, *, key=None,
previous=None) -> Stored`` and ``decode(stored) -> array``. Formats compose:
``Subspace(factors=Blockwise(bits=8), residual=Grid(bits=4))``.
"""

from quantmuon.formats import serialization  # noqa: F401 (flax, when there)
from quantmuon.formats.base import Format
from quantmuon.formats.codebooks import CODEBOOKS, dynamic_codebook
from quantmuon.formats.float_ import Float
from quantmuon.formats.floating_point import FloatingPoint
from quantmuon.formats.grid import Grid
from quantmuon.formats.matrix_view import MatrixView
from quantmuon.formats.per_matrix import PerMatrix
from quantmuon.formats.stored import Stored, is_stored
from quantmuon.formats.subspace import BudgetSubspace, Subspace
from quantmuon.formats.tiled import Axiswise, Blockwise

__all__ = [
    "CODEBOOKS",
    "Axiswise",
    "Blockwise",
    "BudgetSubspace",
    "Float",
    "FloatingPoint",
    "Format",
    "Grid",
    "MatrixView",
    "PerMatrix",
    "Stored",
    "Subspace",
    "dynamic_codebook",
    "is_stored",
]
