"""Search spaces by name.  Add one by subclassing SearchSpace and registering it here."""

from __future__ import annotations

from coordinator.errors import UnknownNameError
from coordinator.ranking.spaces.base import SearchSpace
from coordinator.ranking.spaces.mobilenetv2 import MobileNetV2
from coordinator.ranking.spaces.nasbench201 import NasBench201

SPACES: dict[str, SearchSpace] = {s.name: s for s in (NasBench201(), MobileNetV2())}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise UnknownNameError(f"--space {name!r} is not one of: {', '.join(sorted(SPACES))}") from None


__all__ = ["SPACES", "SearchSpace", "get_space"]
