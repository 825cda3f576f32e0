"""Optimizers by name, with the warmup + cosine schedule of the experiments.

Names: ``adamw`` (optax), ``muon`` (full precision, width scaling, its own
larger rate), ``muon_rms`` (full precision with Moonlight's consistent-RMS
scaling, the quantized presets' rate), the quantized presets
``muon_8bit``, ``muon_8bit_dynamic``, ``muon_4bit``, ``muonq``,
``muon_grasp``, ``muon_lowbit`` and ``muon_lowbit_2bit``, and for each of
them ``<name>_fp32``, its exact full-precision twin
(``quantmuon.full_precision_twin``: the same preset with float32 momentum).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

import quantmuon
from quantmuon import registry
from quantmuon_experiments import errors

TWIN_SUFFIX = registry.TWIN_SUFFIX
FULL_PRECISION = registry.FULL_PRECISION
# The library's variants: those muon_lowbit was chosen from
# (configs/lowbit_ablation.py), 2 bits with more rank in the same bytes
# (rank_budget, 0.40 bytes per matrix element), and muon_8bit with the
# small blocks and bfloat16 scales its docstring measures.
ABLATIONS: dict[str, registry.Variant] = {
    "muon_lowbit_rank16": registry.Variant(quantmuon.muon_lowbit,
                                           {"rank_divisor": 16}),
    "muon_lowbit_rank8": registry.Variant(quantmuon.muon_lowbit,
                                          {"rank_divisor": 8}),
    "muon_lowbit_no_nesterov": registry.Variant(quantmuon.muon_lowbit,
                                                {"nesterov": False}),
    "muon_lowbit_2bit_rank8": registry.Variant(
        quantmuon.muon_lowbit, {"bits": 2, "rank_divisor": 8}),
    "muon_lowbit_2bit_budget": registry.Variant(
        quantmuon.muon_lowbit, {"bits": 2, "rank_budget": 0.4}),
    "muon_8bit_block64": registry.Variant(
        quantmuon.muon_8bit, {"block_size": 64, "scale_dtype": "bfloat16"}),
}
QUANTIZED = {**registry.QUANTIZED, **ABLATIONS}
TWINS = {name + TWIN_SUFFIX: v.twin for name, v in QUANTIZED.items()}
PRESETS: dict[str, registry.Variant] = {**FULL_PRECISION, **QUANTIZED,
                                        **TWINS}
NAMES = ("adamw", *PRESETS)

# Optimizers that share a learning rate; the sweep tunes the first of each
# group and gives the result to the others.
RATE_GROUPS: dict[str, tuple[str, ...]] = {
    "adamw": ("adamw",),
    "muon": ("muon",),
    "muon_rms": ("muon_rms", *QUANTIZED, *TWINS),
}


def twin_of(name: str) -> str | None:
  """The name of a quantized optimizer's full-precision twin, else None."""
  return name + TWIN_SUFFIX if name in QUANTIZED else None


def twin_key(name: str) -> str:
  """Equal for twins that build the same optimizer (``muon_8bit``'s and
  ``muon_8bit_dynamic``'s, say): the twin's settings at a unit rate."""
  return repr(QUANTIZED[name].twin.options(1.0)[1])


def rate_group(name: str) -> str:
  """The group (named by its swept member) whose rate ``name`` shares."""
  for group, members in RATE_GROUPS.items():
    if name in members:
      return group
  raise errors.ConfigError(_unknown(name))


def _unknown(name: str) -> str:
  return (f"config.optimizer.name: unknown optimizer {name!r}; use one of "
          f"{', '.join(NAMES)}.")


def schedule(peak: float, steps: int, warmup_steps: int,
             final_ratio: float) -> optax.Schedule:
  """Linear warmup from 0 to ``peak``, then cosine decay.

  Args:
    peak: the learning rate after warmup.
    steps: total training steps.
    warmup_steps: length of the warmup.
    final_ratio: the rate at the last step over ``peak``.

  Returns:
    An optax schedule.
  """
  warmup = min(warmup_steps, max(steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      0.0, peak, warmup, max(steps, warmup + 1), peak * final_ratio)


def adamw(learning_rate: optax.ScalarOrSchedule, weight_decay: float,
          adam_weight_decay: float, stack_axes: Any = None
          ) -> optax.GradientTransformation:
  """AdamW (b1 0.9, b2 0.95) with the presets' split of weight decay.

  Args:
    learning_rate: float or schedule.
    weight_decay: decay of the leaves the presets give to Muon.
    adam_weight_decay: decay of the others (embeddings, head, norms).
    stack_axes: the model's stacked layers (``quantmuon.muon_labels``).

  Returns:
    An optax optimizer.
  """
  def is_muon_leaf(params: Any, muon: bool = True) -> Any:
    return jax.tree.map(lambda label: (label == "muon") == muon,
                        quantmuon.muon_labels(params, stack_axes=stack_axes))

  return optax.chain(
      optax.scale_by_adam(b1=0.9, b2=0.95, eps=1e-8),
      optax.add_decayed_weights(weight_decay, is_muon_leaf),
      optax.add_decayed_weights(adam_weight_decay,
                                lambda p: is_muon_leaf(p, muon=False)),
      optax.scale_by_learning_rate(learning_rate))


def build(config: ml_collections.ConfigDict, steps: int,
          stack_axes: Any = None
          ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer named by ``config.name`` and its learning-rate schedule.

  Args:
    config: ``name``, ``learning_rate``, ``adam_learning_rate`` (0 shares
      ``learning_rate``), ``weight_decay``, ``adam_weight_decay``,
      ``warmup_steps``, ``final_lr_ratio``, and ``options`` (extra keyword
      arguments of the preset, e.g. ``min_size``).
    steps: total training steps, for the schedule.
    stack_axes: the model's stacked layers, given to the optimizer
      (``model.stack_axes``).

  Returns:
    ``(optimizer, schedule of the main learning rate)``.

  Raises:
    ConfigError: ``config.name`` is not one of ``NAMES``.
  """
  name = config.name
  if name not in NAMES:
    raise errors.ConfigError(_unknown(name))

  def sched(peak: float) -> optax.Schedule:
    return schedule(peak, steps, config.warmup_steps, config.final_lr_ratio)

  lr = sched(config.learning_rate)
  adam_lr = sched(config.adam_learning_rate or config.learning_rate)
  options = dict(config.get("options", {}) or {})
  if name == "adamw":
    return adamw(lr, config.weight_decay, config.adam_weight_decay,
                 stack_axes), lr
  tx = PRESETS[name](lr, weight_decay=config.weight_decay,
                     adam_learning_rate=adam_lr,
                     adam_weight_decay=config.adam_weight_decay,
                     stack_axes=stack_axes, **options)
  return tx, lr
