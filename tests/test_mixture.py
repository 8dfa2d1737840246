"""loglik.mixture (C++ kernels) against the numpy/torch twins in loglik.reference.mixture, scipy and scikit-learn:
gmm_logpdf, gmm_em, kmeans, misclustering_error; properties (hypothesis) and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import loglik
from loglik.reference import mixture as ref

# (dtype, rtol, atol) for log-densities compared with a float64 truth
TOL = {np.float64: (1e-10, 1e-10), np.float32: (1e-4, 2e-4)}


def _spd(rng: np.random.Generator, p: int, cond: float = 10.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    ev = np.exp(rng.uniform(0, np.log(cond), size=p))
    return (q * ev) @ q.T


def _mixture_params(rng: np.random.Generator, K: int, p: int, covariance: str):
    means = rng.normal(scale=3, size=(K, p))
    if covariance == "full":
        cov = np.stack([_spd(rng, p) for _ in range(K)])
    elif covariance == "diag":
        cov = rng.uniform(0.3, 3, size=(K, p))
    else:
        cov = rng.uniform(0.3, 3, size=K)
    w = rng.uniform(0.2, 1, size=K)
    return means, cov, w / w.sum()


def _full_cov(cov: np.ndarray, covariance: str, p: int) -> np.ndarray:
    if covariance == "full":
        return cov
    if covariance == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([c * np.eye(p) for c in cov])


def _scipy_logpdf(X, means, cov, w, covariance):
    p = X.shape[1]
    C = _full_cov(cov, covariance, p)
    comps = np.stack(
        [np.log(w[k]) + multivariate_normal(means[k], C[k]).logpdf(X).reshape(len(X)) for k in range(len(w))], 1
    )
    return logsumexp(comps, axis=1), np.exp(comps - logsumexp(comps, axis=1, keepdims=True))


def _blobs(rng, n_per=60, centers=((0, 0, 0), (8, 0, 0), (0, 8, 0)), scale=1.0):
    centers = np.asarray(centers, dtype=np.float64)
    X = np.concatenate([c + scale * rng.normal(size=(n_per, centers.shape[1])) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return X, y


# ---------------------------------------------------------------------------------------------------------------
# gmm_logpdf
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,p,K", [(37, 5, 3), (1, 1, 1), (203, 7, 4), (16, 2, 1)])
def test_gmm_logpdf_matches_scipy(covariance, dtype, n, p, K):
    rng = np.random.default_rng(n * 100 + p * 10 + K)
    means, cov, w = _mixture_params(rng, K, p, covariance)
    X = rng.normal(scale=3, size=(n, p))
    truth, truth_resp = _scipy_logpdf(X, means, cov, w, covariance)
    args = [a.astype(dtype) for a in (X, means, cov, w)]
    ld, resp = loglik.gmm_logpdf(*args, covariance=covariance, return_responsibilities=True)
    assert ld.dtype == dtype and ld.shape == (n,) and resp.shape == (n, K)
    rtol, atol = TOL[dtype]
    # float32: the kernel is compared with the error of the same computation done by the float32 reference
    np.testing.assert_allclose(ld, truth, rtol=rtol, atol=atol * max(1.0, np.abs(truth).max()))
    np.testing.assert_allclose(resp, truth_resp, atol=10 * atol)
    ref_ld = ref.gmm_logpdf(*args, covariance=covariance)
    assert np.abs(ld - truth).max() <= 4 * np.abs(ref_ld - truth).max() + atol


def test_gmm_logpdf_far_points_no_underflow():
    rng = np.random.default_rng(1)
    means, cov, w = _mixture_params(rng, 3, 4, "full")
    X = rng.normal(size=(10, 4)) * 1e3  # every component density underflows to 0 in float64
    ld, resp = loglik.gmm_logpdf(X, means, cov, w, return_responsibilities=True)
    assert np.isfinite(ld).all() and np.isfinite(resp).all()
    np.testing.assert_allclose(resp.sum(1), 1, rtol=1e-12)
    np.testing.assert_allclose(ld, _scipy_logpdf(X, means, cov, w, "full")[0], rtol=1e-10)


def test_gmm_logpdf_zero_weight_component():
    rng = np.random.default_rng(2)
    means, cov, _ = _mixture_params(rng, 3, 2, "diag")
    w = np.array([0.5, 0.0, 0.5])
    X = rng.normal(size=(20, 2))
    ld, resp = loglik.gmm_logpdf(X, means, cov, w, covariance="diag", return_responsibilities=True)
    assert (resp[:, 1] == 0).all() and np.isfinite(ld).all()
    np.testing.assert_allclose(ld, ref.gmm_logpdf(X, means, cov, w, covariance="diag"), rtol=1e-12)


def test_gmm_logpdf_does_not_modify_inputs():
    rng = np.random.default_rng(3)
    means, cov, w = _mixture_params(rng, 2, 3, "full")
    X = rng.normal(size=(9, 3))
    copies = [a.copy() for a in (X, means, cov, w)]
    loglik.gmm_logpdf(X, means, cov, w, return_responsibilities=True)
    for a, c in zip((X, means, cov, w), copies, strict=True):
        np.testing.assert_array_equal(a, c)


def test_gmm_logpdf_mixed_dtypes_promote():
    rng = np.random.default_rng(4)
    means, cov, w = _mixture_params(rng, 2, 3, "full")
    X = rng.normal(size=(9, 3)).astype(np.float32)
    assert loglik.gmm_logpdf(X, means, cov, w).dtype == np.float64
    assert loglik.gmm_logpdf(X, *(a.astype(np.float32) for a in (means, cov, w))).dtype == np.float32


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_gmm_logpdf_torch(covariance):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    means, cov, w = _mixture_params(rng, 3, 4, covariance)
    X = rng.normal(size=(21, 4))
    ld_np, resp_np = loglik.gmm_logpdf(X, means, cov, w, covariance=covariance, return_responsibilities=True)
    tX, tm, tc, tw = (torch.from_numpy(a) for a in (X, means, cov, w))
    ld, resp = loglik.gmm_logpdf(tX, tm, tc, tw, covariance=covariance, return_responsibilities=True)
    assert isinstance(ld, torch.Tensor) and ld.dtype == torch.float64
    np.testing.assert_allclose(ld.numpy(), ld_np, rtol=1e-12)
    np.testing.assert_allclose(resp.numpy(), resp_np, atol=1e-12)
    # with gradients: the differentiable torch twin, same values
    tXg = tX.clone().requires_grad_(True)
    ld_g = loglik.gmm_logpdf(tXg, tm, tc, tw, covariance=covariance)
    np.testing.assert_allclose(ld_g.detach().numpy(), ld_np, rtol=1e-10)
    ld_g.sum().backward()
    assert tXg.grad is not None and torch.isfinite(tXg.grad).all()


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_gmm_logpdf_grad_tensor_with_numpy_and_list_params(covariance):
    # Regression: a tensor that requires grad next to numpy parameters failed inside torch.promote_types.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    means, cov, w = _mixture_params(rng, 2, 3, covariance)
    Xn = rng.normal(size=(6, 3))
    want = loglik.gmm_logpdf(Xn, means, cov, w, covariance=covariance)
    X = torch.from_numpy(Xn.copy()).requires_grad_(True)
    got = loglik.gmm_logpdf(X, means, cov, w.tolist(), covariance=covariance)
    assert isinstance(got, torch.Tensor) and got.requires_grad
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-10)
    got.sum().backward()
    assert X.grad is not None and torch.isfinite(X.grad).all()
    M = torch.from_numpy(means.copy()).requires_grad_(True)
    got = loglik.gmm_logpdf(Xn, M, cov, w, covariance=covariance)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_gmm_logpdf_gradcheck(covariance):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    K, p = 2, 3
    means, cov, w = _mixture_params(rng, K, p, covariance)
    X = torch.from_numpy(rng.normal(size=(5, p))).requires_grad_(True)
    M = torch.from_numpy(means).requires_grad_(True)
    logits = torch.from_numpy(np.log(w)).requires_grad_(True)
    if covariance == "full":
        A = torch.from_numpy(np.linalg.cholesky(cov)).requires_grad_(True)

        def covs(a):  # a symmetric positive definite parametrisation, so gradcheck's perturbations stay valid
            return a @ a.transpose(-1, -2) + 0.1 * torch.eye(p, dtype=a.dtype)
    else:
        A = torch.from_numpy(np.log(cov)).requires_grad_(True)

        def covs(a):
            return a.exp()

    def f(X, M, A, logits):
        return loglik.gmm_logpdf(X, M, covs(A), logits.softmax(0), covariance=covariance)

    assert torch.autograd.gradcheck(f, (X, M, A, logits))


def test_gmm_logpdf_bad_input():
    rng = np.random.default_rng(7)
    means, cov, w = _mixture_params(rng, 2, 3, "full")
    X = rng.normal(size=(5, 3))
    bad = X.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="X"):
        loglik.gmm_logpdf(bad, means, cov, w)
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="X"):
        loglik.gmm_logpdf(bad, means, cov, w)
    with pytest.raises(ValueError, match="X"):
        loglik.gmm_logpdf(X[:, :2], means, cov, w)
    with pytest.raises(ValueError, match="covariances"):
        loglik.gmm_logpdf(X, means, cov[:, :2], w)
    not_pd = cov.copy()
    not_pd[1] = -np.eye(3)
    with pytest.raises(ValueError, match="covariances: component 1"):
        loglik.gmm_logpdf(X, means, not_pd, w)
    asym = cov.copy()
    asym[0, 0, 1] += 1
    with pytest.raises(ValueError, match="symmetric"):
        loglik.gmm_logpdf(X, means, asym, w)
    with pytest.raises(ValueError, match="covariances: component 0"):
        loglik.gmm_logpdf(X, means, np.array([[0.0, 1, 1], [1, 1, 1]]), w, covariance="diag")
    with pytest.raises(ValueError, match="weights"):
        loglik.gmm_logpdf(X, means, cov, np.array([0.7, 0.7]))
    with pytest.raises(ValueError, match="weights"):
        loglik.gmm_logpdf(X, means, cov, np.array([1.5, -0.5]))
    with pytest.raises(ValueError, match="covariance"):
        loglik.gmm_logpdf(X, means, cov, w, covariance="tied")
    with pytest.raises(TypeError, match="X"):
        loglik.gmm_logpdf(np.array([["a", "b", "c"]]), means, cov, w)
    with pytest.raises(ValueError, match="means"):
        loglik.gmm_logpdf(X, means[0], cov, w)


@given(
    seed=st.integers(0, 2**31 - 1),
    shift=st.floats(-50, 50),
    covariance=st.sampled_from(["full", "diag", "spherical"]),
)
def test_gmm_logpdf_properties(seed, shift, covariance):
    rng = np.random.default_rng(seed)
    K, p = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    means, cov, w = _mixture_params(rng, K, p, covariance)
    X = rng.normal(scale=3, size=(int(rng.integers(1, 30)), p))
    ld, resp = loglik.gmm_logpdf(X, means, cov, w, covariance=covariance, return_responsibilities=True)
    # responsibilities are probabilities
    np.testing.assert_allclose(resp.sum(1), 1.0, rtol=1e-12)
    assert (resp >= 0).all()
    # translation equivariance: moving points and means together changes nothing
    ld_t = loglik.gmm_logpdf(X + shift, means + shift, cov, w, covariance=covariance)
    np.testing.assert_allclose(ld_t, ld, rtol=1e-9, atol=1e-9)
    # permuting the components changes nothing but the order of the responsibilities
    perm = rng.permutation(K)
    ld_p, resp_p = loglik.gmm_logpdf(
        X, means[perm], cov[perm], w[perm], covariance=covariance, return_responsibilities=True
    )
    np.testing.assert_allclose(ld_p, ld, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(resp_p, resp[:, perm], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# kmeans
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_matches_sklearn_on_easy_data(dtype):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(10)
    X, y = _blobs(rng)
    X = (X + 100).astype(dtype)  # away from the origin: centring inside the kernel keeps float32 accurate
    res = loglik.kmeans(X, 3, n_init=3, seed=0)
    sk = KMeans(3, n_init=3, random_state=0).fit(X.astype(np.float64))
    assert res.labels.dtype == np.int64 and res.centers.dtype == dtype
    np.testing.assert_allclose(res.inertia, sk.inertia_, rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert loglik.misclustering_error(res.labels, y) == 0.0
    # labels, centres and inertia agree with each other
    d = ((X.astype(np.float64)[:, None] - res.centers.astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(res.labels, d.argmin(1))
    np.testing.assert_allclose(res.inertia, d.min(1).sum(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_matches_reference_from_same_init(dtype):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(157, 6)).astype(dtype)  # no structure: many Lloyd steps
    init = X[:5]
    res = loglik.kmeans(X, 5, init=init, tol=0)
    r = ref.kmeans(X, 5, init=init, tol=0)
    np.testing.assert_array_equal(res.labels, r.labels)
    np.testing.assert_allclose(res.centers, r.centers, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)
    np.testing.assert_allclose(res.inertia, r.inertia, rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert res.converged


def test_kmeans_empty_cluster_is_relocated():
    rng = np.random.default_rng(12)
    X, _ = _blobs(rng)
    init = np.array([[0.0, 0, 0], [8, 0, 0], [1e3, 1e3, 1e3]])  # the third centre attracts no point
    res = loglik.kmeans(X, 3, init=init)
    r = ref.kmeans(X, 3, init=init)
    assert res.n_relocated >= 1 and r.n_relocated >= 1
    assert np.isfinite(res.centers).all() and len(np.unique(res.labels)) == 3
    np.testing.assert_allclose(res.inertia, r.inertia, rtol=1e-10)


def test_kmeans_degenerate_data():
    # duplicate points: fewer distinct points than clusters -> some clusters stay empty, no NaN, no hang
    X = np.ones((10, 3))
    res = loglik.kmeans(X, 3, seed=0)
    assert res.inertia == 0 and np.isfinite(res.centers).all()
    assert ((res.labels >= 0) & (res.labels < 3)).all()
    # a constant column is harmless
    rng = np.random.default_rng(13)
    X, y = _blobs(rng)
    X[:, 2] = 5.0
    res = loglik.kmeans(X, 3, seed=1)
    assert np.isfinite(res.inertia) and np.allclose(res.centers[:, 2], 5.0)
    # K = 1 and K = n
    assert loglik.kmeans(X, 1).labels.max() == 0
    small = rng.normal(size=(4, 2))
    assert loglik.kmeans(small, 4, seed=0).inertia == pytest.approx(0.0, abs=1e-12)


def test_kmeans_seeded_and_n_init():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(300, 4))
    a = loglik.kmeans(X, 6, seed=3)
    b = loglik.kmeans(X, 6, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    # the first of n_init runs uses the same seed stream, so more restarts can only help
    assert loglik.kmeans(X, 6, seed=3, n_init=8).inertia <= a.inertia + 1e-9


def test_kmeans_torch_input():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    X, y = _blobs(rng)
    res = loglik.kmeans(torch.from_numpy(X).float(), 3, seed=0)
    assert res.centers.dtype == np.float32 and loglik.misclustering_error(res.labels, y) == 0.0


@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-1e3, 1e3), dtype=st.sampled_from([np.float64, np.float32]))
def test_kmeans_and_em_equivariance(seed, shift, dtype):
    """From given initial centres: translating X translates the centres/means and keeps the labels; permuting
    the points permutes the labels."""
    rng = np.random.default_rng(seed)
    X, _ = _blobs(rng, n_per=15)
    X = X.astype(dtype)
    init = X[[0, 15, 30]]
    perm = rng.permutation(len(X))
    tol = 1e-3 if dtype == np.float32 else 1e-8
    a = loglik.kmeans(X, 3, init=init)
    b = loglik.kmeans(X + dtype(shift), 3, init=init + dtype(shift))
    c = loglik.kmeans(X[perm], 3, init=init)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(b.centers - dtype(shift), a.centers, atol=tol * (1 + abs(shift)))
    np.testing.assert_array_equal(c.labels, a.labels[perm])
    e = loglik.gmm_em(X, 3, "diag", init=init)
    f = loglik.gmm_em(X + dtype(shift), 3, "diag", init=init + dtype(shift))
    g = loglik.gmm_em(X[perm], 3, "diag", init=init)
    np.testing.assert_array_equal(e.labels, f.labels)
    np.testing.assert_allclose(f.means - dtype(shift), e.means, atol=tol * (1 + abs(shift)))
    np.testing.assert_array_equal(g.labels, e.labels[perm])
    assert f.log_likelihood == pytest.approx(e.log_likelihood, rel=tol, abs=tol)


def test_kmeans_bad_input():
    X = np.random.default_rng(16).normal(size=(10, 2))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X"):
        loglik.kmeans(bad, 2)
    bad[0, 0] = -np.inf
    with pytest.raises(ValueError, match="X"):
        loglik.kmeans(bad, 2)
    with pytest.raises(ValueError, match="n_clusters"):
        loglik.kmeans(X, 11)
    with pytest.raises(ValueError, match="n_clusters"):
        loglik.kmeans(X, 0)
    with pytest.raises(TypeError, match="n_clusters"):
        loglik.kmeans(X, 2.5)
    with pytest.raises(ValueError, match="X"):
        loglik.kmeans(X[:, 0], 2)
    with pytest.raises(ValueError, match="X"):
        loglik.kmeans(np.zeros((0, 2)), 1)
    with pytest.raises(ValueError, match="n_init"):
        loglik.kmeans(X, 2, n_init=0)
    with pytest.raises(ValueError, match="tol"):
        loglik.kmeans(X, 2, tol=-1)
    with pytest.raises(ValueError, match="seed"):
        loglik.kmeans(X, 2, seed=-1)
    with pytest.raises(ValueError, match="init"):
        loglik.kmeans(X, 2, init=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="init"):
        loglik.kmeans(X, 2, init="random-ish")


# ---------------------------------------------------------------------------------------------------------------
# gmm_em
# ---------------------------------------------------------------------------------------------------------------


def _hetero(rng, n=300):
    """K=3: one elongated, one tight, one wide cluster in 2-D."""
    a = rng.normal(size=(n // 3, 2)) * [6.0, 0.3]
    b = rng.normal(size=(n // 3, 2)) * 0.3 + [0, 4]
    c = rng.normal(size=(n - 2 * (n // 3), 2)) * 1.5 + [0, -6]
    return np.concatenate([a, b, c]), np.repeat([0, 1, 2], [n // 3, n // 3, n - 2 * (n // 3)])


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gmm_em_matches_reference_from_same_init(covariance, dtype):
    rng = np.random.default_rng(20)
    X, y = _hetero(rng)
    X = X.astype(dtype)
    init = X[[0, 150, 299]]
    res = loglik.gmm_em(X, 3, covariance, init=init, tol=0, max_iter=25)
    r = ref.gmm_em(X, 3, covariance, init=init, tol=0, max_iter=25)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    assert res.means.dtype == dtype and res.labels.dtype == np.int64
    np.testing.assert_allclose(res.history, r.history, rtol=tol, atol=tol)
    np.testing.assert_allclose(res.means, r.means, rtol=100 * tol, atol=100 * tol)
    np.testing.assert_allclose(res.covariances, r.covariances, rtol=100 * tol, atol=100 * tol)
    np.testing.assert_allclose(res.weights, r.weights, rtol=100 * tol, atol=100 * tol)
    assert (res.labels == r.labels).mean() > 0.99
    # the returned parameters reproduce the reported log-likelihood and responsibilities
    ld, resp = loglik.gmm_logpdf(
        X, res.means, res.covariances, res.weights, covariance=covariance, return_responsibilities=True
    )
    assert float(ld.astype(np.float64).mean()) == pytest.approx(res.log_likelihood, rel=tol, abs=tol)
    np.testing.assert_allclose(resp, res.responsibilities, atol=10 * tol)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
@pytest.mark.parametrize("init", ["kmeans++", "random", "kmeans"])
def test_gmm_em_log_likelihood_is_monotone(covariance, init):
    rng = np.random.default_rng(21)
    X, _ = _hetero(rng, 240)
    res = loglik.gmm_em(X, 3, covariance, init=init, seed=0, tol=1e-10, max_iter=200)
    h = res.history
    assert len(h) == res.n_iter >= 2 and np.isfinite(h).all()
    assert (np.diff(h) >= -1e-9 * np.abs(h[1:])).all(), np.diff(h).min()
    np.testing.assert_allclose(res.weights.sum(), 1, rtol=1e-12)
    np.testing.assert_allclose(res.responsibilities.sum(1), 1, rtol=1e-12)


def test_gmm_em_separates_heterogeneous_clusters_and_restarts_help():
    rng = np.random.default_rng(22)
    X, y = _hetero(rng)
    one = loglik.gmm_em(X, 3, seed=5)
    many = loglik.gmm_em(X, 3, seed=5, n_init=10)
    assert many.log_likelihood >= one.log_likelihood - 1e-12
    assert loglik.misclustering_error(many.labels, y) < 0.05
    again = loglik.gmm_em(X, 3, seed=5, n_init=10)
    np.testing.assert_array_equal(again.labels, many.labels)


def test_gmm_em_compares_with_sklearn():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(23)
    X, y = _hetero(rng)
    res = loglik.gmm_em(X, 3, init="kmeans", seed=0, n_init=3, tol=1e-6)
    sk = GaussianMixture(3, n_init=3, random_state=0, tol=1e-6).fit(X)
    assert res.log_likelihood == pytest.approx(sk.score(X), abs=1e-4)


def test_gmm_em_empty_component_is_reseeded():
    rng = np.random.default_rng(24)
    X, _ = _hetero(rng)
    init = np.array([[0.0, 0], [0, 4], [1e4, 1e4]])  # no point is nearest to the third mean
    res = loglik.gmm_em(X, 3, init=init)
    assert res.info["n_reseeded"] == 1
    assert np.isfinite(res.means).all() and np.isfinite(res.log_likelihood)
    assert np.abs(res.means).max() < 100  # re-seeded at a data point, not left at 1e4


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_gmm_em_degenerate_data_never_nan(covariance):
    rng = np.random.default_rng(25)
    # a constant column
    X, _ = _hetero(rng)
    X = np.c_[X, np.full(len(X), 3.0)]
    res = loglik.gmm_em(X, 3, covariance, seed=0)
    assert np.isfinite(res.log_likelihood) and np.isfinite(res.covariances).all()
    # duplicate points: a whole cluster is one repeated point (its covariance is reg_covar)
    Y = np.r_[np.zeros((40, 2)), rng.normal(size=(40, 2)) + 5]
    res = loglik.gmm_em(Y, 2, covariance, seed=0)
    assert np.isfinite(res.log_likelihood) and set(np.unique(res.labels)) == {0, 1}
    # all points identical, K = 3
    res = loglik.gmm_em(np.ones((12, 2)), 3, covariance, seed=0)
    assert np.isfinite(res.log_likelihood) and np.isfinite(res.means).all()
    # reg_covar = 0 on a constant column: extra diagonal loading is added and counted
    res = loglik.gmm_em(X, 3, covariance, seed=0, reg_covar=0.0)
    assert np.isfinite(res.log_likelihood) and np.isfinite(res.covariances).all()
    if covariance == "diag":  # extra loading was needed and is counted
        assert res.info["n_jitter"] > 0 and (res.covariances[:, 2] > 0).all()
    elif covariance == "full":  # the round-off floor p eps max var keeps the constant direction positive
        assert (res.covariances[:, 2, 2] > 0).all()


def test_gmm_em_float32_near_singular_covariance():
    rng = np.random.default_rng(26)
    t = rng.normal(size=(400, 1)) * 1e3
    # columns that are equal up to float32 round-off: every sample covariance is singular in float32
    X = np.c_[t, t + 1e-4 * rng.normal(size=(400, 1)), 2 * t, rng.normal(size=(400, 1))].astype(np.float32)
    for covariance in ("full", "diag", "spherical"):
        res = loglik.gmm_em(X, 2, covariance, seed=0)
        assert np.isfinite(res.log_likelihood) and np.isfinite(res.covariances).all()
        assert np.isfinite(res.responsibilities).all()
        assert (np.diff(res.history) >= -1e-3 * np.abs(res.history[1:])).all()


def test_gmm_em_torch_and_int_input():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(27)
    X, y = _hetero(rng)
    res = loglik.gmm_em(torch.from_numpy(X), 3, seed=0, n_init=5)
    assert res.means.dtype == np.float64 and loglik.misclustering_error(res.labels, y) < 0.05
    Xi = np.round(X * 100).astype(np.int64)
    assert loglik.gmm_em(Xi, 3, seed=0).means.dtype == np.float64


def test_gmm_em_bad_input():
    X = np.random.default_rng(28).normal(size=(10, 2))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="X"):
        loglik.gmm_em(bad, 2)
    with pytest.raises(ValueError, match="n_clusters"):
        loglik.gmm_em(X, 11)
    with pytest.raises(ValueError, match="n_clusters"):
        loglik.gmm_em(X, 0)
    with pytest.raises(ValueError, match="covariance"):
        loglik.gmm_em(X, 2, "tied")
    with pytest.raises(ValueError, match="reg_covar"):
        loglik.gmm_em(X, 2, reg_covar=-1e-3)
    with pytest.raises(ValueError, match="reg_covar"):
        loglik.gmm_em(X, 2, reg_covar=float("nan"))
    with pytest.raises(ValueError, match="max_iter"):
        loglik.gmm_em(X, 2, max_iter=0)
    with pytest.raises(ValueError, match="init"):
        loglik.gmm_em(X, 2, init="k-means")
    with pytest.raises(ValueError, match="init"):
        loglik.gmm_em(X, 2, init=np.zeros((2, 3)))
    with pytest.raises(TypeError, match="seed"):
        loglik.gmm_em(X, 2, seed="zero")


# ---------------------------------------------------------------------------------------------------------------
# misclustering_error
# ---------------------------------------------------------------------------------------------------------------


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=40).flatmap(
        lambda a: st.tuples(st.just(a), st.lists(st.integers(-1, 4), min_size=len(a), max_size=len(a)))
    ),
    st.permutations(list(range(6))),
)
def test_misclustering_error_properties(pair, perm):
    truth, labels = (np.array(v) for v in pair)
    e = loglik.misclustering_error(labels, truth)
    assert e == pytest.approx(ref.misclustering_error(labels, truth), abs=1e-12)
    assert 0.0 <= e < 1.0
    # renaming the clusters (any injective relabelling) changes nothing
    renamed = np.array(perm)[labels + 1] * 7 - 3
    assert loglik.misclustering_error(renamed, truth) == pytest.approx(e, abs=1e-12)
    assert loglik.misclustering_error(truth, truth) == 0.0
    # symmetric in its arguments
    assert loglik.misclustering_error(truth, labels) == pytest.approx(e, abs=1e-12)


def test_misclustering_error_examples_and_bad_input():
    assert loglik.misclustering_error([1, 1, 0, 0], [0, 0, 1, 1]) == 0.0
    assert loglik.misclustering_error([0, 0, 0, 0], [0, 0, 1, 1]) == 0.5
    assert loglik.misclustering_error(np.array([0, 1, 2, 2]), np.array([0.0, 1.0, 1.0, 1.0])) == 0.25
    with pytest.raises(ValueError, match="labels"):
        loglik.misclustering_error([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="labels"):
        loglik.misclustering_error([0.5, 1], [0, 1])
    with pytest.raises(ValueError, match="truth"):
        loglik.misclustering_error([0, 1], [[0, 1]])
    with pytest.raises(TypeError, match="labels"):
        loglik.misclustering_error(np.array(["a", "b"]), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        loglik.misclustering_error([], [])
