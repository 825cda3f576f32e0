"""Real training code that stacks its layers and experts, trained 20 steps
through ``nnx.Optimizer`` or optax, each layer's (expert's) update checked
against the same preset on the layers as separate leaves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx

import quantmuon as qm

STEPS = 20
D, HEADS, LAYERS, VOCAB, SEQ, BATCH = 16, 2, 3, 32, 8, 4


def _tokens(step: int) -> jax.Array:
  """Two fixed batches in turn, so that 20 steps lower the loss."""
  return jax.random.randint(jax.random.key(step % 2), (BATCH, SEQ + 1), 0,
                            VOCAB)


def _xent(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits[:, :-1], tokens[:, 1:]).mean()


def _unstack(tree: dict, key: str, axis: int, size: int) -> dict:
  """``tree`` with ``tree[key]``'s stacked leaves as ``key_0``, ...."""
  out = {k: v for k, v in tree.items() if k != key}
  for i in range(size):
    out[f"{key}_{i}"] = jax.tree.map(
        lambda x, i=i: jnp.take(x, i, axis=axis) if x.ndim else x, tree[key])
  return out


def _replay(tx_stacked, tx_separate, params, grads_seq, key, axis, size):
  """Updates of both optimizers on the same gradients: the worst relative
  difference of any layer's update, and the stacked run's final params."""
  s1 = tx_stacked.init(params)
  sep = _unstack(params, key, axis, size)
  s2 = tx_separate.init(sep)
  up1, up2 = jax.jit(tx_stacked.update), jax.jit(tx_separate.update)
  worst = 0.0
  for g in grads_seq:
    u1, s1 = up1(g, s1, params)
    u2, s2 = up2(_unstack(g, key, axis, size), s2, sep)
    for a, b in zip(jax.tree.leaves(_unstack(u1, key, axis, size)),
                    jax.tree.leaves(u2), strict=True):
      scale = float(jnp.max(jnp.abs(b)))
      if scale:
        worst = max(worst, float(jnp.max(jnp.abs(a - b))) / scale)
    params = optax.apply_updates(params, u1)
    sep = optax.apply_updates(sep, u2)
  return worst, params


