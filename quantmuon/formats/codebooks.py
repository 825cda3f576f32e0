"""Codebooks: the value levels a code can stand for, on [-1, 1] or [0, 1].

A codebook maps a normalized value ``y = x / scale`` to an integer code in
``[0, 2**bits)`` and back. Codes are always unsigned indices, so they pack
the same way whatever the codebook.

- ``linear``: symmetric integers, ``q = round(y * qmax)`` with
  ``qmax = 2**(bits-1) - 1``, stored as ``q + 2**(bits-1)``.
- ``dynamic``: the bitsandbytes signed dynamic ("tree") map; nearest level.
- ``mulaw``: mu-law companding ``sign(y) log(1 + mu|y|) / log(1 + mu)``, then
  linear codes (MuonQ, arXiv 2605.11396).
- ``midrise``: ``2**bits`` evenly spaced levels ``(2c + 1 - 2**bits) /
  (2**bits - 1)`` on [-1, 1], without a zero level, so every code is used:
  4 levels at 2 bits where ``linear`` has 3. Paired with an RMS-fitted scale
  (``clip_rms`` of the tiled formats) it is the uniform quantizer of least
  squared error for Gaussian values.
- ``unsigned_linear``: ``linspace(0, 1, 2**bits + 1)[1:]``, nearest level. It
  has no zero level, so a positive second moment never decodes to zero
  (torchao's unsigned 4-bit map).
- ``unsigned_dynamic``: the bitsandbytes unsigned dynamic map with its zero
  level replaced by half its smallest positive level; nearest level.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats import kernel_math

Array = jax.Array

# Levels on [-1, 1]; all but midrise have an exact zero level.
SIGNED = ("linear", "dynamic", "mulaw", "midrise")
UNSIGNED = ("unsigned_linear", "unsigned_dynamic")
CODEBOOKS = SIGNED + UNSIGNED
BITS = (2, 4, 8)


def check_bits(bits: int) -> int:
  """Raises a ValueError naming ``bits`` unless it is 2, 4 or 8."""
  if isinstance(bits, bool) or bits not in BITS:
    raise ValueError(
        f"bits must be one of {BITS} (codes are packed into bytes), got "
        f"{bits!r}.")
  return int(bits)


def check_codebook(codebook: str) -> str:
  if codebook not in CODEBOOKS:
    raise ValueError(
        f"codebook must be one of {CODEBOOKS}, got {codebook!r}.")
  return codebook


def qmax(bits: int) -> int:
  """Largest linear code magnitude: 127 at 8 bits, 7 at 4, 1 at 2."""
  return 2 ** (bits - 1) - 1


def _midrise_half(bits: int) -> np.float32:
  """Half the span of the midrise codes: level ``(c - half) / half``."""
  return np.float32((2 ** bits - 1) / 2)


@functools.cache
def dynamic_codebook(bits: int = 8, signed: bool = True) -> np.ndarray:
  """The bitsandbytes dynamic ("tree") quantization map, sorted ascending.

  For exponent level ``i = 0 .. E-1`` (``E = bits - 1`` when signed, else
  ``bits - 1`` too), the map holds ``10**(i - E + 1)`` times the midpoints of
  ``linspace(0.1, 1, n_i + 1)``, with ``n_i = 2**i`` (signed, both signs) or
  ``2**(i+1)`` (unsigned); plus the levels 0 and 1. At 8 bits signed this is
  exactly bitsandbytes' ``create_dynamic_map(signed=True)``: 256 values; at 4
  bits it is the map with 3 exponent bits, 16 values.

  Args:
    bits: 2, 4 or 8.
    signed: whether the map covers [-1, 1] (True) or [0, 1] (False).

  Returns:
    A float32 numpy array of ``2**bits`` sorted levels.
  """
  check_bits(bits)
  exponent_bits = bits - 1
  levels: list[np.ndarray] = []
  for i in range(exponent_bits):
    n = 2 ** i if signed else 2 ** (i + 1)
    bounds = np.linspace(0.1, 1.0, n + 1, dtype=np.float32)
    means = (bounds[:-1] + bounds[1:]) / np.float32(2.0)
    magnitude = np.float32(10.0 ** (i - exponent_bits + 1))
    levels.append(magnitude * means)
    if signed:
      levels.append(-magnitude * means)
  levels.append(np.zeros(1, np.float32))
  levels.append(np.ones(1, np.float32))
  table = np.sort(np.concatenate(levels).astype(np.float32))
  if table.size != 2 ** bits:  # pragma: no cover - construction invariant
    raise AssertionError(f"dynamic map has {table.size} levels")
  return table


@functools.cache
def levels(codebook: str, bits: int) -> np.ndarray:
  """The sorted float32 levels a code stands for (before the scale).

  Linear and mu-law codes have ``2**bits - 1`` symmetric levels plus one
  unused code (the most negative); it decodes to ``-1``.
  """
  check_codebook(codebook)
  check_bits(bits)
  if codebook in ("linear", "mulaw"):
    q = np.arange(2 ** bits, dtype=np.float32) - 2 ** (bits - 1)
    return np.clip(q / np.float32(qmax(bits)), -1, 1).astype(np.float32)
  if codebook == "dynamic":
    return dynamic_codebook(bits, signed=True)
  if codebook == "midrise":
    half = _midrise_half(bits)
    return (np.arange(2 ** bits, dtype=np.float32) - half) * (1 / half)
  if codebook == "unsigned_linear":
    return np.linspace(0, 1, 2 ** bits + 1, dtype=np.float32)[1:]
  table = dynamic_codebook(bits, signed=False).copy()
  table[0] = table[1] / np.float32(2.0)  # no zero level
  return table


def _midrise_decode(codes: Array, bits: int) -> Array:
  half = _midrise_half(bits)
  return (codes.astype(jnp.float32) - half) * (1 / half)


def compand(y: Array, mu: float) -> Array:
  """mu-law companding of ``y`` in [-1, 1]."""
  return jnp.sign(y) * jnp.log1p(mu * jnp.abs(y)) / np.float32(np.log1p(mu))


def expand(y: Array, mu: float) -> Array:
  """Inverse of :func:`compand`."""
  return jnp.sign(y) * jnp.expm1(jnp.abs(y) * np.float32(np.log1p(mu))) / mu


def encode(y: Array, codebook: str, bits: int, mu: float = 255.0,
           noise: Array | None = None) -> Array:
  """Normalized values to uint8 codes in ``[0, 2**bits)``.

  Args:
    y: float32 values, already divided by their scale (in [-1, 1], or [0, 1]
      for unsigned codebooks; values outside are clipped). NaN codes as zero.
    codebook: one of ``CODEBOOKS``.
    bits: 2, 4 or 8.
    mu: the mu-law parameter (``mulaw`` only).
    noise: uniform [0, 1) noise of ``y``'s shape for stochastic rounding, or
      None to round to nearest.

  Returns:
    uint8 codes of ``y``'s shape (not packed).
  """
  y = jnp.nan_to_num(y.astype(jnp.float32), nan=0.0)
  if codebook == "midrise":
    half = _midrise_half(bits)  # y = (c - half) / half
    v = jnp.clip(y, -1.0, 1.0) * half + half
    if noise is None:
      q = jnp.round(v)
    else:
      lo = jnp.floor(v)
      q = lo + (noise < v - lo)
    return jnp.clip(q, 0, 2 ** bits - 1).astype(jnp.uint8)
  if codebook in ("linear", "mulaw"):
    m = qmax(bits)
    if codebook == "mulaw":
      y = jnp.clip(y, -1.0, 1.0)
      v = compand(y, mu) * np.float32(m)
    else:
      v = y * np.float32(m)
    if noise is None:
      q = jnp.round(v)
    elif codebook == "linear":
      lo = jnp.floor(v)  # v - lo is exact; v + noise would be rounded
      q = lo + (noise < v - lo)
    else:
      # Unbiased in y, not in the companded domain: round up with the
      # probability that puts the mean of the two expanded levels at y.
      lo = jnp.floor(v)
      y_lo = expand(lo / np.float32(m), mu)
      y_hi = expand((lo + 1) / np.float32(m), mu)
      p_up = jnp.clip((y - y_lo) / (y_hi - y_lo), 0.0, 1.0)
      q = lo + (noise < p_up)
    return (jnp.clip(q, -m, m) + 2 ** (bits - 1)).astype(jnp.uint8)
  if noise is None:
    return nearest_level(y, codebook, bits)
  table = jnp.asarray(levels(codebook, bits))
  upper = jnp.clip(jnp.searchsorted(table, y, side="left"), 1,
                   table.size - 1)
  lo, hi = table[upper - 1], table[upper]
  p_up = jnp.clip((y - lo) / (hi - lo), 0.0, 1.0)
  return (upper - 1 + (noise < p_up)).astype(jnp.uint8)


BUCKET_SHIFT = 16  # 65536 buckets of the float32 line


def _order_key(bits: np.ndarray | Array) -> np.ndarray | Array:
  """int32 float bits -> int32 keys with the floats' order (-0 < +0)."""
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@functools.cache
def _bucket_table(codebook: str, bits: int) -> tuple[np.ndarray, np.ndarray,
                                                     int]:
  """Midpoints and, per bucket of float32 values, how many lie below it.

  Bucket b holds the floats whose order key has ``b`` in its top 16 bits
  (sign, exponent and 7 mantissa bits). ``below[b]`` counts the midpoints
  under the bucket's smallest float; ``width`` is the most midpoints any
  bucket holds.
  """
  table = levels(codebook, bits)
  mids = (table[1:] + table[:-1]) / np.float32(2)
  keys = (np.arange(-2 ** 15, 2 ** 15, dtype=np.int64) << BUCKET_SHIFT)
  lowest = _order_key(keys.astype(np.int32)).view(np.float32)
  below = np.searchsorted(mids, lowest, side="left")
  below[np.isnan(lowest)] = mids.size  # never looked up: y is never NaN
  width = int(max(1, np.max(np.diff(np.append(below, mids.size)))))
  return mids, below.astype(np.int32), width


