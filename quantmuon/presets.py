"""Full optimizers: Muon for matrices, AdamW for the rest, state in few bits.

Every optimizer here is one :class:`MuonOptions` value built by
:func:`quantized_muon`: the transforms of :mod:`quantmuon.transforms`
chained with optax's own, the parameters routed by :mod:`quantmuon.routing`:

  scale_by_quantized_momentum -> orthogonalize -> scale_by_shape
  -> add_decayed_weights -> scale_by_learning_rate

where the first three run as one transform,
:func:`quantmuon.transforms.leafwise_muon`, one matrix at a time
(``pipeline="chain"`` chains them as written).

A *preset* is data: the options its paper fixes (:class:`Preset`). Presets
follow their papers:

- :func:`muon`: full precision, ``optax.contrib.muon`` itself.
- :func:`muon_8bit`: 8-bit Muon (arXiv 2509.23106).
- :func:`muon_4bit`: naive 4-bit Muon, the baseline the 4-bit papers beat.
- :func:`muonq`: MuonQ (arXiv 2605.11396).
- :func:`muon_grasp`: 4-bit-Muon-GRASP (ICLR 2026).
- :func:`muon_lowbit`: quantmuon's own recipe.

:func:`full_precision_twin` builds a preset with its momentum format (and
AdamW's state format) replaced by float32: its exact full-precision twin,
the reference that the cost of quantization is measured against.

Every preset accepts ``optax.contrib.muon``'s keyword arguments with
optax's meaning. Structural integer options (``min_size``, ``ns_steps``,
``block_size``, ...) default to None, meaning the paper's value, so that
``optax.inject_hyperparams`` leaves them static; callables (``labels``,
``dimension_numbers``, ``stack_axes`` functions) must be named in its
``static_args``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from quantmuon import formats, routing, sharding
from quantmuon.formats.base import check_choice
from quantmuon.transforms import (
    leafwise_muon,
    newton_schulz,
    options,
    orthogonalize,
    quantize_state,
    scale_by_quantized_momentum,
    scale_by_shape,
)
from quantmuon.transforms.options import static_float, static_int

ScalarOrSchedule = float | jax.Array | optax.Schedule
PIPELINES = ("leafwise", "chain")


@dataclasses.dataclass(frozen=True)
class MuonOptions(options.MuonStepOptions):
  """Every option of a quantmuon optimizer, with its default.

  The momentum, Newton-Schulz, scaling and view options are those of
  :mod:`quantmuon.transforms.options`; the rest:

  Attributes:
    weight_decay: decoupled weight decay of the Muon leaves.
    weight_decay_mask: optax mask for it.
    labels: None (:mod:`quantmuon.routing`'s rules), a tree of
      ``"muon"`` / ``"adam"`` labels or a callable of the params returning
      one.
    stack_axes: the axes of stacked matrices (scanned layers, experts): a
      mapping from a path component's name to its axis, e.g.
      ``{"layers": 0}``, or a callable; see :mod:`quantmuon.routing`.
    muon_weight_dimension_numbers: ``optax.contrib.muon``'s argument: a
      ``MuonDimensionNumbers``, a tree of them (None: AdamW) or a callable;
      when given it decides which leaves Muon takes and how it sees them.
    adam_learning_rate: AdamW's rate; None shares ``learning_rate``.
    adam_b1: AdamW's first-moment decay.
    adam_b2: AdamW's second-moment decay.
    adam_eps: AdamW's epsilon; None takes ``eps`` (as optax's Muon).
    adam_eps_root: AdamW's epsilon inside the square root.
    adam_weight_decay: AdamW's decoupled weight decay.
    adam_nesterov: AdamW's Nesterov momentum (NAdam); None takes
      ``nesterov`` (as optax's Muon).
    adam_state_format: None keeps AdamW's state in float32 (or
      ``mu_dtype``); else the ``state_format`` of
      :func:`quantmuon.quantize_state` for it (with the same ``min_size``
      and ``seed``), e.g. ``{"mu": Blockwise(8, "dynamic"), "nu":
      Blockwise(8, "unsigned_dynamic")}`` for 8-bit AdamW.
    pipeline: ``leafwise`` (:func:`quantmuon.transforms.leafwise_muon`:
      momentum step, Newton-Schulz and scaling of one matrix before the
      next, so only one
      matrix's float32 intermediates are alive at a time) or ``chain``
      (the composable transforms chained, which emit every leaf's float32
      momentum at once); both give the same updates and state, the chain
      in a different state tree.
  """

  weight_decay: Any = 0.0
  weight_decay_mask: Any = None
  labels: Any = None
  stack_axes: Any = None
  muon_weight_dimension_numbers: Any = None
  adam_learning_rate: Any = None
  adam_b1: Any = 0.9
  adam_b2: Any = 0.95
  adam_eps: Any = 1e-8
  adam_eps_root: Any = 0.0
  adam_weight_decay: Any = 0.0
  adam_nesterov: Any = False
  adam_state_format: Any = None
  pipeline: str = "leafwise"

  def full_precision(self) -> MuonOptions:
    """The same options with every stored state in float32."""
    return dataclasses.replace(self, momentum_format=formats.Float(),
                               adam_state_format=None, mu_dtype=None)


def _check_learning_rate(who: str, name: str, value: Any) -> None:
  if value is None and name == "adam_learning_rate":
    return
  if callable(value) or isinstance(value, int | float | jax.Array) or (
      hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.number)):
    return
  raise ValueError(
      f"{who}: {name} must be a number or an optax schedule, got "
      f"{value!r}.")


@options.expand
def quantized_muon(learning_rate: ScalarOrSchedule, opts: MuonOptions
                   ) -> optax.GradientTransformationExtraArgs:
  """Muon with its momentum stored in ``momentum_format``; AdamW elsewhere.

  Args:
    learning_rate: float or optax schedule, for the Muon leaves.
    opts: the fields of ``MuonOptions``, as keywords.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Raises:
    ValueError: for bad option values, and at ``init`` for a Muon leaf that
      is not a matrix, or a stacked leaf that nothing declares.
  """
  return build(learning_rate, opts, "quantized_muon")


def build(learning_rate: ScalarOrSchedule, opts: MuonOptions,
          who: str = "quantized_muon"
          ) -> optax.GradientTransformationExtraArgs:
  """The optimizer of ``opts`` (see :func:`quantized_muon`).

  Args:
    learning_rate: float or optax schedule, for the Muon leaves.
    opts: the options.
    who: the name errors give.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  _check_learning_rate(who, "learning_rate", learning_rate)
  _check_learning_rate(who, "adam_learning_rate", opts.adam_learning_rate)
  try:
    check_choice(opts.pipeline, "pipeline", PIPELINES)
  except ValueError as err:
    raise ValueError(f"{who}: {err}") from None
  label_fn, dims_fn = routing.route_fns(
      labels=opts.labels, dimension_numbers=opts.dimension_numbers,
      stack_axes=opts.stack_axes,
      muon_weight_dimension_numbers=opts.muon_weight_dimension_numbers)
  step = dataclasses.replace(
      options.project(opts, options.MuonStepOptions),
      dimension_numbers=dims_fn)
  _check(step, who)
  if opts.pipeline == "leafwise":
    muon_steps = [leafwise_muon(**_fields(step, options.MuonStepOptions))]
  else:
    view = dict(dimension_numbers=dims_fn)
    muon_steps = [
        scale_by_quantized_momentum(
            **_fields(step, options.MomentumOptions), **view),
        orthogonalize(**_fields(step, options.OrthogonalizeOptions),
                      **view),
        scale_by_shape(consistent_rms=step.consistent_rms, **view)]
  muon_chain = optax.chain(
      *muon_steps,
      _decay(opts.weight_decay, opts.weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate))
  adam = optax.chain(
      optax.scale_by_adam(
          b1=opts.adam_b1, b2=opts.adam_b2,
          eps=opts.eps if opts.adam_eps is None else opts.adam_eps,
          eps_root=opts.adam_eps_root, mu_dtype=opts.mu_dtype,
          nesterov=(opts.nesterov if opts.adam_nesterov is None
                    else opts.adam_nesterov)),
      _decay(opts.adam_weight_decay, None),
      optax.scale_by_learning_rate(
          learning_rate if opts.adam_learning_rate is None
          else opts.adam_learning_rate))
  if opts.adam_state_format is not None:
    adam = quantize_state(adam, opts.adam_state_format,
                          min_size=opts.min_size, seed=opts.seed)
  tx = optax.partition({routing.MUON: muon_chain, routing.ADAM: adam},
                       label_fn)

  jitted_init = jax.jit(tx.init)

  def init_fn(params):
    # Eager, on one device (nnx.Optimizer builds its state so): one
    # compiled init instead of op-by-op dispatch, seconds for a Subspace.
    if sharding.on_one_device(params):
      return jitted_init(params)
    return sharding.replicate_on_mesh(tx.init(params), params)

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)


