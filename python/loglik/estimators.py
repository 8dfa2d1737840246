"""scikit-learn-style estimators over loglik's clustering functions: ``SDPKMeans`` (the Peng-Wei K-means SDP),
``ILASDP`` (iterative likelihood-adjusted SDP) and ``GaussianMixtureEM`` (EM in C++).

They follow scikit-learn's conventions (parameters stored unchanged in ``__init__``, fitted attributes with a
trailing underscore, ``fit`` returns ``self``, ``random_state`` for reproducibility) and pass
``sklearn.utils.estimator_checks.check_estimator``; see tests/test_estimators.py for the checks that are expected
to fail and why. Inputs: numpy arrays, lists, or torch tensors (moved to CPU), float32 or float64.

scikit-learn (a hard dependency of loglik) is imported with this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _backend
from ._checks import check_bool, check_choice, check_positive
from .mixture import gmm_em, gmm_logpdf

__all__ = ["SDPKMeans", "ILASDP", "GaussianMixtureEM"]


def _seed_from(random_state: Any) -> int | None:
    """An int seed for loglik's solvers from scikit-learn's random_state (None, int or RandomState)."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise TypeError(f"random_state: expected None, an int or a numpy RandomState, got {random_state!r}")
    if int(random_state) < 0:
        raise ValueError(f"random_state: expected a non-negative int, got {random_state}")
    return int(random_state)


def _sdp_function(name: str) -> Any:
    from . import sdp

    fn = getattr(sdp, name, None)
    if fn is None:
        raise NotImplementedError(f"loglik.{name} is not available in this build (loglik.sdp has no {name!r})")
    return fn


class _ClusterBase(ClusterMixin, BaseEstimator):
    def _data(self, X: Any, *, reset: bool) -> np.ndarray:
        if _backend.is_torch(X):
            X = X.detach().cpu().numpy()
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])

    def _check_n_clusters(self, X: np.ndarray) -> int:
        K = self.n_clusters
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise ValueError(f"n_clusters: expected a positive int, got {K!r}")
        if X.shape[0] < K:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={K}")
        return int(K)

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        """Fit and return ``labels_`` (int64, shape (n,))."""
        return self.fit(X, y, **kwargs).labels_


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..m-1 (an SDP rounding may leave a cluster empty)."""
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    return inv.astype(np.int64).ravel()


def _cluster_stats(X: np.ndarray, labels: np.ndarray, reg_covar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means (m, p), regularised full covariances (m, p, p), weights (m,) of the clusters 0..m-1."""
    X64 = X.astype(np.float64)
    m = int(labels.max()) + 1
    p = X.shape[1]
    scale = max(float(X64.var(0).mean()), np.finfo(np.float64).tiny)
    reg = max(reg_covar, 1e-6 * scale)
    means = np.zeros((m, p))
    covs = np.zeros((m, p, p))
    weights = np.zeros(m)
    for k in range(m):
        Xk = X64[labels == k]
        means[k] = Xk.mean(0)
        d = Xk - means[k]
        covs[k] = d.T @ d / len(Xk) + reg * np.eye(p)
        weights[k] = len(Xk) / len(X64)
    return means, covs, weights


