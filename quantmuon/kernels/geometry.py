"""Which format layouts the kernels take.

A format describes its own layout (``Format.kernel_layout``, see
:mod:`quantmuon.formats.kernel_layout`); :func:`of` checks it against what
the kernels can do: signed codebooks, int32 offsets, groups that hold whole
bytes of packed codes, Grid tiles up to 128 and groups a GPU program holds
in registers; RMS scales and codebooks without a zero level on blocks and
row groups only (a scale that spans programs is reduced across them, and
the TPU's padded views rely on padding that decodes to zero).
"""

from __future__ import annotations

from quantmuon.formats import packing
from quantmuon.formats.base import Format
from quantmuon.formats.kernel_layout import (
    Factored,
    KernelLayout,
    RowBlocks,
    RowGroups,
    TwoSided,
)

# Widest scale group a GPU program holds in registers, in elements.
MAX_GPU_GROUP = 16384
MAX_ELEMENTS = 2 ** 31 - 1
MAX_TILE = 128


class Unsupported(ValueError):
  """Raised for a format or shape that has no kernel."""


def of(fmt: Format, shape: tuple[int, ...]) -> KernelLayout | Factored:
  """The kernel layout of ``fmt`` on an array of ``shape``, checked.

  Args:
    fmt: a format.
    shape: the array's shape.

  Returns:
    Its ``KernelLayout``, or its ``Factored`` layout (whose residual
    layout is checked).

  Raises:
    Unsupported: with the reason, for a format or shape without a kernel.
  """
  kl = fmt.kernel_layout(shape)
  if kl is None:
    raise Unsupported(f"no kernel stores {fmt!r} values.")
  _check(kl.residual if isinstance(kl, Factored) else kl)
  return kl


def _check(kl: KernelLayout) -> None:
  """Raises ``Unsupported`` unless the kernels can run ``kl``."""
  book = kl.codebook
  if not book.signed:
    raise Unsupported(
        f"codebook {book.name!r} is unsigned; the momentum kernels take "
        "signed ones.")
  m, n, t, k = kl.m, kl.n, kl.tiling, book.per_byte
  if book.zero_code is None and not isinstance(t, RowBlocks | RowGroups):
    raise Unsupported(
        f"codebook {book.name!r} has no zero level, which the TPU's padded "
        f"views of {type(t).__name__} tiles need; only blocks and row "
        "groups.")
  if kl.statistic.counts and not isinstance(t, RowBlocks | RowGroups):
    raise Unsupported(
        f"no kernel finds {type(kl.statistic).__name__} scales of "
        f"{type(t).__name__} tiles (a sum across programs would not match "
        "the reference's order); only blocks and row groups.")
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
