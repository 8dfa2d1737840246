"""scikit-learn-style estimators over loglik's clustering functions."""

from __future__ import annotations

__all__: list[str] = []
