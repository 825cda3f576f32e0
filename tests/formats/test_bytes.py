"""Bytes a stored value really occupies, from ``quantmuon.nbytes``."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quantmuon
from quantmuon.formats import (
    Axiswise,
    Blockwise,
    Float,
    FloatingPoint,
    Format,
    Grid,
    Subspace,
)

from . import util

SHAPE = (256, 2048)


def bytes_per_element(fmt: Format, shape: tuple[int, ...] = SHAPE) -> float:
  """nbytes of the stored value over its element count, without building
  it."""
  stored = jax.eval_shape(fmt.encode, jax.ShapeDtypeStruct(shape,
                                                           jnp.float32))
  return quantmuon.nbytes(stored) / np.prod(shape)


def test_8bit_block_2048():
  fmt = Blockwise(bits=8, block_size=2048)
  assert bytes_per_element(fmt) <= 1.0025
  # Codes, one byte each, and one float32 scale per row of 2048.
  assert bytes_per_element(fmt) * np.prod(SHAPE) == 256 * 2048 + 256 * 4


def test_4bit_block_128():
  fmt = Blockwise(bits=4, block_size=128)
  assert bytes_per_element(fmt) <= 0.532
  assert bytes_per_element(fmt) * np.prod(SHAPE) == 256 * 1024 + 256 * 16 * 4
  stored = jax.eval_shape(fmt.encode, jax.ShapeDtypeStruct(SHAPE,
                                                           jnp.float32))
  chex.assert_shape(stored["codes"], (256, 1024))
  chex.assert_type(stored["codes"], jnp.uint8)
  chex.assert_shape(stored["scales"], (256, 16))


@pytest.mark.parametrize("fmt,expected", [
    (Float(), 4.0),
    (Float(jnp.bfloat16), 2.0),
    (Blockwise(bits=2, block_size=128), 0.25 + 4 / 128),
    (Blockwise(bits=4, block_size=128, scale_dtype=jnp.float16),
     0.5 + 2 / 128),
    (Axiswise(bits=4, axis="col"), 0.5 + 4 / 256),
    (Axiswise(bits=4, axis="tensor"), 0.5 + 4 / (256 * 2048)),
    (Grid(bits=4, tile=128), 0.5 + 4 / 128 + 4 / 128),
    (FloatingPoint(4, 3), 1.0),
    (FloatingPoint(5, 10), 2.0),
], ids=repr)
def test_bytes_per_element(fmt, expected):
  assert bytes_per_element(fmt) == pytest.approx(expected, rel=1e-9)


def test_subspace_bytes():
  # k = min(256, 2048) // 16 = 16 columns in P (256 x 16) and R (2048 x 16).
  grasp = Subspace(rank_divisor=16, factors=Blockwise(bits=8, block_size=128),
                   residual=Grid(bits=4, tile=128))
  factors = (256 + 2048) * 16 * (1 + 4 / 128)
  residual = 256 * 2048 * (0.5 + 8 / 128)
  assert bytes_per_element(grasp) * np.prod(SHAPE) == pytest.approx(
      factors + residual)
  assert bytes_per_element(grasp) < 0.65


def test_padding_is_counted():
  # (3, 5) at 4 bits: each row packs to 3 bytes; one scale per 2-row block.
  stored = util.encode(Blockwise(bits=4, block_size=10), util.normal((3, 5)))
  chex.assert_shape(stored["codes"], (3, 3))
  chex.assert_shape(stored["scales"], (2, 1))
  assert quantmuon.nbytes(stored) == 9 + 8


def test_eval_shape_and_concrete_agree():
  for fmt in (Blockwise(bits=4, block_size=16), Grid(bits=4, tile=8),
              FloatingPoint(5, 10)):
    concrete = util.encode(fmt, util.normal((12, 20)))
    abstract = jax.eval_shape(fmt.encode,
                              jax.ShapeDtypeStruct((12, 20), jnp.float32))
    assert quantmuon.nbytes(concrete) == quantmuon.nbytes(abstract)


def test_memory_report():
  state = {"w": util.encode(Blockwise(bits=4, block_size=16),
                            util.normal((4, 32))),
           "count": jnp.zeros((), jnp.int32)}
  report = quantmuon.memory.memory_report(state)
  assert sum(report.values()) == quantmuon.nbytes(state)
  assert any("codes" in path for path in report)
  assert any("scales" in path for path in report)
