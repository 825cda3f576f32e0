"""Re-executes the notebooks top to bottom and saves them with their outputs.

  python notebooks/run_all.py                 # all, full mode, in place
  python notebooks/run_all.py 03 04           # some (by name or prefix)
  python notebooks/run_all.py --fast          # fast mode, to a temp dir
  python notebooks/run_all.py --fast --out D  # fast mode, to D

Each notebook runs in a fresh kernel with ``notebooks/`` as its working
directory and ``JAX_PLATFORMS=cpu`` unless set. Full mode overwrites the
saved notebooks; fast mode (``QUANTMUON_FAST=1``: every run shrunk, as in
CI) never does. A cell that raises stops its notebook with an error, and
the script exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

HERE = pathlib.Path(__file__).resolve().parent
CELL_TIMEOUT_S = 1800


def notebooks(names: Sequence[str] = ()) -> list[pathlib.Path]:
  """The notebooks in this directory, all or those matching ``names``.

  Args:
    names: file names, stems or prefixes (``03``); empty for all.

  Returns:
    The paths, sorted.
  """
  found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
  if not names:
    return found
  chosen = [p for p in found
            if any(p.name == n or p.stem == n or p.name.startswith(n)
                   for n in names)]
  missing = [n for n in names
             if not any(p.name == n or p.stem == n or p.name.startswith(n)
                        for p in found)]
  if missing:
    raise SystemExit(f"no notebook matches {missing}; have "
                     f"{[p.name for p in found]}")
  return chosen


def execute(path: pathlib.Path, out: pathlib.Path, fast: bool,
            timeout: int = CELL_TIMEOUT_S) -> float:
  """Executes one notebook and writes it, outputs included, to ``out``.

  Args:
    path: the notebook.
    out: where to write the executed notebook (may be ``path``).
    fast: run in fast mode (``QUANTMUON_FAST=1``) instead of full mode.
    timeout: seconds a cell may run.

  Returns:
    The wall time in seconds.

  Raises:
    nbclient.exceptions.CellExecutionError: when a cell raises; the
      notebook, with the error, is still written to ``out``.
  """
  import nbclient
  import nbformat

  env = dict(os.environ, QUANTMUON_FAST="1" if fast else "0")
  env.setdefault("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=timeout, kernel_name="python3", record_timing=False,
      resources={"metadata": {"path": str(HERE)}})
  start = time.perf_counter()
  try:
    client.execute(env=env)
  finally:
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
  return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*",
                      help="notebooks to run (names or prefixes); all when "
                      "none")
  parser.add_argument("--fast", action="store_true",
                      help="fast mode (QUANTMUON_FAST=1), written to --out")
  parser.add_argument("--out", default=None,
                      help="directory for the executed notebooks (fast "
                      "mode: a new temp dir by default; full mode: in "
                      "place)")
  args = parser.parse_args(argv)
  if args.out:
    out_dir = pathlib.Path(args.out)
  elif args.fast:
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="quantmuon_notebooks_"))
  else:
    out_dir = HERE
  mode = "fast" if args.fast else "full"
  failed, total = [], 0.0
  for path in notebooks(args.names):
    out = out_dir / path.name
    print(f"{path.name} ({mode} mode) ...", flush=True)
    try:
      seconds = execute(path, out, args.fast)
    except Exception as err:  # report it and go on
      print(f"{path.name} FAILED: {type(err).__name__}: "
            f"{str(err)[-2000:]}")
      failed.append(path.name)
      continue
    total += seconds
    print(f"{path.name}: {seconds:.0f} s -> {out}", flush=True)
  print(f"{total:.0f} s in all; written to {out_dir}")
  if failed:
    print(f"failed: {', '.join(failed)}")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
