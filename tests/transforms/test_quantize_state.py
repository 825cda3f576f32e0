"""quantize_state: any optax optimizer's state stored in a format."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import quantmuon as qm
from quantmuon import formats

ADAM8 = {"mu": formats.Blockwise(8, "dynamic"),
         "nu": formats.Blockwise(8, "unsigned_dynamic")}


def _params(rng, shape=(64, 96)):
  return {"w": jnp.asarray(rng.normal(size=shape), jnp.float32),
          "b": jnp.asarray(rng.normal(size=shape[-1:]), jnp.float32)}


def _grads(params, t):
  return jax.tree.map(lambda p: jnp.sin(3.0 * p + 0.7 * t) + 0.1 * p, params)


def _run(tx, params, steps, jit=True):
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  outs, states = [], [state]
  for t in range(steps):
    u, state = update(_grads(params, t), state, params)
    params = optax.apply_updates(params, u)
    outs.append(u)
    states.append(state)
  return outs, states


def _structure(state):
  leaves, treedef = jax.tree.flatten(state)
  return treedef, [(x.shape, x.dtype) for x in leaves]


@pytest.mark.parametrize("inner", [
    optax.adamw(1e-2, weight_decay=0.1),
    optax.sgd(1e-2, momentum=0.9),
    optax.lion(1e-3, weight_decay=0.1),
], ids=["adamw", "sgd_momentum", "lion"])
def test_float_format_is_bit_for_bit_the_inner_optimizer(rng, inner):
  params = _params(rng)
  want, _ = _run(inner, params, 5)
  got, states = _run(qm.quantize_state(inner, formats.Float(), min_size=0),
                     params, 5)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(isinstance(x, qm.transforms.StoredLeaf) for x in jax.tree.leaves(
      states[-1], is_leaf=lambda x: isinstance(x, qm.transforms.StoredLeaf)))
  first = _structure(states[0])
  assert all(_structure(s) == first for s in states[1:])


def test_eight_bit_adamw_bytes_and_cosine(rng):
  params = {"w": jnp.asarray(rng.normal(size=(512, 512)), jnp.float32)}
  tx = qm.quantize_state(optax.adamw(1e-3), ADAM8)
  state = tx.init(params)
  assert qm.nbytes(state) / params["w"].size <= 2.01
  want, _ = _run(optax.adamw(1e-3), params, 20)
  got, states = _run(tx, params, 20)
  for a, b in zip(want, got, strict=True):
    a, b = np.ravel(a["w"]), np.ravel(b["w"])
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine > 0.995  # measured: > 0.999
  assert _structure(states[-1]) == _structure(states[0])


def test_unsigned_map_never_decodes_a_positive_value_to_zero(rng):
  # Blocks spanning 30 decades: the small values sit far below the smallest
  # level times the absmax scale.
  x = np.abs(rng.normal(size=(64, 256))) * 10.0 ** rng.uniform(
      -30, 3, (64, 256))
  x = jnp.asarray(x, jnp.float32)
  for fmt in (formats.Blockwise(8, "unsigned_dynamic", block_size=256),
              formats.Blockwise(4, "unsigned_linear", block_size=128),
              formats.Blockwise(8, "unsigned_dynamic", rounding="stochastic"),
              formats.Axiswise(4, "unsigned_linear")):
    y = fmt.decode(fmt.encode(x, key=jax.random.key(0)))
    assert bool(jnp.all(y > 0)), fmt


def test_unsigned_second_moment_keeps_adam_updates_bounded():
  """A signed map decodes a small second moment to zero, and once its
  gradient stops, the update divides a non-zero momentum by eps; the
  unsigned map cannot."""
  big = jnp.full((1,), 1e3)
  first = jnp.concatenate([big, jnp.full((4095,), 1e-2)])
  later = jnp.concatenate([big, jnp.zeros((4095,))])
  params = {"w": jnp.zeros((4096,))}
  sizes = {}
  for codebook in ("dynamic", "unsigned_dynamic"):
    tx = qm.quantize_state(optax.adam(1.0), {
        "mu": formats.Blockwise(8, "dynamic"),
        "nu": formats.Blockwise(8, codebook)})
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in (first, later, later):
      u, state = update({"w": g}, state)
    sizes[codebook] = float(jnp.max(jnp.abs(u["w"])))
  assert sizes["unsigned_dynamic"] < 10.0
  assert sizes["dynamic"] > 1e3


def test_field_names_small_and_integer_leaves(rng):
  params = {"big": jnp.zeros((64, 128)), "small": jnp.zeros((8,))}
  tx = qm.quantize_state(optax.adam(1e-3),
                         {"mu": formats.Blockwise(8, "dynamic"), "nu": None},
                         min_size=4096)
  adam = tx.init(params).inner[0]
  assert isinstance(adam.mu["big"], qm.transforms.StoredLeaf)
  assert isinstance(adam.mu["small"], jax.Array)  # under min_size
  assert isinstance(adam.nu["big"], jax.Array)  # mapped to None
  assert adam.count.dtype == jnp.int32
  # Parameter names that clash with state fields do not confuse the lookup.
  clash = {"mu": jnp.zeros((64, 64)), "count": jnp.zeros((64, 64))}
  state = qm.quantize_state(optax.adam(1e-3), {"nu": formats.Float()},
                            min_size=0).init(clash)
  adam = state.inner[0]
  assert isinstance(adam.nu["mu"], qm.transforms.StoredLeaf)
  assert not isinstance(adam.mu["mu"], qm.transforms.StoredLeaf)


def test_callable_format_sees_paths():
  seen = []

  def pick(path, leaf):
    seen.append(jax.tree_util.keystr(path))
    return formats.Float(jnp.bfloat16) if "nu" in seen[-1] else None

  state = qm.quantize_state(optax.adam(1e-3), pick, min_size=0).init(
      {"w": jnp.zeros((4, 4))})
  assert any(".mu" in s for s in seen) and any(".nu" in s for s in seen)
  assert state.inner[0].nu["w"].stored.format == formats.Float(jnp.bfloat16)


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match="'mue'"):
    qm.quantize_state(optax.adam(1e-3), {"mue": formats.Float()}).init(
        {"w": jnp.zeros(3)})
  with pytest.raises(ValueError, match="state_format"):
    qm.quantize_state(optax.adam(1e-3), "int8")
  with pytest.raises(ValueError, match=r"state_format\['mu'\]"):
    qm.quantize_state(optax.adam(1e-3), {"mu": 8})
  with pytest.raises(ValueError, match="min_size"):
    qm.quantize_state(optax.adam(1e-3), formats.Float(), min_size=-1)
  with pytest.raises(ValueError, match="mantissa_bits"):
    qm.quantize_state(optax.adam(1e-3), formats.FloatingPoint(8, 3),
                      mantissa_bits=5, min_size=0).init({"w": jnp.zeros(4)})


def test_floating_point_state_with_a_schedule(rng):
  fmt = formats.FloatingPoint(8, 10)
  sched = qm.fp.log_mantissa_schedule(1, 10)
  tx = qm.quantize_state(optax.adam(1e-2), {"mu": fmt}, min_size=0,
                         mantissa_bits=sched)
  params = _params(rng)
  _, states = _run(tx, params, 6)
  for t, state in enumerate(states[1:]):
    mu = state.inner[0].mu["w"].stored.decode()
    assert bool(jnp.all(fmt.round(mu, mantissa_bits=sched(t)) == mu))
  # Muon's momentum the same way: wrapping a float32 momentum and storing
  # it in FloatingPoint gives the momentum transform with that format.
  direct = qm.transforms.scale_by_quantized_momentum(
      momentum_format=formats.FloatingPoint(8, 3), min_size=0)
  wrapped = qm.quantize_state(
      qm.transforms.scale_by_quantized_momentum(momentum_format=formats.Float(),
                                     min_size=0),
      formats.FloatingPoint(8, 3), min_size=0)
  a, _ = _run(direct, params, 4)
  b, _ = _run(wrapped, params, 4)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_stochastic_keys_follow_seed_and_count(rng):
  fmt = formats.FloatingPoint(8, 3, "stochastic")
  params = _params(rng)

  txs = {seed: qm.quantize_state(optax.adam(1e-2), {"mu": fmt}, min_size=0,
                                 seed=seed) for seed in (0, 1)}
  updates = {seed: jax.jit(tx.update) for seed, tx in txs.items()}

  def run(seed, resume_at=None):
    state = txs[seed].init(params)
    for t in range(3):
      if t == resume_at:  # a restored checkpoint
        state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)
      _, state = updates[seed](_grads(params, t), state, params)
    return state

  base = jax.tree.leaves(run(0))
  for a, b in zip(base, jax.tree.leaves(run(0, resume_at=2)), strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in
             zip(base, jax.tree.leaves(run(1)), strict=True))


# -- composition with optax's wrappers -------------------------------------


def test_under_jit_and_cond(rng):
  params = _params(rng)
  tx = qm.quantize_state(optax.adamw(1e-2), ADAM8, min_size=0)
  state = tx.init(params)

  @jax.jit
  def step(flag, state):
    return jax.lax.cond(
        flag, lambda s: tx.update(_grads(params, 0), s, params)[1],
        lambda s: s, state)

  same = step(False, state)
  moved = step(True, state)
  assert _structure(same) == _structure(moved) == _structure(state)
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(state),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def test_inject_hyperparams_both_ways(rng):
  params = _params(rng)
  outer = optax.inject_hyperparams(
      lambda learning_rate: qm.quantize_state(
          optax.adamw(learning_rate), ADAM8, min_size=0))(learning_rate=1e-2)
  inner = qm.quantize_state(
      optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2), ADAM8,
      min_size=0)
  a, sa = _run(outer, params, 3)
  b, sb = _run(inner, params, 3)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  stored = sb[-1].inner.inner_state[0]
  assert isinstance(stored.nu["w"], qm.transforms.StoredLeaf)
  assert float(sa[-1].hyperparams["learning_rate"]) == pytest.approx(1e-2)


def test_multi_steps(rng):
  params = _params(rng)
  tx = optax.MultiSteps(qm.quantize_state(optax.adamw(1e-2), ADAM8,
                                          min_size=0), every_k_schedule=2)
  outs, states = _run(tx, params, 4)
  assert not np.any(np.asarray(outs[0]["w"]))  # accumulating
  assert np.any(np.asarray(outs[1]["w"]))  # applied
  assert int(states[-1].inner_opt_state.count) == 2
  assert all(_structure(s) == _structure(states[0]) for s in states)


def test_apply_if_finite_leaves_state_unchanged_on_a_bad_step(rng):
  params = _params(rng)
  tx = optax.apply_if_finite(
      qm.quantize_state(optax.adamw(1e-2), ADAM8, min_size=0), 3)
  state = tx.init(params)
  update = jax.jit(tx.update)
  _, state = update(_grads(params, 0), state, params)
  bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), _grads(params, 1))
  u, after = update(bad, state, params)
  assert not bool(after.notfinite_count == 0)
  for a, b in zip(jax.tree.leaves(after.inner_state),
                  jax.tree.leaves(state.inner_state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(u))


def test_preset_adam_state_format():
  params = {"embed": jnp.zeros((256, 64)), "w": jnp.zeros((64, 64)),
            "b": jnp.zeros((64,))}
  tx = qm.quantized_muon(1e-2, adam_state_format=ADAM8)
  state = tx.init(params)
  stored = [x for x in jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, qm.transforms.StoredLeaf))
      if isinstance(x, qm.transforms.StoredLeaf)]
  assert len(stored) == 2  # mu and nu of the embedding; the bias is small
  grads = jax.tree.map(jnp.ones_like, params)
  u, new = jax.jit(tx.update)(grads, state, params)
  assert _structure(new) == _structure(state)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
  for name in ("muon_8bit", "muonq"):
    getattr(qm, name)(1e-2, adam_state_format=ADAM8).init(params)


def test_fields_without_leaves_are_fields():
  """AdamW's state on a model whose every leaf is Muon's has ``mu`` and
  ``nu`` fields but no leaf in them: not an unknown field (the default
  of ``muon_lowbit`` raised), while a misspelt field still raises."""
  params = {"w": jnp.zeros((64, 64)), "v": jnp.zeros((64, 128))}
  for tx in (qm.quantized_muon(1e-2, adam_state_format=ADAM8),
             qm.muon_lowbit(1e-2)):
    state = tx.init(params)
    assert not any(isinstance(x, qm.transforms.StoredLeaf)
                   for x in jax.tree.leaves(
                       state, is_leaf=lambda x: isinstance(
                           x, qm.transforms.StoredLeaf)))
    tx.update(params, state, params)
  masked = optax.partition({"a": qm.quantize_state(optax.adam(1e-3), ADAM8),
                            "b": optax.sgd(1e-3)}, {"w": "b"})
  masked.init({"w": jnp.zeros(8)})
  with pytest.raises(ValueError, match="'mue'"):
    optax.partition(
        {"a": qm.quantize_state(optax.adam(1e-3), {"mue": formats.Float()}),
         "b": optax.sgd(1e-3)}, {"w": "b"}).init({"w": jnp.zeros(8)})


def test_state_round_trips_through_orbax(rng, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  params = _params(rng)
  tx = qm.quantize_state(optax.adamw(1e-2), ADAM8, min_size=0)
  _, states = _run(tx, params, 1)
  state = states[-1]
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "state", state)
    ckptr.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = ckptr.restore(tmp_path / "state", abstract)
  assert _structure(restored) == _structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _round_mantissa(x: np.ndarray, m: int) -> np.ndarray:
  """numpy reference: x rounded to m mantissa bits, ties to even."""
  a = np.abs(np.asarray(x, np.float64))
  spacing = 2.0 ** (np.floor(np.log2(np.where(a > 0, a, 1.0))) - m)
  return np.sign(x) * np.round(a / spacing) * spacing


def test_nested_and_sibling_wrappers_quantize_their_own_fields():
  # trace -> adam, each wrapped for one field at its own width, and an
  # outer wrapper for nu around both. Dyadic gradients and moment decays
  # keep the float32 arithmetic exact, so the numpy reference is exact.
  fp32 = formats.FloatingPoint(8, 23)
  widths = {"trace": 3, "mu": 1, "nu": 2}
  tx = qm.quantize_state(
      optax.chain(
          qm.quantize_state(optax.trace(0.5), {"trace": fp32}, min_size=0,
                            mantissa_bits=widths["trace"]),
          qm.quantize_state(optax.scale_by_adam(b1=0.5, b2=0.75),
                            {"mu": fp32}, min_size=0,
                            mantissa_bits=widths["mu"])),
      {"nu": fp32}, min_size=0, mantissa_bits=widths["nu"])
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  want = {k: np.zeros(3) for k in widths}
  plain = {k: np.zeros(3) for k in widths}  # nothing rounded

  def step(m, g, bits):
    trace = g + 0.5 * m["trace"]  # also the update adam sees
    return {"trace": _round_mantissa(trace, bits["trace"]),
            "mu": _round_mantissa(0.5 * trace + 0.5 * m["mu"], bits["mu"]),
            "nu": _round_mantissa(0.25 * trace ** 2 + 0.75 * m["nu"],
                                  bits["nu"])}

  for t in range(4):
    g = np.array([0.8125, -1.375, 2.5625]) * (1 + 0.5 * t)
    _, state = update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    want = step(want, g, widths)
    plain = step(plain, g, dict.fromkeys(widths, 52))
  trace_state, adam_state = state.inner
  got = {"trace": trace_state.inner.trace["w"],
         "mu": adam_state.inner.mu["w"],
         "nu": adam_state.inner.nu["w"]}
  for name, leaf in got.items():
    assert isinstance(leaf, qm.transforms.StoredLeaf), name
    assert leaf.depth == (1 if name == "nu" else 0), name
    np.testing.assert_array_equal(np.asarray(leaf.stored.decode()),
                                  want[name], err_msg=name)
    assert not np.array_equal(want[name], plain[name]), name


def test_hyperparameters_and_scalars_are_never_quantized():
  # With min_size <= 1 and one format for everything, b2 = 0.999 would be
  # stored as 1.0 in FloatingPoint(4, 3) (the first update is NaN), and a
  # learning rate of -3e-4 as -2.979e-4 in Blockwise(8, "dynamic").
  params = {"w": jnp.linspace(-1.0, 1.0, 8), "s": jnp.float32(0.5)}
  grads = {"w": jnp.linspace(0.3, -0.7, 8), "s": jnp.float32(0.25)}
  for fmt, lr in ((formats.FloatingPoint(4, 3), 1e-2),
                  (formats.Blockwise(8, "dynamic"), -3e-4)):
    tx = qm.quantize_state(
        optax.inject_hyperparams(optax.adam)(learning_rate=lr, b2=0.999),
        fmt, min_size=1)
    state = tx.init(params)
    u, state = jax.jit(tx.update)(grads, state, params)
    hyper = state.inner.hyperparams
    assert float(hyper["b2"]) == np.float32(0.999)
    assert float(hyper["learning_rate"]) == np.float32(lr)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(u))
    adam = state.inner.inner_state[0]
    assert isinstance(adam.mu["w"], qm.transforms.StoredLeaf)
    assert isinstance(adam.mu["s"], jax.Array)  # 0-D: as it is
  # A hyperparameter held as an array is left alone too.
  tx = qm.quantize_state(
      optax.inject_hyperparams(optax.sgd)(learning_rate=jnp.full(8, 0.1)),
      formats.FloatingPoint(4, 3), min_size=1)
  lr = tx.init(params).inner.hyperparams["learning_rate"]
  assert isinstance(lr, jax.Array) and lr.shape == (8,)


def test_init_encodes_from_the_parameters_not_constants():
  """The moments' codes are computed when init runs, not folded into the
  program: encoded from the inner init's constant zeros, XLA evaluated
  the encode element by element while compiling (seconds per instruction
  at a 4096 x 256 embedding)."""
  tx = qm.quantize_state(optax.adam(1e-3),
                         formats.Blockwise(bits=8, codebook="dynamic"))
  params = {"embedding": jnp.ones((512, 32))}
  hlo = jax.jit(tx.init).lower(params).compile().as_text()
  folded = re.findall(  # codes made from constants alone
      r"= u8\[[\d,]+\]\S* (?:fusion|broadcast)\((?:%constant[\w.]*(?:, )?)+\)",
      hlo)
  assert "u8[512,32]" in hlo and not folded, folded
