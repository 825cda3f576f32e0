"""How a format's scales tile the matrix view, as the kernels see it.

The absmax formats cut the ``(m, n)`` matrix view of an array into scale
groups; a kernel family is a way of walking those groups:

- ``rows`` (Blockwise with ``n >= block_size``): groups of ``width``
  elements along each row, ``groups`` of them a row; scales ``(m, groups)``.
- ``group`` (Blockwise with short rows): ``height`` whole rows a group;
  scales ``(ceil(m / height), 1)``.
- ``grid`` (Grid): ``tile x tile`` tiles with row and column scales
  ``(m, nt)`` and ``(mt, n)``.
- ``given`` (Axiswise): one scale for the tensor, a row or a column. They
  span the whole array, so a stats pass finds them and the fused pass
  encodes with them.

Codes keep the formats' layout: shaped like the matrix with the last axis
packed ``8 // bits`` to a byte.
"""

from __future__ import annotations

import dataclasses

from quantmuon.formats import layout, packing
from quantmuon.formats.base import Format
from quantmuon.formats.grid import Grid
from quantmuon.formats.tiled import Axiswise, Blockwise
from quantmuon.kernels.codec import Codec

KINDS = ("rows", "group", "grid", "given")
SIGNED_CODEBOOKS = ("linear", "dynamic", "mulaw")
# Widest scale group a GPU program holds in registers, in elements.
MAX_GPU_GROUP = 16384
MAX_ELEMENTS = 2 ** 31 - 1


class Unsupported(ValueError):
  """Raised for a format or shape that has no kernel."""


@dataclasses.dataclass(frozen=True)
class Geometry:
  """A format's scale groups on one matrix.

  Attributes:
    kind: one of ``KINDS``.
    m: rows of the matrix view.
    n: columns of the matrix view.
    codec: the codebook settings.
    width: columns of a group (``rows``), or the tile side (``grid``).
    height: rows of a group (``group``), or the tile side (``grid``).
    groups: groups a row (``rows``), or tiles a row (``grid``).
    axis: ``tensor``, ``row`` or ``col`` (``given``).
  """

  kind: str
  m: int
  n: int
  codec: Codec
  width: int = 1
  height: int = 1
  groups: int = 1
  axis: str = "tensor"

  @property
  def per_byte(self) -> int:
    return self.codec.per_byte

  @property
  def packed(self) -> int:
    """Bytes a row of codes takes."""
    return packing.packed_length(self.n, self.codec.bits)

  @property
  def row_tiles(self) -> int:
    """Rows of groups: ``ceil(m / height)``."""
    return layout.ceil_div(self.m, self.height)

  def scale_shapes(self) -> tuple[tuple[int, int], ...]:
    """Shapes of the stored scales, in the order the format stores them."""
    if self.kind == "rows":
      return ((self.m, self.groups),)
    if self.kind == "group":
      return ((self.row_tiles, 1),)
    if self.kind == "grid":
      return ((self.m, self.groups), (self.row_tiles, self.n))
    return ({"tensor": (1, 1), "row": (self.m, 1),
             "col": (1, self.n)}[self.axis],)

  def scale_names(self) -> tuple[str, ...]:
    """Names of the scale parts of the ``Stored`` value."""
    if self.kind == "grid":
      return ("row_scales", "col_scales")
    return ("scales",)


def codec_of(fmt: Format) -> Codec:
  return Codec(codebook=fmt.codebook, bits=fmt.bits, mu=float(fmt.mu),
               stochastic=fmt.rounding == "stochastic",
               scale_dtype=fmt.scale_dtype)


def of(fmt: Format, shape: tuple[int, ...]) -> Geometry:
  """The geometry of ``fmt`` on an array of ``shape``.

  Args:
    fmt: a ``Blockwise``, ``Axiswise`` or ``Grid`` format.
    shape: the array's shape.

  Returns:
    Its ``Geometry``.

  Raises:
    Unsupported: with the reason, for a format or shape without a kernel.
  """
  if not isinstance(fmt, Blockwise | Axiswise | Grid):
    raise Unsupported(f"no kernel stores {type(fmt).__name__} values.")
  if fmt.codebook == "midrise":
    raise Unsupported(
        "codebook 'midrise' has no kernel yet; the XLA path runs it.")
  if fmt.codebook not in SIGNED_CODEBOOKS:
    raise Unsupported(
        f"codebook {fmt.codebook!r} is unsigned; the momentum kernels "
        f"take {SIGNED_CODEBOOKS}.")
  if not isinstance(fmt, Grid) and fmt.compands_first:
    raise Unsupported(
        "companding='before_scale' (MuonQ's public order) has no kernel "
        "yet; the XLA path runs it.")
  if not isinstance(fmt, Grid) and fmt.clip_rms is not None:
    raise Unsupported(
        "clip_rms (an RMS-fitted scale) has no kernel yet; the XLA path "
        "runs it.")
  m, n = layout.matrix_shape(shape)
  if m * n > MAX_ELEMENTS:
    raise Unsupported(f"{m * n} elements exceed the kernels' int32 offsets.")
  codec = codec_of(fmt)
  k = codec.per_byte
  if isinstance(fmt, Grid):
    t = fmt.tile
    nt = layout.ceil_div(n, t)
    if t % k:
      raise Unsupported(f"tile={t} splits bytes of {fmt.bits}-bit codes.")
    if t > 128:
      raise Unsupported(f"tile={t} is wider than the kernels' 128.")
    return Geometry("grid", m, n, codec, width=t, height=t, groups=nt)
  if isinstance(fmt, Axiswise):
    return Geometry("given", m, n, codec, axis=fmt.axis)
  tr, tc = fmt.tile(m, n)
  if tr == 1:
    groups = layout.ceil_div(n, tc)
    if groups > 1 and tc % k:
      raise Unsupported(
          f"block_size={tc} splits bytes of {fmt.bits}-bit codes.")
    if tc > MAX_GPU_GROUP:
      raise Unsupported(
          f"block_size={tc} is wider than the kernels' {MAX_GPU_GROUP}.")
    return Geometry("rows", m, n, codec, width=tc, groups=groups)
  if tr * packing.packed_length(n, fmt.bits) * k > 4 * MAX_GPU_GROUP:
    raise Unsupported(f"groups of {tr} rows of {n} are too large.")
  return Geometry("group", m, n, codec, width=n, height=tr)
