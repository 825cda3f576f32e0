"""Byte accounting: what a tree of stored values and arrays really occupies."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _leaf_bytes(leaf: Any) -> int:
  if hasattr(leaf, "size") and hasattr(leaf, "dtype"):
    return int(leaf.size) * np.dtype(leaf.dtype).itemsize
  return 0


def nbytes(tree: Any) -> int:
  """Bytes held by every array in ``tree``: codes, scales, padding, counts.

  Works on concrete arrays and on ``jax.ShapeDtypeStruct`` trees (e.g. from
  ``jax.eval_shape``), so a state's size can be known without building it.

  Args:
    tree: any pytree, e.g. an optax state holding ``Stored`` values.

  Returns:
    The total number of bytes.
  """
  return sum(_leaf_bytes(leaf) for leaf in jax.tree.leaves(tree))


def memory_report(tree: Any) -> dict[str, int]:
  """Bytes per leaf, keyed by the leaf's path (``jax.tree_util.keystr``)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(path): _leaf_bytes(leaf)
          for path, leaf in leaves}
