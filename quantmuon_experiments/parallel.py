"""The device mesh of a run: data parallel plus FSDP, from ``config.mesh``.

``config.mesh.data`` x ``config.mesh.fsdp`` devices form a mesh of Auto
axes ``("data", "fsdp")``:

- batches are split along their first axis over ``data`` (and replicated
  over ``fsdp``);
- every parameter whose first axis (its rows) the ``fsdp`` size divides
  is split along it over ``fsdp``, the others are replicated;
- the optimizer's state follows its parameter
  (:func:`quantmuon.sharding.state_shardings`).

The default ``data = fsdp = 1`` is no mesh at all: the run stays on the
first device as before, whatever the number of devices. Any other shape
must use every device (``jax.device_count()``, all hosts together after
``jax.distributed.initialize()``).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from quantmuon_experiments import errors

AXES = ("data", "fsdp")


def mesh_shape(mesh_config: ml_collections.ConfigDict, batch_size: int,
               device_count: int) -> tuple[int, int] | None:
  """The checked ``(data, fsdp)`` sizes, or None for one device.

  Args:
    mesh_config: ``config.mesh`` (``data`` and ``fsdp``, positive ints).
    batch_size: ``config.train.batch_size``.
    device_count: the devices a mesh would span.

  Returns:
    ``(data, fsdp)``, or None when both are 1.

  Raises:
    ConfigError: a size below 1, a product other than ``device_count``,
      or a batch that ``data`` does not divide.
  """
  data, fsdp = int(mesh_config.data), int(mesh_config.fsdp)
  if data < 1 or fsdp < 1:
    raise errors.ConfigError(
        f"config.mesh: data and fsdp must be at least 1, got data={data}, "
        f"fsdp={fsdp}.")
  if data == fsdp == 1:
    return None
  if data * fsdp != device_count:
    raise errors.ConfigError(
        f"config.mesh: data * fsdp = {data} * {fsdp} = {data * fsdp} must "
        f"equal the number of devices, {device_count}; set --config.mesh.data "
        f"and --config.mesh.fsdp so that their product is {device_count} (or "
        "both to 1 for one device).")
  if batch_size % data:
    raise errors.ConfigError(
        f"config.train.batch_size={batch_size} is not divisible by "
        f"config.mesh.data={data}; use a batch size that is a multiple of "
        f"{data}.")
  return data, fsdp


def make_mesh(config: ml_collections.ConfigDict) -> Mesh | None:
  """The run's mesh over every device, or None for one device.

  Args:
    config: the experiment config (``mesh`` and ``train.batch_size``).

  Returns:
    A ``jax.sharding.Mesh`` of Auto axes ``("data", "fsdp")``, or None.

  Raises:
    ConfigError: see :func:`mesh_shape`.
  """
  shape = mesh_shape(config.mesh, config.train.batch_size,
                     jax.device_count())
  if shape is None:
    return None
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 2)


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """A parameter's spec: rows over ``fsdp`` where divisible, else none.

  Args:
    shape: the parameter's global shape.
    fsdp: the size of the ``fsdp`` axis.

  Returns:
    ``P("fsdp")`` (first axis split) or ``P()`` (replicated).
  """
  if shape and fsdp > 1 and shape[0] % fsdp == 0:
    return P("fsdp")
  return P()


def param_shardings(mesh: Mesh, params: Any) -> Any:
  """The ``NamedSharding`` of every parameter (see :func:`param_spec`).

  Args:
    mesh: the run's mesh.
    params: the parameter tree (arrays or shape structs).

  Returns:
    A tree of ``NamedSharding`` with the structure of ``params``.
  """
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda p: NamedSharding(mesh, param_spec(tuple(p.shape), fsdp)),
      params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches split along their first axis over ``data``."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  """An array whole on every device (the step's metrics)."""
  return NamedSharding(mesh, P())
