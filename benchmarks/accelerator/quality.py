"""Section 4, quality: a short compare run on the device, against the CPU's.

Runs ``python -m quantmuon_experiments.compare --config
configs/compare_full.py`` (the plan's optimizers with their full-precision
twins, one seed) in a subprocess limited to the section's time, and reads
each run's summary, also from a run cut short. Each optimizer's row gives
its final validation loss and, when the CPU's record
(``benchmarks/results/compare``, seed 0) trained the same run on the same
corpus, the CPU's loss, the difference and the seed noise (the loss's
standard deviation over seeds in ``benchmarks/results/compare_seeds``; the
largest there for an optimizer it lacks). Quantized rows also give the
quantization cost against the twin on the device, beside the CPU's mean and
spread over seeds.

The corpus is the Python standard library's source unless ``corpus`` is
given, so it depends on the Python version: a device whose Python differs
from the CPU record's trains on other bytes (``same_corpus`` false). To
compare on the same bytes, copy the CPU's corpus into the repository with
``python -m benchmarks.accelerator.quality --pack-corpus .corpus`` (ignored
by git, carried to the device) and run the check with
``--quality-corpus .corpus``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator.record import ROOT, Budget, child_env
from benchmarks.common import RESULTS

CPU_RECORD = RESULTS / "compare" / "results.json"
CPU_SEEDS = RESULTS / "compare_seeds" / "results.json"
SEED = 0
# Fields of a run's fingerprint that name the corpus rather than the run:
# the corpus is compared by its bytes instead.
CORPUS_FIELDS = ("path", "suffixes")


def command(plan: plan_lib.Plan, workdir: str, corpus: str | None
            ) -> list[str]:
  """The compare command line of the plan."""
  cmd = [sys.executable, "-m", "quantmuon_experiments.compare",
         "--config", str(ROOT / "configs" / "compare_full.py"),
         "--workdir", workdir, f"--config.optimizers={plan.quality_optimizers}",
         f"--config.seed={SEED}", *plan.quality_overrides]
  if corpus:
    cmd += [f"--config.data.path={Path(corpus).resolve()}",
            "--config.data.suffixes=.py"]
  return cmd


def summaries(workdir: str) -> dict[str, dict[str, Any]]:
  """Each finished run's summary and fingerprint under ``workdir/runs``."""
  out = {}
  pattern = os.path.join(workdir, "runs", "*", f"seed_{SEED}", "summary.json")
  for path in sorted(glob.glob(pattern)):
    run_dir = os.path.dirname(path)
    name = os.path.basename(os.path.dirname(run_dir))
    summary = json.loads(Path(path).read_text())
    fingerprint_path = os.path.join(run_dir, "run_config.json")
    if os.path.exists(fingerprint_path):
      summary["fingerprint"] = json.loads(Path(fingerprint_path).read_text())
    out[name] = summary
  return out


def _without_corpus(fingerprint: dict[str, Any]) -> dict[str, Any]:
  out = json.loads(json.dumps(fingerprint))
  for key in CORPUS_FIELDS:
    out.get("data", {}).pop(key, None)
  return out


def cpu_reference() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
  """The CPU's compare record and its seeds record (None where absent)."""
  def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None
  return load(CPU_RECORD), load(CPU_SEEDS)


