"""Floating-point-quantized Adam and Muon (arXiv 2510.21314), reproduced.

"A Convergence Analysis of Adaptive Optimizers under Floating-point
Quantization" rounds the gradients (G), weights (W), first moments (M) and
second moments (V) to a float format with E exponent and M mantissa bits,
and finds that (a) the final gradient norm falls as mantissa bits grow,
(b) Muon tolerates fewer mantissa bits than Adam, (c) Adam is most
sensitive to the precision of its weights and second moments, and (d) a
mantissa that grows like log t suffices. This script runs that experiment
on a CPU, with the library's transforms:

- G: ``quantize_gradients`` first in the chain;
- W: ``snap_params`` last (weights start on the grid);
- M, V: ``quantize_state`` around ``optax.scale_by_adam`` (one wrapper per
  moment, so each can be quantized alone), and around
  ``scale_by_quantized_momentum`` for Muon's momentum;
- all: the four (three for Muon) together.

Problems: the extended Rosenbrock function of the 32 pairs of entries of
an 8 x 8 matrix (so Muon applies), deterministic gradients, 2048 steps; and
a tanh MLP (65 -> 32 -> 10, the bias folded into an input of ones, so
every parameter is a matrix) with L2 regularization 1e-3 on scikit-learn's
bundled digits, minibatches of 128, 1024 steps. Each optimizer's peak
learning rate (cosine decay to 0) is the best of 0.01, 0.03, 0.1, 0.3, 0.6,
1.0 for its fp32 run (Rosenbrock: final gradient norm; MLP: final loss).
Formats have 8 exponent bits (bfloat16's range) and 1, 2, 3, 4, 5, 7 or 10
mantissa bits, rounded to nearest; "log->c" is ``log_mantissa_schedule(1,
c, growth=(c - 1) / (log2(T) - 1))`` for T steps, which starts at 1 bit
and reaches c halfway through; "fp32" is the unquantized run (a width of
23 bits, which rounds nothing). Every run is repeated over seeds (the
initial weights and the minibatches); runs are batched with ``jax.vmap``
and steps with ``jax.lax.scan``, one compilation per problem and optimizer.

Quality is the final full-batch gradient norm (and loss) in float32. A
setting *matches full precision* when the geometric mean of its gradient
norm over seeds is at most ``--tolerance`` (2) times the fp32 run's. The
verdicts, decided from these numbers:

- (a) per row, the gradient norm at 1 bit is above the one at 10 bits and
  no width is more than ``tolerance`` times worse than a narrower one, or
  the row is insensitive (every width matches);
- (b) per problem and shared component (G, W, M, all), the smallest width
  that matches, c*, is lower for Muon than for Adam (reproduces: lower in
  most comparisons and higher in none; partly: lower in more comparisons
  than higher); the mean log10 degradation over 1..5 bits is shown beside;
- (c) Adam's two components with the largest mean log10 degradation over
  1..5 bits are W and V, both above 0.05 (a factor 1.12);
- (d) for the "all" rows, some log schedule that matches uses fewer mantissa
  bits on average than c*.

Writes ``benchmarks/results/fp_quantization.json`` and ``.png``.

Usage (from the repository root):
  python -m benchmarks.fp_quantization [--seeds 5] [--step-scale 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import quantmuon as qm
from quantmuon import formats

RESULTS = Path(__file__).resolve().parent / "results"
EXPONENT_BITS = 8
FULL = 23  # float32's mantissa: rounding to it changes nothing
BITS = (1, 2, 3, 4, 5, 7, 10)
CAPS = (2, 3, 4, 5, 7, 10)  # the log schedules' final widths
PARTS = "GWMV"
COMPONENTS = {"adam": ("G", "W", "M", "V", "all"),
              "muon": ("G", "W", "M", "all")}
COLORS = {"G": "tab:blue", "W": "tab:orange", "M": "tab:green",
          "V": "tab:red", "all": "tab:purple"}


@dataclasses.dataclass(frozen=True)
class Problem:
  """A training problem: parameters, a loss, batches and a step size.

  Attributes:
    name: shown in the tables.
    init: key -> parameters.
    loss: (parameters, batch) -> scalar.
    batch: key -> a batch (None for deterministic problems).
    full: the batch the final loss and gradient norm are measured on.
    lr: peak learning rate per optimizer (cosine decay to 0).
    steps: training steps.
  """
  name: str
  init: Callable[[jax.Array], Any]
  loss: Callable[[Any, Any], jax.Array]
  batch: Callable[[jax.Array], Any]
  full: Any
  lr: dict[str, float]
  steps: int


def rosenbrock(steps: int = 2048) -> Problem:
  """The extended Rosenbrock function of an 8 x 8 matrix.

  ``f(X) = sum_i 100 (y_i - x_i^2)^2 + (1 - x_i)^2`` over the 32 pairs
  ``(x_i, y_i)`` of consecutive entries of ``vec(X)``; the minimum is at all
  ones. Each pair starts at the classic ``(-1.2, 1)`` plus ``N(0, 0.1^2)``.
  """
  def init(key):
    start = jnp.tile(jnp.array([-1.2, 1.0]), 32).reshape(8, 8)
    return {"X": start + 0.1 * jax.random.normal(key, (8, 8))}

  def loss(params, batch):
    del batch
    x, y = params["X"].reshape(-1, 2).T
    return jnp.sum(100.0 * (y - x ** 2) ** 2 + (1.0 - x) ** 2)

  return Problem("rosenbrock", init, loss, lambda key: None, None,
                 lr={"adam": 0.6, "muon": 0.1}, steps=steps)


def digits_mlp(steps: int = 1024, batch_size: int = 128, hidden: int = 32,
               l2: float = 1e-3) -> Problem:
  """A tanh MLP on scikit-learn's bundled 8 x 8 digits (1797 images).

  Pixels scaled to [0, 1], with a constant 1 appended so the first layer
  holds its bias; the output layer has none. Both weights are matrices.
  The L2 term keeps the optimum away from zero loss, where full precision
  would drive the gradient norm to nothing.
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

  return Problem("digits_mlp", init, loss, batch, (x, y),
                 lr={"adam": 0.03, "muon": 0.1}, steps=steps)


