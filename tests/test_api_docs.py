"""The API reference (``docs/api``, Sphinx autodoc) builds with warnings
as errors: every public name has a docstring and every reference
resolves."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"

if importlib.util.find_spec("sphinx") is None:
  if os.environ.get("CI"):
    raise ImportError("sphinx is missing: pip install -e '.[dev]'")
  pytest.skip("sphinx is not installed (pip install -e '.[dev]')",
              allow_module_level=True)


def _conf():
  spec = importlib.util.spec_from_file_location("quantmuon_api_conf",
                                                API / "conf.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _build(source: Path, out: Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(
                 [str(ROOT), *sys.path]))
  return subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
       "html", "-c", str(API), str(source), str(out)],
      capture_output=True, text=True, env=env, timeout=300)


def test_api_reference_builds_without_warnings(tmp_path):
  result = _build(API, tmp_path / "html")
  assert result.returncode == 0, result.stderr[-4000:]
  assert "WARNING" not in result.stderr, result.stderr[-4000:]
  html = (tmp_path / "html" / "index.html").read_text()
  for name in ("quantmuon.muon_lowbit", "quantmuon.formats.Blockwise",
               "quantmuon.sharding.init", "quantmuon.registry.get",
               "quantmuon.fp.log_mantissa_schedule"):
    assert f'id="{name}"' in html, name


def test_a_broken_reference_fails_the_build(tmp_path):
  source = tmp_path / "src"
  source.mkdir()
  (source / "index.rst").write_text(
      "Broken\n======\n\n.. autofunction:: quantmuon.nbytes\n\n"
      "See :func:`quantmuon.no_such_function`.\n")
  result = _build(source, tmp_path / "html")
  assert result.returncode != 0
  assert "quantmuon.no_such_function" in result.stderr


def test_a_public_name_without_a_docstring_is_found(monkeypatch):
  conf = _conf()
  fake = types.ModuleType("quantmuon_fake_public")

  def documented():
    """Has one."""

  def bare():
    pass

  @dataclasses.dataclass
  class Generated:  # dataclasses write a signature as its __doc__
    x: int = 0

  fake.documented, fake.bare, fake.Generated = documented, bare, Generated
  fake.CONSTANT = 3
  fake.__all__ = ["documented", "bare", "Generated", "CONSTANT"]
  monkeypatch.setitem(sys.modules, fake.__name__, fake)
  problems = conf.undocumented((fake.__name__,))
  assert problems == [
      "quantmuon_fake_public.bare has no docstring",
      "quantmuon_fake_public.Generated has no docstring",
      "quantmuon_fake_public.CONSTANT has no '#:' doc comment"]
  assert conf.undocumented() == []
