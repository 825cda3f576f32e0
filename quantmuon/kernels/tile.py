"""What a fused kernel computes on a tile: its description and its encode.

A kernel is a *source* of the values to store and a *sink* for them:

- source ``momentum``: decode the stored codes (times their scales, plus an
  optional low-rank term), accumulate the gradient (ema or sum), apply
  MuonQ's normalization, and emit the fresh momentum;
- source ``input``: an input array minus an optional low-rank term (the
  residual of ``Subspace``);
- sink ``encode``: the scales of the tile's groups (their absmax or RMS,
  as the layout's statistic says; or given scales) and the codes;
- sink ``stats``: the tile's absmax, for scales that span several tiles;
- sink ``store``: the values themselves (float32).

:mod:`quantmuon.kernels.body` runs a :class:`Step` on one tile through a
backend's I/O. Every operation mirrors the formats and
:mod:`quantmuon.momentum_op` in order and kind, so interpret-mode kernels
reproduce the XLA path's codes bit for bit on every test case. Not always,
in principle: XLA on the CPU contracts ``beta * m + g`` into a fused
multiply-add in some loops and not in others, and turns some divisions by a
broadcast value into reciprocal multiplies, so the float32 momentum of the
two paths can differ in its last bit; a code flips only when that bit
straddles a rounding boundary (2 codes in 2.1M over 8 random 512 x 512
8-bit steps, measured).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from quantmuon import momentum_op
from quantmuon.formats import codebooks, kernel_math, layout
from quantmuon.formats.kernel_layout import KernelLayout

Array = jax.Array

# Positions in the float32 vector of runtime scalars every kernel reads:
# the fields of ``momentum_op.Scalars``, then the given scales.
SCALE_IN, SCALE_OUT = len(momentum_op.Scalars._fields), len(
    momentum_op.Scalars._fields) + 1

# How the scales of a tile are found: one per tile row ("row"), one for the
# whole tile ("all"), two-sided per Grid tile ("grid"), or given ("given").
REDUCTIONS = ("row", "all", "grid", "given")


class Source(enum.Enum):
  """Where a kernel's values come from."""

  MOMENTUM = "momentum"
  INPUT = "input"


class Sink(enum.Enum):
  """What a kernel does with its values."""

  ENCODE = "encode"
  STATS = "stats"
  STORE = "store"


@dataclasses.dataclass(frozen=True)
class Step:
  """The static description of one fused kernel.

  Attributes:
    source: where the values come from.
    sink: what is done with them.
    cfg: the momentum step's options (momentum source), else None.
    emit: whether the kernel writes the fresh momentum.
    low_rank: sign of the low-rank operand: 0 (none), +1 (added to the
      decoded momentum) or -1 (subtracted from the input).
    fresh_dtype: dtype of the fresh momentum.
  """

  source: Source
  sink: Sink
  cfg: momentum_op.Config | None = None
  emit: bool = False
  low_rank: int = 0
  fresh_dtype: Any = jnp.float32

  def __post_init__(self):
    object.__setattr__(self, "fresh_dtype", jnp.dtype(self.fresh_dtype))

  @property
  def name(self) -> str:
    return f"{self.source.value}_{self.sink.value}"


@dataclasses.dataclass
class Encoded:
  """A tile's codes and the scales found for it (in the scale dtype)."""

  codes: Array
  row: Array | None = None
  col: Array | None = None


def magnitude(x: Array, mask: Array | None) -> Array:
  """``|x|`` with positions outside the array set to zero."""
  mag = jnp.abs(x)
  return mag if mask is None else jnp.where(mask, mag, 0.0)


def encode(codec: KernelLayout, reduction: str, x: Array,
           mask: Array | None, given: Array | None, count: Array | None,
           sums: Callable[[Array], Array], noise: Array | None,
           lookup: codebooks.Lookup) -> Encoded:
  """Scales and codes of a tile, as the formats' ``_encode``.

  Args:
    codec: the kernel layout (codebook, rounding, companding, statistic).
    reduction: one of ``REDUCTIONS``.
    x: the float32 tile.
    mask: where the tile lies inside the array, or None (all of it).
    given: the scale for ``given`` (broadcastable to ``x``), else None.
    count: the elements inside the array of each scale group, for a
      statistic that counts them (``ClipRms``), else None.
    sums: the sum of each of the tile's scale groups (``reduction`` "row"
      or "all"), in the reference's order (``TileIO.group_sums``).
    noise: uniform noise for stochastic rounding, or None.
    lookup: how tables are read.

  Returns:
    The int32 codes and the scales: ``row`` (per row, or the whole tile's as
    shape (1, 1); negative for a group that holds an exact zero, where the
    codebook has ``zero_groups``) and ``col`` (Grid's column scales).
  """
  dtype, stat, book = codec.scale_dtype, codec.statistic, codec.codebook
  if reduction == "given":
    out = Encoded(codes=None)
    divisor = flags = layout.safe_scale(given)
  else:
    inside = x if mask is None else jnp.where(mask, x, 0.0)
    if reduction in ("row", "all"):
      if stat.counts:
        found = stat.of_sum(sums(kernel_math.square(inside)), count)
      else:
        found = stat.of(inside, 1 if reduction == "row" else None,
                        keepdims=True)
      out = Encoded(None, row=layout.round_scale(found, dtype))
      divisor = layout.safe_scale(out.row)
      if book.zero_groups is not None:
        zeros = x == 0 if mask is None else mask & (x == 0)
        out.row = book.flag_scales(
            out.row, sums(zeros.astype(jnp.float32)) > 0)
      flags = out.row
    else:
      row, col = (stat.of(inside, 1, keepdims=True),
                  stat.of(inside, 0, keepdims=True))
      # A tile holding a NaN or an inf (flagged as +inf, see body.run)
      # gets inf scales throughout, as the format gives it.
      bad = jnp.max(row, axis=0, keepdims=True) > layout.F32_MAX
      out = Encoded(None,
                    row=layout.round_scale(jnp.where(bad, jnp.inf, row),
                                           dtype),
                    col=layout.round_scale(jnp.where(bad, jnp.inf, col),
                                           dtype))
      divisor = flags = layout.safe_scale(
          jnp.minimum(out.row.astype(jnp.float32),
                      out.col.astype(jnp.float32)))
  out.codes = book.encode_scaled(x / divisor, noise, flags, lookup)
  return out


def scalars_vector(s: momentum_op.Scalars, scale_in: Any = 1.0,
                   scale_out: Any = 1.0) -> Array:
  """The runtime scalars as the float32 vector a kernel reads."""
  values = [*s, scale_in, scale_out]
  return jnp.stack([jnp.asarray(v, jnp.float32).reshape(()) for v in values])


def read_scalars(ref: Any) -> momentum_op.Scalars:
  """The ``Scalars`` of a kernel's scalar vector (a ref or an array)."""
  return momentum_op.Scalars(*(ref[i] for i in range(SCALE_IN)))


def pad_byte(codec: KernelLayout) -> int:
  """A byte of packed padding codes (``KernelLayout.pad_code``)."""
  z = codec.pad_code
  return int(sum(z << (codec.bits * s) for s in range(codec.per_byte)))

