"""Where the parts of a stored value live on a mesh: the placement rule.

A stored value is laid out in its array's matrix view (see
:mod:`quantmuon.formats.layout`), so its parts can follow the array's
``PartitionSpec``:

- a part of the array's rank (codes, ``Float`` values, a residual) takes
  the array's spec dimension by dimension;
- a 2-D part of another rank (scales of a rank > 2 array) takes the
  matrix view's row and column entries;
- ``Subspace`` factors P (m x k) and R (n x k) shard their rows like the
  array's rows and columns (each borrowing the other's entry when its own
  is unsharded, so neither factor is replicated whole); k is never split.

A dimension keeps its mesh axes only when their size divides it (JAX
shards evenly); otherwise that dimension is replicated, e.g. the 4 block
scales of a (48, 130) Blockwise matrix on 8 devices, or 4-bit codes of a
column-sharded matrix whose packed width the device count does not
divide. Every rule reads global shapes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec

from quantmuon.formats.matrix_view import MatrixView
from quantmuon.formats.stored import Stored

Array = jax.Array
Entry = str | tuple[str, ...] | None


def entry_size(entry: Entry, sizes: Mapping[str, int]) -> int:
  """How many shards a spec entry cuts a dimension into."""
  if entry is None:
    return 1
  names = (entry,) if isinstance(entry, str) else tuple(entry)
  return math.prod(sizes[n] for n in names)


def fit(entry: Entry, dim: int, sizes: Mapping[str, int]) -> Entry:
  """``entry`` if it splits ``dim`` evenly, else None (replicated)."""
  return entry if dim % entry_size(entry, sizes) == 0 else None


def full_spec(spec: PartitionSpec, ndim: int) -> tuple[Entry, ...]:
  """The spec's entries, padded with None to ``ndim``."""
  entries = tuple(spec)
  return entries + (None,) * (ndim - len(entries))


def _names(entry: Entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)


def merged_entry(entries: tuple[Entry, ...]) -> Entry:
  """The entry of axes merged row-major into one: their mesh axes in order
  when the sharded ones come first (such a merge keeps the sharding),
  else None."""
  sharded = [i for i, e in enumerate(entries) if e is not None]
  if sharded != list(range(len(sharded))):
    return None
  names = sum((_names(e) for e in entries), ())
  return None if not names else names[0] if len(names) == 1 else names


def matrix_entries(shape: tuple[int, ...], spec: PartitionSpec
                   ) -> tuple[Entry, Entry]:
  """The (rows, cols) entries of the matrix view of an array of ``shape``.

  The rows merge the leading axes (see :func:`merged_entry`).
  """
  entries = full_spec(spec, len(shape))
  if len(shape) == 0:
    return None, None
  if len(shape) == 1:
    return None, entries[0]
  return merged_entry(entries[:-1]), entries[-1]


def view_entries(view: MatrixView, shape: tuple[int, ...],
                 spec: PartitionSpec) -> tuple[Entry, Entry, Entry]:
  """The (batch, rows, cols) entries of a leaf's stack of matrices."""
  entries = full_spec(spec, len(shape))
  return tuple(merged_entry(tuple(entries[a] for a in axes))
               for axes in (view.batch, view.reduction, view.output))


def _part_spec(part: Any, shape: tuple[int, ...], spec: PartitionSpec,
               sizes: Mapping[str, int]) -> PartitionSpec:
  if part.ndim == len(shape) and shape:
    entries = full_spec(spec, len(shape))
  elif part.ndim == 2:
    entries = matrix_entries(shape, spec)
  else:
    return PartitionSpec()
  return PartitionSpec(*(fit(e, d, sizes)
                         for e, d in zip(entries, part.shape, strict=True)))


