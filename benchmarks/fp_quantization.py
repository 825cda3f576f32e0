"""Floating-point-quantized Adam and Muon (arXiv 2510.21314), as it claims.

"A Convergence Analysis of Adaptive Optimizers under Floating-point
Quantization" rounds the gradients (G), weights (W), first moments (M) and
second moments (V) to a float format with M mantissa bits (relative error
q = Theta(2^-M)) and proves that Adam keeps its rate only with q_G, q_M =
O(1/T) and q_W, q_V = O(1/T^2), Muon with every q = O(T^-1/2), so that the
mantissa needs to grow only like log T. Its findings, tested here as they
are stated, as functions of the number of steps T:

- (a) the error falls as mantissa bits grow (reported separately for
  components that are insensitive at every width and for the others);
- (b) Muon tolerates fewer bits: the width Muon needs grows more slowly
  with log2 T than the width Adam needs, component by component;
- (c) Adam is most sensitive to its weights and second moments: they need
  the most bits;
- (d) a mantissa growing like log t suffices: a log schedule does at least
  as well as a constant width of the same average bits, at every T.

Setup. The library's transforms: ``quantize_gradients`` (G) first,
``snap_params`` (W) last (weights start on the grid); ``quantize_state``
around ``optax.scale_by_adam``, one nested wrapper per moment (M, V), and
around Muon's momentum (M); "all" quantizes every component. Muon is
``scale_by_shape(consistent_rms=0.2)`` after Newton-Schulz, so that its
per-entry step matches Adam's and both share one learning rate, chosen per
problem at fp32 from ``LR_GRID`` (best geometric mean of the two
optimizers' metrics, at the smallest T) and scaled as ``lr * sqrt(T0 /
T)``, the step size of the analysis (no decay: a schedule that decays to 0
freezes any run late under round-to-nearest). Formats have 8 exponent
bits; the primary rounding is to nearest (the paper's deterministic
relative error), with stochastic rounding of every component at one T as a
sensitivity check.

Problems: the extended Rosenbrock function of the 32 pairs of an 8 x 8
matrix, every entry starting uniformly in [-1.5, 1.5] (distinct rows, so
the gradient has full rank); a tanh MLP (65 -> 16 -> 10, the bias folded
into an input of ones) with L2 1e-3 on scikit-learn's digits, minibatches
of 32. The metric is the run average of the gradient norm (Rosenbrock: the
full gradient; MLP: on a fixed set of 512 images), at ``CHECKPOINTS``
evenly spaced steps (the theory bounds the average or the
minimum over the run, not the last iterate). Each setting runs over the
same seeds (initial weights and minibatches); runs are vmapped over
settings and seeds and scanned over steps, one compilation per problem,
optimizer and T.

Statistics. A width *matches* full precision when the geometric mean over
seeds of its metric is at most ``TOLERANCE`` times the fp32 run's (the
same seeds, so the ratio is paired). The needed width c*(T) is the
smallest width from which every wider width matches. Confidence intervals
(95%) come from ``BOOTSTRAP`` resamples of the seeds, recomputing every
quantity (c*, slopes, differences) in each resample.

Writes ``benchmarks/results/fp_quantization.json`` and ``.png``.

Usage (from the repository root):
  python -m benchmarks.fp_quantization [--seeds 10] [--steps 256,...,4096]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import quantmuon as qm
from quantmuon import formats, tables

RESULTS = Path(__file__).resolve().parent / "results"
EXPONENT_BITS = 8
FULL = 23  # float32's mantissa: rounding to it changes nothing
BITS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12)
STEPS = (256, 512, 1024, 2048, 4096)
GROWTHS = (0.5, 1.0)  # log schedules 1 + floor(g log2(1 + t)), uncapped
LR_GRID = (0.01, 0.03, 0.1, 0.3)
CHECKPOINTS = 16
TOLERANCE = 1.25
BOOTSTRAP = 1000
PARTS = "GWMV"
COMPONENTS = {"adam": ("G", "W", "M", "V", "all"),
              "muon": ("G", "W", "M", "all")}
COLORS = {"G": "tab:blue", "W": "tab:orange", "M": "tab:green",
          "V": "tab:red", "all": "tab:purple"}


@dataclasses.dataclass(frozen=True)
class Problem:
  """A training problem.

  Attributes:
    name: shown in the tables.
    init: key -> parameters.
    loss: (parameters, batch) -> scalar.
    batch: key -> a minibatch (None for deterministic problems).
    full: the batch the metric is measured on.
  """
  name: str
  init: Callable[[jax.Array], Any]
  loss: Callable[[Any, Any], jax.Array]
  batch: Callable[[jax.Array], Any]
  full: Any


def rosenbrock() -> Problem:
  """The extended Rosenbrock function of an 8 x 8 matrix.

  ``f(X) = sum_i 100 (y_i - x_i^2)^2 + (1 - x_i)^2`` over the 32 pairs
  ``(x_i, y_i)`` of consecutive entries of ``vec(X)``; the minimum is at
  all ones. Entries start uniformly in [-1.5, 1.5].
  """
  def init(key):
    return {"X": jax.random.uniform(key, (8, 8), minval=-1.5, maxval=1.5)}

  def loss(params, batch):
    del batch
    x, y = params["X"].reshape(-1, 2).T
    return jnp.sum(100.0 * (y - x ** 2) ** 2 + (1.0 - x) ** 2)

  return Problem("rosenbrock", init, loss, lambda key: None, None)


def digits_mlp(batch_size: int = 32, hidden: int = 16,
               l2: float = 1e-3, evaluate: int = 512) -> Problem:
  """A tanh MLP on scikit-learn's bundled 8 x 8 digits (1797 images).

  Pixels scaled to [0, 1] with a constant 1 appended (the first layer's
  bias); both weights are matrices. The L2 term keeps the optimum's
  gradient norm from vanishing. The metric is measured on a fixed set of
  ``evaluate`` images (the first ones).
  """
  from sklearn.datasets import load_digits

  data = load_digits()
  x = np.concatenate([data.data / 16.0, np.ones((len(data.data), 1))], 1)
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(data.target, jnp.int32)

  def init(key):
    k1, k2 = jax.random.split(key)
    return {"W1": jax.random.normal(k1, (x.shape[1], hidden))
                  / math.sqrt(x.shape[1]),
            "W2": jax.random.normal(k2, (hidden, 10)) / math.sqrt(hidden)}

  def loss(params, batch):
    xb, yb = batch
    logits = jnp.tanh(xb @ params["W1"]) @ params["W2"]
    penalty = sum(jnp.sum(w ** 2) for w in jax.tree.leaves(params))
    return (optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            + 0.5 * l2 * penalty)

  def batch(key):
    idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
    return x[idx], y[idx]

  return Problem("digits_mlp", init, loss, batch,
                 (x[:evaluate], y[:evaluate]))


PROBLEMS = {"rosenbrock": rosenbrock, "digits_mlp": digits_mlp}


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


class Table:
  """Log metrics per (problem, optimizer, rounding, T), bootstrapped.

  ``logs[key][setting]`` is the log metric per seed; ``gm(key, setting,
  idx)`` the mean over the seeds ``idx`` (one row per resample).
  """

  def __init__(self, records: Sequence[dict[str, Any]], resamples: int,
               seed: int = 0):
    self.logs: dict[tuple, dict[tuple[str, str], np.ndarray]] = {}
    self.bits: dict[tuple, dict[str, float]] = {}
    for r in records:
      key = (r["problem"], r["optimizer"], r["rounding"], r["steps"])
      self.logs.setdefault(key, {})[(r["component"], r["setting"])] = \
          np.log(np.maximum(np.asarray(r["metric"], np.float64), 1e-30))
      self.bits.setdefault(key, {})[r["setting"]] = r["mean_bits"]
    n = len(next(iter(next(iter(self.logs.values())).values())))
    rng = np.random.default_rng(seed)
    # Row 0 is the sample itself; the others resample the seeds.
    self.idx = np.concatenate([np.arange(n)[None],
                               rng.integers(0, n, (resamples, n))])

  def gm(self, key: tuple, comp: str, setting: str) -> np.ndarray:
    """log geometric mean of the metric, per resample."""
    return self.logs[key][(comp, setting)][self.idx].mean(axis=1)

  def ratio(self, key: tuple, comp: str, setting: str) -> np.ndarray:
    """log(metric / fp32 metric), per resample (paired by seed)."""
    return self.gm(key, comp, setting) - self.gm(key, "none", "fp32")

  def c_star(self, key: tuple, comp: str, bits: Sequence[int]
             ) -> np.ndarray:
    """The smallest width from which every wider one matches, per
    resample; ``bits[-1] + 2`` when the widest does not match."""
    ok = np.stack([self.ratio(key, comp, str(b)) <= math.log(TOLERANCE)
                   for b in bits], axis=1)  # [resamples, bits]
    tail = np.flip(np.cumprod(np.flip(ok, 1), 1), 1).astype(bool)
    first = np.where(tail.any(1), np.argmax(tail, 1), len(bits))
    values = np.asarray(list(bits) + [bits[-1] + 2])
    return values[first]


def ci(x: np.ndarray) -> dict[str, float]:
  """The sample value (row 0) and the 95% bootstrap interval."""
  x = np.asarray(x, np.float64)
  lo, hi = np.percentile(x[1:], [2.5, 97.5]) if len(x) > 1 else (x[0],) * 2
  return {"value": float(x[0]), "lo": float(lo), "hi": float(hi)}


def slope(ts: Sequence[int], ys: np.ndarray) -> np.ndarray:
  """Least-squares slope of ``ys`` [resamples, len(ts)] on log2 T."""
  x = np.log2(np.asarray(ts, np.float64))
  x = x - x.mean()
  return (ys - ys.mean(1, keepdims=True)) @ x / (x @ x)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Spearman correlation of ``x`` [n] with each row of ``y``."""
  def rank(a):
    return np.argsort(np.argsort(a, axis=-1), axis=-1).astype(np.float64)
  rx, ry = rank(x), rank(y)
  rx = rx - rx.mean()
  ry = ry - ry.mean(-1, keepdims=True)
  den = np.sqrt((rx @ rx) * np.sum(ry * ry, -1))
  return np.where(den > 0, ry @ rx / np.where(den > 0, den, 1.0), 0.0)


