"""One figure style for every quasirl figure (CLI, notebooks, README).

Colour maps are perceptually uniform and readable in grey scale (``cividis`` for fields,
``viridis`` sampled for line families); lines also differ in style and marker.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIELD_CMAP = "cividis"
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")

RC = {
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "image.cmap": FIELD_CMAP,
}


@contextmanager
def style():
    """Context manager applying the quasirl rc settings."""
    with plt.rc_context(RC):
        yield


def line_colors(n: int):
    """n colours from viridis (dark to light: distinguishable in grey scale)."""
    return [plt.get_cmap("viridis")(x) for x in np.linspace(0.0, 0.85, max(n, 1))]


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 5.0, height: float = 3.6, **kw):
    """A figure and axes in the quasirl style (call inside ``style()`` or not: rc is applied)."""
    # Resolve the backend before entering rc_context: otherwise the first pyplot call happens
    # inside it and leaving the context reverts Jupyter's inline backend set-up.
    plt.get_backend()
    with plt.rc_context(RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 squeeze=False, **kw)
    fig.set_layout_engine("constrained")
    return fig, (axes[0, 0] if nrows == ncols == 1 else axes)


def savefig(fig, path) -> Path:
    """Save ``fig`` (creating the folder) as PNG, close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(RC):
        fig.savefig(path)
    plt.close(fig)
    return path
