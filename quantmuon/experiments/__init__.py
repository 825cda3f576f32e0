"""The main job: train Flax models with every optimizer and compare them.

- ``model``, ``classifier``: the GPT decoder and the digits MLP/CNN;
- ``data``, ``tasks``: the byte corpus, the digits, and what a run trains;
- ``optimizers``: optimizers by name and the learning-rate schedule;
- ``train``, ``checkpoint``, ``metrics``: one run, its checkpoints and logs;
- ``compare``, ``report``: every optimizer, results.json/.md and plots;
- ``defaults``, ``cli``: the base config and the command-line entry points.
"""
