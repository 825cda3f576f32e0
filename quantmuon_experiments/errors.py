"""The error of a configuration that cannot work.

The command-line tools print a ``ConfigError`` as one line (no traceback)
and exit with status 2; its message names the field and the fix.
"""

from __future__ import annotations


class ConfigError(ValueError):
  """A config value that cannot work; the message names it and the fix."""
