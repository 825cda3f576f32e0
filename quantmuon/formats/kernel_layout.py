"""How a scaled format lays its codes and scales out, described for kernels.

A fused kernel needs to know, of a format on the ``(m, n)`` matrix view of
an array, how its scales tile the matrix, which codebook its codes use, and
the names of its parts. The format says so through the four methods of
:class:`KernelFormat`: ``kernel_layout(shape)`` returns a
:class:`KernelLayout`; ``kernel_noise`` draws its own rounding noise,
``kernel_parts`` hands its stored arrays to a kernel and
``kernel_assemble`` assembles its ``Stored`` from a kernel's results. The
kernels read nothing else of a format, so a new format gets its kernel by
implementing these four methods.

A format stored as low-rank factors plus a residual (``Subspace``) returns
a :class:`Factored` layout instead: the kernels run its residual's layout,
and the factors stay XLA's; it implements :class:`FactoredFormat`.

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

The statistic a scale is found from, one dataclass a kind:

- :class:`Absmax`: the largest magnitude of the group;
- :class:`ClipRms`: ``clip`` times the RMS over the group's real elements
  (a sum of squares and a count of elements inside the matrix).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats import codebooks, kernel_math, layout, packing
from quantmuon.formats.stored import Stored

Array = jax.Array

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

  def group_elements(self, m: int, n: int, index: Array) -> Array:
    """Elements inside the matrix of the groups at flat scale ``index``:
    the last block of a row is ragged."""
    del m
    block = jax.lax.rem(index, self.groups)  # index >= 0
    return jnp.minimum(self.width, n - block * self.width)


@dataclasses.dataclass(frozen=True)
class RowGroups:
  """``height`` whole rows a scale group."""

  name: ClassVar[str] = "group"

  height: int

  def scale_shapes(self, m: int, n: int) -> tuple[Shape, ...]:
    del n
    return ((layout.ceil_div(m, self.height), 1),)

  def group_elements(self, m: int, n: int, index: Array) -> Array:
    """Elements inside the matrix of the groups ``index``: the last group
    holds the rows left."""
    return jnp.minimum(self.height, m - index * self.height) * n


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
class Absmax:
  """A group's scale is its largest magnitude."""

  # Whether :meth:`of` needs the count of a group's elements.
  counts: ClassVar[bool] = False

  def of(self, x: Array, axis: Any, count: Any = None,
         keepdims: bool = False) -> Array:
    """The statistic of ``x`` (zero outside the matrix) over ``axis``.

    Args:
      x: float32 values, zero where they lie outside the matrix.
      axis: the axes of a group.
      count: unused (the absmax needs no count).
      keepdims: keep the reduced axes.

    Returns:
      The float32 absmax of each group.
    """
    del count
    return jnp.max(jnp.abs(x), axis=axis, keepdims=keepdims)


@dataclasses.dataclass(frozen=True)
class ClipRms:
  """A group's scale is ``clip`` times its RMS over its real elements.

  Attributes:
    clip: RMS a scale spans (values beyond it clip).
  """

  counts: ClassVar[bool] = True

  clip: float

  def of(self, x: Array, axis: tuple[int, ...], count: Any,
         keepdims: bool = False) -> Array:
    """``clip * sqrt(sum(x**2) * (1 / count))`` over ``axis``.

    The sum is :func:`~quantmuon.formats.kernel_math.halving_sum` over the
    last of the axes, then the one before (a group's columns, then its
    rows), the order a kernel follows, of squares no multiply-add
    contracts (``kernel_math.square``); the mean is a product with the
    reciprocal, as XLA computes a division by a constant count. So a
    kernel finds the same scales bit for bit.

    Args:
      x: float32 values, zero where they lie outside the matrix.
      axis: the axes of a group, rows before columns.
      count: float32 count of each group's elements inside the matrix
        (broadcastable to the result).
      keepdims: keep the reduced axes.

    Returns:
      The float32 statistic of each group.
    """
    total = kernel_math.square(x)
    for a in sorted(axis, reverse=True):
      total = kernel_math.halving_sum(total, a)
    if not keepdims:
      total = jnp.squeeze(total, axis)
    return self.of_sum(total, count)

  def of_sum(self, total: Array, count: Any) -> Array:
    """The statistic of groups whose squares sum to ``total``."""
    return np.float32(self.clip) * jnp.sqrt(total * (1 / count))


