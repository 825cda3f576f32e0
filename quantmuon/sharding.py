"""The shardings of an optimizer's state, to pin them under ``jax.jit``.

A format's parts follow their parameter's ``PartitionSpec`` by the rule of
:mod:`quantmuon.formats.placement`. On a mesh of Auto axes XLA may still
choose other output shardings for a jitted step; pin them:

    shardings = quantmuon.sharding.state_shardings(tx, params)
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    step = jax.jit(tx.update, out_shardings=(param_shardings, shardings))

On a mesh of Explicit axes shardings are part of the arrays' types, and
``init`` and ``update`` give these shardings without pins.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax.sharding import (
    AbstractMesh,
    AxisType,
    Mesh,
    NamedSharding,
    PartitionSpec,
)

from quantmuon import formats
from quantmuon.formats import placement
from quantmuon.transforms.variables import without_variables

__all__ = ["init", "replicate_on_mesh", "state_shardings"]


def _mesh_of(params: Any) -> Mesh:
  """The one mesh every parameter is sharded over."""
  meshes = set()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, NamedSharding):
      raise ValueError(
          f"state_shardings: parameter {jax.tree_util.keystr(path)} has "
          f"sharding {sharding!r}; place every parameter with a "
          "jax.sharding.NamedSharding (jax.device_put(params, shardings)).")
    meshes.add(sharding.mesh)
  if len(meshes) != 1:
    raise ValueError(
        f"state_shardings: the parameters lie on {len(meshes)} meshes; "
        "place them all on one mesh.")
  return meshes.pop()


def state_shardings(tx: optax.GradientTransformation, params: Any) -> Any:
  """The ``NamedSharding`` of every leaf of ``tx.init(params)``.

  Traces ``tx.init`` with the parameters' specs on Explicit axes of the
  same shape, so each state leaf gets the sharding ``init`` gives it there:
  optax's ``zeros_like`` state that of its parameter, stored momentum the
  placement rule's, counters replicated. Nothing is computed.

  Args:
    tx: the optimizer (any optax ``GradientTransformation``).
    params: the parameters: ``jax.Array`` or ``jax.ShapeDtypeStruct``
      leaves, each with a ``NamedSharding`` on one mesh.

  Returns:
    A tree of the state's structure with ``NamedSharding`` leaves on the
    parameters' mesh, for ``out_shardings`` (or ``jax.device_put``).

  Raises:
    ValueError: when a parameter has no ``NamedSharding`` or the
      parameters lie on several meshes.
  """
  params = without_variables(params)
  mesh = _mesh_of(params)
  explicit = AbstractMesh(
      tuple(mesh.axis_sizes), tuple(mesh.axis_names),
      axis_types=(AxisType.Explicit,) * len(mesh.axis_names))
  avals = jax.tree.map(
      lambda p: jax.ShapeDtypeStruct(
          p.shape, p.dtype,
          sharding=NamedSharding(explicit, p.sharding.spec)), params)
  with jax.sharding.use_abstract_mesh(explicit):
    state = jax.eval_shape(tx.init, avals)
  # eval_shape gives scalars no sharding: they are replicated.
  return jax.tree.map(
      lambda s: NamedSharding(
          mesh, PartitionSpec() if s.sharding is None else s.sharding.spec),
      state)


def init(tx: optax.GradientTransformation, params: Any) -> Any:
  """``tx.init(params)`` placed by the rule, never whole on one device.

  Runs ``init`` under ``jax.jit`` with :func:`state_shardings` as its
  ``out_shardings``, and records in each stored value the placement it
  was given (``Stored.spec``), as an eager ``tx.init`` of placed
  parameters does: a plain ``jax.jit(tx.update)`` then keeps the state
  where it is, step after step, without pins.

  Args:
    tx: the optimizer.
    params: the parameters, each with a ``NamedSharding`` on one mesh.

  Returns:
    The initial state.
  """
  shardings = state_shardings(tx, params)
  state = jax.jit(tx.init, out_shardings=shardings)(params)
  return jax.tree.map(
      lambda s, sh: s.with_spec(sh.spec) if formats.is_stored(s) else s,
      state, shardings, is_leaf=formats.is_stored)


def on_one_device(params: Any) -> bool:
  """Whether ``params`` are concrete arrays, all on one device (an eager
  ``init`` there can run compiled, with nothing to place)."""
  leaves = jax.tree.leaves(params)
  return bool(leaves) and all(
      placement.is_concrete(x) and len(x.sharding.device_set) == 1
      for x in leaves)


def replicate_on_mesh(state: Any, params: Any) -> Any:
  """``state``'s leaves that sit on one device, replicated on the mesh of
  ``params`` (concrete arrays with ``NamedSharding`` on several devices);
  ``state`` unchanged otherwise.

  An eager ``init`` makes its counters on the default device, and the
  first jitted ``update`` on the mesh would move them, and retrace on the
  next step.
  """
  meshes = {x.sharding.mesh for x in jax.tree.leaves(
      without_variables(params))
            if placement.is_concrete(x)
            and isinstance(x.sharding, NamedSharding)}
  if len(meshes) != 1:
    return state
  mesh = meshes.pop()
  if mesh.size < 2:
    return state
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(
      lambda x: jax.device_put(x, replicated) if placement.is_concrete(
          x) and isinstance(
              x.sharding, jax.sharding.SingleDeviceSharding) else x, state)