def stored_specs(stored: Stored, spec: PartitionSpec,
                 sizes: Mapping[str, int]) -> Stored:
  """The placement rule: a spec for every part of ``stored``.

  Args:
    stored: a stored value, or its abstract form (``jax.eval_shape``).
    spec: the ``PartitionSpec`` of the array it stands for.
    sizes: mesh axis name -> size (``mesh.shape``).

  Returns:
    A ``Stored`` of the same structure whose leaves are ``PartitionSpec``.
  """
  view = getattr(stored.format, "view", None)
  if isinstance(view, MatrixView):
    return _per_matrix_specs(stored, view, spec, sizes)
  factors = stored.format.factor_axes
  if factors:
    rows, cols = matrix_entries(stored.shape, spec)
    first = {"rows": rows if rows is not None else cols,
             "cols": cols if cols is not None else rows}
    parts = {
        name: stored_specs(part, spec if name not in factors
                           else PartitionSpec(first[factors[name]], None),
                           sizes)
        for name, part in stored.parts.items()}
  else:
    parts = {name: (stored_specs(part, spec, sizes)
                    if isinstance(part, Stored)
                    else _part_spec(part, stored.shape, spec, sizes))
             for name, part in stored.parts.items()}
  return Stored(parts, stored.format, stored.shape, stored.dtype)


def _per_matrix_specs(stored: Stored, view: MatrixView,
                      spec: PartitionSpec, sizes: Mapping[str, int]
                      ) -> Stored:
  """A ``PerMatrix`` value: each matrix's parts placed by the rule for
  the matrix, behind the batch axis's entry."""
  batch, rows, cols = view_entries(view, stored.shape, spec)
  inner = stored.parts["matrices"]
  one = jax.eval_shape(lambda s: jax.tree.map(lambda a: a[0], s), inner)
  specs = stored_specs(one, PartitionSpec(rows, cols), sizes)
  size = view.batch_size(stored.shape)
  specs = jax.tree.map(
      lambda p: PartitionSpec(fit(batch, size, sizes), *p), specs,
      is_leaf=lambda x: isinstance(x, PartitionSpec))
  return Stored({"matrices": specs}, stored.format, stored.shape,
                stored.dtype)


def value_spec(stored: Stored, batch_dims: int = 0) -> PartitionSpec:
  """The spec of the decoded array, read from the parts that carry it.

  The first part of the array's rank (codes, values) gives it; a
  ``Subspace`` reads its residual, a ``PerMatrix`` value its matrices'
  (the stack's batch, row and column entries on the first axis of each
  group of its view). Replicated when no part has that rank.

  Args:
    stored: the stored value (concrete or traced).
    batch_dims: leading batch axes its arrays have beyond ``stored.shape``
      (1 for the matrices of a ``PerMatrix`` value); they lead the spec.
  """
  view = getattr(stored.format, "view", None)
  if isinstance(view, MatrixView):
    stack = full_spec(value_spec(stored.parts["matrices"], 1), 3)
    entries: list[Entry] = [None] * len(stored.shape)
    for axes, entry in zip((view.batch, view.reduction, view.output), stack,
                           strict=True):
      if axes:
        entries[axes[0]] = entry
    return PartitionSpec(*entries)
  for part in stored.parts.values():
    if isinstance(part, Stored) and part.shape == stored.shape:
      return value_spec(part, batch_dims)
  rank = len(stored.shape) + batch_dims
  for part in stored.parts.values():
    if not isinstance(part, Stored) and part.ndim == rank:
      spec = jax.typeof(part).sharding.spec
      return PartitionSpec(*full_spec(spec, part.ndim))
  return PartitionSpec()