class Block(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(D, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(HEADS, D, D, decode=False, rngs=rngs)
    self.up = nnx.Linear(D, 2 * D, rngs=rngs)
    self.down = nnx.Linear(2 * D, D, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.norm(x))
    return x + self.down(nnx.gelu(self.up(x)))


class ScannedLM(nnx.Module):
  """A decoder whose blocks are made by ``nnx.vmap`` and run by
  ``nnx.scan``, as Flax's docs write it."""

  def __init__(self, rngs: nnx.Rngs):
    self.embed = nnx.Embed(VOCAB, D, rngs=rngs)

    @nnx.split_rngs(splits=LAYERS)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
      return Block(rngs)

    self.layers = make(rngs)
    self.head = nnx.Linear(D, VOCAB, rngs=rngs)

  def __call__(self, tokens):
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(x, block):
      return block(x)

    return self.head(run(self.embed(tokens), self.layers))


def test_nnx_scanned_transformer_trains_per_layer():
  model = ScannedLM(nnx.Rngs(0))
  # Without a declaration the stacks are an error that names the fix.
  state = nnx.state(model, nnx.Param)
  try:
    qm.muon_lowbit(1e-2).init(state)
    raise AssertionError("an undeclared stack was accepted")
  except qm.routing.AmbiguousLeafError as err:
    assert "stack_axes={'layers': 0}" in str(err)
  tx = qm.muon_lowbit(1e-2, min_size=0, stack_axes={"layers": 0})
  start = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, tokens):
    loss, grads = nnx.value_and_grad(
        lambda m: _xent(m(tokens), tokens))(model)
    optimizer.update(model, grads)
    return loss, grads

  losses, grads_seq = [], []
  for t in range(STEPS):
    loss, grads = step(model, optimizer, _tokens(t))
    losses.append(float(loss))
    grads_seq.append(nnx.to_pure_dict(grads))
  assert losses[-1] < losses[0]
  worst, final = _replay(
      qm.muon_lowbit(1e-2, min_size=0, stack_axes={"layers": 0}),
      qm.muon_lowbit(1e-2, min_size=0), start, grads_seq, "layers", 0,
      LAYERS)
  assert worst <= 1e-4, worst
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(
      nnx.to_pure_dict(nnx.state(model, nnx.Param))), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class LinenBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    init = nn.initializers.lecun_normal()
    h = nn.Dense(2 * D, kernel_init=nn.with_partitioning(
        init, ("embed", "mlp")))(nn.LayerNorm()(x))
    h = nn.Dense(D, kernel_init=nn.with_partitioning(
        init, ("mlp", "embed")))(nn.gelu(h))
    return x + h, None


class LinenLM(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(VOCAB, D)(tokens)
    stack = nn.scan(LinenBlock, variable_axes={"params": 0},
                    split_rngs={"params": True}, length=LAYERS,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = stack(name="layers")(x, None)
    return nn.Dense(VOCAB, name="head")(x)


def test_linen_scan_with_partition_names_trains_per_layer():
  """nn.scan's metadata_params name the stack axis: no declaration."""
  model = LinenLM()
  params = model.init(jax.random.key(0), _tokens(0))["params"]
  tx = qm.muon_8bit(1e-2, min_size=0)
  state = tx.init(params)
  loss_grad = jax.jit(jax.value_and_grad(
      lambda p, t: _xent(model.apply({"params": p}, t), t)))
  update = jax.jit(tx.update)
  plain = nn.unbox(params)
  grads_seq, losses = [], []
  for t in range(STEPS):
    loss, grads = loss_grad(params, _tokens(t))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    losses.append(float(loss))
    grads_seq.append(nn.unbox(grads))
  assert losses[-1] < losses[0]
  worst, _ = _replay(
      qm.muon_8bit(1e-2, min_size=0, stack_axes={"layers": 0}),
      qm.muon_8bit(1e-2, min_size=0), plain, grads_seq, "layers", 0,
      LAYERS)
  assert worst <= 1e-4, worst


def test_moe_experts_train_per_expert():
  """A mixture-of-experts MLP whose experts are stacked ``(E, d, f)``."""
  experts = 4
  keys = jax.random.split(jax.random.key(1), 4)
  params = {
      "embed": jax.random.normal(keys[0], (VOCAB, D)) * 0.1,
      "moe": {"router": jax.random.normal(keys[1], (D, experts)) * 0.1,
              "wi": jax.random.normal(keys[2], (experts, D, 2 * D)) * 0.1,
              "wo": jax.random.normal(keys[3], (experts, 2 * D, D)) * 0.1},
  }

  def loss(p, tokens):
    x = p["embed"][tokens]
    gate = jax.nn.softmax(x @ p["moe"]["router"], axis=-1)
    h = jnp.einsum("bsd,edf->bsef", x, p["moe"]["wi"])
    y = jnp.einsum("bsef,efd,bse->bsd", jax.nn.gelu(h), p["moe"]["wo"], gate)
    return _xent((x + y) @ p["embed"].T, tokens)

  stacked = {"wi": 0, "wo": 0}
  tx = qm.muonq(1e-2, min_size=0, stack_axes=stacked)
  state, grads_seq, losses = tx.init(params), [], []
  start = params
  step = jax.jit(jax.value_and_grad(loss))
  update = jax.jit(tx.update)
  for t in range(STEPS):
    value, grads = step(params, _tokens(t))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    losses.append(float(value))
    grads_seq.append(grads)
  assert losses[-1] < losses[0]

  def split(tree):
    moe = dict(tree["moe"])
    for name in stacked:
      w = moe.pop(name)
      moe.update({f"{name}_{e}": w[e] for e in range(experts)})
    return {**tree, "moe": moe}

  ours = qm.muonq(1e-2, min_size=0, stack_axes=stacked)
  theirs = qm.muonq(1e-2, min_size=0)
  s1, s2 = ours.init(start), theirs.init(split(start))
  worst = 0.0
  for g in grads_seq:
    u1, s1 = jax.jit(ours.update)(g, s1, start)
    u2, s2 = jax.jit(theirs.update)(split(g), s2, split(start))
    for a, b in zip(jax.tree.leaves(split(u1)), jax.tree.leaves(u2),
                    strict=True):
      worst = max(worst, float(jnp.max(jnp.abs(a - b))
                               / jnp.max(jnp.abs(b))))
  assert worst <= 1e-4, worst


def test_maxtext_shaped_tree_trains_per_layer():
  """MaxText's scanned layout: the layer axis in position 1 of every
  kernel (``(in, L, out)``, ``(in, L, heads, head_dim)``,
  ``(heads, L, head_dim, out)``), declared once."""
  hd = D // HEADS
  shapes = {
      "token_embedder": {"embedding": (VOCAB, D)},
      "decoder": {
          "layers": {
              "self_attention": {
                  "query": {"kernel": (D, LAYERS, HEADS, hd)},
                  "key": {"kernel": (D, LAYERS, HEADS, hd)},
                  "value": {"kernel": (D, LAYERS, HEADS, hd)},
                  "out": {"kernel": (HEADS, LAYERS, hd, D)}},
              "mlp": {"wi_0": {"kernel": (D, LAYERS, 2 * D)},
                      "wo": {"kernel": (2 * D, LAYERS, D)}},
              "pre_self_attention_layer_norm": {"scale": (D, LAYERS)}},
          "logits_dense": {"kernel": (D, VOCAB)}}}
  leaves, treedef = jax.tree.flatten(
      shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = treedef.unflatten([jax.random.normal(k, s) * 0.1
                              for k, s in zip(keys, leaves, strict=True)])
  labels = qm.muon_labels(params, stack_axes={"layers": 1})
  assert labels["token_embedder"]["embedding"] == "adam"
  assert labels["decoder"]["layers"]["pre_self_attention_layer_norm"][
      "scale"] == "adam"
  assert labels["decoder"]["layers"]["self_attention"]["out"][
      "kernel"] == "muon"
  grads_seq = [jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 2)), params)
               for t in range(STEPS)]

  def flat(tree):  # the decoder's layers at the top, for _replay
    return {"layers": tree["decoder"]["layers"],
            "rest": {"token_embedder": tree["token_embedder"],
                     "logits_dense": tree["decoder"]["logits_dense"]}}

  worst, _ = _replay(
      qm.muon_lowbit(1e-2, min_size=0, stack_axes={"layers": 1}),
      qm.muon_lowbit(1e-2, min_size=0), flat(params),
      [flat(g) for g in grads_seq], "layers", 1, LAYERS)
  assert worst <= 1e-4, worst
