"""Task-interaction diagnostics of the shared parameters, accumulated over an epoch.

Per recorded step (every ``diagnostics_every_n_steps`` optimizer steps), from the task
gradients G (T x P) of the shared parameters:

- ``diagnostics/grad_norm_task_<t>``: ||g_t||;
- ``diagnostics/grad_norm_task_<t>_layer_<layer>``: ||g_t|| over one layer's parameters
  (a layer: parameter names without their last component, e.g. ``layers.0``);
- ``diagnostics/cos_task_<s>_task_<t>`` (s < t): g_s . g_t / (||g_s|| ||g_t||) (0 if one is 0);
- ``diagnostics/weight_task_<t>``: the weight the method gave task t (methods with weights).

``epoch_means()`` averages each name over the epoch's records (one host transfer). The
records travel in checkpoints (``state_dict``), so an epoch resumed inside has all of them.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch

PREFIX = "diagnostics"


class Diagnostics:
    """Records of one epoch; ``epoch_means`` gives ``{name: mean}``."""

    def __init__(self) -> None:
        self.records: list[tuple[list[str], torch.Tensor]] = []
        self.epoch: Optional[int] = None  # the epoch the records belong to

    def reset(self) -> None:
        self.records = []
        self.epoch = None

    def begin(self, epoch: int) -> None:
        """Steps of ``epoch`` come next. Records of an earlier epoch are dropped: its end never
        ran (a run resumed from a checkpoint of its last step), so its row is not written."""
        if epoch != self.epoch:
            self.records = []
            self.epoch = epoch

    def state_dict(self) -> dict:
        """The epoch's records on the CPU (strings and tensors: a checkpoint entry)."""
        return {"epoch": self.epoch, "records": [[list(n), v.detach().cpu()] for n, v in self.records]}

    def load_state_dict(self, state: Optional[Mapping]) -> None:
        """Continue the records of ``state`` (None or {}: none)."""
        self.reset()
        if state:
            self.epoch = state.get("epoch")
            self.records = [(list(n), v) for n, v in state.get("records", [])]

    def record(self, G: Optional[torch.Tensor], tasks: Sequence[int],
               layers: Mapping[str, list[tuple[int, int]]], weights: Optional[torch.Tensor]) -> None:
        """Add one step's values (no host sync)."""
        names: list[str] = []
        values: list[torch.Tensor] = []
        if G is not None and G.shape[1] > 0:
            G = G.detach()
            norms = G.norm(dim=1)
            names += [f"{PREFIX}/grad_norm_task_{t}" for t in tasks]
            values.append(norms)
            for layer, slices in layers.items():
                sq = sum((G[:, a:b] * G[:, a:b]).sum(dim=1) for a, b in slices)
                names += [f"{PREFIX}/grad_norm_task_{t}_layer_{layer}" for t in tasks]
                values.append(sq.sqrt())
            gram = G @ G.T
            denom = norms.unsqueeze(1) * norms.unsqueeze(0)
            cos = torch.where(denom > 0, gram / denom.clamp_min(torch.finfo(G.dtype).tiny), torch.zeros_like(gram))
            iu = torch.triu_indices(len(tasks), len(tasks), offset=1)
            names += [f"{PREFIX}/cos_task_{tasks[i]}_task_{tasks[j]}" for i, j in iu.T.tolist()]
            values.append(cos[iu[0].to(cos.device), iu[1].to(cos.device)])
        if weights is not None:
            names += [f"{PREFIX}/weight_task_{t}" for t in tasks]
            values.append(weights.detach())
        if names:
            dev = values[0].device
            self.records.append((names, torch.cat([v.reshape(-1).to(dev, torch.float64) for v in values])))

    def epoch_means(self) -> dict[str, float]:
        """``{name: mean over the epoch's records}`` ({} without records)."""
        if not self.records:
            return {}
        sums: dict[str, list[float]] = {}
        flat_names: list[str] = []
        flat_values: list[torch.Tensor] = []
        for names, vals in self.records:
            flat_names += names
            flat_values.append(vals)
        values = torch.cat([v.cpu() for v in flat_values]).tolist()
        for name, v in zip(flat_names, values):
            sums.setdefault(name, []).append(v)
        return {name: sum(vs) / len(vs) for name, vs in sums.items()}
