"""The byte corpus: files, the deterministic split, windows, errors."""

from __future__ import annotations

import numpy as np
import pytest

from quantmuon_experiments import data


def _write_corpus(root, sizes):
  rng = np.random.default_rng(1)
  for i, size in enumerate(sizes):
    text = rng.integers(32, 127, size, dtype=np.uint8).tobytes()
    (root / f"f{i}.txt").write_bytes(text)
  (root / ".hidden").write_bytes(b"x" * 100)
  (root / "blob.bin").write_bytes(b"\0" * 100)


def test_read_skips_hidden_and_binary(tmp_path):
  _write_corpus(tmp_path, [1000, 500])
  assert [f.name for f in data.list_files(tmp_path)] == ["f0.txt", "f1.txt"]
  assert len(data.read_corpus(tmp_path)) == 1500
  assert len(data.read_corpus(tmp_path, max_bytes=1200)) == 1200
  assert data.read_corpus(tmp_path / "f1.txt") == \
      (tmp_path / "f1.txt").read_bytes()


def test_split_is_deterministic_and_disjoint(tmp_path):
  _write_corpus(tmp_path, [5000, 7000])
  raw = data.read_corpus(tmp_path)
  train_a, val_a = data.split_corpus(raw, 100, 0.1)
  train_b, val_b = data.split_corpus(data.read_corpus(tmp_path), 100, 0.1)
  np.testing.assert_array_equal(train_a.chunks, train_b.chunks)
  np.testing.assert_array_equal(val_a.chunks, val_b.chunks)
  assert len(val_a.chunks) == 12 and len(train_a.chunks) == 108
  rows = {c.tobytes() for c in train_a.chunks}
  assert not rows & {c.tobytes() for c in val_a.chunks}
  w1 = train_a.windows(np.random.default_rng([0, 5]), 4, 33)
  w2 = train_a.windows(np.random.default_rng([0, 5]), 4, 33)
  np.testing.assert_array_equal(w1, w2)
  assert w1.shape == (4, 33) and w1.dtype == np.int32
  for w in w1:  # every window lies inside one chunk
    assert any(w.astype(np.uint8).tobytes() in c.tobytes()
               for c in train_a.chunks)


def test_empty_corpus_is_an_error(tmp_path):
  (tmp_path / "empty.txt").write_bytes(b"")
  with pytest.raises(ValueError, match="empty or too small"):
    data.split_corpus(data.read_corpus(tmp_path), 64, 0.1)
  with pytest.raises(ValueError, match="empty or too small"):
    data.split_corpus(data.read_corpus(tmp_path / "empty.txt"), 64, 0.1)


def test_missing_path_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.read_corpus(tmp_path / "nope")


def test_default_corpus_is_the_stdlib():
  root = data.default_corpus_path()
  assert (root / "os.py").is_file()
  raw = data.read_corpus(None, max_bytes=100_000)
  assert len(raw) == 100_000
  assert b"import" in raw


def test_digits_split_is_deterministic():
  a = data.load_digits_split(0.2)
  b = data.load_digits_split(0.2)
  np.testing.assert_array_equal(a["val_labels"], b["val_labels"])
  assert a["train_images"].shape[1:] == (8, 8)
  assert len(a["val_labels"]) + len(a["train_labels"]) == 1797
  assert 0 <= a["train_images"].min() and a["train_images"].max() <= 1
