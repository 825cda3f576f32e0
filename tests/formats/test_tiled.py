"""Blockwise and Axiswise: codes against numpy, error bounds, rounding."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon.formats import Axiswise, Blockwise

from . import reference as ref
from . import util

CODEBOOKS = ("linear", "dynamic", "mulaw")

# (shape, block_size): long rows with a ragged last block; short rows grouped
# two to a block with a ragged last group; 1-D; 3-D with grouped rows.
LAYOUTS = [((5, 40), 16), ((11, 6), 16), ((37,), 16), ((2, 3, 7), 16)]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("codebook", CODEBOOKS)
@pytest.mark.parametrize("shape,block_size", LAYOUTS)
def test_blockwise_matches_numpy(shape, block_size, codebook, bits):
  fmt = Blockwise(bits=bits, codebook=codebook, block_size=block_size)
  x = util.student_t(shape, seed=len(shape))
  x.flat[3] = 0.0
  stored = util.encode(fmt, x)
  tr, tc = ref.blockwise_tile(*ref.matrix(x).shape, block_size)
  codes, scales, decoded = ref.absmax_tiled(x, tr, tc, codebook, bits)
  chex.assert_type(stored["codes"], jnp.uint8)
  chex.assert_shape(stored["codes"], codes.shape)
  chex.assert_shape(stored["scales"], scales.shape)
  np.testing.assert_array_equal(stored["codes"], codes)
  np.testing.assert_array_equal(stored["scales"], scales)
  out = util.decode(stored)
  chex.assert_shape(out, shape)
  np.testing.assert_allclose(ref.matrix(out), decoded, rtol=2e-6, atol=0)


def test_blockwise_layout_is_documented_one():
  # A row of n >= block_size is cut into blocks; shorter rows are grouped.
  stored = util.encode(Blockwise(bits=4, block_size=16), util.normal((5, 40)))
  chex.assert_shape(stored["codes"], (5, 20))
  chex.assert_shape(stored["scales"], (5, 3))
  stored = util.encode(Blockwise(bits=4, block_size=16), util.normal((11, 6)))
  chex.assert_shape(stored["codes"], (11, 3))
  chex.assert_shape(stored["scales"], (6, 1))


@pytest.mark.parametrize("axis", ["tensor", "row", "col"])
@pytest.mark.parametrize("codebook", CODEBOOKS)
def test_axiswise_matches_numpy(axis, codebook):
  fmt = Axiswise(bits=4, codebook=codebook, axis=axis)
  x = util.student_t((6, 11), seed=1)
  stored = util.encode(fmt, x)
  tr, tc = ref.axiswise_tile(6, 11, axis)
  codes, scales, decoded = ref.absmax_tiled(x, tr, tc, codebook, 4)
  np.testing.assert_array_equal(stored["codes"], codes)
  np.testing.assert_array_equal(stored["scales"], scales)
  out = util.decode(stored)
  np.testing.assert_allclose(out, decoded, rtol=2e-6, atol=0)
  util.assert_within(x, out, util.element_absmax(x, tr, tc),
                ref.max_rounding_error(codebook, 4))


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("codebook", CODEBOOKS)
def test_blockwise_error_bound(codebook, bits):
  fmt = Blockwise(bits=bits, codebook=codebook, block_size=32)
  x = util.student_t((12, 96), seed=bits)
  x[3, 32:64] *= 1e-3  # a block of small values next to large ones
  out = util.roundtrip(fmt)(x)
  bound = ref.max_rounding_error(codebook, bits)
  util.assert_within(x, out, util.element_absmax(x, 1, 32), bound)
  if codebook == "linear":
    assert bound == 1 / (2 * ref.qmax(bits))  # absmax / 254 at 8 bits


def test_blockwise_8bit_block_2048_bound():
  x = util.normal((3, 4096), seed=2)
  out = util.roundtrip(Blockwise(bits=8, block_size=2048))(x)
  util.assert_within(x, out, util.element_absmax(x, 1, 2048), 1 / 254)


def test_dynamic_bound_is_tight_at_negative_absmax():
  # The signed dynamic map has +1 and not -1, so at 4 bits a block whose
  # absmax element is negative loses (1 - 0.8875) * absmax on it.
  x = np.array([-2.0, 0.5, 0.25, 1.0], np.float32)
  out = np.asarray(util.roundtrip(Blockwise(bits=4, codebook="dynamic",
                                            block_size=4))(x))
  np.testing.assert_allclose(out[0], -2.0 * 0.8875, rtol=1e-6)
  assert ref.max_rounding_error("dynamic", 4) == pytest.approx(0.1125)


def test_mulaw_beats_linear_on_heavy_tails():
  # MuonQ's experiment: 4-bit, one scale per tensor.
  x = util.student_t((64, 256), df=3.0, seed=0)
  lin = util.rel_err(x, util.roundtrip(Axiswise(bits=4))(x))
  mu = util.rel_err(x, util.roundtrip(Axiswise(bits=4, codebook="mulaw"))(x))
  assert mu < 0.6 * lin, (mu, lin)
  x = util.student_t((64, 256), df=2.0, seed=1)
  lin = util.rel_err(x, util.roundtrip(Blockwise(bits=4, block_size=128))(x))
  mu = util.rel_err(x, util.roundtrip(
      Blockwise(bits=4, codebook="mulaw", block_size=128))(x))
  assert mu < 0.8 * lin, (mu, lin)


@pytest.mark.parametrize("codebook,bits", [
    ("linear", 4), ("linear", 2), ("dynamic", 4), ("dynamic", 8),
    ("mulaw", 4)])
def test_blockwise_stochastic_rounding_is_unbiased(codebook, bits):
  n_keys = 2000
  fmt = Blockwise(bits=bits, codebook=codebook, block_size=64,
                  rounding="stochastic")
  rng = np.random.default_rng(0)
  # absmax 1 and positive, so every value lies between two levels (the
  # signed dynamic map stops at about -0.8875 at 4 bits).
  lowest = float(ref.table(codebook, bits)[0])
  x = rng.uniform(max(lowest, -1.0), 1.0, 64).astype(np.float32)
  x[:8] *= 0.01
  x[-1] = 1.0
  keys = jax.random.split(jax.random.key(0), n_keys)
  decoded = jax.jit(jax.vmap(
      lambda k: fmt.decode(fmt.encode(x, key=k))))(keys)
  decoded = np.asarray(decoded, np.float64)
  levels = ref.table(codebook, bits)
  # Every draw is one of the two levels around x.
  upper = np.clip(np.searchsorted(levels, x, side="left"), 1, None)
  gap = levels[upper] - levels[upper - 1]
  # Mean of n Bernoulli draws between levels gap apart: std <= gap / 2 /
  # sqrt(n). Rounding to nearest is off by up to gap / 2 and fails this.
  mean = decoded.mean(axis=0)
  limit = 6 * gap / 2 / np.sqrt(n_keys) + 1e-6
  assert np.all(np.abs(mean - x) <= limit), np.max(np.abs(mean - x) / limit)
  # The rounding is random: some values take both neighbours.
  assert np.mean(decoded.std(axis=0) > 0) > 0.5


def test_zero_blocks_decode_to_exact_zeros():
  x = util.normal((4, 64), seed=3)
  x[1, 16:32] = 0.0  # one all-zero block
  x[2, 5] = 0.0
  for fmt in (Blockwise(bits=4, block_size=16),
              Blockwise(bits=8, codebook="dynamic", block_size=16),
              Blockwise(bits=2, codebook="mulaw", block_size=16),
              Axiswise(bits=4, axis="row")):
    out = np.asarray(util.roundtrip(fmt)(x))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[1, 16:32], 0.0)
    assert out[2, 5] == 0.0
    np.testing.assert_array_equal(
        util.roundtrip(fmt)(np.zeros((4, 64), np.float32)), 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_value_stays_in_its_block(bad):
  fmt = Blockwise(bits=4, block_size=16)
  clean = util.normal((4, 64), seed=4)
  x = clean.copy()
  x[1, 20] = bad  # block (1, 1)
  out = np.asarray(util.roundtrip(fmt)(x))
  expected = np.asarray(util.roundtrip(fmt)(clean))
  outside = np.ones(x.shape, bool)
  outside[1, 16:32] = False
  np.testing.assert_array_equal(out[outside], expected[outside])
  # Grouped short rows: (8, 6) with block 12 puts rows 2 and 3 together.
  fmt = Blockwise(bits=8, block_size=12)
  clean = util.normal((8, 6), seed=5)
  x = clean.copy()
  x[3, 1] = bad
  out = np.asarray(util.roundtrip(fmt)(x))
  expected = np.asarray(util.roundtrip(fmt)(clean))
  np.testing.assert_array_equal(np.delete(out, [2, 3], axis=0),
                                np.delete(expected, [2, 3], axis=0))


def test_scale_dtype():
  fmt = Blockwise(bits=4, block_size=16, scale_dtype=jnp.bfloat16)
  x = util.normal((4, 32), seed=6)
  stored = util.encode(fmt, x)
  chex.assert_type(stored["scales"], jnp.bfloat16)
  out = util.decode(stored)
  # A bf16 scale rounds the absmax up, by less than 2 ** -7 of it.
  util.assert_within(x, out, util.element_absmax(x, 1, 16), 1 / 14 + 2 ** -8)
