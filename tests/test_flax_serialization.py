"""flax's msgpack checkpoints (``flax.serialization.to_bytes`` /
``from_bytes``) of every preset's state: exact, and refused by a target
of another format. flax is never imported by ``import quantmuon``, so the
state types register when flax is imported, before or after quantmuon."""

from __future__ import annotations

import os
import subprocess
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quantmuon as qm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADAM8 = qm.formats.Blockwise(8, "dynamic", block_size=32)
PRESETS = {
    "muon": lambda: qm.muon(1e-3),
    "muon_8bit": lambda: qm.muon_8bit(1e-3, min_size=0),
    "muon_4bit": lambda: qm.muon_4bit(1e-3, min_size=0),
    "muonq": lambda: qm.muonq(1e-3, min_size=0),
    "muon_grasp": lambda: qm.muon_grasp(1e-3, min_size=0, tile=32),
    "muon_lowbit": lambda: qm.muon_lowbit(1e-3, min_size=0),
    "muon_lowbit_2bit": lambda: qm.muon_lowbit(1e-3, bits=2, min_size=0),
    "adam_state_format": lambda: qm.muon_8bit(1e-3, min_size=0,
                                              adam_state_format=ADAM8),
}


def _params():
  return {"w": jax.random.normal(jax.random.key(0), (64, 96)),
          "b": jnp.zeros((96,))}


def _random_bits(tx, params):
  """``tx``'s state with random bits in every leaf (NaN payloads too)."""
  rng = np.random.default_rng(0)

  def fill(x):
    x = np.asarray(x)
    raw = rng.integers(0, 256, x.nbytes, dtype=np.uint8)
    return raw.view(x.dtype).reshape(x.shape)

  return jax.tree.map(fill, tx.init(params))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_state_round_trips_bit_for_bit(name):
  """Was ``TypeError: can not serialize 'Stored' object`` (and
  'StoredLeaf' with adam_state_format)."""
  tx, params = PRESETS[name](), _params()
  state = _random_bits(tx, params)
  restored = flax.serialization.from_bytes(
      tx.init(params), flax.serialization.to_bytes(state))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                  strict=True):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("saved,wanted", [
    (lambda: qm.muon_8bit(1e-3), lambda: qm.muon_8bit(1e-3,
                                                      scheme="dynamic")),
    (lambda: qm.muonq(1e-3), lambda: qm.muonq(1e-3,
                                              companding="after_scale")),
    (PRESETS["adam_state_format"],
     lambda: qm.muon_8bit(1e-3, min_size=0,
                          adam_state_format=qm.formats.Blockwise(
                              8, block_size=32))),
], ids=["codebook", "companding", "adam_state"])
def test_restore_into_another_format_fails(saved, wanted):
  params = _params()
  data = flax.serialization.to_bytes(saved().init(params))
  with pytest.raises(ValueError, match="format tagged"):
    flax.serialization.from_bytes(wanted().init(params), data)


def test_restore_into_another_shape_fails():
  params = _params()
  tx = qm.muon_8bit(1e-3, min_size=0)
  data = flax.serialization.to_bytes(tx.init(params))
  other = {"w": jnp.zeros((96, 64)), "b": jnp.zeros((96,))}
  with pytest.raises(ValueError, match="optimizer and parameters"):
    flax.serialization.from_bytes(tx.init(other), data)


ROUND_TRIP = (
    "import jax, jax.numpy as jnp, numpy as np\n"
    "tx = quantmuon.muonq(1e-3, min_size=0)\n"
    "state = tx.init({'w': jnp.ones((32, 48))})\n"
    "back = flax.serialization.from_bytes(\n"
    "    state, flax.serialization.to_bytes(state))\n"
    "assert all(np.array_equal(a, b) for a, b in\n"
    "           zip(jax.tree.leaves(state), jax.tree.leaves(back)))\n"
    "print('ok')\n")


@pytest.mark.parametrize("first", ["flax", "quantmuon"])
def test_either_import_order_registers(first):
  if first == "flax":
    code = "import flax.serialization\nimport quantmuon\n"
  else:  # flax's serialization imported by the package, later
    code = ("import sys\nimport quantmuon\n"
            "assert not any(m.startswith('flax') for m in sys.modules)\n"
            "import flax\n"
            "assert not any(type(f).__module__.startswith('quantmuon')\n"
            "               for f in sys.meta_path)\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", code + ROUND_TRIP], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip() == "ok"
