"""The presets with ``impl="pallas_interpret"`` against ``impl="xla"``.

Three steps through the real optimizers (routing, Newton-Schulz, AdamW for
the rest): the same states (codes bit-exact) and the same updates. XLA on
the CPU contracts ``beta * m + g`` into a fused multiply-add in some loops
and not in others, so the fresh momentum of the two paths can differ in its
last bit; Newton-Schulz's five iterations carry that to a few 1e-6 of the
update, hence ``UPDATE_RTOL``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quantmuon as qm

from . import util

PRESETS = {
    "muon_8bit": lambda impl: qm.muon_8bit(0.02, impl=impl),
    "muon_8bit_dynamic": lambda impl: qm.muon_8bit(0.02, scheme="dynamic",
                                                   impl=impl),
    "muon_4bit": lambda impl: qm.muon_4bit(0.02, impl=impl),
    "muon_4bit_blocks": lambda impl: qm.muon_4bit(0.02, block_size=128,
                                                  impl=impl),
    "muonq": lambda impl: qm.muonq(0.02, impl=impl),
    "muonq_after_scale": lambda impl: qm.muonq(0.02,
                                               companding="after_scale",
                                               impl=impl),
    "muonq_group": lambda impl: qm.muonq(0.02, residual_granularity="group",
                                         companding="after_scale", impl=impl),
    "muon_grasp": lambda impl: qm.muon_grasp(0.02, impl=impl),
    "muon_lowbit": lambda impl: qm.muon_lowbit(0.02, impl=impl),
    "muon_lowbit_2bit": lambda impl: qm.muon_lowbit(0.02, bits=2, impl=impl),
    "grid_ema": lambda impl: qm.quantized_muon(
        0.02, momentum_format=qm.formats.Grid(bits=4, tile=64),
        accumulation="ema",
        impl=impl),
}
# A square matrix, a ragged one, and a vector (AdamW).
SHAPES = {"w": (96, 96), "v": (40, 130), "b": (96,)}
STEPS = 3
UPDATE_RTOL = 2e-5


def _run(tx, grads):
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  updates = []
  for g in grads:
    u, state = update(g, state, params)
    updates.append(u)
  return updates, state


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_interpret_kernels_match_xla(name):
  rng = np.random.default_rng(1)
  grads = [{k: jnp.asarray(rng.standard_normal(s), jnp.float32)
            for k, s in SHAPES.items()} for _ in range(STEPS)]
  ref_updates, ref_state = _run(PRESETS[name]("xla"), grads)
  updates, state = _run(PRESETS[name]("pallas_interpret"), grads)
  for step, (ref, out) in enumerate(zip(ref_updates, updates, strict=True)):
    for k in SHAPES:
      util.assert_close(ref[k], out[k], f"step {step} update {k}",
                        rtol=UPDATE_RTOL)
  util.assert_same_state(ref_state, state)
