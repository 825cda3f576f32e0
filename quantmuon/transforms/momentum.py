"""Muon's momentum, stored between steps in any format.

The only stateful piece of Muon. Each step decodes the stored momentum,
accumulates the gradient, optionally applies MuonQ's pre-quantization
normalization, encodes the new momentum back and emits the fresh,
full-precision (Nesterov-mixed) momentum for orthogonalization. So
Newton-Schulz always sees this step's full-precision momentum, and
quantization error only enters through the next step's (as in 8-bit Muon,
MuonQ and 4-bit-Muon-GRASP).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from quantmuon import formats
from quantmuon.formats.base import check_choice
from quantmuon.transforms import _tree

Array = jax.Array
ACCUMULATIONS = ("ema", "sum")
IMPLS = ("auto", "xla", "pallas", "pallas_interpret")
NORMALIZE_EPS = 1e-7


class QuantizedMomentumState(NamedTuple):
  """State of :func:`scale_by_quantized_momentum`.

  Attributes:
    count: steps taken (int32).
    momentum: a tree of ``formats.Stored``, one per parameter.
  """
  count: chex.Array
  momentum: Any


def leaf_format(fmt: formats.Format, size: int, min_size: int
                ) -> formats.Format:
  """The format a leaf is stored in: float32 below ``min_size`` elements."""
  return fmt if size >= min_size else formats.Float()


def prepare_gradient(g: Array, normalize: bool) -> Array:
  """The gradient in float32, divided by its norm under MuonQ's rule."""
  g = g.astype(jnp.float32)
  if normalize:
    g = g / (jnp.linalg.norm(g) + NORMALIZE_EPS)
  return g


def accumulate(m: Array, g: Array, beta: Array, accumulation: str,
               normalize: bool) -> Array:
  """One momentum step in float32.

  Args:
    m: previous momentum (decoded).
    g: gradient.
    beta: momentum decay.
    accumulation: ``ema`` (``beta m + (1 - beta) g``, Keller Jordan, optax)
      or ``sum`` (heavy ball ``beta m + g``: Moonlight, MuonQ, GRASP, 8-bit
      Muon).
    normalize: MuonQ's pre-quantization normalization: ``g`` and the new
      momentum are divided by their Frobenius norms (+1e-7).

  Returns:
    The new momentum, float32.
  """
  g = prepare_gradient(g, normalize)
  if accumulation == "ema":
    new = beta * m + (1 - beta) * g
  else:
    new = beta * m + g
  if normalize:
    new = new / (jnp.linalg.norm(new) + NORMALIZE_EPS)
  return new


def momentum_step(stored: formats.Stored, g: Array, beta: Array,
                  accumulation: str, normalize: bool,
                  key: Array | None) -> tuple[Array, formats.Stored]:
  """Decode, accumulate, encode one leaf (used by :func:`momentum_update`).

  Args:
    stored: the stored momentum.
    g: the gradient.
    beta: momentum decay.
    accumulation: ``ema`` or ``sum``.
    normalize: MuonQ normalization.
    key: random key for stochastic rounding, else None.

  Returns:
    ``(new momentum in float32, its stored form)``.
  """
  fmt = stored.format
  new = accumulate(fmt.decode(stored), g, beta, accumulation, normalize)
  return new, fmt.encode(new, key=key, previous=stored)


def emit(m: Array, g: Array, count: Array, beta: Array, accumulation: str,
         nesterov: bool) -> Array:
  """The momentum handed on: optax's (bias-corrected) or the heavy ball's.

  Args:
    m: the new momentum.
    g: the gradient as accumulated (:func:`prepare_gradient`).
    count: the step count (after incrementing).
    beta: momentum decay.
    accumulation: ``ema`` or ``sum``.
    nesterov: the Nesterov mix instead of the momentum.

  Returns:
    The fresh momentum, float32.
  """
  if accumulation == "sum":
    return g + beta * m if nesterov else m
  if nesterov:
    m_hat = m / (1 - beta ** optax.safe_increment(count))
    g_hat = g / (1 - beta ** count)
    return beta * m_hat + (1 - beta) * g_hat
  return m / (1 - beta ** count)


