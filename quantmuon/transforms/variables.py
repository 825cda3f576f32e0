"""Parameter trees without ``flax.nnx.Variable`` wrappers."""

from __future__ import annotations

import sys
from typing import Any

import jax


def is_nnx_variable(x: Any) -> bool:
  """Whether ``x`` is a ``flax.nnx.Variable`` (flax is never imported)."""
  nnx = sys.modules.get("flax.nnx")
  return nnx is not None and isinstance(x, nnx.Variable)


def without_variables(tree: Any) -> Any:
  """``tree`` with every ``flax.nnx.Variable`` replaced by its value.

  ``nnx.state(model)`` wraps each parameter in a ``Variable``, and
  ``jax.tree.map`` over such a tree puts its results back inside the same
  wrappers. A state leaf that is itself a pytree (a ``formats.Stored``)
  would then sit inside a ``Variable``, which ``flax.nnx.Optimizer``
  cannot update: it writes the flattened parts back into the ``Variable``
  as a ``State``. Built from the unwrapped tree, the state holds plain
  arrays, and ``nnx.Optimizer`` wraps each of them itself, as it does for
  optax's own states. Flax is never imported here: a tree can only hold
  ``Variable`` values once flax is loaded.

  Args:
    tree: any pytree, e.g. the ``params`` given to an optimizer's ``init``.

  Returns:
    The same tree without ``Variable`` nodes.
  """
  return jax.tree.map(
      lambda x: x.get_value() if is_nnx_variable(x) else x, tree,
      is_leaf=is_nnx_variable)
