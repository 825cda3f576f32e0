"""Tree helpers shared by the transforms: static arguments, per-leaf order,
parameter trees without framework wrappers, and dimension numbers resolved
by path."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from optax.contrib import MuonDimensionNumbers

from quantmuon.formats import placement

Array = jax.Array
DimNums = MuonDimensionNumbers


def static_int(value: Any, name: str, default: int) -> int:
  """A structural integer argument (a size, a step count, bits).

  Args:
    value: the argument; None takes ``default``.
    name: its name, for the error.
    default: the value used when ``value`` is None.

  Returns:
    A Python int.

  Raises:
    ValueError: if ``value`` is traced (e.g. made a hyperparameter by
      ``optax.inject_hyperparams``) or not an integer.
  """
  if value is None:
    return default
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"{name} sets the shape of the optimizer state and must be a Python "
        f"int, not a traced value; under optax.inject_hyperparams pass "
        f"static_args=({name!r},).")
  if isinstance(value, bool) or not float(value).is_integer():
    raise ValueError(f"{name} must be an integer, got {value!r}.")
  return int(value)


def static_float(value: Any, name: str, default: float) -> float:
  """A float argument that a format keeps as static data (e.g. mu-law mu)."""
  if value is None:
    return default
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"{name} is static data of a storage format and must be a Python "
        f"float; under optax.inject_hyperparams pass static_args=({name!r},).")
  return float(value)


def _is_nnx_variable(x: Any) -> bool:
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
      lambda x: x.get_value() if _is_nnx_variable(x) else x, tree,
      is_leaf=_is_nnx_variable)


def map_in_order(fn: Callable[..., Any], *trees: Any,
                 is_leaf: Callable[[Any], bool] | None = None) -> Any:
  """``jax.tree.map`` that makes XLA finish one leaf before the next.

  Each leaf's inputs pass through ``jax.lax.optimization_barrier`` together
  with the previous leaf's outputs, so XLA cannot interleave the leaves and
  the temporaries of one leaf are freed before the next leaf's are
  allocated. This bounds peak memory by the largest leaf instead of the sum
  over leaves where XLA's scheduler keeps the order; the CPU backend's
  default, concurrency-optimized scheduler does not, and interleaves the
  leaves anyway (see :func:`map_isolated`).

  Args:
    fn: called as ``fn(i, *leaves)`` for leaf position ``i`` (a Python int).
    *trees: trees of the same structure as the first one (up to ``is_leaf``).
    is_leaf: passed to the flattening of the first tree.

  Returns:
    A tree of ``fn``'s outputs with the first tree's structure.
  """
  leaves, treedef = jax.tree.flatten(trees[0], is_leaf=is_leaf)
  others = [treedef.flatten_up_to(t) for t in trees[1:]]
  outputs: list[Any] = []
  previous: Any = None
  for i, leaf in enumerate(leaves):
    args = (leaf,) + tuple(o[i] for o in others)
    if previous is not None:
      _, args = jax.lax.optimization_barrier((previous, args))
    out = fn(i, *args)
    outputs.append(out)
    previous = out
  return treedef.unflatten(outputs)


def map_isolated(fn: Callable[..., Any], *trees: Any,
                 is_leaf: Callable[[Any], bool] | None = None) -> Any:
  """``jax.tree.map`` that runs each leaf's ``fn`` as one unit of XLA work.

  Each leaf's call sits in its own ``jax.lax.cond``, so XLA schedules it
  whole: the temporaries of one leaf are freed before another leaf's are
  allocated, under any scheduler. :func:`map_in_order`'s barriers do not
  achieve that on XLA's CPU backend, whose default (concurrency-optimized)
  scheduler interleaves the leaves anyway. The predicate is always true
  (``x == x or x != x`` of the leaf's first element, true for NaN too;
  leaves without elements are mapped directly) but
  not a constant XLA folds, so the conditional stays; the branch never
  taken returns zeros of ``fn``'s output shapes. Were XLA to fold the
  predicate, it would fold it to true and inline the call: the results
  never depend on it.
  Under ``vmap`` the predicate is batched and both branches run (the other
  one fills zeros).

  Args:
    fn: called as ``fn(i, *leaves)`` for leaf position ``i`` (a Python
      int).
    *trees: trees of the same structure as the first one (up to ``is_leaf``).
    is_leaf: passed to the flattening of the first tree.

  Returns:
    A tree of ``fn``'s outputs with the first tree's structure.
  """
  leaves, treedef = jax.tree.flatten(trees[0], is_leaf=is_leaf)
  others = [treedef.flatten_up_to(t) for t in trees[1:]]
  outputs = []
  for i, leaf in enumerate(leaves):
    args = (leaf,) + tuple(o[i] for o in others)
    sized = [x for x in jax.tree.leaves(args) if x.size]
    if not sized:  # nothing to hold in memory
      outputs.append(fn(i, *args))
      continue
    first = _first_element(sized[0])
    always = (first == first) | (first != first)
    shapes = jax.eval_shape(lambda *a, i=i: fn(i, *a), *args)
    outputs.append(jax.lax.cond(
        always, lambda *a, i=i: fn(i, *a),
        lambda *a, shapes=shapes: jax.tree.map(_zeros, shapes), *args))
  return treedef.unflatten(outputs)


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


def is_dim_nums(x: Any) -> bool:
  return isinstance(x, DimNums)


def dimension_numbers_by_path(
    spec: Any, updates: Any) -> Callable[[tuple], DimNums | None]:
  """Looks up the dimension numbers of each leaf of ``updates`` by path.

  Args:
    spec: None (every leaf is a matrix), one ``MuonDimensionNumbers`` for
      all leaves, a tree of them (None for "not a matrix") with the
      parameters' structure, or a callable of the updates returning such a
      tree. Trees are matched by path, so a full-parameter tree works inside
      ``optax.partition``, where the updates are masked.
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
  table = {tuple(path): value for path, value in flat}
  return lambda path: table.get(tuple(path))


