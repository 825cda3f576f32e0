"""The prepared accelerator check: ``python -m benchmarks.accelerator``.

Runs the sections of ``benchmarks.accelerator`` in order of value (kernels,
bandwidth, step, quality, memory at scale; then, with ``--profile``, the
profile) within one time budget, and writes ``accelerator.json`` and
``accelerator.md`` to ``--out`` after each. This process never touches the
device: kernels, bandwidth and step run in a device worker (restarted for
the sections after one that crashes it), the quality section in a compare
subprocess, memory at scale in one worker per optimizer, the profile in a
device worker of its own; each has the device to itself.

Usage (from the repository root)::

  python -m benchmarks.accelerator --smoke            # CPU, tiny shapes
  python -m benchmarks.accelerator --out DIR --profile  # the full check
  python -m benchmarks.accelerator --out DIR --sections quality,memory_at_scale

``--sections`` reruns some sections and keeps the others of the record
already in ``--out``. See docs/accelerator.md for what a GPU session runs.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.accelerator import plan as plan_lib
from benchmarks.accelerator import record as record_lib
from benchmarks.accelerator.record import (
    DEVICE_SECTIONS,
    ROOT,
    SECTIONS,
    Budget,
    Record,
    run_section,
    where,
)

DEFAULT_OUT = {"full": ROOT / "benchmarks" / "results",
               "smoke": Path(tempfile.gettempdir())
               / "quantmuon_accelerator_smoke"}
# Seconds a worker gets past the run's budget before it is stopped, and
# an estimate of its start-up (imports), taken off the budget it is given.
GRACE_S = 20.0
STARTUP_S = 5.0


def stream(cmd: list[str], timeout: float) -> tuple[int | None, str]:
  """Runs ``cmd`` in the repository root, printing its output as it comes.

  Returns:
    Its exit status (None when stopped at ``timeout``) and the last lines
    of its output.
  """
  proc = subprocess.Popen(cmd, cwd=ROOT, env=record_lib.child_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1)
  tail: collections.deque[str] = collections.deque(maxlen=40)

  def pump() -> None:
    for line in proc.stdout:
      print(line, end="", flush=True)
      tail.append(line)

  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  try:
    returncode = proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    returncode = None
  reader.join(timeout=5)
  return returncode, "".join(tail)


def device_sections(out: Path, sections: list[str], plan: plan_lib.Plan,
                    budget: Budget) -> None:
  """Runs the device sections in workers; a section that kills its worker
  is recorded as an error and a new worker runs the rest."""
  pending = list(sections)
  while pending and budget.left() > STARTUP_S:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.accelerator.device_worker",
           "--plan", plan.name, "--out", str(out),
           "--sections", ",".join(pending),
           "--budget-s", f"{budget.left() - STARTUP_S:.1f}"]
    returncode, tail = stream(cmd, budget.left() + GRACE_S)
    record = Record.load(out)
    pending = [s for s in pending if s not in record.sections]
    if pending:
      how = ("was stopped" if returncode is None
             else f"exited with status {returncode}")
      record.put(pending.pop(0), {
          "status": "error", "error": f"the device worker {how} during this "
          "section", "log_tail": tail, **where(None),
          "wall_s": time.perf_counter() - start})
  for name in pending:
    Record.load(out).put(name, {"status": "skipped",
                                "reason": "the run's budget was spent",
                                **where(None), "wall_s": 0.0})


def host_section(out: Path, name: str, plan: plan_lib.Plan, budget: Budget,
                 corpus: str | None) -> None:
  """Runs the quality or memory-at-scale section from this process."""
  def quality() -> dict[str, Any]:
    from benchmarks.accelerator import quality as quality_lib
    return quality_lib.run(plan, budget, corpus)

  def memory_at_scale() -> dict[str, Any]:
    from benchmarks.accelerator import scale
    return scale.run(plan, budget)

  runners = {"quality": quality, "memory_at_scale": memory_at_scale}
  print(f"== {name} ({budget.left():.0f} s left) ==", flush=True)
  entry = run_section(runners[name], budget, plan.caps_s[name],
                      plan.min_s[name],
                      lambda: Record.load(out).data.get("environment"))
  Record.load(out).put(name, entry)


def in_order(out: Path, sections: list[str], plan: plan_lib.Plan,
             budget: Budget, corpus: str | None) -> None:
  """Runs the sections in order, each run of device sections in one
  worker."""
  batch: list[str] = []
  for name in sections + [None]:
    if name in DEVICE_SECTIONS:
      batch.append(name)
      continue
    if batch:
      device_sections(out, batch, plan, budget)
      batch = []
    if name is not None:
      host_section(out, name, plan, budget, corpus)


def compile_cache(smoke: bool) -> dict[str, str]:
  """The persistent compilation cache of the workers, every compile kept:
  a program compiled twice (the compare's timing, a rerun of the check)
  compiles once. The full run's lies in the temporary directory, so that
  a rerun on the same machine finds it; the smoke's is new each run."""
  root = Path(tempfile.gettempdir())
  directory = (tempfile.mkdtemp(prefix="quantmuon_jax_cache_", dir=root)
               if smoke else str(root / "quantmuon_jax_cache"))
  return {"JAX_COMPILATION_CACHE_DIR": directory,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def parse(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes, kernels in interpret mode (CPU)")
  parser.add_argument("--out", default=None,
                      help="directory of accelerator.json and .md (default: "
                      "benchmarks/results; the smoke's: a temporary one)")
  parser.add_argument("--budget", type=float, default=None,
                      help="seconds for the whole run (default: the plan's)")
  parser.add_argument("--sections", default=None,
                      help=f"some of {','.join(SECTIONS)}, run in that "
                      "order (default: all but profile)")
  parser.add_argument("--profile", action="store_true",
                      help="add the profile section: leafwise and chain "
                      "steps traced by jax.profiler")
  parser.add_argument("--quality-corpus", default=None,
                      help="train the quality run on this directory (see "
                      "benchmarks/accelerator/quality.py)")
  parser.add_argument("--no-compile-cache", action="store_true",
                      help="no persistent compilation cache for the workers")
  args = parser.parse_args(argv)
  asked = (args.sections.split(",") if args.sections
           else [s for s in SECTIONS if s != "profile"])
  unknown = sorted(set(asked) - set(SECTIONS))
  if unknown:
    parser.error(f"--sections: unknown {unknown}; choose from {SECTIONS}")
  args.sections = [s for s in SECTIONS
                   if s in asked or (s == "profile" and args.profile)]
  args.argv = list(sys.argv[1:] if argv is None else argv)
  return args


def main(argv: list[str] | None = None) -> Path:
  """Runs the check; returns the path of ``accelerator.json``."""
  args = parse(argv)
  plan = plan_lib.SMOKE if args.smoke else plan_lib.FULL
  out = Path(args.out) if args.out else DEFAULT_OUT[plan.name]
  budget = Budget(args.budget or plan.budget_s)
  record_lib.CHILD_ENV.clear()
  if not args.no_compile_cache:
    record_lib.CHILD_ENV.update(compile_cache(args.smoke))
  try:
    return run(args, plan, budget, out)
  finally:
    if args.smoke and "JAX_COMPILATION_CACHE_DIR" in record_lib.CHILD_ENV:
      shutil.rmtree(record_lib.CHILD_ENV["JAX_COMPILATION_CACHE_DIR"],
                    ignore_errors=True)


def run(args: argparse.Namespace, plan: plan_lib.Plan, budget: Budget,
        out: Path) -> Path:
  """The check, once the workers' environment is set."""
  sections = args.sections
  keep = {}
  main_sections = set(SECTIONS) - {"profile"}
  if (out / "accelerator.json").exists() and not main_sections <= set(
      sections):  # a rerun of some sections keeps the others
    keep = {k: v for k, v in Record.load(out).sections.items()
            if k not in sections}
  settings = {"plan": dataclasses.asdict(plan), "budget_s": budget.total_s,
              "sections": sections,
              "quality_corpus": args.quality_corpus,
              "compile_cache": record_lib.CHILD_ENV.get(
                  "JAX_COMPILATION_CACHE_DIR"),
              "argv": args.argv}
  record = Record.start(out, plan.name, settings, keep)
  print(f"accelerator check ({plan.name}): {', '.join(sections)}; budget "
        f"{budget.total_s:.0f} s; writing {record.json_path}", flush=True)
  in_order(out, sections, plan, budget, args.quality_corpus)
  record = Record.load(out)
  for target in record.data.get("evaluation", {}).get("targets", []):
    print(f"  [{target['met']}] {target['section']}: {target['target']}: "
          f"{target['measured']}", flush=True)
  print(f"wrote {record.json_path} and {record.markdown_path} in "
        f"{time.perf_counter() - budget.start:.0f} s", flush=True)
  return record.json_path


if __name__ == "__main__":
  main()
