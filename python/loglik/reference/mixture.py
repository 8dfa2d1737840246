"""Pure numpy / torch twins of loglik.mixture (K-means, Gaussian-mixture EM, mixture log-density, mis-clustering
error). Written for clarity, not speed; float64-capable; never import the compiled core.

The iterative twins follow the same algorithms as the C++ kernels (same convergence rules, same degenerate-case
handling) so that, started from the same initial centres/means, they reach the same fixed points.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .._backend import is_torch

__all__ = ["kmeans", "gmm_em", "gmm_logpdf", "misclustering_error"]


def _seed_rng(seed: Any) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _kmeanspp(X: np.ndarray, K: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (2 + log K candidates per step)."""
    n = X.shape[0]
    centers = [X[rng.integers(n)]]
    d2 = ((X - centers[0]) ** 2).sum(1)
    trials = 2 + int(math.log(K))
    for _ in range(1, K):
        total = d2.sum()
        if total > 0:
            cand = np.minimum(np.searchsorted(np.cumsum(d2), rng.random(trials) * total, side="right"), n - 1)
        else:
            cand = rng.integers(n, size=trials)
        pots = [np.minimum(d2, ((X - X[c]) ** 2).sum(1)) for c in cand]
        best = int(np.argmin([p.sum() for p in pots]))
        centers.append(X[cand[best]])
        d2 = pots[best]
    return np.array(centers)


def kmeans(
    X: Any,
    n_clusters: int,
    *,
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: Any = None,
    init: Any = "k-means++",
) -> Any:
    """Twin of loglik.kmeans (numpy, float64 arithmetic). Returns loglik.KMeansResult."""
    from ..mixture import KMeansResult

    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    K = int(n_clusters)
    tol_abs = tol * X.var(axis=0).mean()
    rng = _seed_rng(seed)
    best = None
    runs = 1 if not isinstance(init, str) else n_init
    for _ in range(runs):
        C = np.array(init, dtype=np.float64) if not isinstance(init, str) else _kmeanspp(X, K, rng)
        labels = np.full(n, -1)
        n_iter = 0
        converged = False
        relocated = 0
        for it in range(1, max_iter + 1):
            n_iter = it
            D = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)
            new = D.argmin(1)
            if (new == labels).all():
                converged = True
                break
            labels = new
            mind = D[np.arange(n), labels]
            far = np.argsort(-mind, kind="stable")
            newC = C.copy()
            moved = 0
            for k in range(K):
                members = labels == k
                if members.any():
                    newC[k] = X[members].mean(0)
                else:
                    newC[k] = X[far[min(moved, n - 1)]]
                    moved += 1
                    relocated += 1
            shift = ((newC - C) ** 2).sum()
            C = newC
            if shift <= tol_abs:
                converged = True
                break
        D = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)
        labels = D.argmin(1)
        inertia = float(D[np.arange(n), labels].sum())
        res = KMeansResult(labels.astype(np.int64), C, inertia, n_iter, converged, relocated)
        if best is None or res.inertia < best.inertia:
            best = res
    return best


