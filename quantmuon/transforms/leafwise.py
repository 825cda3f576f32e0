"""Muon matrix by matrix: momentum, Newton-Schulz and scaling together.

The chain ``scale_by_quantized_momentum -> orthogonalize -> scale_by_shape``
emits every leaf's fresh float32 momentum as one tree before Newton-Schulz
starts, so the momenta of all leaves are alive at once and the compiled
update needs as much memory as float32 Muon, whatever the stored format.
:func:`leafwise_muon` runs the same per-matrix functions (the momentum step,
:func:`quantmuon.transforms.momentum.leaf_step`, and Newton-Schulz,
:func:`quantmuon.transforms.newton_schulz.newton_schulz`) through
:mod:`quantmuon.transforms.schedule`: each leaf is one unit of XLA work,
and a leaf holding several matrices (scanned layers, experts) loops over
them, so only one matrix's float32 intermediates are alive at a time, a
stacked leaf compiles once whatever its depth, and inside a training step
each leaf's update runs, and frees its gradient, as soon as the backward
pass has produced it. The elementwise shape scaling
(:func:`quantmuon.transforms.scale.scale_leaf`) follows outside the units,
where XLA fuses it with what follows. Updates and state equal the chain's,
bit for bit on plain matrices. A leaf's unit (:func:`leaf_update`) is
traced and lowered once per shape and format (:data:`shared_leaf_update`),
however many leaves share them.

On a mesh, Newton-Schulz's stacked layout makes a group of same-shape
matrices the unit of work instead (:func:`by_group`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from quantmuon.formats.matrix_view import MatrixView
from quantmuon.transforms import (
    matrices,
    newton_schulz,
    options,
    scale,
    schedule,
    stacked,
)
from quantmuon.transforms import momentum as momentum_lib

Array = jax.Array


@options.expand
def leafwise_muon(step: options.MomentumOptions,
                  ns: options.OrthogonalizeOptions,
                  shape: options.ScaleOptions,
                  view: options.ViewOptions) -> optax.GradientTransformation:
  """``scale_by_quantized_momentum -> orthogonalize -> scale_by_shape``,
  one matrix at a time.

  Args:
    step: the fields of ``MomentumOptions``, as keywords (see
      :mod:`quantmuon.transforms.options`).
    ns: the fields of ``OrthogonalizeOptions``. In the stacked layout (by
      default under a mesh) the unit of work is a group of leaves whose
      matrices share a shape, not one leaf: their momentum steps, then
      their Newton-Schulz stacked (see :func:`by_group`).
    shape: the field of ``ScaleOptions``, ``consistent_rms``.
    view: the field of ``ViewOptions``, ``dimension_numbers``.

  Returns:
    An ``optax.GradientTransformation`` whose state is the
    ``QuantizedMomentumState`` of
    :func:`quantmuon.transforms.scale_by_quantized_momentum`.
  """
  opts = step.checked("leafwise_muon")
  ns = ns.checked("leafwise_muon")
  iteration = newton_schulz.newton_schulz_schedule(
      ns.ns_coeffs, ns.ns_steps, ns.preconditioning)

  def init_fn(params):
    return momentum_lib.init_momentum(params, opts, view.dimension_numbers)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    grads, treedef, stored, state_def = momentum_lib.pair_leaves(
        updates, state, "leafwise_muon")
    views = matrices.leaf_views(view.dimension_numbers, updates)
    base_key = momentum_lib.step_key(opts.seed, count)
    on = stacked.resolve_mesh(ns.ns_layout, ns.mesh, grads)

    if on is not None:
      def momentum_only(i, g, s):
        return momentum_lib.leaf_step(i, g, s, opts=opts, count=count,
                                      base_key=base_key)
      outs, duals, new_stored = by_group(
          momentum_only, grads, stored, views, iteration, ns.eps,
          ns.adaptive, on)
    else:
      run = shared_leaf_update if _hashable(opts, ns) else leaf_update

      def unit(i, g, s):
        return run(jnp.uint32(i), g, s, count, base_key, opts=opts,
                   iteration=iteration, eps=ns.eps, adaptive=ns.adaptive)
      done = schedule.in_order(unit, list(zip(grads, stored, strict=True)))
      outs, duals = [], []
      for ((out, dual), _), g, v in zip(done, grads, views, strict=True):
        outs.append(out if v.is_matrix else v.from_matrices(out, g.shape))
        duals.append(jnp.sum(dual))
      new_stored = [new for _, new in done]
    if ns.adaptive:
      outs = [(o * d).astype(o.dtype) for o, d in zip(outs, duals,
                                                     strict=True)]
    # Scaled outside the units, as the chain scales, so that XLA rewrites
    # the scaling and what follows it (the learning rate) alike.
    new_updates = treedef.unflatten([
        scale.scale_leaf(o, v, shape.consistent_rms)
        for o, v in zip(outs, views, strict=True)])
    momentum = state_def.unflatten(new_stored)
    return new_updates, momentum_lib.QuantizedMomentumState(
        count, momentum_lib.keep_placement(state.momentum, momentum))

  return optax.GradientTransformation(init_fn,
                                      schedule.jit_when_eager(update_fn))


def leaf_update(i: Array, g: Array, stored: Any, count: Array,
                base_key: Array, *, opts: options.MomentumOptions,
                iteration: newton_schulz.NewtonSchulz, eps: float,
                adaptive: bool) -> tuple[tuple[Array, Array], Any]:
  """One leaf's momentum step and Newton-Schulz: the leafwise pipeline's
  unit of work.

  Args:
    i: the leaf's position (a uint32).
    g: its gradient.
    stored: its stored momentum.
    count: the step count (after incrementing).
    base_key: the step's key (:func:`quantmuon.transforms.momentum.step_key`).
    opts: checked momentum options.
    iteration: the Newton-Schulz schedule.
    eps: added to each matrix's norm.
    adaptive: also return the dual norm (else a zero).

  Returns:
    ``((orthogonalized momentum, dual norm), new stored momentum)``, for a
    ``PerMatrix`` leaf stacked along its matrices.
  """
  def orthogonalized(fresh: Array) -> tuple[Array, Array]:
    out = newton_schulz.newton_schulz(fresh, iteration, eps).astype(
        fresh.dtype)
    dual = (newton_schulz.dual_norm(fresh, out) if adaptive
            else jnp.zeros([], jnp.float32))
    return out, dual

  return momentum_lib.leaf_step(i, g, stored, opts=opts, count=count,
                                base_key=base_key, then=orthogonalized)


# Traced and lowered once per leaf shape and format, however many leaves
# share them: every call with the same options and argument types reuses
# one jaxpr and one lowered function (XLA's own compilation still sees a
# copy per leaf). The leaf's position is an argument, so it does not split
# the cache.
shared_leaf_update = jax.jit(
    leaf_update, static_argnames=("opts", "iteration", "eps", "adaptive"))


def _hashable(*values: Any) -> bool:
  """Whether ``values`` can be static arguments of a ``jax.jit`` (not if
  a hyperparameter is an array, as under ``optax.inject_hyperparams``)."""
  try:
    hash(values)
  except TypeError:
    return False
  return True


def by_group(step: Callable[..., tuple[Array, Any]], grads: Sequence[Array],
             stored: Sequence[Any], views: Sequence[MatrixView],
             iteration: newton_schulz.NewtonSchulz, eps: float,
             adaptive: bool, mesh: Any) -> tuple[list, list, list]:
  """Momentum steps and stacked Newton-Schulz, one group at a time.

  Leaves whose matrices share a shape form a group
  (:func:`quantmuon.transforms.stacked.group_by_shape`); each group is one
  unit of XLA work (:func:`quantmuon.transforms.schedule.in_order`): the
  momentum step of each of its leaves, then their Newton-Schulz in the
  stacked layout, a stacked leaf's matrices joining the stack as they are.
  So one group's float32 intermediates are alive at a time.

  Args:
    step: ``step(i, grad, stored) -> (fresh momentum, new stored)`` of the
      leaf at position ``i`` (a uint32).
    grads: the gradient leaves.
    stored: their stored momenta.
    views: their views.
    iteration: the Newton-Schulz schedule.
    eps: added to each matrix's norm.
    adaptive: also return each leaf's dual norm.
    mesh: the mesh of the layout.

  Returns:
    ``(orthogonalized updates, dual norms (zeros unless adaptive), new
    stored momenta)``, one of each a leaf, the updates in the gradients'
    shapes and dtypes.
  """
  groups = stacked.group_by_shape(
      [v.matrix_shape(g.shape) for g, v in zip(grads, views, strict=True)])

  def unit(k, members_grads, members_stored):
    fresh, new_stored = [], []
    for i, g, s in zip(groups[k], members_grads, members_stored,
                       strict=True):
      f, n = step(jnp.uint32(i), g, s)
      fresh.append(f)
      new_stored.append(n)
    outs = newton_schulz.orthogonalize_stacked(
        fresh, [views[i] for i in groups[k]], iteration, eps, mesh)
    duals = [newton_schulz.dual_norm(f, o) if adaptive
             else jnp.zeros([], jnp.float32) for f, o in zip(fresh, outs,
                                                            strict=True)]
    return outs, duals, new_stored

  done = schedule.in_order(unit, [
      (tuple(grads[i] for i in group), tuple(stored[i] for i in group))
      for group in groups])
  outs: list[Any] = [None] * len(grads)
  duals: list[Any] = [None] * len(grads)
  new_stored: list[Any] = [None] * len(grads)
  for group, (o, d, n) in zip(groups, done, strict=True):
    for i, x, y, z in zip(group, o, d, n, strict=True):
      outs[i], duals[i], new_stored[i] = x.astype(grads[i].dtype), y, z
  return outs, duals, new_stored
