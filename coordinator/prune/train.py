"""Training and fine-tuning on the CPU: SGD with momentum, a cosine schedule, light augmentation.

The same loop trains from scratch (``fleetbench train``) and recovers a pruned network
(``fine_tune``: a lower starting rate, as is usual after pruning).  Augmentation is a
random shift of up to an eighth of the image (padding by reflection, then cropping),
which keeps digits legible.  Everything is seeded: the same data, spec and seed give the
same weights on the same PyTorch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from coordinator.prune.data import Dataset
from coordinator.prune.torchnet import PlanNet

#: progress(epoch, epochs, fraction of the epoch done, running loss)
Progress = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float = 0.05
    batch_size: int = 64
    weight_decay: float = 5e-4
    seed: int = 0
    #: stop each epoch after this many batches (None: the whole split); NetAdapt's short fine-tunes
    max_batches: Optional[int] = None


def threads() -> None:
    """Use every core (a Pi has 4): PyTorch's default can be fewer inside containers."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    pad = max(1, x.shape[-1] // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    return padded[:, :, dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train(net: PlanNet, data: Dataset, schedule: Schedule, progress: Optional[Progress] = None) -> PlanNet:
    """Train ``net`` in place on ``data``'s training split; returns it, in eval mode."""
    threads()
    torch.manual_seed(schedule.seed)
    generator = torch.Generator().manual_seed(schedule.seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    batches = math.ceil(len(y) / schedule.batch_size)
    if schedule.max_batches is not None:
        batches = min(batches, schedule.max_batches)
    steps = max(1, schedule.epochs * batches)
    decay = [p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim > 1]
    rest = [p for n, p in net.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": schedule.weight_decay},
                           {"params": rest, "weight_decay": 0.0}],
                          lr=schedule.lr, momentum=0.9, nesterov=True)  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    net.train()
    for epoch in range(schedule.epochs):
        order = torch.randperm(len(y), generator=generator)
        running = 0.0
        for b in range(batches):
            idx = order[b * schedule.batch_size : (b + 1) * schedule.batch_size]
            loss = F.cross_entropy(net(_shift(x[idx], generator)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running = 0.9 * running + 0.1 * loss.item() if b else loss.item()
            if progress is not None:
                progress(epoch + 1, schedule.epochs, (b + 1) / batches, running)
    net.eval()
    return net


def fine_tune(net: PlanNet, data: Dataset, epochs: int, progress: Optional[Progress] = None,
              max_batches: Optional[int] = None, seed: int = 0) -> PlanNet:  # fmt: skip
    """Recover a pruned network: the training loop at a fifth of the starting rate."""
    if epochs <= 0:
        return net
    return train(net, data, Schedule(epochs, lr=0.01, seed=seed, max_batches=max_batches), progress)


@torch.no_grad()
def accuracy(net: PlanNet, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """The share of ``x`` whose top-1 class is ``y``."""
    threads()
    net.eval()
    right = 0
    for i in range(0, len(y), batch_size):
        logits = net(torch.from_numpy(x[i : i + batch_size]))
        right += int((logits.argmax(1).numpy() == y[i : i + batch_size]).sum())
    return right / len(y)


@torch.no_grad()
def recalibrate(net: PlanNet, x: np.ndarray, batch_size: int = 64) -> PlanNet:
    """Re-estimate every batch norm's statistics on ``x`` (in eval mode afterwards).  A pruned
    network's statistics no longer match its narrower inputs; with them re-estimated, its accuracy
    before any fine-tuning ranks pruned candidates much as their fine-tuned accuracy does
    (adaptive batch norm, Li et al., EagleEye, ECCV 2020)."""
    threads()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
    net.train()
    for i in range(0, len(x), batch_size):
        net(torch.from_numpy(x[i : i + batch_size]))
    net.eval()
    return net
