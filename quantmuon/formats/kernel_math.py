"""Float32 operations written with what every Pallas backend lowers.

A codebook's encode (:meth:`~quantmuon.formats.codebooks.Codebook.encode`)
runs on whole arrays under XLA and inside the kernels alike, so it is
written with operations that Triton and Mosaic both lower: no ``round``,
no ``sign``, no ``clip`` primitive. These are the replacements, each
exact.

A float sum is not exact: its value depends on its order, and XLA picks the
order of a reduction by its shape. :func:`halving_sum` fixes one, which a
format and a kernel tile can both follow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


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


def clip_unit(y: Array) -> Array:
  """``jnp.clip(y, -1, 1)``."""
  return jnp.minimum(jnp.maximum(y, -1.0), 1.0)


def square(x: Array) -> Array:
  """``x * x``, kept from being contracted into the next addition.

  XLA on the CPU may fuse ``a * a + b * b`` into a fused multiply-add,
  which rounds once instead of twice, in one program and not in another
  (seen: a kernel tile's sums of squares and the format's differed in the
  last bit). A maximum with zero, which changes no square (NaN stays NaN),
  stands between the product and the sum.
  """
  return jnp.maximum(x * x, 0.0)


def next_pow2(x: int) -> int:
  """The least power of two >= ``x`` (1 for ``x <= 1``)."""
  return 1 << max(0, int(x) - 1).bit_length()


def halving_sum(x: Array, axis: int) -> Array:
  """The sum over ``axis`` in a fixed order, keeping the axis (size 1).

  The axis is zero-padded to a power of two, then its first half is added
  to its second, elementwise, until one element is left: ``s[i] + s[i +
  h]`` for ``h`` = half the padded size, a quarter, ..., 1. Zeros past the
  padded size add nothing, so any zero-padded extension of the axis (a
  kernel's power-of-two tile) sums to the same bits.

  Args:
    x: float32 values.
    axis: the axis to sum.

  Returns:
    The sums, with ``axis`` of size 1.
  """
  size = x.shape[axis]
  padded = next_pow2(size)
  if padded != size:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, padded - size)
    x = jnp.pad(x, pad)
  while x.shape[axis] > 1:
    first, second = jnp.split(x, 2, axis=axis)
    x = first + second
  return x
