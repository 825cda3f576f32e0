"""The momentum step, the one op the kernels fuse, and its pure-jnp reference.

One leaf's step of Muon's momentum is::

  decode stored m -> accumulate g -> (normalize) -> encode m -> emit

The math of each arrow is written here once. :func:`reference` runs it on
whole arrays (the XLA path); the kernels run :func:`accumulate` and
:func:`emit` on tiles, with the runtime :class:`Scalars` that
:func:`scalars` computes beforehand on whole arrays, so both paths divide
and multiply by the very same numbers. This module imports only the
formats: the kernels and the transforms both build on it.

- Accumulation ``ema`` is ``beta m + (1 - beta) g`` (Keller Jordan's Muon,
  optax), ``sum`` the heavy ball ``beta m + g`` (Moonlight, MuonQ,
  4-bit-Muon-GRASP, 8-bit Muon).
- ``normalize`` is MuonQ's pre-quantization normalization (arXiv
  2605.11396): the gradient and the new momentum are divided by their
  Frobenius norms (+1e-7).
- The emitted momentum is optax's bias-corrected one (and its Nesterov mix)
  for ``ema``, ``m`` or the Nesterov ``g + beta m`` for ``sum``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from quantmuon import formats
from quantmuon.formats.base import check_choice

Array = jax.Array
ACCUMULATIONS = ("ema", "sum")
NORMALIZE_EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class Config:
  """The static options of a momentum step.

  Attributes:
    accumulation: ``ema`` or ``sum``.
    normalize: MuonQ's normalization.
    nesterov: emit the Nesterov mix.
  """

  accumulation: str
  normalize: bool
  nesterov: bool

  def __post_init__(self):
    check_choice(self.accumulation, "accumulation", ACCUMULATIONS)

  @property
  def emits_new(self) -> bool:
    """Whether the emitted momentum is the new momentum itself."""
    return self.accumulation == "sum" and not self.nesterov


class Scalars(NamedTuple):
  """The runtime scalars of a step (Python floats or float32 scalars).

  Attributes:
    beta: momentum decay.
    one_minus_beta: ``1 - beta``, formed once.
    g_denom: the gradient's norm + eps (``normalize``), else 1.
    m_denom: the accumulated momentum's norm + eps (``normalize``), else 1.
    bias_m: ``1 - beta ** (count + 1)`` (``ema``), else 1.
    bias_g: ``1 - beta ** count`` (``ema``), else 1.
  """

  beta: Any
  one_minus_beta: Any
  g_denom: Any = 1.0
  m_denom: Any = 1.0
  bias_m: Any = 1.0
  bias_g: Any = 1.0


def _combine(m: Array, g: Array, s: Scalars, accumulation: str) -> Array:
  if accumulation == "ema":
    return s.beta * m + s.one_minus_beta * g
  return s.beta * m + g


def scalars(m: Array | None, g: Array, *, beta: Any, cfg: Config,
            count: Array) -> Scalars:
  """The runtime scalars of a step, from whole arrays.

  Args:
    m: the decoded previous momentum (read only with ``normalize``; None
      otherwise is fine).
    g: the gradient.
    beta: momentum decay.
    cfg: the step's options.
    count: the step count (after incrementing).

  Returns:
    The ``Scalars``; with ``normalize`` their norms are one fused reduction
    each, as XLA computes them.
  """
  s = Scalars(beta, 1 - beta)
  if cfg.normalize:
    g32 = g.astype(jnp.float32)
    g_denom = jnp.linalg.norm(g32) + NORMALIZE_EPS
    raw = _combine(m, g32 / g_denom, s, cfg.accumulation)
    s = s._replace(g_denom=g_denom,
                   m_denom=jnp.linalg.norm(raw) + NORMALIZE_EPS)
  if cfg.accumulation == "ema":
    s = s._replace(bias_m=1 - beta ** optax.safe_increment(count),
                   bias_g=1 - beta ** count)
  return s


def accumulate(m: Array, g: Array, s: Scalars, cfg: Config
               ) -> tuple[Array, Array]:
  """The new momentum and the gradient as accumulated, elementwise.

  Args:
    m: the previous momentum (decoded), float32, any shape or tile.
    g: the gradient (any float dtype), of ``m``'s shape.
    s: from :func:`scalars`.
    cfg: the step's options.

  Returns:
    ``(new momentum, prepared gradient)``, float32.
  """
  g = g.astype(jnp.float32)
  if cfg.normalize:
    g = g / s.g_denom
  new = _combine(m, g, s, cfg.accumulation)
  if cfg.normalize:
    new = new / s.m_denom
  return new, g


def emit(new: Array, g: Array, s: Scalars, cfg: Config) -> Array:
  """The fresh momentum handed to Newton-Schulz, float32, elementwise.

  Args:
    new: the new momentum.
    g: the gradient as accumulated (from :func:`accumulate`).
    s: from :func:`scalars`.
    cfg: the step's options.
  """
  if cfg.accumulation == "sum":
    return g + s.beta * new if cfg.nesterov else new
  if cfg.nesterov:
    return (s.beta * (new / s.bias_m)
            + s.one_minus_beta * (g / s.bias_g))
  return new / s.bias_g


def reference(stored: formats.Stored, g: Array, *, beta: Any, cfg: Config,
              count: Array, key: Array | None
              ) -> tuple[Array, formats.Stored]:
  """One leaf's step on whole arrays: the XLA path the kernels are held to.

  Args:
    stored: the stored momentum.
    g: the gradient.
    beta: momentum decay.
    cfg: the step's options.
    count: the step count (after incrementing).
    key: key for stochastic rounding, or None.

  Returns:
    ``(fresh momentum in g's dtype, new stored momentum)``.
  """
  fmt = stored.format
  m = fmt.decode(stored)
  s = scalars(m, g, beta=beta, cfg=cfg, count=count)
  new, g32 = accumulate(m, g, s, cfg)
  fresh = emit(new, g32, s, cfg)
  return fresh.astype(g.dtype), fmt.encode(new, key=key, previous=stored)
