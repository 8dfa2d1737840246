"""Thin ``torch.nn.Module`` wrappers over :mod:`loglik.lm` that only hold settings.

- ``LinearCrossEntropy(reduction="mean", ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None,
  temperature=1.0, chunk_size=None, impl="auto")``; ``forward(hidden, weight, targets, bias=None, weights=None)``.
- ``LinearLogprobs(temperature=1.0, softcap=None, ignore_index=-100, return_entropy=False, return_lse=False,
  chunk_size=None, impl="auto")``; ``forward(hidden, weight, targets, bias=None)``.

The output head's weight is passed to ``forward`` (it usually lives in, or is tied to, the model's embedding), so
these modules have no parameters. The classes are built on first access: importing this module does not import
torch.
"""

from __future__ import annotations

import functools
from typing import Any

from . import _backend, lm
from ._checks import check_bool

__all__ = ["LinearCrossEntropy", "LinearLogprobs"]  # noqa: F822 (built lazily by __getattr__)


@functools.cache
def _classes() -> dict[str, type]:
    torch = _backend.torch()

    class LinearCrossEntropy(torch.nn.Module):  # type: ignore[name-defined]
        """Module form of :func:`loglik.linear_cross_entropy` (see it for every argument)."""

        def __init__(
            self,
            *,
            reduction: str = "mean",
            ignore_index: int = -100,
            label_smoothing: float = 0.0,
            z_loss: float = 0.0,
            softcap: float | None = None,
            temperature: float = 1.0,
            chunk_size: int | None = None,
            impl: str = "auto",
        ) -> None:
            super().__init__()
            self.reduction = reduction
            self.ignore_index = ignore_index
            self.label_smoothing = label_smoothing
            self.z_loss = z_loss
            self.softcap = softcap
            self.temperature = temperature
            self.chunk_size = chunk_size
            self.impl = impl

        def forward(self, hidden: Any, weight: Any, targets: Any, bias: Any = None, weights: Any = None) -> Any:
            """hidden [..., D], weight [V, D], targets [...] -> loss (scalar, or [...] with reduction="none")."""
            return lm.linear_cross_entropy(
                hidden, weight, targets, bias=bias, reduction=self.reduction, ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
                temperature=self.temperature, weights=weights, chunk_size=self.chunk_size, impl=self.impl,
            )  # fmt: skip

        def extra_repr(self) -> str:
            return (
                f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, z_loss={self.z_loss}, softcap={self.softcap}, "
                f"temperature={self.temperature}, impl={self.impl!r}"
            )

    class LinearLogprobs(torch.nn.Module):  # type: ignore[name-defined]
        """Module form of :func:`loglik.linear_logprobs` (see it for every argument)."""

        def __init__(
            self,
            *,
            temperature: float = 1.0,
            softcap: float | None = None,
            ignore_index: int = -100,
            return_entropy: bool = False,
            return_lse: bool = False,
            chunk_size: int | None = None,
            impl: str = "auto",
        ) -> None:
            super().__init__()
            self.temperature = temperature
            self.softcap = softcap
            self.ignore_index = ignore_index
            self.return_entropy = check_bool(return_entropy, "return_entropy")
            self.return_lse = check_bool(return_lse, "return_lse")
            self.chunk_size = chunk_size
            self.impl = impl

        def forward(self, hidden: Any, weight: Any, targets: Any, bias: Any = None) -> Any:
            """hidden [..., D], weight [V, D], targets [...] -> logprobs [...] (or the tuple with extras)."""
            return lm.linear_logprobs(
                hidden, weight, targets, bias=bias, temperature=self.temperature, softcap=self.softcap,
                ignore_index=self.ignore_index, return_entropy=self.return_entropy, return_lse=self.return_lse,
                chunk_size=self.chunk_size, impl=self.impl,
            )  # fmt: skip

        def extra_repr(self) -> str:
            return (
                f"temperature={self.temperature}, softcap={self.softcap}, ignore_index={self.ignore_index}, "
                f"return_entropy={self.return_entropy}, return_lse={self.return_lse}, impl={self.impl!r}"
            )

    return {"LinearCrossEntropy": LinearCrossEntropy, "LinearLogprobs": LinearLogprobs}


def __getattr__(name: str) -> Any:
    if name in __all__:
        return _classes()[name]
    raise AttributeError(f"module 'loglik.nn' has no attribute {name!r}")
