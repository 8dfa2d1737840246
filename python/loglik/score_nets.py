"""Small score networks for the Noise2Score demo (``loglik denoise``).

Importing this module imports torch (it defines nn.Modules); ``import loglik`` never imports it.
"""

from __future__ import annotations

from typing import Any

from . import _backend

torch = _backend.torch()
nn = torch.nn
_Module: Any = nn.Module

__all__ = ["ScoreCNN"]


class ScoreCNN(_Module):
    """Fully convolutional, noise-conditional score model R(v, sigma) for images [B, C, H, W].

    The perturbation scale enters as an extra constant input channel log(sigma / sigma_ref); the output is divided by
    sigma_ref so that the network's raw output is O(1) for scores of size 1 / sigma_ref. The last convolution starts
    at zero (R = 0 at initialisation, i.e. the identity denoiser).

    Args:
        channels: image channels C.
        width: feature channels of the hidden layers.
        depth: number of 3x3 convolutions (>= 2).
        sigma_ref: typical noise scale of the data (sets the output scale).
    """

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 6, sigma_ref: float = 0.1) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth: expected >= 2, got {depth}")
        layers: list[Any] = [nn.Conv2d(channels + 1, width, 3, padding=1, padding_mode="reflect"), nn.SiLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, padding_mode="reflect"), nn.SiLU()]
        last = nn.Conv2d(width, channels, 3, padding=1, padding_mode="reflect")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.body = nn.Sequential(*layers)
        self.sigma_ref = float(sigma_ref)

    def forward(self, v: Any, sigma: Any) -> Any:
        """v [B, C, H, W], sigma [B] -> score estimate [B, C, H, W]."""
        b, _, h, w = v.shape
        cond = torch.log(sigma.to(v.dtype) / self.sigma_ref).view(b, 1, 1, 1).expand(b, 1, h, w)
        return self.body(torch.cat([v, cond], dim=1)) / self.sigma_ref
