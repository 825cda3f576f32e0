"""Grid: GRASP's two-sided scales per tile."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon.formats import Blockwise, Grid

from . import reference as ref
from . import util


@pytest.mark.parametrize("codebook,bits", [
    ("linear", 4), ("linear", 8), ("dynamic", 4), ("mulaw", 4),
    ("linear", 2)])
def test_grid_matches_numpy(codebook, bits):
  fmt = Grid(bits=bits, tile=8, codebook=codebook)
  x = util.student_t((20, 27), seed=bits)  # ragged tiles on both edges
  x[5, :] *= 30.0  # an outlier row
  x[:, 7] *= 30.0  # an outlier column
  x[16:, 24:] = 0.0  # an all-zero corner tile
  stored = util.encode(fmt, x)
  codes, row_scales, col_scales, scale, decoded = ref.grid(x, 8, codebook,
                                                           bits)
  chex.assert_shape(stored["row_scales"], (20, 4))
  chex.assert_shape(stored["col_scales"], (3, 27))
  np.testing.assert_array_equal(stored["codes"], codes)
  np.testing.assert_array_equal(stored["row_scales"], row_scales)
  np.testing.assert_array_equal(stored["col_scales"], col_scales)
  out = util.decode(stored)
  np.testing.assert_allclose(out, decoded, rtol=2e-6, atol=0)
  # Element bound: min(row, col) scale / (2 qmax) for linear codes.
  util.assert_within(x, out, scale.astype(np.float64),
                ref.max_rounding_error(codebook, bits))
  np.testing.assert_array_equal(out[16:, 24:], 0.0)


def test_grid_3d_and_1d():
  for shape in [(2, 5, 9), (13,)]:
    x = util.normal(shape, seed=1)
    stored = util.encode(Grid(bits=4, tile=4), x)
    codes, row_scales, col_scales, scale, _ = ref.grid(x, 4, "linear", 4)
    np.testing.assert_array_equal(stored["codes"], codes)
    np.testing.assert_array_equal(stored["row_scales"], row_scales)
    np.testing.assert_array_equal(stored["col_scales"], col_scales)
    out = util.decode(stored)
    chex.assert_shape(out, shape)
    util.assert_within(x, out, scale.astype(np.float64), 1 / 14)


def test_grid_beats_block_128_on_row_and_column_outliers():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((256, 256)).astype(np.float32)
  x[rng.choice(256, 4, replace=False)] *= 50.0
  x[:, rng.choice(256, 4, replace=False)] *= 50.0
  grid = util.rel_err(x, util.roundtrip(Grid(bits=4, tile=128))(x))
  block = util.rel_err(x, util.roundtrip(Blockwise(bits=4,
                                                   block_size=128))(x))
  assert grid < 0.5 * block, (grid, block)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_grid_non_finite_stays_in_its_tile_and_stays_non_finite(bad):
  fmt = Grid(bits=4, tile=8)
  clean = util.normal((16, 16), seed=2)
  x = clean.copy()
  x[10, 3] = bad  # tile (1, 0)
  out = np.asarray(util.roundtrip(fmt)(x))
  expected = np.asarray(util.roundtrip(fmt)(clean))
  tile = np.zeros(x.shape, bool)
  tile[8:16, 0:8] = True
  np.testing.assert_array_equal(out[~tile], expected[~tile])
  assert not np.any(np.isfinite(out[tile]))


def test_grid_scale_dtype():
  fmt = Grid(bits=4, tile=8, scale_dtype=jnp.float16)
  stored = util.encode(fmt, util.normal((8, 8)))
  chex.assert_type(stored["row_scales"], jnp.float16)
  chex.assert_type(stored["col_scales"], jnp.float16)
