"""A run's per-epoch history as files: ``history.csv`` (for ``dvc plots``) and ``learning_curve.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_learning_curve(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Write ``learning_curve.png``: training loss, validation score and learning rate per epoch.

    Args:
        history: per-epoch entries (``epoch``, ``val/score``, ``train/loss``, ``lr``).
        path: the PNG to write.

    Returns:
        ``path``, or None without history.
    """
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from terraseg.io.atomic import atomic_path

    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in zip(axes, ("train/loss", "val/score", "lr"), ("training loss", "validation score", "learning rate")):
        vals = [h.get(key) for h in history]
        pts = [(e, v) for e, v in zip(epochs, vals) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def write_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Write the per-epoch history as CSV (``epoch`` from 1, then every logged figure), for DVC plots and spreadsheets.

    Args:
        history: per-epoch entries (``epoch`` 0-based, ``val/...``, ``train/loss``, ``lr``).
        path: the CSV file.

    Returns:
        ``path``, or None without history.
    """
    if not history:
        return None
    import csv
    import io

    from terraseg.io.atomic import write_text_atomic

    keys = ["epoch"] + sorted({k for h in history for k in h if k != "epoch" and isinstance(h[k], (int, float))})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(keys)
    for h in history:
        w.writerow([h["epoch"] + 1] + [h.get(k, "") for k in keys[1:]])
    return write_text_atomic(path, buf.getvalue())


__all__ = ["plot_learning_curve", "write_history"]
