"""The prepared accelerator check: its CPU smoke run, budget and decisions.

``test_smoke_writes_every_section`` runs ``python -m benchmarks.accelerator
--smoke`` (in this process; its workers are subprocesses) and checks that
every section was written, with where and when it ran and its measured
fields. The other tests are cheap: the budget, the record, the plan, the
decision rules and the helpers, on made-up numbers.
"""

from __future__ import annotations

import json
import math

import jax
import pytest
from optax.contrib import MuonDimensionNumbers

import quantmuon as qm
from benchmarks import kernels as kernel_bench
from benchmarks.accelerator import __main__ as cli
from benchmarks.accelerator import agreement, decide, plan, record, report, step


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp("accelerator")
  path = cli.main(["--smoke", "--out", str(out), "--profile"])
  return json.loads(path.read_text()), (out / "accelerator.md").read_text()


def _rows(record_data, name):
  return record_data["sections"][name]["rows"]


def test_smoke_writes_every_section(smoke):
  data, markdown = smoke
  assert data["mode"] == "smoke" and data["device"] == "cpu"
  assert list(data["sections"]) == list(record.SECTIONS)
  for name, entry in data["sections"].items():
    assert entry["status"] == "ok", (name, entry.get("error"),
                                     entry.get("skipped"))
    assert entry["device"] == "cpu", name
    assert entry["jax"] == jax.__version__ and entry["jaxlib"], name
    assert entry["date"] and entry["wall_s"] > 0, name
    assert entry["rows"], name
    assert f"## {name}" in markdown
  assert data["evaluation"]["targets"]
  assert not data["evaluation"]["decisions"]["on_device"]


def test_smoke_kernels_agree_in_interpret_mode(smoke):
  data, _ = smoke
  rows = _rows(data, "kernels")
  assert {r["preset"] for r in rows} == set(plan.SMOKE.kernel_presets)
  assert {r["family"] for r in rows} == {"absmax", "subspace"}
  for row in rows:
    assert row["kernel_calls"] == {} and not row["kernel_ran"]
    assert row["codes_total"] > 0 and len(row["codes_differ_per_step"]) == 3
    assert row["fresh_max_rel_diff"] <= decide.UPDATE_TOL


def test_smoke_bandwidth_is_null_on_the_cpu(smoke):
  data, _ = smoke
  entry = data["sections"]["bandwidth"]
  assert entry["settings"]["peak_bandwidth_Bps"] is None
  for row in entry["rows"]:
    assert row["xla_ms"] > 0 and row["bytes"] > 0
    assert row["fused_ms"] is None and row["fused_pct_peak"] is None


def test_smoke_step_has_every_variant_and_ratio(smoke):
  data, _ = smoke
  entry = data["sections"]["step"]
  names = {(r["scale"], r["variant"]) for r in entry["rows"]}
  assert names == {(s.name, v.name) for s in plan.SMOKE.step_scales
                   for v in s.variants}
  by_name = {(r["scale"], r["variant"]): r for r in entry["rows"]}
  leafwise = by_name[("tiny", "muon_8bit")]
  assert leafwise["conditionals"] > 0 and leafwise["step_ms"] > 0
  assert leafwise["time_vs_optax"]["min"] <= leafwise["time_vs_optax"][
      "median"] <= leafwise["time_vs_optax"]["max"]
  assert leafwise["time_vs_xla"]["median"] > 0
  chain = by_name[("tiny", "muon_8bit/chain")]
  assert chain["time_vs_default_pipeline"]["median"] > 0
  assert chain["memory_vs_default_pipeline"] > 0
  tiny = entry["scales"]["tiny"]
  assert tiny["muon_leaves"] == 4
  assert [p["preset"] for p in tiny["pipelines"]] == ["muon_8bit"]
  assert entry["scales"]["tiny_stacked"]["muon_leaves"] == 2


def test_smoke_profile_counts_no_copies_on_the_cpu(smoke):
  data, _ = smoke
  rows = _rows(data, "profile")
  assert [r["variant"] for r in rows] == ["muon_8bit", "muon_8bit/chain"]
  assert rows[0]["conditionals"] > 0 == rows[1]["conditionals"]
  assert all(r["d2h_per_step"] == 0 for r in rows)
  trips = data["evaluation"]["decisions"]["round_trips"]
  assert {r["variant"] for r in trips} >= {"muon_8bit", "muon_8bit/chain"}


def test_smoke_quality_and_memory_rows(smoke):
  data, _ = smoke
  (quality,) = _rows(data, "quality")
  assert quality["optimizer"] == "muon_8bit"
  assert math.isfinite(quality["final_val_loss"])
  assert quality["same_config"] is False  # tiny shapes: not the CPU's run
  assert data["sections"]["quality"]["returncode"] == 0
  (memory,) = _rows(data, "memory_at_scale")
  assert memory["optimizer"] == "muon" and memory["batch"] == 2
  assert memory["peak_GiB"] is None  # the CPU keeps no allocator statistics
  assert memory["state_MiB"] > 0 and memory["compiled_GiB"] > 0


