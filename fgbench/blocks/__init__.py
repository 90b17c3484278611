"""Method building blocks shared by several plugins, re-exported by :mod:`fgbench` (the public API).

* :mod:`~fgbench.blocks.adsh` — ``adsh_update_database_codes``, ``outer_iteration_epochs`` (ADSH-style methods)
* :mod:`~fgbench.blocks.memories` — ``CodeMemory``, ``ClassMeans``
* :mod:`~fgbench.blocks.losses` — ``similar_pair_ratio``, ``label_smoothing_ce``, ``smoothing_for_confidence``,
  ``balanced_multitask_loss``
* :mod:`~fgbench.blocks.proxies` — FISH proxy codes
* :mod:`~fgbench.blocks.cascade` — cascade-network stages
* :mod:`~fgbench.blocks.zoom` — attention zoom

Blocks import torch/numpy/scipy and, of fgbench, only :mod:`fgbench.errors` (a bad ``--set`` value is a
:class:`~fgbench.errors.ConfigError`).
"""