def analyse(data: dict[str, Any], resamples: int = BOOTSTRAP
            ) -> dict[str, Any]:
  """Decides findings (a)-(d) from the records (see the module doc)."""
  records = data["records"]
  table = Table(records, resamples)
  problems = sorted({r["problem"] for r in records})
  near = sorted({r["steps"] for r in records if r["rounding"] == "nearest"})
  bits = sorted({int(r["setting"]) for r in records
                 if r["setting"].isdigit()})
  big = near[-1]
  cs = {(p, o, c): np.stack([table.c_star((p, o, "nearest", t), c, bits)
                             for t in near], 1)
        for p in problems for o in COMPONENTS for c in COMPONENTS[o]}
  out: dict[str, Any] = {"tolerance": TOLERANCE, "steps": near,
                         "bits": bits, "resamples": resamples,
                         "widest": bits[-1], "c_star": [], "a": {},
                         "b": {}, "c": {}, "d": {}, "stochastic": []}
  for (p, o, c), v in cs.items():
    out["c_star"].append({"problem": p, "optimizer": o, "component": c,
                          "by_steps": {str(t): ci(v[:, i])
                                       for i, t in enumerate(near)},
                          "slope": ci(slope(near, v))})

  # (a) at the largest T: insensitive rows, and the others' trend.
  rows = []
  for p in problems:
    for o in COMPONENTS:
      for c in COMPONENTS[o]:
        key = (p, o, "nearest", big)
        logs = np.stack([table.ratio(key, c, str(b)) for b in bits], 1)
        rho = spearman(np.asarray(bits, np.float64), logs)
        insensitive = bool(np.all(logs[0] <= math.log(TOLERANCE)))
        rows.append({"problem": p, "optimizer": o, "component": c,
                     "insensitive": insensitive, "spearman": ci(rho),
                     "ratio_at_1": math.exp(logs[0, 0]),
                     "falls": (not insensitive) and ci(rho)["hi"] < 0})
  sensitive = [r for r in rows if not r["insensitive"]]
  out["a"] = {"rows": rows, "steps": big,
              "insensitive": len(rows) - len(sensitive),
              "sensitive": len(sensitive),
              "falls": sum(r["falls"] for r in sensitive),
              "verdict": _verdict([r["falls"] for r in sensitive])}

  # (b) growth of c* with log2 T, Adam against Muon.
  rows = []
  for p in problems:
    for c in COMPONENTS["muon"]:
      a, m = cs[(p, "adam", c)], cs[(p, "muon", c)]
      diff = slope(near, a) - slope(near, m)
      level = a.mean(1) - m.mean(1)
      rows.append({"problem": p, "component": c,
                   "adam_slope": ci(slope(near, a)),
                   "muon_slope": ci(slope(near, m)),
                   "slope_difference": ci(diff),
                   "level_difference": ci(level),
                   "holds": ci(diff)["lo"] > 0,
                   "contradicted": ci(diff)["hi"] < 0})
  out["b"] = {"rows": rows, "verdict": _verdict(
      [r["holds"] or (False if r["contradicted"] else None)
       for r in rows])}

  # (c) Adam: W and V need more bits (averaged over T) than G and M.
  rows = []
  for p in problems:
    mean = {c: cs[(p, "adam", c)].mean(1) for c in PARTS}
    gap = np.minimum(mean["W"], mean["V"]) - np.maximum(mean["G"],
                                                        mean["M"])
    rows.append({"problem": p, "mean_c_star": {c: ci(v)
                                               for c, v in mean.items()},
                 "gap": ci(gap), "holds": ci(gap)["lo"] > 0,
                 "contradicted": ci(gap)["hi"] < 0})
  out["c"] = {"rows": rows, "verdict": _verdict(
      [r["holds"] or (False if r["contradicted"] else None)
       for r in rows])}

  # (d) each log schedule against constant widths of its average bits.
  rows = []
  for p in problems:
    for o in COMPONENTS:
      for g in sorted({r["setting"] for r in records
                       if r["setting"].startswith("log")}):
        diffs = {}
        for t in near:
          key = (p, o, "nearest", t)
          mean_bits = table.bits[key][g]
          if not bits[0] <= mean_bits <= bits[-1]:
            continue
          const = np.stack([table.ratio(key, "all", str(b))
                            for b in bits], 1)
          at = np.array([np.interp(mean_bits, bits, row) for row in const])
          d = table.ratio(key, "all", g) - at
          diffs[str(t)] = {"mean_bits": mean_bits, "log_ratio": ci(d),
                           "schedule_ratio": math.exp(
                               table.ratio(key, "all", g)[0])}
        worse = sum(v["log_ratio"]["lo"] > 0 for v in diffs.values())
        better = sum(v["log_ratio"]["hi"] < 0 for v in diffs.values())
        rows.append({"problem": p, "optimizer": o, "schedule": g,
                     "by_steps": diffs, "better": better, "worse": worse,
                     "holds": None if not diffs else worse == 0})
  out["d"] = {"rows": rows, "verdict": _verdict([r["holds"] for r in rows])}

  # Stochastic rounding: c* at its T, against round-to-nearest.
  for t in sorted({r["steps"] for r in records
                   if r["rounding"] == "stochastic"}):
    for p in problems:
      for o in COMPONENTS:
        for c in COMPONENTS[o]:
          sr = table.c_star((p, o, "stochastic", t), c, bits)
          rn = table.c_star((p, o, "nearest", t), c, bits)
          out["stochastic"].append({"problem": p, "optimizer": o,
                                    "component": c, "steps": t,
                                    "stochastic": ci(sr), "nearest": ci(rn),
                                    "difference": ci(sr - rn)})
  return out


