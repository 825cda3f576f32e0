"""Writes the results page, ``docs/results.md``, from
``benchmarks/results/``.

Every number on that page (and every number the README quotes) comes from
what the benchmarks and the compare command recorded there, with their date
and machine:

  python -m benchmarks.readme_tables          # rewrites docs/results.md
  python -m benchmarks.readme_tables --check  # fails when it is stale

``tests/benchmarks/test_results_page.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS
from quantmuon_experiments import tables

FORMAT_ROWS = (
    "fp32", "bf16", "block2048-linear8", "block2048-dynamic8",
    "block128-linear4", "tensor-linear4", "tensor-mulaw4", "col-linear4",
    "grid128-linear4", "muonq-subspace4", "grasp-subspace4", "fp8-e4m3",
    "block128-linear2",
)


def _load(name: str) -> dict[str, Any] | None:
  path = RESULTS / f"{name}.json"
  return json.loads(path.read_text()) if path.exists() else None


def _where(env: dict[str, Any]) -> str:
  return f"{env['date'][:10]}, {tables.describe(env)}"


def compare(directory: str = "compare",
            command: str = "quantmuon-compare --config configs/compare_full.py",
            note: str = "") -> str | None:
  """A compare report recorded under ``benchmarks/results/<directory>``,
  with ``note`` (what a reader must know about that run) after it."""
  path = RESULTS / directory / "results.md"
  if not path.exists():
    return None
  lines = path.read_text().splitlines()
  facts = [line[2:] for line in lines if line.startswith("- ")]
  table = "\n".join(line for line in lines if line.startswith("|"))
  return (f"`{command}` ({'; '.join(facts)}); report, curves and memory "
          f"plot in `benchmarks/results/{directory}/`{note}:\n\n{table}")


def _pm(mean: float, std: float, digits: int = 2, sign: str = "+") -> str:
  return f"{mean:{sign}.{digits}f} ± {std:.{digits}f}"


def quantization_costs(directory: str, command: str, note: str = ""
                       ) -> str | None:
  """Each quantized preset's cost against its exact twin, over seeds.

  Args:
    directory: a compare run recorded under ``benchmarks/results/``.
    command: the command that produced it.
    note: what a reader must know about that run, after its facts.

  Returns:
    A table of mean ± spread (std over seeds) and the per-seed costs,
    with the best full-precision Muon of the run, or None.
  """
  data = _load(f"{directory}/results")
  if data is None:
    return None
  runs = data["optimizers"]
  rows = []
  for name, r in runs.items():
    if r.get("twin") is None:
      continue
    per_seed = ", ".join(
        f"{100 * (a - b) / b:+.2f}" for a, b in zip(
            r["final_val_loss_per_seed"],
            runs[r["twin"]]["final_val_loss_per_seed"], strict=True))
    rows.append({
        "preset": f"`{name}`",
        "bytes": r["state_bytes_per_matrix_param"],
        "loss": _pm(r["final_val_loss"], r["final_val_loss_std"], 4, ""),
        "twin": f"`{r['twin']}`",
        "twin_loss": _pm(runs[r["twin"]]["final_val_loss"],
                         runs[r["twin"]]["final_val_loss_std"], 4, ""),
        "cost": _pm(r["quantization_cost_pct"],
                    r["quantization_cost_pct_std"]),
        "per_seed": per_seed})
  full = {n: r for n, r in runs.items()
          if r.get("twin") is None and r["state_bytes_per_matrix_param"] == 4}
  best = min(full, key=lambda n: full[n]["final_val_loss"])
  table = tables.markdown(rows, {
      "preset": "preset", "bytes": "B / matrix param",
      "loss": "final val loss", "twin": "twin", "twin_loss": "twin's loss",
      "cost": "quantization cost (%)", "per_seed": "per seed (%)"})
  best_loss = _pm(full[best]["final_val_loss"],
                  full[best]["final_val_loss_std"], 4, "")
  task = data["optimizers"][best]["runs"][0]["task"]
  steps = data["config"]["train"]["steps"]
  model = data["config"]["model"]
  return (f"`{command}` (width {model['width']}, depth {model['depth']}, "
          f"{task['params']:,} parameters, {steps} steps, seeds "
          f"{data['seeds']}; {_where(data['environment'])}; report in "
          f"`benchmarks/results/{directory}/`){note}. Mean ± standard "
          f"deviation over the seeds; the cost is paired by seed. Best "
          f"full-precision Muon: `{best}`, {best_loss}:"
          f"\n\n{table}")


def optimizer_step() -> str | None:
  data = _load("optimizer_step")
  if data is None:
    return None
  rows = [{**row, "step_time": (
      f"{row['step_time_ratio']:.3g} ({row['step_time_ratio_min']:.3g}-"
      f"{row['step_time_ratio_max']:.3g})")} for row in data["rows"]]
  table = tables.markdown(rows, {
      "width": "width", "layout": "layers", "optimizer": "preset",
      "state_bytes_per_matrix_param": "state B / matrix param",
      "state_reduction_vs_muon": "state reduction vs muon",
      "step_time": "step time vs optax muon, median (min-max)",
      "step_memory_ratio": "step memory vs optax muon"}, digits=3)
  settings = data.get("settings", {})
  widths = ",".join(str(w) for w in sorted({r["width"] for r in rows}))
  return (f"Optimizer step on a 4-layer GPT-like tree, its layers as "
          f"separate leaves (unscanned) or stacked into one leaf per matrix "
          f"(`python -m benchmarks.optimizer_step --widths {widths} "
          f"--repeats {settings.get('repeats')} --rounds "
          f"{settings.get('rounds')}`: {settings.get('rounds')} interleaved "
          f"rounds of the fastest of {settings.get('repeats')} steps; "
          f"{_where(data['environment'])}):\n\n{table}")


def formats() -> str | None:
  data = _load("formats")
  if data is None:
    return None
  by_name = {row["format"]: row for row in data["rows"]}
  rows = [by_name[name] for name in FORMAT_ROWS if name in by_name]
  table = tables.markdown(rows, {
      "format": "format", "rel_err": "relative error",
      "ns_rel_err": "error after Newton-Schulz",
      "bytes_per_elem": "bytes / element"})
  shape = "x".join(str(d) for d in data["settings"]["shape"])
  return (f"Storage formats on a {shape} momentum matrix "
          f"(`python -m benchmarks.formats`; "
          f"{_where(data['environment'])}):\n\n{table}")


def fp_quantization() -> str | None:
  data = _load("fp_quantization")
  if data is None:
    return None
  findings = "\n".join(f"- {line}" for line in data["findings"])
  settings = data["settings"]
  return (f"Floating-point-quantized training: the mantissa width c*(T) "
          f"each component needs, round-to-nearest, {settings['seeds']} "
          f"seeds, [95% bootstrap intervals] "
          f"(`python -m benchmarks.fp_study`; "
          f"{_where(data['environment'])}, "
          f"{settings['seconds'] / 60:.0f} min):\n\n"
          f"{data['tables']['c_star']}\n\n{findings}")


def fidelity() -> str | None:
  data = _load("fidelity")
  if data is None:
    return None
  settings = data["settings"]
  settled = settings.get("settled_from")
  table = tables.markdown(data["rows"], {
      "preset": "preset", "source": "gradients", "leaf": "leaf",
      "kind": "kind", "shape": "shape", "min_cosine": "min cosine",
      "mean_cosine": "mean cosine",
      "min_cosine_settled": f"min cosine from update {settled}",
      "mean_cosine_settled": f"mean cosine from update {settled}",
      "B_per_param": "B / matrix param"})
  sources = "; ".join(f"{name}: {settings[name]}"
                      for name in ("synthetic", "gpt", "gpt512")
                      if name in settings)
  return (f"Update fidelity: cosine of each step's update with the exact "
          f"full-precision twin's, on the same gradients ({sources}; "
          f"`python -m benchmarks.fidelity`; "
          f"{_where(data['environment'])}):\n\n{table}")


def memory_at_scale() -> str | None:
  data = _load("memory_at_scale")
  if data is None:
    return None
  rows = [r for r in data["rows"] if r["config"] == "configs/gpt2_small.py"]
  if not rows:
    return None
  table = tables.markdown(rows, {
      "optimizer": "optimizer", "state_MiB": "state MiB",
      "B_per_matrix_param": "B / matrix param",
      "B_per_param": "B / param (all)", "rest_MiB": "AdamW rest MiB",
      "rest_B_per_param": "AdamW rest B / param", "rest_pct": "AdamW share %",
      "floor_GiB": "params + grads + state GiB",
      "saved_vs_muon_MiB": "saved vs muon MiB"})
  return (f"Optimizer state at a user's scale: `configs/gpt2_small.py` "
          f"({rows[0]['params']:,} parameters, {rows[0]['matrix_params']:,} "
          f"in Muon matrices), from shapes alone "
          f"(`python -m benchmarks.memory_at_scale`; "
          f"{_where(data['environment'])}):\n\n{table}")


def kernels() -> str | None:
  data = _load("kernels_cpu")
  if data is None:
    return None
  table = tables.markdown(data["rows"], {
      "kernel": "kernel", "shape": "shape", "xla_ms": "XLA ms",
      "xla_GBps": "XLA GB/s"}, digits=3)
  return (f"Momentum step per format family, XLA path on the CPU "
          f"(`python -m benchmarks.kernels`; "
          f"{_where(data['environment'])}); no GPU or TPU numbers yet:"
          f"\n\n{table}")


def sharded_step() -> str | None:
  data = _load("sharded_step")
  if data is None:
    return None
  for row in data["rows"]:
    row["state_mib_device0"] = row["state_bytes_device0"] / 2 ** 20
    row["collective_mib"] = row["collective_bytes"] / 2 ** 20
    if "stacked_collective_bytes" in row:
      row["stacked_collective_mib"] = (row["stacked_collective_bytes"]
                                       / 2 ** 20)
  table = tables.markdown(data["rows"], {
      "optimizer": "optimizer", "state_mib_device0": "state MiB / device",
      "collectives": "collectives", "collective_kinds": "kinds",
      "collective_mib": "collective MiB",
      "step_time_ratio": "step time vs optax muon",
      "stacked_collectives": "stacked NS: collectives",
      "stacked_collective_mib": "stacked NS: collective MiB",
      "stacked_vs_default_time": "stacked NS: step time vs default"},
      digits=3)
  settings = data["settings"]
  return (f"Sharded optimizer step, a 2-layer GPT-like tree of width "
          f"{settings['width']} on {settings['devices']} simulated CPU "
          f"devices ({settings['mesh']}; `python -m "
          f"benchmarks.sharded_step`; {_where(data['environment'])}). "
          f"The devices share the CPU, so times show structure, not "
          f"speed. `muon`'s collectives are `optax.contrib.muon`'s "
          f"(Newton-Schulz on sharded matrices) and one scalar all-reduce "
          f"a Muon leaf (the leafwise pipeline's branch predicate); the "
          f"Blockwise presets add none to them, the Subspace presets small "
          f"ones. The "
          f"\"stacked NS\" columns are the same step with Newton-Schulz in "
          f"the stacked layout (the default when traced under "
          f"`jax.set_mesh`), the others GSPMD's default layout "
          f"(`ns_layout=\"leaf\"`):\n\n"
          f"{table}")


def update_memory() -> str | None:
  data = _load("update_memory")
  if data is None:
    return None
  table = tables.markdown(data["rows"], {
      "scale": "scale", "preset": "preset", "state_bytes_mib": "state MiB",
      "temporaries_mib": "temporaries MiB", "total_mib": "total MiB",
      "total_vs_muon": "total vs muon",
      "total_vs_muon_chain": "total vs chained muon",
      "total_vs_unscanned": "total vs unscanned",
      "compile_cpu_s": "compile CPU s",
      "compile_cpu_vs_muon": "compile CPU time vs muon",
      "compile_cpu_vs_unscanned": "compile CPU time vs unscanned"})
  settings = data["settings"]
  steps = tables.markdown(settings["momentum_step"], {
      "format": "format", "temporaries_mib": "temporaries MiB",
      "fp32_copies": "float32 copies of the leaf"}, digits=3)
  shape = "x".join(str(d) for d in settings["step_shape"])
  text = (f"Compiled update, state donated, XLA path "
          f"(`python -m benchmarks.update_memory`; "
          f"{_where(data['environment'])}); total = arguments + outputs + "
          f"temporaries - aliased; chained muon is `muon(..., "
          f"pipeline='chain')`; `quantized_muon` is the builder with "
          f"its defaults (8-bit blockwise storage); `gpt2_matrices` is "
          f"GPT-2 small's 48 matrices, `gpt2` the same with its "
          f"embeddings, `llama_1b` TinyLlama-1.1B's 154 matrices with its "
          f"32000 x 2048 embedding and head; embeddings and heads are on "
          f"AdamW (in 8 bits for `muon_lowbit`); `_stacked` scales hold "
          f"each block kind as one `(depth, m, n)` leaf, declared with "
          f"`stack_axes`. Compile time is trace + lower + compile with "
          f"`impl='auto'`, in this process's CPU seconds; the seconds move "
          f"with the machine's load, the ratios much less:\n\n{table}\n\n"
          f"Momentum step alone on a {shape} leaf:\n\n{steps}")
  if settings.get("train_step"):
    train = tables.markdown(settings["train_step"], {
        "preset": "preset", "temporaries_mib": "temporaries MiB",
        "total_mib": "total MiB", "total_vs_muon": "total vs muon",
        "total_vs_muon_chain": "total vs chained muon"})
    text += (f"\n\nWhole training step of configs/gpt2_small.py's model "
             f"at batch 1 (gradient and update, params and state "
             f"donated):\n\n{train}")
  return text


PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"
HEADER = """\
# Results

