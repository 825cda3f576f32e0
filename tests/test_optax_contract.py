"""optax's own contract tests for contrib optimizers, run on the presets.

The test class is built from the installed optax's
``optax/contrib/_common_test.py`` as it stands: its imports and helpers run
unchanged, and only the lists of optimizers under test (and the factory
lookup that reads them) are ours. So a preset meets exactly the contract
that ``optax.contrib.muon`` meets: convergence on optax's targets (1-D,
2-D and mixed trees), extra update arguments without recompilation,
``inject_hyperparams`` (with a 3-D leaf), dtype preservation,
``MultiSteps`` and ``lax.cond`` stability of the state.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import quantmuon as qm

PRESETS = ("muon", "muon_8bit", "muon_4bit", "muonq", "muon_grasp",
           "quantized_muon")


def with_fixed(preset: Callable[..., Any], **fixed: Any) -> Callable[..., Any]:
  """``preset`` with options fixed and removed from its signature, so
  ``inject_hyperparams`` does not make them traced hyperparameters."""
  signature = inspect.signature(preset)

  def factory(*args, **kwargs):
    return preset(*args, **fixed, **kwargs)

  factory.__signature__ = signature.replace(parameters=[
      p for p in signature.parameters.values() if p.name not in fixed])
  return factory


# Each preset as is (small leaves keep float32 momentum, min_size 4096) and
# with min_size=0, so that optax's 2 x 2 and (2, 5, 2) leaves are stored
# quantized.
FACTORIES = {name: getattr(qm, name) for name in PRESETS}
FACTORIES.update({f"{name}_min_size_0": with_fixed(getattr(qm, name),
                                                    min_size=0)
                  for name in PRESETS})
UNDER_TEST = tuple(
    {"opt_name": name, "opt_kwargs": {"learning_rate": 1e-2},
     "wrapper_name": None, "wrapper_kwargs": None}
    for name in FACTORIES)


def _load_contract() -> dict[str, Any]:
  spec = importlib.util.find_spec("optax.contrib._common_test")
  source = Path(spec.origin).read_text()
  lists_start = source.index("_MAIN_OPTIMIZERS_UNDER_TEST = [")
  helpers_start = source.index("def _get_opt_factory(")
  namespace: dict[str, Any] = {"__name__": "optax_contract"}
  exec(compile(source[:lists_start], spec.origin, "exec"), namespace)
  namespace["_MAIN_OPTIMIZERS_UNDER_TEST"] = UNDER_TEST
  namespace["_ALL_OPTIMIZERS_UNDER_TEST"] = UNDER_TEST
  # Line numbers in tracebacks stay those of optax's file.
  padding = "\n" * source[:helpers_start].count("\n")
  exec(compile(padding + source[helpers_start:], spec.origin, "exec"),
       namespace)
  namespace["_get_opt_factory"] = FACTORIES.__getitem__
  return namespace


ContribTest = _load_contract()["ContribTest"]
ContribTest.__name__ = ContribTest.__qualname__ = "OptaxContribContractTest"
