"""Section 2, bandwidth: the fused momentum step per format against XLA's.

Each format of ``benchmarks.kernels.KERNELS`` (the presets' leaves) at each
shape: the median time of one momentum step over ``repeats`` calls of
``steps`` steps each (a ``fori_loop``, state and fresh momentum carried),
after a warm-up call, for XLA's path and the fused kernel; the bytes one
fused pass moves (read the codes, scales and gradient, write the codes,
scales and fresh momentum: ``benchmarks.kernels.fused_bytes``); GB/s; and
the share of the device's peak memory bandwidth (``null`` where the peak
is unknown, the CPU included). The smoke plan times XLA's path only: the
fused columns are ``null``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import kernels as kernel_bench
from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator.record import Budget, short_error


def measure(name: str, shape: tuple[int, int], plan: plan_lib.Plan,
            peak: float | None) -> dict[str, Any]:
  """One format at one shape: XLA's path, then the fused one.

  Args:
    name: a key of ``benchmarks.kernels.KERNELS``.
    shape: the leaf's shape.
    plan: repeats, steps and the fused impl (None: XLA only).
    peak: the device's peak bandwidth in bytes/s, or None.

  Returns:
    The row.
  """
  fmt = kernel_bench.KERNELS[name][0]
  moved = kernel_bench.fused_bytes(fmt, shape)
  g = jax.random.normal(jax.random.key(0), shape, jnp.float32)
  row: dict[str, Any] = {"format": name, "shape": f"{shape[0]}x{shape[1]}",
                         "bytes": moved}
  impls = {"xla": "xla", "fused": plan.bandwidth_fused}
  for column, impl in impls.items():
    if impl is None:
      row.update({f"{column}_ms": None, f"{column}_GBps": None,
                  f"{column}_pct_peak": None})
      continue
    try:
      seconds, _ = kernel_bench.time_steps(
          kernel_bench.stepper(name, impl, plan.bandwidth_steps),
          kernel_bench.random_state(fmt, shape), g, plan.bandwidth_repeats,
          plan.bandwidth_steps)
    except Exception as err:  # noqa: BLE001 - keep XLA's columns
      row[f"{column}_error"] = short_error(err)
      continue
    row[f"{column}_ms"] = seconds * 1e3
    row[f"{column}_GBps"] = moved / seconds / 1e9
    row[f"{column}_pct_peak"] = (100 * moved / seconds / peak if peak
                                 else None)
  if row.get("fused_ms") and row.get("xla_ms"):
    row["fused_over_xla"] = row["fused_ms"] / row["xla_ms"]
  return row


def run(plan: plan_lib.Plan, budget: Budget, peak: float | None
        ) -> dict[str, Any]:
  """The bandwidth section: one row per format and shape.

  Args:
    plan: the sizes.
    budget: rows are not started once the section's time is spent.
    peak: the device's peak bandwidth in bytes/s, or None.

  Returns:
    ``rows``, ``skipped`` and the ``settings``.
  """
  rows, skipped = [], []
  for name in plan.bandwidth_formats:  # the targets' formats come first
    for shape in plan.bandwidth_shapes:
      if not budget.allows(3.0):
        skipped.append(f"{name} {shape[0]}x{shape[1]}")
        continue
      row = measure(name, shape, plan, peak)
      rows.append(row)
      print("  ", {k: row.get(k) for k in (
          "format", "shape", "xla_ms", "fused_ms", "fused_pct_peak")},
          flush=True)
  return {"rows": rows, "skipped": skipped, "settings": {
      "repeats": plan.bandwidth_repeats, "steps": plan.bandwidth_steps,
      "fused": plan.bandwidth_fused, "peak_bandwidth_Bps": peak,
      "tile_elements": kernel_bench.gpu.TILE_ELEMENTS}}
