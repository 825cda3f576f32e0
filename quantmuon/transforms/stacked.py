"""Newton-Schulz's layout on a mesh: each matrix whole on one device.

Under GSPMD's default layout a sharded matrix all-reduces its Gram matrix
in every Newton-Schulz step and every device repeats the small matmuls.
The stacked layout (the owner-compute scheme of torchtitan's and Dion's
distributed Muon, written as JAX shardings) avoids that:

- leaves whose matrices have one shape (``(m, n)`` and ``(n, m)`` alike:
  each is taken in its wide orientation) are stacked along a new leading
  axis, and that axis is split over every axis of the mesh, so each device
  orthogonalizes whole matrices with no communication inside the
  iteration; the stack is padded with zero matrices (orthogonalized to
  zero) to a multiple of the device count;
- one reshard brings the matrices into the stack and one takes them out
  (XLA places the outputs where their consumers need them; on Explicit
  axes they get the input leaves' shardings back);
- a lone matrix (one leaf of its shape, without batch axes) is split
  along its long axis instead: each step then all-reduces only the short
  side's ``min(m, n)`` squared Gram.

The mesh is the one given, else the context's abstract mesh (set by
``jax.set_mesh`` or ``jax.sharding.use_mesh``), else the one in the
leaves' types: under ``jit`` an array sharded by a ``NamedSharding``
carries its mesh in its type, on Auto axes as on Explicit ones. A mesh of
one device, or none, is no mesh: the leaves are orthogonalized one at a
time as before.
The results equal those of leaf-by-leaf Newton-Schulz up to float32
rounding (batched matmuls may sum in another order). This module lays out
any batched matrix function; :func:`quantmuon.transforms.orthogonalize` and
:func:`quantmuon.transforms.leafwise_muon` give it Newton-Schulz.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from quantmuon.formats import placement
from quantmuon.formats.base import check_choice

Array = jax.Array
LAYOUTS = ("auto", "stacked", "leaf")


def resolve_mesh(layout: str, mesh: Any = None,
                 leaves: Sequence[Any] = ()) -> Any:
  """The mesh Newton-Schulz is laid out on, or None for leaf by leaf.

  Args:
    layout: ``auto`` (stacked when a mesh of several devices is given or
      in the context, else leaf by leaf), ``stacked`` (a mesh is then
      required) or ``leaf`` (GSPMD's default placement of each leaf).
    mesh: a ``jax.sharding.Mesh`` or ``AbstractMesh``; None reads
      ``jax.sharding.get_abstract_mesh()``, and where that is empty the
      mesh in the types of ``leaves`` (sharded arrays under ``jit``).
    leaves: the arrays to orthogonalize.

  Returns:
    The mesh for the stacked layout, or None.

  Raises:
    ValueError: for an unknown ``layout``, or ``stacked`` without a mesh.
  """
  check_choice(layout, "ns_layout", LAYOUTS)
  if layout == "leaf":
    return None
  if mesh is None:
    mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    typed = [jax.typeof(x).sharding.mesh for x in leaves]
    mesh = next((m for m in typed if not m.empty), mesh)
  manual = not mesh.empty and AxisType.Manual in mesh.axis_types
  if mesh.empty or mesh.size < 2 or manual:
    # Inside shard_map (Manual axes) each device already holds its own
    # block: Newton-Schulz runs on it leaf by leaf.
    if layout == "stacked":
      raise ValueError(
          "ns_layout='stacked' needs a mesh of several devices: pass mesh= "
          "or trace the update under jax.set_mesh(mesh); or use "
          "ns_layout='auto'.")
    return None
  return mesh


def group_by_shape(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
  """Positions of the matrices of one wide shape, in first-seen order.

  Args:
    shapes: each leaf's matrix shape ``(..., m, n)``.

  Returns:
    Lists of positions; the matrices of a list share ``(min, max)`` of
    their last two sides.
  """
  groups: dict[tuple[int, int], list[int]] = {}
  for i, shape in enumerate(shapes):
    key = tuple(sorted(shape[-2:]))
    groups.setdefault(key, []).append(i)
  return list(groups.values())


def _constrain(x: Array, mesh: Any, spec: P) -> Array:
  """``x`` split by ``spec``: over ``mesh``, or over the context's mesh of
  the same axes (inside ``auto_axes``, its Auto twin)."""
  context = jax.sharding.get_abstract_mesh()
  if _is_explicit(mesh) and not context.empty and (
      context.axis_names == mesh.axis_names):
    mesh = context
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def _is_explicit(mesh: Any) -> bool:
  return any(t == AxisType.Explicit for t in mesh.axis_types)


def _wide(x: Array) -> Array:
  return jnp.swapaxes(x, -1, -2) if x.shape[-2] > x.shape[-1] else x


def map_group(fn: Callable[[Array], Array], mats: Sequence[Array],
              mesh: Any) -> list[Array]:
  """``fn`` of matrices of one wide shape, laid out on ``mesh``.

  Args:
    fn: a float32 function of a batch of matrices ``(..., m, n)``, batched
      over the leading axes and shape-preserving (Newton-Schulz).
    mats: arrays ``(m, n)`` or ``(b, m, n)`` whose last two sides are one
      pair, in either order.
    mesh: a mesh of Auto axes (see :func:`on_auto_axes` for Explicit).

  Returns:
    ``fn`` of each matrix (fed in its wide orientation), each in its
    matrix's shape.
  """
  axes = tuple(mesh.axis_names)
  wide = [_wide(x.astype(jnp.float32)) for x in mats]
  if len(wide) == 1 and wide[0].ndim == 2:  # a lone matrix: its long axis
    out = [fn(_constrain(wide[0], mesh, P(None, axes)))]
  else:
    m, n = wide[0].shape[-2:]
    flat = [x.reshape(-1, m, n) for x in wide]
    sizes = [x.shape[0] for x in flat]
    total = sum(sizes)
    padded = math.ceil(total / mesh.size) * mesh.size
    stack = jnp.concatenate(
        flat + [jnp.zeros((padded - total, m, n), jnp.float32)], axis=0)
    stack = fn(_constrain(stack, mesh, P(axes, None, None)))
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    out = [stack[a:b].reshape(x.shape)
           for a, b, x in zip(bounds, bounds[1:], wide, strict=False)]
  return [o if o.shape == x.shape else jnp.swapaxes(o, -1, -2)
          for o, x in zip(out, mats, strict=True)]


def map_stacked(fn: Callable[[Array], Array], mats: Sequence[Array],
                mesh: Any) -> list[Array]:
  """:func:`map_group` over each group of :func:`group_by_shape`.

  Args:
    fn: as for :func:`map_group`.
    mats: matrices ``(m, n)`` or ``(b, m, n)`` of any shapes.
    mesh: as for :func:`map_group`.

  Returns:
    ``fn`` of each matrix, in ``mats``' order.
  """
  outs: list[Any] = [None] * len(mats)
  for group in group_by_shape([x.shape for x in mats]):
    done = map_group(fn, [mats[i] for i in group], mesh)
    for i, x in zip(group, done, strict=True):
      outs[i] = x
  return outs


def on_auto_axes(run: Callable[[list[Array]], list[Array]],
                 leaves: Sequence[Array], mesh: Any) -> list[Array]:
  """``run(leaves)``; on Explicit axes inside ``jax.sharding.auto_axes``.

  The layout's constraints and the reshapes around it are not expressible
  in Explicit sharded types, so on such a mesh ``run`` sees Auto axes and
  its outputs get their leaves' shardings back.

  Args:
    run: a function of the list of leaves, giving one array per leaf of
      its shape.
    leaves: the arrays.
    mesh: from :func:`resolve_mesh`.

  Returns:
    ``run(leaves)``.
  """
  leaves = list(leaves)
  if not _is_explicit(mesh):
    return run(leaves)
  specs = [jax.typeof(u).sharding.spec for u in leaves]
  with placement.on_mesh_of(NamedSharding(mesh, P())):
    return jax.sharding.auto_axes(run, out_sharding=specs)(leaves)