def _check(step: options.MuonStepOptions, who: str) -> None:
  """Checks every option of the Muon step, naming ``who`` in the error."""
  options.MomentumOptions.checked(step, who)
  options.OrthogonalizeOptions.checked(step, who)
  try:
    newton_schulz.newton_schulz_schedule(step.ns_coeffs, step.ns_steps,
                                         step.preconditioning)
  except ValueError as err:
    raise ValueError(f"{who}: {err}") from None


def _fields(opts: Any, spec: type) -> dict[str, Any]:
  return {f.name: getattr(opts, f.name) for f in dataclasses.fields(spec)}


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


# What a preset is: the momentum format and how it is accumulated. The
# other options are defaults a user may change.
RECIPE_FIELDS = ("momentum_format", "accumulation", "normalize")


class Preset:
  """A published method (or ours) as data: the options it fixes.

  Calling a preset builds its optimizer: ``muon_8bit(1e-3,
  scheme="dynamic", weight_decay=0.1)``. Its signature is the learning
  rate, its own arguments (``scheme``, ``bits``, ...), then every option
  of :class:`MuonOptions` but the recipe's (the momentum format, the
  accumulation and the normalization), with the preset's defaults.

  Args:
    recipe: a function of the preset's own arguments returning the options
      it sets (a dict of :class:`MuonOptions` fields); its name and
      docstring are the preset's.
  """

  def __init__(self, recipe: Callable[..., Mapping[str, Any]]):
    functools.update_wrapper(self, recipe)
    self.recipe = recipe
    own = list(inspect.signature(recipe).parameters.values())
    self._own = [p.name for p in own]
    defaults = dict(recipe())
    fields = [f for f in dataclasses.fields(MuonOptions)
              if f.name not in RECIPE_FIELDS and f.name not in self._own]
    self._fields = {f.name for f in fields}
    rate = inspect.Parameter("learning_rate",
                             inspect.Parameter.POSITIONAL_OR_KEYWORD)
    self.__signature__ = inspect.Signature(
        [rate] + own + [inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY,
            default=defaults.get(f.name, f.default)) for f in fields])

  def options(self, *args: Any, **kwargs: Any
              ) -> tuple[ScalarOrSchedule, MuonOptions]:
    """The learning rate and the options a call with these arguments
    builds.

    Raises:
      ValueError: for an unknown keyword (listing the allowed ones) or a
        bad value of the preset's own arguments, naming the preset.
    """
    unknown = sorted(set(kwargs) - set(self.__signature__.parameters))
    if unknown:
      raise ValueError(
          f"{self.__name__} got unknown option(s) {unknown}; allowed: "
          f"{sorted(self.__signature__.parameters)}.")
    bound = self.__signature__.bind(*args, **kwargs)
    learning_rate = bound.arguments.pop("learning_rate")
    own = {k: bound.arguments[k] for k in self._own if k in bound.arguments}
    try:
      values = dict(self.recipe(**own))
    except ValueError as err:
      message = str(err)
      if not message.startswith(self.__name__):
        message = f"{self.__name__}: {message}"
      raise ValueError(message) from None
    values.update({k: v for k, v in bound.arguments.items()
                   if k in self._fields})
    return learning_rate, MuonOptions(**values)

  def __call__(self, *args: Any, **kwargs: Any
               ) -> optax.GradientTransformationExtraArgs:
    learning_rate, opts = self.options(*args, **kwargs)
    return build(learning_rate, opts, self.__name__)

  def __repr__(self) -> str:
    return f"<quantmuon preset {self.__name__}>"


