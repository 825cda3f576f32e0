"""Shape-based scaling of orthogonalized updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from quantmuon.formats.matrix_view import MatrixView
from quantmuon.transforms import matrices, options


def shape_factor(shape: tuple[int, ...], view: MatrixView,
                 consistent_rms: float | None) -> jax.Array | float:
  """The factor of :func:`scale_by_shape` for each matrix of a leaf.

  Args:
    shape: the leaf's shape.
    view: its view.
    consistent_rms: None for the width rule, else the RMS target.

  Returns:
    The factor.

  Raises:
    ValueError: for matrices without elements.
  """
  fan_in, fan_out = view.matrix_shape(shape)
  if fan_in == 0 or fan_out == 0:
    raise ValueError(
        f"scale_by_shape: a leaf of shape {tuple(shape)} holds empty "
        f"({fan_in} x {fan_out}) matrices, which have no shape to scale by; "
        "leave it out of Muon's leaves (labels=...).")
  if consistent_rms is None:
    return jnp.sqrt(jnp.maximum(1.0, fan_out / fan_in))
  return consistent_rms * jnp.sqrt(float(max(fan_in, fan_out)))


def scale_leaf(update: jax.Array, view: MatrixView,
               consistent_rms: float | None) -> jax.Array:
  """One leaf's update scaled by the rule of :func:`scale_by_shape`.

  Args:
    update: the orthogonalized update.
    view: its view.
    consistent_rms: None for the width rule, else the RMS target.

  Returns:
    The scaled update, in ``update``'s dtype.
  """
  factor = shape_factor(update.shape, view, consistent_rms)
  return (factor * update).astype(update.dtype)


@options.expand
def scale_by_shape(scale: options.ScaleOptions, view: options.ViewOptions
                   ) -> optax.GradientTransformation:
  """Scales each matrix update by a factor of its shape.

  - width rule (Keller Jordan's Muon, optax's default):
    ``sqrt(max(1, fan_out / fan_in))``;
  - consistent-RMS rule (Moonlight, Liu et al. 2025, arXiv 2502.16982):
    ``consistent_rms * sqrt(max(fan_in, fan_out))``; with 0.2 the update RMS
    matches AdamW's, so Muon can share AdamW's learning rate.

  fan_in and fan_out are those of each matrix of the leaf's view (the
  products of its reduction and output axes), not of the stack.

  Args:
    scale: the field of ``ScaleOptions``, ``consistent_rms``.
    view: the field of ``ViewOptions``, ``dimension_numbers``.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """

  def update_fn(updates, state, params=None):
    del params
    leaves, treedef = jax.tree.flatten(updates)
    views = matrices.leaf_views(view.dimension_numbers, updates)
    scaled = [scale_leaf(u, v, scale.consistent_rms)
              for u, v in zip(leaves, views, strict=True)]
    return treedef.unflatten(scaled), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
