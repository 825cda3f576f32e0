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
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats import codebooks
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


def _clip(y: Array) -> Array:
  return jnp.minimum(jnp.maximum(y, -1.0), 1.0)


def _compand(book: codebooks.MuLaw, y: Array) -> Array:
  """``codebooks.compand`` of ``y`` in [-1, 1]."""
  return sign(y) * jnp.log1p(book.mu * jnp.abs(y)) / np.float32(
      np.log1p(book.mu))


def compand(book: codebooks.MuLaw, y: Array) -> Array:
  """Values clipped to [-1, 1] and mu-law companded, as a format's
  ``companding="before_scale"`` encode does."""
  return _compand(book, _clip(y))


def expand(book: codebooks.MuLaw, y: Array,
           expm1: Callable[[Array], Array] = jnp.expm1) -> Array:
  """``codebooks.expand``: the inverse of :func:`compand` on [-1, 1]."""
  return sign(y) * expm1(jnp.abs(y) * np.float32(np.log1p(book.mu))) / (
      book.mu)


def expm1_from_exp(x: Array) -> Array:
  """``expm1`` from ``exp`` and ``log1p`` (Kahan's formula), for backends
  that do not lower ``expm1``: within 2.4 float32 ulps of it on mu-law's
  range (measured on the CPU), not bit for bit."""
  u = jnp.exp(x)
  d = u - 1.0
  return jnp.where(d == 0.0, x, d * x / jnp.log1p(d))


def decode(codec: KernelLayout, codes: Array, lookup: Lookup) -> Array:
  """int32 codes -> normalized float32 levels (before the scale)."""
  if isinstance(codec.codebook, codebooks.Linear):
    q = codes.astype(jnp.float32) - np.float32(2 ** (codec.bits - 1))
    m = codebooks.qmax(codec.bits)
    return jnp.maximum(q, -float(m)) / np.float32(m)
  return lookup.take("levels", codec.tables()["levels"], codes)


def encode(codec: KernelLayout, y: Array, noise: Array | None,
           lookup: Lookup) -> Array:
  """Normalized float32 values -> int32 codes, as ``codebooks.encode``."""
  y = jnp.where(y != y, 0.0, y)
  y = jnp.minimum(jnp.maximum(y, -_FMAX), _FMAX)
  book = codec.codebook
  if isinstance(book, codebooks.Linear | codebooks.MuLaw):
    m = book.qmax
    if isinstance(book, codebooks.MuLaw):
      y = _clip(y)
      v = _compand(book, y) * np.float32(m)
    else:
      v = y * np.float32(m)
    if noise is None:
      q = round_half_even(v)
    elif isinstance(book, codebooks.Linear):
      lo = jnp.floor(v)
      q = lo + (noise < v - lo).astype(jnp.float32)
    else:
      lo = jnp.floor(v)
      index = lo.astype(jnp.int32) + m
      table = codec.tables()["expanded"]
      y_lo = lookup.take("expanded", table, index)
      y_hi = lookup.take("expanded", table, index + 1)
      p_up = (y - y_lo) / (y_hi - y_lo)
      p_up = jnp.minimum(jnp.maximum(p_up, 0.0), 1.0)
      q = lo + (noise < p_up).astype(jnp.float32)
    q = jnp.minimum(jnp.maximum(q, -float(m)), float(m))
    return q.astype(jnp.int32) + 2 ** (codec.bits - 1)
  if noise is None:
    return lookup.count_below("mids", codec.tables()["mids"], y)
  levels = codec.tables()["levels"]
  upper = jnp.maximum(
      lookup.count_below("above", codec.tables()["above"], y), 1)
  lo = lookup.take("levels", levels, upper - 1)
  hi = lookup.take("levels", levels, upper)
  p_up = jnp.minimum(jnp.maximum((y - lo) / (hi - lo), 0.0), 1.0)
  return upper - 1 + (noise < p_up).astype(jnp.int32)