def preset(recipe: Callable[..., Mapping[str, Any]]) -> Preset:
  """Makes ``recipe`` a :class:`Preset`."""
  return Preset(recipe)


def _choose(value: Any, name: str, allowed: tuple) -> Any:
  """A preset's own argument, checked against ``allowed``."""
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
  return value


@preset
def muon() -> dict[str, Any]:
  """Full-precision Muon: ``optax.contrib.muon`` itself.

  EMA momentum in float32, optax's bias-corrected Nesterov mix, quintic
  Newton-Schulz, width scaling (Keller Jordan), and AdamW as optax's (its
  eps is Muon's, its Nesterov Muon's, b2 0.999). The reference the
  quantized presets are measured against; equal to ``optax.contrib.muon``
  under the same arguments.

  Returns:
    The preset's options.
  """
  return dict(momentum_format=formats.Float(), accumulation="ema",
              nesterov=True, consistent_rms=None, eps=1e-8, adam_b2=0.999,
              adam_eps=None, adam_nesterov=None)


@preset
def muon_8bit(scheme: str = "linear", block_size: int | None = None,
              scale_dtype: Any = jnp.float32) -> dict[str, Any]:
  """8-bit Muon ("Effective Quantization of Muon Optimizer States").

  int8 momentum with one float32 absmax scale per block of 2048 elements,
  ``linear`` or bitsandbytes ``dynamic`` codes; heavy-ball momentum,
  Nesterov, consistent-RMS 0.2 (Moonlight's rule, so that Muon shares
  AdamW's learning rate).

  A block of 2048 spans several rows of a matrix narrower than 2048, and
  a gradient's rows (input features) differ in scale, so one large row
  coarsens the codes of the others. Smaller blocks with 2-byte scales fix
  most of it at 3% more bytes: on gradients captured from a width-512
  GPT (``python -m benchmarks.fidelity --sources gpt512``),
  ``block_size=64, scale_dtype="bfloat16"`` (1.03 bytes per element)
  raises the update's cosine with the full-precision twin's from 0.90-0.93
  to 0.97-0.98. bfloat16 keeps float32's range, which the momentum (not
  normalized) needs: a float16 scale below 6e-5 is subnormal and can
  exceed its block's maximum severalfold.

  Args:
    scheme: ``linear`` or ``dynamic``.
    block_size: elements per scale (2048).
    scale_dtype: dtype the block scales are stored in (float32).

  Returns:
    The preset's options.
  """
  fmt = formats.Blockwise(
      bits=8, codebook=_choose(scheme, "scheme", ("linear", "dynamic")),
      block_size=static_int(block_size, "block_size", 2048),
      scale_dtype=scale_dtype)
  return dict(momentum_format=fmt, accumulation="sum", nesterov=True,
              consistent_rms=0.2)


