"""The options of Muon's pieces, each defined once.

Every option of the momentum step, of Newton-Schulz and of the shape
scaling is a field of one frozen dataclass below, with its default and its
documentation. The transforms (:func:`scale_by_quantized_momentum`,
:func:`orthogonalize`, :func:`scale_by_shape`, :func:`leafwise_muon`, all
in :mod:`quantmuon.transforms`) and the presets take them as keyword
arguments through :func:`expand`, which writes those fields into their
signatures, so ``help()`` and ``optax.inject_hyperparams`` see every
option with its default, and an unknown keyword is an error that lists
the allowed ones.

Options that set the shape of the state (sizes, step counts, seeds) default
to None, meaning the documented value, and are read with
:func:`static_int`: ``optax.inject_hyperparams`` then leaves them static,
and a traced value is an error that says how to pass it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import jax

from quantmuon import formats, kernels, momentum_op
from quantmuon.formats.base import check_choice
from quantmuon.transforms.stacked import LAYOUTS as NS_LAYOUTS

PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


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


@dataclasses.dataclass(frozen=True)
class MomentumOptions:
  """How Muon's momentum is accumulated and stored between steps.

  Attributes:
    momentum_format: a ``quantmuon.formats`` format for the stored momentum
      (``Blockwise(bits=8)``).
    accumulation: ``sum`` (heavy ball ``beta m + g``: Moonlight, MuonQ,
      4-bit-Muon-GRASP, 8-bit Muon) or ``ema`` (``beta m + (1 - beta) g``,
      optax's bias-corrected momentum and Nesterov mix).
    normalize: MuonQ's pre-quantization normalization (arXiv 2605.11396):
      the gradient and the new momentum divided by their Frobenius norms,
      per matrix.
    nesterov: emit the Nesterov mix (``g + beta m``; optax's for ``ema``)
      instead of the momentum.
    beta: momentum decay (0.95 in all four papers).
    min_size: matrices with fewer elements keep float32 momentum (None:
      4096, as bitsandbytes).
    seed: seed of the stochastic-rounding keys, folded with the step
      count, the leaf and the matrix (None: 0).
    impl: how the momentum step runs: ``auto`` (fused Pallas kernels when
      lowering for TPU or GPU, XLA for the CPU), ``xla``, ``pallas`` or
      ``pallas_interpret`` (see :mod:`quantmuon.kernels.dispatch`).
    mu_dtype: the dtype of a momentum kept in floating point (the
      ``Float`` format and the small matrices under ``min_size``); None
      keeps float32. As ``optax.contrib.muon``'s ``mu_dtype``.
  """

  momentum_format: Any = formats.Blockwise(bits=8)
  accumulation: str = "sum"
  normalize: bool = False
  nesterov: bool = True
  beta: Any = 0.95
  min_size: int | None = None
  seed: int | None = None
  impl: str = "auto"
  mu_dtype: Any = None

  def checked(self, who: str) -> MomentumOptions:
    """These options with ``min_size`` and ``seed`` resolved to ints.

    Raises:
      ValueError: naming ``who`` and the bad option.
    """
    _choice(who, self.accumulation, "accumulation",
            momentum_op.ACCUMULATIONS)
    _choice(who, self.impl, "impl", kernels.IMPLS)
    if not isinstance(self.momentum_format, formats.Format):
      raise ValueError(
          f"{who}: momentum_format must be a quantmuon.formats format, got "
          f"{self.momentum_format!r}.")
    min_size = static_int(self.min_size, "min_size", 4096)
    if min_size < 0:
      raise ValueError(f"{who}: min_size must be >= 0, got {min_size}.")
    return dataclasses.replace(
        self, min_size=min_size, seed=static_int(self.seed, "seed", 0))

  def float_format(self) -> formats.Float:
    """The format of a momentum kept in floating point."""
    return formats.Float(jax.numpy.float32 if self.mu_dtype is None
                         else self.mu_dtype)


@dataclasses.dataclass(frozen=True)
class OrthogonalizeOptions:
  """How each matrix is orthogonalized (Newton-Schulz).

  Attributes:
    ns_coeffs: ``"quintic"`` (Keller Jordan's triple every step; optax's
      ``"standard"``), ``"polar_express"`` (Amsel et al. 2025: five tuned
      triples), ``"dion"`` (optax's five), one ``(a, b, c)`` triple, or a
      sequence of triples, one per step.
    ns_steps: steps for a single triple or ``"quintic"`` (None: 5); a
      sequence of triples must not be longer.
    eps: added to the norm before dividing (optax's Muon uses 1e-8).
    preconditioning: how the input is scaled before the iteration, as
      ``optax.contrib.muon``: ``frobenius`` (divide by the Frobenius
      norm), ``spectral`` (by the spectral norm), ``aol`` or ``schatten``
      (a rescaled first step).
    ns_layout: Newton-Schulz's layout on a mesh: ``auto`` (the stacked
      layout when a mesh of several devices is given as ``mesh``, set in
      the context when ``update`` is traced (``jax.set_mesh``) or carried
      by the updates' types (sharded arrays under ``jit``); else matrix by
      matrix), ``stacked`` (same-shape matrices stacked and the stack split
      over the mesh, each matrix whole on one device; a lone matrix split
      along its long axis) or ``leaf`` (one leaf at a time, its placement
      left to XLA).
    mesh: the mesh of the stacked layout; None finds it as above.
    adaptive: scale each leaf's orthogonalized update by its inner product
      with the momentum it came from (the dual norm, Bernstein et al.), as
      ``optax.contrib.muon``'s ``adaptive``.
  """

  ns_coeffs: Any = "quintic"
  ns_steps: int | None = None
  eps: Any = 1e-7
  preconditioning: str = "frobenius"
  ns_layout: str = "auto"
  mesh: Any = None
  adaptive: bool = False

  def checked(self, who: str) -> OrthogonalizeOptions:
    """These options, checked.

    Raises:
      ValueError: naming ``who`` and the bad option.
    """
    _choice(who, self.preconditioning, "preconditioning", PRECONDITIONINGS)
    _choice(who, self.ns_layout, "ns_layout", NS_LAYOUTS)
    return self


@dataclasses.dataclass(frozen=True)
class ScaleOptions:
  """How each orthogonalized matrix is scaled by its shape.

  Attributes:
    consistent_rms: None for Keller Jordan's width rule ``sqrt(max(1,
      fan_out / fan_in))`` (optax's default), else Moonlight's RMS target:
      the update is scaled by ``consistent_rms * sqrt(max(fan_in,
      fan_out))`` (0.2 matches AdamW's RMS, so Muon shares AdamW's rate).
  """

  consistent_rms: Any = None


@dataclasses.dataclass(frozen=True)
class ViewOptions:
  """How the transforms see each leaf as matrices.

  Attributes:
    dimension_numbers: None (every leaf is a plain matrix), one optax
      ``MuonDimensionNumbers`` for all leaves, a tree of them (None: a
      plain matrix) with the parameters' structure, or a callable of the
      updates returning such a tree. Axes neither reduced nor output are
      batch axes: each matrix of the batch is orthogonalized, scaled and
      stored on its own.
  """

  dimension_numbers: Any = None


@dataclasses.dataclass(frozen=True)
class MuonStepOptions(MomentumOptions, OrthogonalizeOptions, ScaleOptions,
                      ViewOptions):
  """The options of :func:`quantmuon.transforms.leafwise_muon`: every
  piece's."""


def _choice(who: str, value: Any, name: str, allowed: tuple) -> None:
  try:
    check_choice(value, name, allowed)
  except ValueError as err:
    raise ValueError(f"{who}: {err}") from None


def project(options: Any, spec: type) -> Any:
  """The fields of ``spec`` taken from ``options`` (any options object)."""
  return spec(**{f.name: getattr(options, f.name)
                 for f in dataclasses.fields(spec)})


def fields(spec: type) -> list[dataclasses.Field]:
  return list(dataclasses.fields(spec))


def expand(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Gives ``fn`` the fields of its options parameters as keywords.

  ``fn`` takes its own parameters and one or more parameters annotated
  with an options dataclass of this module. The wrapper's signature has
  ``fn``'s own parameters, then every field of those dataclasses as a
  keyword-only argument with its default; a call builds each dataclass
  from them and passes it on. An unknown keyword raises a ValueError that
  names ``fn`` and lists the allowed ones.

  Args:
    fn: the function.

  Returns:
    The wrapper.
  """
  hints = typing.get_type_hints(fn)
  params = list(inspect.signature(fn).parameters.values())
  specs = {p.name: hints[p.name] for p in params
           if dataclasses.is_dataclass(hints.get(p.name))}
  own = [p for p in params if p.name not in specs]
  spec_fields: dict[str, dataclasses.Field] = {}
  for spec in specs.values():
    for f in dataclasses.fields(spec):
      if f.name not in spec_fields and f.name not in {p.name for p in own}:
        spec_fields[f.name] = f
  signature = inspect.Signature(own + [
      inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                        default=f.default) for f in spec_fields.values()])
  allowed = set(signature.parameters)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
      raise ValueError(
          f"{fn.__name__} got unknown option(s) {unknown}; allowed: "
          f"{sorted(allowed)}.")
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    values = dict(bound.arguments)
    built = {name: spec(**{f.name: values[f.name]
                           for f in dataclasses.fields(spec)})
             for name, spec in specs.items()}
    return fn(**{p.name: values[p.name] for p in own}, **built)

  wrapper.__signature__ = signature
  return wrapper
