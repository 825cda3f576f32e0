"""Floating-point-quantized training: gradients, weights, the schedule."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import quantmuon as qm
from quantmuon import formats

FP = formats.FloatingPoint


def _on_grid(fmt, x, m=None):
  x = jnp.asarray(x, jnp.float32)
  return bool(jnp.all(fmt.round(x, mantissa_bits=m) == x))


# -- the schedule ----------------------------------------------------------


def test_log_schedule_is_monotone_and_logarithmic():
  sched = qm.fp.log_mantissa_schedule(2, 23)
  t = jnp.arange(200_000)
  m = np.asarray(jax.jit(sched)(t))
  assert np.all(np.diff(m) >= 0)
  assert m[0] == 2
  for k in range(1, 18):  # + one bit each time 1 + t doubles, exactly
    assert m[2 ** k - 1] == 2 + k
    assert m[2 ** k - 2] == 2 + k - 1
  capped = np.asarray(qm.fp.log_mantissa_schedule(1, 5)(t))
  assert capped.max() == 5 and capped[2 ** 4 - 1] == 5


def test_log_schedule_growth():
  m = np.asarray(qm.fp.log_mantissa_schedule(0, 23, growth=2.0)(
      jnp.arange(1024)))
  want = np.minimum(23, np.floor(2.0 * np.log2(1 + np.arange(1024))))
  np.testing.assert_array_equal(m, want)


@pytest.mark.parametrize("growth", [1 / 3, 0.7, 1.0, 2.5])
def test_log_schedule_is_exact_up_to_int32s_end(growth):
  # float32 once rounded whole + frac up (7 bits at t = 2**21 - 2 with
  # growth 1/3, where log2(1 + t) / 3 < 7), and 1 + t overflowed at the
  # last int32 count.
  rng = np.random.default_rng(0)
  top = 2 ** 31 - 1
  t = np.concatenate([[0, 1, top - 1, top],
                      [2 ** k + d for k in range(1, 31) for d in (-2, -1)],
                      np.exp(rng.uniform(0, np.log(top), 2000)).astype(int)])
  got = np.asarray(jax.jit(qm.fp.log_mantissa_schedule(0, 23, growth))(
      jnp.asarray(t, jnp.int32)))
  want = [min(23, math.floor(growth * math.log2(1 + int(s)))) for s in t]
  np.testing.assert_array_equal(got, want)
  if growth == 1 / 3:
    at = dict(zip(t.tolist(), got.tolist(), strict=True))
    assert (at[2 ** 21 - 2], at[2 ** 21 - 1]) == (6, 7)


@pytest.mark.parametrize("kwargs, name", [
    (dict(min_bits=-1, max_bits=4), "min_bits"),
    (dict(min_bits=1, max_bits=24), "max_bits"),
    (dict(min_bits=5, max_bits=4), "max_bits"),
    (dict(min_bits=1, max_bits=4, growth=0.0), "growth"),
])
def test_log_schedule_rejects_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    qm.fp.log_mantissa_schedule(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(exponent_bits=0), "exponent_bits"),
    (dict(exponent_bits=9), "exponent_bits"),
    (dict(mantissa_bits=24), "mantissa_bits"),
    (dict(mantissa_bits=-1), "mantissa_bits"),
])
def test_format_bits_out_of_range(kwargs, name):
  with pytest.raises(ValueError, match=name):
    FP(**kwargs)


@pytest.mark.parametrize("make", [qm.fp.quantize_gradients, qm.fp.snap_params])
def test_mantissa_override_out_of_range(make):
  with pytest.raises(ValueError, match="mantissa_bits"):
    make(FP(8, 7), mantissa_bits=24)
  with pytest.raises(ValueError, match="mantissa_bits"):
    make(FP(8, 7), mantissa_bits=-1)
  with pytest.raises(ValueError, match="fmt"):
    make(formats.Blockwise(8))


# -- gradients -------------------------------------------------------------


def test_quantize_gradients_rounds_to_the_grid(rng):
  fmt = FP(5, 2)
  g = {"w": jnp.asarray(rng.normal(size=(16, 8)) * 10, jnp.float32),
       "h": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16),
       "i": jnp.arange(3)}
  tx = qm.fp.quantize_gradients(fmt)
  out, state = jax.jit(tx.update)(g, tx.init(g))
  np.testing.assert_array_equal(out["w"], fmt.round(g["w"]))
  assert out["h"].dtype == jnp.bfloat16 and _on_grid(fmt, out["h"])
  np.testing.assert_array_equal(out["i"], g["i"])
  assert int(state.count) == 1
  out, _ = qm.fp.quantize_gradients(FP(8, 10), mantissa_bits=1).update(
      g, state)
  np.testing.assert_array_equal(out["w"],
                                FP(8, 10).round(g["w"], mantissa_bits=1))


def test_stochastic_rounding_is_unbiased():
  fmt = FP(8, 2, "stochastic")
  x = jnp.full((200_000,), 1.1, jnp.float32)  # between 1.0 and 1.25
  tx = qm.fp.quantize_gradients(fmt, seed=3)
  out, state = tx.update({"g": x}, tx.init(None))
  vals = np.asarray(out["g"])
  assert set(np.unique(vals)) == {1.0, 1.25}
  assert abs(vals.mean() - 1.1) < 4 * 0.25 * 0.5 / np.sqrt(vals.size)
  again, _ = tx.update({"g": x}, tx.init(None))
  np.testing.assert_array_equal(again["g"], out["g"])  # reproducible
  later, _ = tx.update({"g": x}, state)  # new step, new keys
  assert not np.array_equal(later["g"], out["g"])


# -- weights ---------------------------------------------------------------


def _adam_snap_run(fmt, params, steps, mantissa_bits=None):
  tx = optax.chain(optax.adam(1e-2),
                   qm.fp.snap_params(fmt, mantissa_bits=mantissa_bits))
  state = tx.init(params)
  step = jax.jit(tx.update)
  history = []
  for t in range(steps):
    grads = jax.tree.map(
        lambda p, t=t: jnp.sin(3.0 * p + t) + 0.1 * p, params)
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history


@pytest.mark.parametrize("fmt", [FP(8, 1), FP(8, 3), FP(5, 2), FP(4, 3)])
def test_snap_params_leaves_weights_exactly_on_the_grid(rng, fmt):
  params = {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
            "tiny": jnp.asarray(rng.normal(size=(50,)) * 1e-6, jnp.float32)}
  for new in _adam_snap_run(fmt, params, 10):
    for leaf in jax.tree.leaves(new):
      assert _on_grid(fmt, leaf)
  # From weights on the grid, every weight lands on round(params + update)
  # of the update the chain had before snapping.
  start = jax.tree.map(fmt.round, params)
  tx = optax.adam(1e-2)
  snap = qm.fp.snap_params(fmt)
  s, ss = tx.init(start), snap.init(start)
  p = start
  for t in range(5):
    g = jax.tree.map(lambda x, t=t: jnp.cos(x + t), p)
    u, s = tx.update(g, s, p)
    snapped, ss = snap.update(u, ss, p)
    new = optax.apply_updates(p, snapped)
    want = jax.tree.map(lambda a, b: fmt.round(a + b), p, u)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(want),
                    strict=True):
      np.testing.assert_array_equal(a, b)
    p = new


def test_snap_params_hard_moves_stay_on_the_grid(rng):
  """Updates far larger or smaller than the weights, crossing zero."""
  fmt = FP(8, 3)
  p = jnp.asarray(rng.normal(size=20_000) * 10.0 ** rng.uniform(
      -8, 4, 20_000), jnp.float32)
  u = jnp.asarray(rng.normal(size=20_000) * 10.0 ** rng.uniform(
      -8, 4, 20_000), jnp.float32)
  snap = qm.fp.snap_params(fmt)
  d, _ = jax.jit(snap.update)({"w": u}, snap.init(None), {"w": p})
  new = optax.apply_updates({"w": p}, d)["w"]
  assert _on_grid(fmt, new)
  hit = np.mean(np.asarray(new == fmt.round(p + u)))
  assert hit > 0.9  # misses land on zero


def test_snap_params_needs_params():
  snap = qm.fp.snap_params(FP(8, 3))
  with pytest.raises(ValueError, match="needs params"):
    snap.update({"w": jnp.ones(3)}, snap.init(None), None)


def test_snap_params_rejects_a_narrow_param_dtype():
  snap = qm.fp.snap_params(FP(8, 3))
  p = {"w": jnp.ones(3, jnp.float16)}
  with pytest.raises(ValueError, match="float16"):
    snap.update(p, snap.init(p), p)


# -- schedules are traced --------------------------------------------------


def test_a_scheduled_run_traces_the_update_once(rng):
  sched = qm.fp.log_mantissa_schedule(1, 10)
  tx = optax.chain(
      qm.fp.quantize_gradients(FP(8, 10), mantissa_bits=sched),
      qm.quantize_state(optax.adam(1e-2), FP(8, 10), min_size=0,
                        mantissa_bits=sched),
      qm.fp.snap_params(FP(8, 10), mantissa_bits=sched))
  traces = []

  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step)
  params = {"w": jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)}
  state = tx.init(params)
  seen = set()
  for t in range(40):
    seen.add(int(sched(t)))
    params, state = step(params, state, jax.tree.map(jnp.sin, params))
    assert _on_grid(FP(8, 10), params["w"], m=int(sched(t)))
  assert len(traces) == 1
  assert len(seen) >= 5  # the width did change along the way


def test_stochastic_snap_params_keeps_weights_on_the_grid_still():
  # Stochastic rounding at float32's own width once moved 49% of the
  # weights on a zero update.
  fmt = FP(8, 23, "stochastic")
  w = {"w": jnp.asarray(np.random.default_rng(0).normal(size=4096),
                        jnp.float32)}
  tx = qm.fp.snap_params(fmt)
  u, _ = tx.update(jax.tree.map(jnp.zeros_like, w), tx.init(w), w)
  np.testing.assert_array_equal(optax.apply_updates(w, u)["w"], w["w"])
