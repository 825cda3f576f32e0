"""The library installs and imports without the ``experiments`` extra.

``quantmuon`` is the optimizer library only: it holds no application
module (those are in ``quantmuon_experiments``), and none of its modules
imports the extra's packages or the application. ``quantmuon_experiments``
without the extra names it; ``pyproject.toml`` lists the extra's packages
in the extra, not in the dependencies, installs both packages and points
the console scripts at the application.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import quantmuon
import quantmuon_experiments

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("flax", "ml_collections", "orbax", "matplotlib", "tqdm", "sklearn",
         "quantmuon_experiments")
# What moved out of the library into quantmuon_experiments.
APPLICATION = ("experiments", "demo", "tables", "notebook_utils", "hlo")


def _python(code: str) -> subprocess.CompletedProcess:
  """Runs ``code`` in a fresh interpreter at the repository's root."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _library_modules() -> list[str]:
  return sorted(m.name for m in pkgutil.walk_packages(
      quantmuon.__path__, prefix="quantmuon."))


def test_the_library_holds_no_application_module():
  found = [m for m in _library_modules()
           if set(m.split(".")[1:]) & set(APPLICATION)]
  assert not found, found
  files = {p.stem for p in Path(quantmuon.__file__).parent.rglob("*.py")}
  assert not files & set(APPLICATION), files & set(APPLICATION)


def test_the_library_imports_none_of_the_extra():
  """``import quantmuon``, then every module of the library: none brings
  in a package of the extra or the application."""
  code = (
      "import importlib, sys\n"
      f"for name in {['quantmuon', *_library_modules()]!r}:\n"
      "  importlib.import_module(name)\n"
      f"  found = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
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
      "  import quantmuon_experiments.train\n"
      "except ImportError as e:\n"
      "  print(e)\n")
  done = _python(code)
  assert done.returncode == 0, done.stderr[-3000:]
  message = done.stdout
  assert "pip install -e \".[experiments]\"" in message, message
  assert "missing flax, orbax-checkpoint." in message, message


def _names(requirements: list[str]) -> set[str]:
  return {re.split(r"[<>=\[;! ]", r, maxsplit=1)[0].lower()
          for r in requirements}


def _pyproject() -> dict:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_keeps_the_extra_out_of_the_dependencies():
  project = _pyproject()["project"]
  core = _names(project["dependencies"])
  extra = _names(project["optional-dependencies"]["experiments"])
  assert core == {"jax", "optax", "chex", "absl-py", "numpy"}
  assert extra == {d.lower() for d in quantmuon_experiments.EXTRA.values()}
  assert "quantmuon[experiments]" in project["optional-dependencies"]["dev"]


def test_pyproject_installs_both_packages_and_the_scripts_run_the_app():
  include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
  assert set(include) == {"quantmuon", "quantmuon.*", "quantmuon_experiments",
                          "quantmuon_experiments.*"}
  scripts = _pyproject()["project"]["scripts"]
  assert set(scripts) == {"quantmuon-demo", "quantmuon-train",
                          "quantmuon-compare"}
  for target in scripts.values():
    module, function = target.split(":")
    assert module.startswith("quantmuon_experiments."), target
    assert callable(getattr(importlib.import_module(module), function))


def test_ci_pins_every_floor_of_the_pyproject():
  """.ci/floors.py gives .ci/run's floors venv each stated lower bound."""
  spec = importlib.util.spec_from_file_location(
      "ci_floors", ROOT / ".ci" / "floors.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  pins = module.floors(ROOT / "pyproject.toml")
  project = _pyproject()["project"]
  bounded = [r for r in [*project["dependencies"],
                         *project["optional-dependencies"]["experiments"]]
             if ">=" in r]
  assert pins == [r.replace(">=", "==") for r in bounded]
  assert {p.split("==")[0] for p in pins} >= {"jax", "optax", "flax"}
