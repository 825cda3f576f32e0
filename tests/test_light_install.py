"""The library installs and imports without the ``experiments`` extra.

``import quantmuon`` and its core modules never import the extra's
packages; ``quantmuon.experiments`` without them names the extra; and
``pyproject.toml`` lists them in the extra, not in the dependencies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from quantmuon import experiments

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("flax", "ml_collections", "orbax", "matplotlib", "tqdm", "sklearn",
         "quantmuon.experiments")
CORE = ("quantmuon", "quantmuon.formats", "quantmuon.transforms",
        "quantmuon.kernels", "quantmuon.presets", "quantmuon.routing",
        "quantmuon.memory", "quantmuon.demo", "quantmuon.tables")


def _python(code: str) -> subprocess.CompletedProcess:
  """Runs ``code`` in a fresh interpreter at the repository's root."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_core_imports_none_of_the_extra():
  code = (
      "import importlib, sys\n"
      f"for name in {CORE!r}:\n"
      "  importlib.import_module(name)\n"
      f"  found = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}\n"
      f"           or m.startswith('quantmuon.experiments')]\n"
      "  assert not found, (name, sorted(found))\n"
      "print('ok')\n")
  done = _python(code)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip() == "ok"


def test_experiments_without_the_extra_name_it():
  # sys.modules[name] = None makes a package look absent to imports and
  # to importlib.util.find_spec.
  code = (
      "import sys\n"
      "sys.modules['flax'] = sys.modules['orbax'] = None\n"
      "import quantmuon\n"
      "try:\n"
      "  import quantmuon.experiments.train\n"
      "except ImportError as e:\n"
      "  print(e)\n")
  done = _python(code)
  assert done.returncode == 0, done.stderr[-3000:]
  message = done.stdout
  assert "pip install \"quantmuon[experiments]\"" in message, message
  assert "missing flax, orbax-checkpoint." in message, message


def _names(requirements: list[str]) -> set[str]:
  return {re.split(r"[<>=\[;! ]", r, maxsplit=1)[0].lower()
          for r in requirements}


def test_pyproject_keeps_the_extra_out_of_the_dependencies():
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  core = _names(project["dependencies"])
  extra = _names(project["optional-dependencies"]["experiments"])
  assert core == {"jax", "optax", "chex", "absl-py", "numpy"}
  assert extra == {d.lower() for d in experiments.EXTRA.values()}
  assert "quantmuon[experiments]" in project["optional-dependencies"]["dev"]
