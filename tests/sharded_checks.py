"""Checks on 8 simulated CPU devices, run by tests/test_sharding.py.

Run as a script in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu``;
prints one JSON object of measurements, which the tests assert on.
``python tests/sharded_checks.py [--full]``: ``--full`` runs every preset
under every layout (slow); otherwise a smaller set.
"""

from __future__ import annotations

import json
import sys
import tempfile

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from optax.contrib import MuonDimensionNumbers

import quantmuon as qm
from quantmuon import formats
from quantmuon.formats.layout import matrix_shape
from quantmuon.formats.packing import unpack
from quantmuon.sharding import state_shardings
from quantmuon.transforms import StoredLeaf
from quantmuon_experiments.hlo import collectives

PRESETS = ("muon", "muon_8bit", "muon_4bit", "muonq", "muon_grasp",
           "muon_lowbit")
STEPS = 3
SHAPES = {"a": (64, 48), "b": (48, 136), "r": (48, 130), "bias": (48,)}
# Layouts: mesh shape and names, and the spec of each parameter. "r" is
# ragged: 130 columns, tiles that do not line up with 6-row shards.
LAYOUTS = {
    "fsdp": ((8,), ("fsdp",), {"a": P("fsdp", None), "b": P("fsdp", None),
                               "r": P("fsdp", None), "bias": P()}),
    "tp": ((8,), ("tp",), {"a": P(None, "tp"), "b": P(None, "tp"),
                           "r": P("tp", None), "bias": P()}),
    "2d": ((4, 2), ("fsdp", "tp"), {"a": P("fsdp", "tp"),
                                    "b": P("fsdp", "tp"),
                                    "r": P("fsdp", None), "bias": P()}),
}
FORMATS = {
    "blockwise": formats.Blockwise(bits=8, block_size=16),
    "axiswise_tensor": formats.Axiswise(axis="tensor"),
    "axiswise_row": formats.Axiswise(axis="row"),
    "axiswise_col": formats.Axiswise(axis="col"),
    "grid": formats.Grid(bits=4, tile=8),
    "subspace": formats.Subspace(
        rank=4, factors=formats.Blockwise(bits=8, block_size=16),
        residual=formats.Grid(bits=4, tile=8)),
}
def mesh_of(layout: str, axis_type=AxisType.Auto, devices=None):
  shape, names, _ = LAYOUTS[layout]
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(names),
                       devices=devices)


def params_and_grads():
  keys = jax.random.split(jax.random.key(0), 2 * len(SHAPES))
  params = {k: jax.random.normal(keys[i], s)
            for i, (k, s) in enumerate(SHAPES.items())}
  grads = [{k: jax.random.normal(keys[len(SHAPES) + i],
                                 s) * (1 + t) for i, (k, s) in
            enumerate(SHAPES.items())} for t in range(STEPS)]
  return params, grads


def shardings(mesh, layout: str):
  return {k: NamedSharding(mesh, spec)
          for k, spec in LAYOUTS[layout][2].items()}


def run(tx, params, grads, param_sh=None, state_sh=None):
  """init and STEPS updates; pinned when shardings are given."""
  if state_sh is None:
    init, update = jax.jit(tx.init), jax.jit(tx.update)
  else:
    init = jax.jit(tx.init, out_shardings=state_sh)
    update = jax.jit(tx.update, out_shardings=(param_sh, state_sh))
  state = init(params)
  states, updates = [state], []
  for g in grads:
    u, state = update(g, state, params)
    states.append(state)
    updates.append(u)
  return states, updates


def specs_equal(tree, want) -> list[str]:
  """Paths of leaves whose sharding is not equivalent to ``want``'s."""
  bad = []
  for (path, x), w in zip(jax.tree_util.tree_leaves_with_path(tree),
                          jax.tree.leaves(want), strict=True):
    if not x.sharding.is_equivalent_to(w, x.ndim):
      bad.append(f"{jax.tree_util.keystr(path)}: {x.sharding} != {w.spec}")
  return bad