def _logpdf_components(X: Any, means: Any, covariances: Any, weights: Any, covariance: str) -> Any:
    """(n, K) log w_k + log N(x_i | mu_k, Sigma_k), numpy or torch (differentiable) depending on the inputs."""
    torch_mode = any(is_torch(a) for a in (X, means, covariances, weights))
    xp: Any
    log: Any
    dt: Any
    if torch_mode:
        import torch as xp

        dt = xp.promote_types(
            xp.promote_types(X.dtype, means.dtype), xp.promote_types(covariances.dtype, weights.dtype)
        )
        X, means, covariances, weights = (
            (a if is_torch(a) else xp.as_tensor(a)).to(dt) for a in (X, means, covariances, weights)
        )
        log = xp.log
    else:
        X, means, covariances, weights = (np.asarray(a) for a in (X, means, covariances, weights))
        dt = np.result_type(X, means, covariances, weights)
        X, means, covariances, weights = (a.astype(dt) for a in (X, means, covariances, weights))
        log = np.log
    p = X.shape[1]
    diff = X[:, None, :] - means[None, :, :]  # (n, K, p)
    if covariance == "full":
        if torch_mode:
            L = xp.linalg.cholesky(covariances)  # (K, p, p)
            z = xp.linalg.solve_triangular(L[None], diff[..., None], upper=False)[..., 0]
            logdet = 2 * log(xp.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        else:
            L = np.linalg.cholesky(covariances)
            z = np.linalg.solve(L[None], diff[..., None])[..., 0]
            logdet = 2 * log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
        maha = (z**2).sum(-1)
    elif covariance == "diag":
        maha = (diff**2 / covariances[None]).sum(-1)
        logdet = log(covariances).sum(-1)
    else:
        maha = (diff**2).sum(-1) / covariances[None]
        logdet = p * log(covariances)
    if torch_mode:
        log_w = log(weights)
    else:
        with np.errstate(divide="ignore"):  # a zero weight is allowed: log 0 = -inf drops the component
            log_w = log(weights)
    return log_w[None] - 0.5 * (p * math.log(2 * math.pi) + logdet[None] + maha)


def gmm_logpdf(
    X: Any,
    means: Any,
    covariances: Any,
    weights: Any,
    *,
    covariance: str = "full",
    return_responsibilities: bool = False,
) -> Any:
    """Twin of loglik.gmm_logpdf: log sum_k w_k N(x | mu_k, Sigma_k) per point, (and responsibilities (n, K)).

    numpy inputs give numpy; torch inputs give torch and are differentiable (autograd through Cholesky).
    """
    lp = _logpdf_components(X, means, covariances, weights, covariance)
    # responsibilities as a softmax relative to the row maximum, not exp(lp - lse): for huge |lse| the log-sum's
    # O(1) part is lost to rounding and exp(lp - lse) no longer sums to one
    if is_torch(lp):
        lse = lp.logsumexp(1)
        resp = lp.softmax(1)
    else:
        m = lp.max(1, keepdims=True)
        e = np.exp(lp - m)
        s = e.sum(1, keepdims=True)
        lse = (m + np.log(s))[:, 0]
        resp = e / s
    return (lse, resp) if return_responsibilities else lse


def gmm_em(
    X: Any,
    n_clusters: int,
    covariance: str = "full",
    *,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    seed: Any = None,
    init: Any = "kmeans++",
) -> Any:
    """Twin of loglik.gmm_em in numpy float64 (same M-step, regularisation and stopping rule). Supports init
    "kmeans++", "random" or a (K, p) array of initial means. Returns loglik.MixtureResult."""
    from ..mixture import MixtureResult

    X = np.asarray(X)
    # the round-off floor of the full-covariance loading uses the precision of the input, as the kernel does
    eps_in = np.finfo(X.dtype if X.dtype == np.float32 else np.float64).eps
    X = X.astype(np.float64)
    n, p = X.shape
    K = int(n_clusters)
    rng = _seed_rng(seed)
    eps = np.finfo(np.float64).eps
    freeze_below = max(1e-6 * n / K, 1e-10)
    loading = max(reg_covar, p * eps_in * X.var(0).max())  # full covariances: see loglik.mixture's docstring
    best = None
    runs = 1 if not isinstance(init, str) else n_init
    for _ in range(runs):
        if isinstance(init, str) and init == "random":
            resp = rng.random((n, K)) + 1e-12
            resp /= resp.sum(1, keepdims=True)
        else:
            C = np.asarray(init, dtype=np.float64) if not isinstance(init, str) else _kmeanspp(X, K, rng)
            lab = ((X[:, None] - C[None]) ** 2).sum(-1).argmin(1)
            resp = np.eye(K)[lab]
        means = np.zeros((K, p))
        covs = {"full": np.zeros((K, p, p)), "diag": np.zeros((K, p)), "spherical": np.zeros(K)}[covariance]
        have = np.zeros(K, bool)
        history: list[float] = []
        prev = -np.inf
        converged = False
        for _it in range(max_iter):
            Nk = resp.sum(0) + 10 * eps
            weights = np.maximum(Nk, 10 * eps) / n
            for k in range(K):
                if Nk[k] < freeze_below:
                    if not have[k]:
                        ok = (Nk >= freeze_below) | have
                        centres = (resp.T @ X)[ok] / Nk[ok, None]
                        far = ((X[:, None] - centres[None]) ** 2).sum(-1).min(1).argmax()
                        means[k] = X[far]
                        v = X.var(0)
                        covs[k] = {"full": np.diag(v), "diag": v, "spherical": v.mean()}[covariance] + (
                            reg_covar * np.eye(p) if covariance == "full" else reg_covar
                        )
                        have[k] = True
                    continue
                means[k] = resp[:, k] @ X / Nk[k]
                d = X - means[k]
                have[k] = True
                if covariance == "full":
                    S = (resp[:, k, None] * d).T @ d / Nk[k]
                    covs[k] = S + loading * np.eye(p)
                elif covariance == "diag":
                    covs[k] = resp[:, k] @ (d**2) / Nk[k] + reg_covar
                else:
                    covs[k] = (resp[:, k] @ (d**2)).mean() / Nk[k] + reg_covar
            weights = weights / weights.sum()
            ll_i, resp = gmm_logpdf(X, means, covs, weights, covariance=covariance, return_responsibilities=True)
            ll = float(ll_i.mean())
            history.append(ll)
            if abs(ll - prev) < tol:
                converged = True
                break
            prev = ll
        res = MixtureResult(
            labels=resp.argmax(1).astype(np.int64),
            means=means,
            covariances=covs,
            weights=weights,
            log_likelihood=history[-1],
            n_iter=len(history),
            converged=converged,
            responsibilities=resp,
            history=np.array(history),
        )
        if best is None or res.log_likelihood > best.log_likelihood:
            best = res
    return best


def misclustering_error(labels: Any, truth: Any) -> float:
    """Twin of loglik.misclustering_error by brute force over all label matchings (use only with few clusters)."""
    a = np.asarray(labels).ravel()
    b = np.asarray(truth).ravel()
    ua, ai = np.unique(a, return_inverse=True)
    ub, bi = np.unique(b, return_inverse=True)
    table = np.zeros((len(ua), len(ub)), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    if len(ua) > len(ub):
        table = table.T
    r, c = table.shape
    best = 0
    for perm in itertools.permutations(range(c), r):
        best = max(best, int(table[np.arange(r), list(perm)].sum()))
    return 1.0 - best / a.size
