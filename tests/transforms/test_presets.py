"""Each preset against a plain numpy re-implementation of its paper's step,
and parity of ``muon`` with ``optax.contrib.muon``."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import quantmuon as qm
from tests.transforms import numpy_muon as ref

LR = 0.01
SHAPE = (48, 80)  # k = 48 // 16 = 3
STEPS = 5


def _grads(seed: int = 0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  low = rng.normal(size=(SHAPE[0], 4)) @ rng.normal(size=(4, SHAPE[1]))
  return [(low * (1 + 0.1 * t) + 0.3 * rng.normal(size=SHAPE)
           ).astype(np.float32) for t in range(STEPS)]


def _run(tx: optax.GradientTransformation, grads: list[np.ndarray]):
  params = {"w": jnp.zeros(SHAPE)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  outs = []
  for g in grads:
    u, state = update({"w": jnp.asarray(g)}, state, params)
    outs.append(np.asarray(u["w"]))
  return outs, state


def _muon_momentum(state):
  return state.inner_states["muon"].inner_state[0].momentum["w"]


def _close(ours: list[np.ndarray], theirs: list[np.ndarray], rtol: float):
  for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
    err = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert err < rtol, f"step {t}: relative error {err:.2e}"


def _scale() -> float:
  return 0.2 * np.sqrt(max(SHAPE))


def test_muon_matches_optax_contrib_muon():
  rng = np.random.default_rng(1)
  params = {"a": jnp.asarray(rng.normal(size=(32, 64)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(96, 40)), jnp.float32)}
  theirs = optax.contrib.muon(0.02, weight_decay=0.1)
  ours = qm.muon(0.02, weight_decay=0.1)
  s_theirs, s_ours = theirs.init(params), ours.init(params)
  for t in range(10):
    grads = jax.tree.map(lambda p, t=t: jnp.cos(p * (t + 1)), params)
    u_theirs, s_theirs = jax.jit(theirs.update)(grads, s_theirs, params)
    u_ours, s_ours = jax.jit(ours.update)(grads, s_ours, params)
    for name in params:
      diff = jnp.max(jnp.abs(u_theirs[name] - u_ours[name]))
      assert diff <= 1e-6, (t, name, diff)
    params = optax.apply_updates(params, u_theirs)


def test_muon_8bit_matches_numpy_paper_step():
  grads = _grads()
  ours, _ = _run(qm.muon_8bit(LR, min_size=0, block_size=16 * SHAPE[1]),
                 grads)
  m_q = np.zeros(SHAPE, np.float32)
  theirs = []
  for g in grads:
    m = 0.95 * m_q + g
    theirs.append(-LR * _scale() * ref.newton_schulz(g + 0.95 * m))
    m_q = ref.linear_qdq(m, 8, 16 * SHAPE[1])
  _close(ours, theirs, 1e-4)


def test_muon_8bit_small_blocks_with_bfloat16_scales_match_numpy():
  grads = _grads()
  block = SHAPE[1] // 5  # 16: blocks inside a row
  tx = qm.muon_8bit(LR, min_size=0, block_size=block,
                    scale_dtype="bfloat16")
  ours, state = _run(tx, grads)
  m_q = np.zeros(SHAPE, np.float32)
  theirs = []
  for g in grads:
    m = 0.95 * m_q + g
    theirs.append(-LR * _scale() * ref.newton_schulz(g + 0.95 * m))
    m_q = ref.linear_qdq(m, 8, block, scale_dtype=jnp.bfloat16)
  _close(ours, theirs, 1e-4)
  np.testing.assert_allclose(_muon_momentum(state).decode(), m_q,
                             rtol=1e-6, atol=1e-6)
  assert _muon_momentum(state)["scales"].dtype == jnp.bfloat16


def test_muon_8bit_small_blocks_follow_rows_of_different_scales():
  # Rows (input features) of a gradient differ in scale; a block of 2048
  # spans 32 rows of 64, so the largest row coarsens the others' codes.
  rng = np.random.default_rng(3)
  rows = np.geomspace(1.0, 300.0, 64)[rng.permutation(64)]
  grads = [(rows[:, None] * rng.normal(size=(64, 64))).astype(np.float32)
           for _ in range(6)]

  def cosine(tx):
    params = {"w": jnp.zeros((64, 64))}
    twin = qm.full_precision_twin(qm.muon_8bit)(LR, min_size=0)
    s, s_twin = tx.init(params), twin.init(params)
    for g in grads:
      u, s = tx.update({"w": jnp.asarray(g)}, s, params)
      v, s_twin = twin.update({"w": jnp.asarray(g)}, s_twin, params)
    a, b = np.ravel(u["w"]), np.ravel(v["w"])
    return a @ b / np.sqrt((a @ a) * (b @ b))

  default = cosine(qm.muon_8bit(LR, min_size=0))
  small = cosine(qm.muon_8bit(LR, min_size=0, block_size=64,
                              scale_dtype="bfloat16"))
  assert default < 0.99 < small, (default, small)
  params = {"w": jax.ShapeDtypeStruct((512, 512), jnp.float32)}
  small_bytes = qm.nbytes(jax.eval_shape(qm.muon_8bit(
      LR, block_size=64, scale_dtype="bfloat16").init, params))
  default_bytes = qm.nbytes(jax.eval_shape(qm.muon_8bit(LR).init, params))
  assert small_bytes - default_bytes == 512 * 512 * (2 / 64 - 4 / 2048)


def test_muon_4bit_matches_numpy_naive_step():
  grads = _grads()
  ours, _ = _run(qm.muon_4bit(LR, min_size=0), grads)
  m_q = np.zeros(SHAPE, np.float32)
  theirs = []
  for g in grads:
    m = 0.95 * m_q + g
    theirs.append(-LR * _scale() * ref.newton_schulz(m))
    m_q = ref.linear_qdq(m, 4, m.size)
  _close(ours, theirs, 1e-4)


def _initial_r(tx) -> np.ndarray:
  state = tx.init({"w": jnp.zeros(SHAPE)})
  return np.asarray(_muon_momentum(state)["R"].decode())


@pytest.mark.parametrize("companding,qdq", [
    ("before_scale", ref.mulaw_first_qdq), ("after_scale", ref.mulaw_qdq)])
def test_muonq_matches_numpy_paper_step(companding, qdq):
  grads = _grads()
  tx = qm.muonq(LR, min_size=0, companding=companding)
  ours, _ = _run(tx, grads)
  r_q = _initial_r(tx)
  m_q = np.zeros(SHAPE, np.float32)
  theirs = []
  for g in grads:
    g = g / (np.linalg.norm(g) + 1e-7)
    m = 0.95 * m_q + g
    m = m / (np.linalg.norm(m) + 1e-7)
    theirs.append(-LR * _scale() * ref.newton_schulz(m))
    p, r, residual = ref.power_split(m, r_q)
    p_q, r_q = qdq(p, 4, axis=0), qdq(r, 4, axis=0)
    m_q = qdq(residual, 4, axis=None) + p_q @ r_q.T
  _close(ours, theirs, 2e-3)


def test_muon_grasp_matches_numpy_paper_step():
  grads = _grads()
  tx = qm.muon_grasp(LR, min_size=0, tile=32)
  ours, _ = _run(tx, grads)
  r_q = _initial_r(tx)
  m_q = np.zeros(SHAPE, np.float32)
  theirs = []
  for g in grads:
    m = 0.95 * m_q + g
    theirs.append(-LR * _scale() * ref.newton_schulz(m))
    p, r, residual = ref.power_split(m, r_q)
    # P (48 x 3) and R (80 x 3): rows of 3 grouped 128 // 3 = 42 to a block.
    p_q = ref.linear_qdq(p, 8, 42 * 3)
    r_q = ref.linear_qdq(r, 8, 42 * 3)
    m_q = ref.grid_qdq(residual, 4, 32) + p_q @ r_q.T
  _close(ours, theirs, 2e-3)


def test_quantization_matters_in_these_tests():
  """The reference tests can fail: naive 4-bit differs from full Muon."""
  grads = _grads()
  naive, _ = _run(qm.muon_4bit(LR, min_size=0), grads)
  full, _ = _run(qm.quantized_muon(LR, momentum_format=qm.formats.Float(),
                                   nesterov=False, consistent_rms=0.2),
                 grads)
  errs = [np.linalg.norm(a - b) / np.linalg.norm(b)
          for a, b in zip(naive[1:], full[1:], strict=True)]
  assert max(errs) > 1e-2


@functools.cache
def _params():
  rng = np.random.default_rng(0)
  return {
      "embed": {"embedding": jnp.asarray(rng.normal(size=(50, 16)),
                                         jnp.float32)},
      "dense": {"kernel": jnp.asarray(rng.normal(size=(64, 96)),
                                      jnp.float32),
                "bias": jnp.zeros((96,))},
  }


ALL_PRESETS = {
    "muon": qm.muon,
    "muon_8bit": qm.muon_8bit,
    "muon_4bit": qm.muon_4bit,
    "muonq": qm.muonq,
    "muon_grasp": qm.muon_grasp,
    "muon_lowbit": qm.muon_lowbit,
}


@pytest.mark.parametrize("name", sorted(ALL_PRESETS))
def test_preset_contract(name):
  """jit, stable state structure/dtypes, inject_hyperparams, apply_if_finite,
  MultiSteps and lax.cond for every preset."""
  params = _params()
  make = ALL_PRESETS[name]
  tx = optax.inject_hyperparams(make, static_args=("min_size",))(
      learning_rate=1e-3, min_size=0)
  tx = optax.apply_if_finite(tx, max_consecutive_errors=3)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  step = jax.jit(tx.update)
  updates, new_state = step(grads, state, params)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state),
                  strict=True):
    assert a.shape == b.shape and a.dtype == b.dtype
  assert all(bool(jnp.all(jnp.isfinite(u)))
             for u in jax.tree.leaves(updates))
  # A non-finite step leaves every bit of the (quantized) state as it was.
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads)
  _, after_bad = step(bad, new_state, params)
  for a, b in zip(jax.tree.leaves(new_state.inner_state),
                  jax.tree.leaves(after_bad.inner_state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(after_bad.notfinite_count) == 1
  # MultiSteps and lax.cond see the same structure.
  multi = optax.MultiSteps(make(1e-3), every_k_schedule=2)
  m_state = multi.init(params)
  _, m_state2 = jax.jit(multi.update)(grads, m_state, params)
  assert jax.tree.structure(m_state2) == jax.tree.structure(m_state)
  plain = make(1e-3)
  p_state = plain.init(params)
  chosen = jax.jit(lambda flag, s: jax.lax.cond(
      flag, lambda s: plain.update(grads, s, params)[1], lambda s: s, s))(
          True, p_state)
  assert jax.tree.structure(chosen) == jax.tree.structure(p_state)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_keep_dtype(dtype):
  params = jax.tree.map(lambda p: p.astype(dtype), _params())
  tx = qm.muon_8bit(1e-3, min_size=0)
  state = tx.init(params)
  updates, state2 = jax.jit(tx.update)(params, state, params)
  new = optax.apply_updates(params, updates)
  assert all(p.dtype == dtype for p in jax.tree.leaves(new))
  assert jax.tree.structure(state) == jax.tree.structure(state2)


def test_params_none_and_extra_args_pass_through():
  params = _params()
  tx = qm.muonq(1e-3, min_size=0)
  state = tx.init(params)
  updates, _ = jax.jit(lambda g, s: tx.update(g, s, None, unused=1))(
      params, state)
  assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_state_bytes_follow_the_format():
  params = {"w": jnp.zeros((256, 512))}
  sizes = {}
  for name, make in ALL_PRESETS.items():
    state = jax.eval_shape(make(1e-3).init, params)
    sizes[name] = qm.nbytes(state.inner_states["muon"]) / (256 * 512)
  assert sizes["muon"] >= 4.0
  assert sizes["muon_8bit"] <= 1.005
  assert sizes["muon_4bit"] <= 0.505
  assert sizes["muonq"] <= 0.57
  assert sizes["muon_grasp"] <= 0.68


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match="scheme"):
    qm.muon_8bit(1e-3, scheme="log")
  with pytest.raises(ValueError, match="nonsense"):
    qm.muonq(1e-3, nonsense=1)
  with pytest.raises(ValueError, match="residual_granularity"):
    qm.muonq(1e-3, residual_granularity="row")
  with pytest.raises(ValueError, match="tile"):
    qm.muon_grasp(1e-3, tile=0)
  with pytest.raises(ValueError, match="block_size"):
    qm.muon_8bit(1e-3, block_size=-4)
  with pytest.raises(ValueError, match="rank"):
    tx = qm.quantized_muon(1e-3, momentum_format=qm.formats.Subspace(rank=100),
                           min_size=0)
    tx.init({"w": jnp.zeros((8, 32))})
  with pytest.raises(ValueError, match="static_args"):
    tx = optax.inject_hyperparams(qm.muon_8bit)(learning_rate=1e-3,
                                                min_size=0)
    jax.jit(tx.update)(_params(), tx.init(_params()), _params())
  with pytest.raises(ValueError, match="MuonDimensionNumbers"):
    tx = qm.muon(1e-3, labels={"w": "muon"})
    tx.init({"w": jnp.zeros((2, 8, 32))})


TWIN_CASES = {
    "muon_8bit": (qm.muon_8bit, qm.formats.Float(), dict(
        accumulation="sum", nesterov=True)),
    "muon_4bit": (qm.muon_4bit, qm.formats.Float(), dict(
        accumulation="sum", nesterov=False)),
    "muonq": (qm.muonq, qm.formats.Float(), dict(
        accumulation="sum", nesterov=False, normalize=True)),
    "muon_grasp": (qm.muon_grasp, qm.formats.Float(), dict(
        accumulation="sum", nesterov=False)),
}


@pytest.mark.parametrize("name", sorted(TWIN_CASES))
def test_full_precision_twin_is_the_preset_with_float_storage(name):
  preset, fmt, options = TWIN_CASES[name]
  twin = qm.full_precision_twin(preset)
  assert twin.__name__ == f"{name}_fp32"
  assert inspect.signature(twin) == inspect.signature(preset)
  by_hand = qm.quantized_muon(LR, momentum_format=fmt, consistent_rms=0.2,
                              min_size=0,
                              weight_decay=0.1, **options)
  ours, _ = _run(twin(LR, min_size=0, weight_decay=0.1), _grads())
  theirs, _ = _run(by_hand, _grads())
  for a, b in zip(ours, theirs, strict=True):
    np.testing.assert_array_equal(a, b)
  state = twin(LR, min_size=0).init({"w": jnp.zeros(SHAPE)})
  assert all(isinstance(s.format, qm.formats.Float) for s in jax.tree.leaves(
      state, is_leaf=qm.formats.is_stored) if qm.formats.is_stored(s))


def test_full_precision_twin_works_under_inject_hyperparams():
  twin = qm.full_precision_twin(qm.muonq)
  tx = optax.inject_hyperparams(twin)(learning_rate=LR)
  params = {"w": jnp.zeros(SHAPE)}
  _, state = tx.update({"w": jnp.asarray(_grads()[0])}, tx.init(params),
                       params)
  assert state.hyperparams["learning_rate"] == pytest.approx(LR)


@pytest.mark.parametrize("shape", [(768, 768), (768, 3072), (3072, 768),
                                   (4096, 4096), (4096, 11008)])
def test_muon_lowbit_state_bytes_per_matrix_parameter(shape):
  params = {"w": jax.ShapeDtypeStruct(shape, jnp.float32)}
  per_param = qm.nbytes(jax.eval_shape(qm.muon_lowbit(LR).init, params)) / (
      shape[0] * shape[1])
  assert 0.5 < per_param <= 0.62, per_param
  two_bit = qm.nbytes(jax.eval_shape(qm.muon_lowbit(LR, bits=2).init,
                                     params)) / (shape[0] * shape[1])
  assert two_bit <= 0.37, two_bit


@pytest.mark.parametrize("shape", [(768, 768), (768, 3072), (3072, 768),
                                   (4096, 11008)])
def test_muon_lowbit_rank_budget_spends_the_bytes_left(shape):
  params = {"w": jax.ShapeDtypeStruct(shape, jnp.float32)}
  default = qm.muon_lowbit.options(LR)[1].momentum_format
  budget = qm.muon_lowbit.options(LR, rank_budget=0.62)[1].momentum_format
  assert isinstance(budget, qm.formats.BudgetSubspace)
  per_param = qm.nbytes(jax.eval_shape(
      qm.muon_lowbit(LR, rank_budget=0.62).init, params)) / (
          shape[0] * shape[1])
  assert 0.615 < per_param <= 0.62, per_param
  assert budget.rank_for(shape) >= default.rank_for(shape)
  if shape[0] != shape[1]:
    assert budget.rank_for(shape) > 1.4 * default.rank_for(shape)


def test_muon_lowbit_is_its_recipe():
  tx = qm.muon_lowbit(LR, min_size=0)
  fmt = _muon_momentum(tx.init({"w": jnp.zeros(SHAPE)})).format
  assert fmt.rank_divisor == 20
  assert fmt.factors == qm.formats.Blockwise(bits=8, block_size=128)
  assert fmt.residual == qm.formats.Blockwise(
      bits=4, codebook="mulaw", companding="before_scale", block_size=128,
      scale_dtype=jnp.float16)
  two_bit = qm.muon_lowbit(LR, bits=2, min_size=0)
  fmt = _muon_momentum(two_bit.init({"w": jnp.zeros(SHAPE)})).format
  assert fmt.residual == qm.formats.Blockwise(
      bits=2, codebook="midrise", clip_rms=1.5, block_size=128,
      scale_dtype=jnp.float16)
  settings = qm.presets.twin_settings(qm.muon_lowbit, LR)
  assert (settings.accumulation, settings.normalize,
          settings.nesterov) == ("sum", True, True)


def _adam_moments(state) -> dict:
  """AdamW's ``mu`` and ``nu`` of the embedding in a preset's state."""
  adam = state.inner_states["adam"].inner_state
  if isinstance(adam, qm.transforms.QuantizedState):
    adam = adam.inner
  return {name: getattr(adam[0], name)["embed"]["embedding"]
          for name in ("mu", "nu")}


def test_muon_lowbit_stores_adam_state_in_8_bits():
  """muon_lowbit's AdamW moments of the embedding are 8-bit blockwise
  codes (bitsandbytes' maps); its twin and ``adam_state_format=None`` keep
  them in float32; the default is the same optimizer as the formats passed
  by hand, bit for bit."""
  params = _params()
  grads = [jax.tree.map(lambda p, t=t: jnp.sin(p + t), params)
           for t in range(3)]

  def run(tx):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for g in grads:
      u, state = update(g, state, params)
      outs.append(np.asarray(u["embed"]["embedding"]))
    return outs, state

  ours, state = run(qm.muon_lowbit(LR, min_size=0))
  moments = _adam_moments(state)
  assert moments["mu"].stored.format == qm.formats.Blockwise(8, "dynamic")
  assert moments["nu"].stored.format == qm.formats.Blockwise(
      8, "unsigned_dynamic")
  assert all(m.stored["codes"].dtype == jnp.uint8 for m in moments.values())
  by_hand, _ = run(qm.muon_lowbit(
      LR, min_size=0, adam_state_format={
          "mu": qm.formats.Blockwise(8, "dynamic"),
          "nu": qm.formats.Blockwise(8, "unsigned_dynamic")}))
  for a, b in zip(ours, by_hand, strict=True):
    np.testing.assert_array_equal(a, b)
  exact = None
  for tx in (qm.full_precision_twin(qm.muon_lowbit)(LR, min_size=0),
             qm.muon_lowbit(LR, min_size=0, adam_state_format=None)):
    outs, state = run(tx)
    assert all(m.dtype == jnp.float32 and m.shape == (50, 16)
               for m in _adam_moments(state).values())
    exact = exact or outs
    for a, b in zip(outs, exact, strict=True):
      np.testing.assert_array_equal(a, b)
  # Quantized, so not the float32 updates, but close to them.
  errs = [np.linalg.norm(a - b) / np.linalg.norm(b)
          for a, b in zip(ours[1:], exact[1:], strict=True)]
  assert 0 < max(errs) < 0.05, errs


@pytest.mark.parametrize("preset", [
    qm.muon_lowbit, qm.full_precision_twin(qm.muon_lowbit)])
def test_muon_lowbit_two_bit_keeps_weights_with_zero_gradients(preset):
  """A column whose gradient is always exactly zero (a dead ReLU unit's)
  stays at zero, as in the float32 twin. The 2-bit residual's midrise
  codes have no zero level: zeros inside a group decoded to +scale/3, and
  the column drifted (mean |W| as the live columns' after 30 steps)."""
  tx = preset(1e-2, bits=2, min_size=0, impl="xla")
  shape = (16, 128)
  params = {"w": jnp.zeros(shape)}
  state = jax.jit(tx.init)(params)
  step = jax.jit(tx.update)
  for g in jax.random.normal(jax.random.key(0), (4, *shape)):
    updates, state = step({"w": g.at[:, 5].set(0.0)}, state, params)
    params = optax.apply_updates(params, updates)
  w = np.asarray(params["w"])
  assert np.all(w[:, 5] == 0), np.abs(w[:, 5]).mean()
  assert np.abs(w).mean() > 1e-3


def test_the_registry_names_every_variant_and_its_twin():
  from quantmuon import registry
  assert registry.get("muon_lowbit_2bit").options(LR)[1] == \
      qm.muon_lowbit.options(LR, bits=2)[1]
  twin = registry.get("muon_8bit_dynamic_fp32")
  assert twin.options(LR)[1] == qm.presets.twin_settings(
      qm.muon_8bit, LR, scheme="dynamic")
  assert registry.twin_of("muonq") == "muonq_fp32"
  assert registry.twin_of("muon") is None
  assert registry.get("muonq").quantized
  assert not registry.get("muon").quantized
  with pytest.raises(ValueError, match="unknown preset 'muon_3bit'"):
    registry.get("muon_3bit")
