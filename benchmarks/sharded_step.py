"""Sharded optimizer step of every preset against ``optax.contrib.muon``.

On 8 simulated CPU devices, a GPT-like tree (benchmarks.optimizer_step's)
sharded FSDP-style (matrices by rows, ``P("fsdp", None)``; vectors
replicated), state and step pinned with ``quantmuon.sharding``. For each
optimizer, in one run:

- state bytes on one device (its shards) and over all devices;
- the collectives of the compiled step: how many, and their bytes;
- step time as a ratio to ``optax.contrib.muon`` under the same mesh;
- the same for Newton-Schulz in the stacked layout (same-shape matrices
  stacked, the stack split over the mesh: ``ns_layout="auto"`` with the
  step traced under ``jax.set_mesh``) against GSPMD's default placement of
  each sharded leaf (``ns_layout="leaf"``, the plain columns), and the
  stacked step's time as a ratio to the default's.

The simulated devices share the CPU cores, so the times show the step's
structure, not the speed of real devices.

Usage (from the repository root):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
    python -m benchmarks.sharded_step [--width 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import collections

import jax
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import quantmuon as qm
from benchmarks import common
from benchmarks.optimizer_step import gpt_params, optax_muon
from quantmuon_experiments import hlo

DEVICES = 8
PRESETS = {
    "muon": qm.muon, "muon_8bit": qm.muon_8bit, "muon_4bit": qm.muon_4bit,
    "muonq": qm.muonq, "muon_grasp": qm.muon_grasp,
    "muon_lowbit": qm.muon_lowbit,
}


def fsdp_shardings(params: dict, mesh: jax.sharding.Mesh) -> dict:
  """Rows of every matrix on the ``fsdp`` axis; vectors replicated."""
  def spec(p):
    if p.ndim >= 2 and p.shape[0] % mesh.shape["fsdp"] == 0:
      return NamedSharding(mesh, P("fsdp", *([None] * (p.ndim - 1))))
    return NamedSharding(mesh, P())
  return jax.tree.map(spec, params)


def state_bytes(state) -> tuple[int, int]:
  """(bytes held by device 0, bytes over all devices) of a state."""
  first, total = 0, 0
  device = jax.devices()[0]
  for leaf in jax.tree.leaves(state):
    for shard in leaf.addressable_shards:
      total += shard.data.nbytes
      if shard.device == device:
        first += shard.data.nbytes
  return first, total


def measure(tx: optax.GradientTransformation, params: dict, grads: dict,
            param_shardings: dict, repeats: int,
            mesh: jax.sharding.Mesh | None = None) -> dict:
  """State bytes, collectives and the fastest step time, pinned; the step
  traced under ``jax.set_mesh(mesh)`` when a mesh is given."""
  shardings = qm.sharding.state_shardings(tx, params)
  state = jax.jit(tx.init, out_shardings=shardings)(params)
  step = jax.jit(tx.update, out_shardings=(param_shardings, shardings))
  if mesh is None:
    compiled = step.lower(grads, state, params).compile()
  else:
    with jax.set_mesh(mesh):
      compiled = step.lower(grads, state, params).compile()
  found = hlo.collectives(compiled.as_text())
  step_s, state = common.fastest_step(compiled, grads, state, params,
                                      repeats)
  counts = collections.Counter(c.kind for c in found)
  first, total = state_bytes(state)
  return {
      "state_bytes_device0": first, "state_bytes_total": total,
      "collectives": len(found),
      "collective_bytes": sum(c.nbytes for c in found),
      "collective_kinds": ", ".join(
          f"{kind} x{n}" for kind, n in sorted(counts.items())),
      "largest_collective_bytes": max((c.nbytes for c in found), default=0),
      "step_s": step_s,
  }


def run(width: int, repeats: int) -> list[dict]:
  if len(jax.devices()) != DEVICES:
    raise SystemExit(
        f"sharded_step needs {DEVICES} devices, found {len(jax.devices())}; "
        "run with XLA_FLAGS=--xla_force_host_platform_device_count=8 "
        "JAX_PLATFORMS=cpu.")
  mesh = jax.make_mesh((DEVICES,), ("fsdp",), axis_types=(AxisType.Auto,))
  host = gpt_params(width, layers=2)
  param_shardings = fsdp_shardings(host, mesh)
  params = jax.device_put(host, param_shardings)
  grads = jax.device_put(jax.tree.map(
      lambda p: jax.random.normal(jax.random.key(p.size), p.shape), host),
      param_shardings)
  labels = qm.muon_labels(host)
  reference = measure(optax_muon(labels), params, grads, param_shardings,
                      repeats)
  rows = [{"optimizer": "optax.contrib.muon", **reference,
           "step_time_ratio": 1.0}]
  for name, make in PRESETS.items():
    result = measure(make(1e-3, ns_layout="leaf"), params, grads,
                     param_shardings, repeats)
    stacked = measure(make(1e-3), params, grads, param_shardings, repeats,
                      mesh)
    rows.append({
        "optimizer": name, **result,
        "step_time_ratio": result["step_s"] / reference["step_s"],
        "stacked_collectives": stacked["collectives"],
        "stacked_collective_kinds": stacked["collective_kinds"],
        "stacked_collective_bytes": stacked["collective_bytes"],
        "stacked_step_s": stacked["step_s"],
        "stacked_step_time_ratio": stacked["step_s"] / reference["step_s"],
        "stacked_vs_default_time": stacked["step_s"] / result["step_s"]})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  rows = run(args.width, args.repeats)
  common.report("sharded_step", rows, columns=[
      "optimizer", "state_bytes_device0", "state_bytes_total",
      "collectives", "collective_kinds", "collective_bytes",
      "step_time_ratio", "stacked_collectives", "stacked_collective_bytes",
      "stacked_step_time_ratio", "stacked_vs_default_time"], meta={
          "width": args.width, "layers": 2, "devices": DEVICES,
          "mesh": "fsdp=8, matrices P('fsdp', None)", "repeats":
          args.repeats, "note": "simulated CPU devices share the cores: "
          "times show structure, not speed"})


if __name__ == "__main__":
  main()
