"""Progress output: of a training run, and of a whole comparison.

A run (``make``): on a terminal, a tqdm bar; when the stream is a file or a
pipe, one line per log interval (a tqdm bar written to a file is a
carriage-return frame per refresh); with ``enabled=False``, nothing but
messages.

A comparison (``Overall``): one line for all its runs and its step timing,
with the run count and an ETA.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
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


@dataclasses.dataclass
class Estimate:
  """What a comparison's time is made of, in seconds.

  Attributes:
    setup_s: one run's setup (building and compiling its step); 0 when
      unknown.
    step_s: one training step, evaluations included; 0 when unknown.
  """

  setup_s: float = 0.0
  step_s: float = 0.0


def clock_text(seconds: float) -> str:
  """``m:ss`` (or ``h:mm:ss``) of a duration."""
  seconds = max(0, round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return (f"{hours}:{minutes:02d}:{secs:02d}" if hours
          else f"{minutes}:{secs:02d}")


class Overall:
  """One progress line for a whole comparison: the run count, the run's
  step and the overall ETA.

  The runs to train (each set up, compiled, then stepped) come first, then
  the step timing (some setups, then timed step calls). The ETA adds the
  time left in each part, from the mean setup and step times measured so
  far, or ``prior`` before any were measured.

  On a terminal the line is redrawn in place; in a file or a pipe it is
  written as a new line when a phase begins, when a run ends and at most
  every ``interval_s`` in between; with ``enabled=False`` only messages
  are written.

  Args:
    stream: where the line goes.
    enabled: ``config.train.progress``.
    runs: ``(label, steps)`` of each run to train, in order.
    timing_calls: the timed phase's step calls (warmup included).
    timing_setups: the setups the timed phase needs (runs not trained
      by this process).
    prior: the estimate before anything was measured.
    interval_s: the least time between two lines in a file.
    clock: seconds, monotonic (for tests).
  """

  def __init__(self, stream: IO[str], enabled: bool,
               runs: Sequence[tuple[str, int]], timing_calls: int,
               timing_setups: int, prior: Estimate,
               interval_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic):
    self.stream, self.enabled, self.clock = stream, enabled, clock
    self.runs = list(runs)
    self.timing_calls, self.timing_setups = timing_calls, timing_setups
    self.prior, self.interval_s = prior, interval_s
    self.tty = enabled and stream.isatty()
    self.start = clock()
    self.setups: list[float] = []   # measured setup seconds
    self.step_time = 0.0            # measured stepping seconds, all runs
    self.steps = 0                  # the steps they cover
    self.index = -1                 # the run being trained
    self.phase = "plan"  # plan, then setup, steps, ended per run; timing
    self.label = ""
    self.phase_start = self.start
    self.first_step_at = 0.0
    self.done = 0                   # steps of this run, or timed calls
    self.fields: dict[str, str] = {}
    self.timing_setups_done = 0
    self.setup_started: float | None = None  # a timing setup's start
    self.last_emit = -math.inf
    self.shown = ""

  # The estimate.

  def _setup_s(self) -> float | None:
    if self.setups:
      return sum(self.setups) / len(self.setups)
    return self.prior.setup_s or None

  def _step_s(self) -> float | None:
    steps, seconds = self.steps, self.step_time
    if self.phase == "steps" and self.done > 1:
      steps += self.done - 1
      seconds += self.clock() - self.first_step_at
    if steps >= 3:
      return seconds / steps
    return self.prior.step_s or None

  def eta(self) -> float | None:
    """Seconds left, or None before anything can be estimated."""
    setup, step = self._setup_s(), self._step_s()
    if setup is None or step is None:
      return None
    now = self.clock()
    left = 0.0
    if self.phase in ("plan", "setup", "steps", "ended"):
      if self.phase == "setup":
        steps = self.runs[self.index][1]
        left += max(setup - (now - self.phase_start), 0.0) + steps * step
      elif self.phase == "steps":
        steps = self.runs[self.index][1]
        rate = step
        if self.done > 3:
          rate = (now - self.first_step_at) / (self.done - 1)
        left += (steps - self.done) * rate
      left += sum(setup + steps * step
                  for _, steps in self.runs[self.index + 1:])
      left += self.timing_setups * setup + self.timing_calls * step
    elif self.phase == "timing":
      pending = self.timing_setups - self.timing_setups_done
      busy = 0.0 if self.setup_started is None else now - self.setup_started
      left += (max(pending * setup - busy, 0.0)
               + (self.timing_calls - self.done) * step)
    return left

  # The line.

  def line(self) -> str:
    """The progress line as it stands."""
    n = len(self.runs)
    if self.phase in ("setup", "steps"):
      head = f"run {self.index + 1}/{n} {self.label}: "
      if self.phase == "setup":
        head += "compiling"
      else:
        steps = self.runs[self.index][1]
        head += f"step {self.done}/{steps}"
        head += "".join(f", {k} {v}" for k, v in self.fields.items())
    elif self.phase == "timing":
      head = (f"step timing: compiling {self.label}" if self.label
              else f"step timing: {self.done}/{self.timing_calls} steps")
    else:
      head = "starting"
    elapsed = self.clock() - self.start
    eta = self.eta()
    if eta is None:
      tail = f"{clock_text(elapsed)} elapsed, ETA after the first steps"
    else:
      share = 100 * elapsed / max(elapsed + eta, 1e-9)
      tail = (f"{share:.0f}%, {clock_text(elapsed)} elapsed, ETA "
              f"{clock_text(eta)}")
    return f"{head} | {tail}"

  def _emit(self, force: bool = False) -> None:
    if not self.enabled:
      return
    now = self.clock()
    if self.tty:
      if not force and now - self.last_emit < 0.2:
        return
      width = shutil.get_terminal_size((100, 20)).columns
      text = self.line()[:max(width - 1, 20)]
      self.stream.write(f"\r{text}\x1b[K")
      self.stream.flush()
      self.shown = text
    else:
      if not force and now - self.last_emit < self.interval_s:
        return
      print(self.line(), file=self.stream, flush=True)
    self.last_emit = now

  def message(self, text: str) -> None:
    """Writes ``text`` on its own line (above the line on a terminal)."""
    if self.tty and self.shown:
      self.stream.write("\r\x1b[K")
    print(text, file=self.stream, flush=True)
    if self.tty and self.shown:
      self._emit(force=True)

  # The phases.

  def run(self, label: str, steps: int) -> Progress:
    """Starts the next run: its setup first.

    Args:
      label: the run's name, e.g. ``muon_8bit``.
      steps: its training steps.

    Returns:
      The progress of that run, for ``train.fit``; its ``close`` ends the
      run.
    """
    self.index += 1
    if self.index < len(self.runs):
      self.runs[self.index] = (label, steps)
    else:  # one the plan counted as finished (a sweep changed its rate)
      self.runs.append((label, steps))
    self.phase, self.label = "setup", label
    self.phase_start = self.clock()
    self.done, self.fields = 0, {}
    self._emit(force=True)
    return _RunProgress(self)

  def _advance(self) -> None:
    now = self.clock()
    if self.phase == "setup":
      self.setups.append(now - self.phase_start)
      self.phase, self.first_step_at = "steps", now
      self.done = 1
      self._emit(force=True)
      return
    self.done += 1
    self._emit()

  def _end_run(self) -> None:
    if not self.tty:  # a log shows where each run ended
      self._emit(force=True)
    if self.phase == "steps" and self.done > 1:
      self.steps += self.done - 1
      self.step_time += self.clock() - self.first_step_at
    self.phase = "ended"

  def _end_timing_setup(self) -> None:
    if self.setup_started is not None:
      self.setups.append(self.clock() - self.setup_started)
      self.timing_setups_done += 1
      self.setup_started = None

  def timing_setup(self, label: str) -> None:
    """The step timing sets up (compiles) ``label``'s step again.

    Args:
      label: the optimizer.
    """
    self._end_timing_setup()
    self.phase, self.label = "timing", label
    self.setup_started = self.clock()
    self._emit(force=True)

  def timed(self, calls: int) -> None:
    """The step timing has made ``calls`` step calls so far."""
    first = self.phase != "timing" or bool(self.label)
    self._end_timing_setup()
    self.phase, self.label, self.done = "timing", "", calls
    self._emit(force=first)

  def close(self) -> None:
    """Ends the line."""
    if self.tty and self.shown:
      self.stream.write("\n")
      self.stream.flush()
    self.phase = "done"


class _RunProgress(Progress):
  """One run's progress, shown on its comparison's line."""

  def __init__(self, overall: Overall):
    super().__init__(overall.stream)
    self.overall = overall

  def advance(self) -> None:
    self.overall._advance()

  def log(self, step: int, fields: dict[str, str]) -> None:
    self.overall.fields = {k: v for k, v in fields.items()
                           if k in ("loss", "val")}

  def message(self, text: str) -> None:
    self.overall.message(text)

  def close(self) -> None:
    self.overall._end_run()
