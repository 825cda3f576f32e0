"""The console scripts answer before JAX loads."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_entry_points_import_no_jax():
  code = ("import sys\n"
          "import quantmuon_experiments.scripts\n"
          "heavy = ('jax', 'flax', 'optax', 'orbax.checkpoint')\n"
          "print(sorted(m for m in heavy if m in sys.modules))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "[]"