def optimizer(name: str, widths: dict[str, Callable], lr: optax.Schedule
              ) -> optax.GradientTransformation:
  """Adam or Muon with every component rounded to its (traced) width.

  Args:
    name: ``adam`` or ``muon``.
    widths: component letter -> function of the step count giving the
      mantissa bits (23 leaves the component in float32).
    lr: the learning-rate schedule.

  Returns:
    The chain: gradients -> moments -> (Newton-Schulz) -> lr -> weights.
  """
  fmt = formats.FloatingPoint(EXPONENT_BITS, FULL)
  chain = [qm.quantize_gradients(fmt, mantissa_bits=widths["G"])]
  if name == "adam":
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    adam = qm.quantize_state(adam, {"mu": fmt}, min_size=0,
                             mantissa_bits=widths["M"])
    chain.append(qm.quantize_state(adam, {"nu": fmt}, min_size=0,
                                   mantissa_bits=widths["V"]))
  else:
    momentum = qm.scale_by_quantized_momentum(
        beta=0.95, nesterov=True, momentum_format=formats.Float(),
        accumulation="ema", min_size=0)
    chain += [qm.quantize_state(momentum, fmt, min_size=0,
                                mantissa_bits=widths["M"]),
              qm.orthogonalize(), qm.scale_by_shape()]
  chain += [optax.scale_by_learning_rate(lr),
            qm.snap_params(fmt, mantissa_bits=widths["W"])]
  return optax.chain(*chain)


def schedule_table(steps: int) -> dict[str, np.ndarray]:
  """Setting name -> mantissa bits at each step (int32 of length steps)."""
  t = np.arange(steps)
  table = {str(b): np.full(steps, b, np.int32) for b in BITS}
  for cap in CAPS:
    growth = (cap - 1) / (math.log2(steps) - 1)
    sched = qm.log_mantissa_schedule(1, cap, growth=growth)
    table[f"log->{cap}"] = np.asarray(sched(t), np.int32)
  table["fp32"] = np.full(steps, FULL, np.int32)
  return table


