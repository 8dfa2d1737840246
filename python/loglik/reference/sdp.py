"""Reference twins of ``loglik.kmeans_sdp`` and ``loglik.ila_sdp``: the same programs written directly in cvxpy
and solved by SCS to high accuracy, plus the pure-numpy pieces (Gaussian re-estimation, LA-SDP coefficients,
K-means rounding) that the fast path shares. Never imports compiled code.

These are slow (SCS on dense n x n PSD variables) and meant for n of a few dozen to ~150.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["SDPResult", "kmeans_sdp", "ila_sdp", "lasdp", "estimate_gaussians", "lasdp_coefficients", "lloyd"]


@dataclasses.dataclass(frozen=True, eq=False)
class SDPResult:
    """Result of an SDP clustering solve.

    Attributes:
        labels: int64 [n], cluster of each point (0 .. K-1), rounded from ``Z`` or ``U``.
        objective: for ``kmeans_sdp`` the SDP value <X_c X_c^T, Z> (X_c = centred X; larger is better); for
            ``ila_sdp`` the relaxed negative log-likelihood of the final LA-SDP (smaller is better).
        n_iter: iterations (kmeans_sdp: projected-gradient steps or ADMM iterations; ila_sdp: rounds).
        converged: whether the stopping tolerances were met (ila_sdp: the labels stopped changing).
        info: solver diagnostics (residuals, duality gap, penalty, timings, per-round history ...).
        Z: [n, n] solution matrix (ADMM and the reference only), else None.
        U: [n, r] nonnegative factor with Z = U U^T (low-rank solver; ila_sdp: [n, K * r], block k = U_k), else None.
        means: [K, p] cluster means (ila_sdp), else None.
        covariances: [K, p, p] regularised cluster covariances (ila_sdp), else None.
        weights: [K] mixing weights (ila_sdp), else None.
    """

    labels: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    info: dict[str, Any]
    Z: np.ndarray | None = None
    U: np.ndarray | None = None
    means: np.ndarray | None = None
    covariances: np.ndarray | None = None
    weights: np.ndarray | None = None


def _as_float64(X: Any) -> np.ndarray:
    if type(X).__module__.startswith("torch"):
        X = X.detach().cpu().numpy()
    return np.array(X, dtype=np.float64)


def lloyd(Y: np.ndarray, n_clusters: int, *, n_init: int = 10, max_iter: int = 300, seed: int = 0) -> np.ndarray:
    """Plain numpy K-means (k-means++ seeding, Lloyd iterations); returns int64 labels [n] of the best restart."""
    Y = np.asarray(Y, dtype=np.float64)
    n = Y.shape[0]
    rng = np.random.default_rng(seed)
    best, best_lab = np.inf, np.zeros(n, dtype=np.int64)
    for _ in range(n_init):
        picked = [Y[rng.integers(n)]]
        d2 = ((Y - picked[0]) ** 2).sum(1)
        for _k in range(1, n_clusters):
            tot = d2.sum()
            i = rng.choice(n, p=d2 / tot) if tot > 0 else rng.integers(n)
            picked.append(Y[i])
            d2 = np.minimum(d2, ((Y - Y[i]) ** 2).sum(1))
        C = np.array(picked)
        lab = np.full(n, -1)
        for _it in range(max_iter):
            D = ((Y[:, None, :] - C[None]) ** 2).sum(2)
            new = D.argmin(1)
            if np.array_equal(new, lab):
                break
            lab = new
            for k in range(n_clusters):
                if np.any(lab == k):
                    C[k] = Y[lab == k].mean(0)
        inertia = ((Y - C[lab]) ** 2).sum()
        if inertia < best:
            best, best_lab = inertia, lab.astype(np.int64)
    return best_lab


def kmeans_sdp(
    X: Any, n_clusters: int, *, seed: int | None = None, eps: float = 1e-9, max_iters: int = 200000, **ignored: Any
) -> SDPResult:
    """Peng-Wei K-means SDP by cvxpy + SCS: max <X_c X_c^T, Z> s.t. Z PSD, Z >= 0, Z 1 = 1, tr Z = K.

    Args:
        X: [n, p] data (numpy or torch); centred here.
        n_clusters: K.
        seed: seed of the K-means rounding of the top-K eigenvectors of Z.
        eps: SCS's eps_abs and eps_rel.
        max_iters: SCS iteration cap.
        **ignored: options of the fast solver (solver=, rank=, ...) accepted and ignored.

    Returns:
        SDPResult with Z [n, n], objective <X_c X_c^T, Z>, labels from rounding.
    """
    import cvxpy as cp

    X = _as_float64(X)
    X = X - X.mean(0)
    n = X.shape[0]
    A = X @ X.T
    scale = max(np.trace(A) / n, 1e-300)
    Z = cp.Variable((n, n), PSD=True)
    cons = [Z >= 0, cp.sum(Z, axis=1) == 1, cp.trace(Z) == n_clusters]
    prob = cp.Problem(cp.Maximize(cp.trace((A / scale) @ Z)), cons)
    prob.solve(solver=cp.SCS, eps_abs=eps, eps_rel=eps, max_iters=max_iters)
    Zv = np.asarray(Z.value)
    Zv = (Zv + Zv.T) / 2
    return SDPResult(
        labels=round_eigen(Zv, n_clusters, seed=0 if seed is None else seed),
        objective=float(np.sum(A * Zv)),
        n_iter=int(prob.solver_stats.num_iters or 0),
        converged=prob.status == "optimal",
        info={"status": prob.status, "solve_time": prob.solver_stats.solve_time},
        Z=Zv,
    )


def round_eigen(Z: np.ndarray, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """K-means on the rows of the top-K eigenvectors of Z scaled by sqrt(eigenvalue)."""
    w, V = np.linalg.eigh(Z)
    w, V = w[::-1][:n_clusters], V[:, ::-1][:, :n_clusters]
    return lloyd(V * np.sqrt(np.maximum(w, 0)), n_clusters, seed=seed)


def estimate_gaussians(
    X: np.ndarray, memberships: np.ndarray, *, reg: float = 1e-4, shrinkage: float | str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regularised Gaussian parameters from soft memberships (what ila_sdp does between rounds).

    Args:
        X: [n, p] float64 data.
        memberships: [n, K] nonnegative weights, rows summing to 1.
        reg: ridge added to every covariance, relative to the average variance of X (tr Cov(X) / p), so that a
            small, degenerate or empty cluster never yields a singular matrix.
        shrinkage: gamma in (1 - gamma) S_k + gamma (tr S_k / p) I; "auto" uses gamma_k = p / (n_k + p).

    Returns:
        means [K, p], covariances [K, p, p], weights [K] (floored at 1e-3 / K, renormalised).

    An empty cluster (total membership below 1e-9 n) gets the global mean and covariance.
    """
    n, p = X.shape
    K = memberships.shape[1]
    mu0 = X.mean(0)
    Xc0 = X - mu0
    tot = Xc0.T @ Xc0 / n
    avg_var = np.trace(tot) / p
    if not np.isfinite(avg_var) or avg_var <= 0:
        avg_var = 1.0
    means = np.empty((K, p))
    covs = np.empty((K, p, p))
    nk = memberships.sum(0)
    for k in range(K):
        if nk[k] <= 1e-9 * n:
            means[k] = mu0
            S = tot.copy()
            n_eff = float(n)
        else:
            w = memberships[:, k]
            means[k] = w @ X / nk[k]
            D = X - means[k]
            S = (D * w[:, None]).T @ D / nk[k]
            n_eff = float(nk[k])
        gamma = p / (n_eff + p) if shrinkage == "auto" else float(shrinkage)
        S = (1 - gamma) * S + gamma * (np.trace(S) / p) * np.eye(p)
        covs[k] = (S + S.T) / 2 + reg * avg_var * np.eye(p)
    weights = np.maximum(nk / n, 1e-3 / K)
    return means, covs, weights / weights.sum()


