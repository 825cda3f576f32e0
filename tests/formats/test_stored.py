"""Every format: stored values as pytrees (jit, cond, vmap, flatten),
hashing and equality, zeros, and argument checking."""

from __future__ import annotations

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon import formats
from quantmuon.formats import (
    Axiswise,
    Blockwise,
    Float,
    FloatingPoint,
    Grid,
    Stored,
    Subspace,
    is_stored,
)
from quantmuon.formats import stored as stored_lib

from . import util

FORMATS = {
    "float32": Float(),
    "bfloat16": Float(jnp.bfloat16),
    "block8": Blockwise(bits=8, block_size=16),
    "block4-dynamic": Blockwise(bits=4, codebook="dynamic", block_size=16),
    "block2-mulaw": Blockwise(bits=2, codebook="mulaw", block_size=16),
    "axis4-col": Axiswise(bits=4, axis="col"),
    "grid4": Grid(bits=4, tile=8),
    "e4m3": FloatingPoint(4, 3),
    "subspace": Subspace(rank=2, factors=Blockwise(bits=8, block_size=16),
                         residual=Grid(bits=4, tile=8)),
}
SHAPE = (8, 12)


@pytest.fixture(params=list(FORMATS), ids=list(FORMATS))
def fmt(request):
  return FORMATS[request.param]


def test_stored_passes_through_jit(fmt):
  x = util.normal(SHAPE, seed=1)
  stored = util.encode(fmt, x)
  assert is_stored(stored) and stored.format == fmt
  assert stored.shape == SHAPE and stored.dtype == jnp.float32
  out = util.decode(stored)
  chex.assert_shape(out, SHAPE)
  # Jitted apart or together, up to the order of float32 operations.
  np.testing.assert_allclose(out, util.roundtrip(fmt)(x), rtol=1e-6,
                             atol=1e-7)


def test_stored_passes_through_cond(fmt):
  a, b = util.normal(SHAPE, seed=2), util.normal(SHAPE, seed=3)
  sa, sb = util.encode(fmt, a), util.encode(fmt, b)
  pick = jax.jit(lambda p, sa, sb: jax.lax.cond(p, lambda: sa, lambda: sb))
  for p, expected in ((True, sa), (False, sb)):
    chosen = pick(p, sa, sb)
    assert isinstance(chosen, Stored) and chosen.format == fmt
    chex.assert_trees_all_equal(chosen, expected)


def test_vmap_of_encode_and_decode(fmt):
  batch = util.normal((3,) + SHAPE, seed=4)
  stored = jax.jit(jax.vmap(fmt.encode))(batch)
  assert jax.tree.leaves(stored)[0].shape[0] == 3
  out = jax.jit(jax.vmap(fmt.decode))(stored)
  chex.assert_shape(out, (3,) + SHAPE)
  for i in range(3):
    np.testing.assert_allclose(out[i], util.roundtrip(fmt)(batch[i]),
                               rtol=1e-5, atol=1e-6)


def test_tree_flatten_unflatten(fmt):
  stored = util.encode(fmt, util.normal(SHAPE, seed=5))
  leaves, treedef = jax.tree.flatten(stored)
  assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
  again = jax.tree.unflatten(treedef, leaves)
  assert again.format == fmt and again.shape == stored.shape
  np.testing.assert_array_equal(util.decode(again), util.decode(stored))
  paths = [jax.tree_util.keystr(path) for path, _ in
           jax.tree_util.tree_flatten_with_path(stored)[0]]
  assert len(set(paths)) == len(paths)
  # Equal formats give equal tree structures (a jit cache hit).
  other = util.encode(fmt, util.normal(SHAPE, seed=6))
  assert jax.tree.structure(other) == treedef


def test_zeros_decode_to_exact_zeros(fmt):
  out = np.asarray(util.roundtrip(fmt)(np.zeros(SHAPE, np.float32)))
  assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(out, 0.0)
  init = jax.jit(lambda: fmt.init(SHAPE))()
  np.testing.assert_array_equal(util.decode(init), 0.0)
  assert jax.tree.structure(init) == jax.tree.structure(
      util.encode(fmt, np.zeros(SHAPE, np.float32)))


def test_input_dtype_is_kept_and_decode_dtype(fmt):
  x = util.normal(SHAPE, seed=7).astype(jnp.bfloat16)
  stored = util.encode(fmt, x)
  assert stored.dtype == jnp.bfloat16
  chex.assert_type(util.decode(stored), jnp.float32)
  out = jax.eval_shape(lambda s: s.decode(jnp.bfloat16), stored)
  chex.assert_type(out, jnp.bfloat16)


def test_formats_are_hashable_and_equal_by_fields():
  assert Blockwise(bits=4) == Blockwise(bits=4)
  assert hash(Blockwise(bits=4)) == hash(Blockwise(bits=4))
  assert Blockwise(bits=4) != Blockwise(bits=8)
  assert Blockwise(bits=4) != Axiswise(bits=4)
  assert Blockwise(scale_dtype=jnp.float16) == Blockwise(scale_dtype="float16")
  assert hash(Float(jnp.bfloat16)) == hash(Float("bfloat16"))
  nested = Subspace(rank=2, factors=Blockwise(bits=8), residual=Grid())
  assert nested == Subspace(rank=2, factors=Blockwise(bits=8),
                            residual=Grid())
  assert nested != Subspace(rank=2, factors=Blockwise(bits=4),
                            residual=Grid())
  table = {fmt: name for name, fmt in FORMATS.items()}
  assert len(table) == len(FORMATS)
  assert table[Grid(bits=4, tile=8)] == "grid4"
  with pytest.raises(AttributeError):
    Blockwise().bits = 4  # frozen


