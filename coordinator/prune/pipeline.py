"""``fleetbench prune`` as a function: choose widths, keep the heaviest filters, fine-tune, report.

Accuracies are on the data's test split, as fractions: before pruning, right after it
(NetAdapt's short fine-tunes included), and after ``finetune_epochs`` of fine-tuning;
None where not computed (no data, no fine-tuning).  ``predicted_ms`` is the width
lookup table's price of the pruned network (None without a table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from agent.materialize import families as fam
from agent.materialize.weights import Params
from coordinator.prune.methods import (
    METHODS,
    NetAdaptSettings,
    PruneError,
    Say,
    l1_widths,
    netadapt,
    quiet,
    uniform_widths,
)
from coordinator.prune.slicing import narrow_to


@dataclass(frozen=True)
class Outcome:
    method: str
    plan: fam.Plan
    params: Params
    flops_ratio: float
    params_ratio: float
    accuracy_before: Optional[float] = None
    accuracy_pruned: Optional[float] = None
    accuracy_finetuned: Optional[float] = None
    predicted_ms: Optional[float] = None

    def report(self) -> dict[str, Any]:
        """The JSON ``fleetbench prune --format json`` prints."""

        def rounded(x: Optional[float]) -> Optional[float]:
            return None if x is None else round(x, 6)

        return {
            "flops_ratio": round(self.flops_ratio, 6),
            "params_ratio": round(self.params_ratio, 6),
            "accuracy_before": rounded(self.accuracy_before),
            "accuracy_pruned": rounded(self.accuracy_pruned),
            "accuracy_finetuned": rounded(self.accuracy_finetuned),
            "predicted_ms": rounded(self.predicted_ms),
            "method": self.method,
            "widths": self.plan.spec,
        }


def recover(
    plan: fam.Plan, params: Params, data: Any, epochs: int, say: Say = quiet, seed: int = 0
) -> tuple[Params, Optional[float], Optional[float]]:
    """A pruned network's test accuracy, then ``epochs`` of fine-tuning and its accuracy after:
    (its weights, accuracy pruned, accuracy fine-tuned); None where not computed (no data, no
    epochs).  Every method's network recovers the same way, so their accuracies compare."""
    if data is None:
        return params, None, None
    from coordinator.prune.torchnet import PlanNet
    from coordinator.prune.train import accuracy, fine_tune

    net = PlanNet(plan).load_params(params)
    pruned = accuracy(net, data.x_test, data.y_test)
    if epochs <= 0:
        return params, pruned, None

    def progress(epoch: int, total: int, done: float, loss: float) -> None:
        say(f"fine-tuning: epoch {epoch}/{total} {done:4.0%}, loss {loss:.3f}")

    fine_tune(net, data, epochs, progress, seed=seed)
    return net.params(), pruned, accuracy(net, data.x_test, data.y_test)


def check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise PruneError(f"--flops {ratio:g} must be a share of the network's FLOPs: above 0, at most 1")


def prune(
    plan: fam.Plan,
    params: Params,
    method: str,
    ratio: float,
    lut: Any = None,
    data: Any = None,
    finetune_epochs: int = 0,
    say: Say = quiet,
    settings: Optional[NetAdaptSettings] = None,
) -> Outcome:
    settings = settings or NetAdaptSettings()
    check_ratio(ratio)
    if method not in METHODS:
        raise PruneError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == "netadapt" and (lut is None or data is None):
        raise PruneError("--method netadapt needs the device's width table (--lut) and data (--data)")

    before = None
    if data is not None:
        from coordinator.prune.torchnet import PlanNet
        from coordinator.prune.train import accuracy

        before = accuracy(PlanNet(plan).load_params(params), data.x_test, data.y_test)
    if method == "netadapt":
        small, small_params = netadapt(plan, params, ratio, lut, data, settings, say)
    else:
        say(f"{method}: choosing widths")
        widths = uniform_widths(plan, ratio) if method == "uniform" else l1_widths(plan, params, ratio)
        small, small_params = narrow_to(plan, params, widths)
    small_params, pruned, tuned = recover(small, small_params, data, finetune_epochs, say, settings.seed)
    return Outcome(
        method=method,
        plan=small,
        params=small_params,
        flops_ratio=small.macs / plan.macs,
        params_ratio=small.params / plan.params,
        accuracy_before=before,
        accuracy_pruned=pruned,
        accuracy_finetuned=tuned,
        predicted_ms=lut.predict_ms(small) if lut is not None else None,
    )


#: images of the training split an accuracy judge looks at
JUDGE_IMAGES = 1024


def accuracy_judge(
    plan: fam.Plan, params: Params, data: Any, seed: int = 0, images: int = JUDGE_IMAGES
) -> Callable[[Sequence[int]], float]:
    """A width spec's accuracy before fine-tuning, its batch norms re-estimated (``recalibrate``),
    on ``images`` of the *training* split (choosing among candidates never looks at the test
    split): a search's cheap stand-in for the accuracy it would have after fine-tuning.
    Remembered per width spec."""
    from coordinator.prune.torchnet import PlanNet
    from coordinator.prune.train import accuracy, recalibrate

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data.y_train), size=min(images, len(data.y_train)), replace=False))
    x, y = data.x_train[pick], data.y_train[pick]
    known: dict[tuple[int, ...], float] = {}

    def judge(widths: Sequence[int]) -> float:
        key = tuple(int(w) for w in widths)
        if key not in known:
            small, small_params = narrow_to(plan, params, key)
            known[key] = accuracy(recalibrate(PlanNet(small).load_params(small_params), x), x, y)
        return known[key]

    return judge


__all__ = ["Outcome", "PruneError", "accuracy_judge", "check_ratio", "prune", "recover"]
