"""The quantized-momentum transform."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quantmuon as qm
from quantmuon import formats


def _grads(steps, shape=(32, 64)):
  rng = np.random.default_rng(0)
  return [jnp.asarray(rng.normal(size=shape), jnp.float32)
          for _ in range(steps)]


def test_float_ema_matches_optax_scale_by_muon_momentum():
  """EMA + Nesterov with optax's bias correction, before Newton-Schulz."""
  beta = 0.95
  tx = qm.transforms.scale_by_quantized_momentum(beta=beta, accumulation="ema",
                                      momentum_format=formats.Float(),
                                      min_size=0)
  state = tx.init({"w": jnp.zeros((32, 64))})
  mu = np.zeros((32, 64))
  for t, g in enumerate(_grads(4), start=1):
    out, state = tx.update({"w": g}, state)
    mu = beta * mu + (1 - beta) * np.asarray(g)
    expect = (beta * mu / (1 - beta ** (t + 1))
              + (1 - beta) * np.asarray(g) / (1 - beta ** t))
    np.testing.assert_allclose(out["w"], expect, rtol=1e-5, atol=1e-6)


def test_sum_accumulation_and_nesterov():
  tx = qm.transforms.scale_by_quantized_momentum(beta=0.9, nesterov=True,
                                      momentum_format=formats.Float(),
                                      accumulation="sum", min_size=0)
  state = tx.init({"w": jnp.zeros((32, 64))})
  m = np.zeros((32, 64))
  for g in _grads(3):
    out, state = tx.update({"w": g}, state)
    m = 0.9 * m + np.asarray(g)
    np.testing.assert_allclose(out["w"], np.asarray(g) + 0.9 * m,
                               rtol=1e-5, atol=1e-5)


def test_small_leaves_stay_float32_and_big_ones_quantize():
  tx = qm.transforms.scale_by_quantized_momentum(min_size=1000)
  state = tx.init({"small": jnp.zeros((8, 8)), "big": jnp.zeros((32, 64))})
  assert isinstance(state.momentum["small"].format, formats.Float)
  assert isinstance(state.momentum["big"].format, formats.Blockwise)


def test_normalize_keeps_unit_norm_state():
  tx = qm.transforms.scale_by_quantized_momentum(
      momentum_format=formats.Float(), accumulation="sum", normalize=True,
      nesterov=False, min_size=0)
  state = tx.init({"w": jnp.zeros((32, 64))})
  for g in _grads(3):
    out, state = tx.update({"w": 100.0 * g}, state)
    assert float(jnp.linalg.norm(out["w"])) == pytest.approx(1.0, rel=1e-5)


def test_stochastic_rounding_is_reproducible_from_seed_and_count():
  fmt = formats.Blockwise(bits=4, block_size=64, rounding="stochastic")
  grads = _grads(3)

  def run(seed):
    tx = qm.transforms.scale_by_quantized_momentum(
        momentum_format=fmt, min_size=0, seed=seed)
    state = tx.init({"w": jnp.zeros((32, 64))})
    update = jax.jit(tx.update)
    for g in grads:
      _, state = update({"w": g}, state)
    return np.asarray(state.momentum["w"]["codes"])

  np.testing.assert_array_equal(run(0), run(0))
  assert not np.array_equal(run(0), run(1))


def test_bad_arguments():
  with pytest.raises(ValueError, match="accumulation"):
    qm.transforms.scale_by_quantized_momentum(accumulation="mean")
  with pytest.raises(ValueError, match="momentum_format"):
    qm.transforms.scale_by_quantized_momentum(momentum_format="int8")


def test_subspace_momentum_step_keeps_one_copy_of_the_momentum():
  # muon_lowbit's format, normalized and Nesterov: the power iteration
  # reads the fresh momentum and the residual loop then updates that same
  # buffer. Carrying a reshaped matrix through the loop, XLA kept a second
  # fused copy of the momentum for it: 3.03 float32 copies of the leaf.
  shape = (2048, 1024)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  state = jax.eval_shape(qm.muon_lowbit(1e-3).init, {"w": x})
  stored = jax.eval_shape(lambda: next(
      s for s in jax.tree.leaves(state, is_leaf=formats.is_stored)
      if formats.is_stored(s)).format.init(shape))

  def step(stored, g):
    return qm.momentum_op.reference(
        stored, g, beta=0.95, count=jnp.int32(1), key=None,
        cfg=qm.momentum_op.Config("sum", normalize=True, nesterov=True))

  compiled = jax.jit(step, donate_argnums=(0,)).lower(stored, x).compile()
  copies = compiled.memory_analysis().temp_size_in_bytes / (x.size * 4)
  assert copies < 2.2