def _verdict(holds: Sequence[bool | None]) -> str:
  known = [h for h in holds if h is not None]
  if not known:
    return "not resolved (every interval includes no effect)"
  if all(known) and len(known) == len(holds):
    return "reproduces"
  if all(known):
    return "reproduces where resolved"
  return "partly reproduces" if any(known) else "does not reproduce"


def _w(c: float, widest: int) -> str:
  return f">{widest}" if c > widest else f"{c:g}"


def _iv(x: dict[str, float], fmt: str = "{:+.2f}") -> str:
  return (fmt.format(x["value"]) + " [" + fmt.format(x["lo"]) + ", "
          + fmt.format(x["hi"]) + "]")


def c_star_table(v: dict[str, Any]) -> str:
  """Markdown: c*(T) per row, and its slope on log2 T with its CI."""
  widest = v["widest"]
  header = (["problem", "optimizer", "quantized"]
            + [f"T={t}" for t in v["steps"]] + ["slope (bits / doubling)"])
  body = []
  for r in v["c_star"]:
    cells = []
    for t in v["steps"]:
      x = r["by_steps"][str(t)]
      cells.append(f"{_w(x['value'], widest)} "
                   f"[{_w(x['lo'], widest)}, {_w(x['hi'], widest)}]")
    body.append([r["problem"], r["optimizer"], r["component"]] + cells
                + [_iv(r["slope"])])
  return tables.markdown([dict(zip(header, row, strict=True))
                          for row in body], header)


