"""mu-law companding before the scale: MuonQ's public quantizer.

The reference is written from the public code's description: compand the
raw value, ``y = sign(x) ln(1 + 255 min(|x|, 1)) / ln(256)``; take the
absmax scale in the companded domain, ``s = max|y| / 7``; code
``q = clip(round(y / s), -8, 7)``; decode ``x = expand(q s)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon import formats

MU = 255.0


def numpy_muonq(x: np.ndarray, axis: int | None) -> tuple[np.ndarray,
                                                          np.ndarray]:
  """(codes + 8, decoded) of the public code's 4-bit quantizer."""
  x = x.astype(np.float64)
  y = np.sign(x) * np.log1p(MU * np.minimum(np.abs(x), 1)) / np.log(1 + MU)
  s = np.max(np.abs(y), axis=axis, keepdims=True) / 7
  q = np.clip(np.round(y / s), -8, 7)
  v = q * s
  return q + 8, np.sign(v) * ((1 + MU) ** np.abs(v) - 1) / MU


def normalized(shape, seed=0):
  x = np.random.default_rng(seed).standard_normal(shape)
  return (x / np.linalg.norm(x)).astype(np.float32)


@pytest.mark.parametrize("axis,np_axis", [("tensor", None), ("col", 0),
                                          ("row", 1)])
def test_before_scale_matches_the_public_code(axis, np_axis):
  x = normalized((48, 40))
  fmt = formats.Axiswise(bits=4, codebook="mulaw", axis=axis,
                         companding="before_scale")
  stored = fmt.encode(jnp.asarray(x))
  codes, expected = numpy_muonq(x, np_axis)
  unpacked = formats.packing.unpack(stored["codes"], 4, x.shape[-1])
  np.testing.assert_array_equal(np.asarray(unpacked), codes)
  np.testing.assert_allclose(np.asarray(stored.decode()), expected,
                             rtol=2e-5, atol=1e-9)


def test_before_scale_saturates_values_beyond_one():
  x = np.asarray([[2.0, 0.5, -3.0, 0.0]], np.float32)
  fmt = formats.Axiswise(bits=4, codebook="mulaw", companding="before_scale")
  np.testing.assert_allclose(
      np.asarray(fmt.decode(fmt.encode(jnp.asarray(x)))),
      numpy_muonq(np.clip(x, -1, 1), None)[1], rtol=2e-5)
  assert float(fmt.decode(fmt.encode(jnp.asarray(x)))[0, 0]) == \
      pytest.approx(1.0, rel=1e-5)


def test_the_two_orders_are_different_quantizers():
  x = jnp.asarray(normalized((64, 64), seed=1))
  before = formats.Axiswise(bits=4, codebook="mulaw",
                            companding="before_scale")
  after = formats.Axiswise(bits=4, codebook="mulaw")
  a = np.asarray(before.decode(before.encode(x)))
  b = np.asarray(after.decode(after.encode(x)))
  assert np.abs(a - b).max() > 1e-4


def test_before_scale_needs_mulaw():
  with pytest.raises(ValueError, match="Blockwise.*companding='before_scale'"
                     ".*codebook='mulaw'"):
    formats.Blockwise(bits=4, codebook="linear", companding="before_scale")
  with pytest.raises(ValueError, match="companding"):
    formats.Axiswise(bits=4, codebook="mulaw", companding="first")


@pytest.mark.parametrize("fmt", [
    formats.Blockwise(bits=4, codebook="mulaw", block_size=32,
                      companding="before_scale"),
    formats.Axiswise(bits=4, codebook="mulaw", axis="col",
                     companding="before_scale", scale_dtype=jnp.float16)],
    ids=["blockwise", "axiswise_f16"])
def test_before_scale_scale_is_the_companded_absmax(fmt):
  # The scale is taken from the raw absmax (compand of the clipped max);
  # it must equal the absmax of the companded values, computed here
  # directly, bit for bit, on values from 1e-4 to beyond one.
  rng = np.random.default_rng(3)
  x = (rng.standard_normal((40, 96)) * 10.0 ** rng.uniform(-4, 0.5, (40, 1))
       ).astype(np.float32)
  stored = fmt.encode(jnp.asarray(x))
  tr, tc = fmt.tile_shape(40, 96)
  companded = formats.codebooks.MuLaw(4, MU).compand(jnp.asarray(x))
  tiles = formats.layout.to_tiles(companded, tr, tc)
  expected = formats.layout.round_scale(
      jnp.max(jnp.abs(tiles), axis=(1, 3)), fmt.scale_dtype)
  np.testing.assert_array_equal(np.asarray(stored["scales"]),
                                np.asarray(expected))


@pytest.mark.parametrize("fmt,copies", [
    (formats.Blockwise(bits=4, codebook="mulaw", block_size=128,
                       companding="before_scale"), 1.0),
    (formats.Axiswise(bits=4, codebook="mulaw", axis="tensor",
                      companding="before_scale"), 0.01)],
    ids=["blockwise", "tensor"])
def test_before_scale_encode_keeps_no_companded_copy(fmt, copies):
  # Companding the whole matrix before its reduction kept one more float32
  # copy of it alive: 2.0 and 1.0 copies of a (256, 256) leaf.
  x = jax.ShapeDtypeStruct((256, 256), jnp.float32)
  compiled = jax.jit(lambda x: fmt.encode(x)).lower(x).compile()
  temporaries = compiled.memory_analysis().temp_size_in_bytes
  assert temporaries <= copies * 256 * 256 * 4
