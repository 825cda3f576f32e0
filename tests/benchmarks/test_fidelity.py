"""benchmarks/fidelity.py on tiny shapes: the presets' specs and twins, the
cosines and their summary, the bytes, and the cached gradient capture."""

from __future__ import annotations

import json

import numpy as np
import pytest

import quantmuon as qm
from benchmarks import fidelity
from quantmuon_experiments import tasks

TINY = fidelity.Capture(width=16, depth=2, heads=2, batch_size=2, first=2,
                        last=4, block=1, warmup=1, decay_steps=10)


@pytest.fixture(scope="module")
def grads():
  return fidelity.synthetic_gradients(steps=12, shape=(32, 64), rank=2)


def test_variant_adds_options_to_the_named_preset():
  v = fidelity.variant("muon_lowbit_2bit:rank_divisor=8:group_size=32")
  assert v.preset is qm.muon_lowbit
  assert dict(v.fixed) == {"bits": 2, "rank_divisor": 8, "group_size": 32}
  assert fidelity.variant("muon_8bit").fixed == {}


@pytest.mark.parametrize("spec, match", [
    ("muon_9bit", "unknown preset 'muon_9bit'"),
    ("muon_lowbit:rank_divisor", "not key=literal"),
    ("muon_lowbit:rank_divisor=eight", "not key=literal"),
])
def test_a_bad_spec_is_named(spec, match):
  with pytest.raises(ValueError, match=match):
    fidelity.variant(spec)


def test_every_preset_builds_with_its_twin():
  # The twin of a preset with fixed options (muon_8bit_dynamic, ...) is
  # built from the preset, not from a closure over it.
  for spec in fidelity.PRESETS:
    v = fidelity.variant(spec)
    opts = v.options(fidelity.LR)[1]
    twin = v.twin.options(fidelity.LR)[1]
    assert twin == opts.full_precision()
    assert twin.momentum_format == qm.formats.Float()


def test_cosines_and_summary_match_numpy():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((2, 14, 6))
  cos = fidelity.cosines({"w": a}, {"w": b})["w"]
  expected = [x @ y / np.sqrt((x @ x) * (y @ y))
              for x, y in zip(a, b, strict=True)]
  np.testing.assert_allclose(cos, expected, rtol=1e-12)
  s = fidelity.summary(cos)
  assert s["min_cosine"] == round(min(expected), 4)
  assert s["mean_cosine_settled"] == round(float(np.mean(
      expected[fidelity.SETTLED:])), 4)
  assert s["min_cosine_settled"] == round(min(expected[fidelity.SETTLED:]), 4)
  assert np.isnan(fidelity.summary(cos[:3])["min_cosine_settled"])


def test_bytes_per_param_counts_codes_scales_and_the_step():
  # 64 x 64 = 4096 int8 codes, two float32 block scales, and the int32
  # step counts of Muon and of AdamW.
  tx = qm.muon_8bit(fidelity.LR, min_size=0)
  assert fidelity.bytes_per_param(tx, (64, 64)) == (4096 + 8 + 8) / 4096
  twin = qm.full_precision_twin(qm.muon_8bit)(fidelity.LR, min_size=0)
  assert fidelity.bytes_per_param(twin, (64, 64)) == (4 * 4096 + 8) / 4096


def test_rows_hold_each_preset_against_its_twin(grads, monkeypatch):
  runs = []
  run = fidelity.run_updates
  monkeypatch.setattr(fidelity, "run_updates",
                      lambda tx, g: runs.append(tx) or run(tx, g))
  specs = ["muon_lowbit", "muon_lowbit:rank_divisor=8"]
  rows = fidelity.fidelity(specs, {"s": grads})
  assert len(runs) == 3  # the two variants share their twin
  assert [r["preset"] for r in rows] == specs
  ours = run(fidelity.variant(specs[1])(fidelity.LR, min_size=0), grads)
  twin = run(qm.full_precision_twin(qm.muon_lowbit)(fidelity.LR,
                                                    min_size=0), grads)
  expected = fidelity.summary(fidelity.cosines(ours, twin)["w"])
  assert {k: rows[1][k] for k in expected} == expected
  assert rows[1]["steps"] == 12 and rows[1]["shape"] == "32x64"
  # More rank, more bytes and a closer update.
  assert rows[1]["B_per_param"] > rows[0]["B_per_param"]
  assert rows[1]["mean_cosine"] > rows[0]["mean_cosine"]


def test_capture_is_cached(tmp_path, monkeypatch):
  captured = fidelity.gpt_gradients(TINY, tmp_path)
  assert len(captured) == 2
  assert {k: v.shape for k, v in captured[0].items()} == {
      "fc": (16, 64), "query": (16, 16)}
  assert (tmp_path / TINY.cache_name()).exists()

  def train(*args, **kwargs):
    raise AssertionError("trained again despite the cache")

  monkeypatch.setattr(tasks, "make_task", train)
  again = fidelity.gpt_gradients(TINY, tmp_path)
  for a, b in zip(captured, again, strict=True):
    for name in a:
      np.testing.assert_array_equal(a[name], b[name])


def test_rows_of_presets_and_sources_not_run_are_kept(tmp_path):
  path = tmp_path / "fidelity.json"
  old = [{"source": "gpt", "preset": "a"},
         {"source": "synthetic", "preset": "a", "min_cosine": 0.5},
         {"source": "synthetic", "preset": "b"}]
  path.write_text(json.dumps({"rows": old}))
  new = [{"source": "synthetic", "preset": "a", "min_cosine": 0.6}]
  assert fidelity.merged(new, path) == [old[0], old[2]] + new
  assert fidelity.merged(new, tmp_path / "none.json") == new