def settings_for(opt: str, steps: int) -> list[tuple[str, str, np.ndarray]]:
  """(component, setting, widths[4, steps]) for every run of ``opt``."""
  table = schedule_table(steps)
  out = [("none", "fp32", np.full((4, steps), FULL, np.int32))]
  for comp in COMPONENTS[opt]:
    for setting, seq in table.items():
      if setting == "fp32":
        continue
      widths = np.full((4, steps), FULL, np.int32)
      for i, part in enumerate(PARTS):
        if comp == "all" or comp == part:
          widths[i] = seq
      out.append((comp, setting, widths))
  return out


def run_batch(problem: Problem, opt: str, widths: np.ndarray,
              seeds: np.ndarray) -> tuple[np.ndarray, ...]:
  """Trains one run per row of ``widths`` x ``seeds``; vmapped, scanned.

  Returns:
    (final loss, final gradient norm), each of shape [settings, seeds].
  """
  steps = problem.steps
  lr = optax.cosine_decay_schedule(problem.lr[opt], steps)
  fmt = formats.FloatingPoint(EXPONENT_BITS, FULL)

  def one(seed, w):
    def width(i):
      return lambda count: w[i, jnp.minimum(count, steps - 1)]
    tx = optimizer(opt, {p: width(i) for i, p in enumerate(PARTS)}, lr)
    key = jax.random.key(seed)
    params = problem.init(jax.random.fold_in(key, 0))
    params = jax.tree.map(
        lambda p: fmt.round(p, mantissa_bits=w[1, 0]), params)
    state = tx.init(params)

    def step(carry, t):
      params, state = carry
      batch = problem.batch(jax.random.fold_in(key, t + 1))
      grads = jax.grad(problem.loss)(params, batch)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, state), jnp.arange(steps))
    loss, grads = jax.value_and_grad(problem.loss)(params, problem.full)
    return loss, optax.global_norm(grads)

  runs = jnp.asarray(np.repeat(widths, len(seeds), axis=0))
  run_seeds = jnp.asarray(np.tile(seeds, len(widths)))
  loss, norm = jax.jit(jax.vmap(one))(run_seeds, runs)
  shape = (len(widths), len(seeds))
  return (np.asarray(loss).reshape(shape), np.asarray(norm).reshape(shape))


def geomean(x: np.ndarray) -> float:
  return float(np.exp(np.mean(np.log(np.maximum(x, 1e-30)))))


def spearman(x: list[float], y: list[float]) -> float:
  rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
  if np.std(rx) == 0 or np.std(ry) == 0:
    return 0.0
  return float(np.corrcoef(rx, ry)[0, 1])


def experiment(problems: list[Problem], seeds: int) -> list[dict[str, Any]]:
  """Every problem x optimizer x component x setting, over seeds."""
  records = []
  for problem in problems:
    table = schedule_table(problem.steps)
    for opt in COMPONENTS:
      start = time.perf_counter()
      settings = settings_for(opt, problem.steps)
      widths = np.stack([s[2] for s in settings])
      loss, norm = run_batch(problem, opt, widths, np.arange(seeds))
      for (comp, setting, _), l_row, n_row in zip(settings, loss, norm,
                                                  strict=True):
        records.append({
            "problem": problem.name, "optimizer": opt, "component": comp,
            "setting": setting, "steps": problem.steps,
            "learning_rate": problem.lr[opt],
            "mean_bits": float(np.mean(table[setting])),
            "loss": l_row.tolist(), "grad_norm": n_row.tolist(),
            "loss_mean": float(np.mean(l_row)),
            "loss_std": float(np.std(l_row)),
            "grad_norm_mean": float(np.mean(n_row)),
            "grad_norm_std": float(np.std(n_row)),
            "grad_norm_geomean": geomean(n_row)})
      print(f"{problem.name:>11} {opt}: {len(settings)} settings x {seeds} "
            f"seeds, {time.perf_counter() - start:.1f} s", flush=True)
  return records


