"""Section 3, step: every preset's update on the device, timed and measured.

At each scale of the plan (GPT-2 small's and TinyLlama-1.1B's shapes from
``benchmarks.update_memory``, unscanned and with the layers stacked on a
leading axis), every variant (a preset, pipeline and impl;
``optax.contrib.muon`` first) is compiled from shapes with the state
donated (``update_memory.compile_update``): its compiled memory
(``update_memory.memory``), compile time and the conditionals left in the
optimized program. Then all of them are timed in interleaved rounds
(``optimizer_step.interleaved_times``: in each round, the fastest of
``repeats`` steps of every variant in turn), and the per-round ratios
(``experiments.timing.paired_ratios``, median with min and max) go to
``optax_muon`` (``time_vs_optax``), to the same preset on the default
pipeline (``time_vs_default_pipeline``) and, for ``impl="auto"``, to
``impl="xla"`` (``time_vs_xla``).

Each scale's ``pipelines`` summary answers whether the leafwise pipeline's
per-leaf ``lax.cond`` costs host round trips: the leafwise over chain
time per round, the extra microseconds per Muon leaf, and the memory ratio
(the ``profile`` section counts the copies themselves).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import MuonDimensionNumbers

import quantmuon as qm
from benchmarks import common, optimizer_step, update_memory
from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator.record import Budget, short_error
from quantmuon import routing
from quantmuon.formats.matrix_view import MatrixView
from quantmuon_experiments import timing

LR = 1e-3
STACKED = update_memory.STACKED
STACK_KEY = update_memory.STACK_KEY


def tiny_params() -> dict[str, Any]:
  """The smoke plan's tree: two blocks of two matrices, an embedding."""
  d = 32
  block = {"attn": {"o": {"kernel": jax.ShapeDtypeStruct((d, d),
                                                         jnp.float32)}},
           "mlp": {"up": {"kernel": jax.ShapeDtypeStruct((d, 4 * d),
                                                         jnp.float32)}}}
  return {"block_0": block, "block_1": block,
          "wte": {"embedding": jax.ShapeDtypeStruct((64, d), jnp.float32)}}


BASE_SCALES = {"gpt2": update_memory.BASE_SCALES["gpt2"],
               "llama_1b": update_memory.BASE_SCALES["llama_1b"],
               "tiny": tiny_params}


def params_of(scale: str) -> dict[str, Any]:
  """The ShapeDtypeStruct tree of a scale (``<base>`` or ``<base>_stacked``)."""
  base = scale.removesuffix(STACKED)
  params = BASE_SCALES[base]()
  return (update_memory.stack_blocks(params) if scale.endswith(STACKED)
          else params)


# The stacked layers' leading axis is a batch axis.
STACK_AXES = {STACK_KEY: 0}


def stack_axes(stacked: bool) -> dict[str, int] | None:
  """The ``stack_axes`` argument of a scale's presets."""
  return STACK_AXES if stacked else None


def build(variant: plan_lib.Variant, params: Any, stacked: bool
          ) -> optax.GradientTransformation:
  """The optimizer of a variant at ``LR``.

  Args:
    variant: ``optax_muon`` or a preset with its pipeline and impl.
    params: the parameter shapes (for optax's dimension numbers).
    stacked: whether the layers are stacked (``STACK_AXES``).

  Returns:
    The optimizer.
  """
  axes = stack_axes(stacked)
  if variant.preset == plan_lib.OPTAX_MUON:
    labels = qm.muon_labels(params, stack_axes=axes)
    views = routing.views(params, stack_axes=axes)
    tree = jax.tree.map(
        lambda label, view: (routing.to_dimension_numbers(view)
                             or MuonDimensionNumbers())
        if label == routing.MUON else None, labels, views,
        is_leaf=lambda x: x is None or isinstance(x, MatrixView))
    return optax.contrib.muon(LR, adam_b2=0.95,
                              muon_weight_dimension_numbers=tree)
  fn, kwargs = plan_lib.PRESETS[variant.preset]
  return fn(LR, pipeline=variant.pipeline, impl=variant.impl,
            stack_axes=axes, **kwargs)


def materialize(params: Any) -> tuple[Any, Any]:
  """Zero parameters and random gradients of the given shapes."""
  leaves, treedef = jax.tree.flatten(params)
  zeros = [jnp.zeros(s.shape, s.dtype) for s in leaves]
  grads = [jax.random.normal(jax.random.key(i), s.shape, s.dtype)
           for i, s in enumerate(leaves)]
  return treedef.unflatten(zeros), treedef.unflatten(grads)


