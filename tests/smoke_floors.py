"""A smoke test of the dependencies: run in CI at the pyproject's floors.

  python tests/smoke_floors.py

Checks, in a few seconds each: the library imports; every preset's update
runs under ``jax.jit`` and gives finite updates and a state of the same
structure and dtypes; one ``nnx.Optimizer`` step of a Flax model; a
preset's state through the experiments' Orbax checkpoints; the compare
command's flags and config (a bad value exits with status 2); and one
sharded update on 2 simulated CPU devices (in a subprocess, with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``), equal to the
update on one device. Prints the versions and exits non-zero on a failure.

``.ci/run`` installs the floors of ``pyproject.toml`` (each ``>=`` pinned
to ``==``) in a fresh virtual environment and runs this file there; it
runs on the current versions too.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import quantmuon as qm

PRESETS = ("muon", "muon_8bit", "muon_4bit", "muonq", "muon_grasp",
           "muon_lowbit")
PACKAGES = ("jax", "jaxlib", "optax", "chex", "numpy", "absl-py", "flax",
            "orbax-checkpoint", "ml_collections")


def _params() -> dict:
  """An embedding, a hidden matrix (at the presets' min_size), a bias."""
  keys = jax.random.split(jax.random.key(0), 2)
  return {"embed": {"embedding": jax.random.normal(keys[0], (16, 64))},
          "hidden": {"kernel": jax.random.normal(keys[1], (64, 64)),
                     "bias": jnp.zeros(64)}}


def check_presets() -> None:
  """Every preset's update, jitted, twice: finite, state stable."""
  params = _params()
  grads = jax.tree.map(lambda p: 0.01 * jnp.cos(p), params)
  for name in PRESETS:
    tx = getattr(qm, name)(1e-2)
    state = jax.jit(tx.init)(params)
    update = jax.jit(tx.update)
    for _ in range(2):
      updates, new_state = update(grads, state, params)
      assert jax.tree.structure(new_state) == jax.tree.structure(state), name
      for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state),
                      strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
      state = new_state
    assert all(bool(jnp.all(jnp.isfinite(u)))
               for u in jax.tree.leaves(updates)), name
    assert float(jnp.abs(updates["hidden"]["kernel"]).sum()) > 0, name


def check_nnx() -> None:
  """One nnx.Optimizer step of a Flax model, under nnx.jit."""
  from flax import nnx

  class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
      self.embed = nnx.Embed(11, 64, rngs=rngs)
      self.hidden = nnx.Linear(64, 64, rngs=rngs)
      self.head = nnx.Linear(64, 5, rngs=rngs)

    def __call__(self, tokens):
      return self.head(jax.nn.gelu(self.hidden(self.embed(tokens))))

  def loss_fn(model, tokens, labels):
    logits = model(tokens)
    return -jnp.mean(jnp.take_along_axis(
        jax.nn.log_softmax(logits), labels[:, None], axis=-1))

  @nnx.jit
  def step(model, optimizer, tokens, labels):
    optimizer.update(model, nnx.grad(loss_fn)(model, tokens, labels))

  model = Tiny(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, qm.muon_lowbit(1e-2), wrt=nnx.Param)
  before = np.asarray(model.hidden.kernel[...])
  tokens = jnp.arange(8) % 11
  step(model, optimizer, tokens, tokens % 5)
  assert not np.array_equal(before, np.asarray(model.hidden.kernel[...]))


def check_checkpoint() -> None:
  """A preset's state after a step, through the experiments' Orbax
  checkpoints, comes back equal."""
  from quantmuon_experiments import checkpoint

  params = _params()
  tx = qm.muon_lowbit(1e-2)
  state = jax.jit(tx.init)(params)
  grads = jax.tree.map(lambda p: 0.01 * jnp.cos(p), params)
  _, state = jax.jit(tx.update)(grads, state, params)
  with tempfile.TemporaryDirectory() as tmp:
    saver = checkpoint.Checkpointer(tmp, every=1)
    assert saver.maybe_save(1, params, state)
    restored = saver.restore(1, params, tx.init(params))
    saver.close()
  for a, b in zip(jax.tree.leaves((params, state)),
                  jax.tree.leaves(restored), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def check_command_line() -> None:
  """quantmuon-compare's flags and config (absl, ml_collections) and the
  application's imports: a bad override exits with status 2."""
  with tempfile.TemporaryDirectory() as tmp:
    done = subprocess.run(
        [sys.executable, "-m", "quantmuon_experiments.compare",
         "--workdir", tmp, "--config.train.steps=0"],
        env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
        text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-3000:]
  assert "config.train.steps must be at least 1" in done.stderr, (
      done.stderr[-3000:])


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import quantmuon as qm
assert jax.device_count() == 2, jax.devices()
params = {"w": jax.random.normal(jax.random.key(0), (64, 128)),
          "b": jnp.zeros(128)}
grads = jax.tree.map(lambda p: 0.01 * jnp.cos(p), params)
tx = qm.muon_8bit(1e-2)
mesh = jax.make_mesh((2,), ("fsdp",))
param_shardings = {"w": NamedSharding(mesh, P("fsdp", None)),
                   "b": NamedSharding(mesh, P())}
sharded = jax.device_put(params, param_shardings)
shardings = qm.sharding.state_shardings(tx, sharded)
state = jax.jit(tx.init, out_shardings=shardings)(sharded)
update = jax.jit(tx.update, out_shardings=(param_shardings, shardings))
updates, _ = update(jax.device_put(grads, param_shardings), state, sharded)
# The stored momentum of w is split over the devices, not replicated.
assert any(len(s.device_set) == 2 and not s.is_fully_replicated
           for s in jax.tree.leaves(shardings)), shardings
one, _ = jax.jit(tx.update)(grads, tx.init(params), params)
np.testing.assert_allclose(np.asarray(updates["w"]), np.asarray(one["w"]),
                           rtol=2e-3, atol=1e-6)
print("ok")
"""


def check_sharded() -> None:
  """One sharded update on 2 simulated devices equals one device's."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  done = subprocess.run([sys.executable, "-c", SHARDED], env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0 and done.stdout.strip() == "ok", (
      done.stderr[-3000:])


def main() -> None:
  """Runs every check and prints the versions and the time of each."""
  versions = {}
  for package in PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = "absent"
  print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
  for check in (check_presets, check_nnx, check_checkpoint,
                check_command_line, check_sharded):
    start = time.perf_counter()
    check()
    print(f"{check.__name__}: ok ({time.perf_counter() - start:.1f} s)",
          flush=True)


if __name__ == "__main__":
  main()
