"""Packing of 2- and 4-bit codes into bytes along the last axis."""

from __future__ import annotations

import chex
import numpy as np
import pytest

from quantmuon.formats import packing

from . import reference as ref


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 9), (4, 8)])
def test_pack_round_trip_and_matches_numpy(bits, shape):
  codes = np.random.default_rng(0).integers(0, 2 ** bits, shape, np.uint8)
  packed = packing.pack(codes, bits)
  n = shape[-1]
  chex.assert_shape(packed, shape[:-1] + (packing.packed_length(n, bits),))
  chex.assert_type(packed, np.uint8)
  np.testing.assert_array_equal(packed, ref.pack(codes, bits))
  np.testing.assert_array_equal(packing.unpack(packed, bits, n), codes)


def test_first_code_in_low_bits():
  np.testing.assert_array_equal(
      packing.pack(np.array([1, 2, 3], np.uint8), 4), [0x21, 0x03])
  np.testing.assert_array_equal(
      packing.pack(np.array([1, 2, 3, 0, 3], np.uint8), 2),
      [0b00111001, 0b11])


@pytest.mark.parametrize("bits,n,expected", [
    (4, 1, 1), (4, 7, 4), (4, 8, 4), (2, 1, 1), (2, 5, 2), (2, 8, 2),
    (8, 5, 5)])
def test_packed_length(bits, n, expected):
  assert packing.packed_length(n, bits) == expected
