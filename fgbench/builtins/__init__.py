"""fgbench's built-in plugins: ordinary pluggy plugin modules listed in ``fgbench._plugins.DEFAULT_PLUGINS``.

Only these modules import the hook markers; the data and metric modules they
register stay free of plugin machinery.

* :mod:`~fgbench.builtins.datasets` — the embedded synthetic dataset and the five real datasets
* :mod:`~fgbench.builtins.metrics` — mAP@all, P@10, P@100, P@r2
"""
