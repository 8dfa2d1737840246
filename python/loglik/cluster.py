"""Clustering: the K-means SDP and iLA-SDP (``sdp``), K-means / Gaussian-mixture EM baselines and metrics
(``mixture``), and scikit-learn-style estimators (``estimators``). This module is the one public face.

The estimators are imported on first access (module ``__getattr__``) because scikit-learn costs about a second to
import and ``import loglik`` must stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import mixture, sdp
from .mixture import *  # noqa: F403
from .sdp import *  # noqa: F403

ESTIMATORS = ("SDPKMeans", "ILASDP", "GaussianMixtureEM")

__all__ = [*sdp.__all__, *mixture.__all__, *ESTIMATORS]


def __getattr__(name: str) -> Any:
    if name in ESTIMATORS:
        return getattr(importlib.import_module("loglik.estimators"), name)
    raise AttributeError(f"module 'loglik.cluster' has no attribute {name!r}")