def code_arrays(tree) -> list[np.ndarray]:
  """The unpacked codes of every ``Stored`` in ``tree``, as int arrays."""
  out = []

  def visit(stored: formats.Stored) -> None:
    for part in stored.parts.values():
      if formats.is_stored(part):
        visit(part)
    bits = getattr(stored.format, "bits", None)
    if bits is not None and "codes" in stored.parts:
      m, n = matrix_shape(stored.shape)
      codes = np.asarray(stored["codes"]).reshape(m, -1)
      out.append(np.asarray(unpack(codes, bits, n)).astype(int))

  for leaf in jax.tree.leaves(tree, is_leaf=formats.is_stored):
    if formats.is_stored(leaf):
      visit(leaf)
  return out


def compare(ref_states, ref_updates, states, updates) -> dict:
  """Code differences (in levels) and update differences per step."""
  differing, total, max_level = 0, 0, 0
  for a, b in zip(code_arrays(ref_states), code_arrays(states),
                  strict=True):
    diff = np.abs(a - b)
    differing += int(np.count_nonzero(diff))
    total += a.size
    max_level = max(max_level, int(diff.max(initial=0)))
  rel, fro = [], []
  for ref, got in zip(ref_updates, updates, strict=True):
    pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree.leaves(ref), jax.tree.leaves(got), strict=True)]
    rel.append(max(float(np.abs(a - b).max() / np.abs(a).max())
                   for a, b in pairs))
    fro.append(max(float(np.linalg.norm(a - b) / np.linalg.norm(a))
                   for a, b in pairs))
  return {"code_fraction": differing / max(total, 1),
          "code_max_diff": max_level, "update_rel": max(rel),
          "update_rel_per_step": rel, "update_fro_per_step": fro}


def preset_checks(names, layouts) -> dict:
  params, grads = params_and_grads()
  out = {}
  for name in names:
    tx = getattr(qm, name)(1e-2, min_size=0)
    ref_states, ref_updates = run(tx, params, grads)
    for layout in layouts:
      mesh = mesh_of(layout)
      psh = shardings(mesh, layout)
      sp = jax.device_put(params, psh)
      sg = [jax.device_put(g, psh) for g in grads]
      want = state_shardings(tx, sp)
      plain = jax.jit(tx.init)(sp)
      states, updates = run(tx, sp, sg, psh, want)
      rec = compare(ref_states, ref_updates, states, updates)
      rec["pinned_mismatch"] = sum(
          (specs_equal(s, want) for s in states), [])
      rec["plain_init_single_device"] = sum(
          isinstance(x.sharding, jax.sharding.SingleDeviceSharding)
          and x.ndim > 0 for x in jax.tree.leaves(plain))
      # Parts shaped like their parameter (codes, values, residual codes)
      # placed like it by plain jit, without pins (keys are name@tag).
      rec["plain_init_big_mismatch"] = [
          m for m in specs_equal(plain, want)
          if "codes" in m and "['P@" not in m and "['R@" not in m
          or "values" in m]
      out[f"{name}/{layout}"] = rec
  return out


def explicit_checks(layouts) -> dict:
  """Explicit mesh axes: presets' init, and the momentum transform's
  updates without pins (the presets' updates: explicit_preset_checks)."""
  params, grads = params_and_grads()
  out = {}
  for layout in layouts:
    mesh = mesh_of(layout, AxisType.Explicit)
    psh = shardings(mesh, layout)
    with jax.sharding.set_mesh(mesh):
      sp = jax.device_put(params, psh)
      sg = [jax.device_put(g, psh) for g in grads]
      for name in PRESETS:
        tx = getattr(qm, name)(1e-2, min_size=0)
        state = jax.jit(tx.init)(sp)
        out[f"init/{name}/{layout}"] = specs_equal(
            state, state_shardings(tx, sp))
      for fname, fmt in FORMATS.items():
        tx = qm.transforms.scale_by_quantized_momentum(momentum_format=fmt,
                                            min_size=1000, impl="xla")
        want = state_shardings(tx, sp)
        states, _ = run(tx, sp, sg)
        out[f"update/{fname}/{layout}"] = sum(
            (specs_equal(s, want) for s in states), [])
        # min_size=1000 reads the global 3072 elements, not a shard's 384.
        kept = states[-1].momentum["a"].format
        out[f"global_min_size/{fname}/{layout}"] = (
            [] if kept == fmt else [f"'a' stored in {kept!r}"])
    # Without a mesh context: the arrays' types still carry the mesh.
    tx = qm.muon_grasp(1e-2, min_size=0)
    out[f"init_without_set_mesh/muon_grasp/{layout}"] = specs_equal(
        jax.jit(tx.init)(sp), state_shardings(tx, sp))
  return out


