"""Shape-based scaling of orthogonalized updates."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from quantmuon.transforms import _tree


def scale_leaf(update: jax.Array, dim_nums: _tree.DimNums | None,
               consistent_rms: float | None) -> jax.Array:
  """One leaf's update scaled by the rule of :func:`scale_by_shape`.

  Args:
    update: the orthogonalized update.
    dim_nums: its dimension numbers, or None for a plain matrix.
    consistent_rms: None for the width rule, else the RMS target.

  Returns:
    The scaled update, in ``update``'s dtype.
  """
  fan_in, fan_out = _tree.fans(update.shape, dim_nums)
  if consistent_rms is None:
    factor = jnp.sqrt(jnp.maximum(1.0, fan_out / fan_in))
  else:
    factor = consistent_rms * jnp.sqrt(float(max(fan_in, fan_out)))
  return (factor * update).astype(update.dtype)


def scale_by_shape(consistent_rms: float | None = None,
                   dimension_numbers: Any = None
                   ) -> optax.GradientTransformation:
  """Scales each matrix update by a factor of its shape.

  - width rule (Keller Jordan's Muon, optax's default):
    ``sqrt(max(1, fan_out / fan_in))``;
  - consistent-RMS rule (Moonlight, Liu et al. 2025, arXiv 2502.16982):
    ``consistent_rms * sqrt(max(fan_in, fan_out))``; with 0.2 the update RMS
    matches AdamW's, so Muon can share AdamW's learning rate.

  Args:
    consistent_rms: None for the width rule, else the RMS target (0.2).
    dimension_numbers: as for :func:`quantmuon.orthogonalize`; fan_in is the
      product of the reduction axes, fan_out of the output axes.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """

  def update_fn(updates, state, params=None):
    del params
    lookup = _tree.dimension_numbers_by_path(dimension_numbers, updates)
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u: scale_leaf(u, lookup(path), consistent_rms),
        updates)
    return scaled, state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
