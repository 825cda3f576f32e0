"""Section ``profile`` (``--profile``): do the conditionals copy to the host?

XLA on a GPU runs a ``lax.cond`` by copying its predicate to the host, which
may cost a round trip per leaf per step under the leafwise pipeline. This
section compiles one preset's update with the default pipeline and with the
chain (the plan's ``profile_scale``; with the persistent compilation cache
the step section's compiles are found again), traces a few steps of each
with ``jax.profiler`` and counts, per step, the events whose names say a
device-to-host copy (``d2h_per_step``) or a synchronization
(``syncs_per_step``). It runs last, in a worker of its own: a profiler that
fails takes no measurement with it.
"""

from __future__ import annotations

import glob
import re
import tempfile
import time
from typing import Any

import jax

from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator import step
from benchmarks.accelerator.record import Budget, short_error

PRESET = "muon_8bit"
CALLS = 3
# Event names of device-to-host copies (CUPTI's "Memcpy DtoH", XLA's
# "MemcpyD2H") and of host waits on the device.
D2H = re.compile(r"memcpy\s*(d2h|dtoh|device\s*to\s*host)|d2h|dtoh",
                 re.IGNORECASE)
SYNC = re.compile(r"synchroniz", re.IGNORECASE)


def count_events(trace_dir: str) -> dict[str, Any]:
  """Copies to the host and synchronizations in a trace directory.

  Args:
    trace_dir: where ``jax.profiler.trace`` wrote its ``*.xplane.pb``.

  Returns:
    ``d2h_events``, ``sync_events`` and a few of the names matched.
  """
  from jax.profiler import ProfileData
  counts = {"d2h_events": 0, "sync_events": 0}
  names: set[str] = set()
  for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
    for plane in ProfileData.from_file(path).planes:
      for line in plane.lines:
        for event in line.events:
          for key, pattern in (("d2h_events", D2H), ("sync_events", SYNC)):
            if pattern.search(event.name):
              counts[key] += 1
              names.add(event.name[:80])
  return {**counts, "names": sorted(names)[:10]}


def trace(variant: plan_lib.Variant, scale: str, params: Any, grads: Any
          ) -> dict[str, Any]:
  """One variant compiled, warmed up and traced for ``CALLS`` steps."""
  shapes = step.params_of(scale)
  row, compiled, tx = step.compile_variant(
      variant, shapes, scale.endswith(step.STACKED))
  state = tx.init(params)
  _, state = jax.block_until_ready(compiled(grads, state, params))
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(CALLS):
        _, state = jax.block_until_ready(compiled(grads, state, params))
    traced_s = time.perf_counter() - start
    counts = count_events(trace_dir)
  return {"variant": variant.name, "scale": scale,
          "conditionals": row["conditionals"],
          "d2h_per_step": counts["d2h_events"] / CALLS,
          "syncs_per_step": counts["sync_events"] / CALLS,
          "traced_step_ms": 1e3 * traced_s / CALLS,
          "event_names": counts["names"]}


def run(plan: plan_lib.Plan, budget: Budget) -> dict[str, Any]:
  """The profile section: the default pipeline and the chain, traced.

  Args:
    plan: ``profile_scale``.
    budget: the chain is left out when the section's time is spent.

  Returns:
    ``rows`` (one per pipeline), ``skipped`` and the ``settings``.
  """
  scale = plan.profile_scale
  params, grads = step.materialize(step.params_of(scale))
  rows, skipped = [], []
  for pipeline in (plan_lib.DEFAULT_PIPELINE, "chain"):
    variant = plan_lib.Variant(PRESET, pipeline)
    if not budget.allows(5.0):
      skipped.append(variant.name)
      continue
    try:
      rows.append(trace(variant, scale, params, grads))
    except Exception as err:  # noqa: BLE001 - keep the other pipeline
      rows.append({"variant": variant.name, "scale": scale,
                   "error": short_error(err)})
    print("  ", rows[-1], flush=True)
  return {"rows": rows, "skipped": skipped,
          "settings": {"preset": PRESET, "scale": scale, "calls": CALLS}}
