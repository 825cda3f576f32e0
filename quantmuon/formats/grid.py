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
from quantmuon.formats.kernel_layout import (
  KernelLayout,
  TwoSided,
)
from quantmuon.formats.tiled import (
  assemble,
  check_scaled,
  codes_matrix,
  tile_noise,
  uniform_noise,
)

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
    if self.code_map.zero_groups is not None:
      raise ValueError(
          f"codebook={self.codebook!r} has no zero level, which Grid's "
          "two-sided scales cannot flag per group; use 'linear', 'dynamic' "
          "or 'mulaw', or Blockwise.")

  @property
  def code_map(self) -> codebooks.Codebook:
    """The codebook object of the codes."""
    return codebooks.of(self.codebook, self.bits, self.mu)

  def kernel_layout(self, shape) -> KernelLayout:
    m, n = layout.matrix_shape(shape)
    return KernelLayout(
        m, n, TwoSided(self.tile), self.code_map,
        self.rounding == "stochastic", self.scale_dtype)

  def kernel_noise(self, key: Array | None, shape: tuple[int, ...]
                   ) -> Array | None:
    """The noise :meth:`_encode` draws, laid out as the matrix view."""
    m, n = layout.matrix_shape(shape)
    return tile_noise(key, m, n, self.tile, self.tile, self.rounding,
                      repr(self))

  def kernel_parts(self, stored: Stored) -> tuple[Array, tuple[Array, ...]]:
    """``(codes (m, packed), (row_scales, col_scales))``, for a kernel."""
    return codes_matrix(stored), (stored["row_scales"], stored["col_scales"])

  def kernel_assemble(self, codes: Array, scales: tuple[Array, ...],
                      shape: tuple[int, ...], dtype: Any = jnp.float32
                      ) -> Stored:
    """The stored value of a kernel's codes and scales."""
    row, col = scales
    return assemble(self, codes, {"row_scales": row, "col_scales": col},
                    shape, dtype)

  @staticmethod
  def _element_scale(row: Array, col: Array) -> Array:
    """(MT, T, NT) row and (MT, NT, T) column maxima -> per-element scale."""
    return jnp.minimum(row[:, :, :, None], col[:, None, :, :])

  def _encode(self, x, *, key, previous) -> Stored:
    del previous
    m, n = layout.matrix_shape(x.shape)
    t = self.tile
    mat = x.reshape(m, n).astype(jnp.float32)
    tiles = layout.to_tiles(mat, t, t)
    mag = jnp.abs(tiles)
    mt, _, nt, _ = tiles.shape
    # A tile that holds a NaN or an inf gets inf scales (see layout).
    bad = layout.tiles_hold_non_finite(mat, t, t)
    row = layout.round_scale(jnp.where(bad[:, None, :], jnp.inf,
                                       jnp.max(mag, axis=3)),
                             self.scale_dtype)  # (MT, T, NT)
    col = layout.round_scale(jnp.where(bad[:, :, None], jnp.inf,
                                       jnp.max(mag, axis=1)),
                             self.scale_dtype)  # (MT, NT, T)
    scale = layout.safe_scale(self._element_scale(row, col))
    y = tiles / scale
    noise = uniform_noise(key, y.shape, self.rounding, repr(self))
    codes = self.code_map.encode(y, noise).astype(jnp.uint8)
    codes = packing.pack(layout.from_tiles(codes, m, n), self.bits)
    return self.kernel_assemble(
        codes, (row.reshape(mt * t, nt)[:m], col.reshape(mt, nt * t)[:, :n]),
        x.shape, x.dtype)

  def _decode(self, stored: Stored) -> Array:
    m, n = layout.matrix_shape(stored.shape)
    t = self.tile
    codes = packing.unpack(stored["codes"].reshape(m, -1), self.bits, n)
    y = layout.to_tiles(
        self.code_map.decode(codes), t, t)
    mt, _, nt, _ = y.shape
    row = layout.pad_to_tiles(stored["row_scales"], t, 1)
    col = layout.pad_to_tiles(stored["col_scales"], 1, t)
    scale = self._element_scale(
        row.astype(jnp.float32).reshape(mt, t, nt),
        col.astype(jnp.float32).reshape(mt, nt, t))
    return layout.from_tiles(y * scale, m, n).reshape(stored.shape)
