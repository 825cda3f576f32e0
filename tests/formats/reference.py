"""Plain numpy re-implementations of the storage formats, for the tests.

Written from the documented layouts and the papers, not from the library's
code: loops over blocks and tiles, float64 arithmetic where it does not
change a result, nearest levels by ``argmin``. Shapes here are small.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np


def bnb_dynamic_map(signed: bool = True, max_exponent_bits: int = 7,
                    total_bits: int = 8) -> np.ndarray:
  """bitsandbytes' ``create_dynamic_map``, transcribed line by line.

  Args:
    signed: whether the map covers [-1, 1].
    max_exponent_bits: exponent levels (7 for the 8-bit map).
    total_bits: bits a code.

  Returns:
    The sorted float32 map of ``2**total_bits`` values.
  """
  data: list[float] = []
  non_sign_bits = total_bits - 1
  for i in range(max_exponent_bits):
    if signed:
      fraction_items = 2 ** (i + non_sign_bits - max_exponent_bits) + 1
    else:
      fraction_items = 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
    boundaries = np.linspace(0.1, 1, fraction_items, dtype=np.float32)
    means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
    magnitude = np.float32(10 ** (-(max_exponent_bits - 1) + i))
    data += (magnitude * means).tolist()
    if signed:
      data += (-magnitude * means).tolist()
  data.append(0.0)
  data.append(1.0)
  assert len(data) == 2 ** total_bits, len(data)
  return np.sort(np.array(data, np.float32))


def qmax(bits: int) -> int:
  return 2 ** (bits - 1) - 1


def table(codebook: str, bits: int) -> np.ndarray:
  """The levels a code stands for, indexed by code (float64)."""
  if codebook == "dynamic":
    return bnb_dynamic_map(True, bits - 1, bits).astype(np.float64)
  q = np.arange(2 ** bits) - 2 ** (bits - 1)
  y = np.maximum(q, -qmax(bits)) / qmax(bits)
  if codebook == "linear":
    return y
  assert codebook == "mulaw", codebook
  return mulaw_expand(y)


def mulaw_compand(y: np.ndarray, mu: float = 255.0) -> np.ndarray:
  return np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)


def mulaw_expand(y: np.ndarray, mu: float = 255.0) -> np.ndarray:
  return np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu


def codes(y: np.ndarray, codebook: str, bits: int) -> np.ndarray:
  """Nearest-rounding codes of normalized values ``y`` (float32 in)."""
  y = np.clip(np.asarray(y, np.float64), -1.0, 1.0)
  offset = 2 ** (bits - 1)
  if codebook == "linear":
    v = y.astype(np.float32) * np.float32(qmax(bits))
    return (np.round(v) + offset).astype(np.uint8)
  if codebook == "mulaw":
    return (np.round(mulaw_compand(y) * qmax(bits)) + offset).astype(
        np.uint8)
  levels = table(codebook, bits)
  return np.argmin(np.abs(y[..., None] - levels), axis=-1).astype(np.uint8)


def pack(c: np.ndarray, bits: int) -> np.ndarray:
  """Packs codes along the last axis, the first code in the low bits."""
  if bits == 8:
    return c.astype(np.uint8)
  per = 8 // bits
  n = c.shape[-1]
  out = np.zeros(c.shape[:-1] + (math.ceil(n / per),), np.uint8)
  for j in range(n):
    out[..., j // per] |= (c[..., j].astype(np.uint8) << (bits * (j % per)))
  return out


def matrix(x: np.ndarray) -> np.ndarray:
  """The 2-D view: leading axes flattened, a 1-D array as one row."""
  x = np.asarray(x)
  if x.ndim <= 1:
    return x.reshape(1, -1)
  return x.reshape(-1, x.shape[-1])


def tiles(m: int, n: int, tr: int, tc: int
          ) -> Iterator[tuple[tuple[int, int], slice, slice]]:
  """Yields ``((row tile, col tile), rows, cols)`` covering an m x n matrix."""
  for i in range(math.ceil(m / tr)):
    for j in range(math.ceil(n / tc)):
      yield ((i, j), slice(i * tr, min(m, (i + 1) * tr)),
             slice(j * tc, min(n, (j + 1) * tc)))


def blockwise_tile(m: int, n: int, block_size: int) -> tuple[int, int]:
  """Blockwise's documented layout: blocks along rows; short rows grouped."""
  del m
  if n >= block_size:
    return 1, block_size
  return max(1, block_size // n), n


def axiswise_tile(m: int, n: int, axis: str) -> tuple[int, int]:
  return {"tensor": (m, n), "row": (1, n), "col": (m, 1)}[axis]


def absmax_tiled(x: np.ndarray, tr: int, tc: int, codebook: str,
                 bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One absmax scale per ``tr x tc`` tile of the matrix view.

  Returns:
    ``(packed codes shaped like x, scales (row tiles, col tiles),
    decoded matrix)``.
  """
  x2 = matrix(x).astype(np.float32)
  m, n = x2.shape
  scales = np.zeros((math.ceil(m / tr), math.ceil(n / tc)), np.float32)
  c = np.zeros((m, n), np.uint8)
  decoded = np.zeros((m, n), np.float64)
  levels = table(codebook, bits)
  for (i, j), rows, cols in tiles(m, n, tr, tc):
    block = x2[rows, cols]
    s = np.max(np.abs(block))
    scales[i, j] = s
    y = block / (s if s > 0 else np.float32(1.0))  # float32 division
    c[rows, cols] = codes(y, codebook, bits)
    decoded[rows, cols] = levels[c[rows, cols]] * np.float64(s)
  packed = pack(c, bits)
  shape = x.shape[:-1] + packed.shape[-1:] if x.ndim else packed.shape[-1:]
  return packed.reshape(shape), scales, decoded


def grid(x: np.ndarray, tile: int, codebook: str, bits: int
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                    np.ndarray]:
  """GRASP's grid scales: min(row absmax, col absmax) inside each tile.

  Returns:
    ``(packed codes, row_scales (m, col tiles), col_scales (row tiles, n),
    element scales (m, n), decoded matrix)``.
  """
  x2 = matrix(x).astype(np.float32)
  m, n = x2.shape
  mt, nt = math.ceil(m / tile), math.ceil(n / tile)
  row_scales = np.zeros((m, nt), np.float32)
  col_scales = np.zeros((mt, n), np.float32)
  scale = np.zeros((m, n), np.float32)
  c = np.zeros((m, n), np.uint8)
  levels = table(codebook, bits)
  for (i, j), rows, cols in tiles(m, n, tile, tile):
    block = np.abs(x2[rows, cols])
    row_scales[rows, j] = block.max(axis=1)
    col_scales[i, cols] = block.max(axis=0)
    s = np.minimum(row_scales[rows, j][:, None], col_scales[i, cols][None])
    scale[rows, cols] = s
    y = x2[rows, cols] / np.where(s > 0, s, np.float32(1.0))
    c[rows, cols] = codes(y, codebook, bits)
  decoded = levels[c] * scale.astype(np.float64)
  packed = pack(c, bits)
  shape = x.shape[:-1] + packed.shape[-1:] if x.ndim else packed.shape[-1:]
  return packed.reshape(shape), row_scales, col_scales, scale, decoded


def max_rounding_error(codebook: str, bits: int, mu: float = 255.0) -> float:
  """The largest |y - decode(encode(y))| over y in [-1, 1], nearest rounding.

  Linear: half a step, ``1 / (2 qmax)``. Dynamic: half the largest gap
  between neighbouring levels, or the distance from -1 or +1 to the outermost
  level (the signed map has +1 but not -1). mu-law rounds in the companded
  domain, so a value just past the companded midpoint of a cell rounds up:
  the error is at most ``expand((q+1)/qmax) - expand((q+1/2)/qmax)``.
  """
  if codebook == "linear":
    return 1.0 / (2 * qmax(bits))
  if codebook == "dynamic":
    levels = table(codebook, bits)
    return float(max(np.max(np.diff(levels)) / 2, levels[0] + 1,
                     1 - levels[-1]))
  assert codebook == "mulaw", codebook
  q = np.arange(qmax(bits))
  hi = mulaw_expand((q + 1) / qmax(bits), mu)
  mid = mulaw_expand((q + 0.5) / qmax(bits), mu)
  return float(np.max(hi - mid))
