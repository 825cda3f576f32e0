"""Non-finite gradients through the kernels (interpret mode): the same codes
and scales as the XLA path, and a non-finite momentum wherever the float32
twin's is, as the formats give it (tests/formats/test_non_finite.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon import formats

from . import util
from .test_reference import CASES

# One case a family: row groups, ragged row blocks, mu-law before the scale
# (float16 scales), RMS scales, a scale spanning the tensor (a stats pass),
# Grid tiles, Subspace's residual, stochastic codes.
GPU = ("b8_grouped_384x200", "b4_dynamic_odd_64x201", "b4_before_scale_muonq",
       "b2_midrise_rms_40x300", "a4_tensor_before_scale", "g4_384x200",
       "lowbit_2bit", "b8_stochastic")
TPU = ("b4_before_scale_muonq", "a4_tensor_before_scale", "g4_384x200",
       "b2_midrise_rms_grouped_33x60")


def _non_finite(stored):
  return ~np.isfinite(np.asarray(stored.decode()))


def _check(name: str, backend: str) -> None:
  fmt, shape, cfg = CASES[name]
  rng = np.random.default_rng(0)
  stored = util.random_state(fmt, shape, rng)
  g = rng.standard_normal(shape).astype(np.float32)
  g[(0,) * (len(shape) - 1) + (1,)] = np.nan
  g[tuple(s - 1 for s in shape)] = -np.inf
  g = jnp.asarray(g)
  count, key = jnp.asarray(3, jnp.int32), jax.random.key(3)
  fresh_ref, ref = util.stepper(cfg, "xla")(stored, g, count, key)
  fresh, out = util.stepper(cfg, backend)(stored, g, count, key)
  twin = formats.Float().encode(stored.decode())
  _, twin = util.stepper(cfg, "xla")(twin, g, count, key)
  assert np.any(_non_finite(twin))  # the premise
  assert np.all(_non_finite(ref)[_non_finite(twin)])
  np.testing.assert_array_equal(_non_finite(out), _non_finite(ref))
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    if np.issubdtype(a.dtype, np.integer):
      np.testing.assert_array_equal(a, b)  # codes, bit for bit
    else:  # scales and factors: the same non-finite ones, close elsewhere
      np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
      finite = np.isfinite(a)
      np.testing.assert_allclose(b[finite], a[finite], rtol=util.RTOL)
  np.testing.assert_array_equal(np.isfinite(fresh), np.isfinite(fresh_ref))


@pytest.mark.parametrize("name", GPU)
def test_gpu_driver_keeps_non_finite(name):
  _check(name, "gpu")


@pytest.mark.parametrize("name", TPU)
def test_tpu_driver_keeps_non_finite(name):
  _check(name, "tpu")
