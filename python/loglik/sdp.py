"""Semidefinite programs for clustering: the Peng-Wei K-means SDP (``kmeans_sdp``) and the iterative
likelihood-adjusted SDP for Gaussian mixtures with cluster-specific covariances (``ila_sdp``).

Validation happens here; the solve loops run in C++ (``loglik._C.sdp_bm_solve``, ``sdp_admm``,
``sdp_round_kmeans``). Pure cvxpy/numpy twins live in :mod:`loglik.reference.sdp`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import _backend
from ._checks import as_float_array, check_bool, check_choice, check_int, check_positive, to_numpy
from .reference.sdp import SDPResult, estimate_gaussians, lasdp_coefficients

__all__ = ["SDPResult", "kmeans_sdp", "ila_sdp"]

_INT_MAX = 2**31 - 1  # iteration counts are C ints in the compiled core (larger ones were pybind TypeErrors)


def _prepare(X: Any, n_clusters: Any) -> tuple[np.ndarray, int, float]:
    """Centred float64 copy of X divided by its largest magnitude (so squares never overflow), K, and that scale."""
    Xa = as_float_array(X, "X", ndim=2)
    n, p = Xa.shape
    if p < 1:
        raise ValueError(f"X: expected at least one column, got shape {Xa.shape}")
    K = check_int(n_clusters, "n_clusters", low=1)
    if K > n:
        raise ValueError(f"n_clusters: expected at most n = {n} (the number of points), got {K}")
    Xc = Xa.astype(np.float64)  # a copy: the caller's array is never modified
    Xc -= Xc.mean(0)
    m = float(np.abs(Xc).max()) if Xc.size else 0.0
    if m > 1e150:
        raise ValueError(f"X: centred values up to {m:.3g} overflow float64 when squared; rescale X")
    if m > 0:
        Xc /= m
    return Xc, K, m if m > 0 else 1.0


def _check_seed(seed: Any) -> int:
    """0 for None, else an int >= 0 (reduced modulo 2^64 when passed to the compiled core, see _round_rows)."""
    return 0 if seed is None else check_int(seed, "seed", low=0)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel so clusters are numbered in order of first appearance (makes results comparable)."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    remap = np.empty(labels.max() + 1, dtype=np.int64)
    remap[np.unique(labels)[order]] = np.arange(len(order))
    return remap[labels].astype(np.int64)


def _round_rows(Y: np.ndarray, K: int, seed: int, n_init: int) -> np.ndarray:
    Yc = np.ascontiguousarray(Y, dtype=np.float64)
    labels, _ = _backend.C().sdp_round_kmeans(Yc, K, n_init=n_init, seed=seed % 2**64)  # a uint64 in C++
    return _canonical(np.asarray(labels))


def _membership_factor(labels: np.ndarray, K: int, r: int, seed: int) -> np.ndarray:
    """U0 [n, r]: scaled cluster indicators in the first K columns plus small positive noise everywhere."""
    n = labels.shape[0]
    U = np.zeros((n, r))
    counts = np.bincount(labels, minlength=K)
    for k in range(min(K, r)):
        if counts[k] > 0:
            U[labels == k, k] = 1.0 / np.sqrt(counts[k])
    rng = np.random.default_rng(seed)
    U += rng.random((n, r)) * (0.05 / np.sqrt(max(1.0, n / K)))
    return U


def kmeans_sdp(
    X: Any,
    n_clusters: int,
    *,
    solver: str = "lowrank",
    rank: int | None = None,
    max_iter: int | None = None,
    tol: float = 1e-6,
    seed: int | None = None,
    verbose: bool = False,
    init: str = "random",
    max_rank: int | None = None,
    kkt_tol: float = 1e-3,
    n_init: int = 10,
    max_n_admm: int = 4000,
) -> SDPResult:
    """Peng-Wei K-means SDP: maximise <X_c X_c^T, Z> s.t. Z PSD, Z >= 0, Z 1 = 1, tr Z = K.

    X is centred first (the program is translation invariant). Two solvers, both in C++:

    * ``"lowrank"``: Burer-Monteiro with a nonnegative factor, Z = U U^T, U >= 0 [n, r]. Augmented Lagrangian on
      U U^T 1 = 1, projection for U >= 0 and ||U||_F^2 = K, projected-gradient inner solver with Barzilai-Borwein
      steps and non-monotone backtracking, penalty raised only while the violation stalls. Never forms an n x n
      matrix: A U = X (X^T U), O(n p r) per step. U >= 0 is stronger than Z >= 0, so this solves the SDP exactly
      when its optimum has a nonnegative factor of rank <= r (e.g. exact recovery, Z = block indicators); in
      partial-recovery regimes its value can sit slightly (1e-4 relative in our tests) below the SDP optimum.
      Started from a K-means partition (``init="kmeans"``) or uniform noise (``init="random"``).
    * ``"admm"``: ADMM on the full n x n matrix (memory O(n^2), time O(n^3) per iteration; small n), splitting
      {PSD, Z 1 = 1, tr Z = K} (projection by a partial eigendecomposition) from Z >= 0 with adaptive penalty.
      Certifies the optimum: ``info["dual_bound"]`` is an upper bound on the SDP value built from the dual
      multiplier of the splitting, ``info["gap"]`` the relative gap to the returned Z.

    Labels are rounded by K-means (k-means++, ``n_init`` restarts, deterministic given ``seed``) on the rows of U
    (lowrank) or of the top-K eigenvectors of Z scaled by sqrt(eigenvalue) (admm).

    Args:
        X: [n, p] data, numpy array or torch tensor, float32 or float64 (computed in float64; never modified).
        n_clusters: K, 1 <= K <= n.
        solver: "lowrank" or "admm".
        rank: r, columns of U (lowrank); default min(n, 2K).
        max_iter: projected-gradient steps (lowrank, default 20000) or ADMM iterations (default 20000).
        tol: feasibility max_i |(Z 1)_i - 1| (lowrank); relative primal/dual residuals and duality gap (admm).
        seed: seed of the initial K-means, the noise in U0 and the rounding; None means 0 (deterministic).
        verbose: print solver progress to stderr.
        init: "kmeans" or "random" (lowrank).
        n_init: K-means restarts for the initial partition and for rounding.
        max_n_admm: refuse solver="admm" above this n (it needs ~6 n^2 doubles of memory).
        max_rank: lowrank rank escalation: after solving at ``rank``, add one column at a time (up to max_rank)
            while the objective still rises by more than tol (relative). Default: no escalation.
        kkt_tol: relative KKT residual of the low-rank subproblem at which it stops. The objective is typically
            within ~1e-4 relative of the optimum at the default 1e-3; use 1e-6 for tighter solves (slower: the
            last digits converge sublinearly when rank Z* < rank).

    Returns:
        SDPResult: labels [n] int64, objective <X_c X_c^T, Z> in the units of X, n_iter, converged, info
        (feasibility, KKT residual, penalty, duality gap for admm, timings), Z [n, n] (admm) or U [n, r] (lowrank).

    Raises:
        ValueError: NaN/inf in X, X not 2-D, n_clusters outside [1, n], bad solver/rank/tol/max_iter.
        TypeError: non-numeric X or non-integer n_clusters.
    """
    solver = check_choice(solver, "solver", ("lowrank", "admm"))
    init = check_choice(init, "init", ("kmeans", "random"))
    verbose = check_bool(verbose, "verbose")
    Xn, K, m = _prepare(X, n_clusters)
    seed = _check_seed(seed)
    tol = check_positive(tol, "tol")
    n_init = check_int(n_init, "n_init", low=1, high=_INT_MAX)
    kkt_tol = check_positive(kkt_tol, "kkt_tol")
    max_iter = 20000 if max_iter is None else check_int(max_iter, "max_iter", low=1, high=_INT_MAX)
    n, p = Xn.shape
    t0 = time.perf_counter()
    if solver == "admm":
        max_n_admm = check_int(max_n_admm, "max_n_admm", low=1)
        if n > max_n_admm:
            raise ValueError(
                f"X: solver='admm' stores several n x n matrices and n = {n} > max_n_admm = {max_n_admm}; "
                "use solver='lowrank' or raise max_n_admm"
            )
        Z, cinfo = _backend.C().sdp_admm(Xn, K, max_iter=max_iter, tol=tol, tol_gap=tol, verbose=int(bool(verbose)))
        t1 = time.perf_counter()
        if K == 1:
            labels = np.zeros(n, dtype=np.int64)
        else:
            from scipy.linalg import eigh

            w, V = eigh(Z, subset_by_index=[n - K, n - 1])
            labels = _round_rows(V * np.sqrt(np.maximum(w, 0)), K, seed, n_init)
        info = dict(cinfo)
        sc = m * m
        info["objective"] = cinfo["objective"] * sc
        info["dual_bound"] = cinfo["dual_bound"] * sc
        info["solve_seconds"] = t1 - t0
        info["round_seconds"] = time.perf_counter() - t1
        info["solver"] = "admm"
        return SDPResult(labels, float(info["objective"]), int(info["n_iter"]), bool(info["converged"]), info, Z=Z)

    r = min(n, 2 * K) if rank is None else check_int(rank, "rank", low=1, high=n)
    if K == 1:  # the feasible set is the single point Z = J / n
        U1 = np.full((n, 1), 1.0 / np.sqrt(n))
        val = float(((Xn.T @ U1) ** 2).sum()) * m * m
        info1 = {"objective": val, "feas_inf": float(np.abs(U1 @ U1.sum(0) - 1).max()), "kkt": 0.0, "rank": 1}
        return SDPResult(np.zeros(n, dtype=np.int64), val, 0, True, info1, U=U1)
    if max_rank is None:
        r_max = r
    else:
        r_max = check_int(max_rank, "max_rank", low=r, high=n)
    s = float((Xn**2).sum() / n)
    if s <= 0:  # every point identical: any feasible Z is optimal, value 0
        s = 1.0
    W = np.ascontiguousarray((Xn / np.sqrt(s))[None])
    rng = np.random.default_rng(seed)
    if init == "kmeans" and K > 1:
        lab0 = _round_rows(Xn, K, seed, n_init)
        U0 = _membership_factor(lab0, K, r, seed)
    else:
        U0 = rng.random((n, r))
    t_init = time.perf_counter()
    solve = _backend.C().sdp_bm_solve
    trace = np.array([float(K)])
    U, y, cinfo = solve(
        W, None, trace, U0[None], np.zeros(n), max_iter=max_iter, tol=tol, tol_kkt=kkt_tol, verbose=int(bool(verbose))
    )
    stages = [{"rank": r, "n_iter": cinfo["n_iter"], "objective": -cinfo["objective"], "accepted": True}]
    total_iter = int(cinfo["n_iter"])
    # The augmented Lagrangian has spurious infeasible stationary points (all mass on a few rows, seen for tiny n
    # with K close to n). Restart from fresh points when the solve ends far from feasible; keep the best.
    restarts = 0
    while cinfo["feas_inf"] > max(100 * tol, 1e-4) and restarts < 3 and total_iter < max_iter:
        restarts += 1
        if restarts == 1 and K > 1:
            U0 = _membership_factor(_round_rows(Xn, K, seed + restarts, n_init), K, r, seed + restarts)
        else:
            U0 = rng.random((n, r))
        U2, y2, c2 = solve(
            W,
            None,
            trace,
            U0[None],
            np.zeros(n),
            max_iter=max_iter - total_iter,
            tol=tol,
            tol_kkt=kkt_tol,
            verbose=int(bool(verbose)),
        )
        total_iter += int(c2["n_iter"])
        stages.append({"rank": r, "n_iter": c2["n_iter"], "objective": -c2["objective"], "accepted": True})
        if c2["feas_inf"] < cinfo["feas_inf"]:
            U, y, cinfo = U2, y2, c2
    # Rank escalation: the exactly parametrised problem (r = rank Z*) converges linearly while an over-parametrised
    # one crawls, so start at r = K and add one column at a time while it still raises the objective.
    while r < r_max and total_iter < max_iter:
        budget = min(max_iter - total_iter, max(2000, max_iter // 10))
        col = rng.random((n, 1)) * (1e-2 * np.sqrt(K / n))
        U_try = np.concatenate([np.asarray(U)[0], col], axis=1)[None]
        U2, y2, c2 = solve(
            W,
            None,
            trace,
            U_try,
            y,
            sigma=cinfo["sigma"],
            max_iter=budget,
            tol=tol,
            tol_kkt=kkt_tol,
            verbose=int(bool(verbose)),
        )
        total_iter += int(c2["n_iter"])
        f1, f2 = cinfo["objective"], c2["objective"]
        feasible = c2["feas_inf"] <= max(10 * tol, cinfo["feas_inf"])
        better = feasible and f2 < f1 - tol * max(1.0, abs(f1))
        stages.append({"rank": r + 1, "n_iter": c2["n_iter"], "objective": -f2, "accepted": bool(better)})
        if not better:
            break
        U, y, cinfo, r = U2, y2, c2, r + 1
    cinfo = dict(cinfo)
    cinfo["n_iter"] = total_iter
    t1 = time.perf_counter()
    U = np.asarray(U)[0]
    labels = np.zeros(n, dtype=np.int64) if K == 1 else _round_rows(U, K, seed, n_init)
    info = dict(cinfo)
    info["objective"] = -cinfo["objective"] * s * m * m
    info["multipliers"] = np.asarray(y) * s * m * m
    info["rank"] = r
    info["stages"] = stages
    info["restarts"] = restarts
    info["init_seconds"] = t_init - t0
    info["solve_seconds"] = t1 - t_init
    info["round_seconds"] = time.perf_counter() - t1
    info["solver"] = "lowrank"
    return SDPResult(labels, float(info["objective"]), int(info["n_iter"]), bool(info["converged"]), info, U=U)


def ila_sdp(
    X: Any,
    n_clusters: int,
    *,
    max_rounds: int = 20,
    reg: float = 1e-4,
    shrinkage: float | str = "auto",
    rank: int = 2,
    init: Any = None,
    max_iter: int = 20000,
    tol: float = 1e-6,
    seed: int | None = None,
    verbose: bool = False,
    soft_memberships: bool = True,
    warm_start: str = "multipliers",
    kkt_tol: float = 1e-6,
) -> SDPResult:
    """Iterative likelihood-adjusted SDP (iLA-SDP) for Gaussian mixtures with cluster-specific covariances.

    Working formulation. With Omega_k = Sigma_k^{-1}, A_k = X Omega_k X^T and
    c_k[i] = x_i^T Omega_k x_i + logdet Sigma_k - 2 log pi_k, the classification negative log-likelihood of a
    partition G_1..G_K (means profiled out) is 1/2 sum_k (c_k^T Z_k 1 - <A_k, Z_k>) + n p / 2 log(2 pi) with
    Z_k = 1_{G_k} 1_{G_k}^T / n_k. The LA-SDP relaxes Z_k to PSD, Z_k >= 0, tr Z_k = 1, sum_k Z_k 1 = 1 and is
    solved by the same nonnegative Burer-Monteiro augmented Lagrangian as ``kmeans_sdp`` (Z_k = U_k U_k^T,
    U_k >= 0 [n, rank], A_k U_k = W_k (W_k^T U_k) with W_k = X C_k^{-T}, O(K n p r) per step, never n x n).
    Rounds alternate: (1) regularised Gaussian re-estimation from the soft memberships w_ik = (Z_k 1)_i,
    (2) LA-SDP warm-started from the previous factors, multipliers and penalty, (3) labels = argmax_k w_ik;
    they start from the K-means SDP partition and stop when the labels repeat.

    Relation to the paper (Likelihood Adjusted Semidefinite Programs for Clustering Heterogeneous Data; we had its
    abstract only): the abstract describes exactly this lifting of the labels to group-specific membership
    matrices and alternating maximisation of the observed likelihood starting from the SDP. Where we may differ:
    (a) the LA-SDP is solved by a nonnegative low-rank factorisation (U_k >= 0), not an exact SDP solver, which
    is exact when each Z_k has such a factor (the block-indicator optimum has rank 1); (b) covariances are
    shrunk, (1 - g) S_k + g tr(S_k)/p I with g = p / (n_k + p) (``shrinkage="auto"``), plus a ridge
    ``reg * tr(Cov X)/p``, so a small, degenerate or empty cluster never gives a singular matrix (the unpenalised
    likelihood is unbounded there); (c) the mixing-weight term -2 log pi_k is included in c_k, with pi_k floored
    at 1e-3 / K; (d) an empty cluster takes the global mean and covariance.

    Args:
        X: [n, p] data, n >= 2, numpy or torch, float32 or float64 (computed in float64; never modified).
        n_clusters: K, 1 <= K <= n.
        max_rounds: maximum alternation rounds.
        reg: covariance ridge relative to the average variance of X.
        shrinkage: "auto" or a float in [0, 1] (see above).
        rank: columns r of each U_k, 1 <= r <= n.
        init: None (K-means SDP partition) or int labels [n] in 0..K-1 (clusters may be empty).
        max_iter: projected-gradient steps per LA-SDP solve.
        tol: feasibility tolerance of each LA-SDP solve (max_i |(sum_k Z_k 1)_i - 1|).
        kkt_tol: relative KKT tolerance of each LA-SDP solve.
        soft_memberships: re-estimate the Gaussians from w_ik = (Z_k 1)_i (True) or from the rounded labels.
        warm_start: what carries over between rounds: "multipliers" (the multipliers; factor restarts from noise,
            penalty from 1), "blend" (multipliers, penalty, half of the previous factor), "full" (everything), "none".
        seed: seed of the initial K-means SDP and factor noise; None means 0.
        verbose: tqdm progress bar over rounds.

    Returns:
        SDPResult: labels [n], objective (relaxed negative log-likelihood of the last LA-SDP, in nats), n_iter
        (rounds), converged (labels stopped changing), info (history: per-round objective, hard-partition NLL,
        changed labels, solver steps, feasibility, seconds), U [n, K * rank] (block k = U_k), means [K, p]
        (in the coordinates of X), covariances [K, p, p], weights [K].

    Raises:
        ValueError / TypeError naming the argument for bad input (NaN/inf, fewer than 2 rows in X, n_clusters
        outside [1, n], rank outside [1, n], bad init).
    """
    Xn, K, m = _prepare(X, n_clusters)
    n, p = Xn.shape
    if n < 2:
        # before the rank check: the default rank=2 > n would otherwise blame an argument the caller never set
        raise ValueError(f"X: ila_sdp needs n >= 2 samples (rows) to estimate covariances, got 1 sample ({Xn.shape})")
    max_rounds = check_int(max_rounds, "max_rounds", low=1)
    verbose = check_bool(verbose, "verbose")
    soft_memberships = check_bool(soft_memberships, "soft_memberships")
    reg = check_positive(reg, "reg")
    if isinstance(shrinkage, str):
        check_choice(shrinkage, "shrinkage", ("auto",))
    else:
        shrinkage = check_positive(shrinkage, "shrinkage", allow_zero=True)
        if shrinkage > 1:
            raise ValueError(f"shrinkage: expected 'auto' or a number in [0, 1], got {shrinkage}")
    r = check_int(rank, "rank", low=1, high=n)
    max_iter = check_int(max_iter, "max_iter", low=1, high=_INT_MAX)
    tol = check_positive(tol, "tol")
    kkt_tol = check_positive(kkt_tol, "kkt_tol")
    warm_start = check_choice(warm_start, "warm_start", ("multipliers", "blend", "full", "none"))
    seed = _check_seed(seed)
    Xraw = as_float_array(X, "X", ndim=2)
    mean_x = Xraw.astype(np.float64).mean(0)
    t_start = time.perf_counter()
    if init is None:
        labels = kmeans_sdp(Xn, K, seed=seed).labels
    else:
        labels = to_numpy(init, "init")
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"init: expected integer labels of shape ({n},), got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= K:
            raise ValueError(f"init: labels must lie in [0, {K - 1}]")
        labels = labels.astype(np.int64)
    memberships = np.eye(K)[labels]
    # U_k starts at the scaled indicator of cluster k (an empty cluster: spread over all points) plus noise
    U = np.random.default_rng(seed).random((K, n, r)) * (0.05 / np.sqrt(max(1.0, n / K)))
    counts = np.bincount(labels, minlength=K)
    for k in range(K):
        if counts[k] > 0:
            U[k][labels == k, 0] += 1.0 / np.sqrt(counts[k])
        else:
            U[k][:, 0] += 1.0 / np.sqrt(n)
    y = np.zeros(n)
    sigma = 0.0
    s_prev = None
    history: list[dict[str, Any]] = []
    converged = False
    objective = float("nan")
    means = covs = weights = None
    from tqdm.auto import tqdm

    bar = tqdm(range(1, max_rounds + 1), desc="iLA-SDP", disable=not verbose, leave=False)
    rounds = 0
    for rounds in bar:
        t0 = time.perf_counter()
        means, covs, weights = estimate_gaussians(Xn, memberships, reg=reg, shrinkage=shrinkage)
        Wk, c = lasdp_coefficients(Xn, covs, weights)
        s = float(np.mean((Wk**2).sum(2)))
        if not np.isfinite(s) or s <= 0:
            s = 1.0
        if s_prev is not None:
            y *= s_prev / s
        if rounds > 1 and warm_start != "full":
            # a warm-started nonnegative factor tends to stay in the previous partition's basin: restart U from
            # noise (blended with the previous factor for "blend") and keep the multipliers and penalty
            fresh = np.random.default_rng(seed + rounds).random((K, n, r))
            fresh *= np.sqrt(1.0 / (fresh**2).sum((1, 2)))[:, None, None]
            U = fresh if warm_start == "multipliers" else 0.5 * (U + fresh)
            if warm_start != "blend":
                sigma = 0.0  # a large penalty from the last round makes the fresh factor's subproblem ill-conditioned
            if warm_start == "none":
                y = np.zeros(n)
        U, y, cinfo = _backend.C().sdp_bm_solve(
            np.ascontiguousarray(Wk / np.sqrt(s)),
            np.ascontiguousarray(c / s),
            np.ones(K),
            U,
            y,
            sigma=sigma,
            max_iter=max_iter,
            tol=tol,
            tol_kkt=kkt_tol,
        )
        U, y = np.asarray(U), np.asarray(y)
        sigma = float(cinfo["sigma"])
        s_prev = s
        soft = np.clip(np.einsum("knr,kr->nk", U, U.sum(1)), 0, None)
        soft /= np.maximum(soft.sum(1, keepdims=True), 1e-300)
        new = soft.argmax(1).astype(np.int64)  # block k is cluster k in every round: no relabelling
        memberships = soft if soft_memberships else np.eye(K)[new]
        # objective in nats, in the units of X (the 1/m scaling shifts logdet by 2 p log m per point)
        objective = 0.5 * cinfo["objective"] * s + 0.5 * n * p * np.log(2 * np.pi) + n * p * np.log(m)
        nll = _hard_nll(Xn, new, means, covs, weights) + n * p * np.log(m)
        changed = int((new != labels).sum())
        history.append(
            {
                "round": rounds,
                "objective": float(objective),
                "nll": float(nll),
                "changed": changed,
                "n_iter": int(cinfo["n_iter"]),
                "feas_inf": float(cinfo["feas_inf"]),
                "kkt": float(cinfo["kkt"]),
                "solver_converged": bool(cinfo["converged"]),
                "seconds": time.perf_counter() - t0,
            }
        )
        bar.set_postfix(objective=f"{objective:.6g}", changed=changed)
        labels = new
        prev_obj = history[-2]["objective"] if len(history) > 1 else np.inf
        if changed == 0 and abs(objective - prev_obj) <= 1e-3 * max(1.0, abs(objective)):
            converged = True
            break
    bar.close()
    info = {
        "history": history,
        "seconds": time.perf_counter() - t_start,
        "nll": history[-1]["nll"] if history else float("nan"),
        "rank": r,
    }
    assert means is not None and covs is not None and weights is not None
    return SDPResult(
        labels=labels,
        objective=float(objective),
        n_iter=rounds,
        converged=converged,
        info=info,
        U=np.concatenate(list(U), axis=1),
        means=means * m + mean_x,
        covariances=covs * (m * m),
        weights=weights,
    )


def _hard_nll(X: np.ndarray, labels: np.ndarray, means: np.ndarray, covs: np.ndarray, weights: np.ndarray) -> float:
    """Classification negative log-likelihood -sum_i log(pi_{z_i} N(x_i | mu_{z_i}, Sigma_{z_i})) in nats."""
    n, p = X.shape
    total = 0.0
    for k in range(means.shape[0]):
        idx = labels == k
        if not idx.any():
            continue
        C = np.linalg.cholesky(covs[k])
        from scipy.linalg import solve_triangular

        Wd = solve_triangular(C, (X[idx] - means[k]).T, lower=True)
        total += 0.5 * float((Wd**2).sum()) + idx.sum() * (
            np.log(np.diag(C)).sum() + 0.5 * p * np.log(2 * np.pi) - np.log(weights[k])
        )
    return total
