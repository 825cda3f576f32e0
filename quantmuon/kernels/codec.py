"""Codebook arithmetic inside a kernel, bit for bit what the formats compute.

:mod:`quantmuon.formats.codebooks` decodes and encodes with gathers and
searchsorted over whole arrays. Inside a kernel the same values come from:

- arithmetic for ``linear`` codes (and for ``mulaw`` encoding), written with
  the very operations of the formats (division, not multiplication by a
  reciprocal; round half to even);
- small constant tables for the rest (``dynamic`` levels, ``mulaw``
  levels): a table lookup and a "how many entries lie below y" count, done
  by a :class:`Lookup`. On GPU (Triton) the tables are kernel operands and
  a lookup is a gather from them (they stay in L1), the count a branchless
  binary search. Mosaic TPU has no vector gather, so there the tables are
  constants and a lookup is a chain of selects, the count a sum of
  comparisons (2**bits operations an element: cheap at 4 bits, the compute
  cost of 8-bit ``dynamic`` codes on TPU).

Tables are computed once by the formats' own functions, so interpret-mode
kernels match the XLA path exactly.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats import codebooks

Array = jax.Array
_FMAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class Codec:
  """The static codebook settings of one format, as a kernel needs them.

  Attributes:
    codebook: ``linear``, ``dynamic`` or ``mulaw``.
    bits: 2, 4 or 8.
    mu: mu-law parameter.
    stochastic: whether codes round stochastically (noise is an operand).
    scale_dtype: dtype the scales are stored in.
  """

  codebook: str
  bits: int
  mu: float
  stochastic: bool
  scale_dtype: Any

  @property
  def per_byte(self) -> int:
    return 8 // self.bits

  @property
  def zero_code(self) -> int:
    """The code whose level is exactly zero (padding decodes to zero)."""
    return int(np.flatnonzero(
        codebooks.levels(self.codebook, self.bits) == 0)[0])

  def table_names(self) -> tuple[str, ...]:
    """Names of the constant tables this codec looks values up in."""
    names = []
    if self.codebook != "linear":
      names.append("levels")
    if self.codebook == "dynamic":
      names.append("above" if self.stochastic else "mids")
    if self.codebook == "mulaw" and self.stochastic:
      names.append("expanded")
    return tuple(names)

  def table(self, name: str) -> np.ndarray:
    """A float32 table by name (see :func:`_tables`)."""
    return _tables(self.codebook, self.bits, float(self.mu))[name]


@functools.cache
def _tables(codebook: str, bits: int, mu: float) -> dict[str, np.ndarray]:
  """The constant tables, computed by the formats' own code.

  ``levels``: what each code decodes to (before the scale). ``mids``: the
  midpoints between levels (nearest rounding counts those below y).
  ``above``: the levels but the last (stochastic rounding counts those
  below y). ``expanded``: ``expand(q / qmax)`` for ``q = -qmax .. qmax + 1``,
  the two neighbours stochastic mu-law rounding chooses between.
  """
  with jax.ensure_compile_time_eval():
    codes = jnp.arange(2 ** bits, dtype=jnp.uint8)
    levels = np.asarray(codebooks.decode(codes, codebook, bits, mu))
    table = codebooks.levels(codebook, bits)
    m = codebooks.qmax(bits)
    q = np.arange(-m, m + 2, dtype=np.float32) / np.float32(m)
    expanded = np.asarray(codebooks.expand(jnp.asarray(q), mu))
  return {
      "levels": levels.astype(np.float32),
      "mids": ((table[1:] + table[:-1]) / np.float32(2)).astype(np.float32),
      "above": table[:-1].astype(np.float32),
      "expanded": expanded.astype(np.float32),
  }


def padded_table(values: np.ndarray) -> np.ndarray:
  """A table padded with +inf to a power of two (one entry at least)."""
  size = 1 << int(values.size).bit_length()
  out = np.full(size, np.inf, np.float32)
  out[:values.size] = values
  return out


class Lookup(abc.ABC):
  """How a kernel reads a constant table: ``take`` and ``count_below``."""

  @abc.abstractmethod
  def take(self, name: str, table: np.ndarray, index: Array) -> Array:
    """``table[index]`` for an int32 ``index`` array."""

  @abc.abstractmethod
  def count_below(self, name: str, table: np.ndarray, y: Array) -> Array:
    """How many entries of the sorted ``table`` are below ``y`` (int32)."""


class GatherLookup(Lookup):
  """Tables as kernel operands (refs of :func:`padded_table`): gathers."""

  def __init__(self, refs: dict[str, Any]):
    self.refs = refs

  def take(self, name, table, index):
    return self.refs[name][index]

  def count_below(self, name, table, y):
    ref = self.refs[name]
    size = padded_table(table).size
    pos = jnp.zeros(y.shape, jnp.int32)
    step = size // 2
    while step:
      pos = jnp.where(ref[pos + (step - 1)] < y, pos + step, pos)
      step //= 2
    return pos


class ConstantLookup(Lookup):
  """Tables baked in as constants: selects and comparisons, no gathers."""

  def take(self, name, table, index):
    out = jnp.full(index.shape, float(table[0]), jnp.float32)
    for j in range(1, table.size):
      out = jnp.where(index == j, float(table[j]), out)
    return out

  def count_below(self, name, table, y):
    count = jnp.zeros(y.shape, jnp.int32)
    for value in table:
      count = count + (float(value) < y).astype(jnp.int32)
    return count


def round_half_even(v: Array) -> Array:
  """``jnp.round`` (ties to even) from ``floor``, exactly.

  Pallas Triton has no round primitive. The classic ``(v + 1.5 * 2**23) -
  1.5 * 2**23`` is folded away by XLA's simplifier (seen in interpret
  mode), so this rounds with operations that are all exact for
  ``|v| < 2**23``; +-inf stay +-inf.
  """
  r = jnp.floor(v)
  frac = v - r
  odd = (r - 2.0 * jnp.floor(0.5 * r)) != 0
  up = (frac > 0.5) | ((frac == 0.5) & odd)
  return r + up.astype(jnp.float32)


def sign(y: Array) -> Array:
  """``jnp.sign`` up to the sign of zero (Mosaic's sign needs a TPU)."""
  return jnp.where(y > 0, 1.0, jnp.where(y < 0, -1.0, 0.0))


def decode(codec: Codec, codes: Array, lookup: Lookup) -> Array:
  """int32 codes -> normalized float32 levels (before the scale)."""
  if codec.codebook == "linear":
    q = codes.astype(jnp.float32) - np.float32(2 ** (codec.bits - 1))
    m = codebooks.qmax(codec.bits)
    return jnp.maximum(q, -float(m)) / np.float32(m)
  return lookup.take("levels", codec.table("levels"), codes)


def encode(codec: Codec, y: Array, noise: Array | None,
           lookup: Lookup) -> Array:
  """Normalized float32 values -> int32 codes, as ``codebooks.encode``."""
  y = jnp.where(y != y, 0.0, y)
  y = jnp.minimum(jnp.maximum(y, -_FMAX), _FMAX)
  if codec.codebook in ("linear", "mulaw"):
    m = codebooks.qmax(codec.bits)
    if codec.codebook == "mulaw":
      y = jnp.minimum(jnp.maximum(y, -1.0), 1.0)
      companded = sign(y) * jnp.log1p(codec.mu * jnp.abs(y)) / np.float32(
          np.log1p(codec.mu))
      v = companded * np.float32(m)
    else:
      v = y * np.float32(m)
    if noise is None:
      q = round_half_even(v)
    elif codec.codebook == "linear":
      lo = jnp.floor(v)
      q = lo + (noise < v - lo).astype(jnp.float32)
    else:
      lo = jnp.floor(v)
      index = lo.astype(jnp.int32) + m
      table = codec.table("expanded")
      y_lo = lookup.take("expanded", table, index)
      y_hi = lookup.take("expanded", table, index + 1)
      p_up = (y - y_lo) / (y_hi - y_lo)
      p_up = jnp.minimum(jnp.maximum(p_up, 0.0), 1.0)
      q = lo + (noise < p_up).astype(jnp.float32)
    q = jnp.minimum(jnp.maximum(q, -float(m)), float(m))
    return q.astype(jnp.int32) + 2 ** (codec.bits - 1)
  if noise is None:
    return lookup.count_below("mids", codec.table("mids"), y)
  levels = codec.table("levels")
  upper = jnp.maximum(
      lookup.count_below("above", codec.table("above"), y), 1)
  lo = lookup.take("levels", levels, upper - 1)
  hi = lookup.take("levels", levels, upper)
  p_up = jnp.minimum(jnp.maximum((y - lo) / (hi - lo), 0.0), 1.0)
  return upper - 1 + (noise < p_up).astype(jnp.int32)
