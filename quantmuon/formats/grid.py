"""Grid scales: 4-bit-Muon-GRASP's two-sided scales per tile.

"Achieving low-bit Muon through subspace preservation and grid quantization"
(ICLR 2026): the matrix is cut into ``tile x tile`` tiles; inside a tile,
element (i, j) is divided by ``min(absmax of row i in the tile, absmax of
column j in the tile)``, so it lies in [-1, 1]. Both scale vectors are kept.
This is the "rank-1" normalization of Li et al. 2023 restricted to tiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from quantmuon.formats import codebooks, layout, packing
from quantmuon.formats.base import Format, Stored, positive_int
from quantmuon.formats.tiled import check_scaled, uniform_noise

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Grid(Format):
  """Codes with row and column absmax scales inside square tiles.

  Stored parts: ``codes`` (shaped like the array, last axis packed),
  ``row_scales`` of shape ``(rows, col tiles)`` and ``col_scales`` of shape
  ``(row tiles, cols)`` of the matrix view. Edge tiles may be ragged.

  Args:
    bits: 2, 4 or 8 bits a code.
    tile: side of the square tiles.
    codebook: ``linear``, ``dynamic`` or ``mulaw``.
    mu: mu-law parameter for ``codebook="mulaw"``.
    rounding: ``nearest`` or ``stochastic`` (needs ``key`` in ``encode``).
    scale_dtype: dtype the scales are stored in (each absmax rounded up to
      it, saturating at its largest finite value; see layout.round_scale).
  """

  bits: int = 4
  tile: int = 128
  codebook: str = "linear"
  mu: float = 255.0
  rounding: str = "nearest"
  scale_dtype: Any = jnp.float32

  def __post_init__(self):
    check_scaled(self)
    positive_int(self.tile, "tile")

  @staticmethod
  def _element_scale(row: Array, col: Array) -> Array:
    """(MT, T, NT) row and (MT, NT, T) column maxima -> per-element scale."""
    return jnp.minimum(row[:, :, :, None], col[:, None, :, :])

  def _encode(self, x, *, key, previous) -> Stored:
    del previous
    m, n = layout.matrix_shape(x.shape)
    t = self.tile
    tiles = layout.to_tiles(x.reshape(m, n).astype(jnp.float32), t, t)
    mag = jnp.abs(tiles)
    row = layout.round_scale(jnp.max(mag, axis=3),
                             self.scale_dtype)  # (MT, T, NT)
    col = layout.round_scale(jnp.max(mag, axis=1),
                             self.scale_dtype)  # (MT, NT, T)
    scale = layout.safe_scale(self._element_scale(row, col))
    y = tiles / scale
    noise = uniform_noise(key, y.shape, self.rounding, repr(self))
    codes = codebooks.encode(y, self.codebook, self.bits, self.mu, noise)
    codes = packing.pack(layout.from_tiles(codes, m, n), self.bits)
    mt, _, nt = row.shape
    parts = {
        "codes": codes.reshape(layout.codes_shape(x.shape, codes.shape[-1])),
        "row_scales": row.reshape(mt * t, nt)[:m],
        "col_scales": col.reshape(mt, nt * t)[:, :n],
    }
    return Stored(parts, self, x.shape, x.dtype)

  def _decode(self, stored: Stored) -> Array:
    m, n = layout.matrix_shape(stored.shape)
    t = self.tile
    codes = packing.unpack(stored["codes"].reshape(m, -1), self.bits, n)
    y = layout.to_tiles(
        codebooks.decode(codes, self.codebook, self.bits, self.mu), t, t)
    mt, _, nt, _ = y.shape
    row = layout.pad_to_tiles(stored["row_scales"], t, 1)
    col = layout.pad_to_tiles(stored["col_scales"], 1, t)
    scale = self._element_scale(
        row.astype(jnp.float32).reshape(mt, t, nt),
        col.astype(jnp.float32).reshape(mt, nt, t))
    return layout.from_tiles(y * scale, m, n).reshape(stored.shape)
