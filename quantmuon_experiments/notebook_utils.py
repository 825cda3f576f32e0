"""Helpers shared by the notebooks in ``notebooks/``.

- the fast mode: ``QUANTMUON_FAST=1`` shrinks every run (:func:`fast`,
  :func:`pick`, :func:`experiment_config`), so that CI executes all the
  notebooks in a few minutes;
- the full-precision heavy-ball twin of the quantized presets
  (:func:`fp32_twin`); any optax optimizer trains through
  ``train.train(config, workdir, tx=tx, name=...)``;
- a real momentum matrix, captured from a short training run
  (:func:`capture_momentum`);
- output: figures as PNG of a modest size (:func:`show`) and Markdown text
  computed from the notebook's own numbers (:func:`say`; tables with
  ``quantmuon_experiments.tables.markdown``);
- the repository's checkout (:func:`repo_root`) and its benchmarks
  (:func:`load_benchmark`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import io
import os
import pathlib
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import quantmuon
from quantmuon import formats
from quantmuon_experiments import defaults, optimizers, train
from quantmuon_experiments.demo import store  # noqa: F401  (re-exported for the notebooks)

FAST_ENV = "QUANTMUON_FAST"


def fast() -> bool:
  """Whether ``QUANTMUON_FAST`` asks for the fast (CI) mode."""
  return os.environ.get(FAST_ENV, "").strip().lower() in ("1", "true", "yes")


def pick(full: Any, fast_value: Any) -> Any:
  """``fast_value`` in fast mode, else ``full``."""
  return fast_value if fast() else full


def _checkout(path: pathlib.Path) -> bool:
  return (path / "configs").is_dir() and (path / "benchmarks").is_dir()


def repo_root(start: str | os.PathLike | None = None) -> pathlib.Path:
  """The repository's checkout, for its benchmarks and recorded results.

  Only :func:`load_benchmark` and the recorded results need it; the
  configs come from :mod:`quantmuon_experiments.defaults`.

  Args:
    start: where to look from. By default, the checkout this package lies
      in (an editable install or a run from the checkout, from any working
      directory), else the working directory.

  Returns:
    The nearest directory at or above the starting point that holds
    ``configs/`` and ``benchmarks/``.

  Raises:
    FileNotFoundError: no such directory, e.g. outside a checkout.
  """
  if start is None:
    here = pathlib.Path(__file__).resolve().parents[1]
    if _checkout(here):
      return here
  here = pathlib.Path(start or os.getcwd()).resolve()
  for path in (here, *here.parents):
    if _checkout(path):
      return path
  raise FileNotFoundError(
      f"no quantmuon checkout (a directory with configs/ and benchmarks/) at "
      f"or above {here}; run the notebook from the repository's notebooks/ "
      f"directory.")


def experiment_config() -> ml_collections.ConfigDict:
  """The config of the full comparison (``defaults.full_config``).

  In fast mode the GPT shrinks to one block of width 64 (its matrices still
  reach the presets' 4096-element ``min_size``, so they are quantized) and
  trains 24 steps of 8 windows. Progress bars are off.
  """
  config = defaults.full_config()
  config.train.progress = False
  config.train.checkpoint_every = 0
  if fast():
    config.model.context = 32
    config.model.width = 64
    config.model.depth = 1
    config.model.heads = 2
    config.model.mlp_ratio = 2
    config.data.max_bytes = 1 << 21
    config.data.chunk_size = 1024
    config.train.steps = 24
    config.train.batch_size = 8
    config.train.eval_every = 12
    config.train.eval_batches = 2
    config.train.log_every = 12
    config.optimizer.warmup_steps = 4
  return config


def lr_schedule(config: ml_collections.ConfigDict, peak: float
                ) -> optax.Schedule:
  """The experiments' warmup + cosine schedule for ``config``'s run."""
  oc = config.optimizer
  return optimizers.schedule(peak, config.train.steps, oc.warmup_steps,
                             oc.final_lr_ratio)


def fp32_twin(learning_rate: optax.ScalarOrSchedule, **kwargs: Any
              ) -> optax.GradientTransformationExtraArgs:
  """The exact full-precision twin of ``muon_4bit`` and ``muon_grasp``.

  ``quantmuon.full_precision_twin(quantmuon.muon_4bit)``: heavy-ball
  momentum (``M = beta M + G``), Newton-Schulz of M itself (no Nesterov),
  consistent-RMS 0.2, the momentum in float32. (MuonQ's twin also
  normalizes: ``full_precision_twin(quantmuon.muonq)``.)
  """
  return quantmuon.full_precision_twin(quantmuon.muon_4bit)(
      learning_rate, **kwargs)


def _path_name(path: Sequence[Any]) -> str:
  keys = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        keys.append(str(getattr(k, attr)))
        break
  return ".".join(keys)


def _stored_momentum(opt_state: Any) -> dict[str, formats.Stored]:
  """Parameter path -> the stored momentum, in a preset's state."""
  def is_momentum(x):
    return isinstance(x, quantmuon.transforms.QuantizedMomentumState)

  found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_momentum)
           if is_momentum(s)]
  if len(found) != 1:
    raise ValueError(f"expected one QuantizedMomentumState, found "
                     f"{len(found)}.")
  leaves = jax.tree_util.tree_flatten_with_path(
      found[0].momentum, is_leaf=formats.is_stored)[0]
  return {_path_name(path): stored for path, stored in leaves
          if formats.is_stored(stored)}