def nearest_level(y: Array, codebook: str, bits: int) -> Array:
  """Index of the nearest level: ``searchsorted(midpoints, y)``, fast.

  A binary search makes eight dependent passes over the data at 8 bits.
  Instead, the top 16 bits of ``y``'s order-preserving float key pick a
  bucket, a table gives the number of midpoints below the bucket, and the
  few midpoints inside it (at most ``width``, one or two for the maps here)
  are compared directly. The result equals ``searchsorted(mids, y,
  side="left")`` exactly.

  Args:
    y: finite float32 values.
    codebook: a codebook with a level table (``dynamic``, unsigned ones).
    bits: 2, 4 or 8.

  Returns:
    uint8 codes.
  """
  mids, below, width = _bucket_table(codebook, bits)
  key = _order_key(jax.lax.bitcast_convert_type(y, jnp.int32))
  bucket = (key >> BUCKET_SHIFT) + 2 ** 15
  first = jnp.asarray(below)[bucket]
  padded = jnp.asarray(np.append(mids, [np.inf] * width).astype(np.float32))
  index = first
  for j in range(width):
    index = index + (padded[first + j] < y)
  return index.astype(jnp.uint8)


def _linear_decode(codes: Array, bits: int) -> Array:
  q = codes.astype(jnp.float32) - np.float32(2 ** (bits - 1))
  return jnp.maximum(q, -float(qmax(bits))) / np.float32(qmax(bits))


