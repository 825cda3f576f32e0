"""Section 1, kernels: the Pallas path against XLA's on this device.

For every preset with quantized momentum, at a square leaf and a ragged
one, the preset's own momentum step (its format at that shape, its
accumulation, normalization and Nesterov setting) runs ``steps`` times with
``impl="xla"`` and with the kernel (``pallas`` on a device,
``pallas_interpret`` on the CPU). Each step starts both paths from XLA's
state of the step before and feeds them the same fresh gradient, so every
disagreement is that step's own:

- ``codes_differ``: code bytes that differ (rounding ties: the kernel
  divides and contracts differently), over all steps, of ``codes_total``;
- ``other_differ``: scale and factor elements that differ, and
  ``other_max_rel_diff`` their largest relative difference (the last bits
  of the fresh momentum reach its scales);
- ``fresh_max_rel_diff``: the largest difference of the fresh momentum
  (the update the step emits) over the largest magnitude of XLA's;
  ``updates_within_tol`` says whether it is at most ``UPDATE_TOL``;
- ``kernel_calls``: the kernel custom calls in the lowered program
  (Triton's on a GPU, Mosaic's on a TPU, none in interpret mode), the
  evidence that the kernel path, not XLA's, ran.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import quantmuon as qm
from benchmarks import kernels as kernel_bench
from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator.record import Budget, short_error
from quantmuon import presets
from quantmuon.kernels import TRITON_CALL, dispatch

UPDATE_TOL = 1e-5
# Custom-call targets of the kernels, by backend.
KERNEL_CALLS = {"triton": TRITON_CALL,
                "mosaic_tpu": "tpu_custom_call", "mosaic_gpu": "mosaic_gpu"}


def momentum_settings(preset: str, shape: tuple[int, int]
                      ) -> tuple[qm.formats.Format, dict[str, Any]]:
  """A preset's momentum format at ``shape`` and its step's options.

  Args:
    preset: a key of ``plan.QUANTIZED``.
    shape: the leaf's shape (a preset's format can depend on it).

  Returns:
    ``(format, {"beta", "accumulation", "normalize", "nesterov"})``.
  """
  fn, kwargs = plan_lib.QUANTIZED[preset]
  params = {"w": jax.ShapeDtypeStruct(shape, jnp.float32)}
  state = jax.eval_shape(fn(1e-3, min_size=1, **kwargs).init, params)
  stored = [s for s in jax.tree.leaves(state, is_leaf=qm.formats.is_stored)
            if qm.formats.is_stored(s)]
  settings = presets.twin_settings(fn, 1e-3, **kwargs)
  return stored[0].format, {k: getattr(settings, k) for k in (
      "beta", "accumulation", "normalize", "nesterov")}


def kernel_calls(text: str) -> dict[str, int]:
  """How often each kernel custom call occurs in a lowered program."""
  return {name: text.count(target) for name, target in KERNEL_CALLS.items()
          if target in text}


def _split(stored: Any) -> tuple[list[jax.Array], list[jax.Array]]:
  """A stored value's code arrays (uint8) and its other arrays."""
  leaves = jax.tree.leaves(stored)
  return ([x for x in leaves if x.dtype == jnp.uint8],
          [x for x in leaves if x.dtype != jnp.uint8])


def _rel_diff(ref: jax.Array, out: jax.Array) -> float:
  """``max |out - ref|`` over ``max |ref|`` (1 when ``ref`` is all zero)."""
  ref, out = ref.astype(jnp.float32), out.astype(jnp.float32)
  return float(jnp.max(jnp.abs(out - ref))) / (
      float(jnp.max(jnp.abs(ref))) or 1.0)