def verdict_lines(v: dict[str, Any]) -> list[str]:
  """Human-readable findings, each with its numbers and 95% intervals."""
  widest = v["widest"]
  lines = [
      f"c*(T): the smallest mantissa width from which every wider width "
      f"(up to {widest}) is within {v['tolerance']:g}x of fp32's "
      f"run-average gradient norm (geometric mean over seeds, paired); "
      f">{widest} when none is; [95% bootstrap intervals over seeds]."]
  a = v["a"]
  falls = [f"{r['problem']}/{r['optimizer']}/{r['component']} "
           f"(x{r['ratio_at_1']:.3g} at 1 bit, Spearman "
           f"{_iv(r['spearman'])})" for r in a["rows"]
           if not r["insensitive"]]
  flat = [f"{r['problem']}/{r['optimizer']}/{r['component']}"
          for r in a["rows"] if r["insensitive"]]
  lines.append(
      f"(a) error falls as mantissa bits grow (T={a['steps']}): "
      f"{a['verdict']}: in {a['falls']} of the {a['sensitive']} sensitive "
      f"rows the Spearman interval lies below 0: {'; '.join(falls)}. "
      f"{a['insensitive']} rows match fp32 at every width, 1 bit included: "
      + (", ".join(flat) if flat else "none") + ".")
  parts = "; ".join(
      f"{r['problem']}/{r['component']}: Adam {_iv(r['adam_slope'])}, Muon "
      f"{_iv(r['muon_slope'])}, difference {_iv(r['slope_difference'])} "
      f"bits per doubling (mean c* Adam - Muon "
      f"{_iv(r['level_difference'])})" for r in v["b"]["rows"])
  lines.append(f"(b) the width Muon needs grows more slowly with log2 T "
               f"than Adam's: {v['b']['verdict']} ({parts}).")
  parts = "; ".join(
      f"{r['problem']}: " + ", ".join(
          f"{c} {_iv(x, '{:.2f}')}" for c, x in r["mean_c_star"].items())
      + f"; min(W, V) - max(G, M) {_iv(r['gap'])}" for r in v["c"]["rows"])
  lines.append(f"(c) Adam needs the most bits for W and V (mean c* over "
               f"T): {v['c']['verdict']} ({parts}).")
  parts = "; ".join(
      f"{r['problem']}/{r['optimizer']}/{r['schedule']}: " + ", ".join(
          f"T={t} {x['mean_bits']:.1f} bits x{x['schedule_ratio']:.2f} "
          f"fp32, log(schedule / constant) {_iv(x['log_ratio'])}"
          for t, x in r["by_steps"].items())
      + f" (better at {r['better']}, worse at {r['worse']} T)"
      for r in v["d"]["rows"])
  lines.append(f"(d) a log t schedule (all components) does as well as "
               f"constant widths of the same average bits (interpolated), "
               f"at every T: {v['d']['verdict']} ({parts}).")
  if v["stochastic"]:
    moved = [r for r in v["stochastic"]
             if r["difference"]["value"] != 0]
    t = v["stochastic"][0]["steps"]
    parts = "; ".join(
        f"{r['problem']}/{r['optimizer']}/{r['component']} nearest "
        f"{_w(r['nearest']['value'], widest)}, stochastic "
        f"{_w(r['stochastic']['value'], widest)}" for r in moved)
    lines.append(f"Stochastic rounding (T={t}), c* against "
                 f"round-to-nearest: the same in "
                 f"{len(v['stochastic']) - len(moved)} of "
                 f"{len(v['stochastic'])} rows"
                 + (f"; differs in {parts}" if moved else "") + ".")
  return lines