ScaleStatistic = Absmax | ClipRms


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
    statistic: what a scale is found from.
  """

  m: int
  n: int
  tiling: ScaleTiling
  codebook: codebooks.Codebook
  stochastic: bool
  scale_dtype: Any
  compand: codebooks.MuLaw | None = None
  statistic: ScaleStatistic = Absmax()

  @property
  def bits(self) -> int:
    return self.codebook.bits

  @property
  def per_byte(self) -> int:
    return self.codebook.per_byte

  @property
  def pad_code(self) -> int:
    """The code padding holds: the one whose level is exactly zero, so
    padding decodes to zero, or 0 for a codebook without a zero level
    (kernels then mask the padding)."""
    zero = self.codebook.zero_code
    return 0 if zero is None else zero

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

  def group_elements(self, index: Array) -> Array:
    """float32 elements inside the matrix of the scale groups at flat
    ``index`` into the scales (row-major), at least one."""
    count = self.tiling.group_elements(self.m, self.n, index)
    return jnp.maximum(count, 1).astype(jnp.float32)

  def tables(self) -> dict[str, np.ndarray]:
    """The codebook's constant float32 tables a kernel reads."""
    return self.codebook.tables(self.stochastic)


@dataclasses.dataclass(frozen=True)
class Factored:
  """A format stored as ``P @ R.T + residual``, as a kernel sees it.

  The kernels decode and encode the residual with its own layout, around
  the factors, which XLA finds and encodes (a power iteration of matrix
  products). Such a format implements :class:`FactoredFormat`.

  Attributes:
    residual: the kernel layout of the residual.
  """

  residual: KernelLayout


@runtime_checkable
class KernelFormat(Protocol):
  """What a codes-and-scales format implements to get the fused kernels.

  ``tests/kernels/test_new_format.py`` implements it for a toy format.
  """

  def kernel_layout(self, shape: tuple[int, ...]) -> KernelLayout:
    """Its scale tiling, codebook, rounding and scale dtype on an array of
    ``shape`` (None, the ``Format`` default, where no kernel stores it)."""

  def kernel_noise(self, key: Array | None, shape: tuple[int, ...]
                   ) -> Array | None:
    """The stochastic-rounding noise its encode draws, laid out as the
    ``(m, n)`` matrix view, or None when it rounds to nearest."""

  def kernel_parts(self, stored: Stored) -> tuple[Array, tuple[Array, ...]]:
    """``(codes (m, packed), scales)`` of a stored value, the scales in the
    order of ``KernelLayout.scale_shapes``."""

  def kernel_assemble(self, codes: Array, scales: tuple[Array, ...],
                      shape: tuple[int, ...], dtype: Any = jnp.float32
                      ) -> Stored:
    """The stored value of a kernel's packed codes and scales."""


@runtime_checkable
class FactoredFormat(Protocol):
  """What a format stored as ``P @ R.T + residual`` implements to get the
  fused kernels (its ``kernel_layout`` returns a :class:`Factored`)."""

  def kernel_layout(self, shape: tuple[int, ...]) -> Factored:
    """Its residual's kernel layout (None where that has none)."""

  def kernel_parts(self, stored: Stored
                   ) -> tuple[Stored, tuple[Array, Array]]:
    """The stored residual and the decoded float32 factors ``(P, R)``."""

  def factorize(self, mat: Array, previous: Stored | None = None
                ) -> tuple[Array, Array]:
    """The new factors ``(P, R)`` of the momentum ``mat``."""

  def residual_key(self, key: Array | None) -> Array | None:
    """The key the residual is encoded with."""

  def kernel_assemble(self, residual: Stored, factors: tuple[Array, Array],
                      shape: tuple[int, ...], key: Array | None) -> Stored:
    """The stored value of a kernel's residual and XLA's new factors."""
