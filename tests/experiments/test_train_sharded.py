"""The training loop on a mesh: 8 simulated devices, the mesh's checks.

JAX has one device in the pytest process, so the 8-device runs go to a
fresh process (``sharded_train.py``) with
``--xla_force_host_platform_device_count=8``.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest

from quantmuon_experiments import errors, parallel
from tests.experiments.conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
EIGHT = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "PYTHONPATH": str(ROOT)}
# Losses of the sharded run against one device, step by step.
LOSS_TOL = 1e-4


@functools.cache
def runs(*names: str) -> dict:
  done = subprocess.run(
      [sys.executable, str(ROOT / "tests" / "experiments" /
                           "sharded_train.py"), *names],
      env=EIGHT, capture_output=True, text=True, timeout=3600, check=False)
  assert done.returncode == 0, done.stderr[-4000:]
  return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["muon_8bit", "muonq"])
def test_sharded_run_and_resume_across_meshes_match_one_device(name):
  got = runs(name)[name]
  assert len(got["losses_one_device"]) == 20
  assert got["mesh_vs_one"] <= LOSS_TOL, got
  assert got["resumed_fsdp8_vs_one"] <= LOSS_TOL, got
  assert got["resumed_one_vs_one"] <= LOSS_TOL, got
  assert got["resumed_fsdp8_vs_mesh"] <= LOSS_TOL, got
  assert got["misplaced_state"] == [], got


def test_mesh_shape_checks_devices_and_batch():
  mesh = tiny_config().mesh
  assert parallel.mesh_shape(mesh, 4, 8) is None  # 1 x 1: one device
  mesh.data, mesh.fsdp = 2, 4
  assert parallel.mesh_shape(mesh, 4, 8) == (2, 4)
  with pytest.raises(errors.ConfigError, match=r"data \* fsdp = 2 \* 4 = 8 "
                     "must equal the number of devices, 4"):
    parallel.mesh_shape(mesh, 4, 4)
  with pytest.raises(errors.ConfigError,
                     match="batch_size=3 is not divisible by "
                     "config.mesh.data=2"):
    parallel.mesh_shape(mesh, 3, 8)
  mesh.fsdp = 0
  with pytest.raises(errors.ConfigError, match="at least 1"):
    parallel.mesh_shape(mesh, 4, 8)


def test_params_split_rows_where_divisible():
  assert parallel.param_spec((64, 48), 4) == parallel.P("fsdp")
  assert parallel.param_spec((66, 48), 4) == parallel.P()
  assert parallel.param_spec((), 4) == parallel.P()
  assert parallel.param_spec((64, 48), 1) == parallel.P()


@pytest.mark.slow
def test_train_command_line_on_a_mesh(tmp_path):
  """``--config.mesh.data=2 --config.mesh.fsdp=4`` on 8 devices."""
  cmd = [sys.executable, "-m", "quantmuon_experiments.train",
         "--config", str(ROOT / "configs" / "train.py"),
         "--workdir", str(tmp_path), "--config.mesh.data=2",
         "--config.mesh.fsdp=4", "--config.train.steps=2",
         "--config.train.eval_every=2", "--config.train.batch_size=4",
         "--config.train.eval_batches=1", "--config.train.progress=False",
         "--config.train.checkpoint_every=2", "--config.model.width=32",
         "--config.model.depth=1", "--config.model.context=16",
         "--config.data.max_bytes=200000"]
  done = subprocess.run(cmd, capture_output=True, text=True, env=EIGHT,
                        cwd=ROOT, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["optimizer"] == "muon_8bit"
  assert len(summary["train_curve"]) == 2
  assert (tmp_path / "checkpoints" / "2").is_dir()
