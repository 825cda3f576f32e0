"""The console scripts, which answer before JAX has loaded.

Importing the training loop loads JAX, Flax and Orbax, seconds on a small
CPU. Each entry point here first shows a status line on a terminal
(``cli.status``; the plan or an error replaces it), then imports its
command.
"""

from __future__ import annotations

from quantmuon_experiments import cli


def compare() -> None:
  """``quantmuon-compare`` (see :mod:`quantmuon_experiments.compare`)."""
  cli.status("quantmuon-compare: loading JAX and the config ...")
  from quantmuon_experiments import compare as command

  command.main()


def train() -> None:
  """``quantmuon-train`` (see :mod:`quantmuon_experiments.train`)."""
  cli.status("quantmuon-train: loading JAX and the config ...")
  from quantmuon_experiments import train as command

  command.main()
