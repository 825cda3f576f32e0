"""The kernel-safe float32 operations against plain numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon.formats import kernel_math


def numpy_halving(v: np.ndarray) -> np.float32:
  """The halving sum of a 1-D float32 array, one addition at a time."""
  v = list(v.astype(np.float32))
  while len(v) & (len(v) - 1) or not v:
    v.append(np.float32(0))
  while len(v) > 1:
    h = len(v) // 2
    v = [np.float32(v[i] + v[i + h]) for i in range(h)]
  return v[0]


@pytest.mark.parametrize("size", [1, 3, 128, 200])
def test_halving_sum_is_the_written_out_order(size):
  x = np.random.default_rng(size).standard_normal((5, size)).astype(
      np.float32)
  got = np.asarray(jax.jit(lambda x: kernel_math.halving_sum(x, 1))(x))
  assert got.shape == (5, 1)
  np.testing.assert_array_equal(got[:, 0],
                                [numpy_halving(row) for row in x])


def test_halving_sum_ignores_zero_padding_and_differs_from_other_orders():
  """Padding to a larger power of two gives the same bits (a kernel's
  tile); a sequential sum of the same values does not always."""
  x = np.random.default_rng(0).standard_normal((64, 100)).astype(np.float32)
  padded = np.pad(x, ((0, 0), (0, 412)))
  a = np.asarray(kernel_math.halving_sum(jnp.asarray(x), 1))
  b = np.asarray(kernel_math.halving_sum(jnp.asarray(padded), 1))
  np.testing.assert_array_equal(a, b)
  sequential = np.array([np.add.accumulate(row, dtype=np.float32)[-1]
                         for row in x])
  assert np.any(sequential != a[:, 0])


def test_square_and_round_half_even():
  x = jnp.asarray([-3.0, -0.0, 0.0, 1.5, np.nan, 2.5, -2.5, 0.5, 7.49])
  np.testing.assert_array_equal(np.asarray(kernel_math.square(x)),
                                np.asarray(x * x))
  np.testing.assert_array_equal(np.asarray(kernel_math.round_half_even(x)),
                                np.asarray(jnp.round(x)))
  np.testing.assert_array_equal(np.asarray(kernel_math.sign(x[:4])),
                                [-1.0, 0.0, 0.0, 1.0])
  np.testing.assert_array_equal(np.asarray(kernel_math.clip_unit(x[:4])),
                                [-1.0, -0.0, 0.0, 1.0])
