"""A format's kernel layout on one matrix, with the kernels' limits.

A format describes its own layout (``Format.kernel_layout``, see
:mod:`quantmuon.formats.kernel_layout`); this module checks it against what
the kernels can do and names the kind of tiling the drivers walk:

- ``rows`` (:class:`RowBlocks`): groups of ``width`` elements along each
  row, ``groups`` of them a row; scales ``(m, groups)``.
- ``group`` (:class:`RowGroups`): ``height`` whole rows a group; scales
  ``(ceil(m / height), 1)``.
- ``grid`` (:class:`TwoSided`): ``tile x tile`` tiles with row and column
  scales ``(m, nt)`` and ``(mt, n)``.
- ``given`` (:class:`Spanning`): one scale for the tensor, a row or a
  column. They span the whole array, so a stats pass finds them and the
  fused pass encodes with them.

Codes keep the formats' layout: shaped like the matrix with the last axis
packed ``8 // bits`` to a byte.
"""

from __future__ import annotations

import dataclasses

from quantmuon.formats import layout, packing
from quantmuon.formats.base import Format
from quantmuon.formats.kernel_layout import (
    KernelLayout,
    RowBlocks,
    RowGroups,
    ScaleTiling,
    Spanning,
    TwoSided,
)
from quantmuon.kernels.codec import Codec

# Widest scale group a GPU program holds in registers, in elements.
MAX_GPU_GROUP = 16384
MAX_ELEMENTS = 2 ** 31 - 1
MAX_TILE = 128


class Unsupported(ValueError):
  """Raised for a format or shape that has no kernel."""


@dataclasses.dataclass(frozen=True)
class Geometry:
  """A format's scale groups on one matrix.

  Attributes:
    layout: the format's kernel layout.
    codec: the codebook settings.
  """

  layout: KernelLayout
  codec: Codec

  @property
  def m(self) -> int:
    return self.layout.m

  @property
  def n(self) -> int:
    return self.layout.n

  @property
  def tiling(self) -> ScaleTiling:
    return self.layout.tiling

  @property
  def kind(self) -> str:
    """The tiling's name in kernel names: ``rows``, ``group``, ``grid`` or
    ``given``."""
    return {RowBlocks: "rows", RowGroups: "group", TwoSided: "grid",
            Spanning: "given"}[type(self.tiling)]

  @property
  def per_byte(self) -> int:
    return self.codec.per_byte

  @property
  def packed(self) -> int:
    """Bytes a row of codes takes."""
    return packing.packed_length(self.n, self.codec.bits)

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

  def scale_shapes(self) -> tuple[tuple[int, int], ...]:
    """Shapes of the stored scales, in the order the format stores them."""
    return self.layout.scale_shapes()


def of(fmt: Format, shape: tuple[int, ...]) -> Geometry:
  """The geometry of ``fmt`` on an array of ``shape``.

  Args:
    fmt: a format.
    shape: the array's shape.

  Returns:
    Its ``Geometry``.

  Raises:
    Unsupported: with the reason, for a format or shape without a kernel.
  """
  kl = fmt.kernel_layout(shape)
  if kl is None:
    raise Unsupported(f"no kernel stores {type(fmt).__name__} values.")
  book = kl.codebook
  if not book.signed:
    raise Unsupported(
        f"codebook {book.name!r} is unsigned; the momentum kernels take "
        "signed ones.")
  m, n, t, k = kl.m, kl.n, kl.tiling, book.per_byte
  if m * n > MAX_ELEMENTS:
    raise Unsupported(f"{m * n} elements exceed the kernels' int32 offsets.")
  if isinstance(t, TwoSided):
    if t.side % k:
      raise Unsupported(f"tile={t.side} splits bytes of {kl.bits}-bit codes.")
    if t.side > MAX_TILE:
      raise Unsupported(
          f"tile={t.side} is wider than the kernels' {MAX_TILE}.")
  elif isinstance(t, RowBlocks):
    if t.groups > 1 and t.width % k:
      raise Unsupported(
          f"block_size={t.width} splits bytes of {kl.bits}-bit codes.")
    if t.width > MAX_GPU_GROUP:
      raise Unsupported(
          f"block_size={t.width} is wider than the kernels' "
          f"{MAX_GPU_GROUP}.")
  elif isinstance(t, RowGroups):
    if t.height * packing.packed_length(n, kl.bits) * k > 4 * MAX_GPU_GROUP:
      raise Unsupported(f"groups of {t.height} rows of {n} are too large.")
  return Geometry(kl, Codec(book, kl.stochastic, kl.scale_dtype,
                            kl.compand))