def lasdp_coefficients(X: np.ndarray, covariances: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whitened data and linear terms of the LA-SDP.

    With Sigma_k = C_k C_k^T (Cholesky) and W_k = X C_k^{-T}: A_k = X Omega_k X^T = W_k W_k^T and
    c_k[i] = x_i^T Omega_k x_i + logdet Sigma_k - 2 log pi_k.

    Returns:
        W [K, n, p], c [K, n].
    """
    from scipy.linalg import solve_triangular

    K = covariances.shape[0]
    n, p = X.shape
    W = np.empty((K, n, p))
    c = np.empty((K, n))
    for k in range(K):
        C = np.linalg.cholesky(covariances[k])
        W[k] = solve_triangular(C, X.T, lower=True).T
        logdet = 2 * np.log(np.diag(C)).sum()
        c[k] = (W[k] ** 2).sum(1) + logdet - 2 * np.log(weights[k])
    return W, c


def lasdp(W: np.ndarray, c: np.ndarray, *, eps: float = 1e-9) -> tuple[float, np.ndarray]:
    """LA-SDP by cvxpy + SCS: min sum_k c_k^T Z_k 1 - <W_k W_k^T, Z_k> s.t. Z_k PSD, Z_k >= 0, tr Z_k = 1,
    sum_k Z_k 1 = 1. Returns (objective, Z [K, n, n])."""
    import cvxpy as cp

    K, n, _ = W.shape
    Zs = [cp.Variable((n, n), PSD=True) for _ in range(K)]
    obj = 0
    for k in range(K):
        A = W[k] @ W[k].T
        obj = obj + c[k] @ cp.sum(Zs[k], axis=1) - cp.trace(A @ Zs[k])
    cons = [z >= 0 for z in Zs] + [cp.trace(z) == 1 for z in Zs]
    cons.append(sum(cp.sum(z, axis=1) for z in Zs) == 1)
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver=cp.SCS, eps_abs=eps, eps_rel=eps, max_iters=200000)
    values = [np.asarray(z.value) for z in Zs]
    return float(prob.value), np.array([(v + v.T) / 2 for v in values])


def ila_sdp(
    X: Any,
    n_clusters: int,
    *,
    max_rounds: int = 20,
    reg: float = 1e-4,
    shrinkage: float | str = "auto",
    init: Any = None,
    seed: int | None = None,
    soft_memberships: bool = True,
    **ignored: Any,
) -> SDPResult:
    """iLA-SDP with every LA-SDP solved exactly by cvxpy + SCS (tiny n only). Same rounds as ``loglik.ila_sdp``:
    start from the K-means SDP partition (or ``init`` labels), re-estimate regularised Gaussians from the
    memberships w_ik = (Z_k 1)_i, solve the LA-SDP, label by argmax_k w_ik, stop when labels repeat."""
    X = _as_float64(X)
    X = X - X.mean(0)
    n, _ = X.shape
    K = n_clusters
    labels = kmeans_sdp(X, K, seed=seed).labels if init is None else np.asarray(init, dtype=np.int64)
    M = np.eye(K)[labels]
    history = []
    converged = False
    objective = np.nan
    means = covs = weights = None
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        means, covs, weights = estimate_gaussians(X, M, reg=reg, shrinkage=shrinkage)
        W, c = lasdp_coefficients(X, covs, weights)
        val, Z = lasdp(W, c)
        objective = 0.5 * val + 0.5 * n * X.shape[1] * np.log(2 * np.pi)
        soft = np.clip(Z.sum(2).T, 0, None)
        soft /= np.maximum(soft.sum(1, keepdims=True), 1e-300)
        new = soft.argmax(1).astype(np.int64)
        M = soft if soft_memberships else np.eye(K)[new]
        history.append({"round": rounds, "objective": objective, "changed": int((new != labels).sum())})
        if np.array_equal(new, labels):
            labels = new
            converged = True
            break
        labels = new
    return SDPResult(
        labels, float(objective), rounds, converged, {"history": history}, None, None, means, covs, weights
    )
