"""What the accelerator check runs, and how much of it: every size in one place.

Two plans: :data:`FULL` (one H100, 8 minutes with compile time, sized from
the shapes and the CPU smoke; see ``docs/accelerator.md``) and :data:`SMOKE`
(the CPU, tiny shapes, the same code paths). Change a size here and nowhere
else. The pipelines and the presets the check knows are listed here too,
once: :data:`PIPELINES` follows ``quantmuon.quantized_muon(pipeline=...)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import quantmuon as qm

# The pipelines of quantized_muon, in the order the check runs them: the
# default first, then the chain (the reference of the conditionals' cost).
# Edit when the library's list changes; every section reads it from here.
PIPELINES: tuple[str, ...] = ("leafwise", "chain")
DEFAULT_PIPELINE = PIPELINES[0]
# The impls the step section compares: the default (Pallas on GPU/TPU) and
# XLA's path.
STEP_IMPLS: tuple[str, ...] = ("auto", "xla")
# name -> (preset, keyword arguments): the presets with quantized momentum,
# each a format family or codebook the kernels run.
QUANTIZED: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "muon_8bit": (qm.muon_8bit, {}),
    "muon_8bit_dynamic": (qm.muon_8bit, {"scheme": "dynamic"}),
    "muon_4bit": (qm.muon_4bit, {}),
    "muonq": (qm.muonq, {}),
    "muon_grasp": (qm.muon_grasp, {}),
    "muon_lowbit": (qm.muon_lowbit, {}),
    "muon_lowbit_2bit": (qm.muon_lowbit, {"bits": 2}),
}
PRESETS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "muon": (qm.muon, {}), **QUANTIZED}
# The reference of the step section's ratios (optax.contrib.muon).
OPTAX_MUON = "optax_muon"
MiB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class Variant:
  """One optimizer of the step section: a preset, pipeline and impl."""

  preset: str
  pipeline: str = DEFAULT_PIPELINE
  impl: str = "auto"

  @property
  def name(self) -> str:
    """``preset``, then ``/pipeline`` and ``/impl`` when not the default."""
    parts = [self.preset]
    if self.preset != OPTAX_MUON:
      if self.pipeline != DEFAULT_PIPELINE:
        parts.append(self.pipeline)
      if self.impl != "auto":
        parts.append(self.impl)
    return "/".join(parts)


def variants(presets: tuple[str, ...], lead: tuple[str, ...],
             xla_of: tuple[str, ...], rest: bool) -> list[Variant]:
  """The step section's variants at one scale, most valuable first.

  Args:
    presets: presets at the default pipeline and impl.
    lead: presets also run with every other pipeline; they come first.
    xla_of: presets also run with ``impl="xla"`` (only those with
      quantized momentum: full precision has no kernel).
    rest: then the remaining pipelines x impls of ``presets``.

  Returns:
    ``optax_muon``; the lead presets at the default pipeline and impl,
    with the other pipelines, with ``xla``; the other presets, with
    ``xla``; the rest; without repeats.
  """
  def xla(names: tuple[str, ...]) -> list[Variant]:
    return [Variant(p, impl="xla") for p in names
            if p in xla_of and p in QUANTIZED]

  out = [Variant(OPTAX_MUON)] + [Variant(p) for p in lead]
  out += [Variant(p, pipe) for p in lead for pipe in PIPELINES[1:]]
  out += xla(lead) + [Variant(p) for p in presets] + xla(presets)
  if rest:
    out += [Variant(p, pipe, impl) for p in presets for pipe in PIPELINES
            for impl in STEP_IMPLS if impl == "auto" or p in QUANTIZED]
  seen: set[Variant] = set()
  return [v for v in out if not (v in seen or seen.add(v))]


@dataclasses.dataclass(frozen=True)
class StepScale:
  """One parameter tree of the step section and the variants it runs.

  Attributes:
    name: ``gpt2``, ``llama_1b``, ``tiny`` (the key of
      :func:`benchmarks.accelerator.step.params_of`), with ``_stacked``
      for its layers stacked on a leading axis.
    variants: in the order they are compiled (the budget may stop early).
    share: this scale's share of the section's time.
  """

  name: str
  variants: tuple[Variant, ...]
  share: float


@dataclasses.dataclass(frozen=True)
class Plan:
  """The sizes of one run of the check.

  Attributes:
    name: ``full`` or ``smoke``.
    budget_s: the whole run's time; a section or an item that would start
      after it is skipped and recorded as skipped.
    caps_s: the most each section may take (a loop stops starting items
      past it), so that a slow section leaves time to the next.
    min_s: the least time left to the run worth starting a section with.
    kernel_presets: the presets whose formats the kernels check runs.
    kernel_shapes: leaf shapes (a square one and a ragged one).
    kernel_steps: momentum steps compared.
    kernel_impl: ``pallas`` on a device, ``pallas_interpret`` on the CPU.
    bandwidth_formats: keys of ``benchmarks.kernels.KERNELS``, each at
      every shape before the next (the targets' formats first).
    bandwidth_shapes: leaf shapes.
    bandwidth_repeats: timed calls (the median is kept), after a warm-up.
    bandwidth_steps: momentum steps a call (a ``fori_loop``).
    bandwidth_fused: the fused path timed, or None (XLA's path only).
    step_scales: the step section's trees, most valuable first.
    step_repeats: steps a round per optimizer (the fastest is kept).
    step_rounds: at most this many interleaved rounds (fewer when time is
      short; at least 2).
    quality_optimizers: the compare run's optimizers (their twins run too).
    quality_overrides: ``--config.FIELD=VALUE`` of the compare run.
    scale_config: the training config of the memory-at-scale section.
    scale_optimizers: its optimizers, ``muon`` first (the reference).
    scale_overrides: config fields set in each worker (``a.b`` -> value).
    scale_fill: the share of the device's memory the batch should fill;
      0 keeps the config's batch (the CPU has no limit to fill).
    scale_steps: training steps each worker runs.
    profile_scale: the tree of the profile section (a step scale's name).
  """

  name: str
  budget_s: float
  caps_s: dict[str, float]
  min_s: dict[str, float]
  kernel_presets: tuple[str, ...]
  kernel_shapes: tuple[tuple[int, int], ...]
  kernel_steps: int
  kernel_impl: str
  bandwidth_formats: tuple[str, ...]
  bandwidth_shapes: tuple[tuple[int, int], ...]
  bandwidth_repeats: int
  bandwidth_steps: int
  bandwidth_fused: str | None
  step_scales: tuple[StepScale, ...]
  step_repeats: int
  step_rounds: int
  quality_optimizers: str
  quality_overrides: tuple[str, ...]
  scale_config: str
  scale_optimizers: tuple[str, ...]
  scale_overrides: dict[str, Any]
  scale_fill: float
  scale_steps: int
  profile_scale: str


ALL_PRESETS = ("muon", "muon_8bit", "muon_4bit", "muonq", "muon_grasp",
               "muon_lowbit")
QUANTIZED_PRESETS = ALL_PRESETS[1:]

FULL = Plan(
    name="full",
    budget_s=450.0,
    caps_s={"kernels": 75.0, "bandwidth": 75.0, "step": 160.0,
            "quality": 110.0, "memory_at_scale": 150.0, "profile": 60.0},
    min_s={"kernels": 10.0, "bandwidth": 10.0, "step": 30.0,
           "quality": 40.0, "memory_at_scale": 40.0, "profile": 20.0},
    kernel_presets=tuple(QUANTIZED),
    kernel_shapes=((4096, 4096), (3001, 2053)),
    kernel_steps=3,
    kernel_impl="pallas",
    bandwidth_formats=("blockwise8", "blockwise4_b128", "blockwise8_dynamic",
                       "blockwise4_mulaw_muonq", "axiswise4_tensor", "grid4",
                       "subspace_grasp", "subspace_muonq"),
    bandwidth_shapes=((4096, 4096), (8192, 8192)),
    bandwidth_repeats=20,
    bandwidth_steps=10,
    bandwidth_fused="pallas",
    step_scales=(
        StepScale("gpt2", tuple(variants(
            ALL_PRESETS, ("muon", "muon_8bit"), QUANTIZED_PRESETS,
            rest=True)), 0.45),
        # The Subspace presets compile slowly (muon_lowbit: 25 s of CPU at
        # GPT-2's shapes, 3 to 6 s for the others): not at 1B.
        StepScale("llama_1b", tuple(variants(
            ("muon",), ("muon_8bit",), ("muon_8bit",), rest=False)), 0.3),
        StepScale("gpt2_stacked", tuple(variants(
            ("muon_lowbit",), ("muon_8bit",), (), rest=False)), 0.15),
        StepScale("llama_1b_stacked", tuple(variants(
            ("muon", "muon_8bit"), (), (), rest=False)), 0.1),
    ),
    step_repeats=3,
    step_rounds=5,
    quality_optimizers="muon,muon_8bit,muon_lowbit",
    quality_overrides=("--config.timing.warmup=2",
                       "--config.timing.repeats=3",
                       "--config.timing.steps=5"),
    scale_config="configs/gpt2_small.py",
    scale_optimizers=("muon", "muon_8bit", "muon_lowbit", "muonq",
                      "muon_4bit", "muon_grasp"),
    scale_overrides={"data.max_bytes": 16 * 2 ** 20},
    scale_fill=0.8,
    scale_steps=3,
    profile_scale="gpt2",
)

SMOKE = Plan(
    name="smoke",
    # Generous: the smoke checks code paths, not the budget (the tests do),
    # and a shared CPU may be slow.
    budget_s=900.0,
    caps_s={"kernels": 300.0, "bandwidth": 300.0, "step": 300.0,
            "quality": 300.0, "memory_at_scale": 300.0, "profile": 300.0},
    min_s={"kernels": 1.0, "bandwidth": 1.0, "step": 1.0, "quality": 1.0,
           "memory_at_scale": 1.0, "profile": 1.0},
    kernel_presets=("muon_8bit", "muon_lowbit"),
    kernel_shapes=((40, 130),),
    kernel_steps=3,
    kernel_impl="pallas_interpret",
    bandwidth_formats=("blockwise8",),
    bandwidth_shapes=((64, 256),),
    bandwidth_repeats=2,
    bandwidth_steps=2,
    bandwidth_fused=None,
    step_scales=(
        StepScale("tiny", (Variant(OPTAX_MUON), Variant("muon_8bit"),
                           Variant("muon_8bit", "chain"),
                           Variant("muon_8bit", impl="xla")), 0.8),
        StepScale("tiny_stacked", (Variant("muon_8bit"),), 0.2),
    ),
    step_repeats=1,
    step_rounds=2,
    quality_optimizers="muon_8bit",
    quality_overrides=(
        "--config.twins=False", "--config.train.steps=2",
        "--config.train.eval_every=2", "--config.train.eval_batches=1",
        "--config.train.batch_size=2", "--config.train.progress=False",
        "--config.model.width=16", "--config.model.depth=1",
        "--config.model.heads=2", "--config.model.context=16",
        "--config.data.max_bytes=100000", "--config.timing.warmup=0",
        "--config.timing.repeats=1", "--config.timing.steps=1"),
    scale_config="configs/gpt2_small.py",
    scale_optimizers=("muon",),
    scale_overrides={"data.max_bytes": 100000, "model.vocab_size": 256,
                     "model.width": 16, "model.depth": 1, "model.heads": 2,
                     "model.context": 16, "train.batch_size": 2},
    scale_fill=0.0,
    scale_steps=2,
    profile_scale="tiny",
)

PLANS = {plan.name: plan for plan in (FULL, SMOKE)}
