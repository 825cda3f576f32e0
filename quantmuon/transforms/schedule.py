"""How per-matrix work runs: one unit of XLA work at a time.

Muon's update of a leaf (momentum step, Newton-Schulz, scaling) holds a few
float32 copies of the leaf. Run over a whole tree at once, as a chain of
``tree_map``s does, those temporaries pile up to several float32 copies of
every matrix. This module is the one mechanism that runs the work in order
with bounded memory:

- :func:`in_order` runs each *unit* (a leaf, or on a mesh a group of
  same-shape leaves) as one unit of XLA work: its call sits in an
  always-true ``jax.lax.cond``, which XLA schedules whole, so the
  temporaries of one unit are freed before another unit's are allocated,
  under any scheduler (XLA's CPU scheduler ignores
  ``optimization_barrier``). Inside a training step a unit starts as soon
  as its inputs exist, so each gradient is freed once its leaf is updated.
- :func:`over_matrices` runs a function of one matrix over a stack of them
  (the matrices of a scanned or stacked leaf) as a ``jax.lax.scan``:
  compiled once whatever the depth, one matrix's temporaries alive at a
  time, the results and the new carried state (the stored momentum)
  written into new stacks.

A leaf with several matrices is one unit whose body is the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from quantmuon.formats import placement

Array = jax.Array


def isolated(fn: Callable[..., Any], *args: Any) -> Any:
  """``fn(*args)`` as one unit of XLA work.

  The call sits in a ``jax.lax.cond`` whose predicate is always true
  (``x == x or x != x`` of the first element of the first non-empty
  argument, true for NaN too) but not a constant XLA folds; the branch
  never taken returns zeros of ``fn``'s output shapes. Were XLA to fold the
  predicate, it would fold it to true and inline the call: the results
  never depend on it. Arguments without elements are called directly.
  Under ``vmap`` the predicate is batched and both branches run.

  Args:
    fn: the work.
    *args: its arguments (pytrees of arrays).

  Returns:
    ``fn(*args)``.
  """
  sized = [x for x in jax.tree.leaves(args) if x.size]
  if not sized:
    return fn(*args)
  first = _first_element(sized[0])
  always = (first == first) | (first != first)
  shapes = jax.eval_shape(fn, *args)
  return jax.lax.cond(always, fn,
                      lambda *a: jax.tree.map(_zeros, shapes), *args)


def in_order(fn: Callable[..., Any], units: Sequence[Any]) -> list[Any]:
  """``[fn(i, *units[i])]``, each call one unit of XLA work
  (:func:`isolated`).

  Args:
    fn: called as ``fn(i, *unit)`` with ``i`` a Python int.
    units: each unit's arguments, a tuple of pytrees.

  Returns:
    The results in order.
  """
  return [isolated(lambda *a, i=i: fn(i, *a), *unit)
          for i, unit in enumerate(units)]


def over_matrices(fn: Callable[[Array, Array, Any], tuple[Any, Any]],
                  xs: Array, carried: Any) -> tuple[Any, Any]:
  """``fn`` of each matrix of a stack, one after another.

  A ``jax.lax.scan`` over the matrices: iteration ``b`` reads ``xs[b]``
  and the ``b``-th entry of every array of ``carried``, and writes
  ``fn``'s results at ``b`` of new stacks. So ``fn`` is compiled once,
  whatever the stack's depth, and one matrix's temporaries are alive at a
  time. The new carried values are new buffers, not the old ones updated
  in place: a loop that read and wrote one buffer made XLA copy the whole
  stack twice in every iteration (the CPU program of a 4 x 512 x 2048
  leaf did), since the read and the write sat in separate fusions.

  Args:
    fn: ``fn(b, x, c) -> (y, c_new)`` for matrix ``b`` (a uint32 scalar),
      with ``c_new`` of ``c``'s structure, shapes and dtypes; ``y`` any
      pytree of arrays.
    xs: the stack, matrices along the leading axis.
    carried: a pytree of arrays with the same leading axis.

  Returns:
    ``(ys, carried)``: ``fn``'s outputs stacked along a leading axis, and
    the updated ``carried``.
  """
  size = xs.shape[0]
  if size == 1:  # XLA would unroll the loop: run the matrix directly
    y, c = fn(jnp.uint32(0), xs[0], jax.tree.map(lambda a: a[0], carried))
    return (jax.tree.map(lambda a: a[None], y),
            jax.tree.map(lambda a: a[None], c))

  def body(_, inputs):
    b, x, c = inputs
    return None, fn(b, x, c)

  _, (ys, new) = jax.lax.scan(
      body, None, (jnp.arange(size, dtype=jnp.uint32), xs, carried))
  return ys, new


def _first_element(x: Array) -> Array:
  """``x.ravel()[0]``; on Explicit mesh axes read on Auto ones (a slice of
  a sharded axis has no sharded type)."""
  sharding = placement.explicit_sharding(x)
  if sharding is None:
    return x.ravel()[0]
  with placement.on_mesh_of(sharding):
    return jax.sharding.auto_axes(
        lambda y: y.ravel()[0], out_sharding=jax.sharding.PartitionSpec())(x)


def _zeros(s: jax.ShapeDtypeStruct) -> Array:
  """Zeros of ``s``'s shape and dtype, and of its type's sharding on
  Explicit mesh axes (a ``cond``'s branches must have one type)."""
  sharding = getattr(s, "sharding", None)
  explicit = isinstance(sharding, jax.sharding.NamedSharding) and any(
      t == jax.sharding.AxisType.Explicit for t in sharding.mesh.axis_types)
  if not explicit:
    return jnp.zeros(s.shape, s.dtype)
  return jnp.zeros(s.shape, s.dtype, out_sharding=sharding)


def jit_when_eager(update: Callable[..., Any]) -> Callable[..., Any]:
  """``update``, run through one cached ``jax.jit`` when called eagerly.

  An update built of ``lax.cond`` units and loops traces new branch and
  body functions at every call; called eagerly (``nnx.Optimizer.update``
  outside ``nnx.jit``, say) each call would compile them anew. Eager calls
  therefore go through one jitted copy, which compiles once per input
  structure; calls inside a trace run ``update`` itself.

  Args:
    update: ``update(updates, state, params=None)``.

  Returns:
    The same function.
  """
  jitted = jax.jit(update)

  def run(updates, state, params=None):
    traced = any(isinstance(x, jax.core.Tracer)
                 for x in jax.tree.leaves((updates, state, params)))
    return update(updates, state, params) if traced else jitted(
        updates, state, params)

  return run
