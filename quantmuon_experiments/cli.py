"""What the command lines share: absl flags and ml_collections config files.

``--config configs/compare_full.py --config.train.steps=200`` loads a config
file and overrides any field; without ``--config`` a command runs its
default config (``defaults.get_config``: ``quick`` for
``quantmuon-compare``, ``train`` for ``quantmuon-train``), whose fields
are overridden the same way. ``--workdir`` is where outputs go;
``--resume`` continues a single run from its newest checkpoint.

``train.main`` (``quantmuon-train``) and ``compare.main``
(``quantmuon-compare``) call :func:`run` with their command. The flags are
defined by :func:`run`, not on import, so a program with flags of its own can
import the training loop.

A configuration that cannot work (an unknown field or optimizer, a value of
the wrong type or size, a missing config file or corpus, a missing flag)
is one line on stderr, ``PROGRAM: error: ...`` naming the fix, and exit
status 2, before anything trains; other errors keep their traceback.

On a terminal, :func:`status` shows a line that the next output replaces
(``scripts`` shows one while JAX loads).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from quantmuon_experiments import errors

Command = Callable[[ml_collections.ConfigDict, str, bool], None]
DEFAULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "defaults.py")
_shown = [False]  # whether a status line is on the terminal


def status(text: str) -> None:
  """Shows ``text`` on stderr until the next output, on a terminal only.

  Args:
    text: one short line.
  """
  if sys.stderr.isatty():
    sys.stderr.write(f"\r{text}\x1b[K")
    sys.stderr.flush()
    _shown[0] = True


def clear_status() -> None:
  """Removes the line of :func:`status`, if one is shown."""
  if _shown[0]:
    sys.stderr.write("\r\x1b[K")
    sys.stderr.flush()
    _shown[0] = False


def fail(message: str) -> NoReturn:
  """Prints ``PROGRAM: error: message`` as one line and exits with 2.

  Args:
    message: what is wrong and how to fix it (newlines become spaces).
  """
  program = os.path.basename(sys.argv[0]) if sys.argv else "quantmuon"
  clear_status()
  print(f"{program}: error: {' '.join(str(message).split())}",
        file=sys.stderr, flush=True)
  raise SystemExit(2)


_DEFAULT = "the default config"


def _config_file(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return _DEFAULT


def parse_flags(argv: list[str]) -> list[str]:
  """Parses the flags; a bad flag or config field is a one-line ``fail``.

  Args:
    argv: the command line, program name first.

  Returns:
    The arguments left after the flags.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # a value of the wrong type, an unknown flag
    fail(f"{e}. See --helpshort for the flags.")
  except (AttributeError, KeyError) as e:  # --config.FIELD that is not one
    fail(_unknown_field(str(e), argv))


def _unknown_field(error: str, argv: list[str]) -> str:
  """The message of an unknown ``--config.FIELD``, with ConfigDict's hint."""
  hint = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', error)
  name = hint.group(2) if hint else re.findall(r"\w+", error)[0]
  given = [a.split("=", 1)[0] for a in argv
           if a.startswith("--config.") and name in a.split("=", 1)[0]]
  where = given[0] if given else name
  fix = (f'did you mean "{hint.group(1)}"?' if hint else
         "see quantmuon_experiments/defaults.py for the fields.")
  source = _config_file(argv)
  source = (f"the config of {source}" if source != _DEFAULT
            else "the default config")
  return f"{where}: no such field in {source}; {fix}"


def _check_loaded(config: ml_collections.ConfigDict, argv: list[str]
                  ) -> None:
  """``fail`` when the --config file could not be loaded."""
  try:  # ml_collections defers a failed load to the first access
    config.get("train")
  except OSError as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    fail(f"cannot load --config {_config_file(argv)}: {lines[-1]}; pass a "
         f"config file such as configs/compare_full.py.")


def run(command: Command, default: str) -> None:
  """Defines and parses the flags and runs ``command(config, workdir,
  resume)``.

  Args:
    command: what the program does, e.g. ``train.command``.
    default: the name of the config it runs without ``--config``
      (``defaults.get_config``).
  """
  try:  # the default config is loaded, and overridden, here
    config = config_flags.DEFINE_config_file(
        "config", f"{DEFAULTS_FILE}:{default}",
        f"An ml_collections config file, e.g. configs/compare_full.py; by "
        f"default the {default!r} config of "
        f"quantmuon_experiments/defaults.py. Override its fields with "
        f"--config.FIELD=VALUE.", lock_config=True)
  except flags.Error as e:  # a value of the wrong type
    fail(f"{e}. See --helpshort for the flags.")
  except (AttributeError, KeyError) as e:  # --config.FIELD that is not one
    fail(_unknown_field(str(e), sys.argv))
  workdir = flags.DEFINE_string(
      "workdir", None, "Directory for metrics, checkpoints and reports.")
  resume = flags.DEFINE_bool(
      "resume", False, "Continue from the newest checkpoint in --workdir.")

  def main(argv: list[str]) -> None:
    try:
      if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
      if not workdir.value:
        raise app.UsageError("--workdir is required, e.g. --workdir runs/x")
      _check_loaded(config.value, sys.argv)
      logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
      clear_status()
      command(config.value, workdir.value, resume.value)
    except (app.UsageError, errors.ConfigError) as e:
      fail(str(e))

  app.run(main, argv=sys.argv, flags_parser=parse_flags)
