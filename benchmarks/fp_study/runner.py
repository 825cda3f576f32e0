"""The runs: Adam and Muon with each component rounded, over seeds and T.

The library's transforms: ``quantize_gradients`` (G) first, ``snap_params``
(W) last (weights start on the grid); ``quantize_state`` around
``optax.scale_by_adam``, one nested wrapper per moment (M, V), and around
Muon's momentum (M); "all" quantizes every component. Muon is
``scale_by_shape(consistent_rms=0.2)`` after Newton-Schulz, so that its
per-entry step matches Adam's and both share one learning rate, chosen per
problem at fp32 from ``LR_GRID`` (best geometric mean of the two
optimizers' metrics, at the smallest T) and scaled as ``lr * sqrt(T0 /
T)``, the step size of the analysis (no decay: a schedule that decays to 0
freezes any run late under round-to-nearest). Formats have 8 exponent
bits; the primary rounding is to nearest (the paper's deterministic
relative error), with stochastic rounding of every component at one T as a
sensitivity check.

The metric of a run is the run average of the gradient norm on the
problem's full batch, at ``CHECKPOINTS`` evenly spaced steps (the theory
bounds the average or the minimum over the run, not the last iterate).
Each setting runs over the same seeds (initial weights and minibatches);
runs are vmapped over settings and seeds and scanned over steps, one
compilation per problem, optimizer and T.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import quantmuon as qm
from benchmarks.fp_study.problems import Problem
from quantmuon import formats

EXPONENT_BITS = 8
FULL = 23  # float32's mantissa: rounding to it changes nothing
BITS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12)
STEPS = (256, 512, 1024, 2048, 4096)
GROWTHS = (0.5, 1.0)  # log schedules 1 + floor(g log2(1 + t)), uncapped
LR_GRID = (0.01, 0.03, 0.1, 0.3)
CHECKPOINTS = 16
PARTS = "GWMV"
COMPONENTS = {"adam": ("G", "W", "M", "V", "all"),
              "muon": ("G", "W", "M", "all")}


def optimizer(name: str, widths: dict[str, Callable], lr: float,
              rounding: str = "nearest") -> optax.GradientTransformation:
  """Adam or Muon with every component rounded to its (traced) width.

  Args:
    name: ``adam`` or ``muon``.
    widths: component letter -> function of the step count giving the
      mantissa bits (23 leaves the component in float32).
    lr: the (constant) learning rate.
    rounding: ``nearest`` or ``stochastic``.

  Returns:
    The chain: gradients -> moments -> (Newton-Schulz) -> lr -> weights.
  """
  fmt = formats.FloatingPoint(EXPONENT_BITS, FULL, rounding)
  chain = [qm.fp.quantize_gradients(fmt, mantissa_bits=widths["G"])]
  if name == "adam":
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    adam = qm.quantize_state(adam, {"mu": fmt}, min_size=0,
                             mantissa_bits=widths["M"])
    chain.append(qm.quantize_state(adam, {"nu": fmt}, min_size=0,
                                   mantissa_bits=widths["V"]))
  else:
    momentum = qm.transforms.scale_by_quantized_momentum(
        beta=0.95, nesterov=True, momentum_format=formats.Float(),
        accumulation="ema", min_size=0)
    chain += [qm.quantize_state(momentum, fmt, min_size=0,
                                mantissa_bits=widths["M"]),
              qm.transforms.orthogonalize(),
              qm.transforms.scale_by_shape(consistent_rms=0.2)]
  chain += [optax.scale_by_learning_rate(lr),
            qm.fp.snap_params(fmt, mantissa_bits=widths["W"], seed=1)]
  return optax.chain(*chain)


def schedule(growth: float, steps: int) -> np.ndarray:
  """``1 + floor(growth * log2(1 + t))`` bits for t < steps (int32)."""
  sched = qm.fp.log_mantissa_schedule(1, FULL, growth=growth)
  return np.asarray(sched(jnp.arange(steps)), np.int32)


def settings_for(opt: str, steps: int, bits: Sequence[int] = BITS,
                 growths: Sequence[float] = GROWTHS
                 ) -> list[tuple[str, str, np.ndarray]]:
  """(component, setting, widths[4, steps]) for every run of ``opt``.

  Every component at every constant width, and "all" under each log
  schedule; "fp32" (component "none") first.
  """
  def widths(comp: str, seq: np.ndarray) -> np.ndarray:
    out = np.full((4, steps), FULL, np.int32)
    for i, part in enumerate(PARTS):
      if comp in ("all", part):
        out[i] = seq
    return out

  out = [("none", "fp32", widths("none", np.zeros(steps, np.int32)))]
  for comp in COMPONENTS[opt]:
    for b in bits:
      out.append((comp, str(b), widths(comp, np.full(steps, b, np.int32))))
  for g in growths:
    out.append(("all", f"log{g:g}", widths("all", schedule(g, steps))))
  return out


def run_batch(problem: Problem, opt: str, lr: float, widths: np.ndarray,
              seeds: np.ndarray, rounding: str = "nearest"
              ) -> tuple[np.ndarray, np.ndarray]:
  """Trains one run per row of ``widths`` x ``seeds``; vmapped, scanned.

  Args:
    problem: the problem.
    opt: ``adam`` or ``muon``.
    lr: the learning rate.
    widths: int32 [settings, 4, steps], the mantissa bits of G, W, M, V.
    seeds: the seeds.
    rounding: ``nearest`` or ``stochastic``.

  Returns:
    (run-average full-batch gradient norm, final full-batch loss), each
    [settings, seeds].
  """
  steps = widths.shape[-1]
  chunk = steps // CHECKPOINTS
  fmt = formats.FloatingPoint(EXPONENT_BITS, FULL)

  def one(seed, w):
    def width(i):
      return lambda count: w[i, jnp.minimum(count, steps - 1)]
    tx = optimizer(opt, {p: width(i) for i, p in enumerate(PARTS)}, lr,
                   rounding)
    key = jax.random.key(seed)
    params = problem.init(jax.random.fold_in(key, 0))
    params = jax.tree.map(
        lambda p: fmt.round(p, mantissa_bits=w[1, 0]), params)

    def step(carry, t):
      params, state = carry
      batch = problem.batch(jax.random.fold_in(key, t + 1))
      grads = jax.grad(problem.loss)(params, batch)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    def checkpoint(carry, c):
      carry, _ = jax.lax.scan(step, carry, c * chunk + jnp.arange(chunk))
      grads = jax.grad(problem.loss)(carry[0], problem.full)
      return carry, optax.global_norm(grads)

    (params, _), norms = jax.lax.scan(
        checkpoint, (params, tx.init(params)), jnp.arange(CHECKPOINTS))
    return jnp.mean(norms), problem.loss(params, problem.full)

  runs = jnp.asarray(np.repeat(widths, len(seeds), axis=0))
  run_seeds = jnp.asarray(np.tile(seeds, len(widths)))
  metric, loss = jax.jit(jax.vmap(one))(run_seeds, runs)
  shape = (len(widths), len(seeds))
  return (np.asarray(metric).reshape(shape), np.asarray(loss).reshape(shape))


def tune(problem: Problem, steps: int, seeds: np.ndarray,
         grid: Sequence[float] = LR_GRID) -> tuple[float, dict[str, Any]]:
  """The shared fp32 learning rate: the best geometric mean of both
  optimizers' metrics at ``steps`` over ``grid``."""
  fp32 = np.full((1, 4, steps), FULL, np.int32)
  scores = {}
  for lr in grid:
    scores[lr] = {opt: float(np.mean(np.log(
        run_batch(problem, opt, lr, fp32, seeds)[0]))) for opt in COMPONENTS}
  best = min(grid, key=lambda lr: sum(scores[lr].values()))
  return best, {str(lr): s for lr, s in scores.items()}


