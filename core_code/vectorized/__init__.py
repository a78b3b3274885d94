"""Vectorized grid points: K models of the same shapes trained as ONE ensemble.

``VectorizedMultitask(models, configs_training)`` trains K members (models with the same
parameter shapes, training configs that differ only in ``learning_rate`` and
``regularization_alpha``) inside one LightningModule: every parameter carries a leading
ensemble dimension K, one forward computes all members (batched matmuls for ``abcMLP``,
``torch.func.vmap`` over ``functional_call`` for any other module whose members differ
only in their parameters), and the summed loss gives each member its own gradient (the
members share no parameter). Where they apply (ReLU abcMLPs, one optimizer, a sum or mean
of MSE task losses over contiguous columns, no regularization or the squared 2-norm) the
gradients are written out (``StackedModel.forward_keep`` / ``backward``: one GEMM per weight
and per input gradient, no autograd graph; a 64x3 16-member step in half the time), else
autograd. ``VectorizedDataModule`` stacks the members' batches: the
same batch composition (task blocks) at every step, each member's rows from its own data
and its own permutation (the one a single run with that member's seed draws).

Each member's optimizer semantics are kept exactly (``EnsembleOptimizer``): SGD, Adam and
AdamW with torch's defaults (the ones ``make_optimizer`` builds) applied elementwise with a
per-member, per-parameter learning-rate tensor ``lr_k * multiplier_k(param)`` built from
``core_code.util.optimizers.param_groups`` of that member's own model (abc multipliers
per layer, per optimizer). Per-task optimizers (``update_rule``/``learning_rate``
task-specific) work as in ``LightningMultitask``: each task's gradient from its own loss
at the same parameters, then each task's optimizer steps.

Divergence: a member whose step loss (any task) is not finite is frozen on the device
(no host sync): its gradients are replaced by zeros and its learning rates by 0, its
optimizer state zeroed, so it stays at the parameters it had; the others go on. At the
end of each epoch the frozen members (and members whose epoch loss is not finite, as a
single run's LoggingCallback sees it) are recorded, ``diverged(k) == {'task', 'epoch',
'split', 'step'}``, and their per-epoch history stops after that epoch. Training stops
when every member has diverged.

Per member afterwards: ``member_history(k)`` (rows ``{'epoch', 'train/loss_task_<t>',
'validation/loss_task_<t>'}`` as the LoggingCallback writes them), ``diverged(k)``,
``member_state_dict(k)`` (a ``LightningMultitask`` state_dict: ``model.<name>``) and
``member_optimizer_states(k)`` (the state_dicts of the optimizers a single
``LightningMultitask`` of that member would hold, in their layout).

Limits (``check_members`` says which in one line): one shared model per member (no
per-task models), the update rules of ``VECTORIZABLE_RULES``, built-in batching strategies
or any strategy whose batches have the same task blocks for every member.

Modules: ``stacked`` (StackedModel: the forward), ``optim`` (EnsembleOptimizer),
``members`` (which configs may share an ensemble), ``data`` (stacked batches and the
DataModule), ``module`` (VectorizedMultitask).
"""

from core_code.vectorized.data import EnsembleBatch, EnsembleLoader, VectorizedDataModule
from core_code.vectorized.members import MEMBER_KEYS, _aggregation_name, check_members, per_task_optimizers
from core_code.vectorized.module import METRIC_PREFIX, VectorizedMultitask, in_domain_name, metric_name
from core_code.vectorized.optim import VECTORIZABLE_RULES, EnsembleOptimizer, member_lr_tensors
from core_code.vectorized.stacked import MEMBERWISE_MIN_ROWS, StackedModel

__all__ = ["VectorizedMultitask", "VectorizedDataModule", "StackedModel", "EnsembleOptimizer", "EnsembleLoader",
           "EnsembleBatch", "check_members", "per_task_optimizers", "member_lr_tensors", "metric_name",
           "in_domain_name", "MEMBER_KEYS", "METRIC_PREFIX", "VECTORIZABLE_RULES",
           "MEMBERWISE_MIN_ROWS", "_aggregation_name"]
