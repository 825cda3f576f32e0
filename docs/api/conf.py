"""Sphinx configuration of quantmuon's API reference.

Build it from the repository root:

  python -m sphinx -W --keep-going -b html docs/api docs/_build/api

Two rules make the build fail (``-W``), and ``tests/test_api_docs.py``
runs it:

- every public name (``__all__``) of ``CHECKED`` has a docstring, or a
  ``#:`` comment where a constant is defined;
- every cross-reference in a docstring resolves: to a documented object,
  or, for the internal modules this reference leaves out, to an object
  that exists (shown as code, unlinked). Types of other projects (jax,
  optax, numpy, ...) are not checked: there is no intersphinx, so that the
  build needs no network.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

project = "quantmuon"
author = "the quantmuon authors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # NamedTuple fields are documented once
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|optax|chex|numpy|np|jnp|flax|collections|"
               r"typing|abc|dataclasses|enum)(\..*)?"),
    (r"py:.*", r"(Array|ArrayTree|Any|Callable|Mapping|Sequence|"
               r"NamedTuple|Protocol|ScalarOrSchedule|Schedule|dtype)"),
    (r"py:class", r"(int|float|str|bool|tuple|list|dict|type|object|None)"),
]

# The modules whose every public name must carry a docstring.
CHECKED = ("quantmuon", "quantmuon.formats", "quantmuon.transforms",
           "quantmuon.sharding", "quantmuon.fp", "quantmuon.registry",
           "quantmuon.kernels")


def _own_doc(obj: Any) -> str | None:
  """The docstring ``obj`` itself has: not its type's, not the signature a
  dataclass writes when it has none."""
  if inspect.isclass(obj):
    doc = obj.__dict__.get("__doc__")
    if dataclasses.is_dataclass(obj) and doc and doc.startswith(
        obj.__name__ + "("):
      return None
    return doc
  doc = getattr(obj, "__doc__", None)
  if not (inspect.ismodule(obj) or inspect.isroutine(obj)) and (
      doc == type(obj).__doc__):
    return None
  return doc


def _comment_docs(module: Any) -> set[str]:
  """Names with a ``#:`` comment (or a docstring) in ``module`` or in the
  modules it imports them from."""
  from sphinx.pycode import ModuleAnalyzer

  names = set()
  modules = [module] + [v for v in vars(module).values()
                        if inspect.ismodule(v)]
  for mod in modules:
    try:
      docs = ModuleAnalyzer.for_module(mod.__name__).find_attr_docs()
    except Exception:  # a module without source
      continue
    names |= {name for (_, name), lines in docs.items()
              if any(line.strip() for line in lines)}
  return names


def undocumented(modnames: tuple[str, ...] = CHECKED) -> list[str]:
  """The public names of ``modnames`` that have no docstring.

  Args:
    modnames: modules, each with an ``__all__``.

  Returns:
    One line per problem: a module without ``__all__``, a module, class or
    callable without a docstring of its own, a constant without a ``#:``
    comment.
  """
  problems = []
  for modname in modnames:
    module = importlib.import_module(modname)
    names = getattr(module, "__all__", None)
    if names is None:
      problems.append(f"{modname} has no __all__ naming its public names")
      continue
    commented = None
    for name in names:
      obj = getattr(module, name)
      if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj):
        if not (_own_doc(obj) or "").strip():
          problems.append(f"{modname}.{name} has no docstring")
        continue
      if commented is None:
        commented = _comment_docs(module)
      if name not in commented:
        problems.append(f"{modname}.{name} has no '#:' doc comment")
  return problems


def _check_public_names(app: Any) -> None:
  """Warns, an error under ``-W``, for each of :func:`undocumented`."""
  del app
  from sphinx.util import logging

  logger = logging.getLogger(__name__)
  for problem in undocumented():
    logger.warning(problem)


def _exists(dotted: str) -> bool:
  """Whether ``dotted`` names a module or an attribute of one."""
  parts = dotted.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ImportError:
      continue
    try:
      for part in parts[i:]:
        obj = getattr(obj, part)
    except AttributeError:
      return False
    return True
  return False


def _scopes(node: Any) -> list[str]:
  """Where a relative reference may point: the module and class of the
  directive, and the modules of the object whose docstring holds it."""
  scopes = []
  module, cls = node.get("py:module"), node.get("py:class")
  if module and cls:
    scopes.append(f"{module}.{cls}")
  source = getattr(node, "source", None) or ""
  if "docstring of " in source:
    owner = source.rsplit("docstring of ", 1)[1].split(":")[0]
    parts = owner.split(".")
    scopes += [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
  if module:
    scopes.append(module)
  return scopes


def _internal_reference(app: Any, env: Any, node: Any, contnode: Any
                        ) -> Any:
  """Resolves a reference to quantmuon that no documented object answers,
  when the object exists: its text stays, unlinked. Anything else stays
  missing, and nitpicky mode reports it."""
  del app, env
  if node.get("refdomain") != "py":
    return None
  target = node["reftarget"].lstrip("~.")
  candidates = [target] + [f"{scope}.{target}" for scope in _scopes(node)]
  if any(c.startswith("quantmuon") and _exists(c) for c in candidates):
    return contnode
  return None


def setup(app: Any) -> None:
  """Registers the two checks."""
  app.connect("builder-inited", _check_public_names)
  app.connect("missing-reference", _internal_reference)