def test_budget_skips_a_section_and_records_errors():
  budget = record.Budget(0.0)
  entry = record.run_section(lambda: {"rows": [1]}, budget, 10.0, 5.0,
                             lambda: None)
  assert entry["status"] == "skipped" and "rows" not in entry
  assert entry["date"]

  def fails():
    raise RuntimeError("no device")

  budget = record.Budget(100.0)
  entry = record.run_section(fails, budget, 10.0, 1.0, lambda: None)
  assert entry["status"] == "error" and "no device" in entry["error"]
  entry = record.run_section(lambda: {"rows": [], "skipped": ["x"]}, budget,
                             10.0, 1.0, lambda: {"devices": ["TPU v4"]})
  assert entry["status"] == "partial" and entry["device"] == "TPU v4"


def test_budget_caps_a_section():
  budget = record.Budget(100.0)
  budget.open_section(2.0)
  assert budget.allows(1.0) and not budget.allows(3.0)
  assert budget.section_left() <= 2.0 < budget.left()


def test_a_crashed_device_worker_fails_only_its_section(tmp_path,
                                                       monkeypatch):
  calls = []

  def crash(cmd, timeout):
    sections = cmd[cmd.index("--sections") + 1].split(",")
    calls.append(sections)
    if len(calls) == 1:  # the first worker writes kernels, then dies
      record.Record.load(tmp_path).put("kernels", {"status": "ok"})
    return -11, "Segmentation fault"

  monkeypatch.setattr(cli, "stream", crash)
  record.Record.start(tmp_path, "smoke", {})
  cli.device_sections(tmp_path, ["kernels", "bandwidth", "step"],
                      plan.SMOKE, record.Budget(100.0))
  assert calls == [["kernels", "bandwidth", "step"], ["step"]]
  sections = record.Record.load(tmp_path).sections
  assert sections["kernels"]["status"] == "ok"
  assert sections["bandwidth"]["status"] == "error"
  assert "status -11" in sections["bandwidth"]["error"]
  assert sections["bandwidth"]["log_tail"] == "Segmentation fault"
  assert sections["step"]["status"] == "error"


def test_step_stops_compiling_when_the_rounds_would_not_fit():
  assert step.next_cost([], plan.FULL) == 0.0
  rows = [{"compile_s": 10.0, "first_step_s": 0.5},
          {"compile_s": 20.0, "first_step_s": 1.0}, {"error": "oom"}]
  rounds = plan.FULL.step_rounds * (plan.FULL.step_repeats + 1)
  assert step.next_cost(rows, plan.FULL) == pytest.approx(
      20.0 + 1.0 + rounds * (0.5 + 1.0 + 1.0))


def test_record_keeps_sections_and_writes_markdown(tmp_path):
  rec = record.Record.start(tmp_path, "full", {}, keep={
      "kernels": {"status": "ok", "rows": []}})
  rec.put("bandwidth", {"status": "skipped", "reason": "budget",
                        **record.where(None), "wall_s": 0.0})
  loaded = record.Record.load(tmp_path)
  assert set(loaded.sections) == {"kernels", "bandwidth"}
  text = (tmp_path / "accelerator.md").read_text()
  assert "## bandwidth" in text and "Skipped: budget" in text


def test_variants_most_valuable_first_without_repeats():
  out = plan.variants(("muon", "muon_8bit", "muonq"), ("muon_8bit",),
                      ("muon", "muon_8bit", "muonq"), rest=True)
  names = [v.name for v in out]
  assert names[:2] == ["optax_muon", "muon_8bit"]
  others = [f"muon_8bit/{p}" for p in plan.PIPELINES[1:]]
  assert names[2:2 + len(others)] == others
  rest = names[2 + len(others):]
  assert rest[:4] == ["muon_8bit/xla", "muon", "muonq", "muonq/xla"]
  assert len(names) == len(set(names))
  assert "muon/xla" not in names  # muon has no kernel
  assert "muon_8bit/chain/xla" in names


def _step_row(scale, pipeline, time_ratio, memory_ratio, preset="muon_8bit"):
  spread = {"median": time_ratio, "min": time_ratio, "max": time_ratio}
  return {"scale": scale, "preset": preset, "impl": "auto",
          "pipeline": pipeline, "variant": f"{preset}/{pipeline}",
          "time_vs_default_pipeline": spread,
          "memory_vs_default_pipeline": memory_ratio}


