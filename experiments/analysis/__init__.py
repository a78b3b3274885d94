"""The analysis layer: reading results after (or beside) training, never during it.

- ``collect``: a grid's summary.csv, aligned table and comparison plots
  (``python -m experiments.analysis.collect TAG``, ``main.py --collect TAG``);
- ``coord_check``: the coordinate check of an abc-parametrization
  (``python -m experiments.analysis.coord_check --parametrization muP``).

matplotlib is imported here (lazily), as in ``experiments.logging.plots``; nothing here
imports Lightning or W&B. Import the submodules directly: this package exports nothing.
"""
