"""A family's plan as a PyTorch module, and its parameters to and from the shared arrays.

The module is generic: it executes the plan's operations in order, so PyTorch, ONNX and
TFLite run the same network by construction, and ``params``/``load_params`` move the
weights as the arrays ``agent.materialize.weights`` names (batch norm unfolded).
Imported only by the coordinator's ``prune`` commands: the agent never imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent.materialize import families as fam
from agent.materialize.weights import Params, check


class PlanNet(nn.Module):
    """The network of ``plan``; ``forward`` takes NCHW images, returns logits."""

    def __init__(self, plan: fam.Plan) -> None:
        super().__init__()
        self.plan = plan
        self.convs = nn.ModuleDict()
        self.bns = nn.ModuleDict()
        for op in plan.ops:
            if isinstance(op, fam.ConvOp):
                groups = op.cout if op.depthwise else 1
                self.convs[op.name] = nn.Conv2d(op.cin, op.cout, op.kernel, op.stride, op.pad, groups=groups,
                                                bias=False)  # fmt: skip
                self.bns[op.name] = nn.BatchNorm2d(op.cout)
            elif isinstance(op, fam.HeadOp):
                self.fc: nn.Linear = nn.Linear(op.cin, op.classes)
        for module in self.modules():  # He initialization, as the ResNet paper
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {"input": x}
        for op in self.plan.ops:
            if isinstance(op, fam.ConvOp):
                y = self.bns[op.name](self.convs[op.name](values[op.src]))
                values[op.name] = F.relu(y) if op.relu else y
            elif isinstance(op, fam.AddOp):
                values[op.name] = F.relu(values[op.srcs[0]] + values[op.srcs[1]])
            elif isinstance(op, fam.MaxPoolOp):
                values[op.name] = F.max_pool2d(values[op.src], op.kernel, op.stride, op.pad)
            else:
                values[op.name] = self.fc(values[op.src].mean(dim=(2, 3)))
        return values[self.plan.output]

    def layers(self) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
        """Each convolution with its batch norm, by operation name."""
        return [(name, cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, self.bns[name]))
                for name, conv in self.convs.items()]  # fmt: skip

    def params(self) -> Params:
        """The weights as the shared arrays (``NAME:w``, ``NAME:gamma`` ...)."""
        out: Params = {}
        for name, conv, bn in self.layers():
            out[f"{name}:w"] = conv.weight.detach().cpu().numpy().astype(np.float32)
            for part, value in (("gamma", bn.weight), ("beta", bn.bias), ("mean", bn.running_mean),
                                ("var", bn.running_var)):  # fmt: skip
                assert value is not None
                out[f"{name}:{part}"] = value.detach().cpu().numpy().astype(np.float32)
        head = self.plan.ops[-1].name
        out[f"{head}:w"] = self.fc.weight.detach().cpu().numpy().astype(np.float32)
        out[f"{head}:b"] = self.fc.bias.detach().cpu().numpy().astype(np.float32)
        return out

    def load_params(self, params: Mapping[str, np.ndarray]) -> PlanNet:
        """Copy the shared arrays in (their shapes checked against the plan first)."""
        check(self.plan, params, "the weights")
        with torch.no_grad():
            for name, conv, bn in self.layers():
                conv.weight.copy_(torch.from_numpy(np.asarray(params[f"{name}:w"], np.float32)))
                for part, value in (("gamma", bn.weight), ("beta", bn.bias), ("mean", bn.running_mean),
                                    ("var", bn.running_var)):  # fmt: skip
                    assert value is not None
                    value.copy_(torch.from_numpy(np.asarray(params[f"{name}:{part}"], np.float32)))
            head = self.plan.ops[-1].name
            self.fc.weight.copy_(torch.from_numpy(np.asarray(params[f"{head}:w"], np.float32)))
            self.fc.bias.copy_(torch.from_numpy(np.asarray(params[f"{head}:b"], np.float32)))
        return self
