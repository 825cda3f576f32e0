"""``python -m benchmarks.fp_study``: runs the study and records it.

Writes ``fp_quantization.json`` and ``.png`` to ``benchmarks/results/``
(or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import benchmarks.fp_study as fp_study
from benchmarks.fp_study import plots, problems, runner, statistics, verdicts
from quantmuon_experiments import tables

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
  """Runs every problem, decides the findings, writes the record."""
  parser = argparse.ArgumentParser(
      description=fp_study.__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=10)
  parser.add_argument("--steps", default=",".join(map(str, runner.STEPS)))
  parser.add_argument("--problems", default="rosenbrock,digits_mlp")
  parser.add_argument("--resamples", type=int,
                      default=statistics.BOOTSTRAP)
  parser.add_argument("--out", type=Path, default=RESULTS,
                      help="directory of fp_quantization.json and .png")
  args = parser.parse_args()
  start = time.perf_counter()
  steps = [int(s) for s in args.steps.split(",")]
  chosen = [problems.PROBLEMS[name]() for name in args.problems.split(",")]
  data = runner.experiment(
      chosen, args.seeds, steps,
      stochastic_steps=1024 if 1024 in steps else steps[0])
  v = verdicts.analyse(data, args.resamples)
  elapsed = time.perf_counter() - start
  table = verdicts.c_star_table(v)
  lines = verdicts.verdict_lines(v)
  print(f"\nneeded mantissa bits c*(T) over {args.seeds} seeds, "
        f"round-to-nearest, E{runner.EXPONENT_BITS} "
        f"(learning rates {data['learning_rates']} at T={min(steps)})")
  print(table)
  print()
  print("\n".join(lines))
  env = tables.environment()
  print(f"\n{elapsed:.0f} s on {env['cpu']} ({env['date']})")
  payload = {"benchmark": "fp_quantization", "environment": env,
             "settings": {"seeds": args.seeds, "steps": steps,
                          "problems": [p.name for p in chosen],
                          "learning_rates": data["learning_rates"],
                          "tuning": data["tuning"],
                          "exponent_bits": runner.EXPONENT_BITS,
                          "mantissa_bits": list(runner.BITS),
                          "growths": list(runner.GROWTHS),
                          "checkpoints": runner.CHECKPOINTS,
                          "tolerance": statistics.TOLERANCE,
                          "resamples": args.resamples,
                          "seconds": elapsed},
             "verdicts": v, "findings": lines, "tables": {"c_star": table},
             "records": data["records"]}
  args.out.mkdir(parents=True, exist_ok=True)
  path = args.out / "fp_quantization.json"
  path.write_text(json.dumps(payload, indent=1) + "\n")
  plots.plot(data, v, args.out / "fp_quantization.png")
  print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
  main()
