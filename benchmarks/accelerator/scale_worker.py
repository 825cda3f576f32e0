"""One optimizer's real training step in a process of its own: peak memory.

Run by the memory-at-scale section (``benchmarks.accelerator.scale``), one
process per optimizer, so that the allocator's peak
(``device.memory_stats()["peak_bytes_in_use"]``) is that optimizer's
alone. It builds the config's model and optimizer (``train.setup``, params
and state donated), runs ``--steps`` training steps and prints one line,
``RESULT {json}``: the batch, the allocator's statistics (None on the CPU,
which keeps none), the compiled step's memory, the state's bytes, the
median step time and the environment.

With ``--batch 0 --fill F`` it first picks the batch: the step compiled
from shapes at ``--probe-batch`` gives the memory that does not grow with
the batch (arguments, outputs, and temporaries less the activations) and
the activations per example (the temporaries beyond twice the parameters'
bytes, over the probe batch); the batch is the most that fits ``F`` of the
allocator's limit, rounded down to a multiple of 8 (printed first, as
``FIT {json}``, so that a worker that runs out of memory still tells it).

Usage: python -m benchmarks.accelerator.scale_worker --config
  configs/gpt2_small.py --optimizer muon [--batch 0 --fill 0.8]
  [--overrides '{"data.max_bytes": 16777216}']
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import numpy as np

import quantmuon as qm
from benchmarks import memory_at_scale
from benchmarks.accelerator.scale import FIT, RESULT
from quantmuon_experiments import optimizers, tables, timing, train


def configure(path: str, optimizer: str, overrides: dict[str, Any]) -> Any:
  """The config at ``path`` with the optimizer and ``a.b``-keyed fields set,
  without checkpoints or progress output."""
  config = memory_at_scale.load_config(path)
  for key, value in overrides.items():
    *parents, field = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  config.optimizer.name = optimizer
  config.train.checkpoint_every = 0
  config.train.progress = False
  return config


def fitting_batch(config: Any, fill: float, probe: int, limit: int
                  ) -> dict[str, Any]:
  """The batch that fills ``fill`` of ``limit`` bytes (see the docstring).

  Returns:
    ``batch`` and the estimate it came from.
  """
  graphdef, params = memory_at_scale.abstract_gpt(config)
  tx = train.guard(optimizers.build(config.optimizer, 1000)[0], config.train)
  memory = memory_at_scale.step_memory(config, graphdef, params, tx, probe)
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  per_example = max(memory["temporaries"] - 2 * param_bytes, 1) / probe
  fixed = memory["total"] - memory["aliased"] - per_example * probe
  batch = int((fill * limit - fixed) // per_example) // 8 * 8
  return {"batch": max(batch, 1), "probe_batch": probe,
          "probe_memory": memory, "per_example_bytes": per_example,
          "fixed_bytes": fixed, "limit_bytes": limit, "fill": fill}


def measure(config: Any, steps: int) -> dict[str, Any]:
  """``steps`` training steps of ``config``; times and memory."""
  run = train.setup(config)
  step = timing.stepper(run)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats() or {}
  keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit",
          "largest_alloc_size")
  return {"batch": int(config.train.batch_size),
          **{k: stats.get(k) for k in keys},
          "compiled": run.memory, "state_bytes": qm.nbytes(run.opt_state),
          "first_step_s": times[0],
          "step_s": float(np.median(times[1:] or times))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--optimizer", required=True)
  parser.add_argument("--overrides", default="{}",
                      help="JSON: config field (a.b) -> value")
  parser.add_argument("--batch", type=int, default=0,
                      help="0: --fill picks it, or the config's")
  parser.add_argument("--fill", type=float, default=0.0)
  parser.add_argument("--probe-batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  config = configure(args.config, args.optimizer, json.loads(args.overrides))
  out: dict[str, Any] = {"optimizer": args.optimizer}
  limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
  if args.batch:
    config.train.batch_size = args.batch
  elif args.fill > 0 and limit:
    out["fit"] = fitting_batch(config, args.fill, args.probe_batch, limit)
    print(FIT + json.dumps(out["fit"]), flush=True)
    config.train.batch_size = out["fit"]["batch"]
  out.update(measure(config, args.steps))
  out["environment"] = tables.environment()
  print(RESULT + json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
