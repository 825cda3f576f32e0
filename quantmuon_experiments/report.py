"""The comparison's report: results.json, results.md and two plots."""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from quantmuon_experiments import plots, tables


def _mb(n: float) -> str:
  return f"{n / 2**20:.2f}"


def _pm(mean: float, std: float, seeds: int, fmt: str) -> str:
  text = format(mean, fmt)
  return text + (f" ± {format(std, fmt.lstrip('+'))}" if seeds > 1 else "")


def _range(spread: dict[str, float], scale: float, fmt: str) -> str:
  lo, mid, hi = (format(scale * spread[k], fmt) for k in ("min", "median",
                                                          "max"))
  return f"{mid} ({lo}-{hi})"


def markdown(results: dict[str, Any]) -> str:
  """The results table and its context as Markdown.

  Args:
    results: what ``compare.compare`` returns.

  Returns:
    The text of results.md.
  """
  ref = results["reference"]
  opts = results["optimizers"]
  seeds = len(results["seeds"])
  task = results["task"]
  steps = results["config"]["train"]["steps"]
  twin = all("twin_gap_pct" in r for r in opts.values())
  costs = any(r.get("twin") for r in opts.values())
  head = ["optimizer", "lr", "final val loss", "best val loss",
          f"gap to {ref} (%)"] + (["gap to muon_rms (%)"] if twin else []) + (
              ["quantization cost vs twin (%)"] if costs else []) + [
              "state MiB", "B/matrix param", "B/param (all)",
              "memory reduction",
              "step ms (min-max)", "time ratio (min-max)",
              "compiled step MiB"]
  lines = [
      "# quantmuon comparison",
      "",
      f"- date: {results.get('date', '')}",
      f"- machine: {results.get('machine', '')}",
      f"- task: {task.get('task')}, {task.get('params'):,} parameters, "
      f"{steps} steps, seeds {results['seeds']}",
      f"- wall time: {results['wall_time_s'] / 60:.1f} min",
      f"- reference: `{ref}` "
      f"({results.get('reference_note') or 'full precision'})",
      "",
  ]
  rows = []
  for name, r in opts.items():
    flag = " (diverged)" if r.get("diverged") else ""
    if r.get("skipped_steps"):
      flag += f" ({r['skipped_steps']} skipped)"
    cells = [
        f"`{name}`{flag}", f"{r['learning_rate']:.3g}",
        _pm(r["final_val_loss"], r["final_val_loss_std"], seeds, ".4f"),
        _pm(r["best_val_loss"], r["best_val_loss_std"], seeds, ".4f"),
        _pm(r["gap_pct"], r["gap_pct_std"], seeds, "+.2f")]
    if twin:
      cells.append(_pm(r["twin_gap_pct"], r["twin_gap_pct_std"], seeds,
                       "+.2f"))
    if costs:
      cells.append(
          _pm(r["quantization_cost_pct"], r["quantization_cost_pct_std"],
              seeds, "+.2f") + f" (`{r['twin']}`)" if r.get("twin") else "")
    cells += [_mb(r["state_bytes"]),
              f"{r['state_bytes_per_matrix_param']:.3f}",
              f"{r['state_bytes_per_param']:.2f}",
              f"{r['memory_reduction']:.2f}x",
              _range(r["step_time"], 1e3, ".1f"),
              _range(r["time_ratio_spread"], 1, ".2f"),
              _mb(r["compiled_step_memory_bytes"])]
    rows.append(dict(enumerate(cells)))
  lines += [
      tables.markdown(rows, dict(enumerate(head))),  # titles may repeat
      "",
      f"Gap: (final val loss - {ref}'s) / {ref}'s, paired by seed"
      + (" (mean ± std over seeds)" if seeds > 1 else "") + ". Memory "
      f"reduction: {ref}'s optimizer-state bytes over the optimizer's "
      "(`quantmuon.nbytes`). Compiled step: arguments + outputs + "
      "temporaries of the jitted train step (`memory_analysis`).",
      "",
      _memory_note(results),
      "",
      _timing_note(results),
  ]
  if costs:
    lines += [
        "", "Quantization cost: the gap to the optimizer's exact "
        "full-precision twin (`NAME_fp32`: the same preset with float32 "
        "momentum and every other option equal), paired by seed. Twins "
        "that build the same optimizer run once."]
  if twin:
    lines += [
        "", "`muon_rms` is full-precision Muon with the consistent-RMS "
        "scaling (0.2 sqrt(max(m, n))) the quantized presets use, at their "
        "shared rate, with optax's EMA momentum and Nesterov mix: the gap "
        "to it mixes the cost of quantization with that of each preset's "
        "accumulation, normalization and Nesterov choice."]
  lines += ["", _noise_note(results)]
  if results.get("lr_sweep"):
    lines += ["", "Learning rates: tuned by this run's sweep (below)."]
  else:
    lines += ["", "Learning rates: the config's (`learning_rates`), not "
              "tuned by this run" + (f"; {results['lr_note']}"
                                     if results.get("lr_note") else ".")]
  if results.get("lr_sweep"):
    ran = results["optimizers"]
    sweep = [{"group (shared by)": f"`{group}` ("
              + ", ".join([m for m in s["members"] if m in ran] or [group])
              + ")",
              "rate": f"{t['learning_rate']:.3g}"
              + (" **best**" if t["learning_rate"] == s["best"] else ""),
              "final val loss": f"{t['final_val_loss']:.4f}"}
             for group, s in results["lr_sweep"].items() for t in s["tried"]]
    lines += ["", "## Learning-rate sweep", "", tables.markdown(sweep)]
  return "\n".join(lines) + "\n"