<!-- Generated by `python -m benchmarks.readme_tables` from
benchmarks/results/; edit that script or rerun the benchmarks, not this
page. -->

Every number here was recorded by a benchmark script in `benchmarks/` or
by `quantmuon-compare`, in `benchmarks/results/`, with the date and the
machine of its run, which each section states. Ratios are measured in the
same run as their reference. The machine is a 2-core x86_64 CPU (AMD EPYC,
no accelerator) that other jobs shared while these ran, so times are
noisy: the compare reports give each step time as the median with min-max
over interleaved rounds, and `benchmarks.optimizer_step` is the place for
step-time ratios. Results recorded before a later change of the code say
so in their section; the date tells which build ran them.

On 2026-12-06 at 19:29 UTC the Subspace formats (`muonq`, `muon_grasp`,
`muon_lowbit`) began to factor their small k x k matrices on the CPU with
plain XLA loops instead of LAPACK (`quantmuon/formats/small_linalg.py`).
Both agree with float64 to about 5e-8 but round differently, and training
amplifies the difference: rerun on the new build, `muon_lowbit`'s three
300-step runs at width 128 (8-bit AdamW state) moved by +0.14, -0.39 and
-1.07% (cost against the twin +0.18 ± 0.10% before, -0.26 ± 0.48%
after), and the 1500-step runs of `muon_lowbit` and its 2-bit form by
-0.30 to +0.43%. A rounding change is worth about as much as a change of
seed. The twins and the blockwise presets do not use these functions and
reproduced to the last digit. Training records of the Subspace presets
dated before that time ran the earlier build.
"""


def sections() -> list[tuple[str, str | None]]:
  """Every section of the page: ``(heading, Markdown or None)``; a section
  whose record is missing is None and left out."""
  seeds = ("--config.optimizers=muon_rms,muon_8bit,muon_8bit_dynamic,"
           "muon_4bit,muonq,muon_grasp,muon_lowbit,muon_lowbit_2bit "
           "--config.seeds=0,1,2")
  wide_seeds = ("--config.optimizers=muon_rms,muon_8bit,muonq,muon_lowbit,"
                "muon_lowbit_2bit --config.seeds=0,1,2")
  return [
      ("Quantization cost over three seeds, width 128", quantization_costs(
          "compare_seeds",
          f"quantmuon-compare --config configs/compare_full.py {seeds}")),
      ("Quantization cost over three seeds, width 256", quantization_costs(
          "compare_wide_seeds",
          f"quantmuon-compare --config configs/compare_wide.py "
          f"{wide_seeds}")),
      ("muon_lowbit with AdamW's state in 8 bits (its default since "
       "2026-12-06), width 128", quantization_costs(
           "compare_lowbit_adam8",
           "quantmuon-compare --config configs/compare_full.py "
           "--config.optimizers=muon_lowbit --config.seeds=0,1,2")),
      ("muon_lowbit with AdamW's state in 8 bits, width 256",
       quantization_costs(
           "compare_wide_lowbit_adam8",
           "quantmuon-compare --config configs/compare_wide.py "
           "--config.optimizers=muon_lowbit --config.seeds=0,1,2")),
      ("2-bit muon_lowbit with rank_budget=0.4, width 128",
       quantization_costs(
           "compare_2bit_budget",
           "quantmuon-compare --config configs/compare_full.py "
           "--config.optimizers=muon_lowbit_2bit_budget "
           "--config.seeds=0,1,2")),
      ("2-bit muon_lowbit with rank_budget=0.4, width 256",
       quantization_costs(
           "compare_wide_2bit_budget",
           "quantmuon-compare --config configs/compare_wide.py "
           "--config.optimizers=muon_lowbit_2bit_budget "
           "--config.seeds=0,1,2")),
      ("muon_8bit with blocks of 64 and bfloat16 scales, width 128",
       quantization_costs(
           "compare_8bit_block64",
           "quantmuon-compare --config configs/compare_full.py "
           "--config.optimizers=muon_8bit,muon_8bit_block64 "
           "--config.seeds=0,1,2",
           note=("; `muon_8bit_block64` is `muon_8bit(block_size=64, "
                 "scale_dtype='bfloat16')`"))),
      ("muon_8bit with blocks of 64 and bfloat16 scales, width 256",
       quantization_costs(
           "compare_wide_8bit_block64",
           "quantmuon-compare --config configs/compare_wide.py "
           "--config.optimizers=muon_8bit,muon_8bit_block64 "
           "--config.seeds=0,1,2")),
      ("The quick comparison", compare(
          "compare_quick", "quantmuon-compare --workdir DIR",
          note=(". What `quantmuon-compare` runs without `--config` "
                "(`defaults.quick_config`); one seed, whose gaps move by "
                "about 0.5% from seed to seed (the report's noise note)"))),
      ("The quick comparison with scanned layers", compare(
          "compare_quick_scanned",
          "quantmuon-compare --workdir DIR --config.model.scan_layers=True",
          note=(". The same run with the blocks made by `nnx.vmap` and "
                "run by `nnx.scan` (`stack_axes` given to the optimizers): "
                "the same state bytes; the losses differ from the list of "
                "blocks' by the different initialization (the layers' "
                "random keys are split differently), one seed"))),
      ("The full comparison, one seed", compare(note=(
          ". One seed, with AdamW and width-scaled Muon; it ran as "
          "`configs/compare.py`, now `configs/compare_full.py`; its "
          "`muon_lowbit_2bit` row is the earlier 2-bit residual "
          "(mu-law codes, absmax scales), since replaced (the seed "
          "tables above)"))),
      ("1500 steps: muon_8bit, muon_lowbit and 2 bits against their "
       "twins", quantization_costs(
           "compare_1500",
           "quantmuon-compare --config configs/compare_full.py "
           "--config.optimizers=muon_8bit,muon_8bit_block64,muon_lowbit,"
           "muon_lowbit_2bit --config.seeds=0,1 --config.train.steps=1500",
           note=("; `muon_8bit_block64` is `muon_8bit(block_size=64, "
                 "scale_dtype='bfloat16')`; muon_lowbit's AdamW state is "
                 "in 8 bits, its twin's all float32"))),
      ("Update fidelity", fidelity()),
      ("Optimizer state at GPT-2 small's size", memory_at_scale()),
      ("Optimizer step time", optimizer_step()),
      ("Compiled update memory", update_memory()),
      ("Sharded optimizer step", sharded_step()),
      ("Storage formats", formats()),
      ("Momentum step per format (XLA on the CPU)", kernels()),
      ("Floating-point-quantized training", fp_quantization()),
  ]


def page() -> str:
  """The whole results page, as ``docs/results.md`` holds it."""
  body = [f"## {heading}\n\n{text}" for heading, text in sections()
          if text]
  return HEADER + "\n" + "\n\n".join(body) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  """Writes ``docs/results.md``, or with ``--check`` compares it.

  Args:
    argv: the command-line arguments (None: ``sys.argv[1:]``).

  Returns:
    The exit status: 1 when ``--check`` finds the page stale, else 0.
  """
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="fail when docs/results.md is not what the "
                           "records give, instead of writing it")
  args = parser.parse_args(argv)
  text = page()
  if args.check:
    if not PAGE.exists() or PAGE.read_text() != text:
      print(f"{PAGE} is stale: run python -m benchmarks.readme_tables",
            file=sys.stderr)
      return 1
    return 0
  PAGE.write_text(text)
  print(f"wrote {PAGE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