def decode(codes: Array, codebook: str, bits: int,
           mu: float = 255.0) -> Array:
  """uint8 codes (not packed) to normalized float32 values."""
  if codebook == "midrise":
    return _midrise_decode(codes, bits)
  if codebook in ("linear", "mulaw"):
    y = _linear_decode(codes, bits)
    return expand(y, mu) if codebook == "mulaw" else y
  return jnp.asarray(levels(codebook, bits))[codes.astype(jnp.int32)]


class TableLookup(Protocol):
  """How a kernel reads a codebook's constant tables (see
  ``quantmuon.kernels.codec``): by name, with the table's values."""

  def take(self, name: str, table: np.ndarray, index: Array) -> Array:
    """``table[index]`` for an int32 ``index`` array."""

  def count_below(self, name: str, table: np.ndarray, y: Array) -> Array:
    """How many entries of the sorted ``table`` are below ``y`` (int32)."""


def _signed_codes(q: Array, bits: int) -> Array:
  """Rounded linear values ``q`` to int32 codes ``q + 2**(bits-1)``."""
  m = float(qmax(bits))
  q = jnp.minimum(jnp.maximum(q, -m), m)
  return q.astype(jnp.int32) + 2 ** (bits - 1)


def _up(v: Array, noise: Array) -> Array:
  """Stochastic rounding of ``v``: up with probability ``v - floor(v)``
  (``v - floor(v)`` is exact, ``v + noise`` would be rounded)."""
  lo = jnp.floor(v)
  return lo + (noise < v - lo).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Codebook:
  """A codebook of ``bits``-bit codes: its levels, encode and decode, and
  how a kernel computes them.

  The base class codes by a level table (``dynamic``, the unsigned maps):
  its kernel counts the midpoints below a value; subclasses that code by
  arithmetic override :meth:`kernel_encode` and :meth:`kernel_decode`.

  Attributes:
    bits: 2, 4 or 8.
  """

  name: ClassVar[str]
  # Whether the levels cover [-1, 1] (else [0, 1]).
  signed: ClassVar[bool] = True

  bits: int

  @property
  def per_byte(self) -> int:
    return 8 // self.bits

  @property
  def qmax(self) -> int:
    return qmax(self.bits)

  def levels(self) -> np.ndarray:
    """The sorted float32 levels a code stands for (before the scale)."""
    return levels(self.name, self.bits)

  @property
  def zero_code(self) -> int | None:
    """The code whose level is exactly zero (signed codebooks but
    midrise), or None."""
    zeros = np.flatnonzero(self.levels() == 0)
    return int(zeros[0]) if zeros.size else None

  def encode(self, y: Array, noise: Array | None = None) -> Array:
    """Normalized values to uint8 codes (see :func:`encode`)."""
    return encode(y, self.name, self.bits, noise=noise)

  def decode(self, codes: Array) -> Array:
    """uint8 codes to normalized float32 values."""
    return decode(codes, self.name, self.bits)

  def tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    """The float32 tables a kernel looks codes up in, by name (cached).

    ``levels``: what each code decodes to. ``mids``: the midpoints between
    levels (nearest rounding counts those below y). ``above``: the levels
    but the last (stochastic rounding counts those below y).
    """
    return _tables(self, stochastic)

  def _make_tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    table = self.levels()
    out = {"levels": table.astype(np.float32)}
    if stochastic:
      out["above"] = table[:-1].astype(np.float32)
    else:
      out["mids"] = ((table[1:] + table[:-1]) / np.float32(2)).astype(
          np.float32)
    return out

  def kernel_decode(self, codes: Array, lookup: TableLookup) -> Array:
    """int32 codes to normalized float32 levels inside a kernel, as
    :meth:`decode`."""
    return lookup.take("levels", self.tables(False)["levels"], codes)

  def kernel_encode(self, y: Array, noise: Array | None,
                    lookup: TableLookup) -> Array:
    """Finite normalized float32 values to int32 codes inside a kernel, as
    :meth:`encode` (nearest level, or stochastic between the two
    neighbours with ``noise``)."""
    if noise is None:
      return lookup.count_below("mids", self.tables(False)["mids"], y)
    tables = self.tables(True)
    upper = jnp.maximum(lookup.count_below("above", tables["above"], y), 1)
    lo = lookup.take("levels", tables["levels"], upper - 1)
    hi = lookup.take("levels", tables["levels"], upper)
    p_up = jnp.minimum(jnp.maximum((y - lo) / (hi - lo), 0.0), 1.0)
    return upper - 1 + (noise < p_up).astype(jnp.int32)


