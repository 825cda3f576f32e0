"""The check's record: a time budget, and the JSON written after each section.

:class:`Budget` says how long the run may still take, overall and in the
current section. :class:`Record` is ``accelerator.json`` (and the Markdown
``accelerator.md`` beside it): the run's settings, one entry a section and
the evaluation of targets and decisions. A section's entry (see
:func:`run_section`) holds its ``status`` (``ok``, ``partial`` when the
budget left items out, ``skipped``, ``error``), its ``wall_s``, and where
it ran: ``device``, ``jax``, ``jaxlib``, ``date`` and the whole
``environment``. The orchestrator and its device worker take turns writing
the file, each after a section, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import common

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = 1
# The sections in the order they run: by value, then the optional profile.
SECTIONS = ("kernels", "bandwidth", "step", "quality", "memory_at_scale",
            "profile")
# Sections that run in the device worker, which holds the accelerator.
DEVICE_SECTIONS = ("kernels", "bandwidth", "step", "profile")


# Variables the check's subprocesses get beside this process's (the
# orchestrator sets the compilation cache here, never in os.environ).
CHILD_ENV: dict[str, str] = {}


def child_env(**extra: str) -> dict[str, str]:
  """The environment of a subprocess of the check: this process's, with
  the repository first on ``PYTHONPATH``, ``CHILD_ENV`` and ``extra``."""
  path = os.pathsep.join(filter(None, [str(ROOT),
                                       os.environ.get("PYTHONPATH")]))
  return {**os.environ, "PYTHONPATH": path, **CHILD_ENV, **extra}


class Budget:
  """Seconds left to the run and to the section in progress.

  Args:
    total_s: the whole run's time, counted from construction.
  """

  def __init__(self, total_s: float) -> None:
    self.start = time.perf_counter()
    self.total_s = float(total_s)
    self._section_end = float("inf")

  def left(self) -> float:
    """Seconds left to the run (negative past the end)."""
    return self.total_s - (time.perf_counter() - self.start)

  def section_left(self) -> float:
    """Seconds left to the current section: its cap or the run's end."""
    return min(self.left(), self._section_end - time.perf_counter())

  def open_section(self, cap_s: float) -> None:
    """Starts a section that may take at most ``cap_s`` seconds."""
    self._section_end = time.perf_counter() + cap_s

  def allows(self, need_s: float) -> bool:
    """Whether ``need_s`` seconds fit in the current section."""
    return self.section_left() >= need_s


def short_error(err: BaseException, limit: int = 600) -> str:
  """``Type: message``, cut to ``limit`` characters."""
  return f"{type(err).__name__}: {err}"[:limit]


def where(env: dict[str, Any] | None) -> dict[str, Any]:
  """A section's record of where and when it ran: the device and versions
  of an environment record (``quantmuon_experiments.tables.environment``;
  None when unknown), and the UTC date and time now."""
  env = env or {}
  devices = env.get("devices") or [None]
  return {"device": devices[0], "jax": env.get("jax"),
          "jaxlib": env.get("jaxlib"),
          "date": datetime.datetime.now(datetime.UTC).isoformat(
              timespec="seconds"), "environment": env or None}


def run_section(run: Callable[[], dict[str, Any]], budget: Budget,
                cap_s: float, min_s: float,
                environment: Callable[[], dict[str, Any] | None]
                ) -> dict[str, Any]:
  """Runs one section within the budget; its entry, errors caught.

  Args:
    run: returns the section's results (``rows`` and more); a ``skipped``
      list in them names items the budget left out, and an ``environment``
      (that of the process that measured) replaces ``environment()``.
    budget: the run's budget; the section is skipped, and its entry says
      so, when fewer than ``min_s`` seconds are left.
    cap_s: the most this section may take.
    min_s: the least time worth starting it with.
    environment: where the section runs, called after it.

  Returns:
    The entry (see the module docstring); its ``date`` is the section's
    end (see :func:`where`).
  """
  start = time.perf_counter()
  entry: dict[str, Any] = {}
  if budget.left() < min_s:
    entry.update(status="skipped",
                 reason=f"{budget.left():.0f} s of the run's budget left, "
                 f"less than the {min_s:.0f} s this section needs")
  else:
    budget.open_section(min(cap_s, budget.left()))
    try:
      entry.update(run())
      entry["status"] = "partial" if entry.get("skipped") else "ok"
    except Exception as err:  # noqa: BLE001 - record it, run the next
      traceback.print_exc()
      entry.update(status="error", error=short_error(err),
                   traceback=traceback.format_exc()[-4000:])
  env = entry.pop("environment", None)
  if env is None:
    try:
      env = environment()
    except Exception as err:  # noqa: BLE001 - the measurements come first
      env = {"error": short_error(err)}
  entry.update(where(env), wall_s=time.perf_counter() - start)
  return entry


class Record:
  """``accelerator.json`` and ``accelerator.md`` in a directory.

  Args:
    out: the directory (created).
    data: the record's contents.
  """

  def __init__(self, out: Path, data: dict[str, Any]) -> None:
    self.out = Path(out)
    self.data = data

  @classmethod
  def start(cls, out: Path, mode: str, settings: dict[str, Any],
            keep: dict[str, Any] | None = None) -> Record:
    """A new record, written at once.

    Args:
      out: the directory.
      mode: ``full`` or ``smoke``.
      settings: the run's settings, recorded as they are.
      keep: sections of an earlier record to keep (a rerun of the others).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = cls(out, {"schema": SCHEMA, "mode": mode, "device": None,
                       "environment": None, "settings": settings,
                       "sections": dict(keep or {})})
    record.write()
    return record

  @classmethod
  def load(cls, out: Path) -> Record:
    """The record in ``out`` as written last."""
    return cls(out, json.loads((Path(out) / "accelerator.json").read_text()))

  @property
  def json_path(self) -> Path:
    return self.out / "accelerator.json"

  @property
  def markdown_path(self) -> Path:
    return self.out / "accelerator.md"

  @property
  def sections(self) -> dict[str, Any]:
    return self.data["sections"]

  def put(self, name: str, entry: dict[str, Any]) -> None:
    """Sets a section's entry and writes the record.

    The record's ``device`` and ``environment`` are those of the first
    section that knows them.
    """
    self.sections[name] = entry
    self.data["sections"] = {k: self.sections[k] for k in SECTIONS
                             if k in self.sections}
    if self.data.get("environment") is None and entry.get("environment"):
      self.data["environment"] = entry["environment"]
      self.data["device"] = entry["device"]
    print(f"   {name}: {entry.get('status')} in "
          f"{entry.get('wall_s', 0):.1f} s", flush=True)
    self.write()

  def write(self) -> None:
    """Evaluates targets and decisions, then writes the JSON and Markdown."""
    # Imported here: decide and report read records, and import this module.
    from benchmarks.accelerator import decide, report
    try:
      self.data["evaluation"] = decide.evaluate(self.data)
    except Exception as err:  # noqa: BLE001 - never lose the measurements
      self.data["evaluation"] = {"error": short_error(err)}
    self.json_path.write_text(json.dumps(self.data, indent=1,
                                         default=common.plain) + "\n")
    self.markdown_path.write_text(report.markdown(self.data))
