"""How a kernel reads a codebook's tables: the backends' lookups.

A codebook (:mod:`quantmuon.formats.codebooks`) computes its own codes, on
whole arrays under XLA and on a tile inside a kernel alike: by arithmetic
(``linear``, ``midrise``, ``mulaw`` encoding), or from small constant
tables (``dynamic`` levels, ``mulaw`` levels) through a
:class:`~quantmuon.formats.codebooks.Lookup`: a table lookup and a "how
many entries lie below y" count. This module holds the backends' lookups.
On GPU (Triton) the tables are kernel operands and a lookup is a gather
from them (they stay in L1), the count a branchless binary search
(:class:`GatherLookup`). Mosaic TPU has no vector gather, so there the
tables are constants and a lookup is a chain of selects, the count a sum of
comparisons (:class:`ConstantLookup`; 2**bits operations an element: cheap
at 4 bits, the compute cost of 8-bit ``dynamic`` codes on TPU).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats.codebooks import Lookup

Array = jax.Array


def padded_table(values: np.ndarray) -> np.ndarray:
  """A table padded with +inf to a power of two (one entry at least)."""
  size = 1 << int(values.size).bit_length()
  out = np.full(size, np.inf, np.float32)
  out[:values.size] = values
  return out


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
