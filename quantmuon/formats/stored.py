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
    spec: the ``PartitionSpec`` of the parameter it belongs to, when known
      at ``init`` (static; see ``placement.constrain``): an update on a
      mesh places the new value by it, so that the state stays where
      ``init`` put it. None when unknown.
  """

  __slots__ = ("parts", "format", "shape", "dtype", "spec")

  def __init__(self, parts: Mapping[str, Any], format: Any,
               shape: tuple[int, ...], dtype: Any, spec: Any = None):
    self.parts = dict(sorted(parts.items()))
    self.format = format
    self.shape = tuple(int(d) for d in shape)
    self.dtype = jnp.dtype(dtype)
    self.spec = spec

  def __getitem__(self, name: str) -> Any:
    return self.parts[name]

  def tree_flatten_with_keys(self):
    children = [(jax.tree_util.DictKey(k), v) for k, v in self.parts.items()]
    return children, (tuple(self.parts), self.format, self.shape, self.dtype,
                      _Record(self.spec))

  @classmethod
  def tree_unflatten(cls, aux, children):
    names, fmt, shape, dtype, record = aux
    obj = object.__new__(cls)
    obj.parts = dict(zip(names, children, strict=True))
    obj.format, obj.shape, obj.dtype = fmt, shape, dtype
    obj.spec = record.value
    return obj

  def with_spec(self, spec: Any) -> Stored:
    """The same value recording ``spec`` (see ``spec``)."""
    return Stored(self.parts, self.format, self.shape, self.dtype, spec)

  def decode(self, dtype: Any = None) -> Array:
    """Decodes through the format; shorthand for ``format.decode(self)``."""
    return self.format.decode(self, dtype=dtype)

  def __repr__(self) -> str:
    parts = ", ".join(
        f"{k}={getattr(v, 'shape', '?')}:{getattr(v, 'dtype', '?')}"
        for k, v in self.parts.items())
    return f"Stored({self.format!r}, shape={self.shape}, {parts})"


class _Record:
  """Static data that is no part of a pytree's structure.

  ``Stored.spec`` is known when ``init`` ran on placed parameters and
  unknown under a plain ``jit`` of ``init``; both states have one
  structure, so that the shardings of ``quantmuon.sharding.state_shardings``
  pin either, and a restored or fed-back state matches its target.
  """

  __slots__ = ("value",)

  def __init__(self, value: Any):
    self.value = value

  def __eq__(self, other: object) -> bool:
    return isinstance(other, _Record)

  def __hash__(self) -> int:
    return hash(_Record)


def is_stored(x: Any) -> bool:
  return isinstance(x, Stored)
