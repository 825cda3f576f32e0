"""The stored-value pytree every format returns.

A :class:`Stored` is a pytree whose children are the arrays really kept in
memory (codes, scales, factors, possibly other ``Stored`` values) and whose
static aux data holds the format and the original shape and dtype. So a
stored value passes through ``jax.jit``, ``jax.lax.cond``, ``jax.vmap`` and
Orbax like any optax state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.tree_util.register_pytree_with_keys_class
class Stored:
  """An array kept in a format: its parts plus static metadata.

  Attributes:
    parts: mapping from part name ("codes", "scales", "P", ...) to an array or
      a nested ``Stored``. Iterated in sorted-name order.
    format: the ``Format`` that produced it (static).
    shape: the shape of the array it stands for (static).
    dtype: the dtype the array decodes to by default (static).
  """

  __slots__ = ("parts", "format", "shape", "dtype")

  def __init__(self, parts: Mapping[str, Any], format: Any,
               shape: tuple[int, ...], dtype: Any):
    self.parts = dict(sorted(parts.items()))
    self.format = format
    self.shape = tuple(int(d) for d in shape)
    self.dtype = jnp.dtype(dtype)

  def __getitem__(self, name: str) -> Any:
    return self.parts[name]

  def tree_flatten_with_keys(self):
    children = [(jax.tree_util.DictKey(k), v) for k, v in self.parts.items()]
    return children, (tuple(self.parts), self.format, self.shape, self.dtype)

  @classmethod
  def tree_unflatten(cls, aux, children):
    names, fmt, shape, dtype = aux
    obj = object.__new__(cls)
    obj.parts = dict(zip(names, children, strict=True))
    obj.format, obj.shape, obj.dtype = fmt, shape, dtype
    return obj

  def decode(self, dtype: Any = None) -> Array:
    """Decodes through the format; shorthand for ``format.decode(self)``."""
    return self.format.decode(self, dtype=dtype)

  def __repr__(self) -> str:
    parts = ", ".join(
        f"{k}={getattr(v, 'shape', '?')}:{getattr(v, 'dtype', '?')}"
        for k, v in self.parts.items())
    return f"Stored({self.format!r}, shape={self.shape}, {parts})"


def is_stored(x: Any) -> bool:
  return isinstance(x, Stored)
