"""``leafwise_muon`` and the leafwise presets against the chain, bit for bit."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

import quantmuon as qm
from quantmuon.transforms import schedule

PRESETS = {
    "muon": qm.muon,
    "muon_8bit": qm.muon_8bit,
    "muon_4bit": qm.muon_4bit,
    "muonq": qm.muonq,
    "muon_grasp": qm.muon_grasp,
    "muon_lowbit": qm.muon_lowbit,
    "quantized_muon": qm.quantized_muon,
}
STEPS = 3


def _params() -> dict:
  """Matrices above min_size (two of one shape), two below, a conv kernel,
  AdamW leaves."""
  rng = np.random.default_rng(0)
  shapes = {"a": (96, 80), "a2": (96, 80), "b": (64, 160),
            "small": (16, 16), "small2": (16, 16),
            "conv": {"kernel": (3, 3, 16, 32)}, "bias": (80,),
            "wte": {"embedding": (50, 16)}}
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
      is_leaf=lambda s: isinstance(s, tuple))


def _run(tx: optax.GradientTransformation, params: dict
         ) -> tuple[list[dict], optax.OptState]:
  state = tx.init(params)
  update = jax.jit(tx.update)
  outs = []
  for t in range(STEPS):
    grads = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 2)) + 0.1 * p,
                         params)
    updates, state = update(grads, state, params)
    outs.append(updates)
    params = optax.apply_updates(params, updates)
  return outs, state


def _assert_same(ours, theirs) -> None:
  leaves, treedef = jax.tree.flatten(ours)
  assert treedef == jax.tree.structure(theirs)
  for a, b in zip(leaves, jax.tree.leaves(theirs), strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _muon_parts(state) -> tuple:
  """The chain's state without the stateless transforms' empty states."""
  inner = state.inner_states["muon"].inner_state
  return tuple(s for s in inner if not isinstance(s, optax.EmptyState))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_equals_its_chain_bit_for_bit(name):
  params = _params()
  kw = dict(weight_decay=0.1, min_size=1024)
  ours, s_ours = _run(PRESETS[name](0.01, **kw), params)
  theirs, s_theirs = _run(PRESETS[name](0.01, pipeline="chain", **kw),
                          params)
  for u_ours, u_theirs in zip(ours, theirs, strict=True):
    _assert_same(u_ours, u_theirs)
  assert isinstance(_muon_parts(s_ours)[0],
                    qm.transforms.QuantizedMomentumState)
  _assert_same(_muon_parts(s_ours), _muon_parts(s_theirs))
  _assert_same(s_ours.inner_states["adam"], s_theirs.inner_states["adam"])


def test_leafwise_muon_equals_the_three_transforms():
  params = {"w": jnp.ones((40, 24)), "conv": jnp.ones((3, 3, 8, 16))}
  dims = {"w": None, "conv": MuonDimensionNumbers((0, 1, 2), 3)}
  kw = dict(beta=0.9, nesterov=True, accumulation="sum", min_size=0,
            momentum_format=qm.formats.Blockwise(bits=4, block_size=64))
  ours = qm.transforms.leafwise_muon(**kw, ns_coeffs="polar_express",
                          consistent_rms=0.2, dimension_numbers=dims)
  theirs = optax.chain(
      qm.transforms.scale_by_quantized_momentum(**kw, dimension_numbers=dims),
      qm.transforms.orthogonalize(ns_coeffs="polar_express",
                                  dimension_numbers=dims),
      qm.transforms.scale_by_shape(consistent_rms=0.2, dimension_numbers=dims))
  u_ours, s_ours = _run(ours, params)
  u_theirs, s_theirs = _run(theirs, params)
  _assert_same(u_ours, u_theirs)
  _assert_same(s_ours, s_theirs[0])
  assert not np.allclose(u_ours[-1]["w"], u_ours[0]["w"])


def test_leafwise_muon_names_the_mismatched_tree():
  tx = qm.transforms.leafwise_muon()
  state = tx.init({"w": jnp.ones((8, 8))})
  with pytest.raises(ValueError, match="leafwise_muon: the updates have 2"):
    tx.update({"w": jnp.ones((8, 8)), "v": jnp.ones((8, 8))}, state)


def test_pipeline_names_its_choices():
  with pytest.raises(ValueError, match="pipeline"):
    qm.muon(1e-3, pipeline="fused")


def test_in_order_gives_each_result_in_its_own_cond():
  xs = [jnp.array([jnp.nan, 1.0]), jnp.ones((2, 3)), jnp.zeros(())]
  empty = [(jnp.zeros((0, 3)),)]
  def f(i, x):
    return x * 2 + i
  units = [(x,) for x in xs]
  run = jax.jit(lambda units: schedule.in_order(f, units))
  for ours, x, i in zip(run(units), xs, range(3), strict=True):
    np.testing.assert_array_equal(ours, f(i, x))
  jaxpr = jax.make_jaxpr(lambda units: schedule.in_order(f, units))(units)
  assert sum(e.primitive.name == "cond" for e in jaxpr.eqns) == len(xs)
  assert schedule.in_order(f, empty)[0].shape == (0, 3)


def test_over_matrices_is_one_loop_of_a_python_loop():
  """Outputs and carried values of a loop over a stack equal a Python loop
  over its matrices, and the function is traced for one matrix only."""
  xs = jnp.arange(4 * 2 * 3, dtype=jnp.float32).reshape(4, 2, 3)
  carried = {"m": jnp.ones((4, 2, 3)), "s": jnp.zeros((4,))}
  traces = []

  def fn(b, x, c):
    traces.append(x.shape)
    return (x * 2 + b, jnp.sum(x)), {"m": c["m"] + x, "s": c["s"] + b}

  (ys, sums), new = jax.jit(
      lambda xs, cs: schedule.over_matrices(fn, xs, cs))(xs, carried)
  for b in range(4):
    np.testing.assert_array_equal(ys[b], xs[b] * 2 + b)
    assert sums[b] == jnp.sum(xs[b])
    np.testing.assert_array_equal(new["m"][b], 1 + xs[b])
    assert new["s"][b] == b
  assert set(traces) == {(2, 3)}
  jaxpr = jax.make_jaxpr(
      lambda xs, cs: schedule.over_matrices(fn, xs, cs))(xs, carried)
  names = [e.primitive.name for e in jaxpr.eqns]
  assert names.count("while") + names.count("scan") == 1


def test_over_matrices_copies_no_stack_per_matrix():
  """A loop that updated the carried stack in place made XLA's CPU program
  copy the whole stack twice in every iteration (read and write in
  separate fusions): the compiled loop body holds no copy of a stack."""
  xs = jax.ShapeDtypeStruct((4, 64, 32), jnp.float32)

  def fn(b, x, c):
    m = 0.9 * c + x
    return m @ m.T @ m, m

  hlo = jax.jit(lambda xs, cs: schedule.over_matrices(fn, xs, cs)).lower(
      xs, xs).compile().as_text()
  body = re.search(r" while\(.*body=(%[\w.]+)", hlo).group(1)
  block = hlo[hlo.index(f"\n{body} "):]
  block = block[:block.index("\n}")]
  copies = [line for line in block.splitlines()
            if re.search(r"= f32\[4,64,32\]\S* copy\(", line)]
  assert not copies, copies


@pytest.mark.parametrize("name", ["muon", "muonq"])
def test_training_step_frees_each_gradient_after_its_update(name):
  # A training step (gradient, update, apply; params and state donated) of
  # six same-shape layers. Leaf by leaf, each layer's update runs once the
  # backward pass has its gradient; the chain emits every momentum at
  # once. Measured (before issue 22): 1.7 / 1.6 float32 copies of the six
  # gradients leaf by leaf, 3.2 / 4.9 chained (muon / muonq).
  layers, d = 6, 256
  params = {f"w{i}": jax.ShapeDtypeStruct((d, d), jnp.float32)
            for i in range(layers)}
  x = jax.ShapeDtypeStruct((8, d), jnp.float32)

  def loss(params, x):
    for i in range(layers):
      x = jnp.tanh(x @ params[f"w{i}"])
    return jnp.sum(x ** 2)

  def temporaries(pipeline):
    tx = PRESETS[name](1e-3, pipeline=pipeline, min_size=0)

    def step(params, state, x):
      updates, state = tx.update(jax.grad(loss)(params, x), state, params)
      return optax.apply_updates(params, updates), state

    state = jax.eval_shape(tx.init, params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        params, state, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes / (
        layers * d * d * 4)

  leafwise = temporaries("leafwise")
  assert leafwise < 2.0
  assert leafwise < 0.6 * temporaries("chain")


def test_eager_updates_compile_once():
  """An un-jitted update (nnx.Optimizer outside nnx.jit) compiles on its
  first call only."""
  compiles = []

  def listen(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    params = {f"w{i}": jnp.ones((64, 64)) * (i + 1) for i in range(4)}
    tx = qm.muon_8bit(1e-2, min_size=0)
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    first = len(compiles)
    for _ in range(2):
      _, state = tx.update(params, state, params)
    assert first > 0 and len(compiles) == first
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
