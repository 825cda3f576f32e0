"""Progress output of a training run: a bar on a terminal, lines in a log.

On a terminal, a tqdm bar; when the stream is a file or a pipe, one line
per log interval (a tqdm bar written to a file is a carriage-return frame
per refresh); with ``enabled=False``, nothing but messages.
"""

from __future__ import annotations

import sys
from typing import IO

from tqdm import tqdm


class Progress:
  """Silent progress: only ``message`` writes (to ``stream``).

  Args:
    stream: where messages go.
  """

  def __init__(self, stream: IO[str]):
    self.stream = stream

  def advance(self) -> None:
    """Marks one more step done."""

  def log(self, step: int, fields: dict[str, str]) -> None:
    """Shows the numbers of a log interval.

    Args:
      step: the steps done.
      fields: name -> formatted value, e.g. ``{"loss": "2.1234"}``.
    """

  def message(self, text: str) -> None:
    """Writes ``text`` on its own line."""
    print(text, file=self.stream, flush=True)

  def close(self) -> None:
    """Ends the output."""


class Lines(Progress):
  """One line per log interval: ``desc  step/total  name value ...``.

  Args:
    stream: where the lines go.
    total: the run's steps.
    desc: the run's label.
  """

  def __init__(self, stream: IO[str], total: int, desc: str):
    super().__init__(stream)
    self.total, self.desc = total, desc

  def log(self, step: int, fields: dict[str, str]) -> None:
    numbers = "  ".join(f"{k} {v}" for k, v in fields.items())
    self.message(f"{self.desc}  {step}/{self.total}  {numbers}")


class Bar(Progress):
  """A tqdm bar with the latest numbers as its postfix.

  Args:
    stream: the terminal.
    total: the run's steps.
    initial: the steps already done (a resumed run).
    desc: the bar's label.
  """

  def __init__(self, stream: IO[str], total: int, initial: int, desc: str):
    super().__init__(stream)
    self.bar = tqdm(total=total, initial=initial, desc=desc, file=stream,
                    dynamic_ncols=True)

  def advance(self) -> None:
    self.bar.update(1)

  def log(self, step: int, fields: dict[str, str]) -> None:
    self.bar.set_postfix(fields, refresh=False)

  def message(self, text: str) -> None:
    self.bar.write(text, file=self.stream)

  def close(self) -> None:
    self.bar.close()


def make(enabled: bool, total: int, initial: int, desc: str,
         stream: IO[str] | None = None) -> Progress:
  """The progress output that suits ``stream``.

  Args:
    enabled: ``config.train.progress``; False shows messages only.
    total: the run's steps.
    initial: the steps already done.
    desc: the run's label.
    stream: the output (``sys.stderr`` when None, read at call time).

  Returns:
    A ``Bar`` on a terminal, ``Lines`` otherwise, ``Progress`` (silent)
    when not enabled.
  """
  stream = sys.stderr if stream is None else stream
  if not enabled:
    return Progress(stream)
  if stream.isatty():
    return Bar(stream, total, initial, desc)
  return Lines(stream, total, desc)
