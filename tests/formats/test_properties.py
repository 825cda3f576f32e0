"""Property tests over shapes and input dtypes: bounds hold, shapes survive.

Each example of a new shape compiles, so every property jits one function
that encodes with several formats at once, and runs few examples.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quantmuon.formats import (
    Axiswise,
    Blockwise,
    Float,
    FloatingPoint,
    Format,
    Grid,
    Subspace,
)

from . import reference as ref
from . import util

SPECIAL_SHAPES = [(), (1,), (13,), (1, 9), (9, 1), (7, 13), (13, 7),
                  (2, 3, 5), (3, 1, 4), (1, 1, 1)]
shapes = st.one_of(
    st.sampled_from(SPECIAL_SHAPES),
    st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple))
dtypes = st.sampled_from([np.float32, ml_dtypes.bfloat16])


@st.composite
def arrays(draw, shape=shapes):
  """Heavy-tailed data of a drawn shape, dtype and magnitude, with zeros."""
  shape = draw(shape)
  dtype = draw(dtypes)
  seed = draw(st.integers(0, 2 ** 16))
  magnitude = 10.0 ** draw(st.integers(-4, 4))
  rng = np.random.default_rng(seed)
  x = rng.standard_t(3.0, shape) * magnitude
  x = np.where(rng.random(shape) < 0.1, 0.0, x)
  return np.asarray(x).astype(dtype)


@functools.cache
def multi(formats: tuple[Format, ...]):
  """One jitted function: stored values and decodes for every format."""
  def run(x):
    stored = tuple(fmt.encode(x) for fmt in formats)
    return stored, tuple(s.decode() for s in stored)
  return jax.jit(run)


def check_common(x: np.ndarray, stored, decoded) -> None:
  for s, d in zip(stored, decoded, strict=True):
    assert s.shape == x.shape and s.dtype == jnp.dtype(x.dtype)
    assert d.shape == x.shape and d.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(d)))


BLOCKWISE = (Blockwise(bits=8, block_size=8),
             Blockwise(bits=4, codebook="dynamic", block_size=8),
             Blockwise(bits=2, codebook="mulaw", block_size=8),
             Blockwise(bits=4, codebook="linear", block_size=16))


@settings(max_examples=15)
@given(arrays())
def test_blockwise_properties(x):
  stored, decoded = multi(BLOCKWISE)(x)
  check_common(x, stored, decoded)
  xf = x.astype(np.float32)
  m, n = ref.matrix(x).shape
  for fmt, s, d in zip(BLOCKWISE, stored, decoded, strict=True):
    tr, tc = ref.blockwise_tile(m, n, fmt.block_size)
    codes, scales, _ = ref.absmax_tiled(xf, tr, tc, fmt.codebook, fmt.bits)
    assert s["codes"].shape == codes.shape
    np.testing.assert_array_equal(s["scales"], scales)
    util.assert_within(xf, d, util.element_absmax(xf, tr, tc),
                       ref.max_rounding_error(fmt.codebook, fmt.bits))


AXISWISE = (Axiswise(bits=4, axis="tensor"),
            Axiswise(bits=4, codebook="mulaw", axis="row"),
            Axiswise(bits=8, codebook="dynamic", axis="col"))


@settings(max_examples=15)
@given(arrays())
def test_axiswise_properties(x):
  stored, decoded = multi(AXISWISE)(x)
  check_common(x, stored, decoded)
  xf = x.astype(np.float32)
  m, n = ref.matrix(x).shape
  for fmt, d in zip(AXISWISE, decoded, strict=True):
    tr, tc = ref.axiswise_tile(m, n, fmt.axis)
    util.assert_within(xf, d, util.element_absmax(xf, tr, tc),
                       ref.max_rounding_error(fmt.codebook, fmt.bits))


GRID = (Grid(bits=4, tile=4), Grid(bits=8, tile=8, codebook="dynamic"))


@settings(max_examples=15)
@given(arrays())
def test_grid_properties(x):
  stored, decoded = multi(GRID)(x)
  check_common(x, stored, decoded)
  xf = x.astype(np.float32)
  for fmt, s, d in zip(GRID, stored, decoded, strict=True):
    codes, rows, cols, scale, _ = ref.grid(xf, fmt.tile, fmt.codebook,
                                           fmt.bits)
    np.testing.assert_array_equal(s["codes"], codes)
    np.testing.assert_array_equal(s["row_scales"], rows)
    np.testing.assert_array_equal(s["col_scales"], cols)
    util.assert_within(xf, d, scale.astype(np.float64),
                       ref.max_rounding_error(fmt.codebook, fmt.bits))


FLOATS = (Float(), Float(jnp.bfloat16), FloatingPoint(4, 3),
          FloatingPoint(5, 10))


@settings(max_examples=15)
@given(arrays())
def test_float_properties(x):
  stored, decoded = multi(FLOATS)(x)
  check_common(x, stored, decoded)
  xf = x.astype(np.float32).astype(np.float64)
  f32, bf16, e4m3, f16 = (np.asarray(d, np.float64) for d in decoded)
  np.testing.assert_array_equal(f32, xf)
  np.testing.assert_array_equal(bf16, x.astype(ml_dtypes.bfloat16))
  np.testing.assert_array_equal(
      e4m3, np.clip(x.astype(np.float32), -240, 240).astype(
          ml_dtypes.float8_e4m3))
  np.testing.assert_array_equal(
      f16, np.clip(x.astype(np.float32), -65504, 65504).astype(np.float16))
  for fmt, d in ((FLOATS[2], e4m3), (FLOATS[3], f16)):
    # Relative error 2**-(M+1) in the normal range, half a subnormal step
    # below it, and saturation above it.
    m = fmt.mantissa_bits
    tiny = 2.0 ** (1 - fmt.bias)
    top = float(fmt.max_finite())
    inside = np.abs(xf) <= top
    limit = np.maximum(np.abs(xf) * 2.0 ** -(m + 1), tiny * 2.0 ** -(m + 1))
    assert np.all(np.abs(d - xf)[inside] <= limit[inside])
    np.testing.assert_array_equal(np.abs(d[~inside]), top)


SUBSPACE = (Subspace(rank=1, factors=Float(),
                     residual=Blockwise(bits=8, block_size=8)),)


@settings(max_examples=10)
@given(arrays(shape=st.one_of(
    st.sampled_from(SPECIAL_SHAPES),
    st.lists(st.integers(1, 9), min_size=2, max_size=2).map(tuple))))
def test_subspace_properties(x):
  stored, decoded = multi(SUBSPACE)(x)
  check_common(x, stored, decoded)
  (s,), (d,) = stored, decoded
  m, n = ref.matrix(x).shape
  assert s["P"].shape == (m, 1) and s["R"].shape == (n, 1)
  # Factors are exact (Float): the error is the residual's, bounded by the
  # residual's own block scales.
  xf = x.astype(np.float32)
  residual = s["residual"]
  tr, tc = ref.blockwise_tile(m, n, 8)
  scale = np.repeat(np.repeat(np.asarray(residual["scales"], np.float64),
                              tr, 0), tc, 1)[:m, :n]
  err = np.abs(ref.matrix(xf).astype(np.float64) - ref.matrix(np.asarray(d)))
  slack = 1e-5 * np.abs(xf).max()  # float32 products P R^T
  assert np.all(err <= scale / 254 * (1 + 1e-5) + slack)