def compile_variant(variant: plan_lib.Variant, params: Any, stacked: bool
                    ) -> tuple[dict[str, Any], Any, Any]:
  """Compiles one variant's update; its row, executable and optimizer."""
  tx = build(variant, params, stacked)
  compiled, seconds, state = update_memory.compile_update(tx, params)
  row = {"variant": variant.name, "preset": variant.preset,
         "pipeline": variant.pipeline, "impl": variant.impl,
         "state_bytes": update_memory.nbytes(state), **seconds,
         **update_memory.memory(compiled),
         "conditionals": compiled.as_text().count(" conditional(")}
  return row, compiled, tx


def _ratio(times: dict[str, list[float]], name: str, reference: str | None
           ) -> dict[str, float] | None:
  if reference is None or reference not in times or name not in times:
    return None
  return timing.paired_ratios(times[name], times[reference])


def add_ratios(rows: list[dict[str, Any]], times: dict[str, list[float]]
               ) -> None:
  """Time and memory ratios of every timed row, in place."""
  by_name = {r["variant"]: r for r in rows}
  optax_row = by_name.get(plan_lib.OPTAX_MUON)
  for row in rows:
    if row["variant"] not in times:
      continue
    default = plan_lib.Variant(row["preset"], impl=row["impl"]).name
    xla = plan_lib.Variant(row["preset"], row["pipeline"], "xla").name
    row["time_vs_optax"] = _ratio(times, row["variant"], plan_lib.OPTAX_MUON)
    if row["preset"] != plan_lib.OPTAX_MUON:
      row["time_vs_default_pipeline"] = _ratio(
          times, row["variant"], default if default != row["variant"]
          else None)
      row["time_vs_xla"] = _ratio(times, row["variant"],
                                  xla if row["impl"] != "xla" else None)
    if optax_row:
      row["memory_vs_optax"] = row["total"] / optax_row["total"]
    if default in by_name and default != row["variant"]:
      row["memory_vs_default_pipeline"] = row["total"] / by_name[default][
          "total"]


def pipeline_summary(rows: list[dict[str, Any]],
                     times: dict[str, list[float]], muon_leaves: int
                     ) -> list[dict[str, Any]]:
  """Per preset timed with the default pipeline and the chain: the cost
  of the default's conditionals.

  Returns:
    Rows of ``preset``, ``impl``, ``leafwise_over_chain`` (per-round
    ratios), ``extra_us_per_leaf`` (median time difference over the Muon
    leaves), ``memory_leafwise_over_chain`` and the default's
    ``conditionals``.
  """
  by_name = {r["variant"]: r for r in rows}
  out = []
  for row in rows:
    if row["pipeline"] != plan_lib.DEFAULT_PIPELINE or row[
        "preset"] == plan_lib.OPTAX_MUON:
      continue
    chain = plan_lib.Variant(row["preset"], "chain", row["impl"]).name
    if chain not in times or row["variant"] not in times:
      continue
    difference = np.median(times[row["variant"]]) - np.median(times[chain])
    out.append({
        "preset": row["preset"], "impl": row["impl"],
        "leafwise_over_chain": timing.paired_ratios(times[row["variant"]],
                                                    times[chain]),
        "extra_us_per_leaf": 1e6 * float(difference) / max(muon_leaves, 1),
        "memory_leafwise_over_chain": row["total"] / by_name[chain]["total"],
        "conditionals": row["conditionals"],
        "chain_conditionals": by_name[chain]["conditionals"]})
  return out


def next_cost(rows: list[dict[str, Any]], plan: plan_lib.Plan) -> float:
  """Seconds that compiling one more variant would add to a scale: a
  compile and a first step as slow as the slowest so far, then every
  variant's steps in the plan's rounds.

  Args:
    rows: the variants compiled so far (``compile_s``, ``first_step_s``).
    plan: repeats and rounds.
  """
  timed = [r for r in rows if "first_step_s" in r]
  if not timed:
    return 0.0
  slowest = max(r["first_step_s"] for r in timed)
  steps = sum(r["first_step_s"] for r in timed) + slowest
  return (max(r["compile_s"] for r in timed) + slowest
          + plan.step_rounds * (plan.step_repeats + 1) * steps)