def rows_of(runs: dict[str, dict[str, Any]], cpu: dict[str, Any] | None,
            seeds: dict[str, Any] | None) -> list[dict[str, Any]]:
  """One row per optimizer run on the device, with the CPU's beside it.

  Args:
    runs: name -> the device run's summary (with its ``fingerprint``).
    cpu: the CPU's compare record (seed 0), or None.
    seeds: the CPU's record over several seeds, or None.

  Returns:
    The rows.
  """
  import ml_collections

  from quantmuon_experiments import compare, optimizers

  seed_stds = {n: o["final_val_loss_std"]
               for n, o in (seeds or {}).get("optimizers", {}).items()}
  rows = []
  for name, run in runs.items():
    row: dict[str, Any] = {
        "optimizer": name, "final_val_loss": run["final_val_loss"],
        "train_bytes": run["task"].get("train_bytes"),
        "step_time_s": run.get("step_time_s"), "diverged": run["diverged"]}
    cpu_opt = (cpu or {}).get("optimizers", {}).get(name)
    if cpu_opt is not None and SEED in cpu_opt["seeds"]:
      cpu_run = cpu_opt["runs"][cpu_opt["seeds"].index(SEED)]
      expected = compare.run_fingerprint(compare.run_config(
          ml_collections.ConfigDict(cpu["config"]), name, SEED))
      row["same_config"] = (_without_corpus(expected)
                            == _without_corpus(run.get("fingerprint", {})))
      row["same_corpus"] = all(
          cpu_run["task"].get(k) == run["task"].get(k)
          for k in ("train_bytes", "val_bytes"))
      row["cpu_final_val_loss"] = cpu_run["final_val_loss"]
      row["diff"] = run["final_val_loss"] - cpu_run["final_val_loss"]
      row["seed_std"] = seed_stds.get(name, max(seed_stds.values(),
                                                default=None))
    twin = optimizers.twin_of(name)
    if twin in runs:
      row["twin"] = twin
      row["quantization_cost_pct"] = 100 * (
          run["final_val_loss"] / runs[twin]["final_val_loss"] - 1)
      cpu_cost = (seeds or {}).get("optimizers", {}).get(name, {})
      row["cpu_quantization_cost_pct"] = cpu_cost.get("quantization_cost_pct")
      row["cpu_quantization_cost_pct_std"] = cpu_cost.get(
          "quantization_cost_pct_std")
    rows.append(row)
  return rows


def run(plan: plan_lib.Plan, budget: Budget, corpus: str | None = None
        ) -> dict[str, Any]:
  """The quality section.

  Args:
    plan: the optimizers and config overrides.
    budget: the compare run is stopped when the section's time is spent.
    corpus: a directory to train on instead of this Python's stdlib.

  Returns:
    ``rows`` (with the compare's ``time_ratio`` to its reference when it
    finished), the compare's ``environment`` (None when it did not finish),
    its ``returncode`` (None when stopped), its
    ``log_tail``, ``python`` and the ``settings``.
  """
  with tempfile.TemporaryDirectory(prefix="quantmuon_quality_") as workdir:
    cmd = command(plan, workdir, corpus)
    print("  ", " ".join(cmd[1:]), flush=True)
    log_path = os.path.join(workdir, "compare.log")
    with open(log_path, "w") as log:
      try:
        returncode = subprocess.run(
            cmd, cwd=ROOT, env=child_env(), stdout=log,
            stderr=subprocess.STDOUT,
            timeout=max(budget.section_left(), 1.0)).returncode
      except subprocess.TimeoutExpired:
        returncode = None
    log_tail = Path(log_path).read_text()[-2000:]
    runs = summaries(workdir)
    report_path = Path(workdir, "results.json")
    report = (json.loads(report_path.read_text()) if report_path.exists()
              else {})
    ratios = {n: o["time_ratio"]
              for n, o in report.get("optimizers", {}).items()}
  cpu, seeds = cpu_reference()
  expected = plan.quality_optimizers.split(",")
  rows = rows_of(runs, cpu, seeds)
  for row in rows:
    row["time_ratio"] = ratios.get(row["optimizer"])
  out = {"rows": rows, "returncode": returncode,
         "environment": report.get("environment"),
         "log_tail": log_tail, "python": sys.version.split()[0],
         "cpu_python": ((cpu or {}).get("environment") or {}).get("python"),
         "settings": {"command": " ".join(cmd[1:]).replace(workdir, "WORKDIR"),
                      "corpus": corpus}}
  if returncode != 0:
    out["skipped"] = [n for n in expected if n not in runs] or [
        f"compare exited with {returncode}"]
  return out


def pack_corpus(destination: str) -> None:
  """Copies this Python's stdlib corpus (``.py`` files) to ``destination``,
  keeping relative paths, so a device trains on the same bytes."""
  from quantmuon_experiments import data
  root = data.default_corpus_path()
  files = data.list_files(root, (".py",))
  for file in files:
    target = Path(destination) / file.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
  size = sum(f.stat().st_size for f in files)
  print(f"copied {len(files)} files, {size / 2 ** 20:.1f} MiB, from {root} "
        f"to {destination}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pack-corpus", metavar="DIR", required=True,
                      help="copy this Python's stdlib corpus to DIR")
  pack_corpus(parser.parse_args().pack_corpus)


if __name__ == "__main__":
  main()
