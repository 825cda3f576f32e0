"""Full optimizers: Muon for matrices, AdamW for the rest, state in few bits.

Each preset chains the transforms of :mod:`quantmuon.transforms` with
optax's own and routes parameters with :func:`quantmuon.muon_labels`:

  scale_by_quantized_momentum -> orthogonalize -> scale_by_shape
  -> add_decayed_weights -> scale_by_learning_rate

where the first three run as one transform, :func:`quantmuon.leafwise_muon`,
one leaf at a time (``pipeline="chain"`` chains them as written).

Presets follow their papers:

- :func:`muon`: full precision, numerically ``optax.contrib.muon``.
- :func:`muon_8bit`: 8-bit Muon (arXiv 2509.23106).
- :func:`muon_4bit`: naive 4-bit Muon, the baseline the 4-bit papers beat.
- :func:`muonq`: MuonQ (arXiv 2605.11396).
- :func:`muon_grasp`: 4-bit-Muon-GRASP (ICLR 2026).
- :func:`quantized_muon`: the general form.

:func:`full_precision_twin` turns any of them into its exact full-precision
twin, the reference that the cost of quantization is measured against.

Structural integer options (``min_size``, ``ns_steps``, ``block_size``, ...)
default to None, meaning the paper's value, so that
``optax.inject_hyperparams`` leaves them static; callables (``labels``, a
``dimension_numbers`` function) must be named in its ``static_args``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from quantmuon import formats, routing
from quantmuon.formats.base import check_choice
from quantmuon.transforms import (
    _tree,
    leafwise_muon,
    orthogonalize,
    quantize_state,
    scale_by_quantized_momentum,
    scale_by_shape,
)

ScalarOrSchedule = float | jax.Array | optax.Schedule
# While a preset is built as its full_precision_twin: a list that
# quantized_muon appends its arguments to (see twin_settings).
_FULL_PRECISION: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "full_precision", default=None)


def quantized_muon(
    learning_rate: ScalarOrSchedule,
    momentum_format: formats.Format = formats.Blockwise(bits=8),
    accumulation: str = "sum",
    normalize: bool = False,
    nesterov: bool = True,
    consistent_rms: float | None = 0.2,
    *,
    beta: float = 0.95,
    ns_coeffs: Any = "quintic",
    ns_steps: int | None = None,
    eps: float = 1e-7,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    labels: Callable[[Any], Any] | Any = None,
    dimension_numbers: Any = None,
    min_size: int | None = None,
    seed: int | None = None,
    adam_learning_rate: ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
    adam_state_format: Any = None,
    impl: str = "auto",
    pipeline: str = "leafwise",
    ns_layout: str = "auto",
) -> optax.GradientTransformationExtraArgs:
  """Muon with its momentum stored in ``momentum_format``; AdamW elsewhere.

  Args:
    learning_rate: float or optax schedule, for the Muon leaves.
    momentum_format: how the momentum is stored between steps.
    accumulation: ``sum`` (heavy ball) or ``ema``.
    normalize: MuonQ's pre-quantization normalization.
    nesterov: feed Newton-Schulz the Nesterov mix instead of the momentum.
    consistent_rms: Moonlight's RMS target (0.2), or None for the width rule
      ``sqrt(max(1, fan_out / fan_in))``.
    beta: momentum decay.
    ns_coeffs: Newton-Schulz coefficients (see :func:`orthogonalize`).
    ns_steps: Newton-Schulz steps (5).
    eps: added to the Frobenius norm before Newton-Schulz.
    weight_decay: decoupled weight decay of the Muon leaves.
    weight_decay_mask: optax mask for it.
    labels: None (:func:`quantmuon.muon_labels`), a callable of the params or
      a tree of ``"muon"`` / ``"adam"`` labels.
    dimension_numbers: ``MuonDimensionNumbers`` (one, a tree, or a callable)
      for Muon leaves of rank > 2; None uses
      :func:`quantmuon.routing.default_dimension_numbers` (conv and Flax
      attention kernels).
    min_size: Muon leaves with fewer elements keep float32 momentum (4096).
    seed: seed for stochastic rounding keys (0).
    adam_learning_rate: AdamW's rate; None shares ``learning_rate``.
    adam_b1: AdamW's first-moment decay.
    adam_b2: AdamW's second-moment decay.
    adam_eps: AdamW's epsilon.
    adam_weight_decay: AdamW's decoupled weight decay.
    adam_state_format: None keeps AdamW's state in float32; else the
      ``state_format`` of :func:`quantmuon.quantize_state` for it (with the
      same ``min_size`` and ``seed``), e.g. ``{"mu": Blockwise(8,
      "dynamic"), "nu": Blockwise(8, "unsigned_dynamic")}`` for 8-bit AdamW.
    impl: how the momentum step runs: ``auto`` (fused Pallas kernels when
      lowering for TPU or GPU, XLA for the CPU), ``xla``, ``pallas`` or
      ``pallas_interpret`` (see :mod:`quantmuon.kernels.dispatch`).
    pipeline: ``leafwise`` (:func:`quantmuon.leafwise_muon`: momentum step,
      Newton-Schulz and scaling of one Muon leaf before the next, so only
      one leaf's float32 intermediates are alive at a time), ``grouped``
      (the same with same-shape leaves in one loop, compiled once: faster
      to compile, but a training step then holds all of a group's
      gradients; ``group_leaves`` of :func:`quantmuon.leafwise_muon`) or
      ``chain`` (the composable transforms chained, which emit every leaf's
      float32 momentum at once); all give the same updates and state, bit
      for bit, the chain in a different state tree.
    ns_layout: Newton-Schulz's layout on a mesh (see
      :func:`orthogonalize`): ``auto`` stacks same-shape matrices and
      splits the stack over the mesh when ``update`` is traced under one
      (``jax.set_mesh``, or sharded arrays under ``jit``); ``leaf`` leaves
      each leaf's placement to XLA. Under ``leafwise`` the stacked layout runs
      one group of same-shape leaves at a time.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Raises:
    ValueError: for bad option values, and at ``init`` for a Muon leaf that
      is not a matrix and has no dimension numbers.
  """
  arguments = dict(locals())
  twin = _FULL_PRECISION.get()
  if twin is not None:
    momentum_format = formats.Float()
    twin.append({**arguments, "momentum_format": momentum_format})
  if dimension_numbers is None:
    dimension_numbers = routing.default_dimension_numbers
  check_choice(pipeline, "pipeline", ("leafwise", "grouped", "chain"))
  momentum_options = dict(
      beta=beta, nesterov=nesterov, momentum_format=momentum_format,
      accumulation=accumulation, normalize=normalize, min_size=min_size,
      seed=seed, impl=impl)
  ns_options = dict(ns_coeffs=ns_coeffs, ns_steps=ns_steps, eps=eps,
                    ns_layout=ns_layout)
  if pipeline != "chain":
    muon_steps = [leafwise_muon(
        **momentum_options, **ns_options, consistent_rms=consistent_rms,
        dimension_numbers=dimension_numbers,
        group_leaves=pipeline == "grouped")]
  else:
    muon_steps = [
        scale_by_quantized_momentum(**momentum_options),
        orthogonalize(**ns_options, dimension_numbers=dimension_numbers),
        scale_by_shape(consistent_rms=consistent_rms,
                       dimension_numbers=dimension_numbers)]
  muon_chain = optax.chain(
      *muon_steps,
      _decay(weight_decay, weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate),
  )
  adam = optax.chain(
      optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=adam_eps),
      _decay(adam_weight_decay, None),
      optax.scale_by_learning_rate(
          learning_rate if adam_learning_rate is None
          else adam_learning_rate))
  if adam_state_format is not None:
    adam = quantize_state(adam, adam_state_format, min_size=min_size,
                          seed=seed)
  label_fn = routing.resolve_labels(labels, dimension_numbers)
  tx = optax.partition({routing.MUON: muon_chain, routing.ADAM: adam},
                       label_fn)

  def init_fn(params):
    _check_muon_leaves(params, label_fn(params), dimension_numbers)
    return tx.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)


def _decay(weight_decay: Any, mask: Any) -> optax.GradientTransformation:
  """Decoupled weight decay.

  A static zero adds nothing and allows ``update(..., params=None)``, as
  optax does without decay, but keeps the decay's state, so that the state
  has one structure whether or not ``inject_hyperparams`` traces
  ``weight_decay``.
  """
  decay = optax.add_decayed_weights(weight_decay, mask)
  if isinstance(weight_decay, int | float) and weight_decay == 0:
    return optax.GradientTransformation(
        decay.init, lambda updates, state, params=None: (updates, state))
  return decay


def _check_muon_leaves(params: Any, labels: Any, dimension_numbers: Any
                       ) -> None:
  lookup = _tree.dimension_numbers_by_path(dimension_numbers, params)
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for (path, p), label in zip(leaves, jax.tree.leaves(labels), strict=True):
    if label not in (routing.MUON, routing.ADAM):
      raise ValueError(
          f"labels must be 'muon' or 'adam', got {label!r} at "
          f"{jax.tree_util.keystr(path)}.")
    if label == routing.MUON:
      try:
        _tree.matrix_axes(p.shape, lookup(path))
      except ValueError as err:
        raise ValueError(f"{jax.tree_util.keystr(path)}: {err}") from None


_COMMON = [p for p in inspect.signature(quantized_muon).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _preset(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Gives a preset the common keywords of :func:`quantized_muon`.

  The preset's signature lists them explicitly (so ``inject_hyperparams``
  and ``help`` see them), and an unknown keyword is a ValueError that lists
  the allowed ones.
  """
  own = [p for p in inspect.signature(fn).parameters.values()
         if p.kind is not inspect.Parameter.VAR_KEYWORD]
  names = {p.name for p in own}
  signature = inspect.Signature(
      own + [p for p in _COMMON if p.name not in names])
  allowed = set(signature.parameters)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
      raise ValueError(
          f"{fn.__name__} got unknown option(s) {unknown}; allowed: "
          f"{sorted(allowed)}.")
    return fn(*args, **kwargs)

  wrapper.__signature__ = signature
  return wrapper


