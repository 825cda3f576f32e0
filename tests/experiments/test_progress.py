"""The comparison's progress line: run count, ETA, and its output."""

from __future__ import annotations

import io

from quantmuon_experiments import progress, timing


class Clock:
  """A clock the test moves."""

  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


class Terminal(io.StringIO):
  def isatty(self):
    return True


def _overall(stream, clock, prior=None, **kwargs):
  return progress.Overall(stream, True, [("a", 10), ("b", 10)],
                          timing_calls=20, timing_setups=1,
                          prior=prior or progress.Estimate(),
                          clock=clock, **kwargs)


def test_eta_from_the_prior_then_from_measurements():
  clock = Clock()
  line = _overall(io.StringIO(), clock, progress.Estimate(5.0, 1.0))
  # Two runs of 5 s setup + 10 steps, one timing setup, 20 timed calls.
  assert line.eta() == 2 * (5 + 10) + 5 + 20
  run = line.run("a", 10)
  clock.now = 2.0
  run.advance()  # set up in 2 s: the estimate of a setup is now 2 s
  for _ in range(9):
    clock.now += 0.5
    run.advance()
  # This run's steps took 0.5 s: 0 left here; b: 2 + 10 * 0.5; timing:
  # 2 + 20 * 0.5.
  assert line.eta() == (2 + 5) + (2 + 10)
  run.close()
  assert line.eta() == (2 + 5) + (2 + 10)  # between two runs


def test_eta_is_unknown_until_measured():
  clock = Clock()
  line = _overall(io.StringIO(), clock)
  assert line.eta() is None
  assert "ETA after the first steps" in line.line()
  run = line.run("a", 10)
  clock.now = 3.0
  run.advance()
  for _ in range(4):
    clock.now += 1.0
    run.advance()
  assert line.eta() == 5 + (3 + 10) + (3 + 20)


def test_the_line_counts_runs_and_shows_the_losses():
  clock = Clock()
  line = _overall(io.StringIO(), clock, progress.Estimate(5.0, 1.0))
  line.run("a", 10)
  assert line.line().startswith("run 1/2 a: compiling | ")
  run = line.run("b", 10)
  clock.now = 1.0
  run.advance()
  run.log(1, {"loss": "2.5000", "tok/s": "9", "val": "2.6000"})
  text = line.line()
  assert text.startswith("run 2/2 b: step 1/10, loss 2.5000, val 2.6000 | ")
  assert "ETA 0:" in text and "%" in text


def test_in_a_file_one_line_per_phase_and_interval():
  clock, out = Clock(), io.StringIO()
  line = _overall(out, clock, progress.Estimate(5.0, 1.0), interval_s=10)
  run = line.run("a", 10)
  for _ in range(10):
    clock.now += 1.0
    run.advance()
  run.close()
  lines = out.getvalue().splitlines()
  # The setup, the first step, then one after 10 s.
  assert [x.split(" | ")[0] for x in lines] == [
      "run 1/2 a: compiling", "run 1/2 a: step 1/10", "run 1/2 a: step 10/10"]
  assert "\r" not in out.getvalue()


def test_on_a_terminal_the_line_is_redrawn_and_messages_go_above():
  clock, out = Clock(), Terminal()
  line = _overall(out, clock, progress.Estimate(5.0, 1.0))
  run = line.run("a", 10)
  run.message("a: diverged")
  line.close()
  text = out.getvalue()
  assert text.startswith("\rrun 1/2 a: compiling")
  assert "\r\x1b[Ka: diverged\n\rrun 1/2 a: compiling" in text
  assert text.endswith("\n")


def test_disabled_shows_messages_only():
  out = io.StringIO()
  line = progress.Overall(out, False, [("a", 2)], 0, 0, progress.Estimate())
  run = line.run("a", 2)
  run.advance()
  run.message("hello")
  assert out.getvalue() == "hello\n"


def test_timing_reports_its_setups_and_calls():
  clock = Clock()
  line = _overall(io.StringIO(), clock, progress.Estimate(5.0, 1.0))
  for label in ("a", "b"):
    run = line.run(label, 10)
    clock.now += 5.0
    for _ in range(10):
      run.advance()
      clock.now += 1.0
    run.close()
  line.timing_setup("a")
  assert line.line().startswith("step timing: compiling a | ")
  clock.now += 5.0
  counts = []
  times = timing.round_robin(
      {"a": lambda: None, "b": lambda: None}, warmup=2, repeats=4, calls=2,
      progress=lambda n: (counts.append(n), line.timed(n)))
  assert [len(v) for v in times.values()] == [4, 4]
  assert counts == [2, 4, *range(6, 21, 2)]
  assert counts[-1] == 2 * (2 + 4 * 2)
  assert line.line().startswith("step timing: 20/20 steps | ")
  assert line.eta() == 0


def test_clock_text():
  assert progress.clock_text(65.4) == "1:05"
  assert progress.clock_text(3725) == "1:02:05"
