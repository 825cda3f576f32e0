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

from quantmuon import formats, kernels, momentum_op
from quantmuon.formats.base import check_choice
from quantmuon.transforms import _tree

Array = jax.Array
ACCUMULATIONS = momentum_op.ACCUMULATIONS
IMPLS = kernels.IMPLS


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
      :mod:`quantmuon.kernels.dispatch`; the math of a step is
      :mod:`quantmuon.momentum_op`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    ``QuantizedMomentumState``.
  """
  min_size, seed = check_options(momentum_format, accumulation, min_size,
                                 seed, impl)

  def init_fn(params):
    return init_momentum(params, momentum_format, min_size)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    grads, treedef, stored, state_def = pair_leaves(
        updates, state, "scale_by_quantized_momentum")
    base_key = step_key(seed, count)
    outs = _tree.map_in_order(
        lambda i, g, s: leaf_step(
            i, g, s, beta=beta, accumulation=accumulation,
            normalize=normalize, nesterov=nesterov, count=count,
            base_key=base_key, impl=impl), grads, stored)
    fresh = treedef.unflatten([o[0] for o in outs])
    momentum = state_def.unflatten([o[1] for o in outs])
    return fresh, QuantizedMomentumState(count, momentum)

  return optax.GradientTransformation(init_fn, update_fn)


def check_options(momentum_format: formats.Format, accumulation: str,
                  min_size: int | None, seed: int | None, impl: str
                  ) -> tuple[int, int]:
  """Checks the options of a momentum step.

  Args:
    momentum_format: must be a ``quantmuon.formats`` format.
    accumulation: one of ``ACCUMULATIONS``.
    min_size: a static int or None (4096).
    seed: a static int or None (0).
    impl: one of ``IMPLS``.

  Returns:
    ``(min_size, seed)`` as Python ints.

  Raises:
    ValueError: naming the bad option.
  """
  check_choice(accumulation, "accumulation", ACCUMULATIONS)
  check_choice(impl, "impl", IMPLS)
  if not isinstance(momentum_format, formats.Format):
    raise ValueError(
        "momentum_format must be a quantmuon.formats format, got "
        f"{momentum_format!r}.")
  return (_tree.static_int(min_size, "min_size", 4096),
          _tree.static_int(seed, "seed", 0))


def init_momentum(params: Any, momentum_format: formats.Format,
                  min_size: int) -> QuantizedMomentumState:
  """The zero momentum of ``params``, each leaf in its format.

  Args:
    params: the parameters; ``flax.nnx.Variable`` wrappers are stripped
      (see :func:`quantmuon.transforms._tree.without_variables`).
    momentum_format: the format of leaves of ``min_size`` elements or more.
    min_size: smaller leaves are stored in float32.

  Returns:
    A ``QuantizedMomentumState`` at step 0.
  """
  momentum = jax.tree.map(
      lambda p: leaf_format(momentum_format, p.size, min_size).init_like(p),
      _tree.without_variables(params))
  return QuantizedMomentumState(jnp.zeros([], jnp.int32), momentum)


def pair_leaves(updates: Any, state: QuantizedMomentumState, who: str
                ) -> tuple[list[Array], Any, list[formats.Stored], Any]:
  """The gradient leaves and the stored leaves, paired by order.

  Args:
    updates: the gradients.
    state: the momentum state.
    who: the transform's name, for the error.

  Returns:
    ``(gradient leaves, their treedef, stored leaves, their treedef)``.

  Raises:
    ValueError: if the two trees have different numbers of leaves.
  """
  grads, treedef = jax.tree.flatten(updates)
  stored, state_def = jax.tree.flatten(state.momentum,
                                       is_leaf=formats.is_stored)
  if len(stored) != len(grads):
    raise ValueError(
        f"{who}: the updates have {len(grads)} leaves but the state was "
        f"built for {len(stored)}; call init with a tree of the updates' "
        "structure.")
  return grads, treedef, stored, state_def


def step_key(seed: int, count: Array) -> Array:
  """The step's base key for stochastic rounding: ``seed`` folded with
  ``count``, so a resumed run draws the same keys."""
  return jax.random.fold_in(jax.random.key(seed), count)


def leaf_step(i: int, g: Array, stored: formats.Stored, *, beta: Array,
              accumulation: str, normalize: bool, nesterov: bool,
              count: Array, base_key: Array, impl: str
              ) -> tuple[Array, formats.Stored]:
  """The momentum step of leaf ``i`` by ``impl``.

  Args:
    i: the leaf's position (its key is ``base_key`` folded with it).
    g: the gradient.
    stored: the stored momentum.
    beta: momentum decay.
    accumulation: ``ema`` or ``sum``.
    normalize: MuonQ normalization.
    nesterov: emit the Nesterov mix.
    count: the step count (after incrementing).
    base_key: from :func:`step_key`.
    impl: one of ``IMPLS``.

  Returns:
    ``(fresh momentum in g's dtype, new stored momentum)``.
  """
  return kernels.momentum_step(
      stored, g, beta=beta, accumulation=accumulation, normalize=normalize,
      nesterov=nesterov, count=count, key=jax.random.fold_in(base_key, i),
      impl=impl)
