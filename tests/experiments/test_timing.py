"""Step timing: warm-up, interleaved rounds, spreads, the config check."""

from __future__ import annotations

import pytest

from quantmuon_experiments import defaults, errors, timing


def test_round_robin_warms_up_interleaves_and_rotates():
  calls = []
  steps = {name: (lambda name=name: calls.append(name)) for name in "abc"}
  times = timing.round_robin(steps, warmup=1, repeats=3, calls=2)
  assert "".join(calls[:3]) == "abc"  # warm-up, untimed
  assert "".join(calls[3:]) == "aabbcc" "bbccaa" "ccaabb"
  assert list(times) == ["a", "b", "c"]
  assert all(len(v) == 3 and min(v) >= 0 for v in times.values())


def test_spread_and_paired_ratios():
  assert timing.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0,
                                            "max": 3.0}
  ratios = timing.paired_ratios([2.0, 6.0, 3.0], [1.0, 2.0, 3.0])
  assert ratios == {"median": 2.0, "min": 1.0, "max": 3.0}


@pytest.mark.parametrize("field, value", [("repeats", 0), ("steps", 0),
                                          ("warmup", -1)])
def test_bad_timing_config_is_an_error(field, value):
  config = defaults.base_config()
  config.timing[field] = value
  with pytest.raises(errors.ConfigError, match=f"config.timing.{field}"):
    timing.check(config)
  config.timing[field] = 1
  timing.check(config)
