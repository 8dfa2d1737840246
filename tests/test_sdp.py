"""kmeans_sdp and ila_sdp: against cvxpy + SCS (the reference twins), constraint and invariance properties, bad
input. cvxpy cases are kept small and few so the file stays fast."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import loglik
from loglik.reference import sdp as ref

cvxpy = pytest.importorskip("cvxpy")


def mixture(n: int, K: int, p: int, sep: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, p)) * sep
    labels = rng.integers(0, K, n)
    return centres[labels] + rng.normal(size=(n, p)), labels


def relerr(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


def check_kmeans_sdp_Z(Z: np.ndarray, K: int, tol: float = 1e-5) -> None:
    n = Z.shape[0]
    assert np.allclose(Z, Z.T, atol=1e-12)
    assert Z.min() >= -tol
    assert np.abs(Z.sum(1) - 1).max() <= tol
    assert abs(np.trace(Z) - K) <= tol * n
    assert np.linalg.eigvalsh(Z).min() >= -tol


def check_lowrank_U(U: np.ndarray, K: int, tol: float = 1e-5) -> None:
    assert U.min() >= 0
    assert abs((U**2).sum() - K) <= 1e-8 * K
    assert np.abs(U @ U.sum(0) - 1).max() <= tol


# ---------------------------------------------------------------------------------------------------------------
# against cvxpy + SCS
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scs_cases() -> dict[str, tuple[np.ndarray, int, ref.SDPResult]]:
    cases = {}
    for name, (n, K, p, sep, seed) in {
        "partial": (40, 3, 4, 1.5, 0),  # overlapping clusters: the SDP optimum is not a partition matrix
        "separated": (50, 2, 3, 3.0, 0),
        "n150": (150, 3, 5, 3.0, 0),
    }.items():
        X, _ = mixture(n, K, p, sep, seed)
        eps = 1e-8 if n <= 60 else 1e-7
        cases[name] = (X, K, ref.kmeans_sdp(X, K, eps=eps))
    return cases


@pytest.mark.parametrize("case", ["partial", "separated", "n150"])
def test_admm_matches_scs(scs_cases, case):
    X, K, R = scs_cases[case]
    res = loglik.kmeans_sdp(X, K, solver="admm", tol=1e-7)
    assert res.converged
    assert relerr(res.objective, R.objective) <= 1e-4
    check_kmeans_sdp_Z(res.Z, K, tol=1e-5)
    # the certificate: an upper bound within 1e-5 of the value, and the value is indeed below it
    assert res.info["gap"] <= 1e-5
    assert res.objective <= res.info["dual_bound"] * (1 + 1e-6)
    assert R.objective <= res.info["dual_bound"] * (1 + 1e-6)
    assert res.info["primal_res"] <= 1e-5 and res.info["dual_res"] <= 1e-5


@pytest.mark.parametrize("case", ["separated", "n150"])
def test_lowrank_matches_scs(scs_cases, case):
    X, K, R = scs_cases[case]
    res = loglik.kmeans_sdp(X, K, solver="lowrank", seed=0, kkt_tol=1e-6)
    assert relerr(res.objective, R.objective) <= 1e-4
    check_lowrank_U(res.U, K, tol=1e-5)
    assert res.Z is None and res.U.shape == (X.shape[0], 2 * K)
    # the value reported is the SDP objective of U U^T
    Xc = X - X.mean(0)
    assert relerr(res.objective, float(((Xc.T @ res.U) ** 2).sum())) <= 1e-8


def test_lowrank_below_sdp_in_partial_recovery(scs_cases):
    """U >= 0 restricts the SDP: in overlapping regimes the low-rank value is feasible, hence never above the
    SDP optimum, and close to it (documented limitation)."""
    X, K, R = scs_cases["partial"]
    res = loglik.kmeans_sdp(X, K, seed=0, kkt_tol=1e-6)
    assert res.objective <= R.objective * (1 + 1e-6)
    assert relerr(res.objective, R.objective) <= 1e-2


def test_labels_recover_separated_mixture():
    X, truth = mixture(300, 4, 6, 4.0, seed=3)
    for solver in ("lowrank", "admm"):
        res = loglik.kmeans_sdp(X, 4, solver=solver, seed=0)
        # same partition up to relabelling
        pairs = set(zip(res.labels.tolist(), truth.tolist(), strict=True))
        assert len(pairs) == 4, solver
        assert res.labels.dtype == np.int64


# ---------------------------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------------------------
small_problem = st.tuples(
    st.integers(6, 24),  # n
    st.integers(1, 4),  # p
    st.integers(1, 4),  # K
    st.integers(0, 2**16),  # seed
)


@given(small_problem)
def test_admm_constraints_property(prob):
    n, p, K, seed = prob
    K = min(K, n)
    X = np.random.default_rng(seed).normal(size=(n, p))
    res = loglik.kmeans_sdp(X, K, solver="admm", tol=1e-7)
    check_kmeans_sdp_Z(res.Z, K, tol=1e-5)
    assert res.info["gap"] <= 1e-5
    assert set(np.unique(res.labels)) <= set(range(K))


@given(small_problem)
def test_lowrank_constraints_property(prob):
    n, p, K, seed = prob
    K = min(K, n)
    X = np.random.default_rng(seed).normal(size=(n, p))
    res = loglik.kmeans_sdp(X, K, seed=seed)
    check_lowrank_U(res.U, K, tol=1e-5)
    Z = res.U @ res.U.T
    assert np.linalg.eigvalsh(Z).min() >= -1e-10 and Z.min() >= 0
    assert res.labels.shape == (n,) and res.labels.min() >= 0 and res.labels.max() < K


@given(st.integers(0, 2**16), st.sampled_from(["admm", "lowrank"]))
def test_permutation_and_translation_invariance(seed, solver):
    rng = np.random.default_rng(seed)
    X, _ = mixture(24, 2, 3, 3.0, seed)
    opts = {"solver": solver, "seed": 1, "kkt_tol": 1e-6}
    res = loglik.kmeans_sdp(X, 2, **opts)
    perm = rng.permutation(24)
    res_p = loglik.kmeans_sdp(X[perm], 2, **opts)
    shift = rng.normal(size=3) * 100
    res_t = loglik.kmeans_sdp(X + shift, 2, **opts)
    # lowrank: U0 is random and does not permute with the points, and the nonnegative factorisation has local
    # optima (documented), so its value agrees only to 1e-2 in the worst case; ADMM is exact
    tol = 1e-5 if solver == "admm" else 1e-2
    assert relerr(res_p.objective, res.objective) <= tol
    assert relerr(res_t.objective, res.objective) <= tol
    if solver == "admm":  # the optimum is unique here: Z permutes with the points
        assert np.abs(res_p.Z - res.Z[np.ix_(perm, perm)]).max() <= 1e-4
        assert np.abs(res_t.Z - res.Z).max() <= 1e-4
        # labels: the same partition (lowrank starts from a random U0 that does not permute with the points, so
        # only its value is invariant)
        same = res.labels[:, None] == res.labels[None, :]
        assert np.array_equal(res_p.labels[:, None] == res_p.labels[None, :], same[np.ix_(perm, perm)])
        assert np.array_equal(res_t.labels[:, None] == res_t.labels[None, :], same)


def test_float32_torch_and_determinism():
    torch = pytest.importorskip("torch")
    X, _ = mixture(80, 3, 4, 3.0, seed=5)
    r64 = loglik.kmeans_sdp(X, 3, seed=2)
    r32 = loglik.kmeans_sdp(X.astype(np.float32), 3, seed=2)
    rt = loglik.kmeans_sdp(torch.from_numpy(X.astype(np.float32)), 3, seed=2)
    again = loglik.kmeans_sdp(X, 3, seed=2)
    assert np.array_equal(r64.labels, again.labels) and r64.objective == again.objective
    assert np.array_equal(r32.labels, rt.labels)
    assert relerr(r32.objective, r64.objective) <= 1e-5
    X0 = X.copy()
    loglik.kmeans_sdp(X, 3, solver="admm")
    assert np.array_equal(X, X0)  # input untouched


def test_rounding_reference_agrees():
    """The compiled K-means rounding and the numpy reference find the same partition on separated rows."""
    X, _ = mixture(120, 3, 2, 6.0, seed=1)
    res = loglik.kmeans_sdp(X, 3, solver="admm")
    lab_ref = ref.round_eigen(res.Z, 3, seed=0)
    same = res.labels[:, None] == res.labels[None, :]
    assert np.array_equal(lab_ref[:, None] == lab_ref[None, :], same)


def test_rank_escalation_and_k1():
    X, _ = mixture(60, 3, 4, 3.0, seed=2)
    res = loglik.kmeans_sdp(X, 3, rank=3, max_rank=5, init="kmeans", seed=0)
    assert res.info["stages"][0]["rank"] == 3 and res.U.shape[1] == res.info["rank"] <= 5
    check_lowrank_U(res.U, 3)
    for solver in ("lowrank", "admm"):
        one = loglik.kmeans_sdp(X, 1, solver=solver)
        assert np.all(one.labels == 0) and abs(one.objective) <= 1e-8 * np.sum(X**2)


# ---------------------------------------------------------------------------------------------------------------
# bad and degenerate input
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [loglik.kmeans_sdp, loglik.ila_sdp])
def test_bad_input(fn):
    X, _ = mixture(20, 2, 3, 3.0)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match="X"):
            fn(Xb, 2)
    with pytest.raises(ValueError, match="n_clusters"):
        fn(X, 21)
    with pytest.raises(ValueError, match="n_clusters"):
        fn(X, 0)
    with pytest.raises(TypeError, match="n_clusters"):
        fn(X, 2.5)
    with pytest.raises(ValueError, match="X"):
        fn(X[:, 0], 2)
    with pytest.raises(TypeError, match="X"):
        fn(np.array([["a", "b"], ["c", "d"]]), 1)
    with pytest.raises(ValueError, match="seed"):
        fn(X, 2, seed=-1)
    with pytest.raises(ValueError, match="overflow"):
        fn(X * 1e200, 2)


def test_bad_options():
    X, _ = mixture(20, 2, 3, 3.0)
    with pytest.raises(ValueError, match="solver"):
        loglik.kmeans_sdp(X, 2, solver="scs")
    with pytest.raises(ValueError, match="rank"):
        loglik.kmeans_sdp(X, 2, rank=0)
    with pytest.raises(ValueError, match="tol"):
        loglik.kmeans_sdp(X, 2, tol=-1.0)
    with pytest.raises(ValueError, match="kkt_tol"):
        loglik.kmeans_sdp(X, 2, kkt_tol=0.0)
    with pytest.raises(ValueError, match="max_n_admm"):
        loglik.kmeans_sdp(X, 2, solver="admm", max_n_admm=10)
    with pytest.raises(ValueError, match="init"):
        loglik.ila_sdp(X, 2, init=np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="init"):
        loglik.ila_sdp(X, 2, init=np.full(20, 7))
    with pytest.raises(ValueError, match="shrinkage"):
        loglik.ila_sdp(X, 2, shrinkage=2.0)
    with pytest.raises(ValueError, match="reg"):
        loglik.ila_sdp(X, 2, reg=0.0)


@pytest.mark.parametrize("solver", ["lowrank", "admm"])
def test_degenerate_data(solver):
    X, truth = mixture(40, 2, 3, 5.0, seed=4)
    # a constant column changes nothing
    Xc = np.concatenate([X, np.full((40, 1), 3.0)], axis=1)
    a, b = loglik.kmeans_sdp(X, 2, solver=solver), loglik.kmeans_sdp(Xc, 2, solver=solver)
    assert relerr(a.objective, b.objective) <= 1e-5
    # duplicated points: finite, feasible
    Xd = np.concatenate([X, X[:10]])
    d = loglik.kmeans_sdp(Xd, 2, solver=solver)
    assert np.isfinite(d.objective) and d.labels.shape == (50,)
    # every point identical: value 0, finite labels, no NaN
    z = loglik.kmeans_sdp(np.ones((12, 3)), 3, solver=solver)
    assert z.objective == pytest.approx(0.0, abs=1e-12) and z.labels.shape == (12,)
    # n == K
    e = loglik.kmeans_sdp(X[:4], 4, solver=solver)
    assert sorted(e.labels.tolist()) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------
# iLA-SDP
# ---------------------------------------------------------------------------------------------------------------
def heterogeneous(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """K=2, p=4: N(0, diag(36, 1, 1, 1)) vs N(4 e_2, I) - the case where K-means cuts the elongated cluster."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 4))
    X[truth == 0, 0] *= 6.0
    X[truth == 1, 1] += 4.0
    return X, truth


