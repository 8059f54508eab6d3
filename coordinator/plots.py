"""Figures the coordinator draws (matplotlib, imported only when one is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def heatmap(devices: Sequence[str], srcc: Any, path: Any) -> None:
    """The SRCC matrix of ``devices`` as a heatmap, written to ``path`` (a file name or a
    binary file object) as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from coordinator.errors import ExtraMissingError

        raise ExtraMissingError("drawing needs matplotlib: pip install 'fleetbench[coordinator]'") from None
    d = len(devices)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * d, 1.0 + 0.8 * d))
    im = ax.imshow(srcc, vmin=min(0.0, float(srcc.min())), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(d), devices, rotation=45, ha="right")
    ax.set_yticks(range(d), devices)
    if d <= 20:
        for i in range(d):
            for j in range(d):
                v = srcc[i, j]
                ax.text(
                    j,
                    i,
                    "n/a" if v != v else f"{v:.2f}",
                    ha="center",
                    va="center",
                    color="white" if v < 0.8 else "black",
                    fontsize=9,
                )
    ax.set_title("Latency ranking agreement (SRCC)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
