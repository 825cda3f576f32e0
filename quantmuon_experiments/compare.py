"""Trains every optimizer on the same model, data and seeds, and reports.

``compare(config, workdir)`` runs each name in ``config.optimizers`` (and,
with ``config.twins``, each quantized preset's exact full-precision twin)
for each seed in ``config.seeds`` (or ``config.seed``), with the rate in
``config.learning_rates``. Width-scaled ``muon`` gives its AdamW part the
``adamw`` rate; every other optimizer uses one rate for both parts.

Before training it checks the whole config (``check``): a field that
cannot work is a ``ConfigError`` before any run starts. Then it shows the
plan (the runs, their steps, an ETA) and one progress line for the whole
comparison (``progress.Overall``).

With ``config.lr_sweep`` (multipliers, e.g. ``"0.5,1,2"``) it first tunes one
rate per group of ``optimizers.RATE_GROUPS``: AdamW, width-scaled Muon, and
consistent-RMS full-precision Muon (``muon_rms``), whose rate the quantized
presets share. Each group's rate is scaled by each multiplier, the first
seed is trained, and the lowest final validation loss wins.

After training, each optimizer's jitted step is timed apart from training
(``config.timing``; see ``timing``): warmed up, interleaved over the
optimizers, repeated; the report gives the median and the spread. The
steps compiled for training are timed; only runs read back are compiled
again.

Writes ``results.json``, ``results.md``, ``loss_curves.png`` and
``memory.png`` to ``workdir`` (see ``report``), and each run's metrics under
``workdir/runs`` (``workdir/sweep`` for the sweep). With
``config.reuse_runs`` (the default), a run whose directory already holds
the summary of the same run is read back instead of trained again, so an
interrupted comparison resumes, and seeds trained by separate commands into
one workdir are reported together. What only changes the display
(``DISPLAY_KEYS``) does not make another run.

Run it as ``quantmuon-compare --workdir DIR`` (the quick comparison,
``defaults.quick_config``), ``quantmuon-compare --config
configs/compare_full.py --workdir DIR``, or ``python -m
quantmuon_experiments.compare ...``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import ml_collections
import numpy as np
from absl import app

from quantmuon_experiments import (
    cli,
    errors,
    optimizers,
    parallel,
    progress,
    report,
    tasks,
    timing,
)
from quantmuon_experiments import train as train_lib

# Full-precision Muon, the reference of the gaps, memory and times when it
# ran: width-scaled, else with the quantized presets' consistent-RMS scaling.
FULL_PRECISION = ("muon", "muon_rms")
TWIN = "muon_rms"  # full precision with the quantized presets' scaling
# Keys of the comparison config that no single run reads.
COMPARISON_KEYS = ("optimizers", "twins", "seeds", "learning_rates",
                   "lr_sweep", "lr_note", "timing", "reuse_runs",
                   "noise_pct", "noise_note", "eta")
# Fields of a single run that change only what is shown while it trains.
DISPLAY_KEYS = {"train": ("progress", "log_every")}
RUN_CONFIG = "run_config.json"
SINGLE_DEVICE = {"data": 1, "fsdp": 1}


def parse_list(text: str) -> list[str]:
  """Splits a comma-separated config string, dropping blanks."""
  return [s.strip() for s in str(text).split(",") if s.strip()]


def seeds_of(config: ml_collections.ConfigDict) -> list[int]:
  """``config.seeds`` as ints, or ``[config.seed]`` when it is empty.

  Raises:
    ConfigError: a seed that is not an integer.
  """
  try:
    return [int(s) for s in parse_list(config.seeds)] or [int(config.seed)]
  except ValueError as e:
    raise errors.ConfigError(
        f"config.seeds: {config.seeds!r} is not a list of integers; set "
        f"--config.seeds=0,1,2 (or leave it empty for config.seed).") from e


def multipliers_of(config: ml_collections.ConfigDict) -> list[float]:
  """``config.lr_sweep`` as positive floats (empty: no sweep).

  Raises:
    ConfigError: a multiplier that is not a positive number.
  """
  try:
    found = [float(m) for m in parse_list(config.lr_sweep)]
  except ValueError:
    found = [-1.0]
  if any(not (math.isfinite(m) and m > 0) for m in found):
    raise errors.ConfigError(
        f"config.lr_sweep: {config.lr_sweep!r} is not a list of positive "
        f"rate multipliers; set --config.lr_sweep=0.5,1,2 (or leave it "
        f"empty for no sweep).")
  return found


def run_config(config: ml_collections.ConfigDict, name: str, seed: int,
               learning_rate: float | None = None
               ) -> ml_collections.ConfigDict:
  """The single-run config of optimizer ``name`` at ``seed``.

  Args:
    config: the comparison config.
    name: an optimizer name.
    seed: the run's seed.
    learning_rate: overrides ``config.learning_rates[name]``.

  Returns:
    A copy of ``config`` with ``optimizer`` and ``seed`` set.
  """
  out = ml_collections.ConfigDict(config.to_dict())
  rates = config.learning_rates
  out.seed = seed
  out.optimizer.name = name
  out.optimizer.learning_rate = float(
      rates[name] if learning_rate is None else learning_rate)
  out.optimizer.adam_learning_rate = (
      float(rates["adamw"]) if optimizers.rate_group(name) == "muon" else 0.0)
  return out


def run_fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What decides a single run's result: its config less the comparison's.

  Args:
    config: a single-run config (see ``run_config``).

  Returns:
    A JSON-ready dict, equal for two configs that train the same run.
  """
  return _identity(json.loads(config.to_json()))


