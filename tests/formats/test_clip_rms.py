"""RMS-fitted scales and the mid-rise codebook: the 2-bit residual.

The reference: per tile, ``s = clip_rms * sqrt(mean(x**2))`` over the
tile's real elements; ``2**bits`` levels ``(2c + 1 - 2**bits) / (2**bits -
1)`` on [-1, 1]; each value takes the nearest level of ``clip(x / s, -1,
1)`` and decodes to ``level * s``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quantmuon as qm
from quantmuon import formats, kernels


def numpy_midrise(x: np.ndarray, bits: int, clip_rms: float, block: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(codes, decoded) of row blocks of ``block`` elements (ragged last)."""
  levels = (2 * np.arange(2 ** bits) + 1 - 2 ** bits) / (2 ** bits - 1)
  codes = np.zeros(x.shape, np.int64)
  decoded = np.zeros(x.shape, np.float64)
  for start in range(0, x.shape[1], block):
    part = x[:, start:start + block].astype(np.float64)
    s = clip_rms * np.sqrt(np.mean(part ** 2, axis=1, keepdims=True))
    y = np.clip(part / np.where(s == 0, 1, s), -1, 1)
    c = np.argmin(np.abs(y[..., None] - levels), axis=-1)
    codes[:, start:start + block] = c
    decoded[:, start:start + block] = levels[c] * s
  return codes, decoded


@pytest.mark.parametrize("bits", [2, 4])
def test_midrise_rms_matches_the_reference(bits):
  x = np.random.default_rng(0).standard_normal((6, 300)).astype(np.float32)
  x[0, :] = 0  # an all-zero row decodes to zero
  fmt = formats.Blockwise(bits=bits, codebook="midrise", clip_rms=1.5,
                          block_size=128)
  stored = fmt.encode(jnp.asarray(x))
  codes, expected = numpy_midrise(x, bits, 1.5, 128)
  unpacked = formats.packing.unpack(stored["codes"], bits, x.shape[-1])
  # Row 0 sits on a tie between the two middle levels; both decode to 0.
  np.testing.assert_array_equal(np.asarray(unpacked)[1:], codes[1:])
  np.testing.assert_allclose(np.asarray(stored.decode()), expected,
                             rtol=1e-6, atol=1e-7)
  assert stored["scales"].shape == (6, 3)
  np.testing.assert_array_equal(np.asarray(stored.decode())[0], 0)


def numpy_linear(x: np.ndarray, s: np.ndarray, bits: int) -> np.ndarray:
  """Decoded linear codes (``2**(bits-1) - 1`` levels a side) of ``x``
  with scales ``s``."""
  q = 2 ** (bits - 1) - 1
  return np.round(np.clip(x / np.where(s == 0, 1, s), -1, 1) * q) / q * s


@pytest.mark.parametrize("bits", [2, 4])
def test_midrise_groups_holding_a_zero_keep_it(bits):
  """A group that holds an exact zero takes the linear levels, which hold
  zero, and flags it in the sign of its scale; the other groups keep the
  midrise levels. Zeros used to decode to +scale/(2**bits - 1)."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((6, 300)).astype(np.float32)
  x[:, 5] = 0  # in the first block of every row
  x[2, 200] = 0  # in the second block of row 2
  x[4, :] = 0  # an all-zero row keeps zero scales
  fmt = formats.Blockwise(bits=bits, codebook="midrise", clip_rms=1.5,
                          block_size=128)
  stored = fmt.encode(jnp.asarray(x))
  decoded = np.asarray(stored.decode())
  np.testing.assert_array_equal(decoded[x == 0], 0)
  scales = np.asarray(stored["scales"])
  flagged = np.zeros((6, 3), bool)
  flagged[[0, 1, 2, 3, 5], 0] = True
  flagged[2, 1] = True
  np.testing.assert_array_equal(scales < 0, flagged)
  _, midrise = numpy_midrise(x, bits, 1.5, 128)
  s = np.repeat(np.abs(scales), 128, axis=1)[:, :300]
  expected = np.where(np.repeat(flagged, 128, axis=1)[:, :300],
                      numpy_linear(x, s, bits), midrise)
  np.testing.assert_allclose(decoded, expected, rtol=1e-6, atol=1e-7)


def test_midrise_levels_use_every_code():
  np.testing.assert_allclose(formats.codebooks.MidRise(2).levels(),
                             [-1, -1 / 3, 1 / 3, 1])
  book = formats.codebooks.MidRise(4)
  y = jnp.asarray(book.levels())
  codes = book.encode(y)
  np.testing.assert_array_equal(np.asarray(codes), np.arange(16))
  np.testing.assert_array_equal(np.asarray(book.decode(codes)), y)


def test_rms_scale_halves_the_two_bit_error_of_an_absmax_scale():
  """The property the 2-bit residual is chosen for (Gaussian tiles)."""
  x = jax.random.normal(jax.random.key(0), (256, 512))

  def error(fmt):
    return float(jnp.linalg.norm(fmt.encode(x).decode() - x)
                 / jnp.linalg.norm(x))

  rms = error(formats.Blockwise(bits=2, codebook="midrise", clip_rms=1.5,
                                block_size=128))
  absmax = error(formats.Blockwise(bits=2, block_size=128))
  assert rms < 0.36 and absmax > 0.7, (rms, absmax)


def test_stochastic_midrise_is_unbiased():
  fmt = formats.Blockwise(bits=2, codebook="midrise", clip_rms=1.5,
                          block_size=128, rounding="stochastic")
  x = jax.random.normal(jax.random.key(1), (1, 128))
  keys = jax.random.split(jax.random.key(2), 2000)
  mean = jax.vmap(lambda k: fmt.encode(x, key=k).decode())(keys).mean(0)
  scale = 1.5 * float(jnp.sqrt(jnp.mean(x * x)))
  inside = jnp.abs(x) < scale
  np.testing.assert_allclose(np.asarray(mean[inside]),
                             np.asarray(x[inside]), atol=0.05 * scale)


@pytest.mark.parametrize("bad", [0, -1.0, True])
def test_clip_rms_must_be_positive(bad):
  with pytest.raises(ValueError, match="Axiswise: clip_rms"):
    formats.Axiswise(bits=2, clip_rms=bad)


def test_rms_scales_have_kernels_on_blocks_and_row_groups():
  """The 2-bit residual of muon_lowbit (row blocks of 128, and groups of
  rows shorter than that) has a kernel; RMS scales that span the tensor,
  and midrise codes in spanning tiles, do not."""
  lowbit = qm.muon_lowbit(0.02, bits=2, min_size=0)
  state = lowbit.init({"w": jnp.zeros((96, 300))})
  (stored,) = [x for x in jax.tree.leaves(state, is_leaf=formats.is_stored)
               if formats.is_stored(x)]
  assert kernels.has_kernel_family(stored.format, (96, 300))
  for fmt in (stored.format.residual,
              formats.Blockwise(bits=4, clip_rms=2.0, block_size=64)):
    for shape in [(96, 300), (33, 60)]:
      assert kernels.unsupported_reason(fmt, shape) is None, (fmt, shape)
  assert kernels.unsupported_reason(stored.format, (96, 300)) is None
  assert "ClipRms" in kernels.unsupported_reason(
      formats.Axiswise(bits=2, clip_rms=1.5), (64, 128))
  assert "zero level" in kernels.unsupported_reason(
      formats.Axiswise(bits=2, codebook="midrise", axis="row"), (64, 128))


def test_grid_takes_no_midrise_codes():
  with pytest.raises(ValueError, match="Grid: codebook='midrise' has no"):
    formats.Grid(bits=2, codebook="midrise")
