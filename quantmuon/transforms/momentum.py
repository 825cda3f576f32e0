"""Muon's momentum, stored between steps in any format.

The only stateful piece of Muon. Each step decodes the stored momentum,
accumulates the gradient, optionally applies MuonQ's pre-quantization
normalization, encodes the new momentum back and emits the fresh,
full-precision (Nesterov-mixed) momentum for orthogonalization. So
Newton-Schulz always sees this step's full-precision momentum, and
quantization error only enters through the next step's (as in 8-bit Muon,
MuonQ and 4-bit-Muon-GRASP).

The momentum is kept per matrix: a leaf that holds several of Muon's
matrices (stacked layers, experts) or one matrix in another layout (an
attention or conv kernel) is stored as a
:class:`~quantmuon.formats.PerMatrix` value, and its step runs on one
matrix at a time (:func:`quantmuon.transforms.schedule.over_matrices`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from quantmuon import formats, kernels
from quantmuon.formats import placement
from quantmuon.formats.matrix_view import MatrixView
from quantmuon.transforms import matrices, options, schedule
from quantmuon.transforms.options import MomentumOptions, ViewOptions
from quantmuon.transforms.variables import without_variables

Array = jax.Array


class QuantizedMomentumState(NamedTuple):
  """State of :func:`scale_by_quantized_momentum`.

  Attributes:
    count: steps taken (int32).
    momentum: a tree of ``formats.Stored``, one per parameter.
  """
  count: chex.Array
  momentum: Any


def leaf_format(opts: MomentumOptions, shape: tuple[int, ...],
                view: MatrixView | None) -> formats.Format:
  """The format a leaf's momentum is stored in.

  Matrices with fewer than ``min_size`` elements, and every matrix when
  the format is ``Float``, are kept in ``opts.float_format()``; a leaf that
  is not a plain matrix is stored per matrix (``PerMatrix``).

  Args:
    opts: checked options.
    shape: the leaf's shape.
    view: Muon's view of the leaf; None stores the leaf whole.

  Returns:
    The format.
  """
  fmt = opts.momentum_format
  if isinstance(fmt, formats.Float):
    fmt = opts.float_format() if opts.mu_dtype is not None else fmt
  if view is None or view.is_matrix:
    return fmt if math.prod(shape) >= opts.min_size else opts.float_format()
  m, n = view.matrix_shape(shape)
  inner = fmt if m * n >= opts.min_size else opts.float_format()
  return formats.PerMatrix(inner, view)


def storage_views(dimension_numbers: Any, tree: Any
                  ) -> list[MatrixView | None]:
  """The view each leaf's momentum is stored by: its dimension numbers',
  a plain matrix for rank 2, else None (stored whole)."""
  lookup = matrices.dimension_numbers_by_path(dimension_numbers, tree)
  views = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dim = lookup(path)
    views.append(matrices.view_of(leaf.shape, dim)
                 if dim is not None or leaf.ndim == 2 else None)
  return views


def init_momentum(params: Any, opts: MomentumOptions,
                  dimension_numbers: Any) -> QuantizedMomentumState:
  """The zero momentum of ``params``, each leaf in its format.

  Args:
    params: the parameters; ``flax.nnx.Variable`` wrappers are stripped
      (see :func:`quantmuon.transforms.variables.without_variables`).
    opts: checked momentum options.
    dimension_numbers: as for :func:`scale_by_quantized_momentum`.

  Returns:
    A ``QuantizedMomentumState`` at step 0.
  """
  params = without_variables(params)
  leaves, treedef = jax.tree.flatten(params)
  views = storage_views(dimension_numbers, params)
  momentum = [leaf_format(opts, p.shape, v).init_like(p)
              for p, v in zip(leaves, views, strict=True)]
  return QuantizedMomentumState(jnp.zeros([], jnp.int32),
                                treedef.unflatten(momentum))


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


def matrix_step(stored: formats.Stored, g: Array, key: Array,
                opts: MomentumOptions, count: Array
                ) -> tuple[Array, formats.Stored]:
  """The momentum step of one matrix (or one leaf stored whole) by
  ``opts.impl``.

  Returns:
    ``(fresh momentum in g's dtype, new stored momentum)``.
  """
  return kernels.momentum_step(
      stored, g, beta=opts.beta, accumulation=opts.accumulation,
      normalize=opts.normalize, nesterov=opts.nesterov, count=count,
      key=key, impl=opts.impl)


def leaf_step(i: int | Array, g: Array, stored: formats.Stored, *,
              opts: MomentumOptions, count: Array, base_key: Array,
              then: Callable[[Array], Any] | None = None
              ) -> tuple[Any, formats.Stored]:
  """The momentum step of leaf ``i``, one matrix at a time.

  Args:
    i: the leaf's position (its key is ``base_key`` folded with it; matrix
      ``b`` of a ``PerMatrix`` leaf folds ``b`` in too).
    g: the gradient.
    stored: the stored momentum.
    opts: checked momentum options.
    count: the step count (after incrementing).
    base_key: from :func:`step_key`.
    then: applied to each matrix's fresh momentum inside the step (the
      leafwise pipeline's Newton-Schulz), or None.

  Returns:
    ``(out, new stored momentum)``: ``out`` is the fresh momentum in
    ``g``'s shape and dtype, or ``then``'s results (for a ``PerMatrix``
    leaf, stacked along a leading batch axis of its matrices).
  """
  key = jax.random.fold_in(base_key, i)
  fmt = stored.format
  if not isinstance(fmt, formats.PerMatrix):
    fresh, new = matrix_step(stored, g, key, opts, count)
    return (fresh if then is None else then(fresh)), new

  def one(b, g_b, s_b):
    fresh, new = matrix_step(s_b, g_b, jax.random.fold_in(key, b), opts,
                             count)
    return (fresh if then is None else then(fresh)), new

  def run(g, stored, key):
    outs, inner = schedule.over_matrices(one, fmt.view.to_matrices(g),
                                         fmt.matrices(stored))
    if then is None:
      outs = fmt.view.from_matrices(outs, g.shape)
    return outs, fmt.assemble(inner, stored.shape, stored.dtype)

  sharding = placement.explicit_sharding(g)
  if sharding is None:
    return run(g, stored, key)
  # Per-matrix views are not expressible in Explicit sharded types.
  outs, new = jax.eval_shape(run, placement.unsharded(g),
                             placement.unsharded(stored), key)
  specs = (jax.tree.map(lambda _: sharding.spec if then is None else P(),
                        outs),
           placement.stored_specs(new, sharding.spec, sharding.mesh.shape))
  return placement.on_auto_axes(run, sharding, specs, g, stored, key)


def keep_placement(old: Any, new: Any) -> Any:
  """Each new stored value placed where its old one was
  (:func:`quantmuon.formats.placement.keep`)."""
  return jax.tree.map(placement.keep, old, new, is_leaf=formats.is_stored)


@options.expand
def scale_by_quantized_momentum(momentum: MomentumOptions,
                                view: ViewOptions
                                ) -> optax.GradientTransformation:
  """Momentum kept in ``momentum_format`` between steps, per matrix.

  Emits, per leaf: with ``ema`` accumulation, optax's bias-corrected
  momentum (and its bias-corrected Nesterov mix ``beta m_hat + (1 - beta)
  g_hat`` when ``nesterov``), exactly as ``optax.contrib.scale_by_muon``;
  with ``sum``, ``m`` or the Nesterov ``g + beta m``. Updates keep the
  gradients' dtype. A leaf with ``dimension_numbers`` (or of rank 2) is
  stored and stepped per matrix of its view; other leaves whole.

  Args:
    momentum: the fields of ``MomentumOptions``, as keywords (see
      :mod:`quantmuon.transforms.options`).
    view: the field of ``ViewOptions``, ``dimension_numbers``.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    ``QuantizedMomentumState``.
  """
  opts = momentum.checked("scale_by_quantized_momentum")
  dims = view.dimension_numbers

  def init_fn(params):
    return init_momentum(params, opts, dims)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    grads, treedef, stored, state_def = pair_leaves(
        updates, state, "scale_by_quantized_momentum")
    base_key = step_key(opts.seed, count)
    outs = [leaf_step(i, g, s, opts=opts, count=count, base_key=base_key)
            for i, (g, s) in enumerate(zip(grads, stored, strict=True))]
    fresh = treedef.unflatten([o[0] for o in outs])
    momentum_tree = state_def.unflatten([o[1] for o in outs])
    return fresh, QuantizedMomentumState(
        count, keep_placement(state.momentum, momentum_tree))

  return optax.GradientTransformation(init_fn,
                                      schedule.jit_when_eager(update_fn))