@preset
def muon_4bit(block_size: int | None = None) -> dict[str, Any]:
  """Naive 4-bit Muon: MuonQ's own baseline.

  Linear 4-bit momentum with one scale per tensor (or per block of
  ``block_size``), heavy-ball momentum, no Nesterov, no normalization,
  consistent-RMS 0.2.

  Args:
    block_size: None for a per-tensor scale, else elements per scale.

  Returns:
    The preset's options.
  """
  if block_size is None:
    fmt = formats.Axiswise(bits=4, axis="tensor")
  else:
    fmt = formats.Blockwise(
        bits=4, block_size=static_int(block_size, "block_size", 128))
  return dict(momentum_format=fmt, accumulation="sum", nesterov=False,
              consistent_rms=0.2)


@preset
def muonq(bits: int | None = None, rank_divisor: int | None = None,
          mu: float | None = None, residual_granularity: str = "tensor",
          group_size: int | None = None,
          companding: str = "before_scale") -> dict[str, Any]:
  """MuonQ (arXiv 2605.11396).

  Frobenius pre-normalization of the gradient and the momentum; the momentum
  stored as top-k factors (k = min(m, n) / 16, one warm-started power
  iteration) with per-column scales and a residual with one scale per
  tensor (or per group), all mu-law companded (mu = 255) at 4 bits with
  float16 scales. As in MuonQ's public code, each value is companded
  before the absmax scale is taken, in the companded domain. Heavy-ball
  momentum, no Nesterov, consistent-RMS 0.2.

  Args:
    bits: code width, 4 (the paper's) or 8.
    rank_divisor: k = min(m, n) // rank_divisor (16).
    mu: mu-law parameter (255).
    residual_granularity: ``tensor`` or ``group``.
    group_size: elements per residual scale for ``group`` (128).
    companding: ``before_scale`` (the public code's order) or
      ``after_scale`` (mu-law of ``x / absmax``, the order the paper's text
      suggests); the Pallas kernels take both.

  Returns:
    The preset's options.
  """
  _choose(residual_granularity, "residual_granularity", ("tensor", "group"))
  kw = dict(bits=_choose(static_int(bits, "bits", 4), "bits", (4, 8)),
            codebook="mulaw", mu=static_float(mu, "mu", 255.0),
            scale_dtype=jnp.float16,
            companding=_choose(companding, "companding",
                               ("before_scale", "after_scale")))
  if residual_granularity == "tensor":
    residual = formats.Axiswise(axis="tensor", **kw)
  else:
    residual = formats.Blockwise(
        block_size=static_int(group_size, "group_size", 128), **kw)
  fmt = formats.Subspace(
      rank_divisor=static_int(rank_divisor, "rank_divisor", 16),
      factors=formats.Axiswise(axis="col", **kw), residual=residual)
  return dict(momentum_format=fmt, accumulation="sum", normalize=True,
              nesterov=False, consistent_rms=0.2)