class SDPKMeans(_ClusterBase):
    """K-means by the Peng-Wei SDP relaxation (``loglik.kmeans_sdp``), scikit-learn style.

    Args:
        n_clusters: number of clusters K.
        solver: "lowrank" (Burer-Monteiro, scales to large n) or "admm" (full matrix, small n, certified).
        random_state: None, int or numpy RandomState (seeds the solver).

    Attributes:
        labels_: int64 (n,) cluster of each training point (consecutive, starting at 0).
        cluster_centers_: (m, p) mean of each found cluster; ``predict`` assigns to the nearest one.
        objective_: SDP objective reached; n_iter_, converged_: solver diagnostics; result_: the SDPResult.
    """

    def __init__(self, n_clusters: int = 2, *, solver: str = "lowrank", random_state: Any = None) -> None:
        self.n_clusters = n_clusters
        self.solver = solver
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> SDPKMeans:
        """Cluster X (n, p). y is ignored. Returns self."""
        Xa = self._data(X, reset=True)
        K = self._check_n_clusters(Xa)
        res = _sdp_function("kmeans_sdp")(Xa, K, solver=self.solver, seed=_seed_from(self.random_state))
        self.labels_ = _consecutive(res.labels)
        self.cluster_centers_ = np.stack([Xa[self.labels_ == k].mean(0) for k in range(self.labels_.max() + 1)])
        self.objective_ = float(res.objective)
        self.n_iter_ = int(res.n_iter)
        self.converged_ = bool(res.converged)
        self.result_ = res
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Index of the nearest fitted cluster centre for each row of X (n, p) -> int64 (n,)."""
        check_is_fitted(self)
        Xa = self._data(X, reset=False).astype(np.float64)
        C = self.cluster_centers_.astype(np.float64)
        d = (Xa**2).sum(1)[:, None] - 2 * Xa @ C.T + (C**2).sum(1)[None]
        return d.argmin(1).astype(np.int64)


class ILASDP(_ClusterBase):
    """Iterative likelihood-adjusted SDP clustering (``loglik.ila_sdp``) for Gaussian mixtures with
    cluster-specific covariances, scikit-learn style.

    Args:
        n_clusters: number of clusters K.
        max_rounds: maximum iLA-SDP rounds (an LA-SDP solve and a covariance re-estimation each).
        reg_covar: lower bound of the diagonal loading of the per-cluster covariances used by ``predict``
            (the loading is max(reg_covar, 1e-6 * mean feature variance)).
        verbose: progress bar over iLA-SDP rounds.
        random_state: None, int or numpy RandomState.

    Attributes:
        labels_: int64 (n,) cluster of each training point.
        means_, covariances_ (m, p, p), weights_: Gaussian fitted to each found cluster from ``labels_``;
            ``predict`` returns the cluster with the highest weighted Gaussian log-likelihood
            (log w_k + log N(x | mean_k, cov_k), via ``loglik.gmm_logpdf``).
        objective_, n_iter_, converged_, result_: solver diagnostics.
    """

    def __init__(
        self,
        n_clusters: int = 2,
        *,
        max_rounds: int = 20,
        reg_covar: float = 1e-6,
        verbose: bool = False,
        random_state: Any = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.max_rounds = max_rounds
        self.reg_covar = reg_covar
        self.verbose = verbose
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> ILASDP:
        """Cluster X (n, p). y is ignored. Returns self."""
        Xa = self._data(X, reset=True)
        K = self._check_n_clusters(Xa)
        # finite and >= 0 (an inf or True reg_covar passed the old isinstance check and failed later, in predict)
        reg_covar = check_positive(self.reg_covar, "reg_covar", allow_zero=True)
        verbose = check_bool(self.verbose, "verbose")
        res = _sdp_function("ila_sdp")(
            Xa, K, max_rounds=self.max_rounds, seed=_seed_from(self.random_state), verbose=verbose
        )
        self.labels_ = _consecutive(res.labels)
        self.means_, self.covariances_, self.weights_ = _cluster_stats(Xa, self.labels_, reg_covar)
        self.objective_ = float(res.objective)
        self.n_iter_ = int(res.n_iter)
        self.converged_ = bool(res.converged)
        self.result_ = res
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Cluster with the highest weighted Gaussian log-likelihood for each row of X (n, p) -> int64 (n,)."""
        check_is_fitted(self)
        Xa = self._data(X, reset=False).astype(np.float64)
        _, resp = gmm_logpdf(
            Xa, self.means_, self.covariances_, self.weights_, covariance="full", return_responsibilities=True
        )
        return resp.argmax(1).astype(np.int64)


class GaussianMixtureEM(_ClusterBase):
    """Gaussian-mixture clustering by EM in C++ (``loglik.gmm_em``), scikit-learn style.

    Args:
        n_clusters: number of components K.
        covariance_type: "full", "diag" or "spherical".
        n_init, max_iter, tol, reg_covar, init: as in ``loglik.gmm_em``.
        random_state: None, int or numpy RandomState.

    Attributes:
        labels_: int64 (n,); means_ (K, p); covariances_; weights_ (K,); log_likelihood_ (mean per point);
        n_iter_; converged_. ``predict`` returns the most responsible component, ``predict_proba`` the
        responsibilities, ``score_samples`` the per-point log-density and ``score`` its mean.
    """

    def __init__(
        self,
        n_clusters: int = 2,
        *,
        covariance_type: str = "full",
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        init: str = "kmeans++",
        random_state: Any = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.init = init
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> GaussianMixtureEM:
        """Fit the mixture to X (n, p). y is ignored. Returns self."""
        Xa = self._data(X, reset=True)
        K = self._check_n_clusters(Xa)
        check_choice(self.covariance_type, "covariance_type", ("full", "diag", "spherical"))  # gmm_em says "covariance"
        res = gmm_em(
            Xa,
            K,
            self.covariance_type,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            reg_covar=self.reg_covar,
            seed=_seed_from(self.random_state),
            init=self.init,
        )
        self.labels_ = res.labels
        self.means_ = res.means
        self.covariances_ = res.covariances
        self.weights_ = res.weights
        self.log_likelihood_ = res.log_likelihood
        self.n_iter_ = res.n_iter
        self.converged_ = res.converged
        return self

    def _logpdf(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self)
        Xa = self._data(X, reset=False).astype(self.means_.dtype, copy=False)
        return gmm_logpdf(
            Xa,
            self.means_,
            self.covariances_,
            self.weights_,
            covariance=self.covariance_type,
            return_responsibilities=True,
        )

    def predict(self, X: Any) -> np.ndarray:
        """Most responsible component for each row of X (n, p) -> int64 (n,)."""
        return self._logpdf(X)[1].argmax(1).astype(np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Responsibilities (n, K); rows sum to one."""
        return self._logpdf(X)[1]

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density of the fitted mixture at each row of X -> (n,)."""
        return self._logpdf(X)[0]

    def score(self, X: Any, y: Any = None) -> float:
        """Mean per-point log-likelihood of X under the fitted mixture."""
        return float(np.mean(self.score_samples(X)))