def _identity(fields: dict[str, Any]) -> dict[str, Any]:
  """A run's recorded fields less what does not change its result."""
  out = {k: v for k, v in fields.items() if k not in COMPARISON_KEYS}
  for section, keys in DISPLAY_KEYS.items():
    if isinstance(out.get(section), dict):
      out[section] = {k: v for k, v in out[section].items()
                      if k not in keys}
  if out.get("mesh") == SINGLE_DEVICE:  # the same run as no mesh field
    del out["mesh"]
  return out


def read_back(config: ml_collections.ConfigDict, run_dir: str
              ) -> dict[str, Any] | None:
  """The summary of a finished run of ``config`` in ``run_dir``, if any.

  Args:
    config: the single-run config.
    run_dir: the run's directory (``run_config.json`` beside
      ``summary.json``).

  Returns:
    The summary, or None when the directory holds no finished run of the
    same fingerprint (runs recorded before a display-only field was left
    out of the fingerprint count as the same run).
  """
  summary_path = os.path.join(run_dir, "summary.json")
  record_path = os.path.join(run_dir, RUN_CONFIG)
  if not (os.path.exists(summary_path) and os.path.exists(record_path)):
    return None
  with open(record_path) as f:
    recorded = json.load(f)
  if _identity(recorded) != run_fingerprint(config):
    return None
  with open(summary_path) as f:
    return json.load(f)


def train_run(config: ml_collections.ConfigDict, run_dir: str, desc: str,
              shown: progress.Progress | None = None
              ) -> train_lib.Trained:
  """Trains one run and records its fingerprint beside its summary.

  Args:
    config: the single-run config.
    run_dir: the run's directory; ``run_config.json`` records its
      fingerprint beside ``summary.json``, for ``read_back``.
    desc: the progress bar's label.
    shown: the progress to show it on (see ``train.fit``).

  Returns:
    What ``train.fit`` returns.
  """
  trained = train_lib.fit(config, run_dir, desc=desc, progress=shown)
  with open(os.path.join(run_dir, RUN_CONFIG), "w") as f:
    json.dump(run_fingerprint(config), f, indent=1)
  return trained


def _sweep_runs(config: ml_collections.ConfigDict, names: list[str]
                ) -> list[tuple[str, float, float]]:
  """``(group, multiplier, rate)`` of each sweep run, in order."""
  groups = [g for g in optimizers.RATE_GROUPS
            if any(optimizers.rate_group(n) == g for n in names)]
  return [(g, m, float(config.learning_rates[g]) * m)
          for g in groups for m in multipliers_of(config)]


def _sweep_dir(workdir: str, group: str, lr: float) -> str:
  return os.path.join(workdir, "sweep", group, f"lr_{lr:.4g}")


