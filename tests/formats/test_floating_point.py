"""FloatingPoint: simulated E-bit exponent, M-bit mantissa floats."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from quantmuon.formats import FloatingPoint, Stored

from . import util

# (E, M) and the numpy dtype that rounds the same way, IEEE style.
REFERENCES = {
    (5, 10): np.float16,
    (8, 7): ml_dtypes.bfloat16,
    (5, 2): ml_dtypes.float8_e5m2,
    (4, 3): ml_dtypes.float8_e4m3,
    (3, 4): ml_dtypes.float8_e3m4,
}


def all_codes(fmt: FloatingPoint) -> np.ndarray:
  """Every bit pattern of the format that is not NaN."""
  e, m = fmt.exponent_bits, fmt.mantissa_bits
  codes = np.arange(2 ** (1 + e + m), dtype=np.uint32)
  exponent = (codes >> m) & (2 ** e - 1)
  return codes[exponent != 2 ** e - 1].astype(fmt.code_dtype)


def min_normal(fmt: FloatingPoint) -> float:
  return 2.0 ** (1 - fmt.bias)


def log_uniform(lo: float, hi: float, n: int, seed: int = 0) -> np.ndarray:
  """float32 values with log-uniform magnitudes in [lo, hi], random signs."""
  rng = np.random.default_rng(seed)
  mag = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
  return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float32)


def decode_codes(fmt: FloatingPoint, codes: np.ndarray) -> np.ndarray:
  """Decodes raw bit patterns."""
  return np.asarray(jax.jit(fmt.decode)(
      Stored({"codes": jnp.asarray(codes)}, fmt, codes.shape, jnp.float32)))


@pytest.mark.parametrize("e,m", [(4, 3), (5, 2), (2, 1), (3, 4), (5, 10),
                                 (8, 7), (1, 2)])
def test_exact_on_representable_values(e, m):
  fmt = FloatingPoint(e, m)
  codes = all_codes(fmt)
  values = decode_codes(fmt, codes)
  if e == 8:
    # The CPU flushes float32 subnormals (bf16's subnormals) to zero.
    keep = np.abs(values) >= min_normal(fmt)
    keep |= (codes & ((1 << (e + m)) - 1)) == 0  # +0 and -0
    codes, values = codes[keep], values[keep]
  assert np.all(np.isfinite(values))
  assert len(np.unique(values)) == len(values) - 1  # only +0 == -0
  stored = util.encode(fmt, values)
  np.testing.assert_array_equal(stored["codes"], codes)
  np.testing.assert_array_equal(util.decode(stored), values)


@pytest.mark.parametrize("e,m", [(4, 3), (5, 2), (3, 4), (5, 10), (8, 7),
                                 (6, 5)])
def test_relative_error_in_normal_range(e, m):
  fmt = FloatingPoint(e, m)
  hi = float(fmt.max_finite())
  x = log_uniform(min_normal(fmt), hi, 4000, seed=e + m)
  out = np.asarray(util.roundtrip(fmt)(x), np.float64)
  rel = np.abs(out - x) / np.abs(x)
  assert rel.max() <= 2.0 ** -(m + 1), rel.max()
  assert rel.max() > 2.0 ** -(m + 1) * 0.8  # and nearly reached


def ties_and_neighbours(dtype, lo: float, hi: float) -> np.ndarray:
  """Representable values of ``dtype`` in [lo, hi], midpoints between them,
  and points a quarter of the way between."""
  values = np.arange(2 ** (8 * np.dtype(dtype).itemsize), dtype=np.uint32)
  values = values.astype(
      np.uint16 if np.dtype(dtype).itemsize == 2 else np.uint8).view(dtype)
  with np.errstate(invalid="ignore"):
    values = values.astype(np.float64)
  values = np.unique(values[np.isfinite(values) & (values >= lo)
                            & (values <= hi)])
  step = np.diff(values)
  out = [values, values[:-1] + step / 2, values[:-1] + step / 4,
         values[:-1] + 3 * step / 4]
  return np.concatenate(out).astype(np.float32)


@pytest.mark.parametrize("e,m", sorted(REFERENCES))
def test_nearest_equals_numpy_dtype(e, m):
  dtype = REFERENCES[(e, m)]
  fmt = FloatingPoint(e, m)
  hi = float(ml_dtypes.finfo(dtype).max)
  if e == 8:  # keep off the CPU's flushed subnormals; sample, 2**16 is many
    x = log_uniform(min_normal(fmt), hi, 20000, seed=1)
    x = np.concatenate([x, ties_and_neighbours(dtype, 1.0, 4.0)])
  else:  # every value of the format, ties included, subnormals included
    x = ties_and_neighbours(dtype, 0.0, hi)
    x = np.concatenate([x, -x])
    assert (np.abs(x) < min_normal(fmt)).sum() > 4  # subnormals are in
  stored = util.encode(fmt, x)
  expected = x.astype(dtype)
  np.testing.assert_array_equal(util.decode(stored),
                                expected.astype(np.float32))
  # The codes are the real bit patterns of the dtype.
  np.testing.assert_array_equal(
      stored["codes"], expected.view(np.dtype(fmt.code_dtype)))


@pytest.mark.parametrize("e,m,expected", [
    (5, 10, 65504.0), (5, 2, 57344.0), (4, 3, 240.0), (3, 4, 15.5),
    (8, 7, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)), (2, 1, 3.0),
    (1, 2, 1.5)])
def test_saturates_at_max_finite(e, m, expected):
  fmt = FloatingPoint(e, m)
  assert float(fmt.max_finite()) == expected
  over = min(expected * 4.0, float(np.finfo(np.float32).max))
  x = np.array([over, -over, expected, -expected,
                expected * (1 + 2.0 ** -(m + 2))], np.float32)
  out = np.asarray(util.roundtrip(fmt)(x))
  np.testing.assert_array_equal(np.abs(out), expected)
  np.testing.assert_array_equal(np.sign(out), np.sign(x))


@pytest.mark.parametrize("e,m", [(5, 10), (4, 3), (1, 2), (8, 7), (2, 0)])
def test_infinities_stay_infinite(e, m):
  """Were saturated to the largest finite value: a finite stored value
  from an inf. With no mantissa bit a NaN decodes as an inf."""
  fmt = FloatingPoint(e, m)
  x = np.float32([np.inf, -np.inf, np.nan, 1.0])
  out = np.asarray(util.roundtrip(fmt)(x))
  np.testing.assert_array_equal(out[:2], x[:2])
  assert not np.isfinite(out[2]) and (m == 0 or np.isnan(out[2]))
  np.testing.assert_array_equal(np.asarray(fmt.round(x))[:2], x[:2])


def test_round_gives_representable_values():
  # round() and decode(encode()) agree, also for the degenerate E = 1.
  x = log_uniform(1e-3, 1e3, 500, seed=3)
  for e, m in [(1, 2), (2, 1), (4, 3)]:
    fmt = FloatingPoint(e, m)
    np.testing.assert_array_equal(util.roundtrip(fmt)(x), fmt.round(x))


def test_nan_and_signed_zero():
  fmt = FloatingPoint(4, 3)
  out = np.asarray(util.roundtrip(fmt)(
      np.array([np.nan, -0.0, 0.0, 1e-9, -1e-9], np.float32)))
  assert np.isnan(out[0])
  np.testing.assert_array_equal(out[1:], 0.0)
  np.testing.assert_array_equal(np.signbit(out[1:]), [1, 0, 0, 1])


@pytest.mark.parametrize("e,m", [(4, 3), (5, 10)])
def test_stochastic_rounding_is_unbiased(e, m):
  n_keys = 2000
  fmt = FloatingPoint(e, m, rounding="stochastic")
  x = log_uniform(0.01, 100.0, 64, seed=4)
  keys = jax.random.split(jax.random.key(0), n_keys)
  draws = jax.jit(jax.vmap(lambda k: fmt.decode(fmt.encode(x, key=k))))(keys)
  draws = np.asarray(draws, np.float64)
  exponent = np.maximum(np.floor(np.log2(np.abs(x))), 1 - fmt.bias)
  ulp = 2.0 ** (exponent - m)  # the spacing around x, subnormals included
  # Each draw is one of the two neighbours, so std <= ulp / 2.
  assert np.all(np.abs(draws - x) < ulp * (1 + 1e-6))
  limit = 6 * ulp / 2 / np.sqrt(n_keys)
  mean_err = np.abs(draws.mean(axis=0) - x)
  assert np.all(mean_err <= limit), np.max(mean_err / limit)
  assert np.mean(draws.std(axis=0) > 0) > 0.5


@pytest.mark.parametrize("m", [0, 8, 16, 20, 22, 23])
def test_stochastic_rounding_is_unbiased_up_to_float32s_width(m):
  # floor(v + U) in float32 rounds the sum first: at m = 23 an on-grid
  # value moved half the time and the mean error was +0.5 ulp.
  fmt = FloatingPoint(8, 23, rounding="stochastic")
  x = jnp.asarray(log_uniform(0.01, 100.0, 4096, seed=5), jnp.float32)
  _, e = jnp.frexp(x)  # |x| in [2**(e-1), 2**e)
  ulp = jnp.ldexp(1.0, e - 1 - m)

  @jax.jit
  def errors(x, keys):  # mean signed error in ulps, and moves, per key
    def one(key):
      d = fmt.round(x, key=key, mantissa_bits=m) - x  # exact in float32
      return jnp.mean(d / ulp), jnp.sum(d != 0)
    return jax.lax.map(one, keys)

  keys = jax.random.split(jax.random.key(m), 1024)
  grid = FloatingPoint(8, 23).round(x, mantissa_bits=m)  # on the grid
  _, moved = errors(grid, keys[:64])
  assert int(np.sum(moved)) == 0
  mean_err, _ = errors(x, keys)  # 4M draws: the mean's std is 2e-4 ulp
  assert abs(float(np.mean(mean_err))) < 1e-3


@pytest.mark.parametrize("e,m,dtype", [
    (4, 3, jnp.uint8), (5, 2, jnp.uint8), (2, 5, jnp.uint8),
    (5, 10, jnp.uint16), (8, 7, jnp.uint16), (8, 10, jnp.uint32)])
def test_codes_dtype(e, m, dtype):
  fmt = FloatingPoint(e, m)
  assert fmt.code_dtype == dtype
  stored = jax.eval_shape(fmt.encode, jax.ShapeDtypeStruct((3, 5),
                                                           jnp.float32))
  chex.assert_type(stored["codes"], dtype)
  chex.assert_shape(stored["codes"], (3, 5))


def test_traced_mantissa_schedule():
  fmt = FloatingPoint(8, 7)
  x = log_uniform(1e-3, 1e3, 256, seed=5)
  encode = jax.jit(lambda x, m: fmt.encode(x, mantissa_bits=m))
  for m in (2, 5):
    out = util.decode(encode(x, m))
    np.testing.assert_array_equal(out, FloatingPoint(8, m).round(x))


def test_stochastic_needs_key():
  with pytest.raises(ValueError, match="key"):
    FloatingPoint(4, 3, rounding="stochastic").encode(np.ones(3, np.float32))


@pytest.mark.parametrize("kwargs,name", [
    ({"exponent_bits": 0}, "exponent_bits"),
    ({"exponent_bits": 9}, "exponent_bits"),
    ({"mantissa_bits": -1}, "mantissa_bits"),
    ({"mantissa_bits": 24}, "mantissa_bits"),
    ({"rounding": "up"}, "rounding")])
def test_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    FloatingPoint(**kwargs)