def experiment(problems: Sequence[Problem], seeds: int,
               steps: Sequence[int] = STEPS, bits: Sequence[int] = BITS,
               growths: Sequence[float] = GROWTHS,
               stochastic_steps: int | None = 1024,
               lr_grid: Sequence[float] = LR_GRID) -> dict[str, Any]:
  """Every problem x optimizer x T x component x setting, over seeds.

  Args:
    problems: the problems.
    seeds: how many seeds.
    steps: the values of T.
    bits: the constant widths.
    growths: the log schedules' growth rates.
    stochastic_steps: the T of the stochastic-rounding check (None: none).
    lr_grid: the learning rates tried at fp32.

  Returns:
    ``{"learning_rates", "tuning", "records"}``: one record per problem,
    optimizer, rounding, T, component and setting, with the metric and
    final loss per seed.
  """
  seed_ids = np.arange(seeds)
  records, rates, tuning = [], {}, {}
  t0 = min(steps)
  for problem in problems:
    start = time.perf_counter()
    lr0, tuning[problem.name] = tune(problem, t0, seed_ids, lr_grid)
    rates[problem.name] = lr0
    print(f"{problem.name:>11} lr {lr0:g} (at T={t0}), "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    runs = [("nearest", t) for t in steps]
    if stochastic_steps is not None:
      runs.append(("stochastic", stochastic_steps))
    for opt in COMPONENTS:
      for rounding, t in runs:
        start = time.perf_counter()
        lr = lr0 * math.sqrt(t0 / t)
        settings = settings_for(opt, t, bits, growths)
        widths = np.stack([s[2] for s in settings])
        metric, loss = run_batch(problem, opt, lr, widths, seed_ids,
                                 rounding)
        for (comp, setting, w), m_row, l_row in zip(settings, metric, loss,
                                                    strict=True):
          records.append({
              "problem": problem.name, "optimizer": opt,
              "rounding": rounding, "steps": t, "component": comp,
              "setting": setting, "learning_rate": lr,
              "mean_bits": float(np.mean(
                  w[PARTS.index(comp) if comp in PARTS else 0])),
              "metric": m_row.tolist(), "loss": l_row.tolist()})
        print(f"{problem.name:>11} {opt} {rounding} T={t}: "
              f"{len(settings)} settings x {seeds} seeds, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
  return {"learning_rates": rates, "tuning": tuning, "records": records}