def hlo_checks() -> dict:
  """Collectives in the compiled momentum step, per format and layout.

  (64, 256) on 8 devices: 8-row and 32-column shards hold whole blocks
  (16) and grid tiles (8); tiles that straddle shards are gathered.
  """
  shape = (64, 256)
  out = {}
  g = jax.random.normal(jax.random.key(1), shape)
  for layout in ("fsdp", "tp"):
    mesh = mesh_of(layout)
    spec = LAYOUTS[layout][2]["a"]
    psh = {"w": NamedSharding(mesh, spec)}
    grads = jax.device_put({"w": g}, psh)
    for fname, fmt in FORMATS.items():
      tx = qm.transforms.scale_by_quantized_momentum(
          momentum_format=fmt, min_size=0, impl="xla")
      want = state_shardings(tx, grads)
      state = jax.jit(tx.init, out_shardings=want)(grads)
      step = jax.jit(tx.update, out_shardings=(psh, want))
      text = step.lower(grads, state).compile().as_text()
      out[f"{fname}/{layout}"] = [(c.kind, c.elements)
                                   for c in collectives(text)]
  return out


def checkpoint_checks() -> dict:
  """Orbax save on 8 devices (FSDP), restore onto other meshes."""
  import orbax.checkpoint as ocp

  params, grads = params_and_grads()
  out = {}
  for name in ("muon_8bit", "muon_grasp"):
    tx = getattr(qm, name)(1e-2, min_size=0)
    src = mesh_of("fsdp")
    psh = shardings(src, "fsdp")
    sp = jax.device_put(params, psh)
    want = state_shardings(tx, sp)
    state = jax.jit(tx.init, out_shardings=want)(sp)
    update = jax.jit(tx.update, out_shardings=(psh, want))
    _, state = update(jax.device_put(grads[0], psh), state, sp)
    ref, _ = update(jax.device_put(grads[1], psh), state, sp)
    with tempfile.TemporaryDirectory() as tmp, \
        ocp.StandardCheckpointer() as ckptr:
      ckptr.save(f"{tmp}/ckpt", {"params": sp, "state": state})
      ckptr.wait_until_finished()
      targets = {"fsdp8": ("fsdp", jax.devices()),
                 "tp8": ("tp", jax.devices()),
                 "fsdp4": ("fsdp", jax.devices()[:4]),
                 "one": ("fsdp", jax.devices()[:1])}
      for tname, (layout, devices) in targets.items():
        mesh = (jax.make_mesh((len(devices),), (LAYOUTS[layout][1][0],),
                              axis_types=(AxisType.Auto,), devices=devices))
        tsh = {k: NamedSharding(mesh, s if len(devices) > 1 else P())
               for k, s in LAYOUTS[layout][2].items()}
        tstate = state_shardings(tx, jax.tree.map(
            lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s),
            params, tsh))
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            {"params": sp, "state": state}, {"params": tsh,
                                              "state": tstate})
        got = ckptr.restore(f"{tmp}/ckpt", abstract)
        placed = specs_equal(got["state"], tstate)
        step = jax.jit(tx.update, out_shardings=(tsh, tstate))
        u, _ = step(jax.device_put(grads[1], tsh), got["state"],
                    got["params"])
        diffs = [float(np.abs(np.asarray(a) - np.asarray(b)).max()
                       / np.abs(np.asarray(a)).max())
                 for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(u),
                                 strict=True)]
        out[f"{name}/{tname}"] = {"placement_mismatch": placed,
                                  "update_rel": max(diffs)}
  return out


