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
follows. Leaves of one shape, format and dimension numbers run as one loop
over them (:func:`quantmuon.transforms._tree.map_grouped`), which XLA
compiles once; a leaf alone in its group runs in its own ``lax.cond``
(:func:`quantmuon.transforms._tree.map_isolated`). Its updates and state
are the chain's, bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax

from quantmuon import formats
from quantmuon.transforms import _tree, newton_schulz, scale
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

  Returns:
    An ``optax.GradientTransformation`` whose state is the
    ``QuantizedMomentumState`` of :func:`scale_by_quantized_momentum`.
  """
  min_size, seed = momentum_lib.check_options(
      momentum_format, accumulation, min_size, seed, impl)
  schedule = newton_schulz.newton_schulz_schedule(ns_coeffs, ns_steps)

  def init_fn(params):
    return momentum_lib.init_momentum(params, momentum_format, min_size)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    grads, treedef, stored, state_def = momentum_lib.pair_leaves(
        updates, state, "leafwise_muon")
    dims = newton_schulz.leaf_dimension_numbers(dimension_numbers, updates)
    base_key = momentum_lib.step_key(seed, count)

    distinct = []  # the distinct dimension numbers, by position
    for dim in dims:
      if dim not in distinct:
        distinct.append(dim)

    # Leaves of one shape, format and dimension numbers run in one loop
    # (map_grouped), so XLA compiles core once for them. Jitted so that
    # its shapes and its call are traced once; the position is an argument.
    @functools.partial(jax.jit, static_argnums=(3,))
    def core(i, g, s, dim_index):
      fresh, new_stored = momentum_lib.leaf_step(
          i, g, s, beta=beta, accumulation=accumulation, normalize=normalize,
          nesterov=nesterov, count=count, base_key=base_key, impl=impl)
      mats = newton_schulz.to_matrices(fresh, distinct[dim_index])
      return newton_schulz.newton_schulz(mats, schedule, eps), new_stored

    outs = _tree.map_grouped(
        lambda dim_index, i, g, s: core(i, g, s, dim_index),
        lambda i: distinct.index(dims[i]), grads, stored)
    # Scaled outside the loops and conds, as the chain scales, so that XLA
    # rewrites the scaling and what follows it (the learning rate) alike.
    new_updates = treedef.unflatten([
        scale.scale_leaf(newton_schulz.from_matrices(o[0], g, dim), dim,
                         consistent_rms)
        for o, g, dim in zip(outs, grads, dims, strict=True)])
    momentum = state_def.unflatten([o[1] for o in outs])
    return new_updates, momentum_lib.QuantizedMomentumState(count, momentum)

  return optax.GradientTransformation(init_fn, update_fn)
