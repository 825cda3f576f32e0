"""Dimension numbers: how the transforms see each leaf as matrices.

The transforms take optax's ``MuonDimensionNumbers`` (one for every leaf, a
tree of them, or a callable of the updates returning one) and resolve them
per leaf to a :class:`~quantmuon.formats.matrix_view.MatrixView`. A leaf
without dimension numbers is a plain matrix when it has rank 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from optax.contrib import MuonDimensionNumbers

from quantmuon.formats.matrix_view import MatrixView

DimNums = MuonDimensionNumbers


def is_dim_nums(x: Any) -> bool:
  return isinstance(x, DimNums)


def path_names(path: tuple) -> tuple:
  """A key path as comparable names: dict keys, attribute names and list
  indices, without the trailing ``.value`` of a ``flax.nnx.Variable`` (so
  a tree of variables and its pure dict match)."""
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) \
      and path[-1].name == "value":
    path = path[:-1]
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(getattr(key, attr))
        break
  return tuple(names)


def dimension_numbers_by_path(
    spec: Any, updates: Any) -> Callable[[tuple], DimNums | None]:
  """Looks up the dimension numbers of each leaf of ``updates`` by path.

  Args:
    spec: None (every leaf is a matrix), one ``MuonDimensionNumbers`` for
      all leaves, a tree of them (None for "a plain matrix") with the
      parameters' structure, or a callable of the updates returning such a
      tree. Trees are matched by path names, so a full-parameter tree works
      inside ``optax.partition``, where the updates are masked, and a pure
      dict serves a tree of ``flax.nnx.Variable``.
    updates: the updates tree the lookup will serve.

  Returns:
    A function from a leaf's key path to its dimension numbers (or None).
  """
  if callable(spec) and not is_dim_nums(spec):
    spec = spec(updates)
  if spec is None or is_dim_nums(spec):
    return lambda path: spec
  flat = jax.tree_util.tree_flatten_with_path(
      spec, is_leaf=lambda x: x is None or is_dim_nums(x))[0]
  table = {path_names(path): value for path, value in flat}
  return lambda path: table.get(path_names(path))


def view_of(shape: Sequence[int], dim_nums: DimNums | None
            ) -> MatrixView:
  """The view of a leaf of ``shape``, checked.

  Raises:
    ValueError: for a leaf of rank < 2, or of rank > 2 without dimension
      numbers.
  """
  ndim = len(shape)
  if dim_nums is None:
    if ndim != 2:
      raise ValueError(
          f"a Muon leaf of shape {tuple(shape)} is not a matrix: give it "
          "MuonDimensionNumbers (dimension_numbers=...) or route it to AdamW "
          "(labels=...).")
    return MatrixView.matrix()
  return MatrixView.of(ndim, dim_nums.reduction_axis, dim_nums.output_axis)


def leaf_views(dimension_numbers: Any, updates: Any) -> list[MatrixView]:
  """The view of every leaf of ``updates``, in leaf order.

  Args:
    dimension_numbers: as for :func:`dimension_numbers_by_path`.
    updates: the updates tree.

  Returns:
    One ``MatrixView`` a leaf.

  Raises:
    ValueError: for a leaf that has no matrix, before anything is traced.
  """
  lookup = dimension_numbers_by_path(dimension_numbers, updates)
  paths = jax.tree_util.tree_flatten_with_path(updates)[0]
  views = []
  for path, leaf in paths:
    try:
      views.append(view_of(leaf.shape, lookup(path)))
    except ValueError as err:
      raise ValueError(f"{jax.tree_util.keystr(path)}: {err}") from None
  return views


def fans(shape: Sequence[int], view: MatrixView) -> tuple[int, int]:
  """(fan_in, fan_out) of each matrix of a leaf."""
  return view.matrix_shape(shape)
