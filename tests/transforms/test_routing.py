"""Routing of parameters between Muon and AdamW."""

import jax.numpy as jnp

import quantmuon as qm


def test_default_labels():
  params = {
      "wte": jnp.zeros((10, 4)),
      "embed_tokens": {"embedding": jnp.zeros((10, 4))},
      "blocks": [{"attn": {"kernel": jnp.zeros((4, 4)),
                           "bias": jnp.zeros((4,))}}],
      "lm_head": {"kernel": jnp.zeros((4, 10))},
      "head": jnp.zeros((4, 3)),
      "conv": jnp.zeros((3, 3, 2, 4)),
      "scalar": jnp.zeros(()),
  }
  labels = qm.muon_labels(params)
  assert labels["wte"] == "adam"
  assert labels["embed_tokens"]["embedding"] == "adam"
  assert labels["blocks"][0]["attn"]["kernel"] == "muon"
  assert labels["blocks"][0]["attn"]["bias"] == "adam"
  assert labels["lm_head"]["kernel"] == "adam"
  assert labels["head"] == "adam"
  assert labels["conv"] == "muon"
  assert labels["scalar"] == "adam"


def test_override_with_a_tree_or_a_callable():
  params = {"a": jnp.ones((8, 8)), "b": jnp.ones((8, 8))}
  tree = {"a": "adam", "b": "muon"}
  for labels in (tree, lambda p: tree):
    tx = qm.muon(1e-2, labels=labels)
    state = tx.init(params)
    updates, _ = tx.update(params, state, params)
    # AdamW's first step moves every entry by about the learning rate.
    assert jnp.allclose(jnp.abs(updates["a"]), 1e-2, rtol=1e-3)
    assert not jnp.allclose(jnp.abs(updates["b"]), 1e-2, rtol=1e-3)