def explicit_sharding(x: Any) -> NamedSharding | None:
  """``x``'s sharding when it is part of its type (Explicit mesh axes)."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or not mesh.axis_names or not any(
      t == AxisType.Explicit for t in mesh.axis_types):
    return None
  return sharding


def on_mesh_of(sharding: NamedSharding) -> contextlib.AbstractContextManager:
  """The abstract-mesh context of ``sharding``'s mesh, which
  ``jax.sharding.auto_axes`` reads; a no-op inside ``jax.sharding.set_mesh``
  of the same mesh."""
  mesh = sharding.mesh
  abstract = mesh if isinstance(mesh, AbstractMesh) else mesh.abstract_mesh
  if jax.sharding.get_abstract_mesh() == abstract:
    return contextlib.nullcontext()
  return jax.sharding.use_abstract_mesh(abstract)


def unsharded(tree: Any) -> Any:
  """``tree``'s arrays as ``jax.ShapeDtypeStruct`` without shardings, to
  trace a function that reshapes them (``jax.eval_shape``)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                      tree)


def on_auto_axes(fn: Any, sharding: NamedSharding, out_specs: Any,
                 *args: Any) -> Any:
  """``fn(*args)`` on Auto axes of ``sharding``'s Explicit mesh, its
  results placed by ``out_specs`` (a tree of ``PartitionSpec``).

  Tile reshapes and per-matrix views are not expressible in sharded
  types (they raise ``ShardingTypeError``): such code runs on Auto axes,
  and its results come back on the Explicit ones.
  """
  with on_mesh_of(sharding):
    return jax.sharding.auto_axes(fn, out_sharding=out_specs)(*args)


def is_concrete(x: Any) -> bool:
  """Whether ``x`` is an array with values (not a tracer)."""
  return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def known_sharding(x: Any) -> NamedSharding | None:
  """``x``'s ``NamedSharding`` when known: a concrete array's, or its type's
  on an Explicit mesh; None for a traced array on an Auto mesh."""
  if is_concrete(x):
    sharding = x.sharding
    return sharding if isinstance(sharding, NamedSharding) else None
  return explicit_sharding(x)


def constrain(stored: Stored, sharding: NamedSharding
              ) -> Stored:
  """Places the parts of ``stored`` by the rule for an array of
  ``sharding``, and records its spec in the value (``Stored.spec``)."""
  specs = stored_specs(stored, sharding.spec, sharding.mesh.shape)
  explicit = AxisType.Explicit in sharding.mesh.axis_types
  place = (jax.sharding.reshard if explicit
           else jax.lax.with_sharding_constraint)
  placed = jax.tree.map(
      lambda part, spec: place(part, NamedSharding(sharding.mesh, spec)),
      stored, specs)
  return placed.with_spec(sharding.spec)


def keep(old: Stored, new: Stored) -> Stored:
  """``new`` placed where ``old`` was: by the rule for ``old.spec`` when a
  mesh of Auto axes is in play (a context mesh, or the mesh in the types
  of ``jit``'s inputs), and recording the same spec.

  Under a plain ``jax.jit(tx.update)`` on Auto axes XLA may choose other
  shardings for a new state than the old one came in with: a reshard every
  step, and a retrace when the state is fed back. Nothing is constrained
  without a recorded spec, without a mesh, on Explicit axes (whose
  shardings are types) or inside ``shard_map``.
  """
  if old.spec is None:
    return new
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    typed = [getattr(jax.typeof(x), "sharding", None)
             for x in jax.tree.leaves((old, new))]
    mesh = next((s.mesh for s in typed
                 if s is not None and not s.mesh.empty), mesh)
  if mesh.empty or mesh.size < 2 or any(
      t != AxisType.Auto for t in mesh.axis_types):
    return new.with_spec(old.spec)
  return constrain(new, NamedSharding(mesh, old.spec))


def zeros_like(p: Array) -> Array:
  """float32 +0 of ``p``'s shape, computed from ``p``.

  The dependence lets sharding propagation place them (and what is encoded
  from them) like ``p`` under ``jit`` when ``p``'s sharding is not part of
  its type; ``jnp.zeros`` would be a constant, placed on one device. NaN
  and infinite entries also give +0.
  """
  x = jnp.abs(p.astype(jnp.float32))
  return jnp.where(jnp.isnan(x), 0.0, jnp.minimum(x, 0.0))
