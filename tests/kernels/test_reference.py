"""Every kernel, in interpret mode, against the XLA path it replaces.

Codes must be bit-identical, scales and the fresh momentum within 1e-6
relative. Both drivers run: the GPU one (Triton's tiles and masks) and the
TPU one (Mosaic's padded views); ragged shapes exercise masking and
padding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon import formats as F
from quantmuon.formats import codebooks
from quantmuon.kernels import absmax, codec
from quantmuon.momentum_op import Config

from . import util

F16 = jnp.float16
SUM_NESTEROV = Config("sum", False, True)
SUM = Config("sum", False, False)
EMA_NESTEROV = Config("ema", False, True)
EMA = Config("ema", False, False)
MUONQ = Config("sum", True, False)
MIDRISE_RMS = F.Blockwise(bits=2, codebook="midrise", clip_rms=1.5,
                          block_size=128, scale_dtype=F16)

CASES = {
    # Blockwise, short rows grouped block_size // n to a block.
    "b8_grouped_384x200": (F.Blockwise(bits=8), (384, 200), SUM_NESTEROV),
    "b8_dynamic_4097x3": (F.Blockwise(bits=8, codebook="dynamic"), (4097, 3),
                          EMA_NESTEROV),
    # Blockwise along rows: ragged last block, ragged rows, one row.
    "b8_rows_384x200": (F.Blockwise(bits=8, block_size=128), (384, 200),
                        EMA_NESTEROV),
    "b4_rows_1x5000": (F.Blockwise(bits=4), (1, 5000), SUM),
    "b4_dynamic_odd_64x201": (F.Blockwise(bits=4, codebook="dynamic",
                                          block_size=128), (64, 201), EMA),
    "b4_mulaw_muonq_96x300": (F.Blockwise(bits=4, codebook="mulaw",
                                          block_size=128, scale_dtype=F16),
                              (96, 300), MUONQ),
    "b2_rows_40x300": (F.Blockwise(bits=2, block_size=256), (40, 300), SUM),
    "b8_3d_4x24x80": (F.Blockwise(bits=8, block_size=256), (4, 24, 80),
                      SUM_NESTEROV),
    "b8_stochastic": (F.Blockwise(bits=8, rounding="stochastic"), (64, 300),
                      SUM),
    "b4_mulaw_stochastic": (F.Blockwise(bits=4, codebook="mulaw",
                                        block_size=128,
                                        rounding="stochastic"), (64, 300),
                            SUM),
    "b4_dynamic_stochastic": (F.Blockwise(bits=4, codebook="dynamic",
                                          block_size=128,
                                          rounding="stochastic"), (33, 256),
                              EMA_NESTEROV),
    # mu-law before the scale (MuonQ's public order, muon_lowbit).
    "b4_before_scale_muonq": (F.Blockwise(bits=4, codebook="mulaw",
                                          block_size=128, scale_dtype=F16,
                                          companding="before_scale"),
                              (96, 300), MUONQ),
    "b4_before_scale_stochastic": (F.Blockwise(
        bits=4, codebook="mulaw", block_size=128, rounding="stochastic",
        companding="before_scale"), (64, 300), SUM),
    "a4_tensor_before_scale": (F.Axiswise(bits=4, codebook="mulaw",
                                          scale_dtype=F16,
                                          companding="before_scale"),
                               (384, 200), MUONQ),
    # Axiswise: a stats pass, then the fused pass.
    "a4_tensor_muonq": (F.Axiswise(bits=4, codebook="mulaw",
                                   scale_dtype=F16), (384, 200), MUONQ),
    "a8_col": (F.Axiswise(bits=8, axis="col"), (130, 200), EMA_NESTEROV),
    "a2_row_odd": (F.Axiswise(bits=2, axis="row"), (130, 203), SUM),
    # Grid.
    "g4_384x200": (F.Grid(bits=4), (384, 200), SUM),
    "g8_dynamic_t32": (F.Grid(bits=8, tile=32, codebook="dynamic"),
                       (100, 70), EMA_NESTEROV),
    "g4_bf16_scales_t64": (F.Grid(bits=4, tile=64, scale_dtype=jnp.bfloat16),
                           (130, 96), SUM),
    "g4_stochastic_t64": (F.Grid(bits=4, tile=64, rounding="stochastic"),
                          (130, 96), SUM),
    # The residual path of Subspace.
    "grasp": (F.Subspace(factors=F.Blockwise(bits=8, block_size=128),
                         residual=F.Grid(bits=4)), (256, 200), SUM),
    "muonq": (F.Subspace(
        factors=F.Axiswise(bits=4, codebook="mulaw", axis="col",
                           scale_dtype=F16),
        residual=F.Axiswise(bits=4, codebook="mulaw", scale_dtype=F16)),
        (256, 200), MUONQ),
    "muonq_public_order": (F.Subspace(
        factors=F.Axiswise(bits=4, codebook="mulaw", axis="col",
                           scale_dtype=F16, companding="before_scale"),
        residual=F.Axiswise(bits=4, codebook="mulaw", scale_dtype=F16,
                            companding="before_scale")), (256, 200), MUONQ),
    "subspace_blockwise_ema": (F.Subspace(
        rank=5, residual=F.Blockwise(bits=4, block_size=128)), (96, 130),
        EMA_NESTEROV),
    # RMS-fitted scales and midrise codes (muon_lowbit's 2-bit residual):
    # a ragged last block; groups of 2 rows with a ragged last group.
    "b2_midrise_rms_40x300": (MIDRISE_RMS, (40, 300), MUONQ),
    "b2_midrise_rms_grouped_33x60": (MIDRISE_RMS, (33, 60), SUM_NESTEROV),
    "b2_midrise_rms_stochastic": (F.Blockwise(
        bits=2, codebook="midrise", clip_rms=1.5, block_size=128,
        rounding="stochastic"), (64, 300), EMA),
    "b4_linear_rms_f32_24x200": (F.Blockwise(bits=4, clip_rms=2.5,
                                             block_size=128), (24, 200), SUM),
    "lowbit_2bit": (F.Subspace(
        rank_divisor=20, factors=F.Blockwise(bits=8, block_size=128),
        residual=MIDRISE_RMS), (96, 300), MUONQ),
}
# The TPU driver on the cases that reach each of its views.
TPU_CASES = ("b8_grouped_384x200", "b4_dynamic_odd_64x201",
             "b4_mulaw_muonq_96x300", "b4_mulaw_stochastic", "a4_tensor_muonq",
             "a2_row_odd", "g4_384x200", "grasp", "b4_before_scale_muonq",
             "a4_tensor_before_scale", "b2_midrise_rms_40x300",
             "b2_midrise_rms_grouped_33x60", "lowbit_2bit")


def _check(name: str, backend: str, g_dtype=jnp.float32) -> None:
  fmt, shape, cfg = CASES[name]
  rng = np.random.default_rng(0)
  stored = util.random_state(fmt, shape, rng)
  g = jnp.asarray(rng.standard_normal(shape), g_dtype)
  count, key = jnp.asarray(3, jnp.int32), jax.random.key(3)
  fresh_ref, state_ref = util.stepper(cfg, "xla")(stored, g, count, key)
  fresh, state = util.stepper(cfg, backend)(stored, g, count, key)
  util.assert_close(fresh_ref, fresh, "fresh momentum", rounded=True)
  util.assert_same_state(state_ref, state)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_driver_matches_reference(name):
  _check(name, "gpu")


@pytest.mark.parametrize("name", TPU_CASES)
def test_tpu_driver_matches_reference(name):
  _check(name, "tpu")


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_bfloat16_gradients(backend):
  _check("b8_rows_384x200", backend, jnp.bfloat16)


def test_zero_momentum_and_gradient_stay_zero():
  fmt, shape, cfg = CASES["b4_mulaw_muonq_96x300"]
  stored = fmt.init(shape)
  g = jnp.zeros(shape)
  count, key = jnp.asarray(1, jnp.int32), jax.random.key(0)
  fresh_ref, state_ref = util.stepper(cfg, "xla")(stored, g, count, key)
  fresh, state = util.stepper(cfg, "gpu")(stored, g, count, key)
  assert not np.any(np.asarray(fresh))
  util.assert_same_state(state_ref, state)


@pytest.mark.parametrize("backend,name", [
    ("gpu", "b2_midrise_rms_40x300"), ("gpu", "b2_midrise_rms_grouped_33x60"),
    ("gpu", "b2_midrise_rms_stochastic"), ("gpu", "lowbit_2bit"),
    ("tpu", "b2_midrise_rms_40x300"), ("tpu", "b2_midrise_rms_grouped_33x60"),
    ("tpu", "lowbit_2bit")])
def test_midrise_groups_holding_a_zero_match_reference(backend, name):
  """A column whose momentum and gradient are exactly zero (a dead unit's)
  and a lone zero in a ragged block: the groups holding them take linear
  codes and negative scales, as in the format, and the zeros stay zero."""
  fmt, shape, cfg = CASES[name]
  rng = np.random.default_rng(0)
  m = rng.standard_normal(shape).astype(np.float32)
  g = rng.standard_normal(shape).astype(np.float32)
  for x in (m, g):
    x[:, 5] = 0.0
    x[-1, -1] = 0.0
  stored = jax.jit(lambda x: fmt.encode(x, key=jax.random.key(7)))(m)
  count, key = jnp.asarray(3, jnp.int32), jax.random.key(3)
  fresh_ref, state_ref = util.stepper(cfg, "xla")(stored, jnp.asarray(g),
                                                  count, key)
  fresh, state = util.stepper(cfg, backend)(stored, jnp.asarray(g), count,
                                            key)
  util.assert_close(fresh_ref, fresh, "fresh momentum", rounded=True)
  util.assert_same_state(state_ref, state)
  residual = state["residual"] if name == "lowbit_2bit" else state
  assert np.any(np.asarray(residual["scales"]) < 0)
  decoded = np.asarray(state.decode()).reshape(shape)
  np.testing.assert_array_equal(decoded[:, 5], 0)


def test_expm1_from_exp_is_within_a_few_ulps():
  """The TPU kernels' expm1 (Mosaic lowers none) on mu-law's range."""
  x = np.concatenate([np.linspace(0, np.log1p(255.0), 20001),
                      np.geomspace(1e-12, 1e-2, 2001)]).astype(np.float32)
  ref = np.expm1(x.astype(np.float64))
  out = np.asarray(jax.jit(codec.expm1_from_exp)(jnp.asarray(x)), np.float64)
  ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
  assert np.max(np.abs(out - ref) / np.maximum(ulp, 1e-45)) <= 4


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_rms_scales_are_bit_exact(backend):
  """Encoding alone (``fmt.encode(x - low_rank)``) with float32 RMS scales,
  which no float16 rounding hides: ragged blocks, groups of rows (tall and
  short), blocks wider than a row's padded lanes."""
  rng = np.random.default_rng(2)
  for fmt, shape in [(MIDRISE_RMS, (9, 1000)), (MIDRISE_RMS, (24, 60)),
                     (MIDRISE_RMS, (7, 3)), (MIDRISE_RMS, (40, 130)),
                     (F.Blockwise(bits=4, clip_rms=2.5, block_size=256),
                      (96, 96)),
                     (F.Blockwise(bits=4, clip_rms=2.5, block_size=256),
                      (64, 1000))]:
    fmt = dataclasses.replace(fmt, scale_dtype=jnp.float32)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    low = jnp.asarray(0.1 * rng.standard_normal(shape), jnp.float32)
    ref = jax.jit(lambda x, low, f=fmt: f.encode(x - low))(x, low)
    out = jax.jit(lambda x, low, f=fmt, s=shape: absmax.encode(
        f, x, low_rank=low, shape=s, key=None, backend=backend,
        interpret=True))(x, low)
    for part in ("codes", "scales"):
      np.testing.assert_array_equal(np.asarray(out[part]),
                                    np.asarray(ref[part]),
                                    err_msg=f"{fmt} {shape} {part}")


@pytest.mark.parametrize("book", [
    codebooks.Dynamic(8), codebooks.Dynamic(4), codebooks.MuLaw(4, 255.0),
    codebooks.MuLaw(8, 50.0), codebooks.UnsignedDynamic(4)], ids=repr)
def test_codebook_kernel_lookups_match_the_array_lookup(book):
  """A codebook's encode and decode with the kernels' lookups, against
  the same methods on whole arrays (:data:`codebooks.ARRAYS`): random
  values, levels, midpoints (ties), values outside [-1, 1]."""
  levels = book.levels()
  y = np.concatenate([
      np.random.default_rng(0).uniform(-1.2, 1.2, 2000), levels,
      (levels[1:] + levels[:-1]) / 2, [-3.0, 3.0, 0.0]]).astype(np.float32)
  y = jnp.asarray(y)
  noise = jax.random.uniform(jax.random.key(0), y.shape)
  codes = jnp.arange(2 ** book.bits, dtype=jnp.int32)
  for stochastic in (False, True):
    tables = book.tables(stochastic)
    refs = {name: jnp.asarray(codec.padded_table(t))
            for name, t in tables.items()}
    n = noise if stochastic else None
    expected = np.asarray(jax.jit(book.encode)(y, n))
    for lookup in (codec.ConstantLookup(), codec.GatherLookup(refs)):
      got = jax.jit(lambda y, n, lk=lookup: book.encode(y, n, lk))(y, n)
      np.testing.assert_array_equal(np.asarray(got), expected)
      np.testing.assert_array_equal(
          np.asarray(book.decode(codes, lookup)),
          np.asarray(book.decode(codes)))