def verdicts(records: list[dict[str, Any]], tolerance: float
             ) -> dict[str, Any]:
  """Decides findings (a)-(d) from the records (see the module doc)."""
  index = {(r["problem"], r["optimizer"], r["component"], r["setting"]): r
           for r in records}
  problems = sorted({r["problem"] for r in records})

  def gm(p, o, c, s):
    return index[(p, o, c, s)]["grad_norm_geomean"]

  def matches(p, o, c, s):
    return gm(p, o, c, s) <= tolerance * gm(p, o, "none", "fp32")

  def c_star(p, o, c):
    return next((b for b in BITS if matches(p, o, c, str(b))), None)

  rows_a, c_stars, degradation = [], {}, {}
  for p in problems:
    for o, comps in COMPONENTS.items():
      for c in comps:
        norms = [gm(p, o, c, str(b)) for b in BITS]
        rho = spearman(list(BITS), list(np.log(norms)))
        flat = all(matches(p, o, c, str(b)) for b in BITS)
        monotone = all(norms[j] <= tolerance * norms[i]
                       for i in range(len(BITS))
                       for j in range(i + 1, len(BITS)))
        rows_a.append({"problem": p, "optimizer": o, "component": c,
                       "spearman": rho, "insensitive": flat,
                       "monotone": monotone,
                       "holds": flat or (monotone and norms[0] > norms[-1])})
        c_stars[(p, o, c)] = c_star(p, o, c)
        base = gm(p, o, "none", "fp32")
        degradation[(p, o, c)] = float(np.mean(
            [max(0.0, math.log10(gm(p, o, c, str(b)) / base))
             for b in BITS if b <= 5]))

  def rank(c):  # unmatched counts as needing more than the widest width
    return BITS[-1] + 1 if c is None else c

  rows_b = []
  for p in problems:
    for c in COMPONENTS["muon"]:
      a, m = c_stars[(p, "adam", c)], c_stars[(p, "muon", c)]
      rows_b.append({"problem": p, "component": c, "adam_c_star": a,
                     "muon_c_star": m,
                     "adam_degradation": degradation[(p, "adam", c)],
                     "muon_degradation": degradation[(p, "muon", c)],
                     "muon_fewer": rank(m) < rank(a),
                     "muon_more": rank(m) > rank(a)})

  rows_c = []
  for p in problems:
    scores = {c: degradation[(p, "adam", c)] for c in PARTS}
    top = sorted(scores, key=scores.get, reverse=True)[:2]
    marginal = min(scores[c] for c in top) < 0.05
    rows_c.append({"problem": p, "degradation": scores, "top_two": top,
                   "marginal": marginal,
                   "holds": set(top) == {"W", "V"} and not marginal})

  rows_d = []
  for p in problems:
    for o in COMPONENTS:
      cs = c_stars[(p, o, "all")]
      matched = [(index[(p, o, "all", f"log->{cap}")]["mean_bits"], cap)
                 for cap in CAPS if matches(p, o, "all", f"log->{cap}")]
      best = min(matched) if matched else None
      base = gm(p, o, "none", "fp32")
      rows_d.append({
          "problem": p, "optimizer": o, "c_star": cs,
          "c_star_ratio": (None if cs is None
                           else gm(p, o, "all", str(cs)) / base),
          "best_schedule": None if best is None else f"log->{best[1]}",
          "schedule_mean_bits": None if best is None else best[0],
          "schedule_ratio": (None if best is None else
                             gm(p, o, "all", f"log->{best[1]}") / base),
          "holds": (None if cs is None or best is None
                    else best[0] < cs)})

  def summary(holds: list[bool | None]) -> str:
    known = [h for h in holds if h is not None]
    if not known:
      return "not testable"
    if all(known):
      return "reproduces"
    return "partly reproduces" if any(known) else "does not reproduce"

  fewer = sum(r["muon_fewer"] for r in rows_b)
  more = sum(r["muon_more"] for r in rows_b)
  if 2 * fewer > len(rows_b) and not more:
    b_verdict = "reproduces"
  elif fewer > more:
    b_verdict = "partly reproduces"
  else:
    b_verdict = "does not reproduce"
  return {
      "tolerance": tolerance,
      "a": {"verdict": summary([r["holds"] for r in rows_a]),
            "rows": rows_a},
      "b": {"verdict": b_verdict, "rows": rows_b},
      "c": {"verdict": summary([r["holds"] for r in rows_c]),
            "rows": rows_c},
      "d": {"verdict": summary([r["holds"] for r in rows_d]),
            "rows": rows_d},
  }