def _noise_note(results: dict[str, Any]) -> str:
  """Which differences this run cannot tell from seed-to-seed noise."""
  seeds = len(results["seeds"])
  if seeds > 1:
    return (f"Noise: ± is the standard deviation over the {seeds} seeds; a "
            f"gap within about twice its ± is not resolved by this run.")
  noise = float(results.get("noise_pct") or 0.0)
  if noise > 0:
    how = results.get("noise_note") or "measured for this config"
    return (f"Noise: this run has one seed. At this size a gap between two "
            f"optimizers moves by about {noise:.2g}% (standard deviation) "
            f"from seed to seed ({how}), so gaps and quantization costs "
            f"within about ±{2 * noise:.2g}% are not resolved by it; add "
            f"`--config.seeds=0,1,2` for a spread of this run's own.")
  return ("Noise: this run has one seed, and the seed-to-seed noise of this "
          "config was not measured; add `--config.seeds=0,1,2` to see which "
          "gaps are resolved.")


def _memory_note(results: dict[str, Any]) -> str:
  """What the state's bytes are made of, and what dominates the step."""
  ref = results["reference"]
  opts = results["optimizers"]
  r = opts[ref]
  mem = r["compiled_step_memory"]
  smaller = [n for n in opts if opts[n]["state_bytes"] < r["state_bytes"]]
  if mem["temporaries"] > r["state_bytes"]:
    verdict = ("Activations dominate the step's memory at this size: the "
               "temporaries (activations, gradients and workspace) are "
               f"{_mb(mem['temporaries'])} MiB against {_mb(r['state_bytes'])}"
               f" MiB of {ref}'s state")
  else:
    verdict = (f"{ref}'s state ({_mb(r['state_bytes'])} MiB) outweighs the "
               f"step's temporaries ({_mb(mem['temporaries'])} MiB)")
  if smaller:
    smallest = min(smaller, key=lambda n: opts[n]["state_bytes"])
    s = opts[smallest]
    step_ref, step_small = (r["compiled_step_memory_bytes"],
                            s["compiled_step_memory_bytes"])
    change = 100 * (step_small - step_ref) / max(step_ref, 1)
    effect = (
        f"{verdict}, so the smallest state (`{smallest}`, "
        f"{r['state_bytes'] / max(s['state_bytes'], 1):.2f}x smaller than "
        f"{ref}'s) changes the compiled step by {change:+.1f}% "
        f"({_mb(step_ref)} to {_mb(step_small)} MiB).")
  else:
    effect = f"{verdict}; no optimizer here has a smaller state than {ref}."
  return (
      f"B/matrix param: the state of the {r['matrix_params']:,} parameters "
      f"of the hidden matrices (Muon's leaves, what a format stores) per "
      f"such parameter. B/param (all): the whole state over all "
      f"{r['params']:,} parameters. The rest, {_mb(r['other_state_bytes'])}"
      f" MiB in `{ref}`, is AdamW's two float32 moments of the "
      f"{r['other_params']:,} other parameters (embeddings, head, norms, "
      f"biases; {100 * r['other_params'] / r['params']:.0f}% of the "
      f"parameters) and step counters, the same in every Muon optimizer. "
      f"{effect} At a user's scale, see `python -m "
      f"benchmarks.memory_at_scale`.")


def _timing_note(results: dict[str, Any]) -> str:
  """How the step times were measured, and which numbers to trust."""
  t = results["timing"]
  ref = results["reference"]
  return (
      f"Step ms: the whole jitted training step (forward, backward and "
      f"optimizer) of each optimizer, timed after training and apart from "
      f"it: {t['warmup']} untimed calls each, then {t['repeats']} rounds "
      f"in which every optimizer runs {t['steps']} steps in turn (the "
      f"order rotating), so a busy moment of the machine falls on all of "
      f"them; median over rounds, and min-max. Time ratio: median of each "
      f"round's ratio to {ref}'s time in the same round. Times whose "
      f"ranges overlap are not told apart by this run. These times "
      f"include the model's forward and backward pass; for the "
      f"optimizer's own cost and its ratios, trust `python -m "
      f"benchmarks.optimizer_step`, which times the optimizer update alone "
      f"against `optax.contrib.muon`.")


def write_all(results: dict[str, Any], workdir: str) -> None:
  """Writes results.json, results.md, loss_curves.png and memory.png.

  Args:
    results: what ``compare.compare`` returns; ``date`` (local time),
      ``environment`` (``tables.environment``) and ``machine`` (it in one
      line) are added.
    workdir: the output directory.
  """
  now = datetime.datetime.now().astimezone()
  results.setdefault("date", now.isoformat(timespec="seconds"))
  env = results.setdefault("environment", tables.environment())
  results.setdefault("machine", tables.describe(env))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown(results))
  plots.plot_losses(results, os.path.join(workdir, "loss_curves.png"))
  plots.plot_memory(results, os.path.join(workdir, "memory.png"))
