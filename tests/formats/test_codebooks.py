"""Codebooks: the dynamic map, linear and mu-law levels, nearest coding."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon.formats import codebooks, dynamic_codebook

from . import reference as ref


@functools.partial(jax.jit, static_argnums=1)
def encode(y, book: codebooks.Codebook, noise=None):
  return book.encode(y, noise)


@functools.partial(jax.jit, static_argnums=1)
def decode(codes, book: codebooks.Codebook):
  return book.decode(codes)


def test_dynamic_8bit_equals_bitsandbytes():
  expected = ref.bnb_dynamic_map(signed=True, max_exponent_bits=7,
                                 total_bits=8)
  got = dynamic_codebook(8, signed=True)
  assert got.shape == (256,)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
  assert got[-1] == 1.0 and 0.0 in got
  assert np.all(np.diff(got) > 0)
  # The signed map has +1 but no -1: its most negative level is -0.99296875.
  np.testing.assert_allclose(got[0], -(1 - 0.9 / 128), rtol=1e-6)


def test_dynamic_4bit_has_16_values():
  got = dynamic_codebook(4, signed=True)
  assert got.shape == (16,)
  assert len(np.unique(got)) == 16
  np.testing.assert_allclose(
      got, ref.bnb_dynamic_map(True, max_exponent_bits=3, total_bits=4),
      rtol=1e-6, atol=0)


def test_dynamic_unsigned_equals_bitsandbytes():
  got = dynamic_codebook(8, signed=False)
  np.testing.assert_allclose(got, ref.bnb_dynamic_map(False, 7, 8),
                             rtol=1e-6, atol=0)
  assert np.all(got >= 0)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_levels(bits):
  q = ref.qmax(bits)
  lin = codebooks.Linear(bits).levels()
  assert lin.shape == (2 ** bits,)
  np.testing.assert_allclose(lin[1:], np.arange(-q, q + 1) / q, rtol=1e-7)
  assert lin[0] == -1.0  # the unused most negative code
  assert lin[2 ** (bits - 1)] == 0.0
  mu = codebooks.MuLaw(bits).levels()  # the expanded linear levels
  np.testing.assert_allclose(mu, ref.mulaw_expand(lin), rtol=2e-6, atol=0)
  assert mu[2 ** (bits - 1)] == 0.0
  unsigned = codebooks.UnsignedLinear(bits).levels()
  assert unsigned.min() > 0 and unsigned.max() == 1.0
  assert codebooks.UnsignedDynamic(bits).levels().min() > 0


@pytest.mark.parametrize("name", codebooks.CODEBOOKS)
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_levels_are_what_the_codes_decode_to(name, bits):
  book = codebooks.of(name, bits)
  codes = jnp.arange(2 ** bits, dtype=jnp.uint8)
  np.testing.assert_array_equal(np.asarray(decode(codes, book)),
                                book.levels())
  assert np.all(np.diff(book.levels()) >= 0)


def test_names_construct_the_classes():
  assert codebooks.of("midrise", 2) == codebooks.MidRise(2)
  assert codebooks.of("mulaw", 4, 50) == codebooks.MuLaw(4, 50.0)
  with pytest.raises(ValueError, match="codebook must be one of"):
    codebooks.of("nf4", 4)
  with pytest.raises(ValueError, match="bits must be one of"):
    codebooks.Linear(3)


def test_compand_expand_inverse():
  y = np.linspace(-1, 1, 101, dtype=np.float32)
  book = codebooks.MuLaw(4, 255.0)
  c = np.asarray(book.compand(y))
  np.testing.assert_allclose(c, ref.mulaw_compand(y), atol=1e-6)
  np.testing.assert_allclose(book.expand(c), y, atol=2e-6)
  assert np.all(np.diff(c) > 0)


@pytest.mark.parametrize("codebook", ["linear", "dynamic", "mulaw"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_nearest_codes_match_numpy(codebook, bits):
  rng = np.random.default_rng(bits)
  y = np.concatenate([
      rng.uniform(-1, 1, 2000), rng.uniform(-0.01, 0.01, 500),
      [-1.0, 1.0, 0.0, -1.5, 1.5]]).astype(np.float32)
  book = codebooks.of(codebook, bits)
  got = np.asarray(encode(y, book))
  np.testing.assert_array_equal(got, ref.codes(y, codebook, bits))
  assert got.dtype == np.int32 and got.max() < 2 ** bits
  decoded = np.asarray(decode(got, book))
  np.testing.assert_allclose(decoded, ref.table(codebook, bits)[got],
                             rtol=1e-5, atol=1e-7)


def test_nan_codes_as_zero():
  for codebook in ("linear", "dynamic", "mulaw"):
    book = codebooks.of(codebook, 4)
    c = encode(np.array([np.nan], np.float32), book)
    chex.assert_trees_all_equal(decode(c, book), np.zeros(1, np.float32))


@pytest.mark.parametrize("bits", [3, 0, 16, True])
def test_bad_bits(bits):
  with pytest.raises(ValueError, match="bits"):
    codebooks.check_bits(bits)


def test_stochastic_codes_pick_a_neighbouring_level():
  y = np.random.default_rng(0).uniform(-0.99, 0.99, 300).astype(np.float32)
  noise = jax.random.uniform(jax.random.key(1), y.shape)
  for codebook in ("linear", "dynamic", "mulaw"):
    levels = ref.table(codebook, 4)
    got = levels[np.asarray(encode(y, codebooks.of(codebook, 4), noise))]
    upper = np.searchsorted(levels, y, side="left")
    below, above = levels[np.maximum(upper - 1, 0)], levels[upper]
    ok = np.isclose(got, below, atol=1e-6) | np.isclose(got, above,
                                                        atol=1e-6)
    assert ok.all(), (codebook, y[~ok], got[~ok])


def _wide_bucket_table(narrow, group: int):
  """``_bucket_table`` with buckets ``group`` times as wide."""

  def table(entries: bytes):
    mids, below, _ = narrow(entries)
    coarse = below.reshape(-1, group).min(axis=1).repeat(group)
    above = np.append(below[1:], mids.size)
    inside = below < mids.size  # NaN buckets count all midpoints
    return mids, coarse, int(np.max((above - coarse)[inside]))

  return table


@pytest.mark.parametrize("bits,group,width", [(8, 16, 5), (4, 64, 2)])
def test_nearest_level_with_wide_buckets(monkeypatch, bits, group, width):
  """Every shipped table has width 1; buckets holding several midpoints
  skipped some (y = 0.9008 took code 251 where 252 is nearest)."""
  wide = _wide_bucket_table(codebooks._bucket_table, group)
  monkeypatch.setattr(codebooks, "_bucket_table", wide)
  book = codebooks.Dynamic(bits)
  assert wide(book.tables(False)["mids"].tobytes())[2] == width
  rng = np.random.default_rng(0)
  y = np.concatenate([rng.uniform(-1, 1, 4000), [0.9008, -1.0, 0.0, 1.0]])
  y = y.astype(np.float32)
  got = np.asarray(book.encode(jnp.asarray(y)))
  np.testing.assert_array_equal(got, ref.codes(y, "dynamic", bits))


@pytest.mark.parametrize("bits", [4, 8])
def test_stochastic_linear_codes_keep_a_value_on_a_level(bits):
  # floor(v + noise) rounded the sum to float32 first, so the largest
  # noise moved a value already on a level up by one code.
  book = codebooks.Linear(bits)
  m = book.qmax
  y = (np.arange(-m, m + 1) / m).astype(np.float32)
  y = y[np.float32(y) * np.float32(m) == np.round(y * m)]  # v exact
  top = np.full(y.shape, np.nextafter(np.float32(1), np.float32(0)))
  np.testing.assert_array_equal(np.asarray(encode(y, book, top)),
                                np.asarray(encode(y, book, None)))
