"""Clustering: the K-means SDP and iLA-SDP (``sdp``), K-means / Gaussian-mixture EM baselines and metrics
(``mixture``), and scikit-learn-style estimators (``estimators``). This module is the one public face."""

from __future__ import annotations

from . import estimators, mixture, sdp
from .estimators import *  # noqa: F403
from .mixture import *  # noqa: F403
from .sdp import *  # noqa: F403

__all__ = [*sdp.__all__, *mixture.__all__, *estimators.__all__]
