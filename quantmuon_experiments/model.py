"""A GPT-style decoder-only transformer in Flax NNX.

Pre-norm blocks (LayerNorm -> causal self-attention, LayerNorm -> MLP), learned
positions, tied or untied output head. Attribute names are chosen so that
``quantmuon.muon_labels`` routes the parameters as Muon expects: the token and
position tables (``wte``, ``wpe``) and the head (``lm_head``) go to AdamW, the
attention and MLP kernels to Muon, norms and biases (1-D) to AdamW.

With ``scan_layers`` the blocks are one module made by ``nnx.vmap`` and
run by ``nnx.scan``, as Flax writes scanned layers: every block parameter
is a ``(depth, ...)`` stack under ``blocks``, compiled once whatever the
depth, and :data:`STACK_AXES` tells the optimizers its leading axis holds
one layer per index.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
# The optimizers' ``stack_axes`` of a model with scanned layers.
STACK_AXES = {"blocks": 0}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  """Shape of the decoder.

  Attributes:
    vocab_size: number of token ids (256 for bytes).
    context: the longest sequence, i.e. rows of the position table.
    width: the model (embedding) dimension.
    depth: the number of blocks.
    heads: attention heads; must divide ``width``.
    mlp_ratio: hidden width of the MLP over ``width``.
    tied_head: reuse the token table as the output head.
    init_std: standard deviation of the normal initializers.
    scan_layers: make the blocks with ``nnx.vmap`` and run them with
      ``nnx.scan`` (stacked parameters) instead of a list of blocks.
  """

  vocab_size: int = 256
  context: int = 128
  width: int = 128
  depth: int = 4
  heads: int = 4
  mlp_ratio: int = 4
  tied_head: bool = False
  init_std: float = 0.02
  scan_layers: bool = False

  def __post_init__(self):
    if self.width % self.heads:
      raise ValueError(
          f"width ({self.width}) must be a multiple of heads ({self.heads}).")


def _linear(fan_in: int, fan_out: int, std: float,
            rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(fan_in, fan_out, rngs=rngs,
                    kernel_init=nnx.initializers.normal(std))


class CausalSelfAttention(nnx.Module):
  """Multi-head causal self-attention with separate q, k, v kernels."""

  def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
    w, std = config.width, config.init_std
    self.heads = config.heads
    self.query = _linear(w, w, std, rngs)
    self.key = _linear(w, w, std, rngs)
    self.value = _linear(w, w, std, rngs)
    self.out = _linear(w, w, std / math.sqrt(2 * config.depth), rngs)

  def __call__(self, x: Array) -> Array:
    b, t, w = x.shape
    shape = (b, t, self.heads, w // self.heads)
    q = self.query(x).reshape(shape)
    k = self.key(x).reshape(shape)
    v = self.value(x).reshape(shape)
    y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    return self.out(y.reshape(b, t, w))


class MLP(nnx.Module):
  """Two-layer GELU MLP."""

  def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
    w, h, std = config.width, config.width * config.mlp_ratio, config.init_std
    self.fc = _linear(w, h, std, rngs)
    self.proj = _linear(h, w, std / math.sqrt(2 * config.depth), rngs)

  def __call__(self, x: Array) -> Array:
    return self.proj(jax.nn.gelu(self.fc(x)))


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
    self.ln_1 = nnx.LayerNorm(config.width, rngs=rngs)
    self.attn = CausalSelfAttention(config, rngs)
    self.ln_2 = nnx.LayerNorm(config.width, rngs=rngs)
    self.mlp = MLP(config, rngs)

  def __call__(self, x: Array) -> Array:
    x = x + self.attn(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class GPT(nnx.Module):
  """Decoder-only transformer: token ids ``(batch, time)`` to logits."""

  def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
    self.config = config
    init = nnx.initializers.normal(config.init_std)
    self.wte = nnx.Embed(config.vocab_size, config.width, rngs=rngs,
                         embedding_init=init)
    self.wpe = nnx.Embed(config.context, config.width, rngs=rngs,
                         embedding_init=init)
    if config.scan_layers:
      @nnx.split_rngs(splits=config.depth)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def stacked(rngs: nnx.Rngs) -> Block:
        return Block(config, rngs)

      self.blocks = stacked(rngs)
    else:
      self.blocks = nnx.List([Block(config, rngs)
                              for _ in range(config.depth)])
    self.ln_f = nnx.LayerNorm(config.width, rngs=rngs)
    if not config.tied_head:
      self.lm_head = nnx.Linear(config.width, config.vocab_size,
                                use_bias=False, rngs=rngs,
                                kernel_init=init)

  def __call__(self, tokens: Array) -> Array:
    """Logits of the next token.

    Args:
      tokens: int array ``(batch, time)`` with ``time <= context``.

    Returns:
      float32 logits ``(batch, time, vocab_size)``.
    """
    t = tokens.shape[-1]
    if t > self.config.context:
      raise ValueError(
          f"sequence length {t} exceeds the model context "
          f"{self.config.context}.")
    x = self.wte(tokens) + self.wpe(jnp.arange(t))
    if self.config.scan_layers:
      @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
      def run(x: Array, block: Block) -> Array:
        return block(x)

      x = run(x, self.blocks)
    else:
      for block in self.blocks:
        x = block(x)
    x = self.ln_f(x)
    if self.config.tied_head:
      return self.wte.attend(x)
    return self.lm_head(x)


def stack_axes(scan_layers: bool) -> dict[str, int] | None:
  """The optimizers' ``stack_axes`` for a model with or without
  ``GPTConfig.scan_layers``."""
  return STACK_AXES if scan_layers else None


def count_params(model: nnx.Module) -> int:
  """Number of scalar parameters in ``model``.

  Args:
    model: any NNX module.

  Returns:
    The total size of its ``nnx.Param`` variables.
  """
  state = nnx.state(model, nnx.Param)
  return sum(int(x.size) for x in jax.tree.leaves(state))
