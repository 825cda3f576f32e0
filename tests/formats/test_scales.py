"""Scales stored in a narrow dtype: rounded up, never inf for a finite absmax,
never zero."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from quantmuon.formats import Axiswise, Blockwise, Grid, layout

from . import util

F16_MAX = 65504.0
F16_TINY = 2.0 ** -24  # the smallest float16 subnormal


def _finite_values(dtype) -> np.ndarray:
  """Every finite, non-negative value of a 16-bit ``dtype``, as float32."""
  every = np.arange(2 ** 16, dtype=np.uint16).view(dtype).astype(np.float32)
  return np.unique(every[np.isfinite(every) & (every >= 0)])


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_round_scale_is_the_least_value_at_or_above(dtype):
  values = _finite_values(dtype)
  # XLA flushes float32 subnormals (bfloat16's) to zero; they are left out.
  normal = values[values >= np.finfo(np.float32).tiny]
  absmax = np.concatenate([
      [0], normal, np.nextafter(normal, np.float32(np.inf)),
      np.nextafter(normal[1:], np.float32(0)),
      np.float32([7e4, 3e38])])
  got = np.asarray(jax.jit(lambda a: layout.round_scale(a, dtype))(absmax))
  assert got.dtype == dtype
  top = np.float32(ml_dtypes.finfo(dtype).max)
  expected = values[np.searchsorted(values, np.minimum(absmax, top))]
  np.testing.assert_array_equal(got.astype(np.float32), expected)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16,
                                   np.float32])
def test_round_scale_of_a_non_finite_absmax_is_inf(dtype):
  """A group that held a NaN or an inf: the scale decodes it to non-finite
  values (float16 saturated it to 65504, which coded the inf as finite)."""
  absmax = np.float32([np.inf, np.nan, 1.0])
  got = np.asarray(jax.jit(lambda a: layout.round_scale(a, dtype))(absmax))
  np.testing.assert_array_equal(got.astype(np.float32), [np.inf, np.inf, 1])


def test_round_scale_keeps_float32():
  absmax = jnp.float32([0.0, 1e-30, 3.3e38])
  np.testing.assert_array_equal(layout.round_scale(absmax, jnp.float32),
                                absmax)


OVERFLOW = [
    Axiswise(bits=4, codebook="mulaw", scale_dtype=jnp.float16),
    Axiswise(bits=8, scale_dtype=jnp.float16),
    Blockwise(8, "dynamic", block_size=4, scale_dtype=jnp.float16),
]


@pytest.mark.parametrize("fmt", OVERFLOW, ids=repr)
def test_absmax_above_float16_range_saturates(fmt):
  """Was an inf scale and a tile of NaN."""
  x = np.float32([[7e4, 1, -2, 3]])
  stored = util.encode(fmt, x)
  assert float(stored["scales"].reshape(())) == F16_MAX
  out = util.decode(stored)
  np.testing.assert_allclose(out[0, 0], F16_MAX, rtol=1e-6)
  np.testing.assert_allclose(out[0, 1:], x[0, 1:], atol=F16_MAX / 2 / 127)


def test_grid_absmax_above_float16_range_saturates():
  fmt = Grid(bits=8, tile=4, scale_dtype=jnp.float16)
  x = np.float32([[7e4, 1, -2, 3]])
  stored = util.encode(fmt, x)
  assert float(stored["row_scales"][0, 0]) == F16_MAX
  out = util.decode(stored)
  assert out[0, 0] == F16_MAX
  np.testing.assert_allclose(out[0, 1:], x[0, 1:], rtol=1 / 127)


@pytest.mark.parametrize("fmt", [
    Axiswise(bits=8, scale_dtype=jnp.float16),
    Grid(bits=8, tile=4, scale_dtype=jnp.float16)], ids=repr)
def test_absmax_below_float16_range_keeps_a_nonzero_scale(fmt):
  """Was a zero scale, decoding every value to 0."""
  x = np.float32([[-2e-8, 1e-8, 5e-9, 3e-9]])
  stored = util.encode(fmt, x)
  for name, scale in stored.parts.items():
    if name != "codes":
      assert np.all(np.asarray(scale, np.float32) == F16_TINY), name
  out = util.decode(stored)
  np.testing.assert_allclose(out, x, rtol=0, atol=F16_TINY / 2 / 127)
  assert out[0, 0] < -1.9e-8


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_scales_cover_their_rows(dtype):
  """Rounded up, a scale is never below its absmax, so |x / scale| <= 1."""
  x = util.student_t((64, 32), seed=3) * np.float32(1e-3)
  stored = util.encode(Axiswise(bits=8, axis="row", scale_dtype=dtype), x)
  scales = np.asarray(stored["scales"], np.float32)[:, 0]
  absmax = np.abs(x).max(axis=1)
  assert np.all(scales >= absmax)
  below = np.asarray(jax.lax.nextafter(
      stored["scales"], jnp.zeros_like(stored["scales"])), np.float32)[:, 0]
  assert np.all(below < absmax)
