"""The GPT decoder and the digits classifiers: shapes and routing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import quantmuon
from quantmuon_experiments import classifier, model


def _labels(net: nnx.Module) -> dict[str, str]:
  params = nnx.to_pure_dict(nnx.state(net, nnx.Param))
  labels = quantmuon.muon_labels(params)
  return {jax.tree_util.keystr(path, simple=True, separator="/"): label
          for path, label in jax.tree_util.tree_leaves_with_path(labels)}


@pytest.mark.parametrize("tied", [False, True])
def test_gpt_forward_shape(tied):
  config = model.GPTConfig(vocab_size=300, context=16, width=32, depth=2,
                           heads=4, tied_head=tied)
  net = model.GPT(config, nnx.Rngs(0))
  logits = net(jnp.zeros((3, 10), jnp.int32))
  assert logits.shape == (3, 10, 300)
  assert logits.dtype == jnp.float32
  assert hasattr(net, "lm_head") != tied


def test_gpt_is_causal():
  net = model.GPT(model.GPTConfig(context=8, width=16, depth=1, heads=2),
                  nnx.Rngs(0))
  a = jnp.array([[1, 2, 3, 4, 5, 6]])
  b = a.at[0, 4:].set(9)
  assert jnp.allclose(net(a)[:, :4], net(b)[:, :4], atol=1e-6)


def test_gpt_rejects_long_sequences():
  net = model.GPT(model.GPTConfig(context=8, width=16, depth=1, heads=2),
                  nnx.Rngs(0))
  with pytest.raises(ValueError, match="exceeds the model context"):
    net(jnp.zeros((1, 9), jnp.int32))


def test_gpt_heads_must_divide_width():
  with pytest.raises(ValueError, match="multiple of heads"):
    model.GPTConfig(width=30, heads=4)


def test_gpt_routing():
  """Embeddings and head to AdamW, attention and MLP kernels to Muon."""
  net = model.GPT(model.GPTConfig(context=16, width=32, depth=2, heads=2),
                  nnx.Rngs(0))
  labels = _labels(net)
  muon = sorted(k for k, v in labels.items() if v == "muon")
  assert labels["wte/embedding"] == "adam"
  assert labels["wpe/embedding"] == "adam"
  assert labels["lm_head/kernel"] == "adam"
  assert labels["ln_f/scale"] == "adam"
  assert labels["blocks/0/attn/query/bias"] == "adam"
  expected = sorted(f"blocks/{i}/{m}/kernel" for i in range(2)
                    for m in ("attn/query", "attn/key", "attn/value",
                              "attn/out", "mlp/fc", "mlp/proj"))
  assert muon == expected


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_classifiers(kind):
  rngs = nnx.Rngs(0)
  if kind == "mlp":
    net = classifier.MLPClassifier(64, 10, 32, 2, rngs)
  else:
    net = classifier.CNNClassifier(8, 10, 16, rngs)
  assert net(jnp.zeros((5, 8, 8))).shape == (5, 10)
  labels = _labels(net)
  assert labels["head/kernel"] == "adam"
  kernels = [k for k in labels if k.endswith("kernel") and "head" not in k]
  assert kernels and all(labels[k] == "muon" for k in kernels)


def test_scanned_layers_compute_the_unscanned_model():
  """``scan_layers``: one ``(depth, ...)`` stack per parameter, run by
  ``nnx.scan``, computing what the list of blocks computes with the same
  weights; the optimizers see one layer per index of ``STACK_AXES``."""
  kw = dict(vocab_size=256, context=8, width=16, depth=3, heads=2)
  scanned = model.GPT(model.GPTConfig(scan_layers=True, **kw), nnx.Rngs(0))
  plain = model.GPT(model.GPTConfig(**kw), nnx.Rngs(1))
  stacked = nnx.to_pure_dict(nnx.state(scanned, nnx.Param))
  assert stacked["blocks"]["mlp"]["fc"]["kernel"].shape == (3, 16, 64)
  weights = nnx.to_pure_dict(nnx.state(plain, nnx.Param))
  for name in ("wte", "wpe", "ln_f", "lm_head"):
    weights[name] = stacked[name]
  for i in range(3):
    weights["blocks"][i] = jax.tree.map(lambda x, i=i: x[i],
                                        stacked["blocks"])
  nnx.update(plain, nnx.State(weights))
  tokens = jnp.array([[1, 5, 9, 200, 3, 7]])
  assert jnp.allclose(scanned(tokens), plain(tokens), atol=1e-5)

  with pytest.raises(quantmuon.routing.AmbiguousLeafError,
                     match="stack_axes"):
    quantmuon.muon_labels(stacked)
  labels = quantmuon.muon_labels(stacked, stack_axes=model.STACK_AXES)
  assert labels["blocks"]["attn"]["query"]["kernel"] == "muon"
  assert labels["blocks"]["ln_1"]["scale"] == "adam"
  assert model.stack_axes(scanned.config.scan_layers) == model.STACK_AXES
  assert model.stack_axes(plain.config.scan_layers) is None
