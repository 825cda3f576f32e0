"""The application: train Flax models with every optimizer and compare them.

The optimizer library is ``quantmuon``; this package is built on it and is
not part of it.

- ``model``, ``classifier``: the GPT decoder and the digits MLP/CNN;
- ``data``, ``tasks``: the byte corpus, the digits, and what a run trains;
- ``optimizers``: optimizers by name and the learning-rate schedule;
- ``train``, ``checkpoint``, ``metrics``: one run, its checkpoints and logs;
- ``compare``, ``report``, ``plots``: every optimizer, results.json/.md and
  plots;
- ``defaults``, ``cli``: the base config and the command-line entry points;
- ``demo``: every storage format on a momentum-like matrix
  (``quantmuon-demo``);
- ``tables``: the text and Markdown tables, the environment record;
- ``hlo``: the collectives of compiled HLO text;
- ``notebook_utils``: what the notebooks share.

It needs the ``experiments`` extra (from a checkout of the repository,
``pip install -e ".[experiments]"``); importing it without that extra
raises an ``ImportError`` that names the missing packages and that command.
"""

from __future__ import annotations

import importlib.util

# The extra's packages: module imported -> distribution to install.
EXTRA = {
    "flax": "flax",
    "ml_collections": "ml_collections",
    "orbax.checkpoint": "orbax-checkpoint",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "sklearn": "scikit-learn",
}


def _installed(module: str) -> bool:
  """Whether ``module`` can be imported (its parent package included)."""
  try:
    return importlib.util.find_spec(module) is not None
  except ImportError:  # the parent of a dotted name is missing
    return False


def missing() -> list[str]:
  """The distributions of the ``experiments`` extra that are not installed.

  Returns:
    Their names as pip spells them, in the order of ``EXTRA``.
  """
  return [dist for module, dist in EXTRA.items() if not _installed(module)]


if missing():
  raise ImportError(
      f"quantmuon_experiments (quantmuon-train, quantmuon-compare, "
      f"quantmuon-demo, the benchmarks and the notebooks) needs the "
      f"'experiments' extra; missing {', '.join(missing())}. Install it "
      f"from the repository's checkout with: "
      f"pip install -e \".[experiments]\"")