def error(labels: np.ndarray, truth: np.ndarray) -> float:
    from itertools import permutations

    K = max(labels.max(), truth.max()) + 1
    return min(float(np.mean(np.array(p)[labels] != truth)) for p in permutations(range(K)))


def test_lasdp_solver_matches_scs():
    """One LA-SDP round: the compiled low-rank solver against cvxpy + SCS on the same coefficients."""
    X, truth = heterogeneous(30, seed=1)
    Xc = X - X.mean(0)
    M = np.eye(2)[truth]
    _, covs, w = ref.estimate_gaussians(Xc, M)
    W, c = ref.lasdp_coefficients(Xc, covs, w)
    val_ref, Zref = ref.lasdp(W, c)
    from loglik import _backend

    s = float(np.mean((W**2).sum(2)))
    U0 = np.random.default_rng(0).random((2, 30, 2))
    U, y, info = _backend.C().sdp_bm_solve(W / np.sqrt(s), c / s, np.ones(2), U0, np.zeros(30), tol=1e-7, tol_kkt=1e-7)
    U = np.asarray(U)
    assert info["feas_inf"] <= 1e-5
    assert relerr(info["objective"] * s, val_ref) <= 1e-4
    rowsum = sum(U[k] @ U[k].sum(0) for k in range(2))
    assert np.abs(rowsum - 1).max() <= 1e-5 and U.min() >= 0
    assert np.allclose([(U[k] ** 2).sum() for k in range(2)], 1.0)


