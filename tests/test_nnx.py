"""Flax NNX users train through ``nnx.Optimizer``: every quantmuon optimizer
works there, under ``nnx.jit`` and without it, and matches a plain optax loop
over the same parameters bit for bit."""

from __future__ import annotations

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import quantmuon as qm

STEPS = 20


class Tiny(nnx.Module):
  """An embedding, a hidden matrix and a head: both optimizers' leaves."""

  def __init__(self, rngs: nnx.Rngs):
    self.embed = nnx.Embed(11, 16, rngs=rngs)
    self.hidden = nnx.Linear(16, 32, rngs=rngs)
    self.head = nnx.Linear(32, 5, rngs=rngs)

  def __call__(self, tokens):
    return self.head(jax.nn.gelu(self.hidden(self.embed(tokens))))


def loss_fn(model, tokens, labels):
  logits = model(tokens)
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, labels).mean()


def batches():
  keys = jax.random.split(jax.random.key(1), STEPS)
  return [(jax.random.randint(k, (8,), 0, 11),
           jax.random.randint(jax.random.fold_in(k, 1), (8,), 0, 5))
          for k in keys]


def adamw_8bit():
  return qm.quantize_state(
      optax.adamw(1e-2),
      {"mu": qm.formats.Blockwise(8, "dynamic"),
       "nu": qm.formats.Blockwise(8, "unsigned_dynamic")}, min_size=0)


OPTIMIZERS = {
    "muon": lambda: qm.muon(1e-2),
    "muon_8bit": lambda: qm.muon_8bit(1e-2, min_size=0),
    "muon_4bit": lambda: qm.muon_4bit(1e-2, min_size=0),
    "muonq": lambda: qm.muonq(1e-2, min_size=0),
    "muon_grasp": lambda: qm.muon_grasp(1e-2, min_size=0),
    "quantized_muon": lambda: qm.quantized_muon(
        1e-2, momentum_format=qm.formats.Grid(bits=4, tile=8), min_size=0,
        adam_state_format=qm.formats.Blockwise(8, "dynamic")),
    "quantize_state_adamw": adamw_8bit,
    "inject_hyperparams": lambda: optax.inject_hyperparams(
        qm.muonq, static_args=("min_size",))(
        learning_rate=1e-2, min_size=0),
    "multi_steps": lambda: optax.MultiSteps(
        qm.muon_8bit(1e-2, min_size=0), every_k_schedule=2),
    "apply_if_finite": lambda: optax.apply_if_finite(
        qm.muon_grasp(1e-2, min_size=0), max_consecutive_errors=3),
}


def optax_loop(make, data):
  """The reference: ``tx.init`` / ``tx.update`` on ``nnx.split``'s params."""
  graphdef, params = nnx.split(Tiny(nnx.Rngs(0)), nnx.Param)
  params = nnx.to_pure_dict(params)
  tx = make()
  state = tx.init(params)

  @jax.jit
  def step(params, state, tokens, labels):
    def loss(p):
      model = nnx.merge(graphdef, nnx.State(p))
      return loss_fn(model, tokens, labels)
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for tokens, labels in data:
    params, state = step(params, state, tokens, labels)
  return params


def nnx_step(model, optimizer, tokens, labels):
  grads = nnx.grad(loss_fn)(model, tokens, labels)
  optimizer.update(model, grads)


jitted_nnx_step = nnx.jit(nnx_step)


def nnx_loop(make, data, jit=True):
  model = Tiny(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, make(), wrt=nnx.Param)
  step = jitted_nnx_step if jit else nnx_step
  for tokens, labels in data:
    step(model, optimizer, tokens, labels)
  return model, optimizer


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_nnx_optimizer_matches_the_optax_loop(name):
  data = batches()
  model, _ = nnx_loop(OPTIMIZERS[name], data)
  expected = optax_loop(OPTIMIZERS[name], data)
  assert_trees_equal(nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                     expected)


@pytest.mark.parametrize("name", ["muonq", "quantize_state_adamw"])
def test_nnx_optimizer_runs_without_jit(name):
  data = batches()[:3]
  eager, _ = nnx_loop(OPTIMIZERS[name], data, jit=False)
  jitted, _ = nnx_loop(OPTIMIZERS[name], data)
  for x, y in zip(jax.tree.leaves(nnx.state(eager, nnx.Param)),
                  jax.tree.leaves(nnx.state(jitted, nnx.Param)),
                  strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5,
                               atol=1e-6)


def test_nnx_optimizer_state_keeps_its_structure_and_dtypes():
  model = Tiny(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, qm.muonq(1e-2, min_size=0),
                            wrt=nnx.Param)
  before = nnx.state(optimizer, nnx.optimizer.OptState)
  tokens, labels = batches()[0]
  jitted_nnx_step(model, optimizer, tokens, labels)
  after = nnx.state(optimizer, nnx.optimizer.OptState)
  assert jax.tree.structure(before) == jax.tree.structure(after)
  assert ([x.dtype for x in jax.tree.leaves(before)]
          == [x.dtype for x in jax.tree.leaves(after)])


def test_nnx_optimizer_state_round_trips_through_orbax(tmp_path):
  data = batches()
  make = OPTIMIZERS["muon_grasp"]
  model, optimizer = nnx_loop(make, data[:10])
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", {"model": nnx.state(model),
                                   "optimizer": nnx.state(optimizer)})
    ckptr.wait_until_finished()
    # A fresh model and optimizer, restored, continue like the original.
    fresh_model = Tiny(nnx.Rngs(7))
    fresh = nnx.Optimizer(fresh_model, make(), wrt=nnx.Param)
    target = {"model": nnx.state(fresh_model), "optimizer": nnx.state(fresh)}
    restored = ckptr.restore(
        tmp_path / "ckpt",
        jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
  nnx.update(fresh_model, restored["model"])
  nnx.update(fresh, restored["optimizer"])
  assert_trees_equal(nnx.state(fresh), nnx.state(optimizer))
  for tokens, labels in data[10:]:
    jitted_nnx_step(model, optimizer, tokens, labels)
    jitted_nnx_step(fresh_model, fresh, tokens, labels)
  assert_trees_equal(nnx.state(fresh_model), nnx.state(model))