def test_pipeline_choice_weighs_time_against_memory():
  # The chain 30% faster for 10% more memory, at both scales: it wins.
  rows = [_step_row(s, "chain", 0.7, 1.1) for s in ("gpt2", "llama_1b")]
  choice = decide.pipeline_choice({"rows": rows})
  assert choice["choice"] == "chain"
  # 5% faster for 10% more memory is not worth it at weight 1...
  rows = [_step_row("gpt2", "chain", 0.95, 1.1)]
  assert decide.pipeline_choice({"rows": rows})["choice"] == "leafwise"
  # ...but is when memory is worth little.
  assert decide.pipeline_choice({"rows": rows}, memory_weight=0.1)[
      "choice"] == "chain"
  # One scale against: keep the default.
  rows = [_step_row("gpt2", "chain", 0.7, 1.1),
          _step_row("llama_1b", "chain", 1.2, 1.5)]
  assert decide.pipeline_choice({"rows": rows})["choice"] == "leafwise"


def test_impl_choice_takes_xla_where_the_kernel_is_slower():
  def row(preset, ratio):
    return {"preset": preset, "scale": "gpt2", "impl": "auto",
            "pipeline": plan.DEFAULT_PIPELINE,
            "time_vs_xla": {"median": ratio, "min": ratio, "max": ratio}}
  choice = decide.impl_choice({"rows": [row("muon_8bit", 0.5),
                                        row("muonq", 1.2)]})
  assert choice["choice"] == {"muon_8bit": "auto", "muonq": "xla"}


def test_targets_from_a_device_record():
  data = {"mode": "full", "environment": {"backend": "gpu"}, "sections": {
      "kernels": {"settings": {"impl": "pallas"}, "rows": [
          {"preset": "muon_8bit", "shape": "4096x4096", "kernel_ran": True,
           "codes_differ": 3, "codes_total": 10 ** 6,
           "fresh_max_rel_diff": 2e-6}]},
      "bandwidth": {"rows": [
          {"format": "blockwise8", "shape": "4096x4096",
           "fused_pct_peak": 90.0, "fused_over_xla": 0.5},
          {"format": "grid4", "shape": "4096x4096", "fused_pct_peak": 40.0,
           "fused_over_xla": 0.9},
          {"format": "subspace_grasp", "shape": "4096x4096",
           "fused_error": "ValueError: no kernel"}]},
      "memory_at_scale": {"rows": [
          {"optimizer": "muon", "peak_vs_muon": 1.0},
          {"optimizer": "muon_8bit", "peak_vs_muon": 0.8}]}}}
  targets = decide.evaluate(data)["targets"]
  met = {t["target"]: t["met"] for t in targets}
  assert met["every kernel lowers to its device kernel"] is True
  assert met["codes identical up to rounding ties"] is True
  assert met["blockwise8 4096x4096: fused step >= 85% of peak bandwidth"]
  faster = next(t for t in targets if "every format" in t["target"])
  assert faster["met"] is False  # a kernel that fails is not faster
  assert faster["measured"] == ("2 of 3 faster; not: subspace_grasp "
                                "4096x4096")
  assert met["muon_8bit: peak below muon's"] is True
  assert decide.evaluate(data)["decisions"]["on_device"]
  assert "| bandwidth |" in report.markdown({**data, "evaluation":
                                             decide.evaluate(data)})


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 3.35e12), ("NVIDIA H100 PCIe", 2.0e12),
    ("NVIDIA H200", 4.8e12), ("NVIDIA A100-SXM4-80GB", 2.04e12),
    ("TPU v5 lite", 8.2e11), ("TPU v5", 2.76e12), ("TPU v6 lite", 1.64e12),
    ("cpu", None)])
def test_peak_bandwidth_by_device_kind(kind, peak):
  assert kernel_bench.peak_bandwidth(kind) == peak


def test_stacked_layers_batch_their_leading_axis():
  params = step.params_of("tiny_stacked")
  up = params["blocks"]["mlp"]["up"]["kernel"]
  assert up.shape == (2, 32, 128)
  views = qm.routing.views(params, stack_axes=step.stack_axes(True))
  view = views["blocks"]["mlp"]["up"]["kernel"]
  assert (view.batch, view.reduction, view.output) == ((0,), (1,), (2,))
  assert qm.routing.to_dimension_numbers(view) == MuonDimensionNumbers(
      reduction_axis=(1,), output_axis=(2,))
  labels = qm.muon_labels(params, stack_axes=step.stack_axes(True))
  assert labels["blocks"]["mlp"]["up"]["kernel"] == "muon"
  assert labels["wte"]["embedding"] == "adam"


def test_momentum_settings_follow_the_preset():
  fmt, options = agreement.momentum_settings("muon_lowbit", (40, 130))
  assert isinstance(fmt, qm.formats.Subspace)
  assert options == {"beta": 0.95, "accumulation": "sum", "normalize": True,
                     "nesterov": True}
  assert agreement.kernel_calls(
      'call @"__gpu$xla.gpu.triton"(%0) call @"__gpu$xla.gpu.triton"') == {
          "triton": 2}
