"""Packing of 4-bit and 2-bit codes into bytes, along the last axis.

Codes of ``bits < 8`` are packed ``8 // bits`` to a uint8, the first code in
the lowest bits. The last axis is padded with zero codes to a multiple of
``8 // bits``, so a packed array keeps the rank and the leading axes of the
unpacked one (and so shards like it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def per_byte(bits: int) -> int:
  return 8 // bits


def packed_length(n: int, bits: int) -> int:
  """Length of the last axis after packing ``n`` codes of ``bits`` bits."""
  k = per_byte(bits)
  return -(-n // k)


def pack(codes: Array, bits: int) -> Array:
  """Packs uint8 codes in ``[0, 2**bits)`` along the last axis.

  Args:
    codes: uint8 array, any rank >= 1.
    bits: 2, 4 or 8 (8 returns ``codes`` unchanged).

  Returns:
    uint8 array of shape ``codes.shape[:-1] + (packed_length(n, bits),)``.
  """
  if bits == 8:
    return codes.astype(jnp.uint8)
  k = per_byte(bits)
  n = codes.shape[-1]
  pad = packed_length(n, bits) * k - n
  codes = codes.astype(jnp.uint8)
  if pad:
    codes = jnp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, pad)])
  groups = codes.reshape(codes.shape[:-1] + (-1, k))
  shifts = jnp.arange(k, dtype=jnp.uint8) * bits
  return jnp.sum(groups << shifts, axis=-1, dtype=jnp.uint8)


def unpack(packed: Array, bits: int, n: int) -> Array:
  """Inverse of :func:`pack`: the first ``n`` codes of the last axis."""
  if bits == 8:
    return packed
  k = per_byte(bits)
  shifts = jnp.arange(k, dtype=jnp.uint8) * bits
  mask = jnp.uint8(2 ** bits - 1)
  codes = (packed[..., None] >> shifts) & mask
  return codes.reshape(packed.shape[:-1] + (-1,))[..., :n]