@_preset
def muon(learning_rate: ScalarOrSchedule, nesterov: bool = True,
         consistent_rms: float | None = None, eps: float = 1e-8,
         **common: Any) -> optax.GradientTransformationExtraArgs:
  """Full-precision Muon, numerically ``optax.contrib.muon`` on matrices.

  EMA momentum in float32, optax's bias-corrected Nesterov mix, quintic
  Newton-Schulz, width scaling (Keller Jordan). The reference the quantized
  presets are measured against.

  Args:
    learning_rate: float or schedule.
    nesterov: Nesterov mix.
    consistent_rms: None (width rule) or an RMS target.
    eps: Newton-Schulz epsilon (optax's 1e-8).
    **common: the keyword options of :func:`quantized_muon`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  return quantized_muon(
      learning_rate, formats.Float(), accumulation="ema", nesterov=nesterov,
      consistent_rms=consistent_rms, eps=eps, **common)


@_preset
def muon_8bit(learning_rate: ScalarOrSchedule, scheme: str = "linear",
              block_size: int | None = None,
              consistent_rms: float | None = 0.2, **common: Any
              ) -> optax.GradientTransformationExtraArgs:
  """8-bit Muon ("Effective Quantization of Muon Optimizer States").

  int8 momentum with one float32 absmax scale per block of 2048 elements,
  ``linear`` or bitsandbytes ``dynamic`` codes; heavy-ball momentum,
  Nesterov, consistent-RMS 0.2.

  Args:
    learning_rate: float or schedule.
    scheme: ``linear`` or ``dynamic``.
    block_size: elements per scale (2048).
    consistent_rms: RMS target of the update (0.2, Moonlight's rule, so
      that Muon shares AdamW's learning rate), or None for the width rule
      ``sqrt(max(1, fan_out / fan_in))``.
    **common: the keyword options of :func:`quantized_muon`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  check_choice(scheme, "scheme", ("linear", "dynamic"))
  fmt = formats.Blockwise(
      bits=8, codebook=scheme,
      block_size=_tree.static_int(block_size, "block_size", 2048))
  return quantized_muon(learning_rate, fmt, accumulation="sum",
                        nesterov=True, consistent_rms=consistent_rms,
                        **common)


@_preset
def muon_4bit(learning_rate: ScalarOrSchedule, block_size: int | None = None,
              consistent_rms: float | None = 0.2, **common: Any
              ) -> optax.GradientTransformationExtraArgs:
  """Naive 4-bit Muon: MuonQ's own baseline.

  Linear 4-bit momentum with one scale per tensor (or per block of
  ``block_size``), heavy-ball momentum, no Nesterov, no normalization,
  consistent-RMS 0.2.

  Args:
    learning_rate: float or schedule.
    block_size: None for a per-tensor scale, else elements per scale.
    consistent_rms: RMS target of the update (0.2, Moonlight's rule, so
      that Muon shares AdamW's learning rate), or None for the width rule
      ``sqrt(max(1, fan_out / fan_in))``.
    **common: the keyword options of :func:`quantized_muon`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  if block_size is None:
    fmt = formats.Axiswise(bits=4, axis="tensor")
  else:
    fmt = formats.Blockwise(
        bits=4, block_size=_tree.static_int(block_size, "block_size", 128))
  return quantized_muon(learning_rate, fmt, accumulation="sum",
                        nesterov=False, consistent_rms=consistent_rms,
                        **common)


@_preset
def muonq(learning_rate: ScalarOrSchedule, bits: int | None = None,
          rank_divisor: int | None = None, mu: float | None = None,
          residual_granularity: str = "tensor",
          group_size: int | None = None,
          companding: str = "before_scale",
          consistent_rms: float | None = 0.2, **common: Any
          ) -> optax.GradientTransformationExtraArgs:
  """MuonQ (arXiv 2605.11396).

  Frobenius pre-normalization of the gradient and the momentum; the momentum
  stored as top-k factors (k = min(m, n) / 16, one warm-started power
  iteration) with per-column scales and a residual with one scale per
  tensor (or per group), all mu-law companded (mu = 255) at 4 bits with
  float16 scales. As in MuonQ's public code, each value is companded
  before the absmax scale is taken, in the companded domain. Heavy-ball
  momentum, no Nesterov, consistent-RMS 0.2.

  Args:
    learning_rate: float or schedule.
    bits: code width (4).
    rank_divisor: k = min(m, n) // rank_divisor (16).
    mu: mu-law parameter (255).
    residual_granularity: ``tensor`` or ``group``.
    group_size: elements per residual scale for ``group`` (128).
    companding: ``before_scale`` (the public code's order) or
      ``after_scale`` (mu-law of ``x / absmax``, the order the paper's text
      suggests); the Pallas kernels take both.
    consistent_rms: RMS target of the update (0.2, Moonlight's rule, so
      that Muon shares AdamW's learning rate), or None for the width rule
      ``sqrt(max(1, fan_out / fan_in))``.
    **common: the keyword options of :func:`quantized_muon`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  check_choice(residual_granularity, "residual_granularity",
               ("tensor", "group"))
  bits = _tree.static_int(bits, "bits", 4)
  mu = _tree.static_float(mu, "mu", 255.0)
  kw = dict(bits=bits, codebook="mulaw", mu=mu, scale_dtype=jnp.float16,
            companding=companding)
  if residual_granularity == "tensor":
    residual = formats.Axiswise(axis="tensor", **kw)
  else:
    residual = formats.Blockwise(
        block_size=_tree.static_int(group_size, "group_size", 128), **kw)
  fmt = formats.Subspace(
      rank_divisor=_tree.static_int(rank_divisor, "rank_divisor", 16),
      factors=formats.Axiswise(axis="col", **kw), residual=residual)
  return quantized_muon(learning_rate, fmt, accumulation="sum",
                        normalize=True, nesterov=False,
                        consistent_rms=consistent_rms, **common)


@_preset
def muon_grasp(learning_rate: ScalarOrSchedule, bits: int | None = None,
               rank_divisor: int | None = None, tile: int | None = None,
               consistent_rms: float | None = 0.2, **common: Any
               ) -> optax.GradientTransformationExtraArgs:
  """4-bit-Muon-GRASP ("Achieving low-bit Muon through subspace
  preservation and grid quantization", ICLR 2026).

  The momentum stored as top-k factors P, R at 8 bits (blocks of 128) and a
  4-bit residual with grid scales (128 x 128 tiles); one warm-started power
  iteration a step; heavy-ball momentum, Newton-Schulz of M itself (no
  Nesterov), consistent-RMS 0.2.

  Args:
    learning_rate: float or schedule.
    bits: residual code width (4).
    rank_divisor: k = min(m, n) // rank_divisor (16).
    tile: side of the grid tiles (128).
    consistent_rms: RMS target of the update (0.2, Moonlight's rule, so
      that Muon shares AdamW's learning rate), or None for the width rule
      ``sqrt(max(1, fan_out / fan_in))``.
      The paper's step ``W -= lr (NS5(M) + wd W)`` has no RMS rule; the
      default departs from it so that every preset shares one learning
      rate with AdamW (a 256 x 1024 update is scaled by 6.4).
    **common: the keyword options of :func:`quantized_muon`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  fmt = formats.Subspace(
      rank_divisor=_tree.static_int(rank_divisor, "rank_divisor", 16),
      factors=formats.Blockwise(bits=8, block_size=128),
      residual=formats.Grid(bits=_tree.static_int(bits, "bits", 4),
                            tile=_tree.static_int(tile, "tile", 128)))
  return quantized_muon(learning_rate, fmt, accumulation="sum",
                        nesterov=False, consistent_rms=consistent_rms,
                        **common)


def full_precision_twin(preset: Callable[..., Any]) -> Callable[..., Any]:
  """The exact full-precision twin of a preset.

  The twin takes the preset's arguments (it has the same signature, so
  ``optax.inject_hyperparams`` and the option checks see them) and builds
  the same optimizer with the Muon momentum stored in ``formats.Float()``:
  accumulation, normalization, Nesterov, scaling, routing, rates and
  AdamW's state are unchanged. ``full_precision_twin(muonq)(1e-2)`` is the
  reference against which MuonQ's cost of quantization is measured.

  Args:
    preset: a preset of this module, or any function that builds its
      optimizer through :func:`quantized_muon`.

  Returns:
    The twin preset, named ``<preset>_fp32``.
  """

  @functools.wraps(preset)
  def twin(*args: Any, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    return _build_twin(preset, args, kwargs)[0]

  twin.__name__ = twin.__qualname__ = f"{preset.__name__}_fp32"
  return twin


def twin_settings(preset: Callable[..., Any], *args: Any, **kwargs: Any
                  ) -> dict[str, Any]:
  """The arguments :func:`quantized_muon` receives when the twin of
  ``preset`` is built with ``args`` and ``kwargs``.

  Two twins with equal settings are the same optimizer: the twins of
  ``muon_8bit(scheme="linear")`` and ``muon_8bit(scheme="dynamic")`` are,
  and so are those of ``muon_4bit`` and ``muon_grasp``.

  Args:
    preset: as for :func:`full_precision_twin`.
    *args: the preset's positional arguments.
    **kwargs: its keyword arguments.

  Returns:
    ``quantized_muon``'s arguments by name, ``momentum_format`` float32.
  """
  return _build_twin(preset, args, kwargs)[1]


def _build_twin(preset: Callable[..., Any], args: tuple, kwargs: dict
                ) -> tuple[optax.GradientTransformationExtraArgs,
                           dict[str, Any]]:
  captured: list[dict[str, Any]] = []
  token = _FULL_PRECISION.set(captured)
  try:
    tx = preset(*args, **kwargs)
  finally:
    _FULL_PRECISION.reset(token)
  if not captured:
    raise ValueError(
        f"full_precision_twin: {getattr(preset, '__name__', preset)!r} did "
        "not build its optimizer through quantmuon.quantized_muon, so it has "
        "no momentum format to replace.")
  return tx, captured[-1]


@_preset
def muon_lowbit(learning_rate: ScalarOrSchedule, bits: int | None = None,
                rank_divisor: int | None = None,
                group_size: int | None = None, nesterov: bool = True,
                consistent_rms: float | None = 0.2, **common: Any
                ) -> optax.GradientTransformationExtraArgs:
  """quantmuon's own low-bit recipe, chosen by measurement.

  MuonQ's normalized heavy-ball momentum, stored as top-k factors at 8 bits
  (blocks of 128, as GRASP) plus a residual at ``bits`` with one float16
  scale per group of 128 along the rows, and Nesterov's mix fed to
  Newton-Schulz. At 4 bits the residual's values are mu-law companded
  before the group's absmax scale is taken (MuonQ's public quantizer with
  finer scales). At 2 bits an absmax scale rounds most of a group to zero,
  so the residual takes the four ``midrise`` levels at +-0.5 and +-1.5
  times the group's RMS (``clip_rms=1.5``): on configs/compare.py, seed 0,
  its cost against the twin fell from +3.69% (mu-law, absmax) to +2.20%.

  Args:
    learning_rate: float or schedule.
    bits: residual code width, 4 or 2 (4).
    rank_divisor: k = min(m, n) // rank_divisor (20: at most 0.62 bytes
      of state per matrix parameter on large matrices).
    group_size: residual elements per scale (128).
    nesterov: feed Newton-Schulz ``g + beta m``.
    consistent_rms: RMS target of the update (0.2), or None for the width
      rule.
    **common: the keyword options of :func:`quantized_muon`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  bits = _tree.static_int(bits, "bits", 4)
  block_size = _tree.static_int(group_size, "group_size", 128)
  if bits == 2:
    residual = formats.Blockwise(
        bits=2, codebook="midrise", clip_rms=1.5, scale_dtype=jnp.float16,
        block_size=block_size)
  else:
    residual = formats.Blockwise(
        bits=bits, codebook="mulaw", companding="before_scale",
        scale_dtype=jnp.float16, block_size=block_size)
  fmt = formats.Subspace(
      rank_divisor=_tree.static_int(rank_divisor, "rank_divisor", 20),
      factors=formats.Blockwise(bits=8, block_size=128), residual=residual)
  return quantized_muon(learning_rate, fmt, accumulation="sum",
                        normalize=True, nesterov=nesterov,
                        consistent_rms=consistent_rms, **common)