@preset
def muon_grasp(bits: int | None = None, rank_divisor: int | None = None,
               tile: int | None = None) -> dict[str, Any]:
  """4-bit-Muon-GRASP ("Achieving low-bit Muon through subspace
  preservation and grid quantization", ICLR 2026).

  The momentum stored as top-k factors P, R at 8 bits (blocks of 128) and a
  4-bit residual with grid scales (128 x 128 tiles); one warm-started power
  iteration a step; heavy-ball momentum, Newton-Schulz of M itself (no
  Nesterov). The paper's step ``W -= lr (NS5(M) + wd W)`` has no RMS rule;
  the default consistent-RMS 0.2 departs from it so that every preset
  shares one learning rate with AdamW (a 256 x 1024 update is scaled by
  6.4).

  Args:
    bits: residual code width, 4 (the paper's) or 8.
    rank_divisor: k = min(m, n) // rank_divisor (16).
    tile: side of the grid tiles (128).

  Returns:
    The preset's options.
  """
  fmt = formats.Subspace(
      rank_divisor=static_int(rank_divisor, "rank_divisor", 16),
      factors=formats.Blockwise(bits=8, block_size=128),
      residual=formats.Grid(
          bits=_choose(static_int(bits, "bits", 4), "bits", (4, 8)),
          tile=static_int(tile, "tile", 128)))
  return dict(momentum_format=fmt, accumulation="sum", nesterov=False,
              consistent_rms=0.2)


def adam_8bit() -> dict[str, formats.Format]:
  """``adam_state_format`` for 8-bit AdamW (bitsandbytes' recipe).

  Returns:
    The first moment in ``dynamic`` and the second in ``unsigned_dynamic``
    8-bit codes, one float32 absmax scale per block of 2048 elements.
  """
  return {"mu": formats.Blockwise(8, "dynamic"),
          "nu": formats.Blockwise(8, "unsigned_dynamic")}


