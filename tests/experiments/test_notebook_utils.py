"""notebook_utils finds the checkout from the working directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from quantmuon.experiments import notebook_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_repo_root_is_found_from_below():
  assert notebook_utils.repo_root(ROOT / "notebooks") == ROOT


def test_repo_root_outside_a_checkout_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="notebooks/ directory"):
    notebook_utils.repo_root(tmp_path)


def test_load_benchmark_leaves_sys_path_alone():
  # This checkout's package, imported with the root on sys.path, which is
  # then taken off: only the loader can find benchmarks/ now.
  code = ("import sys\n"
          f"sys.path.insert(0, {str(ROOT)!r})\n"
          "import quantmuon.experiments.notebook_utils as nu\n"
          f"sys.path.remove({str(ROOT)!r})\n"
          "before = list(sys.path)\n"
          "module = nu.load_benchmark('readme_tables')\n"
          "assert sys.path == before\n"
          "print(module.__file__)\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, env=env, cwd=ROOT / "notebooks",
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == str(ROOT / "benchmarks" / "readme_tables.py")