def test_ila_sdp_matches_reference_rounds():
    """First round from the same partition: same Gaussians, same LA-SDP value, same labels."""
    X, truth = heterogeneous(24, seed=2)
    fast = loglik.ila_sdp(X, 2, init=truth, seed=0, max_rounds=1, kkt_tol=1e-7)
    slow = ref.ila_sdp(X, 2, init=truth, max_rounds=1)
    assert np.array_equal(fast.labels, slow.labels)
    assert relerr(fast.objective, slow.objective) <= 1e-5
    np.testing.assert_allclose(fast.covariances, slow.covariances, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.means, slow.means + X.mean(0), rtol=1e-10, atol=1e-12)


def test_ila_sdp_beats_kmeans_sdp_on_heterogeneous_data():
    X, truth = heterogeneous(200, seed=6)
    k = loglik.kmeans_sdp(X, 2, seed=0)
    ila = loglik.ila_sdp(X, 2, seed=0)
    assert error(ila.labels, truth) < error(k.labels, truth)
    assert error(ila.labels, truth) <= 0.05
    assert ila.means.shape == (2, 4) and ila.covariances.shape == (2, 4, 4) and ila.weights.shape == (2,)
    assert np.all(np.linalg.eigvalsh(ila.covariances) > 0)
    hist = ila.info["history"]
    assert len(hist) == ila.n_iter and all(np.isfinite(h["objective"]) for h in hist)
    assert ila.U.shape == (200, 2 * 2) and ila.U.min() >= 0