@preset
def muon_lowbit(bits: int | None = None, rank_divisor: int | None = None,
                group_size: int | None = None,
                rank_budget: float | None = None) -> dict[str, Any]:
  """quantmuon's own low-bit recipe, chosen by measurement.

  MuonQ's normalized heavy-ball momentum, stored as top-k factors at 8 bits
  (blocks of 128, as GRASP) plus a residual at ``bits`` with one float16
  scale per group of 128 along the rows, and Nesterov's mix fed to
  Newton-Schulz. At 4 bits the residual's values are mu-law companded
  before the group's absmax scale is taken (MuonQ's public quantizer with
  finer scales). At 2 bits an absmax scale rounds most of a group to zero,
  so the residual takes the four ``midrise`` levels at +-0.5 and +-1.5
  times the group's RMS (``clip_rms=1.5``). The midrise levels have no
  zero, so a group of 128 that holds an exact zero (a dead unit's row or
  column) takes the three linear levels instead, flagged by the sign of its
  scale: such weights stay where the twin leaves them, at a higher error
  for that group's other values (0.46 relative on Gaussian groups against
  0.34).

  AdamW's state (embeddings, head, norms, biases) is stored in 8 bits, as
  bitsandbytes' 8-bit Adam: the first moment in ``dynamic`` codes, the
  second in ``unsigned_dynamic`` codes, one float32 scale per block of
  2048, leaves under ``min_size`` elements in float32
  (``adam_state_format``; pass None for float32). Without it AdamW's
  float32 moments of the embeddings would be most of the state at GPT-2
  small's shapes. The twin (:func:`full_precision_twin`) keeps them in
  float32.

  Args:
    bits: residual code width, 4 or 2 (4).
    rank_divisor: k = min(m, n) // rank_divisor (20: at most 0.62 bytes
      of state per matrix parameter on large matrices).
    group_size: residual elements per scale (128).
    rank_budget: None, or bytes per matrix element: each matrix then takes
      the largest rank whose stored momentum fits in it, and at least
      ``rank_divisor``'s (``formats.BudgetSubspace``). A square matrix
      already spends about 0.62 bytes an element at k = min / 20, a
      rectangular one less: with ``rank_budget=0.62`` a 512 x 2048 matrix
      takes k = 41 instead of 25 (0.62 bytes an element instead of 0.58).

  Returns:
    The preset's options.
  """
  bits = _choose(static_int(bits, "bits", 4), "bits", (4, 2))
  block_size = static_int(group_size, "group_size", 128)
  if bits == 2:
    residual = formats.Blockwise(
        bits=2, codebook="midrise", clip_rms=1.5, scale_dtype=jnp.float16,
        block_size=block_size)
  else:
    residual = formats.Blockwise(
        bits=bits, codebook="mulaw", companding="before_scale",
        scale_dtype=jnp.float16, block_size=block_size)
  subspace = dict(rank_divisor=static_int(rank_divisor, "rank_divisor", 20),
                  factors=formats.Blockwise(bits=8, block_size=128),
                  residual=residual)
  if rank_budget is None:
    fmt = formats.Subspace(**subspace)
  else:
    fmt = formats.BudgetSubspace(
        bytes_per_element=static_float(rank_budget, "rank_budget", 0.62),
        **subspace)
  return dict(momentum_format=fmt, accumulation="sum", normalize=True,
              nesterov=True, consistent_rms=0.2,
              adam_state_format=adam_8bit())


class _Twin:
  """A preset's exact full-precision twin (see
  :func:`full_precision_twin`)."""

  def __init__(self, preset: Preset):
    functools.update_wrapper(self, preset)
    self.preset = preset
    self.__name__ = self.__qualname__ = f"{preset.__name__}_fp32"
    self.__signature__ = preset.__signature__

  def options(self, *args: Any, **kwargs: Any
              ) -> tuple[ScalarOrSchedule, MuonOptions]:
    learning_rate, opts = self.preset.options(*args, **kwargs)
    return learning_rate, opts.full_precision()

  def __call__(self, *args: Any, **kwargs: Any
               ) -> optax.GradientTransformationExtraArgs:
    learning_rate, opts = self.options(*args, **kwargs)
    return build(learning_rate, opts, self.__name__)

  def __repr__(self) -> str:
    return f"<quantmuon preset {self.__name__}>"


def full_precision_twin(preset: Preset) -> _Twin:
  """The exact full-precision twin of a preset.

  The twin takes the preset's arguments (it has the same signature, so
  ``optax.inject_hyperparams`` and the option checks see them) and builds
  the same optimizer with the Muon momentum stored in ``formats.Float()``
  and AdamW's state in float32: accumulation, normalization, Nesterov,
  scaling, routing and rates are unchanged. ``full_precision_twin(muonq)
  (1e-2)`` is the reference against which MuonQ's cost of quantization is
  measured.

  Args:
    preset: a preset of this module (a :class:`Preset`).

  Returns:
    The twin preset, named ``<preset>_fp32``.

  Raises:
    ValueError: for anything but a preset.
  """
  if isinstance(preset, _Twin):
    return preset
  if not isinstance(preset, Preset):
    raise ValueError(
        f"full_precision_twin: {preset!r} is not a quantmuon preset; make "
        "one with quantmuon.presets.preset, or build the twin with "
        "quantized_muon(momentum_format=quantmuon.formats.Float(), ...).")
  return _Twin(preset)


def twin_settings(preset: Preset, *args: Any, **kwargs: Any) -> MuonOptions:
  """The options of the twin of ``preset`` built with these arguments.

  Two twins with equal settings are the same optimizer: the twins of
  ``muon_8bit(scheme="linear")`` and ``muon_8bit(scheme="dynamic")`` are,
  and so are those of ``muon_4bit`` and ``muon_grasp``.

  Args:
    preset: as for :func:`full_precision_twin`.
    *args: the preset's positional arguments.
    **kwargs: its keyword arguments.

  Returns:
    The twin's ``MuonOptions``.
  """
  return full_precision_twin(preset).options(*args, **kwargs)[1]