def sweep(config: ml_collections.ConfigDict, workdir: str,
          names: list[str], overall: progress.Overall | None = None
          ) -> dict[str, Any]:
  """Tunes the rate of each group that ``names`` touch, in place.

  Args:
    config: the comparison config; its ``learning_rates`` are updated.
    workdir: the sweep runs go to ``workdir/sweep``.
    names: the optimizers being compared.
    overall: the comparison's progress line, or None for the runs' own.

  Returns:
    Per group: the rates tried, their final validation losses, the best.
  """
  seed = seeds_of(config)[0]
  reuse = bool(config.get("reuse_runs", True))
  runs = _sweep_runs(config, names)
  out: dict[str, Any] = {}
  # adamw first: width-scaled muon's AdamW part uses it.
  for group in dict.fromkeys(g for g, _, _ in runs):
    base = float(config.learning_rates[group])
    tried = []
    for _, m, lr in [r for r in runs if r[0] == group]:
      label = f"sweep {group} lr={lr:.3g}"
      run = run_config(config, group, seed, lr)
      run_dir = _sweep_dir(workdir, group, lr)
      done = read_back(run, run_dir) if reuse else None
      if done is None:
        shown = (None if overall is None
                 else overall.run(label, int(config.train.steps)))
        done = train_run(run, run_dir, label, shown).summary
      tried.append({"learning_rate": lr, "multiplier": m,
                    "final_val_loss": done["final_val_loss"]})
    finite = [t for t in tried if math.isfinite(t["final_val_loss"])]
    best = min(finite, key=lambda t: t["final_val_loss"]) if finite else None
    if best is not None:
      for member in optimizers.RATE_GROUPS[group]:
        config.learning_rates[member] = best["learning_rate"]
    out[group] = {"tried": tried, "base": base,
                  "best": best["learning_rate"] if best else None,
                  "members": list(optimizers.RATE_GROUPS[group])}
  return out


def time_steps(config: ml_collections.ConfigDict, names: list[str],
               seed: int, ready: dict[str, train_lib.Setup] | None = None,
               overall: progress.Overall | None = None
               ) -> dict[str, list[float]]:
  """Each optimizer's training step, timed apart from training.

  Args:
    config: the comparison config (``timing``: ``warmup``, ``repeats``,
      ``steps``).
    names: the optimizers.
    seed: the seed of the runs whose steps are timed.
    ready: name -> a run's ``train.Setup`` to step on (its compiled
      step); the others are set up (compiled) here.
    overall: the comparison's progress line.

  Returns:
    name -> seconds per step in each round (see ``timing.round_robin``).
  """
  ready = ready or {}
  steps = {}
  for name in names:
    if name not in ready and overall is not None:
      overall.timing_setup(name)
    steps[name] = timing.stepper(
        ready.get(name) or train_lib.setup(run_config(config, name, seed)))
  t = config.timing
  return timing.round_robin(
      steps, warmup=int(t.warmup), repeats=int(t.repeats),
      calls=int(t.steps), progress=None if overall is None else overall.timed)


def _mean_curve(curves: list[list[list[float]]]) -> list[list[float]]:
  n = min(len(c) for c in curves)
  steps = [c[0] for c in curves[0][:n]]
  values = np.mean([[v for _, v in c[:n]] for c in curves], axis=0)
  return [[s, float(v)] for s, v in zip(steps, values, strict=True)]


def _gap(runs: list[dict[str, Any]], ref: list[dict[str, Any]]
         ) -> tuple[float, float]:
  gaps = [100 * (s["final_val_loss"] - r["final_val_loss"])
          / r["final_val_loss"] for s, r in zip(runs, ref, strict=True)]
  return float(np.mean(gaps)), float(np.std(gaps))


def with_twins(names: list[str]) -> tuple[list[str], dict[str, str]]:
  """``names`` with the full-precision twin of each quantized optimizer.

  Twins that build the same optimizer run once: ``muon_8bit_dynamic``'s
  twin is the run of ``muon_8bit_fp32`` when both are compared.

  Args:
    names: the optimizers asked for.

  Returns:
    ``(names to run, quantized name -> the name of its twin's run)``.
  """
  runs = list(names)
  twins: dict[str, str] = {}
  by_key: dict[str, str] = {}
  for name in names:
    twin = optimizers.twin_of(name)
    if twin is None:
      continue
    key = optimizers.twin_key(name)
    if twin in runs:
      by_key.setdefault(key, twin)
    elif key not in by_key:
      by_key[key] = twin
      runs.append(twin)
    twins[name] = by_key[key]
  return runs, twins


