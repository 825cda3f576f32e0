"""The full study: every optimizer on a small GPT, Python's stdlib.

quantmuon-compare --config configs/compare_full.py --workdir /tmp/compare

A 3-block, width-128 byte-level GPT (0.67M parameters, context 64) trained
for 300 steps of 32 windows on the Python standard library's source, with
AdamW, width-scaled Muon, ``muon_rms`` (full-precision Muon with the
quantized presets' consistent-RMS scaling and rate) and the seven quantized
optimizers, each beside its exact full-precision twin (``NAME_fp32``; twins
that build the same optimizer run once: 14 runs).

Time: about 30 minutes on a 2-core CPU (29.2 minutes measured on a 2-core
x86_64 CPU shared with other jobs, jax 0.10.2, 2026-12-01: 0.3 s per
training step, 14 x 300 steps). ``quantmuon-compare`` without ``--config``
runs the quick comparison instead (``defaults.quick_config``, a few
minutes). Add ``--config.seeds=0,1,2`` for mean and spread (three times as
long), or ``--config.twins=False`` to leave the twins out. Finished runs in
the workdir are read back instead of trained again
(``--config.reuse_runs=False`` trains them again): an interrupted compare
resumes, and seeds run by separate commands into one workdir are reported
together.
"""

from quantmuon_experiments import defaults


def get_config():
  """The full study of ``quantmuon-compare``."""
  return defaults.full_config()