@functools.cache
def _tables(book: Codebook, stochastic: bool) -> dict[str, np.ndarray]:
  return book._make_tables(stochastic)


@dataclasses.dataclass(frozen=True)
class Linear(Codebook):
  """Symmetric integers ``round(y * qmax)``; decoded by arithmetic."""

  name: ClassVar[str] = "linear"

  def _make_tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    del stochastic
    return {}

  def kernel_decode(self, codes, lookup):
    del lookup
    return _linear_decode(codes, self.bits)

  def kernel_encode(self, y, noise, lookup):
    del lookup
    v = y * np.float32(self.qmax)
    q = kernel_math.round_half_even(v) if noise is None else _up(v, noise)
    return _signed_codes(q, self.bits)


@dataclasses.dataclass(frozen=True)
class Dynamic(Codebook):
  """The bitsandbytes signed dynamic map; nearest (or stochastic) level."""

  name: ClassVar[str] = "dynamic"


@dataclasses.dataclass(frozen=True)
class MuLaw(Codebook):
  """mu-law companding, then linear codes.

  Attributes:
    mu: the mu-law parameter.
  """

  name: ClassVar[str] = "mulaw"

  mu: float = 255.0

  def encode(self, y: Array, noise: Array | None = None) -> Array:
    return encode(y, self.name, self.bits, self.mu, noise)

  def decode(self, codes: Array) -> Array:
    return decode(codes, self.name, self.bits, self.mu)

  def compand(self, y: Array) -> Array:
    return compand(y, self.mu)

  def expand(self, y: Array) -> Array:
    return expand(y, self.mu)

  def kernel_compand(self, y: Array) -> Array:
    """``compand(clip(y, -1, 1))`` inside a kernel, as
    ``companding="before_scale"`` encodes."""
    y = kernel_math.clip_unit(y)
    return kernel_math.sign(y) * jnp.log1p(self.mu * jnp.abs(y)) / (
        np.float32(np.log1p(self.mu)))

  def kernel_expand(self, y: Array,
                    expm1: Callable[[Array], Array] = jnp.expm1) -> Array:
    """:meth:`expand` inside a kernel, with the backend's ``expm1``."""
    return kernel_math.sign(y) * expm1(
        jnp.abs(y) * np.float32(np.log1p(self.mu))) / self.mu

  def _make_tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    """``levels`` (the expanded linear levels) and, for stochastic
    rounding, ``expanded``: ``expand(q / qmax)`` for ``q = -qmax .. qmax +
    1``, the two neighbours it chooses between."""
    with jax.ensure_compile_time_eval():
      codes = jnp.arange(2 ** self.bits, dtype=jnp.uint8)
      out = {"levels": np.asarray(self.decode(codes)).astype(np.float32)}
      if stochastic:
        m = self.qmax
        q = np.arange(-m, m + 2, dtype=np.float32) / np.float32(m)
        out["expanded"] = np.asarray(
            self.expand(jnp.asarray(q))).astype(np.float32)
    return out

  def kernel_encode(self, y, noise, lookup):
    """Linear codes of the companded value; stochastic rounding is
    unbiased in ``y``, as :func:`encode`'s."""
    m = self.qmax
    y = kernel_math.clip_unit(y)
    v = self.kernel_compand(y) * np.float32(m)
    if noise is None:
      q = kernel_math.round_half_even(v)
    else:
      lo = jnp.floor(v)
      index = lo.astype(jnp.int32) + m
      table = self.tables(True)["expanded"]
      y_lo = lookup.take("expanded", table, index)
      y_hi = lookup.take("expanded", table, index + 1)
      p_up = (y - y_lo) / (y_hi - y_lo)
      p_up = jnp.minimum(jnp.maximum(p_up, 0.0), 1.0)
      q = lo + (noise < p_up).astype(jnp.float32)
    return _signed_codes(q, self.bits)


