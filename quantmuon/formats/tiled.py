"""Absmax-scaled formats: one scale per rectangular tile of the matrix view.

``Blockwise`` (8-bit Muon, arXiv 2509.23106; bitsandbytes) keeps one absmax
scale per block of ``block_size`` elements; ``Axiswise`` one per tensor, row
or column (MuonQ, arXiv 2605.11396, uses per-tensor and per-column scales).
Both are the same computation with different tiles, so they share it here.

With ``codebook="mulaw"``, ``companding`` picks the order of companding and
scaling:

- ``after_scale``: ``y = x / absmax(x)``, then mu-law codes of ``y``;
- ``before_scale`` (MuonQ's public code): ``c = mulaw(clip(x, -1, 1))``,
  ``s = absmax(c)``, then linear codes of ``c / s``; decoding expands
  ``code * s``. It expects values in [-1, 1], as MuonQ's normalized momentum
  (``||M||_F = 1``) and its factors are; larger values saturate.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats import codebooks, layout, packing
from quantmuon.formats.base import (
  Format,
  Stored,
  canonical_dtype,
  check_choice,
  positive_int,
  set_field,
)
from quantmuon.formats.kernel_layout import (
  Absmax,
  ClipRms,
  KernelLayout,
  RowBlocks,
  RowGroups,
  ScaleStatistic,
  ScaleTiling,
  Spanning,
)

Array = jax.Array
ROUNDINGS = ("nearest", "stochastic")
COMPANDINGS = ("after_scale", "before_scale")


def uniform_noise(key: Array | None, shape: tuple[int, ...],
                  rounding: str, who: str) -> Array | None:
  """Noise for stochastic rounding, or None when rounding to nearest."""
  if rounding == "nearest":
    return None
  if key is None:
    raise ValueError(
        f"{who} has rounding='stochastic' and needs key=jax.random.key(...) "
        "in encode().")
  return jax.random.uniform(key, shape, jnp.float32)


def tile_noise(key: Array | None, m: int, n: int, tile_rows: int,
               tile_cols: int, rounding: str, who: str) -> Array | None:
  """The noise ``encode`` draws for ``(tile_rows, tile_cols)`` tiles, laid
  out as the ``(m, n)`` matrix (what a kernel reads), or None."""
  tiles = (layout.ceil_div(m, tile_rows), tile_rows,
           layout.ceil_div(n, tile_cols), tile_cols)
  noise = uniform_noise(key, tiles, rounding, who)
  return None if noise is None else layout.from_tiles(noise, m, n)


def codes_matrix(stored: Stored) -> Array:
  """The packed codes of a scaled format as ``(m, packed)``."""
  return stored["codes"].reshape(layout.matrix_shape(stored.shape)[0], -1)


def assemble(fmt: Format, codes: Array, scales: dict[str, Array],
             shape: tuple[int, ...], dtype: Any) -> Stored:
  """A scaled format's ``Stored``: ``(m, packed)`` codes and named scales."""
  codes = codes.reshape(layout.codes_shape(shape, codes.shape[-1]))
  return Stored({"codes": codes, **scales}, fmt, shape, dtype)


def check_scaled(fmt: Format) -> None:
  """Checks the fields every absmax-scaled format has.

  ``bits``, ``codebook``, ``mu``, ``rounding`` and ``scale_dtype`` of
  ``Blockwise``, ``Axiswise`` and ``Grid``; ``scale_dtype`` is made
  canonical.

  Args:
    fmt: the format, from its ``__post_init__``.
  """
  codebooks.check_bits(fmt.bits)
  codebooks.check_codebook(fmt.codebook)
  check_choice(fmt.rounding, "rounding", ROUNDINGS)
  if not fmt.mu > 0:
    raise ValueError(
        f"{type(fmt).__name__}: mu must be positive, got {fmt.mu!r}.")
  dtype = canonical_dtype(fmt.scale_dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{type(fmt).__name__}: scale_dtype must be a floating dtype such as "
        f"jnp.float16 or jnp.float32, got {dtype}.")
  set_field(fmt, "scale_dtype", dtype)


def _real_counts(tiles: tuple[int, ...], m: int, n: int) -> np.ndarray:
  """Elements inside the ``(m, n)`` matrix of each tile of a
  ``(rt, tr, ct, tc)`` tiling, ``(rt, ct)``."""
  rt, tr, ct, tc = tiles
  rows = np.minimum(tr, m - tr * np.arange(rt))
  cols = np.minimum(tc, n - tc * np.arange(ct))
  return np.outer(rows, cols)


