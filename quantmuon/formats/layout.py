"""How formats lay an array out: a matrix view, padding and tiles.

Every format sees an array as a matrix: a 0-D or 1-D array as one row, an
array of rank >= 2 as ``(prod(shape[:-1]), shape[-1])``. Codes keep the
array's rank and leading axes (only the last axis is packed), and scales are
laid out per tile of that matrix, so stored state shards like its parameter
along rows, and along columns when each shard holds whole tiles.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
F32_MAX = float(np.finfo(np.float32).max)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
  """The ``(rows, cols)`` matrix view of an array of ``shape``."""
  if len(shape) == 0:
    return 1, 1
  if len(shape) == 1:
    return 1, shape[0]
  return math.prod(shape[:-1]), shape[-1]


def codes_shape(shape: tuple[int, ...], packed_cols: int) -> tuple[int, ...]:
  """Shape of the stored codes: the array's, with the last axis packed."""
  if len(shape) == 0:
    return (packed_cols,)
  return tuple(shape[:-1]) + (packed_cols,)


def ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def pad_to_tiles(x2: Array, tile_rows: int, tile_cols: int) -> Array:
  """Zero-pads a matrix so that whole tiles cover it."""
  m, n = x2.shape
  pad_m = ceil_div(m, tile_rows) * tile_rows - m
  pad_n = ceil_div(n, tile_cols) * tile_cols - n
  if pad_m or pad_n:
    x2 = jnp.pad(x2, ((0, pad_m), (0, pad_n)))
  return x2


def to_tiles(x2: Array, tile_rows: int, tile_cols: int) -> Array:
  """(m, n) -> (row tiles, tile_rows, col tiles, tile_cols), zero padded."""
  xp = pad_to_tiles(x2, tile_rows, tile_cols)
  mp, np_ = xp.shape
  return xp.reshape(mp // tile_rows, tile_rows, np_ // tile_cols, tile_cols)


def from_tiles(tiles: Array, m: int, n: int) -> Array:
  """Inverse of :func:`to_tiles`, dropping the padding."""
  a, b, c, d = tiles.shape
  return tiles.reshape(a * b, c * d)[:m, :n]


def tiles_hold_non_finite(x2: Array, tile_rows: int, tile_cols: int
                          ) -> Array:
  """Whether each ``(tile_rows, tile_cols)`` tile of a matrix holds a NaN
  or an inf (the tiles of :func:`to_tiles`): the formats' test, before
  they find a scale.

  ``x - x`` is zero for a finite value and NaN otherwise, and a sum keeps
  a NaN in any order, where a maximum may drop it (XLA's CPU reduction of
  2048 elements does). The sums run on the matrix in its own layout (along
  each row's blocks of columns, then over each group of rows of that small
  result): so on XLA's CPU backend the encodes keep the temporaries they
  had, where a select before the reduction, or a sum over the tiles' 4-D
  view, kept a float32 copy of the matrix for some tilings.

  A format gives such a tile an inf scale (:func:`round_scale` keeps it),
  so that every code of the tile decodes to a non-finite value: ``level
  * inf`` is NaN for a zero level and +-inf otherwise. So no finite stored
  value comes from a NaN or an inf.

  Args:
    x2: a float32 matrix (m, n).
    tile_rows: rows of a tile.
    tile_cols: columns of a tile.

  Returns:
    bool ``(ceil(m / tile_rows), ceil(n / tile_cols))``.
  """
  m, n = x2.shape
  rt, ct = ceil_div(m, tile_rows), ceil_div(n, tile_cols)
  sums = x2 - x2
  if tile_cols > 1:
    sums = jnp.sum(pad_to_tiles(sums, 1, tile_cols).reshape(
        m, ct, tile_cols), axis=2)
  if tile_rows > 1:
    sums = jnp.sum(pad_to_tiles(sums, tile_rows, 1).reshape(
        rt, tile_rows, ct), axis=1)
  return sums != 0


def flag_non_finite(x: Array) -> Array:
  """``x`` with NaN and +-inf as +inf: what a kernel tile finds its scales
  from, so that a group holding a non-finite value gets an inf scale, as
  :func:`tiles_hold_non_finite` gives it in the formats (a NaN could
  vanish in a backend's maximum). A comparison and a select, which every
  Pallas backend lowers.

  Args:
    x: float32 values.

  Returns:
    float32 values, finite ones unchanged.
  """
  return jnp.where(jnp.abs(x) <= F32_MAX, x, jnp.inf)


def safe_scale(scale: Array) -> Array:
  """float32 scale with zeros replaced by one (all-zero tiles stay zero)."""
  scale = scale.astype(jnp.float32)
  return jnp.where(scale == 0, jnp.float32(1), scale)


def round_scale(absmax: Array, dtype: Any) -> Array:
  """An absmax as a scale of ``dtype``: the least value of it >= ``absmax``.

  Rounding up keeps every ``x / scale`` of the tile in [-1, 1] (nearest
  rounding may land just below the absmax), a nonzero absmax never becomes
  a zero scale, and a finite one above the dtype's largest finite value
  saturates there (float16 would store inf and decode the tile to NaN);
  such values then clip to the extreme code. A non-finite absmax (a group
  that held a NaN or an inf, see :func:`tiles_hold_non_finite`) becomes
  an inf scale in any dtype, so that the group decodes to non-finite
  values; so does a sum of squares that overflows float32 (``clip_rms``
  of values near 1e19). Only float32 operations that Pallas lowers are
  used, so the kernels compute the same scales.

  The next ``dtype`` value above ``near`` (the nearest one, ``p`` mantissa
  bits, unit in the last place ``u``) is found by rounding ``near * (1 +
  0.75 * 2**-p)``, which lies within [0.75 u, 1.5 u) above it, to nearest;
  below the normal range of a dtype whose subnormals are float32 normals
  (float16), ``near`` plus the smallest subnormal is the next value.

  Args:
    absmax: float32 maxima, >= 0, or non-finite.
    dtype: the floating dtype the scales are stored in.

  Returns:
    The scales, of ``dtype``.
  """
  absmax = absmax.astype(jnp.float32)
  finite = absmax <= F32_MAX  # False for NaN and inf
  info = jnp.finfo(dtype)
  if info.nmant >= jnp.finfo(jnp.float32).nmant:
    return jnp.where(finite, absmax, jnp.inf).astype(dtype)
  a = jnp.minimum(absmax, np.float32(info.max))
  near = a.astype(dtype)
  near32 = near.astype(jnp.float32)
  up = near32 * np.float32(1 + 0.75 * 2.0 ** -info.nmant)
  if info.smallest_subnormal >= jnp.finfo(jnp.float32).smallest_normal:
    up = jnp.maximum(up, near32 + np.float32(info.smallest_subnormal))
  up = jnp.minimum(up, np.float32(info.max)).astype(dtype)
  out = jnp.where(near32 < a, up, near)
  return jnp.where(finite, out, jnp.array(jnp.inf, dtype))