def test_ila_sdp_degenerate_and_float32(capsys):
    rng = np.random.default_rng(0)
    # a cluster on a line (singular covariance) in float32, another isotropic
    a = np.outer(rng.normal(size=30), [1.0, 2.0, -1.0]).astype(np.float32)
    b = (rng.normal(size=(30, 3)) + 6).astype(np.float32)
    X = np.concatenate([a, b])
    res = loglik.ila_sdp(X, 2, seed=0, verbose=True)
    assert np.isfinite(res.objective) and np.all(np.isfinite(res.covariances))
    assert np.all(np.linalg.eigvalsh(res.covariances) > 0)
    assert len(set(zip(res.labels.tolist(), [0] * 30 + [1] * 30, strict=True))) == 2
    assert "iLA-SDP" in capsys.readouterr().err  # tqdm bar when verbose
    # an empty cluster in the starting partition is regularised, not a crash
    init = np.zeros(60, dtype=np.int64)
    e = loglik.ila_sdp(X.astype(np.float64), 3, init=init, seed=0, max_rounds=3)
    assert np.isfinite(e.objective) and np.all(np.isfinite(e.covariances)) and e.labels.shape == (60,)
    # duplicate points and constant columns
    Xd = np.concatenate([X, X[:5], X[:5]]).astype(np.float64)
    Xd = np.concatenate([Xd, np.ones((70, 1))], axis=1)
    d = loglik.ila_sdp(Xd, 2, seed=0, max_rounds=4)
    assert np.isfinite(d.objective) and np.all(np.isfinite(d.means))
