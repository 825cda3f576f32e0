"""The config every experiment starts from; files under configs/ edit it.

Sections:
  task: ``lm`` (GPT on a byte corpus) or ``digits`` (MLP/CNN classifier).
  seed: model initialization and batch order.
  model: the network's shape (see ``lm_model`` and ``digits_model``).
  data: corpus path and split (``lm``), validation share (both).
  train: steps, batch size, evaluation, logging and checkpoint intervals,
    the progress output (``progress``) and the skipping of steps with
    non-finite gradients (``skip_nonfinite``, ``max_consecutive_skips``).
  mesh: the devices of a run, ``data`` x ``fsdp`` (see ``parallel.py``);
    1 x 1 is one device.
  optimizer: name and hyperparameters of a single run.
  optimizers, seeds, learning_rates, lr_sweep, lr_note, timing: what
    ``quantmuon-compare`` runs and how it times the steps (see
    ``compare.py`` and ``timing.py``).
"""

from __future__ import annotations

import ml_collections

from quantmuon_experiments import optimizers


def lm_model(**overrides) -> ml_collections.ConfigDict:
  """A GPT decoder's shape (see ``model.GPTConfig``)."""
  fields = dict(vocab_size=256, context=128, width=128, depth=4, heads=4,
                mlp_ratio=4, tied_head=False)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def digits_model(**overrides) -> ml_collections.ConfigDict:
  """A digits classifier: ``kind`` ``mlp`` or ``cnn``, ``width``, ``depth``."""
  fields = dict(kind="mlp", width=256, depth=2)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def learning_rates(adamw: float, muon: float, muon_rms: float
                   ) -> ml_collections.ConfigDict:
  """Per-optimizer peak rates; every consistent-RMS preset shares ``muon_rms``.

  Args:
    adamw: AdamW's rate (also the AdamW part of width-scaled ``muon``).
    muon: width-scaled full-precision Muon's rate.
    muon_rms: the rate of full-precision consistent-RMS Muon and of the
      quantized presets, its twins.

  Returns:
    A ConfigDict ``name -> rate`` over every optimizer name.
  """
  group_rate = {"adamw": adamw, "muon": muon, "muon_rms": muon_rms}
  return ml_collections.ConfigDict(
      {name: group_rate[optimizers.rate_group(name)]
       for name in optimizers.NAMES})


def base_config() -> ml_collections.ConfigDict:
  """The full set of fields, with small defaults."""
  config = ml_collections.ConfigDict()
  config.task = "lm"
  config.seed = 0
  config.model = lm_model()
  config.data = ml_collections.ConfigDict(dict(
      path="",            # file or directory; "" = Python's stdlib source
      suffixes="",        # e.g. ".py,.txt"; "" = .py for the stdlib, else all
      max_bytes=0,        # 0 = read the whole corpus
      chunk_size=4096,    # split granularity (at least context + 1)
      val_fraction=0.1,
  ))
  config.train = ml_collections.ConfigDict(dict(
      steps=200,
      batch_size=32,
      eval_every=50,
      eval_batches=8,
      log_every=10,
      checkpoint_every=0,  # 0 = no checkpoints
      progress=True,       # False = no progress output at all
      skip_nonfinite=True,  # skip steps whose gradients are not finite
      max_consecutive_skips=10,  # stop as diverged after this many in a row
  ))
  # Devices: data parallel x FSDP (see parallel.py); 1 x 1 = one device.
  config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="muon_8bit",
      learning_rate=3e-3,
      adam_learning_rate=0.0,  # 0 = same as learning_rate
      weight_decay=0.0,
      adam_weight_decay=0.0,
      warmup_steps=20,
      final_lr_ratio=0.1,
      options=ml_collections.ConfigDict(),  # extra preset keywords
  ))
  # What quantmuon-compare runs.
  config.optimizers = ",".join(("adamw", "muon", "muon_8bit",
                                "muon_8bit_dynamic", "muon_4bit", "muonq",
                                "muon_grasp", "muon_lowbit"))
  config.twins = True     # also run each quantized optimizer's fp32 twin
  config.seeds = ""       # e.g. "0,1,2"; "" = just config.seed
  config.reuse_runs = False  # read back finished runs of the same config
  config.learning_rates = learning_rates(adamw=3e-3, muon=0.02,
                                         muon_rms=3e-3)
  config.lr_sweep = ""    # rate multipliers, e.g. "0.5,1,2"; "" = no sweep
  config.lr_note = ""     # how the rates were found
  # Step times, apart from training: untimed calls first, then rounds of
  # ``steps`` steps per optimizer, interleaved.
  config.timing = ml_collections.ConfigDict(dict(warmup=3, repeats=7,
                                                 steps=5))
  return config


def compare_config() -> ml_collections.ConfigDict:
  """``configs/compare.py``: every optimizer on a 3-block width-128 GPT.

  The configs under configs/ that vary it (``compare_wide.py``,
  ``lowbit_ablation.py``) start from here, since a config file loaded by
  path cannot import its neighbours.

  Returns:
    The comparison config, with the rates swept for it (``lr_note``).
  """
  config = base_config()
  config.optimizers = ",".join((
      "adamw", "muon", "muon_rms", "muon_8bit", "muon_8bit_dynamic",
      "muon_4bit", "muonq", "muon_grasp", "muon_lowbit", "muon_lowbit_2bit"))
  config.model = lm_model(context=64, width=128, depth=3, heads=4)
  config.train.steps = 300
  config.train.batch_size = 32
  config.train.eval_every = 25
  config.train.eval_batches = 8
  config.optimizer.warmup_steps = 30
  config.learning_rates = learning_rates(
      adamw=1.5e-3, muon=0.04, muon_rms=0.012)
  config.lr_note = (
      "swept with this config, seed 0, on a 2-core CPU: final validation "
      "loss for rates x0.5, x1, x2, x4, x8 of adamw 3e-3, muon 0.02 and "
      "muon_rms 3e-3, plus adamw 5e-4 and 1e-3. Best: adamw 1.5e-3 "
      "(2.095; 1e-3: 2.152, 3e-3: 2.173), muon 0.04 (1.633; 0.02: 1.636, "
      "0.08: 1.827), muon_rms 0.012 (1.590; 6e-3: 1.654, 0.024: 1.621). "
      "The quantized presets use consistent-RMS scaling and share "
      "muon_rms's rate; width-scaled muon's AdamW part uses adamw's. "
      "Rerun around these values with --config.lr_sweep=0.5,1,2.")
  return config
