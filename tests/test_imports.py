"""Imports inside the packages point one way and never form a cycle.

Read from the source with ``ast`` (nothing is imported): every ``import``
and ``from ... import`` in every module of ``quantmuon`` (the library) and
``quantmuon_experiments`` (the application on top of it), at module level
or inside a function, is an edge from its module to the module it names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import quantmuon

ROOT = Path(quantmuon.__file__).parents[1]
PACKAGES = ("quantmuon", "quantmuon_experiments")
# The layers, from the bottom up: a module may import its own layer's
# modules (without a cycle) and those of the layers below, never above.
# ``quantmuon`` is the library's root (``quantmuon/__init__.py``); the
# experiments package is the application, on top of the whole library.
LAYERS = (
    ("quantmuon.memory",),
    ("quantmuon.formats",),
    ("quantmuon.momentum_op",),
    ("quantmuon.kernels",),
    ("quantmuon.transforms",),
    ("quantmuon.routing", "quantmuon.sharding", "quantmuon.fp"),
    ("quantmuon.presets",),
    ("quantmuon.registry",),
    ("quantmuon",),
    ("quantmuon_experiments.tables", "quantmuon_experiments.hlo"),
    ("quantmuon_experiments.demo",),
    ("quantmuon_experiments",),
)


def _module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
  return {_module_name(p): p for package in PACKAGES
          for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
  """The package's modules that ``name`` imports."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in node.names]
    else:
      continue
    out.update(t for t in targets if t in known)
  return out


def _layer(name: str) -> int:
  """The layer of a module: that of the longest prefix named in LAYERS."""
  best, level = -1, None
  for i, layer in enumerate(LAYERS):
    for prefix in layer:
      if (name == prefix or name.startswith(prefix + ".")) and len(
          prefix) > best:
        best, level = len(prefix), i
  if level is None:
    raise AssertionError(f"{name} is in no layer of LAYERS; add it.")
  return level


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  known = set(modules)
  return {name: _imports(name, path, known) - {name}
          for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of ``graph`` as a list of modules, or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_every_module_has_a_layer():
  for name in _modules():
    _layer(name)


def test_no_module_imports_a_layer_above_its_own():
  upward = [f"{name} (layer {_layer(name)}) imports {dep} (layer "
            f"{_layer(dep)})"
            for name, deps in _graph().items() for dep in sorted(deps)
            if _layer(dep) > _layer(name)]
  assert not upward, "\n".join(upward)


def test_no_import_cycle():
  cycle = _cycle(_graph())
  assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("source", [
    "from quantmuon.transforms import momentum\n",
    "def f():\n  from quantmuon import presets\n",
    "from quantmuon_experiments import tables\n",
])
def test_the_checks_can_fail(tmp_path, source):
  """A planted upward import (even inside a function, or of the
  application) is found, and so is a cycle."""
  graph = _graph()
  path = tmp_path / "planted.py"
  path.write_text(source)
  deps = _imports("quantmuon.formats.planted", path, set(graph))
  assert any(_layer(d) > _layer("quantmuon.formats") for d in deps)
  graph["quantmuon.formats.planted"] = deps
  graph["quantmuon.formats"] = graph["quantmuon.formats"] | {
      "quantmuon.formats.planted"}
  for dep in deps:
    graph[dep] = graph[dep] | {"quantmuon.formats.planted"}
  assert _cycle(graph) is not None
