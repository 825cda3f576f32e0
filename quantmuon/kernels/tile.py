"""What a fused kernel computes on one tile, whatever the backend.

A kernel is a *source* of the values to store and a *sink* for them:

- source ``momentum``: decode the stored codes (times their scales, plus an
  optional low-rank term), accumulate the gradient (ema or sum), apply
  MuonQ's normalization, and emit the fresh momentum;
- source ``input``: an input array minus an optional low-rank term (the
  residual of ``Subspace``);
- sink ``encode``: absmax scales of the tile's groups (or given scales) and
  the codes;
- sink ``stats``: the tile's absmax, for scales that span several tiles;
- sink ``store``: the values themselves (float32).

The drivers (:mod:`quantmuon.kernels.gpu`, :mod:`quantmuon.kernels.tpu`)
move tiles between memory and these functions. Every operation mirrors the
formats and :mod:`quantmuon.momentum_op` in order and
kind, so interpret-mode kernels reproduce the XLA path's codes bit for bit
on every test case. Not always, in principle: XLA on the CPU contracts
``beta * m + g`` into a fused multiply-add in some loops and not in others,
and turns some divisions by a broadcast value into reciprocal multiplies,
so the float32 momentum of the two paths can differ in its last bit; a code
flips only when that bit straddles a rounding boundary (2 codes in 2.1M
over 8 random 512 x 512 8-bit steps, measured).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from quantmuon import momentum_op
from quantmuon.formats import layout
from quantmuon.kernels import codec as codec_lib

Array = jax.Array

# Positions in the float32 vector of runtime scalars every kernel reads:
# the fields of ``momentum_op.Scalars``, then the given scales.
SCALE_IN, SCALE_OUT = len(momentum_op.Scalars._fields), len(
    momentum_op.Scalars._fields) + 1

SOURCES = ("momentum", "input")
SINKS = ("encode", "stats", "store")
# How the scales of a tile are found: one per tile row ("row"), one for the
# whole tile ("all"), two-sided per Grid tile ("grid"), or given ("given").
REDUCTIONS = ("row", "all", "grid", "given")


@dataclasses.dataclass(frozen=True)
class Step:
  """The static description of one fused kernel.

  Attributes:
    source: ``momentum`` or ``input``.
    sink: ``encode``, ``stats`` or ``store``.
    cfg: the momentum step's options (momentum source), else None.
    emit: whether the kernel writes the fresh momentum.
    low_rank: sign of the low-rank operand: 0 (none), +1 (added to the
      decoded momentum) or -1 (subtracted from the input).
    fresh_dtype: dtype of the fresh momentum.
  """

  source: str
  sink: str
  cfg: momentum_op.Config | None = None
  emit: bool = False
  low_rank: int = 0
  fresh_dtype: Any = jnp.float32

  def __post_init__(self):
    object.__setattr__(self, "fresh_dtype", jnp.dtype(self.fresh_dtype))


def safe(scale: Array) -> Array:
  """``layout.safe_scale``: float32, zeros replaced by one."""
  scale = scale.astype(jnp.float32)
  return jnp.where(scale == 0, 1.0, scale)


def momentum(step: Step, decoded: Array, low_rank: Array | None, g: Array,
             scalars: Any) -> tuple[Array, Array]:
  """The new momentum of a tile and the gradient as prepared for it.

  Args:
    step: the kernel's description.
    decoded: the stored momentum, decoded and scaled.
    low_rank: the low-rank term added to it, or None.
    g: the gradient tile.
    scalars: a ref (or array) of the runtime scalars.

  Returns:
    ``(new momentum, prepared gradient)``, float32.
  """
  m = decoded if low_rank is None else decoded + low_rank
  return momentum_op.accumulate(m, g, read_scalars(scalars), step.cfg)


def emit(step: Step, new: Array, g: Array, scalars: Any) -> Array:
  """The fresh momentum handed to Newton-Schulz, in ``step.fresh_dtype``."""
  out = momentum_op.emit(new, g, read_scalars(scalars), step.cfg)
  return out.astype(step.fresh_dtype)


@dataclasses.dataclass
class Encoded:
  """A tile's codes and the scales found for it (in the scale dtype)."""

  codes: Array
  row: Array | None = None
  col: Array | None = None


def absmax(x: Array, mask: Array | None) -> Array:
  """``|x|`` with positions outside the array set to zero."""
  mag = jnp.abs(x)
  return mag if mask is None else jnp.where(mask, mag, 0.0)


def encode(codec: codec_lib.Codec, reduction: str, x: Array,
           mask: Array | None, given: Array | None, noise: Array | None,
           lookup: codec_lib.Lookup) -> Encoded:
  """Scales and codes of a tile, as the formats' ``_encode``.

  Args:
    codec: the codebook settings.
    reduction: one of ``REDUCTIONS``.
    x: the float32 tile.
    mask: where the tile lies inside the array, or None (all of it).
    given: the scale for ``given`` (broadcastable to ``x``), else None.
    noise: uniform noise for stochastic rounding, or None.
    lookup: how tables are read.

  Returns:
    The int32 codes and the scales: ``row`` (per row, or the whole tile's as
    shape (1, 1)) and ``col`` (Grid's column scales).
  """
  dtype = codec.scale_dtype
  if reduction == "given":
    out = Encoded(codes=None)
    divisor = safe(given)
  else:
    mag = absmax(x, mask)
    if reduction == "all":
      out = Encoded(None, row=layout.round_scale(
          jnp.max(mag, keepdims=True), dtype))
      divisor = safe(out.row)
    elif reduction == "row":
      out = Encoded(None, row=layout.round_scale(
          jnp.max(mag, axis=1, keepdims=True), dtype))
      divisor = safe(out.row)
    else:
      out = Encoded(None,
                    row=layout.round_scale(
                        jnp.max(mag, axis=1, keepdims=True), dtype),
                    col=layout.round_scale(
                        jnp.max(mag, axis=0, keepdims=True), dtype))
      divisor = safe(jnp.minimum(out.row.astype(jnp.float32),
                                 out.col.astype(jnp.float32)))
  out.codes = codec_lib.encode(codec, x / divisor, noise, lookup)
  return out


def scalars_vector(s: momentum_op.Scalars, scale_in: Any = 1.0,
                   scale_out: Any = 1.0) -> Array:
  """The runtime scalars as the float32 vector a kernel reads."""
  values = [*s, scale_in, scale_out]
  return jnp.stack([jnp.asarray(v, jnp.float32).reshape(()) for v in values])


def read_scalars(ref: Any) -> momentum_op.Scalars:
  """The ``Scalars`` of a kernel's scalar vector (a ref or an array)."""
  return momentum_op.Scalars(*(ref[i] for i in range(SCALE_IN)))


def zero_code_byte(codec: codec_lib.Codec) -> int:
  """A byte of packed zero codes: padding that decodes to zero."""
  z = codec.zero_code
  return int(sum(z << (codec.bits * s) for s in range(codec.per_byte)))

