"""Simulated floating-point formats with few exponent and mantissa bits.

"A Convergence Analysis of Adaptive Optimizers under Floating-point
Quantization" (arXiv 2510.21314) models low-precision training as rounding
every quantity to a float format with E exponent and M mantissa bits, so that
``|Q(x) - x| <= q |x|`` with ``q = 2**-(M+1)`` (nearest rounding) in the
normal range. ``FloatingPoint`` rounds to such a format, IEEE style: exponent
bias ``2**(E-1) - 1``, the all-ones exponent reserved (so the largest finite
value is ``(2 - 2**-M) * 2**bias``), subnormals below ``2**(1 - bias)``, and
saturation of finite values at the largest finite value instead of overflow
to infinity. NaN and +-inf are kept, in the reserved exponent (mantissa 0
for an inf, as IEEE), so no finite value comes from a non-finite one. The
rounded value is stored as its real bit pattern (sign, exponent, mantissa) in
the smallest unsigned integer that holds ``1 + E + M`` bits.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats.base import Format, Stored, check_choice
from quantmuon.formats.tiled import ROUNDINGS

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FloatingPoint(Format):
  """A float format with ``exponent_bits`` and ``mantissa_bits``.

  ``FloatingPoint(8, 7)`` rounds like bfloat16 and ``FloatingPoint(5, 10)``
  like float16, except that both saturate rather than overflow. NaN stays
  NaN and +-inf stay +-inf (with ``mantissa_bits=0`` a NaN has no mantissa
  bit to tell it from an inf, and decodes as one).

  Args:
    exponent_bits: 1 to 8.
    mantissa_bits: 0 to 23 (explicit bits, the leading one not counted).
    rounding: ``nearest`` (ties to even) or ``stochastic`` (unbiased; needs a
      ``key`` in ``encode``).
  """

  holds_empty: ClassVar[bool] = True

  exponent_bits: int = 8
  mantissa_bits: int = 7
  rounding: str = "nearest"

  def __post_init__(self):
    if isinstance(self.exponent_bits, bool) or self.exponent_bits not in \
        range(1, 9):
      raise ValueError(
          "exponent_bits must be an integer from 1 to 8 (float32's range "
          f"bounds it), got {self.exponent_bits!r}.")
    if isinstance(self.mantissa_bits, bool) or self.mantissa_bits not in \
        range(0, 24):
      raise ValueError(
          "mantissa_bits must be an integer from 0 to 23, got "
          f"{self.mantissa_bits!r}.")
    check_choice(self.rounding, "rounding", ROUNDINGS)

  @property
  def bias(self) -> int:
    return 2 ** (self.exponent_bits - 1) - 1

  @property
  def code_dtype(self) -> np.dtype:
    total = 1 + self.exponent_bits + self.mantissa_bits
    return jnp.dtype(jnp.uint8 if total <= 8 else
                     jnp.uint16 if total <= 16 else jnp.uint32)

  def max_finite(self, mantissa_bits: Array | int | None = None) -> Array:
    """The largest finite value, ``(2 - 2**-M) * 2**bias``.

    With one exponent bit there are no normal numbers (the all-ones exponent
    is reserved), so it is the largest subnormal, ``(1 - 2**-M) * 2``. Built
    with ``ldexp``, which is exact; ``jnp.exp2`` is not, even on integers.
    """
    m = self.mantissa_bits if mantissa_bits is None else mantissa_bits
    ulp = jnp.ldexp(jnp.float32(1.0), -jnp.asarray(m, jnp.int32))
    if self.exponent_bits == 1:
      return jnp.ldexp(jnp.float32(1.0) - ulp, 1)
    return jnp.ldexp(jnp.float32(2.0) - ulp, self.bias)

  def round(self, x: Array, *, key: Array | None = None,
            mantissa_bits: Array | int | None = None) -> Array:
    """Rounds ``x`` to the format's grid and returns it as float32.

    Args:
      x: any float array.
      key: a ``jax.random`` key; required for stochastic rounding.
      mantissa_bits: overrides the format's mantissa bits; may be a traced
        integer (a schedule), at most ``self.mantissa_bits`` when the result
        is to be encoded.

    Returns:
      float32 array of representable values (NaN and +-inf as they were).
    """
    x = jnp.asarray(x, jnp.float32)
    m = self.mantissa_bits if mantissa_bits is None else mantissa_bits
    m = jnp.asarray(m, jnp.int32)
    a = jnp.abs(x)
    _, e = jnp.frexp(a)  # a = f * 2**e with f in [0.5, 1)
    e = jnp.maximum(e - 1, 1 - self.bias)  # exponent of the grid cell
    v = jnp.ldexp(a, m - e)  # a in units of the grid spacing
    if self.rounding == "nearest":
      v = jnp.round(v)
    else:
      if key is None:
        raise ValueError(
            f"{self!r} has rounding='stochastic' and needs "
            "key=jax.random.key(...).")
      # Round the fraction, not v + U: that sum is itself rounded to
      # float32, which biases v of 2**m or more (m near 23) upward.
      lo = jnp.floor(v)
      v = lo + (jax.random.uniform(key, x.shape, jnp.float32) < v - lo)
    v = jnp.minimum(jnp.ldexp(v, e - m), self.max_finite(m))
    return jnp.where(jnp.isfinite(x), jnp.copysign(v, x), x)

  def _encode(self, x, *, key, previous,
              mantissa_bits: Array | int | None = None) -> Stored:
    del previous
    v = self.round(x, key=key, mantissa_bits=mantissa_bits)
    m_bits = self.mantissa_bits
    a = jnp.abs(v)
    min_normal = np.float32(2.0 ** (1 - self.bias))  # exact, unlike exp2
    _, e = jnp.frexp(a)
    normal = a >= min_normal
    exponent = jnp.where(normal, e - 1 + self.bias, 0)
    cell = jnp.where(normal, e - 1, 1 - self.bias)
    mant = jnp.ldexp(a, m_bits - cell)
    mant = jnp.where(normal, mant - 2.0 ** m_bits, mant)
    nan, inf = jnp.isnan(v), jnp.isinf(v)
    exponent = jnp.where(nan | inf, 2 ** self.exponent_bits - 1, exponent)
    mant = jnp.where(nan, 1, jnp.where(inf, 0, mant))
    sign = jnp.signbit(v).astype(jnp.uint32)
    dtype = self.code_dtype
    code = ((sign << (self.exponent_bits + m_bits))
            | (exponent.astype(jnp.uint32) << m_bits)
            | mant.astype(jnp.uint32))
    return Stored({"codes": code.astype(dtype)}, self, x.shape, x.dtype)

  def encode(self, x: Array, *, key: Array | None = None,
             previous: Stored | None = None,
             mantissa_bits: Array | int | None = None) -> Stored:
    """Rounds ``x`` and stores its bit pattern.

    Args:
      x: the array to store.
      key: a ``jax.random`` key, for stochastic rounding.
      previous: ignored.
      mantissa_bits: round to fewer mantissa bits than the format holds
        (an int or a traced integer, e.g. from a schedule).

    Returns:
      A ``Stored`` with one part, ``codes``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(
          f"FloatingPoint.encode needs a floating-point array, got dtype "
          f"{x.dtype}.")
    return self._encode(x, key=key, previous=previous,
                        mantissa_bits=mantissa_bits)

  def _decode(self, stored: Stored) -> Array:
    code = stored["codes"].astype(jnp.uint32)
    m_bits, e_bits = self.mantissa_bits, self.exponent_bits
    mant = (code & (2 ** m_bits - 1)).astype(jnp.float32)
    exponent = ((code >> m_bits) & (2 ** e_bits - 1)).astype(jnp.int32)
    negative = (code >> (e_bits + m_bits)) & 1
    normal = exponent > 0
    significand = jnp.where(normal, mant + 2.0 ** m_bits, mant)
    cell = jnp.where(normal, exponent - self.bias, 1 - self.bias)
    value = jnp.ldexp(significand, cell - m_bits)
    value = jnp.where(exponent == 2 ** e_bits - 1,
                      jnp.where(mant == 0, jnp.inf, jnp.nan), value)
    return jnp.where(negative == 1, -value, value)
