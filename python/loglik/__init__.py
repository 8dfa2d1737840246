"""loglik: fast, exact log-likelihood primitives with a compiled core.

One flat namespace: ``loglik.kmeans_sdp``, ``loglik.linear_logprobs``, ``loglik.kde_score``, ``loglik.conv3d``...
Importing loglik imports numpy only; torch, Triton and the GPU are touched on first use.
"""

from __future__ import annotations

from . import cluster, conv, lm, score
from ._backend import get_num_threads, has_compiled, has_cuda, has_triton, set_num_threads
from .conv import *  # noqa: F403
from .lm import *  # noqa: F403
from .mixture import *  # noqa: F403  (each domain module declares its public names in __all__)
from .score import *  # noqa: F403
from .sdp import *  # noqa: F403

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # scikit-learn estimators load on first use: importing scikit-learn would triple the import time.
    if name in cluster.ESTIMATORS:
        return getattr(cluster, name)
    raise AttributeError(f"module 'loglik' has no attribute {name!r}")


__all__ = [
    "__version__",
    "get_num_threads",
    "has_compiled",
    "has_cuda",
    "has_triton",
    "set_num_threads",
    *cluster.__all__,
    *conv.__all__,
    *lm.__all__,
    *score.__all__,
]
