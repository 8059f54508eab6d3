"""What a search space gives the ranking core: arch strings validated and turned into features."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Optional

import numpy as np

from coordinator.errors import ArchError


class SearchSpace(abc.ABC):
    #: the name users type: ``--space nas-bench-201``
    name: str

    @abc.abstractmethod
    def parse(self, arch: str) -> object:
        """Parse one arch string; raise ValueError saying what is wrong with it."""

    @abc.abstractmethod
    def encode(self, archs: Sequence[str], kind: str) -> np.ndarray:
        """Feature matrix (len(archs) x p) of encoding ``kind`` (see ``kinds``)."""

    #: encodings this space provides
    kinds: tuple[str, ...] = ()

    def encode_all(self, archs: Sequence[str]) -> dict[str, np.ndarray]:
        """Every encoding at once (spaces override this to parse each arch only once)."""
        return {kind: self.encode(archs, kind) for kind in self.kinds}

    @abc.abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` distinct random architectures."""

    def validate(
        self, archs: Sequence[str], source: str = "table", lines: Optional[Sequence[int]] = None
    ) -> None:
        """Check every arch string; the error names the file line (or data row) and the text."""
        for i, arch in enumerate(archs):
            try:
                self.parse(arch)
            except ValueError as err:
                where = f"line {lines[i]}" if lines else f"row {i + 1}"
                raise ArchError(
                    f"{source}, {where}: {arch!r} is not a {self.name} architecture: {err}"
                ) from None
