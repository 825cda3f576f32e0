"""Muon leaf by leaf: momentum, Newton-Schulz and scaling, one leaf at a time.

The chain ``scale_by_quantized_momentum -> orthogonalize -> scale_by_shape``
emits every leaf's fresh float32 momentum as one tree before Newton-Schulz
starts, so the momenta of all leaves are alive at once and the compiled
update needs as much memory as float32 Muon, whatever the stored format.
:func:`leafwise_muon` runs the same per-leaf functions: the momentum step
(:func:`quantmuon.transforms.momentum.leaf_step`) and Newton-Schulz
(:func:`quantmuon.transforms.newton_schulz.newton_schulz`) of each leaf
as one unit of XLA work, so only one leaf's float32 intermediates are
alive at a time; then the elementwise shape scaling
(:func:`quantmuon.transforms.scale.scale_leaf`), which XLA fuses with what
follows. Each leaf runs in its own ``lax.cond``
(:func:`quantmuon.transforms._tree.map_isolated`), so inside a training
step a leaf's update can run, and free its gradient, as soon as the
backward pass has produced that gradient. With ``group_leaves`` the
leaves of one shape, format and dimension numbers run as one loop over
them instead (:func:`quantmuon.transforms._tree.map_grouped`), which XLA
compiles once: a third of the Subspace presets' compile time at GPT-2
small's shapes, but the loop starts only when all of its gradients exist,
so a training step holds them all (one more float32 copy of the matrix
gradients at GPT-2 small, batch 1; ``benchmarks/update_memory.py``). Its
updates and state are the chain's, bit for bit, either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from quantmuon import formats
from quantmuon.formats.base import check_choice
from quantmuon.transforms import _tree, newton_schulz, scale, stacked
from quantmuon.transforms import momentum as momentum_lib


def leafwise_muon(
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_format: formats.Format = formats.Blockwise(bits=8),
    accumulation: str = "ema",
    normalize: bool = False,
    min_size: int | None = 4096,
    seed: int | None = 0,
    impl: str = "auto",
    ns_coeffs: Any = "quintic",
    ns_steps: int | None = 5,
    eps: float = 1e-7,
    consistent_rms: float | None = None,
    dimension_numbers: Any = None,
    ns_layout: str = "auto",
    mesh: Any = None,
    group_leaves: bool = False,
) -> optax.GradientTransformation:
  """``scale_by_quantized_momentum -> orthogonalize -> scale_by_shape``,
  one leaf at a time.

  Args:
    beta: momentum decay.
    nesterov: orthogonalize the Nesterov mix instead of the momentum.
    momentum_format: a ``quantmuon.formats`` format for the stored momentum.
    accumulation: ``ema`` or ``sum``.
    normalize: MuonQ's pre-quantization normalization.
    min_size: leaves with fewer elements are stored in float32.
    seed: seed of the keys for formats that round stochastically.
    impl: how the momentum step runs (see
      :func:`quantmuon.scale_by_quantized_momentum`).
    ns_coeffs: Newton-Schulz coefficients (see
      :func:`quantmuon.orthogonalize`).
    ns_steps: Newton-Schulz steps for a preset or a single triple.
    eps: added to the Frobenius norm before Newton-Schulz.
    consistent_rms: None for the width rule, else the RMS target (see
      :func:`quantmuon.scale_by_shape`).
    dimension_numbers: as for :func:`quantmuon.orthogonalize`.
    ns_layout: as for :func:`quantmuon.orthogonalize`. In the stacked
      layout (by default under a mesh) the unit of work is a group of
      leaves whose matrices share a shape, not one leaf: their momentum
      steps, then their Newton-Schulz stacked (see :func:`by_group`).
    mesh: as for :func:`quantmuon.orthogonalize`.
    group_leaves: run same-shape leaves as one loop, compiled once, instead
      of each leaf on its own (see the module docstring for the memory this
      costs inside a training step).

  Returns:
    An ``optax.GradientTransformation`` whose state is the
    ``QuantizedMomentumState`` of :func:`scale_by_quantized_momentum`.
  """
  min_size, seed = momentum_lib.check_options(
      momentum_format, accumulation, min_size, seed, impl)
  schedule = newton_schulz.newton_schulz_schedule(ns_coeffs, ns_steps)
  check_choice(ns_layout, "ns_layout", stacked.LAYOUTS)

  def init_fn(params):
    return momentum_lib.init_momentum(params, momentum_format, min_size)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    grads, treedef, stored, state_def = momentum_lib.pair_leaves(
        updates, state, "leafwise_muon")
    dims = newton_schulz.leaf_dimension_numbers(dimension_numbers, updates)
    base_key = momentum_lib.step_key(seed, count)
    on = stacked.resolve_mesh(ns_layout, mesh, grads)
    if on is not None:
      def step(i, g, s):
        return momentum_lib.leaf_step(
            i, g, s, beta=beta, accumulation=accumulation,
            normalize=normalize, nesterov=nesterov, count=count,
            base_key=base_key, impl=impl)
      outs, new_stored = by_group(step, grads, stored, dims, schedule, eps,
                                  on)
      new_updates = treedef.unflatten([
          scale.scale_leaf(o, dim, consistent_rms)
          for o, dim in zip(outs, dims, strict=True)])
      momentum = state_def.unflatten(new_stored)
      return new_updates, momentum_lib.QuantizedMomentumState(count,
                                                              momentum)

    distinct = []  # the distinct dimension numbers, by position
    for dim in dims:
      if dim not in distinct:
        distinct.append(dim)

    # Jitted so that its shapes and its call are traced once per shape;
    # the position is an argument.
    @functools.partial(jax.jit, static_argnums=(3,))
    def core(i, g, s, dim_index):
      fresh, new_stored = momentum_lib.leaf_step(
          i, g, s, beta=beta, accumulation=accumulation, normalize=normalize,
          nesterov=nesterov, count=count, base_key=base_key, impl=impl)
      mats = newton_schulz.to_matrices(fresh, distinct[dim_index])
      return newton_schulz.newton_schulz(mats, schedule, eps), new_stored

    if group_leaves:
      # Leaves of one shape, format and dimension numbers in one loop, so
      # XLA compiles core once for them.
      outs = _tree.map_grouped(
          lambda dim_index, i, g, s: core(i, g, s, dim_index),
          lambda i: distinct.index(dims[i]), grads, stored)
    else:
      outs = _tree.map_isolated(
          lambda i, g, s: core(jnp.uint32(i), g, s, distinct.index(dims[i])),
          grads, stored)
    # Scaled outside the loops and conds, as the chain scales, so that XLA
    # rewrites the scaling and what follows it (the learning rate) alike.
    new_updates = treedef.unflatten([
        scale.scale_leaf(newton_schulz.from_matrices(o[0], g, dim), dim,
                         consistent_rms)
        for o, g, dim in zip(outs, grads, dims, strict=True)])
    momentum = state_def.unflatten([o[1] for o in outs])
    return new_updates, momentum_lib.QuantizedMomentumState(count, momentum)

  return optax.GradientTransformation(init_fn, update_fn)


class _Group(NamedTuple):
  """The inputs of one group's unit of work (a leaf for map_isolated)."""
  grads: tuple[jax.Array, ...]
  stored: tuple[Any, ...]