def matrix_axes(shape: Sequence[int], dim_nums: DimNums | None
                ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
  """(batch, reduction, output) axes of a leaf, checked.

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
    return (), (0,), (1,)
  if ndim < 2:
    raise ValueError(
        f"a leaf of shape {tuple(shape)} has no matrix to orthogonalize; "
        "route 0-D and 1-D leaves to AdamW.")
  def norm(axes):
    return tuple(
        sorted(a % ndim for a in (axes if isinstance(axes, Sequence)
                                  else (axes,))))
  red, out = norm(dim_nums.reduction_axis), norm(dim_nums.output_axis)
  batch = tuple(a for a in range(ndim) if a not in red + out)
  return batch, red, out


def fans(shape: Sequence[int], dim_nums: DimNums | None) -> tuple[int, int]:
  """(fan_in, fan_out) of a leaf: products of its reduction / output axes."""
  _, red, out = matrix_axes(shape, dim_nums)
  return (int(np.prod([shape[a] for a in red])),
          int(np.prod([shape[a] for a in out])))



def map_grouped(fn: Callable[..., tuple[Any, Any]],
                static_of: Callable[[int], Any], xs: list[Any],
                carried: list[Any]) -> list[tuple[Any, Any]]:
  """``[fn(static_of(i), i, xs[i], carried[i])]``, one loop per group.

  Leaves whose ``static_of`` and whose argument shapes and dtypes agree
  form a group. A group of one runs as :func:`map_isolated` runs it; a
  larger group runs as one ``jax.lax.fori_loop`` over its leaves, so ``fn``
  is traced and compiled once per group instead of once per leaf (XLA
  inlines repeated calls and compiles each copy). Like a ``lax.cond``, a
  loop is one unit of XLA work, and its iterations run one after another:
  only one leaf's temporaries are alive at a time. Iteration ``t`` picks
  its leaf with ``jax.lax.switch`` (a copy of one leaf), and writes its
  results into the loop's carry: the outputs (zeros at first) and the
  carried values, which start as ``carried`` and are replaced leaf by
  leaf, so a donated ``carried`` (the stored momentum) is updated in
  place.

  Args:
    fn: called as ``fn(static, i, x, c)`` with ``i`` the leaf's position
      (a uint32 scalar, traced inside a loop); returns ``(y, c_new)`` with
      ``c_new`` of ``c``'s structure, shapes and dtypes.
    static_of: a hashable static argument of leaf ``i``.
    xs: the leaves read.
    carried: the leaves replaced by ``c_new``, one per leaf of ``xs``.

  Returns:
    ``[(y, c_new)]`` in the leaves' order.
  """
  groups: dict[Any, list[int]] = {}
  for i, args in enumerate(zip(xs, carried, strict=True)):
    flat, structure = jax.tree.flatten(args)
    signature = tuple((x.shape, x.dtype) for x in flat)
    groups.setdefault((static_of(i), structure, signature), []).append(i)
  outputs: list[Any] = [None] * len(xs)
  for (static, _, _), idx in groups.items():
    if len(idx) == 1:
      i = idx[0]
      outputs[i] = map_isolated(
          lambda _, x, c, i=i, static=static: fn(static, jnp.uint32(i), x, c),
          [xs[i]], [carried[i]])[0]
      continue
    positions = jnp.asarray(idx, jnp.uint32)
    group_xs = [xs[i] for i in idx]
    shapes, _ = jax.eval_shape(
        lambda x, c, static=static, i=idx[0]: fn(static, jnp.uint32(i), x,
                                                 c),
        group_xs[0], carried[idx[0]])
    ys = tuple(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
               for _ in idx)
    cs = tuple(carried[i] for i in idx)

    def body(t, carry, static=static, positions=positions,
             group_xs=group_xs):
      ys, cs = carry
      picks = [lambda cs, j=j: (group_xs[j], cs[j])
               for j in range(len(group_xs))]
      y, c = fn(static, positions[t], *jax.lax.switch(t, picks, cs))
      writes = [lambda ys, cs, j=j: (ys[:j] + (y,) + ys[j + 1:],
                                     cs[:j] + (c,) + cs[j + 1:])
                for j in range(len(group_xs))]
      return jax.lax.switch(t, writes, ys, cs)

    ys, cs = jax.lax.fori_loop(0, len(idx), body, (ys, cs))
    for j, i in enumerate(idx):
      outputs[i] = (ys[j], cs[j])
  return outputs