def plot(data: dict[str, Any], v: dict[str, Any], path: Path) -> None:
  """c*(T) against T, Adam beside Muon, one line per component."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  problems = sorted({r["problem"] for r in data["records"]})
  fig, axes = plt.subplots(len(problems), 2, figsize=(11, 3.8 * len(problems)),
                           squeeze=False, sharey=True)
  for r in v["c_star"]:
    ax = axes[problems.index(r["problem"]),
              list(COMPONENTS).index(r["optimizer"])]
    ts = v["steps"]
    val = [r["by_steps"][str(t)]["value"] for t in ts]
    lo = [r["by_steps"][str(t)]["lo"] for t in ts]
    hi = [r["by_steps"][str(t)]["hi"] for t in ts]
    color = COLORS[r["component"]]
    ax.plot(ts, val, "o-", color=color,
            label=f"{r['component']} ({r['slope']['value']:+.2f}/doubling)")
    ax.fill_between(ts, lo, hi, color=color, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_title(f"{r['problem']}: {r['optimizer']}")
    ax.set_xlabel("steps T")
    ax.set_ylabel(f"needed mantissa bits c* ({v['widest'] + 2}: none)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=10)
  parser.add_argument("--steps", default=",".join(map(str, STEPS)))
  parser.add_argument("--problems", default="rosenbrock,digits_mlp")
  parser.add_argument("--resamples", type=int, default=BOOTSTRAP)
  args = parser.parse_args()
  start = time.perf_counter()
  steps = [int(s) for s in args.steps.split(",")]
  problems = [PROBLEMS[name]() for name in args.problems.split(",")]
  data = experiment(problems, args.seeds, steps,
                    stochastic_steps=1024 if 1024 in steps else steps[0])
  v = analyse(data, args.resamples)
  elapsed = time.perf_counter() - start
  table = c_star_table(v)
  lines = verdict_lines(v)
  print(f"\nneeded mantissa bits c*(T) over {args.seeds} seeds, "
        f"round-to-nearest, E{EXPONENT_BITS} "
        f"(learning rates {data['learning_rates']} at T={min(steps)})")
  print(table)
  print()
  print("\n".join(lines))
  env = tables.environment()
  print(f"\n{elapsed:.0f} s on {env['cpu']} ({env['date']})")
  payload = {"benchmark": "fp_quantization", "environment": env,
             "settings": {"seeds": args.seeds, "steps": steps,
                          "problems": [p.name for p in problems],
                          "learning_rates": data["learning_rates"],
                          "tuning": data["tuning"],
                          "exponent_bits": EXPONENT_BITS,
                          "mantissa_bits": list(BITS),
                          "growths": list(GROWTHS),
                          "checkpoints": CHECKPOINTS,
                          "tolerance": TOLERANCE,
                          "resamples": args.resamples,
                          "seconds": elapsed},
             "verdicts": v, "findings": lines, "tables": {"c_star": table},
             "records": data["records"]}
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / "fp_quantization.json"
  path.write_text(json.dumps(payload, indent=1) + "\n")
  plot(data, v, RESULTS / "fp_quantization.png")
  print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
  main()