def aggregate(runs: dict[str, list[dict[str, Any]]], reference: str,
              times: dict[str, list[float]],
              twins: dict[str, str] | None = None
              ) -> dict[str, dict[str, Any]]:
  """Mean and spread over seeds, and gaps to the reference optimizer.

  Args:
    runs: optimizer name -> per-seed summaries (same seeds, same order).
    reference: the optimizer the gaps, memory and time ratios refer to.
    times: optimizer name -> seconds per step in each timing round (see
      ``time_steps``).
    twins: quantized optimizer name -> the run of its full-precision twin
      (see ``with_twins``).

  Returns:
    Per optimizer: mean of each loss (``*_std`` and ``*_per_seed``
    beside), the seed-paired ``gap_pct`` (mean, ``gap_pct_std``) to
    ``reference`` (and ``twin_gap_pct`` to ``muon_rms`` when it ran),
    ``twin`` (the run of its full-precision twin, or None) and the
    seed-paired ``quantization_cost_pct`` to it (``*_std`` beside),
    ``memory_reduction``, ``step_time`` (``timing.spread`` of the rounds;
    ``step_time_s`` is its median) and ``time_ratio`` (median of the
    per-round ratios to ``reference``; ``time_ratio_spread``),
    ``skipped_steps`` (all seeds), mean curves and the per-seed runs.
  """
  out: dict[str, dict[str, Any]] = {}
  ref = runs[reference]
  for name, summaries in runs.items():
    agg: dict[str, Any] = {"learning_rate": summaries[0]["learning_rate"],
                           "seeds": [s["seed"] for s in summaries]}
    for key in ("final_val_loss", "best_val_loss", "final_train_loss"):
      values = [s[key] for s in summaries]
      agg[key] = float(np.mean(values))
      agg[key + "_std"] = float(np.std(values))
      agg[key + "_per_seed"] = values
    for key in ("state_bytes", "state_bytes_per_param", "matrix_params",
                "matrix_state_bytes", "state_bytes_per_matrix_param",
                "other_params", "other_state_bytes",
                "compiled_step_memory_bytes", "params"):
      agg[key] = summaries[0][key]
    agg["compiled_step_memory"] = summaries[0]["compiled_step_memory"]
    agg["gap_pct"], agg["gap_pct_std"] = _gap(summaries, ref)
    if TWIN in runs:
      agg["twin_gap_pct"], agg["twin_gap_pct_std"] = _gap(summaries,
                                                          runs[TWIN])
    twin = (twins or {}).get(name)
    agg["twin"] = twin
    if twin is not None:
      agg["quantization_cost_pct"], agg["quantization_cost_pct_std"] = _gap(
          summaries, runs[twin])
    agg["memory_reduction"] = (ref[0]["state_bytes"]
                               / max(summaries[0]["state_bytes"], 1))
    agg["step_time"] = timing.spread(times[name])
    agg["step_time_s"] = agg["step_time"]["median"]
    agg["step_time_rounds_s"] = times[name]
    agg["time_ratio_spread"] = timing.paired_ratios(times[name],
                                                    times[reference])
    agg["time_ratio"] = agg["time_ratio_spread"]["median"]
    agg["skipped_steps"] = sum(s.get("skipped_steps", 0) for s in summaries)
    agg["diverged"] = any(s.get("diverged") for s in summaries)
    agg["train_curve"] = _mean_curve([s["train_curve"] for s in summaries])
    agg["val_curve"] = _mean_curve([s["val_curve"] for s in summaries])
    agg["runs"] = summaries
    out[name] = agg
  return out


def reference_of(names: list[str], twins: dict[str, str]) -> str:
  """The row the gaps, memory and times refer to.

  Full-precision Muon when it ran (``muon``, else ``muon_rms``); else the
  twin of the first quantized preset; else the first optimizer.

  Args:
    names: the optimizers run.
    twins: quantized name -> its twin's run (see ``with_twins``).

  Returns:
    One of ``names``.
  """
  for name in FULL_PRECISION:
    if name in names:
      return name
  for name in names:
    if twins.get(name) in names:
      return twins[name]
  return names[0]