def momentum_update(stored: formats.Stored, g: Array, *, beta: Array,
                    accumulation: str, normalize: bool, nesterov: bool,
                    count: Array, key: Array | None
                    ) -> tuple[Array, formats.Stored]:
  """One leaf's step on the XLA path: the reference of the fused kernels.

  Args:
    stored: the stored momentum.
    g: the gradient.
    beta: momentum decay.
    accumulation: ``ema`` or ``sum``.
    normalize: MuonQ normalization.
    nesterov: emit the Nesterov mix.
    count: the step count (after incrementing).
    key: random key for stochastic rounding, else None.

  Returns:
    ``(fresh momentum in g's dtype, new stored momentum)``.
  """
  new, new_stored = momentum_step(stored, g, beta, accumulation, normalize,
                                  key)
  fresh = emit(new, prepare_gradient(g, normalize), count, beta,
               accumulation, nesterov)
  return fresh.astype(g.dtype), new_stored


def scale_by_quantized_momentum(
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_format: formats.Format = formats.Blockwise(bits=8),
    accumulation: str = "ema",
    normalize: bool = False,
    min_size: int | None = 4096,
    seed: int | None = 0,
    impl: str = "auto",
) -> optax.GradientTransformation:
  """Momentum kept in ``momentum_format`` between steps.

  Emits, per leaf: with ``ema`` accumulation, optax's bias-corrected
  momentum (and its bias-corrected Nesterov mix ``beta m_hat + (1 - beta)
  g_hat`` when ``nesterov``), exactly as ``optax.contrib.scale_by_muon``;
  with ``sum``, ``m`` or the Nesterov ``g + beta m``. Updates keep the
  gradients' dtype.

  Args:
    beta: momentum decay (0.95 in all four papers).
    nesterov: emit the Nesterov mix instead of the momentum.
    momentum_format: a ``quantmuon.formats`` format for the stored momentum.
    accumulation: ``ema`` or ``sum``.
    normalize: MuonQ's pre-quantization normalization (arXiv 2605.11396).
    min_size: leaves with fewer elements are stored in float32.
    seed: seed of the keys for formats that round stochastically; keys are
      folded with the step count, so a resumed run draws the same keys.
    impl: ``auto`` (fused Pallas kernels when lowering for TPU or GPU, XLA
      for the CPU), ``xla``, ``pallas`` or ``pallas_interpret``; see
      :mod:`quantmuon.kernels.dispatch`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    ``QuantizedMomentumState``.
  """
  check_choice(accumulation, "accumulation", ACCUMULATIONS)
  check_choice(impl, "impl", IMPLS)
  if not isinstance(momentum_format, formats.Format):
    raise ValueError(
        "momentum_format must be a quantmuon.formats format, got "
        f"{momentum_format!r}.")
  min_size = _tree.static_int(min_size, "min_size", 4096)
  seed = _tree.static_int(seed, "seed", 0)

  def init_fn(params):
    momentum = jax.tree.map(
        lambda p: leaf_format(momentum_format, p.size, min_size).init_like(
            p), _tree.without_variables(params))
    return QuantizedMomentumState(jnp.zeros([], jnp.int32), momentum)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    grads, treedef = jax.tree.flatten(updates)
    stored, state_def = jax.tree.flatten(state.momentum,
                                         is_leaf=formats.is_stored)
    if len(stored) != len(grads):
      raise ValueError(
          f"scale_by_quantized_momentum: the updates have {len(grads)} "
          f"leaves but the state was built for {len(stored)}; call init "
          "with a tree of the updates' structure.")
    base_key = jax.random.fold_in(jax.random.key(seed), count)

    # Imported here: the kernels build on this module's reference path.
    from quantmuon.kernels import dispatch

    def leaf(i, g, s):
      key = jax.random.fold_in(base_key, i)
      return dispatch.fused_step(
          s, g, beta=beta, accumulation=accumulation, normalize=normalize,
          nesterov=nesterov, count=count, key=key, impl=impl)

    outs = _tree.map_in_order(leaf, grads, stored)
    fresh = treedef.unflatten([o[0] for o in outs])
    momentum = state_def.unflatten([o[1] for o in outs])
    return fresh, QuantizedMomentumState(count, momentum)

  return optax.GradientTransformation(init_fn, update_fn)