NS_SHAPES = {"a": (64, 48), "b": (48, 64), "c": (64, 48), "d": (128, 32),
             "lone": (40, 136), "conv": (2, 32, 48)}
NS_DIMS = {"conv": MuonDimensionNumbers(reduction_axis=1, output_axis=2)}


def stacked_checks() -> dict:
  """Newton-Schulz in the stacked layout against one device, and the
  collectives of the compiled orthogonalization in both layouts.

  NS_SHAPES on 8 devices: a, b and c stack (b transposed), d and lone
  are lone matrices (lone's 136 columns are ragged over 8), conv is a
  batch of two.
  """
  keys = jax.random.split(jax.random.key(2), len(NS_SHAPES))
  g = {k: jax.random.normal(key, s)
       for key, (k, s) in zip(keys, NS_SHAPES.items(), strict=True)}
  dims = {k: NS_DIMS.get(k) for k in NS_SHAPES}
  ref, _ = qm.transforms.orthogonalize(
      dimension_numbers=dims, ns_layout="leaf").update(g, None)
  out = {}
  for layout, axis_type in (("fsdp", AxisType.Auto), ("2d", AxisType.Auto),
                            ("fsdp", AxisType.Explicit)):
    mesh = mesh_of(layout, axis_type)
    axis = LAYOUTS[layout][1][0]
    sh = {k: NamedSharding(mesh, P(axis) if s[0] % 8 == 0 else P())
          for k, s in NS_SHAPES.items()}
    rec = {}
    with jax.sharding.set_mesh(mesh):
      sg = jax.device_put(g, sh)
      for ns_layout in ("auto", "leaf"):
        tx = qm.transforms.orthogonalize(dimension_numbers=dims,
                                         ns_layout=ns_layout)
        fn = jax.jit(lambda u, tx=tx: tx.update(u, None)[0])
        try:
          got = fn(sg)
        except Exception as e:  # the leaf layout on Explicit axes
          rec[ns_layout] = {"error": type(e).__name__}
          continue
        found = collectives(fn.lower(sg).compile().as_text())
        rec[ns_layout] = {
            "max_abs_diff": max(
                float(np.abs(np.asarray(got[k]) - np.asarray(ref[k])).max())
                for k in NS_SHAPES),
            "collectives": len(found),
            "collective_bytes": sum(c.nbytes for c in found),
            "all_reduce_max_elements": max(
                (c.elements for c in found if c.kind == "all-reduce"),
                default=0),
            "specs": {k: str(got[k].sharding.spec) for k in NS_SHAPES}}
    out[f"{layout}/{axis_type.name}"] = rec
  return out


# Unpinned updates: plain matrices, a conv kernel (default dimension
# numbers), and a stack of layers with its stack axis declared.
UNPINNED_SHAPES = {"a": (64, 48), "r": (48, 130), "bias": (48,),
                   "conv": {"kernel": (3, 3, 8, 16)},
                   "layers": {"mlp": {"kernel": (4, 64, 48)}}}
UNPINNED_SPECS = {
    "fsdp": {"a": P("fsdp", None), "r": P("fsdp", None), "bias": P(),
             "conv": {"kernel": P(None, None, None, "fsdp")},
             "layers": {"mlp": {"kernel": P(None, "fsdp", None)}}},
    "tp": {"a": P(None, "tp"), "r": P("tp", None), "bias": P(),
           "conv": {"kernel": P(None, None, "tp", None)},
           "layers": {"mlp": {"kernel": P(None, None, "tp")}}},
    "2d": {"a": P("fsdp", "tp"), "r": P("fsdp", None), "bias": P(),
           "conv": {"kernel": P(None, None, "fsdp", "tp")},
           "layers": {"mlp": {"kernel": P(None, "fsdp", "tp")}}},
}


