"""How a kernel reads a codebook, bit for bit what the formats compute.

:mod:`quantmuon.formats.codebooks` decodes and encodes with gathers and
searchsorted over whole arrays. Inside a kernel the codebook object itself
computes its codes (``Codebook.kernel_encode`` / ``kernel_decode``):

- by arithmetic (``linear``, ``midrise``, ``mulaw`` encoding), written with
  the very operations of the formats (division, not multiplication by a
  reciprocal; round half to even);
- from small constant tables (``dynamic`` levels, ``mulaw`` levels): a
  table lookup and a "how many entries lie below y" count, done by the
  backend's :class:`Lookup`, defined here. On GPU (Triton) the tables
  are kernel operands and a lookup is a gather from them (they stay in
  L1), the count a branchless binary search. Mosaic TPU has no vector
  gather, so there the tables are constants and a lookup is a chain of
  selects, the count a sum of comparisons (2**bits operations an element:
  cheap at 4 bits, the compute cost of 8-bit ``dynamic`` codes on TPU).

Tables are computed once by the formats' own functions, so interpret-mode
kernels match the XLA path exactly.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats.kernel_layout import KernelLayout

Array = jax.Array
_FMAX = float(np.finfo(np.float32).max)


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


def expm1_from_exp(x: Array) -> Array:
  """``expm1`` from ``exp`` and ``log1p`` (Kahan's formula), for backends
  that do not lower ``expm1``: within 2.4 float32 ulps of it on mu-law's
  range (measured on the CPU), not bit for bit."""
  u = jnp.exp(x)
  d = u - 1.0
  return jnp.where(d == 0.0, x, d * x / jnp.log1p(d))


def decode(codec: KernelLayout, codes: Array, lookup: Lookup) -> Array:
  """int32 codes -> normalized float32 levels (before the scale)."""
  return codec.codebook.kernel_decode(codes, lookup)


def encode(codec: KernelLayout, y: Array, noise: Array | None,
           lookup: Lookup) -> Array:
  """Normalized float32 values -> int32 codes, as ``codebooks.encode``
  (NaN codes as zero, +-inf as the largest finite value)."""
  y = jnp.where(y != y, 0.0, y)
  y = jnp.minimum(jnp.maximum(y, -_FMAX), _FMAX)
  return codec.codebook.kernel_encode(y, noise, lookup)
