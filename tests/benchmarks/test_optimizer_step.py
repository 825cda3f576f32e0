"""benchmarks/optimizer_step.py's trees and reference on tiny shapes: the
stacked layout holds the unscanned one's layers, and both sides treat the
layer axis as a batch of matrices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import quantmuon as qm
from benchmarks import optimizer_step


def _grads(params):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  return jax.tree.unflatten(treedef, [
      jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)])


def _stack(grads, layers):
  blocks = [grads[f"block_{i}"] for i in range(layers)]
  out = {k: v for k, v in grads.items() if not k.startswith("block_")}
  out[optimizer_step.STACK_KEY] = jax.tree.map(
      lambda *xs: jnp.stack(xs), *blocks)
  return out


def test_stacked_tree_routes_the_same_matrices():
  flat = optimizer_step.gpt_params(8, layers=2, vocab=16)
  stacked = optimizer_step.gpt_params(8, layers=2, vocab=16, stacked=True)
  assert jax.tree.map(jnp.shape, _stack(flat, 2)) == jax.tree.map(
      jnp.shape, stacked)
  labels = qm.muon_labels(stacked, stack_axes={optimizer_step.STACK_KEY: 0})
  assert labels[optimizer_step.STACK_KEY]["mlp"]["fc1"]["kernel"] == "muon"
  assert labels[optimizer_step.STACK_KEY]["ln1"]["scale"] == "adam"
  assert labels["embed"]["embedding"] == "adam"


def test_optax_reference_orthogonalizes_each_stacked_layer_alone():
  flat = optimizer_step.gpt_params(8, layers=2, vocab=16)
  stacked = optimizer_step.gpt_params(8, layers=2, vocab=16, stacked=True)
  grads = _grads(flat)
  expected = {}
  for layout, params, g in (("flat", flat, grads),
                            ("stacked", stacked, _stack(grads, 2))):
    labels = qm.muon_labels(
        params, stack_axes={optimizer_step.STACK_KEY: 0}
        if layout == "stacked" else None)
    tx = optimizer_step.optax_muon(labels, stacked=layout == "stacked")
    expected[layout], _ = tx.update(g, tx.init(params), params)
  for got, want in zip(jax.tree.leaves(expected["stacked"]),
                       jax.tree.leaves(_stack(expected["flat"], 2)),
                       strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