def unpinned_checks(names, layouts) -> dict:
  """``jax.jit(tx.update)`` with no ``out_shardings``, three steps, the
  state fed back: state leaves whose sharding moved from where ``init``
  put them, and how often ``update`` was traced."""
  shapes = jax.tree.leaves(UNPINNED_SHAPES,
                           is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(3), len(shapes))
  treedef = jax.tree.structure(UNPINNED_SHAPES,
                               is_leaf=lambda x: isinstance(x, tuple))
  params = treedef.unflatten([jax.random.normal(k, s)
                              for k, s in zip(keys, shapes, strict=True)])
  out = {}
  for name in names:
    tx = getattr(qm, name)(1e-2, min_size=0, stack_axes={"layers": 0})
    for layout in layouts:
      mesh = mesh_of(layout)
      sh = jax.tree.map(lambda spec, mesh=mesh: NamedSharding(mesh, spec),
                        UNPINNED_SPECS[layout],
                        is_leaf=lambda x: isinstance(x, P))
      sp = jax.device_put(params, sh)
      # Both record each stored value's placement.
      for kind, state in (("eager", tx.init(sp)),
                          ("pinned", qm.sharding.init(tx, sp))):
        first = [x.sharding for x in jax.tree.leaves(state)]
        traces = []

        def update(g, s, p, tx=tx, traces=traces):
          traces.append(1)
          return tx.update(g, s, p)

        step = jax.jit(update)
        moved = set()
        for t in range(STEPS):
          grads = jax.tree.map(lambda x, t=t: x * (t + 2), sp)
          _, state = step(grads, state, sp)
          for (path, x), before in zip(
              jax.tree_util.tree_leaves_with_path(state), first,
              strict=True):
            if not x.sharding.is_equivalent_to(before, x.ndim):
              moved.add(jax.tree_util.keystr(path))
        out[f"{name}/{layout}/{kind}"] = {"moved": sorted(moved),
                                          "traces": len(traces)}
  return out


def shard_map_checks(names) -> dict:
  """An update inside ``jax.shard_map`` with replicated parameters (each
  device runs the whole update on its copy) equals the plain update."""
  params, grads = params_and_grads()
  mesh = mesh_of("fsdp")
  out = {}
  for name in names:
    tx = getattr(qm, name)(1e-2, min_size=0)
    state = tx.init(params)
    want, _ = jax.jit(tx.update)(grads[0], state, params)
    try:
      got, _ = jax.jit(jax.shard_map(
          lambda g, s, p, tx=tx: tx.update(g, s, p), mesh=mesh,
          in_specs=P(), out_specs=P()))(grads[0], state, params)
      out[name] = max(float(np.abs(np.asarray(got[k]) - np.asarray(want[k])
                                   ).max()) for k in SHAPES)
    except Exception as e:  # noqa: BLE001 (recorded for the test)
      out[name] = f"{type(e).__name__}: {str(e)[:200]}"
  return out


def explicit_preset_checks(names) -> dict:
  """Every preset's update on Explicit axes (no pins), against the same
  update on Auto axes (pinned) and on one device, 2-D mesh, 3 steps."""
  shapes = {"a": (64, 48), "a2": (48, 64), "b": (48, 136), "bias": (48,)}
  specs = {"a": P("fsdp", "tp"), "a2": P("fsdp", "tp"), "b": P("fsdp", "tp"),
           "bias": P()}
  keys = jax.random.split(jax.random.key(3), 4 * len(shapes))
  params = {k: jax.random.normal(keys[i], s)
            for i, (k, s) in enumerate(shapes.items())}
  grads = [{k: jax.random.normal(keys[len(shapes) * (t + 1) + i], s)
            for i, (k, s) in enumerate(shapes.items())} for t in range(3)]
  out = {}
  for name in names:
    tx = getattr(qm, name)(1e-2, min_size=0)
    ref_states, ref_updates = run(tx, params, grads)
    results = {}
    for axis_type in (AxisType.Auto, AxisType.Explicit):
      mesh = mesh_of("2d", axis_type)
      psh = {k: NamedSharding(mesh, s) for k, s in specs.items()}
      with jax.sharding.set_mesh(mesh):
        sp = jax.device_put(params, psh)
        sg = [jax.device_put(g, psh) for g in grads]
        want = state_shardings(tx, sp)
        if axis_type == AxisType.Auto:
          states, updates = run(tx, sp, sg, psh, want)
        else:
          states, updates = run(tx, sp, sg)
        results[axis_type.name] = (states, updates,
                                   sum((specs_equal(x, want)
                                        for x in states), []))
    auto, explicit = results["Auto"], results["Explicit"]
    rec = compare(auto[0], auto[1], explicit[0], explicit[1])
    one = compare(ref_states, ref_updates, auto[0], auto[1])
    out[name] = {"explicit_vs_auto": rec, "auto_vs_one_device": one,
                 "explicit_mismatch": explicit[2],
                 "auto_mismatch": auto[2]}
  return out


