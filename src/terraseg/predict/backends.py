"""Inference backends: what runs the network on a batch of normalised windows.

Every backend maps ``(N, C, h, w)`` float32 windows to ``(N, K, h, w)`` float32 class probabilities.
:meth:`probabilities` takes and returns torch tensors (the sliding-window predictor keeps its
work on the backend's :attr:`device`); ``__call__`` takes and returns NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from terraseg.models.factory import logits_to_probs


class TorchBackend:
    """Runs a PyTorch network on its device: ``(N, C, h, w)`` float32 -> ``(N, K, h, w)`` float32 probabilities.

    Tensors given to :meth:`probabilities` stay on the device (the predictor normalises, blends and
    takes the argmax there); ``__call__`` takes and returns NumPy arrays.

    Args:
        model: network returning logits. device: 'cpu', 'cuda', 'cuda:1'...
        precision: '32', or 'bf16' / '16' for autocast. channels_last: NHWC memory format.
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu", precision: str = "32", channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.precision = precision
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` normalised float32 on any device -> ``(N, K, h, w)`` float32 on :attr:`device`."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.model(x)
        return logits_to_probs(logits)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.probabilities(torch.from_numpy(batch)).cpu().numpy()


class ArrayBackend:
    """Adapts a NumPy backend (ONNX Runtime, a scikit-learn pixel model) to tensors on the CPU.

    Args:
        run: callable ``(N, C, h, w)`` float32 array -> ``(N, K, h, w)`` probabilities.
    """

    device = torch.device("cpu")

    def __init__(self, run: Callable[[np.ndarray], np.ndarray]) -> None:
        self.run = run

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` float32 tensor -> ``(N, K, h, w)`` float32 tensor on the CPU."""
        return torch.from_numpy(np.ascontiguousarray(self.run(x.cpu().numpy()), dtype=np.float32))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)


__all__ = ["ArrayBackend", "TorchBackend"]
