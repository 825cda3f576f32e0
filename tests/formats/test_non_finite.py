"""Non-finite inputs, one behaviour for every format: no finite stored value
comes from a NaN or an inf. A non-finite value makes its scale group
non-finite (a block, a row, a column or the tensor of the tiled formats; a
tile of Grid; the whole matrix of Subspace, whose factors mix every value)
and leaves every other group as it was; the float formats keep it as it
is."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon.formats import (
    Axiswise,
    Blockwise,
    Float,
    FloatingPoint,
    Grid,
    Subspace,
)

from . import util

F16 = jnp.float16
ALL = (slice(None), slice(None))


def _block(width):
  return lambda i, j: (i, slice(j // width * width, (j // width + 1) * width))


def _rows(height):
  return lambda i, j: (slice(i // height * height, (i // height + 1) * height),
                       slice(None))


def _tile(t):
  return lambda i, j: (slice(i // t * t, (i // t + 1) * t),
                       slice(j // t * t, (j // t + 1) * t))


# name: (format, shape, the group a value at (i, j) affects, unsigned)
CASES = {
    # 2048-element groups of 16 rows: XLA's CPU maximum dropped the NaN,
    # and the group decoded finite (muon_8bit's momentum).
    "blockwise_linear_grouped": (Blockwise(8), (64, 128), _rows(16), False),
    "blockwise_dynamic_rows": (Blockwise(8, "dynamic", block_size=128),
                               (16, 300), _block(128), False),
    "blockwise_mulaw_after_f16": (Blockwise(
        4, "mulaw", block_size=128, scale_dtype=F16), (16, 256), _block(128),
        False),
    "blockwise_mulaw_before_f16": (Blockwise(
        4, "mulaw", block_size=128, scale_dtype=F16,
        companding="before_scale"), (16, 256), _block(128), False),
    "blockwise_midrise_clip_rms_f16": (Blockwise(
        2, "midrise", block_size=128, clip_rms=1.5, scale_dtype=F16),
        (16, 256), _block(128), False),
    "blockwise_clip_rms_before": (Blockwise(
        4, "mulaw", block_size=128, clip_rms=2.0,
        companding="before_scale"), (16, 256), _block(128), False),
    "blockwise_stochastic": (Blockwise(4, block_size=64,
                                       rounding="stochastic"), (16, 128),
                             _block(64), False),
    "blockwise_unsigned_dynamic": (Blockwise(
        8, "unsigned_dynamic", block_size=128), (16, 256), _block(128),
        True),
    "axiswise_row": (Axiswise(4, axis="row"), (16, 64),
                     lambda i, j: (i, slice(None)), False),
    "axiswise_col_f16": (Axiswise(8, axis="col", scale_dtype=F16), (16, 64),
                         lambda i, j: (slice(None), j), False),
    "axiswise_tensor_before_f16": (Axiswise(
        4, "mulaw", scale_dtype=F16, companding="before_scale"), (16, 64),
        lambda i, j: ALL, False),
    "grid": (Grid(4, tile=8), (16, 24), _tile(8), False),
    "grid_dynamic_f16": (Grid(8, tile=8, codebook="dynamic",
                              scale_dtype=F16), (16, 24), _tile(8), False),
    "subspace_grasp": (Subspace(rank=2, factors=Blockwise(8, block_size=32),
                                residual=Grid(4, tile=8)), (16, 24),
                       lambda i, j: ALL, False),
    "subspace_lowbit": (Subspace(rank=2, factors=Blockwise(8, block_size=32),
                                 residual=Blockwise(
                                     4, "mulaw", block_size=32,
                                     scale_dtype=F16,
                                     companding="before_scale")), (16, 24),
                        lambda i, j: ALL, False),
    "floating_point_e4m3": (FloatingPoint(4, 3), (8, 16),
                            lambda i, j: (i, j), False),
    "floating_point_e5m10": (FloatingPoint(5, 10), (8, 16),
                             lambda i, j: (i, j), False),
    "float16": (Float(F16), (8, 16), lambda i, j: (i, j), False),
    "bfloat16": (Float(jnp.bfloat16), (8, 16), lambda i, j: (i, j), False),
}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_non_finite_stays_non_finite_in_its_group(name, bad):
  fmt, shape, group, unsigned = CASES[name]
  clean = util.normal(shape, seed=1)
  if unsigned:
    clean = np.abs(clean)
  i, j = shape[0] // 2 + 1, shape[1] - 3
  x = clean.copy()
  x[i, j] = bad
  key = jax.random.key(0)  # the same noise for both (stochastic rounding)
  out = np.asarray(util.decode(util.encode(fmt, x, key)))
  expected = np.asarray(util.decode(util.encode(fmt, clean, key)))
  affected = np.zeros(shape, bool)
  affected[group(i, j)] = True
  assert not np.isfinite(out[i, j]), out[i, j]
  assert not np.any(np.isfinite(out[affected]))
  np.testing.assert_array_equal(out[~affected], expected[~affected])
