"""The stored-value pytree every format returns.

A :class:`Stored` is a pytree whose children are the arrays really kept in
memory (codes, scales, factors, possibly other ``Stored`` values) and whose
static aux data holds the format and the original shape and dtype. So a
stored value passes through ``jax.jit``, ``jax.lax.cond``, ``jax.vmap`` and
Orbax like any optax state.

A checkpoint holds only the arrays, and a restore takes the format from its
target. So that a value is never read back in a format other than the one
that wrote it, each part's key in a key path carries the format's tag
(:func:`format_tag`): ``codes@Blockwise-3f0a6c1e``. Checkpointers that
match a target to a checkpoint by key path (Orbax, and flax serialization
through :mod:`quantmuon.formats.serialization`) then refuse a target of
another format, as they refuse a missing leaf. Tree structures, and so
``jit`` caches, are unchanged: key paths are not part of a treedef.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# Between a part's name and its format's tag in a key path.
TAG_SEPARATOR = "@"


def _canonical(value: Any) -> str:
  """A field value as text that equal values share (``8 == 8.0``)."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return format_identity(value)
  if isinstance(value, numbers.Real) and not isinstance(value, np.ndarray):
    return repr(float(value))
  if isinstance(value, np.dtype | type) and _is_dtype(value):
    return str(jnp.dtype(value))
  if isinstance(value, tuple | list):
    return "(" + ",".join(_canonical(v) for v in value) + ")"
  return repr(value)


def _is_dtype(value: Any) -> bool:
  try:
    jnp.dtype(value)
  except TypeError:
    return False
  return True


def format_identity(fmt: Any) -> str:
  """The text that identifies a format: its class and every field.

  Fields are read as ``dataclasses.fields`` of the frozen dataclass a
  format is (nested formats by their own identity), numbers as floats and
  dtypes by name, so that equal formats have equal identities in any
  process. A format that is not a dataclass is identified by its repr.

  Args:
    fmt: a format.

  Returns:
    ``Class(field=value,...)``.
  """
  if not dataclasses.is_dataclass(fmt):
    return repr(fmt)
  fields = ",".join(f"{f.name}={_canonical(getattr(fmt, f.name))}"
                    for f in dataclasses.fields(fmt) if f.compare)
  return f"{type(fmt).__qualname__}({fields})"


@functools.lru_cache(maxsize=1024)
def format_tag(fmt: Any) -> str:
  """A short tag of a format's identity: ``Blockwise-3f0a6c1e``.

  The class name and 8 hex digits of a hash of :func:`format_identity`:
  two formats that decode differently (another codebook, companding,
  ``mu``, ...) get different tags, equal formats the same one, in every
  process. Stored values carry it in their key paths.

  Args:
    fmt: a format (hashable).

  Returns:
    The tag.
  """
  digest = hashlib.blake2b(format_identity(fmt).encode(), digest_size=4)
  return f"{type(fmt).__name__}-{digest.hexdigest()}"


def part_key(name: str, fmt: Any) -> str:
  """The key of part ``name`` of a value stored in ``fmt``."""
  return f"{name}{TAG_SEPARATOR}{format_tag(fmt)}"


def split_part_key(key: str) -> tuple[str, str | None]:
  """``(name, tag)`` of a part's key; ``(key, None)`` for another key."""
  name, sep, tag = str(key).rpartition(TAG_SEPARATOR)
  return (name, tag) if sep else (str(key), None)


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

  def tree_flatten(self):
    return list(self.parts.values()), self._aux()

  def tree_flatten_with_keys(self):
    """Children keyed ``name@tag`` (see :func:`part_key`)."""
    children = [(jax.tree_util.DictKey(part_key(k, self.format)), v)
                for k, v in self.parts.items()]
    return children, self._aux()

  def _aux(self) -> tuple:
    return (tuple(self.parts), self.format, self.shape, self.dtype,
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


def formats_by_tag(tree: Any) -> dict[str, Any]:
  """Every format of the ``Stored`` values in ``tree`` (nested ones too),
  by :func:`format_tag`."""
  found: dict[str, Any] = {}
  pending = [s for s in jax.tree.leaves(tree, is_leaf=is_stored)
             if is_stored(s)]
  while pending:
    stored = pending.pop()
    found.setdefault(format_tag(stored.format), stored.format)
    pending.extend(p for p in stored.parts.values() if is_stored(p))
  return found
