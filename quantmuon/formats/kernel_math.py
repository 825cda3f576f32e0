"""Float32 operations written with what every Pallas backend lowers.

A codebook's kernel encode (:meth:`~quantmuon.formats.codebooks.Codebook.
kernel_encode`) must give the codes of its jnp encode bit for bit, with
operations that Triton and Mosaic both lower: no ``round``, no ``sign``,
no ``clip`` primitive. These are the replacements, each exact.
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
