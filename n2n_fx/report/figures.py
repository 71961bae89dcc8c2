"""The report's figures (curves.png, pareto.png): matplotlib's object API, written atomically.

pyplot is never imported, so no global backend is chosen for the caller (a notebook keeps
its own): a ``Figure`` renders itself with Agg into memory, and ``n2n_fx.storage`` writes
the file whole or not at all.

Example:
    >>> import tempfile
    >>> fig, axes = new_figure(1, 2, (6, 3))
    >>> axes.shape
    (1, 2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_png(fig, Path(tmp) / "f.png")
    ...     (Path(tmp) / "f.png").read_bytes()[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..storage import atomic_write_bytes

__all__ = ["MISSING", "new_figure", "save_png"]

# the hint a report gives in place of a figure when matplotlib (a dependency) cannot be imported
MISSING = "matplotlib cannot be imported (pip install matplotlib)"


def new_figure(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Any, Any] | None:
    """A figure and its ``(rows, cols)`` array of axes, or None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_png(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay ``fig`` out and write it to ``path`` as PNG, atomically."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
