"""The check's sections that hold the accelerator: kernels, bandwidth,
step, profile.

Started by ``python -m benchmarks.accelerator`` as a process of its own,
so that the memory it takes on the device is given back before the
compare run and the memory-at-scale workers start. After each section it
writes the section's entry into the record in ``--out``.

Usage: python -m benchmarks.accelerator.device_worker --plan full
  --out DIR --sections kernels,bandwidth,step --budget-s 400
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import jax

from benchmarks import kernels as kernel_bench
from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator.record import (
    DEVICE_SECTIONS,
    Budget,
    Record,
    run_section,
)
from quantmuon_experiments import tables


def peak_bandwidth() -> float | None:
  """The device's peak memory bandwidth in bytes/s; None on the CPU or for
  a device kind ``benchmarks.kernels.PEAK_BANDWIDTH`` does not know."""
  if jax.devices()[0].platform == "cpu":
    return None
  return kernel_bench.peak_bandwidth(kernel_bench.device_name())


def runners(plan: plan_lib.Plan, budget: Budget
            ) -> dict[str, Callable[[], dict[str, Any]]]:
  """Each device section's function; the modules are imported when the
  section runs, so that one missing package fails only its section."""
  def kernels() -> dict[str, Any]:
    from benchmarks.accelerator import agreement
    return agreement.run(plan, budget)

  def bandwidth() -> dict[str, Any]:
    from benchmarks.accelerator import bandwidth as bandwidth_lib
    return bandwidth_lib.run(plan, budget, peak_bandwidth())

  def step() -> dict[str, Any]:
    from benchmarks.accelerator import step as step_lib
    return step_lib.run(plan, budget)

  def profile() -> dict[str, Any]:
    from benchmarks.accelerator import round_trips
    return round_trips.run(plan, budget)

  return {"kernels": kernels, "bandwidth": bandwidth, "step": step,
          "profile": profile}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--plan", choices=sorted(plan_lib.PLANS),
                      required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--sections", default=",".join(DEVICE_SECTIONS))
  parser.add_argument("--budget-s", type=float, required=True)
  args = parser.parse_args()
  plan = plan_lib.PLANS[args.plan]
  budget = Budget(args.budget_s)
  run = runners(plan, budget)
  for name in args.sections.split(","):
    print(f"== {name} ({budget.left():.0f} s left) ==", flush=True)
    entry = run_section(run[name], budget, plan.caps_s[name],
                        plan.min_s[name], tables.environment)
    Record.load(args.out).put(name, entry)


if __name__ == "__main__":
  main()
