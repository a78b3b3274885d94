"""Vectorized grid points (``--vectorize``): group resolved points, train each group as one ensemble.

Two calls (see ``core_code.vectorized`` for the ensemble itself)::

    groups = group_points(configs)            # list of index lists (into ``configs``)
    print(describe_groups(configs, groups))
    for group in groups:
        results = train_group(manager, [configs[i] for i in group], manager.trainer_config())
        for i, r in zip(group, results): ...  # r.status, r.history, r.final, r.diverged, r.save_checkpoint(path)

``configs`` are resolved grid points (``BasicManager.resolve``). Points share a group when
everything that fixes tensor shapes and batch composition agrees (``group_key``): data
sizes and dims, the architecture up to its abc exponents and ``bias_tune``, the training
config up to ``learning_rate`` and ``regularization_alpha``. Seeds (custom and data),
noise, target functions and data ranges may differ. Points that can never be vectorized
(per-task models, custom optimizers, MTL methods other than sum/mean, ...) form groups of
one, with the reason in ``group_key``'s second value; a group of one trains through the
same ensemble code (the lead may prefer the ordinary path for those).

Every member is built as its single run builds it: ``seed_everything(custom seed)``, then
``make_data``, ``make_model``, and the batching seed ``DataModule`` would take
(``torch.initial_seed() % 2**31``); so member k's batches, data and initial weights are
those of the one-point run.

What a single run writes besides its training, each member gets too: its fit figures
(``MemberPlots``: drawn from the member's own model and data while the ensemble trains,
when its LoggingCallback would draw them), the rows its loggers would get
(``MemberResult.log_rows``, which ``run_vectorized`` sends to the member's W&B run) and,
when a signal or Ctrl-C stops the ensemble, a checkpoint at the last epoch boundary the
ensemble kept in memory (normally the last finished epoch; a mid-epoch state would not
resume exactly, see ``_ensemble_class``).

Modules: ``grouping`` (which points share an ensemble), ``ensemble`` (``train_group``:
one group as one ensemble, and what each member writes), ``grid`` (``run_vectorized``:
``main.py --vectorize``).
"""

from experiments.vectorize.ensemble import SNAPSHOT_SHARE, MemberPlots, MemberResult, train_group
from experiments.vectorize.grid import run_vectorized
from experiments.vectorize.grouping import describe_groups, group_key, group_points

__all__ = ["group_key", "group_points", "describe_groups", "train_group", "run_vectorized", "MemberResult",
           "MemberPlots", "SNAPSHOT_SHARE"]
