"""Command-line entry points: absl flags and ml_collections config files.

``--config configs/compare.py --config.train.steps=200`` loads a config file
and overrides any field; ``--workdir`` is where outputs go; ``--resume``
continues a single run from its newest checkpoint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "An ml_collections config file, e.g. configs/compare.py; override its "
    "fields with --config.FIELD=VALUE.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for metrics, checkpoints and reports.")
_RESUME = flags.DEFINE_bool(
    "resume", False, "Continue from the newest checkpoint in --workdir.")

Command = Callable[[ml_collections.ConfigDict, str, bool], None]


def train_command(config: ml_collections.ConfigDict, workdir: str,
                  resume: bool) -> None:
  """Runs one training run and prints its summary.

  Args:
    config: the loaded config.
    workdir: the output directory.
    resume: continue from the newest checkpoint.
  """
  from quantmuon.experiments import train

  summary = train.train(config, workdir, resume=resume)
  brief = {k: v for k, v in summary.items() if not k.endswith("_curve")}
  print(json.dumps(brief, indent=1))


def compare_command(config: ml_collections.ConfigDict, workdir: str,
                    resume: bool) -> None:
  """Trains every optimizer of the config and writes the report.

  Args:
    config: the loaded config.
    workdir: the output directory.
    resume: not supported by the comparison (an error when set).
  """
  from quantmuon.experiments import compare

  if resume:
    raise app.UsageError("--resume applies to quantmuon-train only.")
  compare.compare(config, workdir)
  print(open(f"{workdir}/results.md").read())


def run(command: Command) -> None:
  """Parses the flags and runs ``command(config, workdir, resume)``.

  Args:
    command: ``train_command`` or ``compare_command``.
  """

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
      raise app.UsageError(
          "--config is required, e.g. --config configs/compare.py")
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required.")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    command(_CONFIG.value, _WORKDIR.value, _RESUME.value)

  app.run(main, argv=sys.argv)
