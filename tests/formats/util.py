"""Helpers shared by the format tests: jitted encoders and test data.

Each format and input shape compiles once; the jitted functions are cached
by format (formats are hashable), so tests that reuse a format and a shape
pay for one compilation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from quantmuon.formats import Format, Stored

from . import reference as ref


@functools.cache
def encoder(fmt: Format) -> Callable[..., Stored]:
  """``jax.jit`` of ``fmt.encode(x, key=key)``; pass ``key=None`` to omit."""
  return jax.jit(lambda x, key=None: fmt.encode(x, key=key))


@functools.cache
def roundtrip(fmt: Format) -> Callable[[jax.Array], jax.Array]:
  """``jax.jit`` of ``decode(encode(x))`` to float32."""
  return jax.jit(lambda x: fmt.decode(fmt.encode(x)))


def encode(fmt: Format, x: np.ndarray, key: jax.Array | None = None
           ) -> Stored:
  """Jitted ``fmt.encode``.

  Args:
    fmt: the format.
    x: the array.
    key: a random key for stochastic rounding, or None.

  Returns:
    The stored value.
  """
  return encoder(fmt)(x, key)


@jax.jit
def _decode(stored: Stored) -> jax.Array:
  return stored.decode()


def decode(stored: Stored) -> np.ndarray:
  """Jitted ``stored.decode()`` as a numpy array (float32)."""
  return np.asarray(_decode(stored))


def normal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
  """float32 standard normal data."""
  return np.random.default_rng(seed).standard_normal(shape).astype(
      np.float32)


def student_t(shape: tuple[int, ...], df: float = 3.0,
              seed: int = 0) -> np.ndarray:
  """float32 heavy-tailed data."""
  return np.random.default_rng(seed).standard_t(df, shape).astype(
      np.float32)


def rel_err(x: np.ndarray, y: np.ndarray) -> float:
  """``||x - y|| / ||x||`` in float64."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  return float(np.linalg.norm(x - y) / np.linalg.norm(x))


def element_absmax(x: np.ndarray, tr: int, tc: int) -> np.ndarray:
  """The absmax of each element's tile.

  Args:
    x: the array (any rank; seen as its matrix view).
    tr: rows of a tile.
    tc: columns of a tile.

  Returns:
    float64 matrix view of ``x``'s shape: each element's tile absmax.
  """
  x2 = np.abs(ref.matrix(x)).astype(np.float64)
  out = np.zeros_like(x2)
  for _, rows, cols in ref.tiles(*x2.shape, tr, tc):
    out[rows, cols] = x2[rows, cols].max()
  return out


def assert_within(x: np.ndarray, decoded: np.ndarray, scale: np.ndarray,
                  bound: float) -> None:
  """Asserts ``|x - decoded| <= bound * scale`` elementwise.

  A relative slack of 1e-5 on the bound and 1e-6 of the scale absorbs
  float32 rounding of the division and the multiplication; an off-by-one
  code breaks the bound by a whole level.

  Args:
    x: the original array.
    decoded: what the format read back.
    scale: per-element scale (matrix view), e.g. the block absmax.
    bound: the codebook's largest rounding error on [-1, 1].
  """
  err = np.abs(ref.matrix(x).astype(np.float64)
               - ref.matrix(np.asarray(decoded)).astype(np.float64))
  limit = scale * (bound * (1 + 1e-5) + 1e-6)
  worst = np.argmax(err - limit)
  assert np.all(err <= limit), (
      f"error {err.flat[worst]} > bound {limit.flat[worst]}")
