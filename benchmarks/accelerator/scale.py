"""Section 5, memory at scale: a real training step per optimizer, its peak.

Each optimizer of the plan trains ``configs/gpt2_small.py``'s model for a
few steps in a process of its own (``benchmarks.accelerator.scale_worker``),
``muon`` first: its worker picks the batch that fills the plan's share of
the device's memory (the CPU, which has no limit, keeps the config's), and
the others train at that batch. Each row gives the allocator's peak bytes
(``device.memory_stats()``; None on the CPU) and its ratio to ``muon``'s,
the compiled step's memory and the state's bytes. A ``muon`` worker that
runs out of memory is tried once more at 70% of the batch; optimizers are
left out, and recorded as skipped, when the section's time runs short.
This process never touches the device: the workers have it to themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator.record import ROOT, Budget, child_env

GiB = 2 ** 30
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory")
# The prefixes of a worker's output lines for its result and its batch.
RESULT = "RESULT "
FIT = "FIT "
# The workers' share of the device's memory (JAX's default is 75%).
MEM_FRACTION = "0.95"


def worker(plan: plan_lib.Plan, optimizer: str, batch: int, timeout: float
           ) -> tuple[dict[str, Any] | None, str, int | None]:
  """Runs one worker.

  Returns:
    Its result (None when it failed), its output's tail, and the batch it
    picked (its ``FIT`` line), if it picked one.
  """
  cmd = [sys.executable, "-m", "benchmarks.accelerator.scale_worker",
         "--config", str(ROOT / plan.scale_config), "--optimizer", optimizer,
         "--overrides", json.dumps(plan.scale_overrides),
         "--batch", str(batch), "--fill", str(plan.scale_fill),
         "--steps", str(plan.scale_steps)]
  env = child_env(XLA_PYTHON_CLIENT_MEM_FRACTION=MEM_FRACTION)
  try:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=max(timeout, 1.0))
    stdout, output = done.stdout, done.stdout + done.stderr
  except subprocess.TimeoutExpired as err:
    stdout = err.stdout if isinstance(err.stdout, str) else ""
    output = f"stopped after {timeout:.0f} s\n{stdout}"
  result, fitted = None, None
  for line in stdout.splitlines():
    if line.startswith(RESULT):
      result = json.loads(line[len(RESULT):])
    elif line.startswith(FIT):
      fitted = int(json.loads(line[len(FIT):])["batch"])
  return result, output[-1500:], fitted


def row_of(result: dict[str, Any]) -> dict[str, Any]:
  """A table row of a worker's result."""
  peak = result.get("peak_bytes_in_use")
  compiled = result["compiled"]
  return {"optimizer": result["optimizer"], "batch": result["batch"],
          "peak_GiB": peak / GiB if peak is not None else None,
          "peak_bytes_in_use": peak,
          "bytes_limit": result.get("bytes_limit"),
          "compiled_GiB": (compiled["total"] - compiled["aliased"]) / GiB,
          "state_MiB": result["state_bytes"] / plan_lib.MiB,
          "step_ms": 1e3 * result["step_s"], "fit": result.get("fit")}


def run(plan: plan_lib.Plan, budget: Budget) -> dict[str, Any]:
  """The memory-at-scale section.

  Args:
    plan: the config, optimizers, overrides, fill and steps.
    budget: optimizers are left out once the section's time runs short.

  Returns:
    ``rows`` (with ``peak_vs_muon``), ``errors``, ``skipped``, the first
    worker's ``environment`` and the ``settings``.
  """
  rows, errors, skipped = [], {}, []
  environment = None
  batch = 0  # the first worker picks it
  last_s = 0.0
  for optimizer in plan.scale_optimizers:
    if not budget.allows(max(last_s, 5.0)):
      skipped.append(optimizer)
      continue
    start = time.perf_counter()
    result, tail, fitted = worker(plan, optimizer, batch,
                                  budget.section_left())
    if (result is None and fitted and not batch
        and any(m in tail for m in OOM_MARKERS) and budget.allows(5.0)):
      errors[f"{optimizer} at batch {fitted}"] = tail
      result, tail, _ = worker(plan, optimizer, max(int(0.7 * fitted), 1),
                               budget.section_left())
    last_s = time.perf_counter() - start
    if result is None:
      errors[optimizer] = tail
      continue
    environment = environment or result.pop("environment", None)
    batch = batch or result["batch"]
    rows.append(row_of(result))
    print("  ", {k: rows[-1][k] for k in ("optimizer", "batch", "peak_GiB",
                                          "step_ms")}, flush=True)
  reference = next((r for r in rows if r["optimizer"] == "muon"), None)
  for row in rows:
    if reference and reference["peak_bytes_in_use"] and row[
        "peak_bytes_in_use"] is not None:
      row["peak_vs_muon"] = row["peak_bytes_in_use"] / reference[
          "peak_bytes_in_use"]
  return {"rows": rows, "errors": errors, "skipped": skipped,
          "environment": environment, "settings": {
              "config": plan.scale_config, "overrides": plan.scale_overrides,
              "fill": plan.scale_fill, "steps": plan.scale_steps,
              "mem_fraction": MEM_FRACTION}}

