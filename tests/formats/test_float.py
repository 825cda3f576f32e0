"""Float: plain storage, the full-precision reference."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from quantmuon.formats import Float

from . import util


def special_values() -> np.ndarray:
  x = util.normal((64,), seed=0) * np.float32(1e3)
  x[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30]
  return x


def test_float32_is_exact():
  x = special_values()
  stored = util.encode(Float(jnp.float32), x)
  chex.assert_type(stored["values"], jnp.float32)
  out = util.decode(stored)
  np.testing.assert_array_equal(out.view(np.uint32), x.view(np.uint32))


@pytest.mark.parametrize("dtype,np_dtype", [
    (jnp.bfloat16, ml_dtypes.bfloat16), (jnp.float16, np.float16)])
def test_low_precision_rounds_to_nearest_even(dtype, np_dtype):
  x = special_values()[4:]  # finite values and one NaN
  # Exact ties between neighbouring values of the target dtype.
  lo = np.array([1.0, 3.0, -5.0], np.float32).astype(np_dtype)
  ulp = np.abs(np.spacing(lo.astype(np.float32).astype(np_dtype)))
  ties = lo.astype(np.float32) + np.sign(lo.astype(np.float32)) * (
      ulp.astype(np.float32) / 2)
  x = np.concatenate([x, ties]).astype(np.float32)
  stored = util.encode(Float(dtype), x)
  chex.assert_type(stored["values"], dtype)
  expected = x.astype(np_dtype).astype(np.float32)
  np.testing.assert_array_equal(util.decode(stored), expected)
  finite = np.isfinite(x) & (np.abs(x) > 1e-4) & (np.abs(x) < 6e4)
  eps = float(ml_dtypes.finfo(np_dtype).eps)
  np.testing.assert_array_less(
      np.abs(util.decode(stored) - x)[finite],
      np.abs(x)[finite] * eps / 2 * (1 + 1e-6))


def test_decode_dtype_and_shape():
  x = util.normal((3, 4, 5))
  stored = util.encode(Float(jnp.bfloat16), x)
  out = stored.decode(dtype=jnp.bfloat16)
  chex.assert_shape(out, (3, 4, 5))
  chex.assert_type(out, jnp.bfloat16)
  assert stored.dtype == jnp.float32


def test_float_rejects_integer_dtype():
  with pytest.raises(ValueError, match="dtype"):
    Float(jnp.int32)
