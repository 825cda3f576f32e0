"""Trains every optimizer on the same model, data and seeds, and reports.

``compare(config, workdir)`` runs each name in ``config.optimizers`` for each
seed in ``config.seeds`` (or ``config.seed``), with the rate in
``config.learning_rates``. Width-scaled ``muon`` gives its AdamW part the
``adamw`` rate; every other optimizer uses one rate for both parts.

With ``config.lr_sweep`` (multipliers, e.g. ``"0.5,1,2"``) it first tunes one
rate per group of ``optimizers.RATE_GROUPS``: AdamW, width-scaled Muon, and
consistent-RMS full-precision Muon (``muon_rms``), whose rate the quantized
presets share. Each group's rate is scaled by each multiplier, the first
seed is trained, and the lowest final validation loss wins.

After training, each optimizer's jitted step is timed apart from training
(``config.timing``; see ``timing``): warmed up, interleaved over the
optimizers, repeated; the report gives the median and the spread.

Writes ``results.json``, ``results.md``, ``loss_curves.png`` and
``memory.png`` to ``workdir`` (see ``report``), and each run's metrics under
``workdir/runs`` (``workdir/sweep`` for the sweep). With
``config.reuse_runs``, a run whose directory already holds the summary of
the same single-run config is read back instead of trained again, so an
interrupted comparison resumes, and seeds trained by separate commands into
one workdir are reported together.

Run it as ``quantmuon-compare --config configs/compare.py --workdir DIR`` or
``python -m quantmuon_experiments.compare ...``.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import ml_collections
import numpy as np
from absl import app

from quantmuon_experiments import cli, errors, optimizers, report, timing
from quantmuon_experiments.train import setup, train

REFERENCE = "muon"
TWIN = "muon_rms"  # full precision with the quantized presets' scaling
# Keys of the comparison config that no single run reads.
COMPARISON_KEYS = ("optimizers", "twins", "seeds", "learning_rates",
                   "lr_sweep", "lr_note", "timing", "reuse_runs")
RUN_CONFIG = "run_config.json"
SINGLE_DEVICE = {"data": 1, "fsdp": 1}


def parse_list(text: str) -> list[str]:
  """Splits a comma-separated config string, dropping blanks."""
  return [s.strip() for s in str(text).split(",") if s.strip()]


def seeds_of(config: ml_collections.ConfigDict) -> list[int]:
  """``config.seeds`` as ints, or ``[config.seed]`` when it is empty."""
  return [int(s) for s in parse_list(config.seeds)] or [int(config.seed)]


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
  out = json.loads(config.to_json())
  for key in COMPARISON_KEYS:
    out.pop(key, None)
  if out.get("mesh") == SINGLE_DEVICE:  # the same run as no mesh field
    del out["mesh"]
  return out


def train_or_reuse(config: ml_collections.ConfigDict, run_dir: str,
                   reuse: bool, desc: str) -> dict[str, Any]:
  """Trains one run, or reads back its summary when ``reuse`` allows it.

  Args:
    config: the single-run config.
    run_dir: the run's directory; ``run_config.json`` records its
      fingerprint beside ``summary.json``.
    reuse: read back a finished run of the same fingerprint.
    desc: the progress bar's label.

  Returns:
    The run's summary (see ``train``).
  """
  fingerprint = run_fingerprint(config)
  summary_path = os.path.join(run_dir, "summary.json")
  record_path = os.path.join(run_dir, RUN_CONFIG)
  if reuse and os.path.exists(summary_path) and os.path.exists(record_path):
    with open(record_path) as f:
      recorded = json.load(f)
    if recorded == fingerprint:
      with open(summary_path) as f:
        return json.load(f)
  summary = train(config, run_dir, desc=desc)
  with open(record_path, "w") as f:
    json.dump(fingerprint, f, indent=1)
  return summary


def sweep(config: ml_collections.ConfigDict, workdir: str,
          names: list[str]) -> dict[str, Any]:
  """Tunes the rate of each group that ``names`` touch, in place.

  Args:
    config: the comparison config; its ``learning_rates`` are updated.
    workdir: the sweep runs go to ``workdir/sweep``.
    names: the optimizers being compared.

  Returns:
    Per group: the rates tried, their final validation losses, the best.
  """
  multipliers = [float(m) for m in parse_list(config.lr_sweep)]
  seed = seeds_of(config)[0]
  groups = [g for g in optimizers.RATE_GROUPS
            if any(optimizers.rate_group(n) == g for n in names)]
  out = {}
  for group in groups:  # adamw first: width-scaled muon's AdamW part uses it
    base = float(config.learning_rates[group])
    tried = []
    for m in multipliers:
      lr = base * m
      run_dir = os.path.join(workdir, "sweep", group, f"lr_{lr:.4g}")
      summary = train(run_config(config, group, seed, lr), run_dir,
                      desc=f"sweep {group} lr={lr:.3g}")
      loss = summary["final_val_loss"]
      tried.append({"learning_rate": lr, "multiplier": m,
                    "final_val_loss": loss})
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
               seed: int) -> dict[str, list[float]]:
  """Each optimizer's training step, timed apart from training.

  Args:
    config: the comparison config (``timing``: ``warmup``, ``repeats``,
      ``steps``).
    names: the optimizers.
    seed: the seed of the runs whose steps are timed.

  Returns:
    name -> seconds per step in each round (see ``timing.round_robin``).
  """
  steps = {name: timing.stepper(setup(run_config(config, name, seed)))
           for name in names}
  t = config.timing
  return timing.round_robin(steps, warmup=int(t.warmup),
                            repeats=int(t.repeats), calls=int(t.steps))


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


def compare(config: ml_collections.ConfigDict, workdir: str
            ) -> dict[str, Any]:
  """Runs the comparison and writes the report files to ``workdir``.

  Args:
    config: the comparison config (``optimizers``, ``seeds``,
      ``learning_rates``, ``lr_sweep`` and a single-run config).
    workdir: the output directory.

  Returns:
    What ``results.json`` holds.
  """
  start = time.perf_counter()
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
  names = parse_list(config.optimizers)
  unknown = [n for n in names if n not in optimizers.NAMES]
  if not names or unknown:
    raise errors.ConfigError(
        f"config.optimizers: unknown names {unknown} in "
        f"{config.optimizers!r}; list names from "
        f"{','.join(optimizers.NAMES)}, separated by commas.")
  timing.check(config)
  names, twins = with_twins(names) if config.get("twins", True) else (
      names, {})
  os.makedirs(workdir, exist_ok=True)
  swept = sweep(config, workdir, names) if parse_list(config.lr_sweep) else {}
  seeds = seeds_of(config)
  runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
  for seed in seeds:
    for name in names:
      run_dir = os.path.join(workdir, "runs", name, f"seed_{seed}")
      label = name if len(seeds) == 1 else f"{name} seed={seed}"
      runs[name].append(train_or_reuse(
          run_config(config, name, seed), run_dir,
          bool(config.get("reuse_runs", False)), label))
  reference = REFERENCE if REFERENCE in names else names[0]
  times = time_steps(config, names, seeds[0])
  results = {
      "reference": reference,
      "seeds": seeds,
      "task": runs[names[0]][0]["task"],
      "learning_rates": {n: config.learning_rates[n] for n in names},
      "lr_note": config.lr_note,
      "lr_sweep": swept,
      "timing": config.timing.to_dict(),
      "optimizers": aggregate(runs, reference, times, twins),
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
  cli.run(command)


if __name__ == "__main__":
  main()