def table_rows(records: list[dict[str, Any]], key: str
               ) -> tuple[list[str], list[list[str]]]:
  """A markdown table: one row per problem/optimizer/component."""
  columns = [str(b) for b in BITS] + ["log->10", "fp32"]
  fp32 = {(r["problem"], r["optimizer"]): r for r in records
          if r["setting"] == "fp32"}
  cells: dict[tuple, dict[str, str]] = {}
  for r in records:
    if r["setting"] == "fp32" or r["setting"] in columns:
      for comp in ([r["component"]] if r["component"] != "none"
                   else COMPONENTS[r["optimizer"]]):
        row = cells.setdefault((r["problem"], r["optimizer"], comp), {})
        if r["setting"] != "fp32":
          row[r["setting"]] = _cell(r, key)
        row["fp32"] = _cell(fp32[(r["problem"], r["optimizer"])], key)
  header = ["problem", "optimizer", "quantized"] + columns
  body = [[p, o, c] + [row.get(col, "") for col in columns]
          for (p, o, c), row in cells.items()]
  return header, body


def _cell(r: dict[str, Any], key: str) -> str:
  return f"{r[key + '_mean']:.1e}±{r[key + '_std']:.0e}"


def markdown(header: list[str], body: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in body]
  return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> None:
  """Final gradient norm against mantissa bits, Adam beside Muon."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  problems = sorted({r["problem"] for r in records})
  fig, axes = plt.subplots(len(problems), 2, figsize=(11, 4 * len(problems)),
                           squeeze=False, sharey="row")
  index = {(r["problem"], r["optimizer"], r["component"], r["setting"]): r
           for r in records}
  for i, p in enumerate(problems):
    for j, o in enumerate(COMPONENTS):
      ax = axes[i, j]
      for comp in COMPONENTS[o]:
        color = COLORS[comp]
        rs = [index[(p, o, comp, str(b))] for b in BITS]
        mean = np.array([r["grad_norm_geomean"] for r in rs])
        lo = np.array([np.min(r["grad_norm"]) for r in rs])
        hi = np.array([np.max(r["grad_norm"]) for r in rs])
        ax.plot(BITS, mean, "o-", color=color, label=comp)
        ax.fill_between(BITS, lo, hi, color=color, alpha=0.15)
        log = index[(p, o, comp, "log->10")]
        ax.plot([log["mean_bits"]], [log["grad_norm_geomean"]], "*",
                color=color, markersize=11)
      base = index[(p, o, "none", "fp32")]["grad_norm_geomean"]
      ax.axhline(base, color="k", linestyle="--", label="fp32")
      ax.set_yscale("log")
      ax.set_xticks(BITS)
      ax.set_xlabel("mantissa bits (star: log->10 schedule at its mean)")
      ax.set_title(f"{p}: {o}")
      if j == 0:
        ax.set_ylabel("final gradient norm (geomean, min-max)")
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def verdict_lines(v: dict[str, Any]) -> list[str]:
  """Human-readable findings, each with the numbers behind it."""
  lines = [f"A setting matches fp32 when its geometric-mean gradient norm "
           f"is within {v['tolerance']:g}x of the fp32 run's."]
  a = v["a"]
  bad = [f"{r['problem']}/{r['optimizer']}/{r['component']} "
         f"(Spearman {r['spearman']:+.2f})" for r in a["rows"]
         if not r["holds"]]
  lines.append(
      f"(a) error falls as mantissa bits grow: {a['verdict']} "
      f"({sum(r['holds'] for r in a['rows'])}/{len(a['rows'])} rows"
      + (f"; not in {', '.join(bad)}" if bad else "") + ").")
  b = v["b"]
  pairs = ", ".join(
      f"{r['problem']}/{r['component']}: Adam {_star(r['adam_c_star'])} "
      f"({r['adam_degradation']:.2f}) vs Muon {_star(r['muon_c_star'])} "
      f"({r['muon_degradation']:.2f})" for r in b["rows"])
  tally = (f"Muon fewer in {sum(r['muon_fewer'] for r in b['rows'])}, more "
           f"in {sum(r['muon_more'] for r in b['rows'])} of "
           f"{len(b['rows'])}")
  lines.append(f"(b) Muon tolerates fewer mantissa bits than Adam: "
               f"{b['verdict']} ({tally}; smallest matching width "
               f"(mean log10 degradation over 1-5 bits), {pairs}).")
  c = v["c"]
  parts = "; ".join(
      f"{r['problem']}: " + ", ".join(
          f"{k} {s:.2f}" for k, s in sorted(
              r["degradation"].items(), key=lambda kv: -kv[1]))
      for r in c["rows"])
  marginal = [r["problem"] for r in c["rows"] if r["marginal"]]
  lines.append(f"(c) Adam most sensitive to W and V: {c['verdict']} "
               f"(mean log10 degradation over 1-5 bits: {parts})"
               + (f"; on {', '.join(marginal)} the second place is "
                  "within noise (< 0.05)" if marginal else "") + ".")
  d = v["d"]
  parts = "; ".join(
      f"{r['problem']}/{r['optimizer']}: constant {_star(r['c_star'])}"
      + ("" if r["c_star"] is None else f" ({r['c_star_ratio']:.2f}x fp32)")
      + (", no schedule matches" if r["best_schedule"] is None else
         f", {r['best_schedule']} at {r['schedule_mean_bits']:.2f} bits "
         f"on average ({r['schedule_ratio']:.2f}x fp32)")
      for r in d["rows"])
  lines.append(f"(d) the log schedule matches fp32 with fewer bits on "
               f"average than the constant width that does: "
               f"{d['verdict']} (all components quantized; {parts}).")
  return lines


def _star(c: int | None) -> str:
  return f">{BITS[-1]}" if c is None else str(c)


def environment() -> dict[str, Any]:
  cpu = None
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {"date": datetime.datetime.now(datetime.UTC).isoformat(
              timespec="seconds"),
          "cpu": cpu, "platform": platform.platform(),
          "python": platform.python_version(), "jax": jax.__version__,
          "optax": optax.__version__, "backend": jax.default_backend(),
          "device_count": jax.device_count()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--step-scale", type=float, default=1.0,
                      help="multiplies every problem's steps (a power of 2 "
                      "keeps the schedules' shape)")
  parser.add_argument("--tolerance", type=float, default=2.0)
  parser.add_argument("--problems", default="rosenbrock,digits_mlp")
  args = parser.parse_args()
  start = time.perf_counter()
  makers = {"rosenbrock": rosenbrock, "digits_mlp": digits_mlp}
  problems = []
  for name in args.problems.split(","):
    default = makers[name]().steps
    problems.append(makers[name](steps=int(default * args.step_scale)))
  records = experiment(problems, args.seeds)
  v = verdicts(records, args.tolerance)
  elapsed = time.perf_counter() - start
  env = environment()
  tables = {key: markdown(*table_rows(records, key))
            for key in ("grad_norm", "loss")}
  lines = verdict_lines(v)
  steps = ", ".join(f"{p.name} {p.steps}" for p in problems)
  print(f"\nfinal gradient norm, mean ± std over {args.seeds} seeds "
        f"(steps: {steps}; E{EXPONENT_BITS}; columns: mantissa bits)")
  print(tables["grad_norm"])
  print(f"\nfinal loss, mean ± std over {args.seeds} seeds")
  print(tables["loss"])
  print()
  print("\n".join(lines))
  print(f"\n{elapsed:.0f} s on {env['cpu']} ({env['date']})")
  RESULTS.mkdir(parents=True, exist_ok=True)
  payload = {"benchmark": "fp_quantization", "environment": env,
             "settings": {"seeds": args.seeds,
                          "steps": {p.name: p.steps for p in problems},
                          "learning_rates": {p.name: p.lr for p in problems},
                          "exponent_bits": EXPONENT_BITS,
                          "mantissa_bits": list(BITS),
                          "schedule_caps": list(CAPS),
                          "tolerance": args.tolerance,
                          "seconds": elapsed},
             "verdicts": v, "findings": lines, "tables": tables,
             "records": records}
  path = RESULTS / "fp_quantization.json"
  path.write_text(json.dumps(payload, indent=1) + "\n")
  plot(records, RESULTS / "fp_quantization.png")
  print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
  main()
