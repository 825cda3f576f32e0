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
  squared error for Gaussian values. Zero lies on a tie between the two
  middle levels, so a scale group that holds an exact zero (a dead unit's
  row or column of the momentum) takes the ``linear`` levels instead, which
  hold zero, and says so by the sign of its stored scale
  (:attr:`Codebook.zero_groups`): zeros stay exactly zero, at the cost of
  the linear codes' error for that group's other values (at 2 bits with
  ``clip_rms=1.5``, a relative error of 0.46 on Gaussian groups where
  midrise has 0.34).
- ``unsigned_linear``: ``linspace(0, 1, 2**bits + 1)[1:]``, nearest level. It
  has no zero level, so a positive second moment never decodes to zero
  (torchao's unsigned 4-bit map).
- ``unsigned_dynamic``: the bitsandbytes unsigned dynamic map with its zero
  level replaced by half its smallest positive level; nearest level.

Each codebook is a class, the only source of its levels, its encode and its
decode; a name only constructs it (:func:`of`). The same methods run on
whole arrays under XLA and on one tile inside a Pallas kernel: their
arithmetic is written with :mod:`~quantmuon.formats.kernel_math`'s
operations, which every backend lowers, and they read their constant tables
through a :class:`Lookup` (:data:`ARRAYS` on whole arrays; a kernel passes
its backend's, ``quantmuon.kernels.codec``). So the kernels' codes are the
XLA path's, bit for bit.
"""

from __future__ import annotations

import abc
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
_FMAX = float(np.finfo(np.float32).max)


def check_bits(bits: int) -> int:
  """Raises a ValueError naming ``bits`` unless it is 2, 4 or 8."""
  if isinstance(bits, bool) or bits not in BITS:
    raise ValueError(
        f"bits must be one of {BITS} (codes are packed into bytes), got "
        f"{bits!r}.")
  return int(bits)


def check_codebook(codebook: str) -> str:
  """Raises a ValueError naming ``codebook`` unless it is a known name."""
  if codebook not in CODEBOOKS:
    raise ValueError(
        f"codebook must be one of {CODEBOOKS}, got {codebook!r}.")
  return codebook


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


class Lookup(Protocol):
  """How a codebook reads its constant tables: by name, with the table's
  values. :data:`ARRAYS` on whole arrays; the kernels' backends have their
  own (``quantmuon.kernels.codec``)."""

  def take(self, name: str, table: np.ndarray, index: Array) -> Array:
    """``table[index]`` for an int32 ``index`` array."""

  def count_below(self, name: str, table: np.ndarray, y: Array) -> Array:
    """How many entries of the sorted ``table`` are below ``y`` (int32)."""


BUCKET_SHIFT = 16  # 65536 buckets of the float32 line


def _order_key(bits: np.ndarray | Array) -> np.ndarray | Array:
  """int32 float bits -> int32 keys with the floats' order (-0 < +0)."""
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@functools.cache
def _bucket_table(table: bytes) -> tuple[np.ndarray, np.ndarray, int]:
  """A sorted float32 table (as bytes) and, per bucket of float32 values,
  how many of its entries lie below the bucket.

  Bucket b holds the floats whose order key has ``b`` in its top 16 bits
  (sign, exponent and 7 mantissa bits). ``below[b]`` counts the entries
  under the bucket's smallest float; ``width`` is the most entries any
  bucket holds.
  """
  entries = np.frombuffer(table, np.float32)
  keys = (np.arange(-2 ** 15, 2 ** 15, dtype=np.int64) << BUCKET_SHIFT)
  lowest = _order_key(keys.astype(np.int32)).view(np.float32)
  below = np.searchsorted(entries, lowest, side="left")
  below[np.isnan(lowest)] = entries.size  # never looked up: y is never NaN
  width = int(max(1, np.max(np.diff(np.append(below, entries.size)))))
  return entries, below.astype(np.int32), width


class ArrayLookup(Lookup):
  """Tables read over whole arrays (the XLA path)."""

  def take(self, name: str, table: np.ndarray, index: Array) -> Array:
    """A gather from the table."""
    del name
    return jnp.asarray(table)[index]

  def count_below(self, name: str, table: np.ndarray, y: Array) -> Array:
    """``searchsorted(table, y, side="left")``, fast.

    A binary search makes eight dependent passes over the data at 8 bits.
    Instead, the top 16 bits of ``y``'s order-preserving float key pick a
    bucket, a table gives the number of entries below the bucket, and the
    few entries inside it (at most ``width``, one or two for the codebooks
    here) are compared directly.
    """
    del name
    entries, below, width = _bucket_table(
        np.asarray(table, np.float32).tobytes())
    key = _order_key(jax.lax.bitcast_convert_type(y, jnp.int32))
    bucket = (key >> BUCKET_SHIFT) + 2 ** 15
    first = jnp.asarray(below)[bucket]
    padded = jnp.asarray(
        np.append(entries, [np.inf] * width).astype(np.float32))
    index = first
    for j in range(width):
      index = index + (padded[first + j] < y)
    return index


ARRAYS = ArrayLookup()


def _round(v: Array, noise: Array | None) -> Array:
  """``v`` rounded to an integer: to nearest (ties to even), or up with
  probability ``v - floor(v)`` given uniform ``noise`` (``v - floor(v)``
  is exact, ``v + noise`` would be rounded)."""
  if noise is None:
    return kernel_math.round_half_even(v)
  lo = jnp.floor(v)
  return lo + (noise < v - lo).astype(jnp.float32)


def _qmax(bits: int) -> int:
  """Largest linear code magnitude: 127 at 8 bits, 7 at 4, 1 at 2."""
  return 2 ** (bits - 1) - 1


def _signed_codes(q: Array, bits: int) -> Array:
  """Rounded linear values ``q`` to int32 codes ``q + 2**(bits-1)``."""
  m = float(_qmax(bits))
  q = jnp.minimum(jnp.maximum(q, -m), m)
  return q.astype(jnp.int32) + 2 ** (bits - 1)


def _constant(f: Callable[[], Array]) -> np.ndarray:
  """``f()`` evaluated now, as a float32 numpy array (a table of levels)."""
  with jax.ensure_compile_time_eval():
    return np.asarray(f()).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Codebook(abc.ABC):
  """A codebook of ``bits``-bit codes: its levels, encode and decode.

  The base class codes by its level table (``dynamic``, the unsigned
  maps): the nearest level counts the midpoints below a value; stochastic
  rounding picks one of the two levels around it. Subclasses that code by
  arithmetic override :meth:`_codes` and :meth:`decode`.

  Attributes:
    bits: 2, 4 or 8.
  """

  name: ClassVar[str]
  # Whether the levels cover [-1, 1] (else [0, 1]).
  signed: ClassVar[bool] = True

  bits: int

  def __post_init__(self):
    check_bits(self.bits)

  @property
  def per_byte(self) -> int:
    return 8 // self.bits

  def levels(self) -> np.ndarray:
    """The sorted float32 levels the codes stand for, code by code
    (before the scale)."""
    return _levels_of(self)

  @abc.abstractmethod
  def _levels(self) -> np.ndarray:
    """Computes :meth:`levels` (cached there)."""

  @property
  def zero_code(self) -> int | None:
    """The code whose level is exactly zero (signed codebooks but
    midrise), or None."""
    zeros = np.flatnonzero(self.levels() == 0)
    return int(zeros[0]) if zeros.size else None

  def tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    """The float32 tables :meth:`encode` and :meth:`decode` read through a
    :class:`Lookup`, by name (cached; the kernels' backends load them).

    ``levels``: what each code decodes to. ``mids``: the midpoints between
    levels (nearest rounding counts those below y). ``above``: the levels
    but the last (stochastic rounding counts those below y).
    """
    return _tables_of(self, stochastic)

  def _tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    """Computes :meth:`tables` (cached there)."""
    table = self.levels()
    out = {"levels": table}
    if stochastic:
      out["above"] = table[:-1]
    else:
      out["mids"] = ((table[1:] + table[:-1]) / np.float32(2)).astype(
          np.float32)
    return out

  def encode(self, y: Array, noise: Array | None = None,
             lookup: Lookup = ARRAYS) -> Array:
    """Normalized values to codes.

    Args:
      y: float32 values, already divided by their scale (in [-1, 1], or
        [0, 1] for unsigned codebooks; values outside are clipped). NaN
        codes as zero, +-inf as the largest finite value.
      noise: uniform [0, 1) noise of ``y``'s shape for stochastic rounding,
        or None to round to nearest.
      lookup: how the tables are read: :data:`ARRAYS`, or a kernel's.

    Returns:
      int32 codes in ``[0, 2**bits)``, of ``y``'s shape (not packed).
    """
    y = y.astype(jnp.float32)
    y = jnp.where(y != y, 0.0, y)
    y = jnp.minimum(jnp.maximum(y, -_FMAX), _FMAX)
    return self._codes(y, noise, lookup)

  def _codes(self, y: Array, noise: Array | None, lookup: Lookup) -> Array:
    """:meth:`encode` of finite values: the nearest level, or one of the two
    around ``y``, up with the probability that makes the mean ``y``."""
    if noise is None:
      return lookup.count_below("mids", self.tables(False)["mids"], y)
    tables = self.tables(True)
    upper = jnp.maximum(lookup.count_below("above", tables["above"], y), 1)
    lo = lookup.take("levels", tables["levels"], upper - 1)
    hi = lookup.take("levels", tables["levels"], upper)
    p_up = jnp.minimum(jnp.maximum((y - lo) / (hi - lo), 0.0), 1.0)
    return upper - 1 + (noise < p_up).astype(jnp.int32)

  def decode(self, codes: Array, lookup: Lookup = ARRAYS) -> Array:
    """Codes (not packed; any integer dtype) to normalized float32 values.

    Args:
      codes: integer codes in ``[0, 2**bits)``.
      lookup: how the tables are read: :data:`ARRAYS`, or a kernel's.

    Returns:
      float32 levels, before the scale.
    """
    return lookup.take("levels", self.tables(False)["levels"],
                       codes.astype(jnp.int32))

  @property
  def zero_groups(self) -> Codebook | None:
    """The codebook a scale group that holds an exact zero takes instead,
    flagged by a negative stored scale; None (no flags) for a codebook
    with a zero level."""
    return None

  def flag_scales(self, scales: Array, holds_zero: Array) -> Array:
    """The scales as stored: negated where the group holds an exact zero
    (and a positive scale) and this codebook has :attr:`zero_groups`.

    Args:
      scales: the groups' non-negative scales.
      holds_zero: whether each group holds an exact zero among its real
        elements (broadcastable to ``scales``).

    Returns:
      The stored scales, of ``scales``' dtype.
    """
    if self.zero_groups is None:
      return scales
    return jnp.where(holds_zero & (scales > 0), -scales, scales)

  def encode_scaled(self, y: Array, noise: Array | None, scales: Array,
                    lookup: Lookup = ARRAYS) -> Array:
    """:meth:`encode` of values ``y`` of groups whose stored scales (from
    :meth:`flag_scales`, broadcastable to ``y``) are ``scales``: the flagged
    groups' values in :attr:`zero_groups` codes.

    Args:
      y: float32 values, divided by their group's absolute scale.
      noise: as :meth:`encode`.
      scales: the stored scales; only their signs are read.
      lookup: as :meth:`encode`.

    Returns:
      int32 codes of ``y``'s shape.
    """
    codes = self.encode(y, noise, lookup)
    if self.zero_groups is None:
      return codes
    flagged = self.zero_groups.encode(y, noise, lookup)
    return jnp.where(scales < 0, flagged, codes)

  def decode_scaled(self, codes: Array, scales: Array,
                    lookup: Lookup = ARRAYS,
                    arrange: Callable[[Array], Array] = lambda v: v
                    ) -> Array:
    """The values of ``codes`` in groups whose stored scales are ``scales``:
    :meth:`decode` times the scale, flagged groups decoded by
    :attr:`zero_groups`.

    Args:
      codes: integer codes.
      scales: the stored float32 scales, broadcastable to the arranged
        values.
      lookup: as :meth:`decode`.
      arrange: lays decoded values out as ``scales`` broadcast (a format's
        tiles), after decoding.

    Returns:
      float32 values, arranged.
    """
    values = arrange(self.decode(codes, lookup))
    if self.zero_groups is None:
      return values * scales
    flagged = arrange(self.zero_groups.decode(codes, lookup))
    return jnp.where(scales < 0, flagged, values) * jnp.abs(scales)


@functools.cache
def _levels_of(book: Codebook) -> np.ndarray:
  return book._levels().astype(np.float32)


@functools.cache
def _tables_of(book: Codebook, stochastic: bool) -> dict[str, np.ndarray]:
  return {name: table.astype(np.float32)
          for name, table in book._tables(stochastic).items()}


@dataclasses.dataclass(frozen=True)
class _Arithmetic(Codebook):
  """A codebook whose codes and levels are arithmetic, with no tables: it
  overrides :meth:`_codes` and :meth:`decode`, and its levels are what
  its codes decode to."""

  def _levels(self) -> np.ndarray:
    return _constant(lambda: self.decode(jnp.arange(2 ** self.bits)))

  def _tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    del stochastic
    return {}

  @abc.abstractmethod
  def _codes(self, y: Array, noise: Array | None, lookup: Lookup) -> Array:
    """:meth:`encode` of finite values, by arithmetic."""

  @abc.abstractmethod
  def decode(self, codes: Array, lookup: Lookup = ARRAYS) -> Array:
    """Codes to normalized float32 values, by arithmetic."""


@dataclasses.dataclass(frozen=True)
class Linear(_Arithmetic):
  """Symmetric integers ``round(y * qmax)``; coded and decoded by
  arithmetic."""

  name: ClassVar[str] = "linear"

  @property
  def qmax(self) -> int:
    """Largest code magnitude: 127 at 8 bits, 7 at 4, 1 at 2."""
    return _qmax(self.bits)

  def _codes(self, y, noise, lookup):
    del lookup
    return _signed_codes(_round(y * np.float32(self.qmax), noise), self.bits)

  def decode(self, codes, lookup=ARRAYS):
    del lookup
    q = codes.astype(jnp.float32) - np.float32(2 ** (self.bits - 1))
    return jnp.maximum(q, -float(self.qmax)) / np.float32(self.qmax)


@dataclasses.dataclass(frozen=True)
class Dynamic(Codebook):
  """The bitsandbytes signed dynamic map; nearest (or stochastic) level."""

  name: ClassVar[str] = "dynamic"

  def _levels(self) -> np.ndarray:
    return dynamic_codebook(self.bits, signed=True)


@dataclasses.dataclass(frozen=True)
class MuLaw(Codebook):
  """mu-law companding, then linear codes; decoded from the table of the
  expanded linear levels.

  Attributes:
    mu: the mu-law parameter.
  """

  name: ClassVar[str] = "mulaw"

  mu: float = 255.0

  @property
  def qmax(self) -> int:
    """Largest linear code magnitude."""
    return _qmax(self.bits)

  def compand(self, y: Array) -> Array:
    """``sign(y) log(1 + mu |y|) / log(1 + mu)`` of ``clip(y, -1, 1)``."""
    y = kernel_math.clip_unit(y)
    return kernel_math.sign(y) * jnp.log1p(self.mu * jnp.abs(y)) / (
        np.float32(np.log1p(self.mu)))

  def expand(self, y: Array,
             expm1: Callable[[Array], Array] = jnp.expm1) -> Array:
    """The inverse of :meth:`compand`, with ``expm1`` (a backend may pass
    its own)."""
    return kernel_math.sign(y) * expm1(
        jnp.abs(y) * np.float32(np.log1p(self.mu))) / self.mu

  def _levels(self) -> np.ndarray:
    """The expanded levels of the linear codes."""
    linear = Linear(self.bits).levels()
    return _constant(lambda: self.expand(jnp.asarray(linear)))

  def _tables(self, stochastic: bool) -> dict[str, np.ndarray]:
    """``levels`` and, for stochastic rounding, ``expanded``: ``expand(q /
    qmax)`` for ``q = -qmax .. qmax + 1``, the two neighbours it chooses
    between."""
    out = {"levels": self.levels()}
    if stochastic:
      m = self.qmax
      q = np.arange(-m, m + 2, dtype=np.float32) / np.float32(m)
      out["expanded"] = _constant(lambda: self.expand(jnp.asarray(q)))
    return out

  def _codes(self, y, noise, lookup):
    """Linear codes of the companded value; stochastic rounding is
    unbiased in ``y``, not in the companded domain: up with the probability
    that puts the mean of the two expanded levels at ``y``."""
    m = self.qmax
    y = kernel_math.clip_unit(y)
    v = self.compand(y) * np.float32(m)
    if noise is None:
      return _signed_codes(_round(v, None), self.bits)
    lo = jnp.floor(v)
    index = lo.astype(jnp.int32) + m
    table = self.tables(True)["expanded"]
    y_lo = lookup.take("expanded", table, index)
    y_hi = lookup.take("expanded", table, index + 1)
    p_up = jnp.minimum(jnp.maximum((y - y_lo) / (y_hi - y_lo), 0.0), 1.0)
    return _signed_codes(lo + (noise < p_up).astype(jnp.float32), self.bits)


@dataclasses.dataclass(frozen=True)
class MidRise(_Arithmetic):
  """``2**bits`` evenly spaced levels on [-1, 1] without a zero; coded and
  decoded by arithmetic. A group that holds an exact zero takes ``linear``
  codes instead (see the module docstring)."""

  name: ClassVar[str] = "midrise"

  @property
  def _half(self) -> np.float32:
    """Half the span of the codes: level ``(c - half) / half``."""
    return np.float32((2 ** self.bits - 1) / 2)

  def _codes(self, y, noise, lookup):
    del lookup
    half = self._half
    q = _round(kernel_math.clip_unit(y) * half + half, noise)
    q = jnp.minimum(jnp.maximum(q, 0.0), float(2 ** self.bits - 1))
    return q.astype(jnp.int32)

  def decode(self, codes, lookup=ARRAYS):
    del lookup
    return (codes.astype(jnp.float32) - self._half) * (1 / self._half)

  @property
  def zero_groups(self) -> Codebook:
    """``linear`` codes, whose levels hold zero."""
    return Linear(self.bits)


@dataclasses.dataclass(frozen=True)
class UnsignedLinear(Codebook):
  """``linspace(0, 1, 2**bits + 1)[1:]``, no zero level."""

  name: ClassVar[str] = "unsigned_linear"
  signed: ClassVar[bool] = False

  def _levels(self) -> np.ndarray:
    return np.linspace(0, 1, 2 ** self.bits + 1, dtype=np.float32)[1:]


@dataclasses.dataclass(frozen=True)
class UnsignedDynamic(Codebook):
  """The unsigned dynamic map without a zero level."""

  name: ClassVar[str] = "unsigned_dynamic"
  signed: ClassVar[bool] = False

  def _levels(self) -> np.ndarray:
    table = dynamic_codebook(self.bits, signed=False).copy()
    table[0] = table[1] / np.float32(2.0)  # no zero level
    return table


_CLASSES = {c.name: c for c in (Linear, Dynamic, MuLaw, MidRise,
                                UnsignedLinear, UnsignedDynamic)}


def of(name: str, bits: int, mu: float = 255.0) -> Codebook:
  """The codebook object of a format's ``codebook``, ``bits`` and ``mu``
  (``mu`` is kept by mu-law only).

  Args:
    name: one of ``CODEBOOKS``.
    bits: 2, 4 or 8.
    mu: the mu-law parameter.

  Returns:
    The codebook.
  """
  cls = _CLASSES[check_codebook(name)]
  return cls(check_bits(bits), float(mu)) if cls is MuLaw else cls(bits)
