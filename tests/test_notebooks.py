"""The notebooks in notebooks/: they execute, and the saved ones are whole.

``test_executes_in_fast_mode`` runs each notebook top to bottom in a fresh
kernel with ``QUANTMUON_FAST=1`` (about two minutes for all five on a
2-core CPU); a cell that raises fails it. The saved notebooks must have
been executed in full mode, top to bottom (execution counts 1..n), with
outputs, at least one image and no error.
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_quickstart", "02_formats", "03_why_muon_is_sensitive",
         "04_compare_optimizers", "05_fp_quantization")
MAX_BYTES = 2 * 2**20
# The fast-mode runs of the two studies built on benchmarks (the
# sensitivity sweep and the FP study, 1-3 minutes each) are kept out of
# the default set; their saved outputs are checked by
# test_saved_notebook_is_executed, and -m slow runs them.
FAST_RUNS = [pytest.param(n, marks=pytest.mark.slow)
             if n in ("03_why_muon_is_sensitive", "05_fp_quantization")
             else n for n in NAMES]


def _run_all():
  spec = importlib.util.spec_from_file_location(
      "notebooks_run_all", NOTEBOOKS_DIR / "run_all.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _read(name: str):
  return nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


def _check_executed(nb, name: str) -> None:
  """Counts 1..n in order, outputs, an image, no error."""
  code = [c for c in nb.cells if c.cell_type == "code"]
  counts = [c.get("execution_count") for c in code]
  assert counts == list(range(1, len(code) + 1)), (
      f"{name}: execution counts {counts}; run it top to bottom with "
      "notebooks/run_all.py")
  outputs = [o for c in code for o in c.get("outputs", [])]
  assert outputs, f"{name} has no outputs"
  errors = [o for o in outputs if o.output_type == "error"]
  assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
  tracebacks = [o for o in outputs if o.output_type == "stream"
                and "Traceback" in o.text]
  assert not tracebacks, f"{name} printed a traceback"
  assert any("image/png" in o.get("data", {}) for o in outputs), (
      f"{name} has no image output")
  last = code[-1].get("outputs", [])
  assert any("text/markdown" in o.get("data", {}) for o in last), (
      f"{name}: its last cell should display what it found")


def test_every_notebook_is_listed():
  found = sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
  assert found == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_saved_notebook_is_executed(name):
  nb = _read(name)
  _check_executed(nb, name)
  first = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", [])
                  if o.output_type == "stream")
  assert "full mode" in first, f"{name} was not saved in full mode"
  assert nb.cells[0].cell_type == "markdown", (
      f"{name} should open with a paragraph on what it shows")
  size = (NOTEBOOKS_DIR / f"{name}.ipynb").stat().st_size
  assert size < MAX_BYTES, f"{name} is {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", FAST_RUNS)
def test_executes_in_fast_mode(name, tmp_path):
  run_all = _run_all()
  out = tmp_path / f"{name}.ipynb"
  run_all.execute(NOTEBOOKS_DIR / f"{name}.ipynb", out, fast=True)
  nb = nbformat.read(out, as_version=4)
  _check_executed(nb, name)
  first = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", [])
                  if o.output_type == "stream")
  assert "fast mode" in first
