"""Training data: a byte-level text corpus and scikit-learn's digits.

The corpus is every text file under a path, read in sorted order and
concatenated. With no path it is the Python standard library's own source
tree on this machine (found through ``sysconfig``): real text, present
everywhere, nothing downloaded.

The bytes are cut into chunks of ``chunk_size``; an evenly spread
``val_fraction`` of the chunks is the validation split, the rest the training
split. Windows are drawn inside one chunk, so no window straddles the two
splits. Batches are a pure function of ``(seed, step)``, which is what lets a
resumed run see the same data as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sysconfig

import numpy as np

_SKIP_DIRS = ("site-packages", "dist-packages", "__pycache__")


def default_corpus_path() -> pathlib.Path:
  """The Python standard library's source directory (``sysconfig``)."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _is_text(path: pathlib.Path) -> bool:
  with open(path, "rb") as f:
    return b"\0" not in f.read(4096)


def list_files(path: str | os.PathLike,
               suffixes: tuple[str, ...] = ()) -> list[pathlib.Path]:
  """The text files of a corpus, in a fixed order.

  Args:
    path: a file, or a directory searched recursively. Hidden entries,
      ``__pycache__`` and installed packages (``site-packages``) are skipped.
    suffixes: keep only files ending in one of these (all when empty).

  Returns:
    The sorted list of files that hold no NUL byte in their first 4 KiB.

  Raises:
    FileNotFoundError: when ``path`` does not exist.
  """
  root = pathlib.Path(path).expanduser()
  if not root.exists():
    raise FileNotFoundError(
        f"corpus path {str(root)!r} does not exist; set --config.data.path "
        "to a text file or a directory of text files, or leave it empty for "
        "the Python standard library's source.")
  if root.is_file():
    return [root]
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames
                         if not d.startswith(".") and d not in _SKIP_DIRS)
    for name in sorted(filenames):
      if name.startswith(".") or (suffixes and not name.endswith(suffixes)):
        continue
      file = pathlib.Path(dirpath, name)
      if file.is_file() and _is_text(file):
        files.append(file)
  return files


def read_corpus(path: str | os.PathLike | None = None,
                suffixes: tuple[str, ...] | None = None,
                max_bytes: int = 0) -> bytes:
  """Reads and concatenates a corpus.

  Args:
    path: a file or directory; None or "" for the standard library.
    suffixes: file endings to keep; None means ``(".py",)`` for the standard
      library and every text file otherwise.
    max_bytes: stop after this many bytes (0: no limit).

  Returns:
    The corpus as one bytes object.
  """
  if not path:
    path = default_corpus_path()
    suffixes = (".py",) if suffixes is None else suffixes
  parts, total = [], 0
  for file in list_files(path, tuple(suffixes or ())):
    data = file.read_bytes()
    if max_bytes:
      data = data[:max_bytes - total]
    parts.append(data)
    total += len(data)
    if max_bytes and total >= max_bytes:
      break
  return b"".join(parts)


@dataclasses.dataclass(frozen=True)
class ByteSplit:
  """One split of the corpus: byte chunks, windows drawn inside a chunk.

  Attributes:
    chunks: ``uint8`` array ``(num_chunks, chunk_size)``.
  """

  chunks: np.ndarray

  @property
  def num_bytes(self) -> int:
    return int(self.chunks.size)

  def windows(self, rng: np.random.Generator, count: int,
              length: int) -> np.ndarray:
    """``count`` random windows of ``length`` bytes as ``int32`` ids.

    Args:
      rng: the generator that picks chunks and offsets.
      count: how many windows.
      length: bytes per window, at most the chunk size.

    Returns:
      An ``int32`` array ``(count, length)``.
    """
    n, size = self.chunks.shape
    if length > size:
      raise ValueError(f"window of {length} bytes exceeds chunk size {size}.")
    rows = rng.integers(0, n, size=count)
    starts = rng.integers(0, size - length + 1, size=count)
    index = starts[:, None] + np.arange(length)[None, :]
    return self.chunks[rows[:, None], index].astype(np.int32)


def split_corpus(data: bytes, chunk_size: int,
                 val_fraction: float) -> tuple[ByteSplit, ByteSplit]:
  """Deterministic train/validation split of a corpus.

  Args:
    data: the corpus bytes.
    chunk_size: bytes per chunk; the trailing partial chunk is dropped.
    val_fraction: share of chunks, evenly spread, kept for validation.

  Returns:
    ``(train, val)``.

  Raises:
    ValueError: when the corpus holds fewer than two chunks.
  """
  if not 0 < val_fraction < 1:
    raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
  n = len(data) // chunk_size
  if n < 2:
    raise ValueError(
        f"the corpus holds {len(data)} bytes, fewer than two chunks of "
        f"{chunk_size}; it is empty or too small to split into training and "
        "validation data.")
  chunks = np.frombuffer(data, np.uint8, count=n * chunk_size)
  chunks = chunks.reshape(n, chunk_size)
  n_val = min(n - 1, max(1, round(n * val_fraction)))
  is_val = np.zeros(n, bool)
  is_val[np.linspace(0, n - 1, n_val).round().astype(int)] = True
  return ByteSplit(chunks[~is_val]), ByteSplit(chunks[is_val])


def load_digits_split(val_fraction: float = 0.2,
                      split_seed: int = 0) -> dict[str, np.ndarray]:
  """scikit-learn's bundled 8x8 digits, split deterministically.

  Args:
    val_fraction: share of the 1797 images held out.
    split_seed: seed of the permutation that assigns images to splits.

  Returns:
    ``train_images`` (float32 in [0, 1], ``(n, 8, 8)``), ``train_labels``,
    ``val_images``, ``val_labels``.
  """
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(split_seed).permutation(len(labels))
  n_val = max(1, round(len(labels) * val_fraction))
  val, train = order[:n_val], order[n_val:]
  return {"train_images": images[train], "train_labels": labels[train],
          "val_images": images[val], "val_labels": labels[val]}
