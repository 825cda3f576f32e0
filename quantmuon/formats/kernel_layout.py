"""How a scaled format lays its codes and scales out, described for kernels.

A fused kernel needs to know, of a format on the ``(m, n)`` matrix view of
an array, how its scales tile the matrix, which codebook its codes use, and
the names of its parts. The format says so through
``Format.kernel_layout(shape)``, which returns a :class:`KernelLayout`; it
also draws its own rounding noise (``kernel_noise``), hands its stored
arrays to a kernel (``kernel_parts``) and assembles its ``Stored`` from a
kernel's results (``kernel_assemble``). The kernels read nothing else of a
format, so a new format gets its kernel by implementing these four methods.

The scale tilings, one dataclass a kind:

- :class:`RowBlocks`: blocks of ``width`` elements along each row (the last
  one ragged), ``groups`` a row; scales ``(m, groups)``.
- :class:`RowGroups`: ``height`` whole rows a group; scales
  ``(ceil(m / height), 1)``.
- :class:`TwoSided`: square ``side`` tiles with a row and a column scale
  inside each; scales ``(m, ceil(n / side))`` and ``(ceil(m / side), n)``.
- :class:`Spanning`: one scale for the tensor, each row or each column;
  scales ``(1, 1)``, ``(m, 1)`` or ``(1, n)``. They span more than one
  kernel tile, so a kernel finds them in a pass of its own.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import numpy as np

from quantmuon.formats import codebooks, layout, packing

Shape = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class RowBlocks:
  """Blocks of ``width`` elements along each row, ``groups`` a row."""

  name: ClassVar[str] = "rows"

  width: int
  groups: int

  def scale_shapes(self, m: int, n: int) -> tuple[Shape, ...]:
    del n
    return ((m, self.groups),)


@dataclasses.dataclass(frozen=True)
class RowGroups:
  """``height`` whole rows a scale group."""

  name: ClassVar[str] = "group"

  height: int

  def scale_shapes(self, m: int, n: int) -> tuple[Shape, ...]:
    del n
    return ((layout.ceil_div(m, self.height), 1),)


@dataclasses.dataclass(frozen=True)
class TwoSided:
  """Square ``side`` tiles, a row scale and a column scale inside each."""

  name: ClassVar[str] = "grid"

  side: int

  def scale_shapes(self, m: int, n: int) -> tuple[Shape, ...]:
    return ((m, layout.ceil_div(n, self.side)),
            (layout.ceil_div(m, self.side), n))


@dataclasses.dataclass(frozen=True)
class Spanning:
  """One scale for the ``tensor``, each ``row`` or each ``col``."""

  name: ClassVar[str] = "given"

  axis: str

  def scale_shapes(self, m: int, n: int) -> tuple[Shape, ...]:
    return ({"tensor": (1, 1), "row": (m, 1), "col": (1, n)}[self.axis],)


ScaleTiling = RowBlocks | RowGroups | TwoSided | Spanning


@dataclasses.dataclass(frozen=True)
class KernelLayout:
  """A scaled format on one matrix view, as a kernel sees it.

  Attributes:
    m: rows of the matrix view.
    n: columns of the matrix view.
    tiling: how the scales tile the matrix.
    codebook: the codebook of the codes.
    stochastic: whether codes round stochastically (noise is an operand).
    scale_dtype: dtype the scales are stored in.
    compand: the mu-law companding applied before the scale is taken
      (values are clipped to [-1, 1], companded, scaled, coded with
      ``codebook``; decoding expands), or None.
  """

  m: int
  n: int
  tiling: ScaleTiling
  codebook: codebooks.Codebook
  stochastic: bool
  scale_dtype: Any
  compand: codebooks.MuLaw | None = None

  @property
  def bits(self) -> int:
    return self.codebook.bits

  @property
  def per_byte(self) -> int:
    return self.codebook.per_byte

  @property
  def zero_code(self) -> int:
    """The code whose level is exactly zero (padding decodes to zero)."""
    return self.codebook.zero_code

  @property
  def kind(self) -> str:
    """The tiling's name: ``rows``, ``group``, ``grid`` or ``given``."""
    return self.tiling.name

  @property
  def packed(self) -> int:
    """Bytes a row of codes takes."""
    return packing.packed_length(self.n, self.bits)

  @property
  def row_tiles(self) -> int:
    """Rows of scale groups (``RowGroups``) or of tiles (``TwoSided``)."""
    t = self.tiling
    if isinstance(t, RowGroups):
      return layout.ceil_div(self.m, t.height)
    if isinstance(t, TwoSided):
      return layout.ceil_div(self.m, t.side)
    return self.m

  @property
  def col_tiles(self) -> int:
    """Columns of tiles (``TwoSided``)."""
    t = self.tiling
    return layout.ceil_div(self.n, t.side) if isinstance(t, TwoSided) else 1

  def scale_shapes(self) -> tuple[Shape, ...]:
    """Shapes of the scales, in the order the format hands them over."""
    return self.tiling.scale_shapes(self.m, self.n)

  def tables(self) -> dict[str, np.ndarray]:
    """The codebook's constant float32 tables a kernel reads."""
    return _tables(self.codebook, self.stochastic)


@functools.cache
def _tables(book: codebooks.Codebook, stochastic: bool
            ) -> dict[str, np.ndarray]:
  return book.tables(stochastic)
