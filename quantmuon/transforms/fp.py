"""Floating-point-quantized training: gradients and weights on a float grid.

"A Convergence Analysis of Adaptive Optimizers under Floating-point
Quantization" (arXiv 2510.21314) models low-precision training as rounding
the gradients (q_G), the weights (q_W), and the first and second moments
(q_M, q_V) to a float format with few mantissa bits, each with relative
error ``q = Theta(2**-M)``. Adam keeps its rate only with q_G, q_M = O(1/T)
and q_W, q_V = O(1/T^2); Muon needs only O(T^-1/2) for all; either way the
mantissa needs to grow only like ``log T``.

One transform per component:

- :func:`quantize_gradients` (q_G) goes first in a chain;
- :func:`snap_params` (q_W) goes last;
- the moments are stored states: ``quantized_muon(momentum_format=
  FloatingPoint(...))`` for Muon, :func:`quantmuon.quantize_state` for Adam.

Each takes ``mantissa_bits``: an int, or a schedule (a callable of the step
count, as optax schedules are), e.g. :func:`log_mantissa_schedule`. A
schedule is traced, so stepping through it never recompiles the update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from quantmuon import formats
from quantmuon.transforms.options import static_int

Array = jax.Array
MantissaBits = int | Callable[[Array], Array] | None
MAX_MANTISSA = 23  # float32's; the rounding is computed in float32
# Folded into the seed so that transforms sharing a seed draw different
# rounding noise.
GRADIENT_STREAM, PARAMS_STREAM = 1, 2


class FloatingPointState(NamedTuple):
  """State of :func:`quantize_gradients` and :func:`snap_params`.

  Attributes:
    count: steps taken (int32): the schedule's argument and the keys' salt.
  """
  count: chex.Array


def log_mantissa_schedule(min_bits: int, max_bits: int,
                          growth: float = 1.0) -> Callable[[Array], Array]:
  """The paper's ``M_t = O(log t)`` mantissa schedule.

  ``M_t = min(max_bits, min_bits + floor(growth * log2(1 + t)))`` for step
  count ``t``. With ``growth = 1`` the width grows by one bit each time
  ``t + 1`` doubles. Exact for every int32 ``t``: the steps at which the
  width grows are found in float64 on the host (equal to
  ``math.floor(growth * math.log2(1 + t))``), and the traced schedule only
  compares ``t`` with them.

  Args:
    min_bits: the width at step 0, 0 to 23.
    max_bits: the cap, ``min_bits`` to 23.
    growth: bits gained per doubling of ``1 + t`` (positive).

  Returns:
    A function of the (traced) step count returning an int32 width.

  Raises:
    ValueError: naming the argument that is out of range.
  """
  min_bits = _bits(min_bits, "min_bits")
  max_bits = _bits(max_bits, "max_bits")
  if max_bits < min_bits:
    raise ValueError(
        f"max_bits ({max_bits}) must be at least min_bits ({min_bits}).")
  if isinstance(growth, jax.core.Tracer) or not float(growth) > 0:
    raise ValueError(f"growth must be a positive float, got {growth!r}.")
  starts = np.asarray(_growth_steps(float(growth), max_bits - min_bits),
                      np.int32)

  def schedule(count: Array) -> Array:
    t = jnp.asarray(count, jnp.int32)
    gained = jnp.sum(t[..., None] >= starts, axis=-1, dtype=jnp.int32)
    return (min_bits + gained).astype(jnp.int32)

  return schedule


def _growth_steps(growth: float, most: int) -> list[int]:
  """The first int32 step ``t`` with ``floor(growth * log2(1 + t)) >= k``,
  for ``k = 1 .. most`` (fewer when later ones pass ``2**31 - 1``)."""
  def gained(n: int) -> int:
    return math.floor(growth * math.log2(n))

  starts = []
  for k in range(1, most + 1):
    if k / growth > 31.5:
      break
    n = max(1, math.ceil(2.0 ** (k / growth)))
    while n > 1 and gained(n - 1) >= k:
      n -= 1
    while gained(n) < k:
      n += 1
    if n - 1 > np.iinfo(np.int32).max:
      break
    starts.append(n - 1)
  return starts


def mantissa_fn(mantissa_bits: MantissaBits, name: str = "mantissa_bits",
                limit: int = MAX_MANTISSA
                ) -> Callable[[Array], Array | int] | None:
  """Resolves a ``mantissa_bits`` argument to a function of the count.

  Args:
    mantissa_bits: None (the format's own), an int, or a schedule.
    name: the argument's name, for errors.
    limit: the largest width allowed.

  Returns:
    None, or a function of the step count giving the width: the int itself,
    or the schedule's value clipped to ``[0, limit]``.

  Raises:
    ValueError: for an int out of ``[0, limit]`` or a value that is neither.
  """
  if mantissa_bits is None:
    return None
  if callable(mantissa_bits):
    return lambda count: jnp.clip(
        jnp.asarray(mantissa_bits(count)), 0, limit).astype(jnp.int32)
  bits = _bits(mantissa_bits, name, limit)
  return lambda count: bits


def quantize_gradients(fmt: formats.FloatingPoint, *,
                       mantissa_bits: MantissaBits = None,
                       seed: int | None = None
                       ) -> optax.GradientTransformation:
  """Rounds the incoming updates to ``fmt``: the paper's q_G.

  Put it first in a chain, where the updates are the gradients. Floating
  leaves are rounded in float32 and keep their dtype; other leaves pass.

  Args:
    fmt: a ``formats.FloatingPoint`` (its exponent range and rounding).
    mantissa_bits: overrides ``fmt.mantissa_bits``: an int from 0 to 23 or a
      schedule of the step count (traced).
    seed: seed of the stochastic-rounding keys, which are folded with the
      step count and the leaf's position.

  Returns:
    An ``optax.GradientTransformation`` with a ``FloatingPointState``.
  """
  _check_format(fmt, "fmt")
  width = mantissa_fn(mantissa_bits)
  seed = static_int(seed, "seed", 0)

  def update_fn(updates, state, params=None):
    del params
    m = None if width is None else width(state.count)
    base = _step_key(seed, GRADIENT_STREAM, state.count)
    leaves, treedef = jax.tree.flatten(updates)
    out = [_round_leaf(fmt, g, jax.random.fold_in(base, i), m)
           for i, g in enumerate(leaves)]
    return (treedef.unflatten(out),
            FloatingPointState(optax.safe_increment(state.count)))

  return optax.GradientTransformation(_init_count, update_fn)


def snap_params(fmt: formats.FloatingPoint, *,
                mantissa_bits: MantissaBits = None,
                seed: int | None = None) -> optax.GradientTransformation:
  """Emits updates that put ``params + updates`` on ``fmt``'s grid: q_W.

  Put it last in a chain. The new weight is ``round(params + updates)``
  (in float32, then in the parameters' dtype), and the emitted update is a
  float in the parameters' dtype ``d`` for which ``params + d``, as
  ``optax.apply_updates`` computes it, is exactly that value. Float
  arithmetic cannot always express the move: from weights off the grid, a
  step that crosses zero (or from weights on it, one that changes a weight
  by a factor beyond ``2**(23 - M)``) may have no such ``d``; such a weight
  lands on zero instead, which is on every grid. Start from weights on the
  grid (``jax.tree.map(fmt.round, params)``) to avoid the first case.

  Args:
    fmt: a ``formats.FloatingPoint``.
    mantissa_bits: overrides ``fmt.mantissa_bits``: an int from 0 to 23 or a
      schedule of the step count (traced).
    seed: seed of the stochastic-rounding keys.

  Returns:
    An ``optax.GradientTransformation`` with a ``FloatingPointState``; its
    update needs ``params``.

  Raises:
    ValueError: from ``update`` when ``params`` is None, or when the
      parameters' dtype has a smaller exponent range than ``fmt``.
  """
  _check_format(fmt, "fmt")
  width = mantissa_fn(mantissa_bits)
  seed = static_int(seed, "seed", 0)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          "snap_params needs params: call update(updates, state, params) so "
          "that it can put params + updates on the grid.")
    m = None if width is None else width(state.count)
    base = _step_key(seed, PARAMS_STREAM, state.count)
    leaves, treedef = jax.tree.flatten(updates)
    weights = treedef.flatten_up_to(params)
    out = [_snap_leaf(fmt, u, p, jax.random.fold_in(base, i), m)
           for i, (u, p) in enumerate(zip(leaves, weights, strict=True))]
    return (treedef.unflatten(out),
            FloatingPointState(optax.safe_increment(state.count)))

  return optax.GradientTransformation(_init_count, update_fn)


def _init_count(params: Any) -> FloatingPointState:
  del params
  return FloatingPointState(jnp.zeros([], jnp.int32))


def _step_key(seed: int, stream: int, count: Array) -> Array:
  key = jax.random.fold_in(jax.random.key(seed), stream)
  return jax.random.fold_in(key, count)


def _round_leaf(fmt: formats.FloatingPoint, g: Any, key: Array,
                m: Array | int | None) -> Any:
  if not jnp.issubdtype(jnp.result_type(g), jnp.floating):
    return g
  return fmt.round(g, key=key, mantissa_bits=m).astype(g.dtype)


def _snap_leaf(fmt: formats.FloatingPoint, u: Array, p: Array, key: Array,
               m: Array | int | None) -> Array:
  """The update that puts ``p + update`` on the grid (see snap_params)."""
  dtype = jnp.result_type(p)
  _check_holds(dtype, fmt)
  target = fmt.round(p.astype(jnp.float32) + u.astype(jnp.float32),
                     key=key, mantissa_bits=m).astype(dtype)
  d = target - p
  # p + d can miss the target by a unit in the last place when the
  # difference is inexact; a neighbour of d may hit it. Else land on zero.
  candidates = (d, jnp.nextafter(d, jnp.array(jnp.inf, dtype)),
                jnp.nextafter(d, jnp.array(-jnp.inf, dtype)))
  out = -p
  for c in reversed(candidates):
    out = jnp.where((p + c).astype(dtype) == target, c, out)
  return jnp.where(jnp.isnan(target), target, out)


def _check_holds(dtype: Any, fmt: formats.FloatingPoint) -> None:
  """A dtype with fewer mantissa bits holds a coarser part of the grid, but
  one with a smaller exponent range would overflow."""
  if jnp.finfo(dtype).maxexp < fmt.bias + 1:
    raise ValueError(
        f"params of dtype {jnp.dtype(dtype).name} cannot hold the range of "
        f"{fmt!r}; keep float32 master weights.")


def _check_format(fmt: Any, name: str) -> None:
  if not isinstance(fmt, formats.FloatingPoint):
    raise ValueError(
        f"{name} must be a quantmuon.formats.FloatingPoint, got {fmt!r}.")


def _bits(value: Any, name: str, limit: int = MAX_MANTISSA) -> int:
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"{name} must be a Python int or a schedule (a callable of the step "
        "count), not a traced value.")
  if isinstance(value, bool) or not isinstance(value, int | np.integer) \
      or not 0 <= value <= limit:
    raise ValueError(
        f"{name} must be an integer from 0 to {limit}, got {value!r}.")
  return int(value)
