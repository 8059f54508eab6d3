"""``fleetbench prune`` as a function: choose widths, keep the heaviest filters, fine-tune, report.

Accuracies are on the data's test split, as fractions: before pruning, right after it
(NetAdapt's short fine-tunes included), and after ``finetune_epochs`` of fine-tuning;
None where not computed (no data, no fine-tuning).  ``predicted_ms`` is the width
lookup table's price of the pruned network (None without a table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

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
from coordinator.prune.slicing import keep_largest, narrow


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


def check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise PruneError(f"--flops {ratio:g} must be a share of the network's FLOPs: above 0, at most 1")


def prune(plan: fam.Plan, params: Params, method: str, ratio: float, lut: Any = None, data: Any = None,
          finetune_epochs: int = 0, say: Say = quiet,
          settings: Optional[NetAdaptSettings] = None) -> Outcome:  # fmt: skip
    settings = settings or NetAdaptSettings()
    check_ratio(ratio)
    if method not in METHODS:
        raise PruneError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == "netadapt" and (lut is None or data is None):
        raise PruneError("--method netadapt needs the device's width table (--lut) and data (--data)")

    def score(p: fam.Plan, w: Params) -> Optional[float]:
        if data is None:
            return None
        from coordinator.prune.torchnet import PlanNet
        from coordinator.prune.train import accuracy

        return accuracy(PlanNet(p).load_params(w), data.x_test, data.y_test)

    before = score(plan, params)
    if method == "netadapt":
        small, small_params = netadapt(plan, params, ratio, lut, data, settings, say)
    else:
        say(f"{method}: choosing widths")
        widths = uniform_widths(plan, ratio) if method == "uniform" else l1_widths(plan, params, ratio)
        small, small_params = narrow(plan, params, keep_largest(plan, params, widths))
    pruned = score(small, small_params)
    tuned = None
    if data is not None and finetune_epochs > 0:
        from coordinator.prune.torchnet import PlanNet
        from coordinator.prune.train import accuracy, fine_tune

        net = PlanNet(small).load_params(small_params)

        def progress(epoch: int, epochs: int, done: float, loss: float) -> None:
            say(f"fine-tuning: epoch {epoch}/{epochs} {done:4.0%}, loss {loss:.3f}")

        fine_tune(net, data, finetune_epochs, progress, seed=settings.seed)
        small_params = net.params()
        tuned = accuracy(net, data.x_test, data.y_test)
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


__all__ = ["Outcome", "PruneError", "check_ratio", "prune"]
