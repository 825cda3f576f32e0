"""Routing of parameters between Muon and AdamW, on hand-made trees and on
real Flax NNX modules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optax.contrib import MuonDimensionNumbers

import quantmuon as qm
from quantmuon import routing


def nnx_params(module):
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def test_default_labels():
  params = {
      "wte": jnp.zeros((10, 4)),
      "embed_tokens": {"embedding": jnp.zeros((10, 4))},
      "blocks": [{"attn": {"kernel": jnp.zeros((4, 4)),
                           "bias": jnp.zeros((4,))}}],
      "lm_head": {"kernel": jnp.zeros((4, 10))},
      "head": jnp.zeros((4, 3)),
      "conv": {"kernel": jnp.zeros((3, 3, 2, 4))},
      "raw_3d": jnp.zeros((2, 5, 2)),
      "scalar": jnp.zeros(()),
  }
  labels = qm.muon_labels(params)
  assert labels["wte"] == "adam"
  assert labels["embed_tokens"]["embedding"] == "adam"
  assert labels["blocks"][0]["attn"]["kernel"] == "muon"
  assert labels["blocks"][0]["attn"]["bias"] == "adam"
  assert labels["lm_head"]["kernel"] == "adam"
  assert labels["head"] == "adam"
  assert labels["conv"]["kernel"] == "muon"
  # As optax.contrib.muon: a leaf of rank > 2 without dimension numbers.
  assert labels["raw_3d"] == "adam"
  assert labels["scalar"] == "adam"


@pytest.mark.parametrize("name,expected", [
    # Heads of Flax examples and LLaMA / GPT ports.
    ("head", "adam"), ("lm_head", "adam"), ("classifier", "adam"),
    ("out", "adam"), ("output", "adam"), ("unembed", "adam"),
    ("mlp_head", "adam"),
    # Embeddings, as modules or raw tables.
    ("embed", "adam"), ("wte", "adam"), ("wpe", "adam"),
    ("embed_tokens", "adam"), ("token_emb", "adam"),
    ("pos_embedding", "adam"), ("word_embeddings", "adam"),
    # Matrices that only look alike.
    ("embed_proj", "muon"), ("dense", "muon"), ("q_proj", "muon"),
    ("heads_proj", "muon"), ("mlp", "muon"),
])
def test_names(name, expected):
  as_module = {name: {"kernel": jnp.zeros((8, 8))}}
  as_raw = {name: jnp.zeros((8, 8))}
  assert qm.muon_labels(as_module)[name]["kernel"] == expected
  assert qm.muon_labels(as_raw)[name] == expected


def test_out_and_output_are_heads_only_at_the_top():
  w = {"kernel": jnp.zeros((8, 8))}
  params = {
      # BERT's attention.output.dense, an attention block's out projection.
      "attention": {"output": {"dense": w}},
      "blocks": [{"attn": {"out": w}}],
      # LLaMA's head, also under a linen-style "params" root.
      "output": w,
      "params": {"out": w},
  }
  labels = qm.muon_labels(params)
  assert labels["attention"]["output"]["dense"]["kernel"] == "muon"
  assert labels["blocks"][0]["attn"]["out"]["kernel"] == "muon"
  assert labels["output"]["kernel"] == "adam"
  assert labels["params"]["out"]["kernel"] == "adam"


def test_flax_attention_routes_biases_to_adam_and_kernels_to_muon():
  attn = nnx.MultiHeadAttention(num_heads=4, in_features=32, qkv_features=32,
                                decode=False, rngs=nnx.Rngs(0))
  params = nnx_params(attn)
  labels = qm.muon_labels(params)
  for name in ("query", "key", "value"):
    assert params[name]["bias"].shape == (4, 8)
    assert labels[name]["bias"] == "adam"
    assert labels[name]["kernel"] == "muon"
  assert labels["out"]["kernel"] == "muon"
  assert labels["out"]["bias"] == "adam"
  views = routing.views(params)
  assert views["query"]["kernel"] == qm.formats.MatrixView((), (0,), (1, 2))
  assert views["out"]["kernel"] == qm.formats.MatrixView((), (0, 1), (2,))


def test_flax_attention_kernels_are_orthogonalized_as_matrices():
  attn = nnx.MultiHeadAttention(num_heads=4, in_features=32, qkv_features=32,
                                decode=False, rngs=nnx.Rngs(0))
  params = nnx_params(attn)
  grads = jax.tree.map(
      lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)
  tx = qm.muon(1.0, consistent_rms=None, adam_nesterov=False)
  updates, _ = tx.update(grads, tx.init(params), params)
  # query: (in, heads, head_dim) as a 32 x 32 matrix, orthogonal up to
  # Newton-Schulz's tolerance; out: (heads, head_dim, out) likewise.
  for name, shape in (("query", (32, 32)), ("out", (32, 32))):
    s = np.linalg.svd(np.asarray(updates[name]["kernel"]).reshape(shape),
                      compute_uv=False)
    assert 0.6 < s.min() and s.max() < 1.3, (name, s)
  # Biases take AdamW's first step: every entry moves by the rate.
  np.testing.assert_allclose(np.abs(updates["query"]["bias"]), 1.0,
                             rtol=1e-3)


def test_flax_conv_kernel_is_viewed_as_in_times_window_by_out():
  conv = nnx.Conv(3, 16, kernel_size=(3, 3), rngs=nnx.Rngs(0))
  params = nnx_params(conv)
  assert qm.muon_labels(params)["kernel"] == "muon"
  g = jax.random.normal(jax.random.key(0), params["kernel"].shape)
  grads = {"kernel": g, "bias": jnp.zeros((16,))}
  tx = qm.muon(1.0, consistent_rms=None)
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = qm.transforms.orthogonalize().update(
      {"w": g.reshape(27, 16)}, optax.EmptyState())[0]["w"]
  # scale_by_learning_rate negates the step.
  np.testing.assert_allclose(
      -np.asarray(updates["kernel"]).reshape(27, 16),
      np.asarray(expected) * np.sqrt(max(1.0, 16 / 27)), rtol=1e-5,
      atol=1e-6)


def test_user_dimension_numbers_send_a_leaf_to_muon():
  params = {"w": jnp.zeros((2, 5, 2))}
  dims = {"w": MuonDimensionNumbers((0,), (1, 2))}
  assert qm.muon_labels(params, dims)["w"] == "muon"
  tx = qm.muon_8bit(1e-2, dimension_numbers=dims, min_size=0)
  tx.update(params, tx.init(params), params)


def test_explicit_muon_label_on_a_leaf_that_is_no_matrix_is_an_error():
  params = {"w": jnp.zeros((2, 5, 2)), "b": jnp.zeros((4,))}
  for labels in ({"w": "muon", "b": "adam"}, {"w": "adam", "b": "muon"}):
    with pytest.raises(ValueError, match="not a matrix|no matrix"):
      qm.muonq(1e-2, labels=labels).init(params)


def test_override_with_a_tree_or_a_callable():
  params = {"a": jnp.ones((8, 8)), "b": jnp.ones((8, 8))}
  tree = {"a": "adam", "b": "muon"}
  for labels in (tree, lambda p: tree):
    tx = qm.muon(1e-2, labels=labels, adam_nesterov=False)
    state = tx.init(params)
    updates, _ = tx.update(params, state, params)
    # AdamW's first step moves every entry by about the learning rate.
    assert jnp.allclose(jnp.abs(updates["a"]), 1e-2, rtol=1e-3)
    assert not jnp.allclose(jnp.abs(updates["b"]), 1e-2, rtol=1e-3)


@pytest.mark.parametrize("preset", [qm.muon_8bit, qm.muon_4bit, qm.muonq,
                                    qm.muon_grasp])
def test_consistent_rms_is_an_option_of_every_preset(preset):
  params = {"w": jnp.ones((16, 64))}
  g = {"w": jax.random.normal(jax.random.key(0), (16, 64))}

  def rms(consistent_rms):
    tx = preset(1.0, consistent_rms=consistent_rms)
    u, _ = tx.update(g, tx.init(params), params)
    return float(jnp.sqrt(jnp.mean(u["w"] ** 2)))

  # Same Newton-Schulz output, scaled by the width rule sqrt(64 / 16) = 2
  # or by 0.5 sqrt(64) = 4.
  assert rms(0.5) / rms(None) == pytest.approx(2.0, rel=1e-5)


def test_labels_of_nnx_state_equal_those_of_its_pure_dict():
  attn = nnx.MultiHeadAttention(num_heads=4, in_features=32, qkv_features=32,
                                decode=False, rngs=nnx.Rngs(0))
  state = nnx.state(attn, nnx.Param)
  assert (jax.tree.leaves(qm.muon_labels(state))
          == jax.tree.leaves(qm.muon_labels(nnx.to_pure_dict(state))))
  assert "adam" in jax.tree.leaves(qm.muon_labels(state))


def test_blocks_in_a_top_level_list_keep_their_out_projection():
  # An index is a component: "out" under a list of blocks is no head.
  block = {"qkv": {"kernel": jnp.zeros((64, 192))},
           "out": {"kernel": jnp.zeros((64, 64))}}
  for params in ([block] * 2, {"blocks": [block] * 2}):
    labels = qm.muon_labels(params)
    blocks = labels if isinstance(labels, list) else labels["blocks"]
    assert [b["out"]["kernel"] for b in blocks] == ["muon", "muon"]


def test_integer_leaves_and_empty_matrices_are_named_errors():
  with pytest.raises(ValueError, match=r"\['step'\] has dtype int32"):
    qm.muon_8bit(1e-2).init({"w": jnp.zeros((8, 8)),
                             "step": jnp.zeros((8, 8), jnp.int32)})
  tx = qm.muon(1e-2)
  params = {"w": jnp.zeros((0, 64))}
  with pytest.raises(ValueError, match=r"scale_by_shape: .*\(0, 64\)"):
    tx.update(params, tx.init(params), params)
