"""The training loop on 8 simulated CPU devices, run by test_train_sharded.py.

Run as a script in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu``;
prints one JSON object of measurements, which the tests assert on.
``python tests/experiments/sharded_train.py OPTIMIZER...``: for each, the
training losses of a ``STEPS``-step run of ``tiny_config`` on one device
and on ``data=2, fsdp=4``; a run stopped halfway on that mesh and resumed
on ``fsdp=8`` and on one device; and where the state lies.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import jax

from quantmuon_experiments import train
from tests.experiments.conftest import tiny_config

STEPS = 20
HALF = STEPS // 2


def losses(workdir: str) -> list[float]:
  """The training losses in ``workdir``'s metrics, in step order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [r["loss"] for r in records if r["split"] == "train"]


def config_of(name: str, data: int, fsdp: int):
  config = tiny_config(steps=STEPS)
  config.optimizer.name = name
  config.train.eval_every = STEPS
  config.train.checkpoint_every = HALF
  config.mesh.data, config.mesh.fsdp = data, fsdp
  return config


def misplaced(trained: train.Trained, fsdp: int) -> list[str]:
  """State leaves of 2+ dims with a row count ``fsdp`` divides that are
  not split over ``fsdp``: the state must follow its row-split parameter."""
  bad = []
  for path, x in jax.tree_util.tree_leaves_with_path(trained.opt_state):
    spec = getattr(x.sharding, "spec", None)
    if x.ndim >= 2 and x.shape[0] % fsdp == 0 and (
        spec is None or not spec or spec[0] != "fsdp"):
      bad.append(f"{jax.tree_util.keystr(path)}: {x.sharding}")
  return bad


def checks(name: str, tmp: str) -> dict:
  def run(tag, data, fsdp, **kwargs):
    workdir = os.path.join(tmp, name, tag)
    return train.fit(config_of(name, data, fsdp), workdir, **kwargs), workdir

  _, one = run("one", 1, 1)
  sharded, mesh = run("mesh", 2, 4)
  _, half = run("half", 2, 4, stop_after=HALF)
  other = half + "_one"
  shutil.copytree(half, other)
  run("half", 1, 8, resume=True)
  run("half_one", 1, 1, resume=True)
  ref = losses(one)

  def diff(workdir):
    got = losses(workdir)
    assert len(got) == STEPS, (workdir, len(got))
    return max(abs(a - b) for a, b in zip(ref, got, strict=True))

  return {"losses_one_device": ref, "mesh_vs_one": diff(mesh),
          "mesh_vs_one_per_step": [
              abs(a - b) for a, b in zip(ref, losses(mesh), strict=True)],
          "resumed_fsdp8_vs_one": diff(half),
          "resumed_one_vs_one": diff(other),
          "resumed_fsdp8_vs_mesh": max(
              abs(a - b) for a, b in zip(losses(mesh), losses(half),
                                         strict=True)),
          "misplaced_state": misplaced(sharded, 4)}


def main() -> None:
  """Runs the checks of the optimizers named on the command line."""
  assert len(jax.devices()) == 8, jax.devices()
  with tempfile.TemporaryDirectory() as tmp:
    out = {name: checks(name, tmp) for name in sys.argv[1:]}
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