@dataclasses.dataclass(frozen=True)
class MidRise(Codebook):
  """``2**bits`` evenly spaced levels on [-1, 1] without a zero; coded and
  decoded by arithmetic."""

  name: ClassVar[str] = "midrise"

  def _make_tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    del stochastic
    return {}

  def kernel_decode(self, codes, lookup):
    del lookup
    return _midrise_decode(codes, self.bits)

  def kernel_encode(self, y, noise, lookup):
    del lookup
    half = _midrise_half(self.bits)
    v = kernel_math.clip_unit(y) * half + half
    q = kernel_math.round_half_even(v) if noise is None else _up(v, noise)
    q = jnp.minimum(jnp.maximum(q, 0.0), float(2 ** self.bits - 1))
    return q.astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class UnsignedLinear(Codebook):
  """``linspace(0, 1, 2**bits + 1)[1:]``, no zero level."""

  name: ClassVar[str] = "unsigned_linear"
  signed: ClassVar[bool] = False


@dataclasses.dataclass(frozen=True)
class UnsignedDynamic(Codebook):
  """The unsigned dynamic map without a zero level."""

  name: ClassVar[str] = "unsigned_dynamic"
  signed: ClassVar[bool] = False


_CLASSES = {c.name: c for c in (Linear, Dynamic, MuLaw, MidRise,
                                UnsignedLinear, UnsignedDynamic)}


def of(name: str, bits: int, mu: float = 255.0) -> Codebook:
  """The codebook object of a format's ``codebook``, ``bits`` and ``mu``
  (``mu`` is kept by mu-law only)."""
  cls = _CLASSES[check_codebook(name)]
  return cls(check_bits(bits), float(mu)) if cls is MuLaw else cls(bits)