def compare_paths(fmt: qm.formats.Format, options: dict[str, Any],
                  shape: tuple[int, int], steps: int, kernel_impl: str
                  ) -> dict[str, Any]:
  """``steps`` momentum steps by XLA and by the kernel, compared.

  Args:
    fmt: the stored momentum's format.
    options: ``beta``, ``accumulation``, ``normalize``, ``nesterov``.
    shape: the leaf's shape.
    steps: steps compared.
    kernel_impl: ``pallas`` or ``pallas_interpret``.

  Returns:
    The row's measured columns (see the module docstring).
  """
  def step(stored, g, count, impl):
    return dispatch.momentum_step(stored, g, count=count,
                                  key=jax.random.key(0), impl=impl,
                                  **options)

  paths = {impl: jax.jit(functools.partial(step, impl=impl))
           for impl in ("xla", kernel_impl)}
  state = kernel_bench.random_state(fmt, shape)
  count = jnp.asarray(1, jnp.int32)
  grad = jax.random.normal(jax.random.key(10), shape, jnp.float32)
  row: dict[str, Any] = {"compile_s": {}}
  compiled = {}
  for impl, fn in paths.items():
    start = time.perf_counter()
    lowered = fn.lower(state, grad, count)
    if impl == kernel_impl:
      row["kernel_calls"] = kernel_calls(lowered.as_text())
    compiled[impl] = lowered.compile()
    row["compile_s"][impl] = time.perf_counter() - start
  codes_differ, other_differ, rel, absolute = [], [], [], []
  other_rel = [0.0]
  codes_total = 0
  for k in range(steps):
    grad = jax.random.normal(jax.random.key(11 + k), shape, jnp.float32)
    count = jnp.asarray(k + 1, jnp.int32)
    ref_fresh, ref_state = compiled["xla"](state, grad, count)
    fresh, out_state = compiled[kernel_impl](state, grad, count)
    (ref_codes, ref_rest), (codes, rest) = _split(ref_state), _split(
        out_state)
    codes_total += sum(int(a.size) for a in ref_codes)
    codes_differ.append(sum(int(jnp.sum(a != b))
                            for a, b in zip(ref_codes, codes, strict=True)))
    other_differ.append(sum(int(jnp.sum(a != b))
                            for a, b in zip(ref_rest, rest, strict=True)))
    other_rel.extend(_rel_diff(a, b) for a, b in zip(ref_rest, rest,
                                                     strict=True))
    absolute.append(float(jnp.max(jnp.abs(fresh - ref_fresh))))
    rel.append(_rel_diff(ref_fresh, fresh))
    state = ref_state
  row.update(
      kernel_ran=bool(row.get("kernel_calls")), codes_total=codes_total,
      codes_differ=int(np.sum(codes_differ)),
      codes_differ_per_step=codes_differ,
      codes_differ_fraction=float(np.sum(codes_differ)) / max(codes_total, 1),
      other_differ=int(np.sum(other_differ)),
      other_max_rel_diff=max(other_rel),
      fresh_max_abs_diff=max(absolute), fresh_max_rel_diff=max(rel),
      updates_within_tol=max(rel) <= UPDATE_TOL)
  return row


def run(plan: plan_lib.Plan, budget: Budget) -> dict[str, Any]:
  """The kernels section: one row per preset and shape.

  Args:
    plan: the sizes.
    budget: items are not started once the section's time is spent.

  Returns:
    ``rows``, ``skipped`` (items left out) and the ``settings``.
  """
  rows, skipped = [], []
  for shape in plan.kernel_shapes:
    for preset in plan.kernel_presets:
      item = f"{preset} {shape[0]}x{shape[1]}"
      if not budget.allows(2.0):
        skipped.append(item)
        continue
      row: dict[str, Any] = {"preset": preset,
                             "shape": f"{shape[0]}x{shape[1]}"}
      try:
        fmt, options = momentum_settings(preset, shape)
        row["format"] = repr(fmt)
        row["family"] = dispatch.family(fmt, shape).__module__.rsplit(
            ".", 1)[-1]
        row.update(compare_paths(fmt, options, shape, plan.kernel_steps,
                                 plan.kernel_impl))
      except Exception as err:  # noqa: BLE001 - keep the other rows
        row["error"] = short_error(err)
      rows.append(row)
      print("  ", {k: row.get(k) for k in (
          "preset", "shape", "codes_differ", "other_differ",
          "fresh_max_rel_diff", "kernel_calls", "error")}, flush=True)
  return {"rows": rows, "skipped": skipped, "settings": {
      "impl": plan.kernel_impl, "steps": plan.kernel_steps,
      "shapes": plan.kernel_shapes, "update_tol": UPDATE_TOL}}