def test_decode_checks_the_format():
  stored = util.encode(FORMATS["block8"], util.normal(SHAPE))
  with pytest.raises(ValueError, match="written by"):
    Blockwise(bits=4).decode(stored)


@pytest.mark.parametrize("make,name", [
    (lambda: Blockwise(bits=3), "bits"),
    (lambda: Axiswise(bits=16), "bits"),
    (lambda: Grid(bits=1), "bits"),
    (lambda: Blockwise(block_size=0), "block_size"),
    (lambda: Blockwise(block_size=-4), "block_size"),
    (lambda: Blockwise(block_size=2.5), "block_size"),
    (lambda: Grid(tile=-1), "tile"),
    (lambda: Grid(tile=0), "tile"),
    (lambda: Axiswise(axis="diagonal"), "axis"),
    (lambda: Blockwise(codebook="nf4"), "codebook"),
    (lambda: Grid(codebook="nf4"), "codebook"),
    (lambda: Blockwise(rounding="up"), "rounding"),
    (lambda: Blockwise(mu=0.0), "mu"),
    (lambda: Grid(codebook="mulaw", mu=-1.0), "Grid: mu"),
    (lambda: Axiswise(scale_dtype=jnp.int8), "scale_dtype"),
    (lambda: Grid(scale_dtype=jnp.int8), "scale_dtype"),
    (lambda: Subspace(rank_divisor=0), "rank_divisor"),
    (lambda: Subspace(power_iters=0), "power_iters"),
])
def test_bad_arguments_name_the_parameter(make, name):
  with pytest.raises(ValueError, match=name):
    make()


@pytest.mark.parametrize("fmt", [
    Blockwise(bits=4, block_size=16, rounding="stochastic"),
    Axiswise(bits=8, rounding="stochastic"),
    Grid(bits=4, tile=8, rounding="stochastic"),
    FloatingPoint(4, 3, rounding="stochastic"),
    Subspace(rank=1, residual=Grid(bits=4, tile=8, rounding="stochastic")),
], ids=lambda fmt: type(fmt).__name__)
def test_stochastic_rounding_needs_a_key(fmt):
  x = util.normal((4, 8))
  with pytest.raises(ValueError, match="key"):
    util.encode(fmt, x)
  util.encode(fmt, x, key=jax.random.key(0))  # and works with one


def test_integer_input_is_rejected():
  with pytest.raises(ValueError, match="floating"):
    Blockwise().encode(np.arange(8, dtype=np.int32))
  with pytest.raises(ValueError, match="floating"):
    FloatingPoint().encode(np.arange(8, dtype=np.int32))


@pytest.mark.parametrize("fmt", [
    formats.Blockwise(bits=8), formats.Axiswise(bits=4), formats.Grid(bits=4),
    formats.Subspace(rank=1)], ids=lambda f: type(f).__name__)
def test_empty_arrays_are_a_clear_error(fmt):
  with pytest.raises(ValueError, match="empty array"):
    fmt.encode(jnp.zeros((0, 5)))


@pytest.mark.parametrize("fmt", [formats.Float(), formats.FloatingPoint(5, 2)],
                         ids=lambda f: type(f).__name__)
def test_plain_formats_hold_empty_arrays(fmt):
  stored = fmt.encode(jnp.zeros((0, 5)))
  assert fmt.decode(stored).shape == (0, 5)


def test_key_paths_carry_the_format_tag(fmt):
  """A part's key names its format, so a checkpoint of one format does not
  restore into a target of another with the same shapes."""
  stored = util.encode(fmt, util.normal(SHAPE, seed=5))
  for path, _ in jax.tree_util.tree_flatten_with_path(stored)[0]:
    name, tag = stored_lib.split_part_key(path[0].key)
    assert name in stored.parts and tag == stored_lib.format_tag(fmt)


def test_format_tags_follow_equality():
  tag = stored_lib.format_tag
  assert tag(Blockwise(bits=8, mu=255)) == tag(Blockwise(bits=8, mu=255.0))
  assert tag(Float(jnp.float32)) == tag(Float("float32"))
  different = [Blockwise(), Blockwise(codebook="dynamic"),
               Blockwise(codebook="mulaw"),
               Blockwise(codebook="mulaw", companding="before_scale"),
               Blockwise(codebook="mulaw", mu=100.0), Axiswise(),
               Subspace(), Subspace(residual=Grid(bits=4, tile=64))]
  assert len({tag(f) for f in different}) == len(different)


def test_format_tags_are_the_same_in_every_process():
  code = ("from quantmuon.formats import Subspace, stored\n"
          "print(stored.format_tag(Subspace()))")
  env = dict(os.environ, PYTHONHASHSEED="123", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                       capture_output=True, text=True).stdout.strip()
  assert out == stored_lib.format_tag(Subspace())