def by_group(step: Callable[..., tuple[jax.Array, Any]], grads: list,
             stored: list, dims: list, schedule: newton_schulz.NewtonSchulz,
             eps: float, mesh: Any) -> tuple[list, list]:
  """Momentum steps and stacked Newton-Schulz, one group at a time.

  Leaves whose matrices share a shape form a group
  (:func:`quantmuon.transforms.stacked.group_by_shape`); each group is one
  unit of XLA work (:func:`quantmuon.transforms._tree.map_isolated`): the
  momentum step of each of its leaves, then their Newton-Schulz in the
  stacked layout. So one group's float32 intermediates are alive at a
  time.

  Args:
    step: ``step(i, grad, stored) -> (fresh momentum, new stored)`` of the
      leaf at position ``i`` (a uint32).
    grads: the gradient leaves.
    stored: their stored momenta.
    dims: their dimension numbers.
    schedule: the Newton-Schulz schedule.
    eps: added to each Frobenius norm.
    mesh: the mesh of the layout.

  Returns:
    ``(orthogonalized updates, new stored momenta)``, one of each a leaf,
    the updates in the gradients' shapes and dtypes.
  """
  shapes = [jax.eval_shape(newton_schulz.to_matrices, g, d).shape
            for g, d in zip(grads, dims, strict=True)]
  groups = stacked.group_by_shape(shapes)

  def unit(k, members):
    fresh, new_stored = [], []
    for i, g, s in zip(groups[k], members.grads, members.stored,
                       strict=True):
      f, n = step(jnp.uint32(i), g, s)
      fresh.append(f)
      new_stored.append(n)
    outs = newton_schulz.orthogonalize_stacked(
        fresh, [dims[i] for i in groups[k]], schedule, eps, mesh)
    return outs, new_stored

  inputs = [_Group(tuple(grads[i] for i in group),
                   tuple(stored[i] for i in group)) for group in groups]
  done = _tree.map_isolated(unit, inputs,
                            is_leaf=lambda x: isinstance(x, _Group))
  outs: list[Any] = [None] * len(grads)
  new_stored: list[Any] = [None] * len(grads)
  for group, (o, n) in zip(groups, done, strict=True):
    for i, x, y in zip(group, o, n, strict=True):
      outs[i], new_stored[i] = x.astype(grads[i].dtype), y
  return outs, new_stored
