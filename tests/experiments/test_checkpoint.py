"""The experiments' checkpointer: exact restores, and a clear error when
the optimizer's state formats changed since the save."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import quantmuon as qm
from quantmuon_experiments import checkpoint


def _params():
  return {"w": jax.random.normal(jax.random.key(0), (64, 96))}


def _saved(tmp_path, tx):
  params = _params()
  state = tx.init(params)
  _, state = jax.jit(tx.update)(params, state, params)
  ckpt = checkpoint.Checkpointer(tmp_path, every=1)
  assert ckpt.maybe_save(1, params, state)
  return ckpt, params, state


def test_restore_is_exact(tmp_path):
  tx = qm.muonq(1e-3)
  ckpt, params, state = _saved(tmp_path, tx)
  _, restored = ckpt.restore(1, params, tx.init(params))
  ckpt.close()
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("saved,wanted,words", [
    (qm.muon_8bit(1e-3), qm.muon_8bit(1e-3, scheme="dynamic"),
     ("codebook='linear'", "codebook='dynamic'")),
    (qm.muonq(1e-3), qm.muonq(1e-3, companding="after_scale"),
     ("companding='before_scale'", "companding='after_scale'")),
], ids=["codebook", "companding"])
def test_resume_into_another_format_names_both(tmp_path, saved, wanted,
                                               words):
  """Was a silent resume that misread the momentum."""
  ckpt, params, _ = _saved(tmp_path, saved)
  with pytest.raises(ValueError) as err:
    ckpt.restore(1, params, wanted.init(params))
  ckpt.close()
  message = str(err.value)
  assert "momentum/w" in message, message
  for word in (*words, "--resume"):
    assert word in message, message
