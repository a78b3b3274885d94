"""Which parameters are shared between tasks, found from the autograd graph.

A parameter is task-specific for task t when t's loss is the only task loss whose graph
reaches it (separate per-task models, or heads only one task uses); it is shared when
two or more tasks' losses reach it. ``Partition.update`` adds tasks as they appear
(first seen in a batch); under DDP the reach of new tasks is OR-reduced over ranks, the
new tasks being those of the GLOBAL batch (the same on every rank), so every rank holds
the same partition.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import torch


def reached_leaves(loss: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) the autograd graph of ``loss`` reaches."""
    out: set[int] = set()
    fn = loss.grad_fn
    if fn is None:
        return out
    seen = {fn}
    stack = [fn]
    while stack:
        node = stack.pop()
        var = getattr(node, "variable", None)
        if var is not None:
            out.add(id(var))
        for nxt, _ in node.next_functions:
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return out


def layer_key(name: str) -> str:
    """A parameter name's layer: the name without its last component ('layers.0.weight' -> 'layers.0')."""
    return name.rsplit(".", 1)[0] if "." in name else name


class Partition:
    """Shared and task-specific parameters among ``named_params`` (name, parameter) pairs."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]]):
        self.names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        seen: set[int] = set()
        for name, p in named_params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                self.names.append(name)
                self.params.append(p)
        self._pos = {id(p): i for i, p in enumerate(self.params)}
        self.reach: dict[int, set[int]] = {}  # task -> positions its loss reaches
        self._derive()

    def update(self, losses: Mapping[int, torch.Tensor], tasks: Optional[Sequence[int]] = None,
               world_size: int = 1) -> bool:
        """Add the reach of the tasks not seen yet (``tasks``: the global batch's; default ``losses``'s).

        Under DDP every rank must call this with the same ``tasks``. True if it changed.
        """
        new = [t for t in (sorted(tasks) if tasks is not None else sorted(losses)) if t not in self.reach]
        if not new:
            return False
        mat = torch.zeros(len(new), len(self.params), dtype=torch.int32)
        for r, t in enumerate(new):
            if t in losses:
                for leaf in reached_leaves(losses[t]):
                    if leaf in self._pos:
                        mat[r, self._pos[leaf]] = 1
        if world_size > 1:
            dev = self.params[0].device if self.params else torch.device("cpu")
            if torch.distributed.get_backend() == "nccl":
                dev = torch.device("cuda", torch.cuda.current_device())
            red = mat.to(dev)
            torch.distributed.all_reduce(red)
            mat = red.cpu()
        for r, t in enumerate(new):
            self.reach[t] = set(mat[r].nonzero().flatten().tolist())
        self._derive()
        return True

    def _derive(self) -> None:
        count: dict[int, list[int]] = {}
        for t, positions in self.reach.items():
            for i in positions:
                count.setdefault(i, []).append(t)
        self.shared_pos = [i for i in range(len(self.params)) if len(count.get(i, [])) >= 2]
        self.own_pos = {t: [i for i in sorted(pos) if len(count[i]) == 1] for t, pos in self.reach.items()}
        self.shared = [self.params[i] for i in self.shared_pos]
        self.shared_names = [self.names[i] for i in self.shared_pos]
        self.own = {t: [self.params[i] for i in pos] for t, pos in self.own_pos.items()}
        self.has_own = any(self.own.values())
        self.shared_ids = {id(p) for p in self.shared}
        # layer -> flat slices of the shared parameters' concatenated gradient
        self.layers: dict[str, list[tuple[int, int]]] = {}
        start = 0
        for name, p in zip(self.shared_names, self.shared):
            self.layers.setdefault(layer_key(name), []).append((start, start + p.numel()))
            start += p.numel()
        self.n_shared = start
