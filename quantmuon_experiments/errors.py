"""The error of a configuration that cannot work.

The command-line tools print a ``ConfigError`` as one line (no traceback)
and exit with status 2; its message names the field and the fix.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
  """A config value that cannot work; the message names it and the fix."""


def at_least(field: str, value: Any, least: float, fix: str,
             *, exclusive: bool = False) -> None:
  """Raises ``ConfigError`` unless ``value`` is a finite number of at least
  (or, ``exclusive``, above) ``least``.

  Args:
    field: the field's path in the config, e.g. ``train.steps``.
    value: its value.
    least: the bound.
    fix: what to set instead, e.g. ``the number of training steps``.
    exclusive: ``value`` must be above ``least``, not equal to it.
  """
  try:
    number = float(value)
    ok = math.isfinite(number) and (number > least if exclusive
                                     else number >= least)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    bound = f"above {least:g}" if exclusive else f"at least {least:g}"
    raise ConfigError(
        f"config.{field} must be {bound}, got {value!r}; set "
        f"--config.{field} to {fix}.")
