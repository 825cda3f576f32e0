"""notebook_utils: the configs need no checkout; the checkout is found from
the package or the working directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from quantmuon_experiments import defaults, notebook_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _python(code: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=env, cwd=cwd, timeout=300)


def test_repo_root_is_found_from_below():
  assert notebook_utils.repo_root(ROOT / "notebooks") == ROOT


def test_repo_root_outside_a_checkout_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="notebooks/ directory"):
    notebook_utils.repo_root(tmp_path)


def test_experiment_config_and_repo_root_from_elsewhere(tmp_path):
  # Outside the checkout: the config comes from the package, and the
  # checkout is the one the package lies in.
  code = ("import quantmuon_experiments.notebook_utils as nu\n"
          "config = nu.experiment_config()\n"
          "print(config.model.width, config.train.steps, nu.repo_root())\n")
  out = _python(code, tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  full = defaults.full_config()
  assert out.stdout.split() == [str(full.model.width),
                                str(full.train.steps), str(ROOT)]


def test_load_benchmark_leaves_sys_path_alone():
  # This checkout's package, imported with the root on sys.path, which is
  # then taken off: only the loader can find benchmarks/ now.
  code = ("import sys\n"
          f"sys.path.insert(0, {str(ROOT)!r})\n"
          "import quantmuon_experiments.notebook_utils as nu\n"
          f"sys.path.remove({str(ROOT)!r})\n"
          "before = list(sys.path)\n"
          "module = nu.load_benchmark('readme_tables')\n"
          "assert sys.path == before\n"
          "print(module.__file__)\n")
  out = _python(code, ROOT / "notebooks")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == str(ROOT / "benchmarks" / "readme_tables.py")