def quantize_state_checks() -> dict:
  """8-bit AdamW (``quantize_state``) under a plain ``jax.jit(tx.init)``:
  its codes and scales placed like their parameters, in every layout.

  Blocks of 16 lie inside the shards here (columns 128 and 256 over 8 or
  2); where a block straddles shards XLA's propagation through the tile
  reshape replicates the codes unless they are pinned (``state_shardings``).
  """
  import optax

  shapes = {"a": (64, 128), "b": (32, 256), "r": (48, 128), "bias": (48,)}
  keys = jax.random.split(jax.random.key(4), len(shapes))
  params = {k: jax.random.normal(key, s)
            for key, (k, s) in zip(keys, shapes.items(), strict=True)}
  tx = qm.quantize_state(
      optax.adam(1e-3), {"mu": formats.Blockwise(8, "dynamic", 16),
                         "nu": formats.Blockwise(8, "unsigned_dynamic", 16)},
      min_size=0)
  ref = jax.tree.leaves(tx.init(params))
  out = {}
  for layout in LAYOUTS:
    mesh = mesh_of(layout)
    sp = jax.device_put(params, shardings(mesh, layout))
    got = jax.jit(tx.init)(sp)
    out[layout] = {
        "mismatch": specs_equal(got, state_shardings(tx, sp)),
        "values_equal": all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(ref, jax.tree.leaves(got), strict=True)),
        "stored_leaves": sum(
            isinstance(x, StoredLeaf) for x in jax.tree.leaves(
                got, is_leaf=lambda x: isinstance(x, StoredLeaf)))}
  return out


SECTIONS = ("presets", "explicit", "hlo", "checkpoint", "stacked",
            "unpinned", "shard_map",
            "explicit_presets", "quantize_state")


def main() -> None:
  """Runs the sections named on the command line (all by default)."""
  full = "--full" in sys.argv
  names = [a for a in sys.argv[1:] if a in SECTIONS] or SECTIONS
  assert len(jax.devices()) == 8, jax.devices()
  runs = {
      "presets": lambda: preset_checks(
          PRESETS, tuple(LAYOUTS) if full else ("fsdp",)),
      "explicit": lambda: explicit_checks(
          tuple(LAYOUTS) if full else ("2d",)),
      "hlo": hlo_checks,
      "checkpoint": checkpoint_checks,
      "stacked": stacked_checks,
      "explicit_presets": lambda: explicit_preset_checks(PRESETS),
      "quantize_state": quantize_state_checks,
      "unpinned": lambda: unpinned_checks(
          # A Blockwise and a Subspace preset on both mesh axes.
          PRESETS if full else ("muon_8bit", "muon_lowbit"),
          tuple(LAYOUTS) if full else ("2d",)),
      "shard_map": lambda: shard_map_checks(("muon", "muon_8bit",
                                             "muon_lowbit")),
  }
  print(json.dumps({n: runs[n]() for n in names}, indent=1, default=str))


if __name__ == "__main__":
  main()