class _AbsmaxTiled(Format):
  """Shared encode/decode of the tile-scaled formats."""

  bits: int
  codebook: str
  mu: float
  rounding: str
  scale_dtype: Any
  companding: str
  clip_rms: float | None

  def _check_tiled(self) -> None:
    """Checks ``companding`` and ``clip_rms``."""
    check_choice(self.companding, "companding", COMPANDINGS)
    if self.compands_first and self.codebook != "mulaw":
      raise ValueError(
          f"{type(self).__name__}: companding='before_scale' needs "
          f"codebook='mulaw', got codebook={self.codebook!r}.")
    if self.clip_rms is not None:
      if isinstance(self.clip_rms, bool) or not self.clip_rms > 0:
        raise ValueError(
            f"{type(self).__name__}: clip_rms must be a positive number of "
            f"RMS (e.g. 1.5), or None for the absmax scale; got "
            f"{self.clip_rms!r}.")
      set_field(self, "clip_rms", float(self.clip_rms))

  @property
  def scale_statistic(self) -> ScaleStatistic:
    """What a tile's scale is found from: its absmax, or ``clip_rms``
    times its RMS."""
    return Absmax() if self.clip_rms is None else ClipRms(self.clip_rms)

  def _statistic(self, tiles: Array, m: int, n: int) -> Array:
    """Per tile of raw values, the statistic of the values as coded: the
    absmax, or ``clip_rms`` times the RMS over the tile's real elements
    (padding left out), of the companded values where ``before_scale``.

    The absmax of companded values is taken as the compand of the clipped
    absmax: mu-law is increasing, so this is the same scale (on XLA's CPU
    backend, for every float32 input of mu = 255 but one adjacent pair
    near 0.0016, where float32 ``log1p`` steps 2 ulps down). So the
    reduction reads the raw values, and the encode keeps no companded
    copy of the matrix between its reduction and its codes. The kernels
    take the absmax of the companded tile, equal but at that pair.
    """
    if self.clip_rms is None:
      absmax = self.scale_statistic.of(tiles, (1, 3), None)
      if self.compands_first:
        absmax = self._compander.compand(absmax)
      return absmax
    if self.compands_first:
      tiles = self._compander.compand(tiles)
    count = _real_counts(tiles.shape, m, n).astype(np.float32)
    return self.scale_statistic.of(tiles, (1, 3), count)

  def _holds_zero(self, tiles: Array, m: int, n: int) -> Array:
    """Per tile, whether one of its real elements is an exact zero: more
    zeros than padding."""
    _, tr, _, tc = tiles.shape
    padding = tr * tc - _real_counts(tiles.shape, m, n)
    return jnp.sum(tiles == 0, axis=(1, 3)) > padding

  @property
  def compands_first(self) -> bool:
    """Whether values are companded before the scale is taken."""
    return self.companding == "before_scale"

  @property
  def code_codebook(self) -> str:
    """The codebook of the codes themselves: linear when the values were
    companded before scaling."""
    return "linear" if self.compands_first else self.codebook

  @property
  def code_map(self) -> codebooks.Codebook:
    """The codebook object of the codes themselves."""
    return codebooks.of(self.code_codebook, self.bits, self.mu)

  @property
  def _compander(self) -> codebooks.MuLaw | None:
    """The mu-law applied before the scale (``before_scale``), or None."""
    return (codebooks.MuLaw(self.bits, float(self.mu))
            if self.compands_first else None)

  @abc.abstractmethod
  def tile_shape(self, m: int, n: int) -> tuple[int, int]:
    """The ``(rows, cols)`` of one scale tile of an ``(m, n)`` matrix."""

  @abc.abstractmethod
  def _scale_tiling(self, m: int, n: int) -> ScaleTiling:
    """The kernels' description of :meth:`tile_shape`."""

  def kernel_layout(self, shape) -> KernelLayout:
    m, n = layout.matrix_shape(shape)
    return KernelLayout(
        m, n, self._scale_tiling(m, n), self.code_map,
        self.rounding == "stochastic", self.scale_dtype, self._compander,
        self.scale_statistic)

  def kernel_noise(self, key: Array | None, shape: tuple[int, ...]
                   ) -> Array | None:
    """The noise :meth:`_encode` draws, laid out as the matrix view."""
    m, n = layout.matrix_shape(shape)
    return tile_noise(key, m, n, *self.tile_shape(m, n), self.rounding,
                      repr(self))

  def kernel_parts(self, stored: Stored) -> tuple[Array, tuple[Array, ...]]:
    """``(codes (m, packed), scales)`` of a stored value, for a kernel."""
    return codes_matrix(stored), (stored["scales"],)

  def kernel_assemble(self, codes: Array, scales: tuple[Array, ...],
                      shape: tuple[int, ...], dtype: Any = jnp.float32
                      ) -> Stored:
    """The stored value of a kernel's codes and scales."""
    (scale,) = scales
    return assemble(self, codes, {"scales": scale}, shape, dtype)

  def _encode(self, x, *, key, previous) -> Stored:
    del previous
    m, n = layout.matrix_shape(x.shape)
    tr, tc = self.tile_shape(m, n)
    mat = x.reshape(m, n).astype(jnp.float32)
    tiles = layout.to_tiles(mat, tr, tc)
    # A tile holding a NaN or an inf gets an inf scale (see layout).
    scale = layout.round_scale(
        jnp.where(layout.tiles_hold_non_finite(mat, tr, tc), jnp.inf,
                  self._statistic(tiles, m, n)), self.scale_dtype)
    if self.compands_first:
      tiles = self._compander.compand(tiles)
    y = tiles / layout.safe_scale(scale)[:, None, :, None]
    book = self.code_map
    if book.zero_groups is not None:
      scale = book.flag_scales(scale, self._holds_zero(tiles, m, n))
    noise = uniform_noise(key, y.shape, self.rounding, repr(self))
    codes = book.encode_scaled(y, noise, scale[:, None, :, None])
    codes = packing.pack(layout.from_tiles(codes.astype(jnp.uint8), m, n),
                         self.bits)
    return self.kernel_assemble(codes, (scale,), x.shape, x.dtype)

  def _decode(self, stored: Stored) -> Array:
    m, n = layout.matrix_shape(stored.shape)
    tr, tc = self.tile_shape(m, n)
    codes = packing.unpack(stored["codes"].reshape(m, -1), self.bits, n)
    scale = stored["scales"].astype(jnp.float32)[:, None, :, None]
    tiles = self.code_map.decode_scaled(
        codes, scale, arrange=lambda y: layout.to_tiles(y, tr, tc))
    mat = layout.from_tiles(tiles, m, n)
    if self.compands_first:
      mat = self._compander.expand(mat)
    return mat.reshape(stored.shape)