def momentum_of(opt_state: Any) -> dict[str, np.ndarray]:
  """The decoded Muon momentum of every matrix in a preset's state.

  Args:
    opt_state: the state of a :func:`quantmuon.quantized_muon` preset.

  Returns:
    Parameter path (``blocks.0.mlp.fc.kernel``) -> float32 momentum.
  """
  return {name: np.asarray(stored.decode(), np.float32)
          for name, stored in _stored_momentum(opt_state).items()}


def momentum_format(tx: optax.GradientTransformation,
                    shape: tuple[int, int]) -> formats.Format:
  """The format in which the Muon preset ``tx`` stores a matrix's momentum.

  Args:
    tx: a preset, e.g. ``quantmuon.muonq(1e-3)``.
    shape: the matrix's shape.

  Returns:
    The format (float32 ``Float`` below the preset's ``min_size``).
  """
  params = {"w": jax.ShapeDtypeStruct(tuple(shape), jnp.float32)}
  stored = _stored_momentum(jax.eval_shape(tx.init, params))
  return stored["w"].format


def capture_momentum(config: ml_collections.ConfigDict | None = None,
                     workdir: str | os.PathLike | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Real momentum: train the experiment's model, keep Muon's momentum.

  Trains ``config`` (default :func:`experiment_config`) with
  :func:`fp32_twin` at the quantized presets' learning rate and returns
  the heavy-ball momentum of every Muon matrix after the last step.

  Args:
    config: the experiment config.
    workdir: where the run's metrics go; a new temporary directory by
      default.

  Returns:
    ``(momentum by parameter path, the run's summary)``.
  """
  config = experiment_config() if config is None else config
  rate = float(config.learning_rates["muon_rms"])
  tx = fp32_twin(lr_schedule(config, rate))
  workdir = workdir or tempfile.mkdtemp(prefix="capture_momentum_")
  run = train.fit(config, workdir, tx=tx, name="fp32 heavy-ball Muon")
  return momentum_of(run.opt_state), run.summary


def show(fig: Any, dpi: int = 80) -> None:
  """Displays a matplotlib figure as a PNG of modest size, then closes it.

  The PNG is written by the figure itself, so it works whatever the
  backend (the experiment's report switches matplotlib to Agg).
  """
  import matplotlib.pyplot as plt
  from IPython.display import Image, display

  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  display(Image(data=buf.getvalue(), format="png"))


def say(text: str) -> None:
  """Displays Markdown text (e.g. findings computed from the outputs)."""
  from IPython.display import Markdown, display

  display(Markdown(text))


def load_benchmark(name: str) -> Any:
  """Imports ``benchmarks.<name>`` from :func:`repo_root`'s ``benchmarks/``.

  Only the ``benchmarks`` package is registered (its path is the
  checkout's); ``sys.path`` is left alone, so every other import, the
  installed ``quantmuon`` included, resolves as before.

  Args:
    name: the module's name, e.g. ``fp_study``.

  Returns:
    The module.
  """
  if "benchmarks" not in sys.modules:
    spec = importlib.machinery.ModuleSpec("benchmarks", None, is_package=True)
    spec.submodule_search_locations = [str(repo_root() / "benchmarks")]
    sys.modules["benchmarks"] = importlib.util.module_from_spec(spec)
  return importlib.import_module(f"benchmarks.{name}")