def run_scale(scale: plan_lib.StepScale, plan: plan_lib.Plan,
              allowance_s: float) -> dict[str, Any]:
  """Compiles, measures and times one scale's variants.

  Args:
    scale: the scale and its variants, most valuable first.
    plan: repeats and rounds.
    allowance_s: this scale's time; a variant is compiled while it and
      the rounds fit (:func:`next_cost`; at least two are), and the rounds
      are as many as fit in what is left (at least one).

  Returns:
    ``rows`` (one per variant compiled), ``skipped`` variants, the
    ``pipelines`` summary, ``rounds`` timed, ``timing_error`` (None, or
    why the rounds failed) and ``muon_leaves``.
  """
  start = time.perf_counter()
  stacked = scale.name.endswith(STACKED)
  shapes = params_of(scale.name)
  labels = qm.muon_labels(shapes, stack_axes=stack_axes(stacked))
  muon_leaves = sum(label == routing.MUON for label in jax.tree.leaves(labels))
  params, grads = materialize(shapes)
  rows, steps, skipped = [], {}, []
  for variant in scale.variants:
    spent = time.perf_counter() - start
    if len(steps) >= 2 and spent + next_cost(rows, plan) > allowance_s:
      skipped.append(variant.name)
      continue
    try:
      row, compiled, tx = compile_variant(variant, shapes, stacked)
      state = tx.init(params)
      seconds, state = common.fastest_step(compiled, grads, state, params, 1)
      row["first_step_s"] = seconds
      steps[variant.name] = optimizer_step.Measured(compiled, row["total"],
                                                    state)
    except Exception as err:  # noqa: BLE001 - keep the other variants
      row = {"variant": variant.name, "preset": variant.preset,
             "pipeline": variant.pipeline, "impl": variant.impl,
             "error": short_error(err)}
    rows.append(row)
    print("  ", scale.name, {k: row.get(k) for k in (
        "variant", "compile_s", "total", "first_step_s", "error")},
        flush=True)
  per_round = sum((plan.step_repeats + 1) * r["first_step_s"]
                  for r in rows if "first_step_s" in r)
  left = allowance_s - (time.perf_counter() - start)
  rounds = int(min(plan.step_rounds, max(1, left // max(per_round, 1e-9))))
  timing_error = None
  try:
    times = optimizer_step.interleaved_times(steps, params, grads,
                                             plan.step_repeats, rounds)
  except Exception as err:  # noqa: BLE001 - keep memory and compile times
    times, timing_error = {}, short_error(err)
  for row in rows:
    if row["variant"] in times:
      spread = timing.spread(times[row["variant"]])
      row.update(step_ms=1e3 * spread["median"], step_ms_min=1e3 * spread[
          "min"], step_ms_max=1e3 * spread["max"])
  add_ratios(rows, times)
  update_memory.in_mib(rows, ("total",))
  for row in rows:
    row["scale"] = scale.name
  return {"rows": rows, "skipped": skipped, "rounds": rounds,
          "timing_error": timing_error, "muon_leaves": muon_leaves,
          "pipelines": pipeline_summary(rows, times, muon_leaves)}


def run(plan: plan_lib.Plan, budget: Budget) -> dict[str, Any]:
  """The step section: every scale of the plan, in order.

  Args:
    plan: the scales, variants, repeats and rounds.
    budget: each scale gets its share of the section's time left.

  Returns:
    ``rows`` (all scales), ``scales`` (per scale: rounds, Muon leaves,
    pipeline summary), ``skipped`` and the ``settings``.
  """
  rows, scales, skipped = [], {}, []
  for i, scale in enumerate(plan.step_scales):
    shares = sum(s.share for s in plan.step_scales[i:])
    allowance = budget.section_left() * scale.share / shares
    if allowance < 5.0:
      skipped.append(scale.name)
      continue
    try:
      result = run_scale(scale, plan, allowance)
    except Exception as err:  # noqa: BLE001 - e.g. out of memory
      scales[scale.name] = {"error": short_error(err)}
      continue
    rows += result.pop("rows")
    skipped += [f"{scale.name} {v}" for v in result["skipped"]]
    scales[scale.name] = result
  return {"rows": rows, "scales": scales, "skipped": skipped, "settings": {
      "lr": LR, "repeats": plan.step_repeats, "max_rounds": plan.step_rounds,
      "pipelines": plan_lib.PIPELINES, "impls": plan_lib.STEP_IMPLS}}
