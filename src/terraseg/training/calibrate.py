"""Temperature scaling of a segmentation network's probabilities (Guo et al., "On Calibration of
Modern Neural Networks", ICML 2017).

One scalar ``T > 0`` divides the logits (softmax / sigmoid of ``z / T``): classes never change, only
how confident the probabilities are. ``T`` minimises the negative log-likelihood of the labelled
pixels of validation windows (L-BFGS on ``log T``); the expected calibration error (ECE, 15 equal
bins of the top-class probability; Naeini et al., AAAI 2015) is reported before and after. Training
fits it on the validation split and stores it in the bundle (``manifest.calibration``); every
backend applies it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from terraseg.data.normalize import NormStats, normalize
from terraseg.data.windows import grid_windows


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, bins: int = 15) -> float:
    """ECE of ``(P, K)`` probabilities against ``(P,)`` class ids: sum over bins of |accuracy - confidence| x share.

    Args:
        probs: ``(P, K)`` probabilities.
        target: ``(P,)`` class ids.
        bins: equal-width bins of the top probability.

    Returns:
        The expected calibration error in [0, 1].
    """
    conf, pred = probs.max(dim=1)
    correct = (pred == target).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.float().mean() * (correct[m].mean() - conf[m].mean()).abs()
    return float(ece)


def _probs(z: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    if z.shape[1] == 1:
        p = torch.sigmoid(z / t)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(z / t, dim=1)


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """Fit ``T`` on ``(P, K')`` pixel logits (K' = 1 for binary) and ``(P,)`` class ids.

    Args:
        logits: ``(P, K')`` logits.
        target: ``(P,)`` class ids (no ignored pixels).

    Returns:
        ``{"temperature", "ece_before", "ece_after", "nll_before", "nll_after", "pixels"}``.
    """
    z, y = logits.double(), target.long()

    def nll(t) -> torch.Tensor:
        return torch.nn.functional.nll_loss(_probs(z, t).clamp_min(1e-12).log(), y)

    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(log_t.exp())
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))
    with torch.no_grad():
        return {
            "temperature": round(t, 5),
            "ece_before": round(expected_calibration_error(_probs(z, 1.0).float(), y), 5),
            "ece_after": round(expected_calibration_error(_probs(z, t).float(), y), 5),
            "nll_before": round(float(nll(1.0)), 5),
            "nll_after": round(float(nll(t)), 5),
            "pixels": int(len(y)),
        }


MAX_WINDOWS, MAX_PIXELS = 24, 2_000_000  # windows read, spread over the scenes; labelled pixels kept (a seeded subset)


@torch.no_grad()
def calibrate_on_scenes(
    model: torch.nn.Module, scenes: list, stats: NormStats, window: int, ignore_index: int, seed: int = 0
) -> dict | None:
    """Fit the temperature of ``model`` on labelled windows of ``scenes`` (the validation split).

    Args:
        model: the trained network (returns logits).
        scenes: labelled validation scenes.
        stats: normalisation.
        window: window side in pixels.
        ignore_index: label to leave out.
        seed: seed of the subset of :data:`MAX_PIXELS` labelled pixels kept (from :data:`MAX_WINDOWS` windows).

    Returns:
        :func:`fit_temperature`'s figures, or None without labelled pixels.
    """
    model = model.eval()
    device = next(model.parameters()).device
    wins = [(s, w) for s in scenes for w in grid_windows(s.height, s.width, window, window, "shift")]
    if not wins:
        return None
    step = max(1, len(wins) // MAX_WINDOWS)
    zs, ys = [], []
    for scene, w in wins[::step][:MAX_WINDOWS]:
        r = scene.read(w.row, w.col, w.height, w.width)
        if r.mask is None:
            continue
        x = torch.from_numpy(normalize(r.image, stats, r.valid))[None].to(device)
        z = model(x).float().cpu()[0]  # (K', h, w)
        keep = torch.from_numpy((r.mask != ignore_index) & r.valid)
        zs.append(z[:, keep].T)
        ys.append(torch.from_numpy(r.mask)[keep])
    if not zs:
        return None
    z, y = torch.cat(zs), torch.cat(ys)
    if len(y) > MAX_PIXELS:
        idx = torch.from_numpy(np.random.default_rng(seed).choice(len(y), MAX_PIXELS, replace=False))
        z, y = z[idx], y[idx]
    if len(y) == 0:
        return None
    return fit_temperature(z, y)


__all__ = ["calibrate_on_scenes", "expected_calibration_error", "fit_temperature"]
