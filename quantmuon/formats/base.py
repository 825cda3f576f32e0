"""The stored-value pytree and the base class every format derives from.

A *format* says how one float array is kept between optimizer steps. It is a
frozen, hashable dataclass with ``encode`` and ``decode``. What ``encode``
returns is a :class:`~quantmuon.formats.stored.Stored` (re-exported here).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats import placement
from quantmuon.formats.kernel_layout import Factored, KernelLayout
from quantmuon.formats.stored import Stored

Array = jax.Array


class Format(abc.ABC):
  """Base class of the storage formats.

  Subclasses are frozen dataclasses and implement ``_encode`` and ``_decode``.
  """

  # Whether the format can store a zero-size array (scaled codes cannot).
  holds_empty: ClassVar[bool] = False
  # Parts that are factors laid along one axis of the matrix view, by name:
  # "rows" (m x k) or "cols" (n x k); placement shards them along it.
  factor_axes: ClassVar[Mapping[str, str]] = {}

  def __init_subclass__(cls, **kwargs: Any):
    """Makes the ValueErrors of ``cls.__post_init__`` name the class.

    ``Blockwise(bits=3)`` raises "Blockwise: bits must be one of (2, 4, 8)
    ...", whichever shared check found it.
    """
    super().__init_subclass__(**kwargs)
    check = cls.__dict__.get("__post_init__")
    if check is None:
      return

    @functools.wraps(check)
    def __post_init__(self) -> None:
      try:
        check(self)
      except ValueError as e:
        owner = f"{type(self).__name__}: "
        if e.args and not str(e.args[0]).startswith(owner):
          e.args = (owner + str(e.args[0]), *e.args[1:])
        raise

    cls.__post_init__ = __post_init__

  def encode(self, x: Array, *, key: Array | None = None,
             previous: Stored | None = None) -> Stored:
    """Stores ``x`` in this format.

    Args:
      x: the array to store (any float dtype).
      key: a ``jax.random`` key, needed when the format rounds
        stochastically.
      previous: the value stored at the previous step, for formats that warm
        start from it (``Subspace``); ignored by the others.

    Returns:
      A ``Stored`` pytree.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(
          f"{type(self).__name__}.encode needs a floating-point array, got "
          f"dtype {x.dtype}; cast it with x.astype(jnp.float32).")
    if x.size == 0 and not self.holds_empty:
      raise ValueError(
          f"{type(self).__name__} cannot store an empty array (shape "
          f"{x.shape}); keep it in formats.Float() (the transforms' min_size "
          "does so for small leaves).")
    sharding = placement.explicit_sharding(x)
    if sharding is not None:
      return self._encode_explicit(x, sharding, key=key, previous=previous)
    stored = self._encode(x, key=key, previous=previous)
    sharding = placement.known_sharding(x)
    return stored if sharding is None else placement.constrain(stored,
                                                               sharding)

  def _encode_explicit(self, x: Array, sharding: Any, *,
                       key: Array | None, previous: Stored | None) -> Stored:
    """``_encode`` of an array sharded on Explicit mesh axes.

    The tile reshapes are not expressible in sharded types (they raise
    ``ShardingTypeError``), so the encoding runs on Auto axes and its parts
    come out placed by :func:`placement.stored_specs`.
    """
    def run(x, key, previous):
      return self._encode(x, key=key, previous=previous)

    shapes = jax.eval_shape(run, jax.ShapeDtypeStruct(x.shape, x.dtype),
                            key, previous)
    specs = placement.stored_specs(shapes, sharding.spec, sharding.mesh.shape)
    with placement.on_mesh_of(sharding):
      stored = jax.sharding.auto_axes(run, out_sharding=specs)(x, key,
                                                               previous)
    return stored.with_spec(sharding.spec)

  def decode(self, stored: Stored, dtype: Any = None) -> Array:
    """Reads a stored value back.

    Args:
      stored: what ``encode`` returned.
      dtype: the dtype of the result; float32 when None.

    Returns:
      An array of ``stored.shape``.
    """
    if stored.format != self:
      raise ValueError(
          f"stored value was written by {stored.format!r}, not by {self!r}.")
    sharding = placement.explicit_sharding(jax.tree.leaves(stored)[0])
    if sharding is not None:
      with placement.on_mesh_of(sharding):
        out = jax.sharding.auto_axes(
            self._decode, out_sharding=placement.value_spec(stored))(stored)
    else:
      out = self._decode(stored)
    return out.astype(jnp.float32 if dtype is None else dtype)

  def init(self, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Stored:
    """The stored form of zeros of ``shape``: an optimizer's initial state.

    Zeros round to the same codes under any rounding, so a fixed key serves
    formats that round stochastically. The zeros pass an optimization
    barrier: otherwise XLA constant-folds the whole encoding under ``jit``,
    which takes seconds for large parameters.
    """
    zeros = jax.lax.optimization_barrier(jnp.zeros(shape, dtype))
    return self.encode(zeros, key=jax.random.key(0))

  def init_like(self, like: Array) -> Stored:
    """The stored form of zeros shaped and placed like ``like``.

    The optimizer's initial state for a parameter ``like``: its parts are
    placed by :mod:`quantmuon.formats.placement` for ``like``'s sharding
    when that is known (a concrete array, or Explicit mesh axes), and
    follow ``like`` by sharding propagation under ``jit`` otherwise.

    Args:
      like: the parameter (any dtype; only its shape and placement count).

    Returns:
      A ``Stored`` that decodes to float32 zeros of ``like.shape``.
    """
    return self.encode(placement.zeros_like(like), key=jax.random.key(0))

  def kernel_layout(self, shape: tuple[int, ...]
                    ) -> KernelLayout | Factored | None:
    """How the fused kernels lay this format out on an array of ``shape``.

    None (the default) when no kernel stores the format. A format that
    returns a ``KernelLayout`` implements ``kernel_layout.KernelFormat``;
    one that returns a ``Factored`` layout ``kernel_layout.FactoredFormat``
    (see :mod:`quantmuon.formats.kernel_layout`).
    """
    del shape
    return None

  @abc.abstractmethod
  def _encode(self, x: Array, *, key: Array | None,
              previous: Stored | None) -> Stored:
    """Format-specific encoding; ``x`` is a float array."""

  @abc.abstractmethod
  def _decode(self, stored: Stored) -> Array:
    """Format-specific decoding to float32."""


def canonical_dtype(dtype: Any) -> np.dtype:
  """A hashable, comparable dtype (``jnp.float32`` and 'float32' agree)."""
  return jnp.dtype(dtype)


def set_field(obj: Any, name: str, value: Any) -> None:
  """Sets a field of a frozen dataclass in ``__post_init__``."""
  object.__setattr__(obj, name, value)


def positive_int(value: Any, name: str) -> int:
  """Checks that a size parameter is a positive integer."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer) \
      or value <= 0:
    raise ValueError(
        f"{name} must be a positive integer, got {value!r}.")
  return int(value)


def check_choice(value: Any, name: str, allowed: tuple) -> None:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
