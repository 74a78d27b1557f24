"""The dihedral group D4: the eight symmetries of a square window (rotations by 90 degrees, with and
without a mirror flip), the one definition training augmentation and test-time augmentation share.

Overhead imagery has no "up", so all eight views are equally likely (Buslaev et al., "Albumentations",
Information 2020; the D4 averaging of the SpaceNet and Inria building challenge solutions). A view is a
pair ``(k, flip)``: mirror the last axis when ``flip``, then rotate by ``k`` quarter turns
(:func:`torch.rot90` over the last two axes). Non-square windows keep only the views that keep their
shape (``k`` even).
"""

from __future__ import annotations

import numpy as np
import torch

View = tuple[int, bool]
IDENTITY: View = (0, False)


def views(mode: str, square: bool = True) -> list[View]:
    """The views of an augmentation mode.

    Args:
        mode: 'd4' (all eight; square windows only, else as 'flips'), 'flips' (identity, left-right and
            up-down mirror: 3 views) or 'horizontal' (identity and the left-right mirror).
        square: whether the window is square.

    Returns:
        ``[(k, flip)]``, the identity first.

    Raises:
        ValueError: an unknown mode.
    """
    if mode == "d4" and square:
        return [(k, f) for f in (False, True) for k in range(4)]
    if mode in ("d4", "flips"):
        return [IDENTITY, (0, True), (2, True)]  # up-down mirror = a left-right mirror turned by 180 degrees
    if mode == "horizontal":
        return [IDENTITY, (0, True)]
    raise ValueError(f"unknown D4 mode '{mode}': use 'd4', 'flips' or 'horizontal'")


def apply(x: torch.Tensor, view: View) -> torch.Tensor:
    """``x`` seen in ``view``: mirrored (last axis), then turned ``k`` quarter turns.

    Args:
        x: any ``(..., H, W)`` tensor.
        view: ``(k, flip)``.
    """
    k, flip = view
    x = x.flip(-1) if flip else x
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def invert(x: torch.Tensor, view: View) -> torch.Tensor:
    """The inverse of :func:`apply`: a map predicted in ``view`` brought back to the input's frame.

    Args:
        x: any ``(..., H, W)`` tensor.
        view: ``(k, flip)`` it was seen in.
    """
    k, flip = view
    x = torch.rot90(x, -k, dims=(-2, -1)) if k else x
    return x.flip(-1) if flip else x


def random_view(rng: np.random.Generator, mode: str, square: bool = True) -> View:
    """One view drawn uniformly from the mode's group (all eight for 'd4' on a square, else mirrors only).

    Args:
        rng: NumPy generator.
        mode: 'd4' or 'horizontal'.
        square: whether the window is square.
    """
    if mode == "d4" and square:
        return int(rng.integers(4)), bool(rng.integers(2))
    return (2 * int(rng.integers(2)) if mode == "d4" else 0), bool(rng.integers(2))


def random_views(n: int, mode: str, square: bool, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` views drawn uniformly, as ``(k, flip)`` CPU tensors of shape ``(n,)`` (a batch's draws, one generator).

    Args:
        n: samples.
        mode: 'd4' or 'horizontal'.
        square: whether the windows are square.
        g: CPU generator.
    """
    flip = torch.rand(n, generator=g) < 0.5
    if mode == "d4" and square:
        k = torch.randint(0, 4, (n,), generator=g)
    elif mode == "d4":  # mirrors of a non-square window: both axes
        k = 2 * torch.randint(0, 2, (n,), generator=g)
    else:
        k = torch.zeros(n, dtype=torch.int64)
    return k, flip


__all__ = ["IDENTITY", "View", "apply", "invert", "random_view", "random_views", "views"]