@dataclasses.dataclass(frozen=True)
class Blockwise(_AbsmaxTiled):
  """Codes with one absmax scale per block of ``block_size`` elements.

  Blocks lie along the last axis of the matrix view: a row of ``n >=
  block_size`` elements is cut into blocks of ``block_size`` (the last one
  ragged); rows shorter than that are grouped ``block_size // n`` to a block.
  Whenever ``n`` divides ``block_size`` or ``block_size`` divides ``n`` these
  are exactly the blocks of the flattened array that bitsandbytes and the
  8-bit Muon paper use; otherwise blocks never straddle a row, which keeps
  state local when a parameter is sharded by rows. Padding never changes a
  scale or a decoded value.

  Args:
    bits: 2, 4 or 8 bits a code; 4 and 2 are packed two and four a byte.
    codebook: ``linear``, ``dynamic``, ``mulaw``, ``midrise`` or an
      unsigned codebook (with ``midrise``, a tile that holds an exact zero
      takes ``linear`` codes and a negative scale; see
      ``formats.codebooks``).
    block_size: elements per block.
    mu: mu-law parameter for ``codebook="mulaw"``.
    rounding: ``nearest`` or ``stochastic`` (needs ``key`` in ``encode``).
    scale_dtype: dtype the scales are stored in (each absmax rounded up to
      it, saturating at its largest finite value; see layout.round_scale).
    companding: ``after_scale`` or ``before_scale`` (MuonQ's public code),
      for ``codebook="mulaw"``; see the module docstring.
    clip_rms: scale each tile by this many RMS instead of its absmax
      (values beyond clip), or None; see the module docstring.
  """

  bits: int = 8
  codebook: str = "linear"
  block_size: int = 2048
  mu: float = 255.0
  rounding: str = "nearest"
  scale_dtype: Any = jnp.float32
  companding: str = "after_scale"
  clip_rms: float | None = None

  def __post_init__(self):
    check_scaled(self)
    self._check_tiled()
    positive_int(self.block_size, "block_size")

  def tile_shape(self, m: int, n: int) -> tuple[int, int]:
    if n >= self.block_size:
      return 1, self.block_size
    return max(1, self.block_size // n), n

  def _scale_tiling(self, m, n):
    tr, tc = self.tile_shape(m, n)
    if tr == 1:
      return RowBlocks(tc, layout.ceil_div(n, tc))
    return RowGroups(tr)


@dataclasses.dataclass(frozen=True)
class Axiswise(_AbsmaxTiled):
  """Codes with one absmax scale per tensor, per row or per column.

  Args:
    bits: 2, 4 or 8 bits a code.
    codebook: ``linear``, ``dynamic``, ``mulaw``, ``midrise`` or an
      unsigned codebook (with ``midrise``, a tile that holds an exact zero
      takes ``linear`` codes and a negative scale; see
      ``formats.codebooks``).
    axis: ``tensor``, ``row`` or ``col`` of the matrix view.
    mu: mu-law parameter for ``codebook="mulaw"``.
    rounding: ``nearest`` or ``stochastic``.
    scale_dtype: dtype the scales are stored in (each absmax rounded up to
      it, saturating at its largest finite value; see layout.round_scale).
    companding: ``after_scale`` or ``before_scale`` (MuonQ's public code),
      for ``codebook="mulaw"``; see the module docstring.
    clip_rms: scale each tile by this many RMS instead of its absmax
      (values beyond clip), or None; see the module docstring.
  """

  bits: int = 8
  codebook: str = "linear"
  axis: str = "tensor"
  mu: float = 255.0
  rounding: str = "nearest"
  scale_dtype: Any = jnp.float32
  companding: str = "after_scale"
  clip_rms: float | None = None

  def __post_init__(self):
    check_scaled(self)
    self._check_tiled()
    check_choice(self.axis, "axis", ("tensor", "row", "col"))

  def tile_shape(self, m: int, n: int) -> tuple[int, int]:
    return {"tensor": (m, n), "row": (1, n), "col": (m, 1)}[self.axis]

  def _scale_tiling(self, m, n):
    return Spanning(self.axis)