@dataclasses.dataclass
class Plan:
  """What a comparison will do, from its checked config.

  Attributes:
    names: the optimizers to run, twins included.
    twins: quantized name -> its twin's run.
    seeds: the seeds.
    reference: see ``reference_of``.
    task: the task's ``info`` (parameters, data).
    runs: ``(name, seed, directory)`` of every run, in training order.
    done: the summaries of the runs already finished in the workdir
      (read back with ``config.reuse_runs``), by directory.
    sweep: ``(group, multiplier, rate)`` of each sweep run.
  """

  names: list[str]
  twins: dict[str, str]
  seeds: list[int]
  reference: str
  task: dict[str, Any]
  runs: list[tuple[str, int, str]]
  done: dict[str, dict[str, Any]]
  sweep: list[tuple[str, float, float]]


def reference_note(plan: Plan) -> str:
  """What the reference row is, for the report."""
  if plan.reference in FULL_PRECISION:
    return "full-precision Muon"
  of = [n for n, twin in plan.twins.items() if twin == plan.reference]
  if of:
    return (f"the full-precision twin of `{of[0]}`; full-precision Muon "
            f"did not run")
  return "the first optimizer; full-precision Muon did not run"


def check(config: ml_collections.ConfigDict, workdir: str) -> Plan:
  """Checks the whole comparison config and plans the runs.

  Every field any run reads is checked here, before the first run trains:
  the optimizers' names, the seeds, the sweep, the rates, the timing, each
  run's fields (``train.check``, which builds each optimizer, so a
  preset's options are checked too), the mesh, the model and the data
  (the task is built once).

  Args:
    config: the comparison config.
    workdir: the output directory (where finished runs are looked for).

  Returns:
    The plan.

  Raises:
    ConfigError: a field that cannot work, named with its fix.
  """
  names = parse_list(config.optimizers)
  unknown = [n for n in names if n not in optimizers.NAMES]
  if not names or unknown:
    raise errors.ConfigError(
        f"config.optimizers: unknown names {unknown} in "
        f"{config.optimizers!r}; list names from "
        f"{','.join(optimizers.NAMES)}, separated by commas.")
  seeds = seeds_of(config)
  timing.check(config)
  names, twins = with_twins(names) if config.get("twins", True) else (
      names, {})
  sweep_runs = _sweep_runs(config, names) if multipliers_of(config) else []
  for name in dict.fromkeys([*names, *(g for g, _, _ in sweep_runs)]):
    errors.at_least(f"learning_rates.{name}",
                    config.learning_rates.get(name),
                    0, "a positive rate", exclusive=True)
    train_lib.check(run_config(config, name, seeds[0]))
  parallel.make_mesh(config)
  task = tasks.make_task(run_config(config, names[0], seeds[0]), seeds[0])
  runs = [(name, seed, os.path.join(workdir, "runs", name, f"seed_{seed}"))
          for seed in seeds for name in names]
  done = {}
  if config.get("reuse_runs", True):
    for name, seed, run_dir in runs:
      summary = read_back(run_config(config, name, seed), run_dir)
      if summary is not None:
        done[run_dir] = summary
    for group, _, lr in sweep_runs:
      run_dir = _sweep_dir(workdir, group, lr)
      summary = read_back(run_config(config, group, seeds[0], lr), run_dir)
      if summary is not None:
        done[run_dir] = summary
  return Plan(names, twins, seeds, reference_of(names, twins), task.info,
              runs, done, sweep_runs)


def _plan_text(config: ml_collections.ConfigDict, plan: Plan, workdir: str,
               overall: progress.Overall) -> list[str]:
  """The plan, as the lines shown before the first run."""
  steps = int(config.train.steps)
  seeds = ",".join(map(str, plan.seeds))
  to_train = len(plan.runs) + len(plan.sweep) - len(plan.done)
  info = plan.task
  what = f"{info.get('params', 0):,} parameters"
  if info.get("task") == "lm":
    what = (f"a {config.model.depth}-block width-{config.model.width} GPT "
            f"({what}), batches of {config.train.batch_size} x "
            f"{config.model.context} bytes of {info.get('corpus')}")
  lines = [
      f"quantmuon-compare: {', '.join(plan.names)}; "
      f"seed{'s' * (len(plan.seeds) > 1)} {seeds}; {steps} steps each.",
      f"  {what}.",
  ]
  if plan.sweep:
    lines.append(f"  first a learning-rate sweep: {len(plan.sweep)} runs.")
  if plan.done:
    lines.append(
        f"  {len(plan.done)} of {len(plan.runs) + len(plan.sweep)} runs "
        f"already finished in {workdir}: read back "
        f"(--config.reuse_runs=False trains them again).")
  eta = overall.eta()
  lines.append(
      f"  {to_train} run{'s' * (to_train != 1)} to train, then "
      f"{config.timing.repeats} rounds of step timing; ETA "
      + (f"{progress.clock_text(eta)} (estimated for a 2-core CPU; the "
         f"progress line measures it)." if eta is not None else
         "once the first run has stepped."))
  lines.append(f"  report: {os.path.join(workdir, 'results.md')}")
  return lines


