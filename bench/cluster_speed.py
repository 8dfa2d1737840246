"""Speed half of ``loglik bench cluster``: the K-means SDP by loglik (low-rank and ADMM) against cvxpy + SCS.

Data: Gaussian mixtures with K = 5 clusters in p = 10 dimensions, centres ~ N(0, 1.5^2 I) and unit noise (well
but not perfectly separated; the SDP optimum is close to, not exactly, a partition matrix). Every case records the
objective <X_c X_c^T, Z>, its relative difference to SCS's, the constraint violation and, for ADMM, the certified
duality gap. SCS runs at its default accuracy (what a user gets from ``prob.solve(solver="SCS")``).

The large case (n = 100,000; quick: 10,000) is a single timed run of the low-rank solver with default settings; it
reports the residuals reached (feasibility, KKT) and the mis-clustering error against the generating labels.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np

from ._harness import Row, timed_row

SUITE = "cluster"
K, P, SEP = 5, 10, 1.5


def _mixture(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, P)) * SEP
    truth = rng.integers(0, K, n)
    return centres[truth] + rng.normal(size=(n, P)), truth


def _error(labels: np.ndarray, truth: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    C = np.zeros((K, K))
    np.add.at(C, (labels, truth), 1)
    r, c = linear_sum_assignment(-C)
    return float(1 - C[r, c].sum() / len(truth))


def _scs(X: np.ndarray) -> dict[str, Any]:
    import cvxpy as cp

    Xc = X - X.mean(0)
    n = Xc.shape[0]
    A = Xc @ Xc.T
    Z = cp.Variable((n, n), PSD=True)
    prob = cp.Problem(cp.Maximize(cp.trace(A @ Z)), [Z >= 0, cp.sum(Z, axis=1) == 1, cp.trace(Z) == K])
    prob.solve(solver=cp.SCS)
    Zv = np.asarray(Z.value)
    return {"objective": float(np.sum(A * Zv)), "status": prob.status, "nonneg_viol": float(max(0.0, -Zv.min()))}


def speed_rows(quick: bool) -> list[Row]:
    import loglik

    rows: list[Row] = []
    sizes = [100, 200] if quick else [200, 400, 800]
    scs_time: dict[int, float] = {}
    admm_time: dict[int, float] = {}
    for n in sizes:
        X, truth = _mixture(n)
        case = f"kmeans_sdp n={n} p={P} K={K}"
        row, lr = timed_row(SUITE, case, "loglik lowrank", partial(loglik.kmeans_sdp, X, K, seed=0), repeat=3)
        rows.append(row)
        # ADMM is O(n^3) per iteration: skip it when the previous size predicts more than a minute
        prev = max((m for m in admm_time if m < n), default=None)
        admm = row_a = None
        if prev is None or admm_time[prev] * (n / prev) ** 3 <= 60:
            row_a, admm = timed_row(
                SUITE, case, "loglik admm", partial(loglik.kmeans_sdp, X, K, solver="admm"), repeat=1, warmup=0
            )
            admm_time[n] = row_a.seconds or 0.0
            row_a.metrics = {
                "objective": admm.objective,
                "certified_gap": admm.info["gap"],
                "nonneg_viol": admm.info["nonneg_viol"],
                "iters": admm.n_iter,
                "error": _error(admm.labels, truth),
            }
            rows.append(row_a)
        else:
            rows.append(Row(SUITE, case, "loglik admm", metrics={"skipped": "predicted > 60 s from the smaller n"}))
        # SCS: skip a size whose cubic extrapolation from the previous one exceeds ~90 s
        prev = max((m for m in scs_time if m < n), default=None)
        predicted = scs_time[prev] * (n / prev) ** 3 if prev else 0.0
        scs = None
        if predicted <= 90:
            t0 = time.perf_counter()
            row_s, scs = timed_row(SUITE, case, "cvxpy+scs", partial(_scs, X), repeat=1, warmup=0)
            scs_time[n] = time.perf_counter() - t0
            row_s.metrics = {"objective": scs["objective"], "status": scs["status"], "nonneg_viol": scs["nonneg_viol"]}
            rows.append(row_s)
        else:
            rows.append(
                Row(SUITE, case, "cvxpy+scs", metrics={"skipped": f"predicted {predicted:.0f} s > 90 s (cubic)"})
            )
        row.metrics = {
            "objective": lr.objective,
            "rel_to_scs": (lr.objective - scs["objective"]) / abs(scs["objective"]) if scs else None,
            "rel_to_admm": (lr.objective - admm.objective) / abs(admm.objective) if admm else None,
            "feas_inf": lr.info["feas_inf"],
            "kkt": lr.info["kkt"],
            "iters": lr.n_iter,
            "error": _error(lr.labels, truth),
        }
        if row_a is not None and admm is not None and scs is not None:
            row_a.metrics["rel_to_scs"] = (admm.objective - scs["objective"]) / abs(scs["objective"])

    # large n: one timed run
    n = 10_000 if quick else 100_000
    X, truth = _mixture(n, seed=1)
    case = f"kmeans_sdp n={n} p={P} K={K}"

    def big() -> Any:
        return loglik.kmeans_sdp(X, K, seed=0)

    row, res = timed_row(SUITE, case, "loglik lowrank", big, repeat=1, warmup=0, max_seconds=600)
    row.metrics = {
        "objective": res.objective,
        "feas_inf": res.info["feas_inf"],
        "kkt": res.info["kkt"],
        "converged": res.converged,
        "iters": res.n_iter,
        "error": _error(res.labels, truth),
    }
    rows.append(row)
    return rows
