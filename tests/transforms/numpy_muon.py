"""Plain numpy re-implementations of the papers' steps (PAPERS.md), written
independently of the library, for the preset tests."""

from __future__ import annotations

from typing import Any

import numpy as np

QUINTIC = (3.4445, -4.7750, 2.0315)


def newton_schulz(u: np.ndarray, steps: int = 5, eps: float = 1e-7
                  ) -> np.ndarray:
  x = u.astype(np.float64)
  transposed = x.shape[0] > x.shape[1]
  if transposed:
    x = x.T
  x = x / (np.linalg.norm(x) + eps)
  a, b, c = QUINTIC
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if transposed else x


def round_up(x: np.float32, dtype: Any) -> np.float32:
  """The least value of ``dtype`` >= ``x`` (a normal float32), as float32."""
  y = np.float32(np.asarray(x).astype(dtype))
  if y < x:
    y = np.float32(np.nextafter(np.asarray(y).astype(dtype),
                                np.asarray(np.inf, dtype)))
  return y


def linear_qdq(x: np.ndarray, bits: int, block: int,
               scale_dtype: Any = np.float32) -> np.ndarray:
  """Blockwise absmax linear quantize-dequantize of a matrix whose rows are
  a multiple of... any shape: blocks of the flattened array (the layout
  coincides when the row length divides ``block``), each absmax rounded up
  to ``scale_dtype``."""
  qmax = 2 ** (bits - 1) - 1
  flat = x.astype(np.float32).ravel()
  out = np.empty_like(flat)
  for start in range(0, flat.size, block):
    chunk = flat[start:start + block]
    scale = round_up(np.abs(chunk).max(), scale_dtype)
    scale = scale if scale > 0 else np.float32(1)
    q = np.clip(np.round(chunk / scale * qmax), -qmax, qmax)
    out[start:start + block] = q / np.float32(qmax) * scale
  return out.reshape(x.shape)


def mulaw_qdq(x: np.ndarray, bits: int, axis: int | None,
              mu: float = 255.0) -> np.ndarray:
  """mu-law 4-bit quantize-dequantize with one scale per tensor (axis None)
  or per column (axis 0); scales stored in float16 as MuonQ stores them,
  rounded up so that |x / scale| <= 1."""
  qmax = 2 ** (bits - 1) - 1
  x = x.astype(np.float32)
  absmax = np.abs(x).max(axis=axis, keepdims=True)
  scale = absmax.astype(np.float16)
  scale = np.where(scale < absmax, np.nextafter(scale, np.float16(np.inf)),
                   scale).astype(np.float32)
  safe = np.where(scale == 0, 1, scale)
  y = np.clip(x / safe, -1, 1)
  y = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
  q = np.clip(np.round(y * qmax), -qmax, qmax) / qmax
  return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu) * scale


def mulaw_first_qdq(x: np.ndarray, bits: int, axis: int | None,
                    mu: float = 255.0) -> np.ndarray:
  """MuonQ's public quantizer: mu-law of the raw value (clipped to
  [-1, 1]), absmax scale of the companded values in float16 (rounded up),
  linear codes, expanded back."""
  qmax = 2 ** (bits - 1) - 1
  x = np.clip(x.astype(np.float32), -1, 1)
  c = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
  absmax = np.abs(c).max(axis=axis, keepdims=True)
  scale = absmax.astype(np.float16)
  scale = np.where(scale < absmax, np.nextafter(scale, np.float16(np.inf)),
                   scale).astype(np.float32)
  safe = np.where(scale == 0, 1, scale)
  v = np.clip(np.round(c / safe * qmax), -qmax, qmax) / qmax * scale
  return np.sign(v) * np.expm1(np.abs(v) * np.log1p(mu)) / mu


def grid_qdq(x: np.ndarray, bits: int, tile: int) -> np.ndarray:
  """GRASP grid scales: element scale = min(row absmax, col absmax) within
  its tile."""
  qmax = 2 ** (bits - 1) - 1
  x = x.astype(np.float32)
  out = np.zeros_like(x)
  for i in range(0, x.shape[0], tile):
    for j in range(0, x.shape[1], tile):
      t = x[i:i + tile, j:j + tile]
      row = np.abs(t).max(axis=1, keepdims=True)
      col = np.abs(t).max(axis=0, keepdims=True)
      scale = np.minimum(row, col)
      safe = np.where(scale == 0, 1, scale)
      q = np.clip(np.round(t / safe * qmax), -qmax, qmax)
      out[i:i + tile, j:j + tile] = q / np.float32(qmax) * scale
  return out


def power_split(m: np.ndarray, r_prev: np.ndarray):
  """One warm-started power iteration: P, R, residual."""
  q = r_prev / np.linalg.norm(r_prev, axis=0, keepdims=True)
  p, _ = np.linalg.qr(m @ q)
  r = m.T @ p
  return p, r, m - p @ r.T