def compare(config: ml_collections.ConfigDict, workdir: str
            ) -> dict[str, Any]:
  """Runs the comparison and writes the report files to ``workdir``.

  Args:
    config: the comparison config (``optimizers``, ``seeds``,
      ``learning_rates``, ``lr_sweep`` and a single-run config).
    workdir: the output directory.

  Returns:
    What ``results.json`` holds.

  Raises:
    ConfigError: see ``check``; raised before any run trains.
  """
  start = time.perf_counter()
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
  plan = check(config, workdir)
  names, seeds = plan.names, plan.seeds
  reuse = bool(config.get("reuse_runs", True))
  trained_here = [(n, s, d) for n, s, d in plan.runs if d not in plan.done]
  sweep_left = [r for r in plan.sweep
                if _sweep_dir(workdir, r[0], r[2]) not in plan.done]
  timed_ready = {n for n, s, d in trained_here if s == seeds[0]}
  overall = progress.Overall(
      sys.stderr, bool(config.train.progress),
      [(f"sweep {g} lr={lr:.3g}", int(config.train.steps))
       for g, _, lr in sweep_left]
      + [(n if len(seeds) == 1 else f"{n} seed={s}", int(config.train.steps))
         for n, s, _ in trained_here],
      timing.calls_of(config, len(names)),
      len([n for n in names if n not in timed_ready]),
      progress.Estimate(float(config.eta.setup_s), float(config.eta.step_s)))
  if overall.enabled:
    for line in _plan_text(config, plan, workdir, overall):
      overall.message(line)
  os.makedirs(workdir, exist_ok=True)
  swept = sweep(config, workdir, names, overall) if plan.sweep else {}
  runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
  ready: dict[str, train_lib.Setup] = {}
  for seed in seeds:
    for name in names:
      run = run_config(config, name, seed)
      run_dir = os.path.join(workdir, "runs", name, f"seed_{seed}")
      label = name if len(seeds) == 1 else f"{name} seed={seed}"
      summary = read_back(run, run_dir) if reuse else None
      if summary is None:
        trained = train_run(run, run_dir, label,
                            overall.run(label, int(config.train.steps)))
        summary = trained.summary
        if seed == seeds[0] and not summary.get("diverged"):
          ready[name] = trained.setup
      runs[name].append(summary)
  times = time_steps(config, names, seeds[0], ready, overall)
  overall.close()
  reference = plan.reference
  results = {
      "reference": reference,
      "reference_note": reference_note(plan),
      "seeds": seeds,
      "task": runs[names[0]][0]["task"],
      "learning_rates": {n: config.learning_rates[n] for n in names},
      "lr_note": config.lr_note,
      "lr_sweep": swept,
      "timing": config.timing.to_dict(),
      "noise_pct": float(config.get("noise_pct", 0.0)),
      "noise_note": config.get("noise_note", ""),
      "optimizers": aggregate(runs, reference, times, plan.twins),
      "wall_time_s": time.perf_counter() - start,
      "config": config.to_dict(),
  }
  report.write_all(results, workdir)
  return results


def command(config: ml_collections.ConfigDict, workdir: str,
            resume: bool) -> None:
  """Trains every optimizer of the config and prints the report.

  Args:
    config: the loaded config.
    workdir: the output directory.
    resume: not supported by the comparison (an error when set).
  """
  if resume:
    raise app.UsageError("--resume applies to quantmuon-train only.")
  compare(config, workdir)
  with open(os.path.join(workdir, "results.md")) as f:
    print(f.read())


def main() -> None:
  """``quantmuon-compare``: the comparison from a config file."""
  cli.run(command, "quick")


if __name__ == "__main__":
  main()
