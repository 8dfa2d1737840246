"""Cross-domain input validation: bad input gets a ValueError/TypeError naming the argument, never a crash, a hang,
a silent NaN or a wrong answer (regressions from new-user passes over the public API)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import loglik
import loglik.nn
from loglik._checks import check_bool
from loglik.reference import lm as ref_lm

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 3))


# ----------------------------------------------------------------------------------------------------------------
# Boolean flags: truthy strings and ints are refused (``flag="no"`` used to mean True).


def test_check_bool_accepts_bool_and_numpy_bool():
    assert check_bool(True, "flag") is True
    assert check_bool(False, "flag") is False
    assert check_bool(np.bool_(True), "flag") is True
    assert check_bool(np.bool_(False), "flag") is False


@pytest.mark.parametrize("value", ["no", "false", "True", 0, 1, 1.0, None, [], np.array([True]), torch.tensor(True)])
def test_check_bool_rejects_everything_else(value):
    with pytest.raises(TypeError, match="flag: expected a bool"):
        check_bool(value, "flag")


def _lm_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, 4, generator=g), torch.randn(7, 4, generator=g), torch.randint(0, 7, (2, 5), generator=g)


def _bool_calls():
    h, w, t = _lm_inputs()
    M, C, W = X[:2].copy(), np.stack([np.eye(3)] * 2), np.array([0.5, 0.5])
    y = torch.randn(4, 5)
    return [
        ("verbose", lambda v: loglik.kmeans_sdp(X, 2, verbose=v)),
        ("verbose", lambda v: loglik.kmeans_sdp(X, 2, solver="admm", verbose=v)),
        ("verbose", lambda v: loglik.ila_sdp(X, 2, verbose=v)),
        ("soft_memberships", lambda v: loglik.ila_sdp(X, 2, soft_memberships=v)),
        ("return_responsibilities", lambda v: loglik.gmm_logpdf(X, M, C, W, return_responsibilities=v)),
        (
            "return_responsibilities",
            lambda v: loglik.gmm_logpdf(torch.tensor(X, requires_grad=True), M, C, W, return_responsibilities=v),
        ),
        ("verbose", lambda v: loglik.ILASDP(2, verbose=v).fit(X)),
        ("return_entropy", lambda v: loglik.linear_logprobs(h, w, t, return_entropy=v)),
        ("return_lse", lambda v: loglik.linear_logprobs(h, w, t, return_lse=v)),
        ("return_entropy", lambda v: loglik.logprobs_from_logits(h @ w.T, t, return_entropy=v)),
        ("return_lse", lambda v: loglik.logprobs_from_logits(h @ w.T, t, return_lse=v)),
        (
            "average",
            lambda v: loglik.sequence_logprobs(-torch.rand(2, 3), torch.ones(2, 3, dtype=torch.bool), average=v),
        ),
        ("return_logpdf", lambda v: loglik.kde_score(X, X, 0.5, return_logpdf=v)),
        ("pass_sigma", lambda v: loglik.ardae_loss(lambda a, *s: -a, y, 0.1, pass_sigma=v)),
        ("create_graph", lambda v: loglik.hutchinson_divergence(lambda a: -a, y, 2, create_graph=v)),
        ("return_entropy", lambda v: loglik.nn.LinearLogprobs(return_entropy=v)),
        ("return_lse", lambda v: loglik.nn.LinearLogprobs(return_lse=v)),
    ]


@pytest.mark.parametrize("case", range(len(_bool_calls())))
@pytest.mark.parametrize("bad", ["no", "false", 1])
def test_public_bool_flags_reject_non_bools(case, bad):
    name, call = _bool_calls()[case]
    with pytest.raises(TypeError, match=f"{name}: expected a bool"):
        call(bad)


def test_public_bool_flags_accept_numpy_bool():
    h, w, t = _lm_inputs()
    lp, ent = loglik.linear_logprobs(h, w, t, return_entropy=np.bool_(True))
    torch.testing.assert_close(lp, loglik.linear_logprobs(h, w, t))
    assert ent.shape == t.shape
    score, logpdf = loglik.kde_score(X, X, 0.5, return_logpdf=np.bool_(True))
    assert score.shape == X.shape and logpdf.shape == (12,)


def test_vocab_parallel_bool_flags():
    from loglik.lm_distributed import linear_logprobs_vocab_parallel

    h, w, t = _lm_inputs()
    with pytest.raises(TypeError, match="return_entropy: expected a bool"):
        linear_logprobs_vocab_parallel(h, w, t, vocab_start=0, return_entropy="no")


# ----------------------------------------------------------------------------------------------------------------
# Too few samples: the error names the data, not an argument the caller never set.


def test_ila_sdp_one_sample_names_x():
    with pytest.raises(ValueError, match=r"X: .*n >= 2"):
        loglik.ila_sdp(X[:1], 1)
    with pytest.raises(ValueError, match="n_clusters: expected at most n = 1"):
        loglik.ila_sdp(X[:1], 2)
    with pytest.raises(ValueError, match="rank: expected <= 2"):  # an explicit rank is still the caller's fault
        loglik.ila_sdp(X[:2], 1, rank=3)
    with pytest.raises(ValueError, match=r"X: .*n >= 2"):
        loglik.ILASDP(1).fit(X[:1])


@pytest.mark.parametrize("fn", [loglik.kmeans_sdp, loglik.kmeans, loglik.gmm_em])
def test_one_sample_clustering(fn):
    res = fn(X[:1], 1)
    assert res.labels.tolist() == [0]
    with pytest.raises(ValueError, match="n_clusters: expected"):
        fn(X[:1], 2)
    with pytest.raises(ValueError, match="X: expected at least 1 row"):
        fn(X[:0], 1)


# ----------------------------------------------------------------------------------------------------------------
# sequence_logprobs: a huge segment id is a clear error, not a B x (max id + 1) allocation.


@pytest.mark.parametrize("big", [7, 10**6, 10**12, 2**62])
def test_sequence_logprobs_huge_segment_id(big):
    lp = -torch.rand(2, 6)
    seg = torch.tensor([[0, big, 1, 1, -1, 0], [0, 0, 0, 1, 1, 2]])
    with pytest.raises(ValueError, match=f"mask_or_segment_ids: segment id {big} >= T = 6"):
        loglik.sequence_logprobs(lp, seg)
    with pytest.raises(ValueError, match="mask_or_segment_ids: segment id"):
        loglik.sequence_logprobs(lp.numpy(), seg.numpy(), average=True)


def test_sequence_logprobs_num_segments():
    g = torch.Generator().manual_seed(3)
    lp = -torch.rand(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    seg = torch.tensor([[0, 9, 1, 1, -1, 0], [2, 2, -1, -1, 0, 0]])
    out = loglik.sequence_logprobs(lp, seg, num_segments=10)
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, ref_lm.sequence_logprobs(lp, seg, num_segments=10))
    assert float(out[0, 9].detach()) == pytest.approx(float(lp[0, 1].detach()))
    mean, valid = loglik.sequence_logprobs(lp, seg, average=True, num_segments=10)
    assert valid[0].tolist() == [True, True] + [False] * 7 + [True] and torch.isfinite(mean).all()
    # normal ids: num_segments only pads columns, the values are unchanged
    seg2 = torch.tensor([[0, 0, 1, 1, -1, 0], [2, 2, -1, -1, 0, 0]])
    plain = loglik.sequence_logprobs(lp, seg2)
    torch.testing.assert_close(loglik.sequence_logprobs(lp, seg2, num_segments=5)[:, :3], plain)
    assert loglik.sequence_logprobs(lp, torch.full((2, 6), -1), num_segments=4).shape == (2, 4)
    with pytest.raises(ValueError, match="mask_or_segment_ids: segment id 9 >= num_segments = 9"):
        loglik.sequence_logprobs(lp, seg, num_segments=9)
    with pytest.raises(ValueError, match="num_segments: expected >= 0"):
        loglik.sequence_logprobs(lp, seg, num_segments=-1)
    with pytest.raises(TypeError, match="num_segments: expected an int"):
        loglik.sequence_logprobs(lp, seg, num_segments=10.0)
    with pytest.raises(ValueError, match="num_segments: only meaningful with integer segment ids"):
        loglik.sequence_logprobs(lp, seg >= 0, num_segments=3)


def test_sequence_logprobs_ids_up_to_t_minus_one_unchanged():
    lp = -torch.rand(1, 4, dtype=torch.float64)
    seg = torch.tensor([[3, 2, 1, 0]])  # every token its own sequence: the largest allowed id is T - 1
    torch.testing.assert_close(loglik.sequence_logprobs(lp, seg), lp.flip(-1))


# ----------------------------------------------------------------------------------------------------------------
# Clustering at extreme scales: the same partition as at unit scale, or a ValueError naming X (never inf/NaN).


@pytest.mark.parametrize(
    ("scale", "dtype"), [(1e20, np.float32), (1e-30, np.float32), (1e140, np.float64), (1e-200, np.float64)]
)
def test_kmeans_extreme_scales_same_partition(scale, dtype):
    base = loglik.kmeans(X, 2, seed=0)
    Xs = (X * scale).astype(dtype)
    before = Xs.copy()
    res = loglik.kmeans(Xs, 2, seed=0)
    np.testing.assert_array_equal(Xs, before)
    np.testing.assert_array_equal(res.labels, base.labels)
    assert res.centers.dtype == dtype
    np.testing.assert_allclose(res.centers / scale, base.centers, rtol=1e-5, atol=1e-6)
    assert np.isfinite(res.inertia)
    res_init = loglik.kmeans(Xs, 2, init=Xs[:2])
    np.testing.assert_array_equal(res_init.labels, loglik.kmeans(X, 2, init=X[:2]).labels)


def test_kmeans_unit_scale_untouched():
    # data in the safe range is not rescaled: results equal those of the compiled core called directly
    from loglik import _backend

    d = _backend.C().kmeans(np.ascontiguousarray(X), 2, 1, 300, 1e-4, 7, None)
    res = loglik.kmeans(X, 2, seed=7)
    np.testing.assert_array_equal(res.labels, d["labels"])
    np.testing.assert_array_equal(res.centers, d["centers"])
    assert res.inertia == float(d["inertia"])


def test_kmeans_overflowing_inertia_names_x():
    with pytest.raises(ValueError, match="X: values up to .* overflow float64"):
        loglik.kmeans(X * 1e200, 2, seed=0)


@pytest.mark.parametrize(("scale", "dtype"), [(1e20, np.float32), (1e160, np.float64)])
def test_gmm_em_overflowing_variances_name_x(scale, dtype):
    with pytest.raises(ValueError, match=f"X: deviations from the mean up to .* overflow {np.dtype(dtype).name}"):
        loglik.gmm_em((X * scale).astype(dtype), 2, seed=0)
    res = loglik.gmm_em((X * 1e17).astype(np.float32), 2, seed=0)
    assert np.isfinite(res.covariances).all() and np.isfinite(res.log_likelihood)


@pytest.mark.parametrize("as_torch", [False, True])
def test_gmm_logpdf_far_points(as_torch):
    M = np.array([[0.0, 0, 0], [1, 0, 0]])
    C, W = np.stack([np.eye(3)] * 2), np.array([0.5, 0.5])
    far = np.full((2, 3), 1e10)
    wrap = (lambda a: torch.tensor(a, requires_grad=True)) if as_torch else (lambda a: a)
    _, resp = loglik.gmm_logpdf(wrap(far), M, C, W, return_responsibilities=True)
    resp = resp.detach().numpy() if as_torch else resp
    # the rows used to be [1, 1] (exp(lp - lse) with lse rounded); the posterior favours the nearer component 1
    np.testing.assert_allclose(resp, [[0.0, 1.0], [0.0, 1.0]], atol=1e-12)
    _, resp2 = loglik.gmm_logpdf(wrap(np.full((1, 3), 1e10)), np.zeros((2, 3)), C, W, return_responsibilities=True)
    np.testing.assert_allclose(resp2.detach().numpy() if as_torch else resp2, [[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"X: the log-density of 2 point\(s\) \(rows \[0, 1\]\) overflows"):
        loglik.gmm_logpdf(wrap(np.full((2, 3), 1e200)), M, C, W)


@pytest.mark.parametrize(
    ("covariance", "C"),
    [
        ("full", np.stack([np.eye(3), np.ones((3, 3))])),
        ("full", np.stack([np.eye(3), -np.eye(3)])),
        ("diag", np.array([[1.0, 1, 1], [1, 0, 1]])),
        ("spherical", np.array([1.0, -1.0])),
    ],
)
def test_gmm_logpdf_autograd_path_rejects_non_pd(covariance, C):
    x = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="covariances: component 1 is not positive definite"):
        loglik.gmm_logpdf(x, np.zeros((2, 3)), C, np.array([0.5, 0.5]), covariance=covariance)
    with pytest.raises(ValueError, match="covariances: component 1 is not positive definite"):
        loglik.gmm_logpdf(x.detach().numpy(), np.zeros((2, 3)), C, np.array([0.5, 0.5]), covariance=covariance)


# ----------------------------------------------------------------------------------------------------------------
# Score domain: non-finite results, mixed array types, callables and generators.

S = RNG.normal(size=(20, 3))


@pytest.mark.parametrize(
    ("x", "samples", "bandwidth"),
    [
        (X * 1e200, S, 0.5),  # squared distances overflow float64
        ((X * 1e20).astype(np.float32), S.astype(np.float32), 0.5),  # ... and float32
        (X, S, 1e-300),  # bandwidth^2 underflows: the score is beyond float64
        (X.astype(np.float32), S.astype(np.float32), 1e-30),
    ],
)
def test_kde_non_finite_result_names_arguments(x, samples, bandwidth):
    for call in (loglik.kde_score, loglik.kde_logpdf):
        with pytest.raises(ValueError, match="x, samples, bandwidth: the KDE score or log-density overflows"):
            call(x, samples, bandwidth)
    with pytest.raises(ValueError, match="x, samples, bandwidth"):
        loglik.kde_score(torch.tensor(x, requires_grad=True), torch.tensor(samples), bandwidth)


def test_kde_huge_weights_are_normalised():
    w = np.full(20, 1e308)  # their sum overflows; the normalised weights are uniform
    score, logpdf = loglik.kde_score(X, S, 0.5, weights=w, return_logpdf=True)
    ref_score, ref_logpdf = loglik.kde_score(X, S, 0.5, return_logpdf=True)
    np.testing.assert_allclose(score, ref_score, rtol=1e-12)
    np.testing.assert_allclose(logpdf, ref_logpdf, rtol=1e-12)
    wt = torch.full((20,), 1e308, dtype=torch.float64)
    from loglik.score import _prepare_kde_torch

    _, _, logw = _prepare_kde_torch(torch.tensor(X), torch.tensor(S), wt)
    torch.testing.assert_close(logw, torch.full((20,), -np.log(20.0), dtype=torch.float64))


def test_kde_tensor_bandwidth_checked_on_the_autograd_path():
    h = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="bandwidth: expected a finite number > 0"):
        loglik.kde_score(torch.tensor(X), torch.tensor(S), h)


@pytest.mark.parametrize("noise", ["gaussian", "poisson", "gamma"])
def test_tweedie_mixed_array_types_follow_y(noise):
    kw = {"gaussian": {"sigma": 0.1}, "poisson": {"zeta": 0.5}, "gamma": {"k": 3.0}}[noise]
    y = np.abs(RNG.normal(size=(4, 5)))
    s = RNG.normal(size=(4, 5)) * 0.1
    expected = loglik.tweedie_denoise(y, s, noise, **kw)
    out = loglik.tweedie_denoise(torch.tensor(y), s, noise, **kw)  # torch.exp(ndarray) raised for poisson
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), expected)
    out = loglik.tweedie_denoise(y, torch.tensor(s), noise, **kw)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected)


def test_ardae_loss_bad_inputs():
    y = torch.randn(4, 5)
    with pytest.raises(TypeError, match="y: expected a floating-point tensor"):
        loglik.ardae_loss(lambda v: -v, torch.ones(4, 5, dtype=torch.int64), 0.1)  # was a torch NotImplementedError
    with pytest.raises(TypeError, match="score_net: expected a callable"):
        loglik.ardae_loss(3, y, 0.1)
    with pytest.raises(ValueError, match="score_net: returned NaN or infinite values"):
        loglik.ardae_loss(lambda v: v * float("nan"), y, 0.1)
    with pytest.raises(TypeError, match="score_net: expected it to return a torch tensor"):
        loglik.ardae_loss(lambda v: v.numpy(), y, 0.1)
    with pytest.raises(TypeError, match="generator: expected None or a torch.Generator"):
        loglik.ardae_loss(lambda v: -v, y, 0.1, generator=0)


def test_hutchinson_bad_inputs():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match="f: returned NaN or infinite values"):
        loglik.hutchinson_divergence(lambda v: v * float("nan"), x, 2)
    with pytest.raises(TypeError, match="f: expected a callable"):
        loglik.hutchinson_divergence(None, x, 2)
    with pytest.raises(TypeError, match="generator: expected None or a torch.Generator"):
        loglik.hutchinson_divergence(lambda v: -v, x, 2, generator=np.random.default_rng(0))


def _and_args(scores):
    b = scores.shape[1]
    g = torch.Generator().manual_seed(1)
    return {
        "scores": scores,
        "drift": torch.randn(b, 5, generator=g),
        "diffusion": 1.0,
        "div_drift": 0.0,
        "dtau": 0.1,
        "noise": torch.randn(b, 5, generator=g),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_superposition_and_identical_models(dtype):
    # two identical models: a singular system in float32 with the default ridge (torch LinAlgError); now equal weights
    scores = torch.ones(2, 4, 5, dtype=dtype)
    kappa = loglik.superposition_weights(torch.zeros(2, 4, dtype=dtype), "and", **_and_args(scores))
    assert kappa.dtype == dtype
    torch.testing.assert_close(kappa, torch.full((4, 2), 0.5, dtype=dtype))
    with pytest.raises(ValueError, match="scores: the AND weights are undetermined"):
        loglik.superposition_weights(torch.zeros(2, 4, dtype=dtype), "and", ridge=0.0, **_and_args(scores))


def test_superpose_bad_inputs():
    fns = [lambda x, t: -x, lambda x, t: -2 * x]
    x0 = torch.randn(4, 3)
    with pytest.raises(TypeError, match="bias: expected a tensor or array of real numbers"):
        loglik.superposition_weights(torch.zeros(2, 4), bias="a")
    with pytest.raises(TypeError, match="logq_init: expected a tensor or array of real numbers"):
        loglik.superpose(fns, x0, loglik.VPSDE(), 2, logq_init="a")
    with pytest.raises(ValueError, match="logq_init: contains NaN"):
        loglik.superpose(fns, x0, loglik.VPSDE(), 2, logq_init=torch.full((2, 4), float("nan")))
    with pytest.raises(TypeError, match="generator: expected None or a torch.Generator"):
        loglik.superpose(fns, x0, loglik.VPSDE(), 2, generator=3)
    res = loglik.superpose([fns[0], fns[0]], x0, loglik.VPSDE(), 3, mode="and", generator=torch.Generator())
    assert torch.isfinite(res.x).all() and torch.isfinite(res.logq).all()


# ----------------------------------------------------------------------------------------------------------------
# LM: empty hidden size, out-of-range ignore_index, overflowing logits.


def test_lm_hidden_size_zero_and_huge_ignore_index():
    _, _, t = _lm_inputs()
    with pytest.raises(ValueError, match=r"hidden: expected shape \[..., D\] with D >= 1"):
        loglik.linear_logprobs(torch.zeros(2, 5, 0), torch.zeros(7, 0), t)  # was a torch reshape RuntimeError
    h, w, t = _lm_inputs()
    with pytest.raises(ValueError, match="ignore_index: expected an int64 value"):
        loglik.linear_logprobs(h, w, t, ignore_index=10**30)  # was an OverflowError
    with pytest.raises(ValueError, match="ignore_index: expected an int64 value"):
        loglik.linear_cross_entropy(h, w, t, ignore_index=-(2**64))


def test_logprobs_from_logits_overflow_names_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g) * 1e38  # finite, but log-probs / entropies leave float32's range
    t = torch.randint(0, 7, (2, 5), generator=g)
    with pytest.raises(ValueError, match="logits: values too large"):
        loglik.logprobs_from_logits(logits, t, return_entropy=True)
    ok = torch.randn(2, 5, 7, generator=g) * 1e3
    lp, ent = loglik.logprobs_from_logits(ok, t, return_entropy=True)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()


def test_estimator_parameters_named():
    with pytest.raises(ValueError, match="reg_covar: expected a finite number >= 0"):
        loglik.ILASDP(2, reg_covar=float("inf")).fit(X)
    with pytest.raises(TypeError, match="reg_covar: expected a real number"):
        loglik.ILASDP(2, reg_covar=True).fit(X)
    with pytest.raises(ValueError, match="covariance_type: expected one of"):
        loglik.GaussianMixtureEM(2, covariance_type="tied").fit(X)


# ----------------------------------------------------------------------------------------------------------------
# Integers beyond what the compiled core takes, and thread counts that crashed OpenMP.


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("max_iter", lambda: loglik.kmeans(X, 2, max_iter=2**31)),
        ("n_init", lambda: loglik.kmeans(X, 2, n_init=2**64)),
        ("max_iter", lambda: loglik.gmm_em(X, 2, max_iter=2**64)),
        ("n_init", lambda: loglik.gmm_em(X, 2, n_init=2**31)),
        ("max_iter", lambda: loglik.kmeans_sdp(X, 2, max_iter=2**64)),
        ("max_iter", lambda: loglik.kmeans_sdp(X, 2, solver="admm", max_iter=2**31)),
        ("n_init", lambda: loglik.kmeans_sdp(X, 2, n_init=2**64)),
        ("max_iter", lambda: loglik.ila_sdp(X, 2, max_iter=2**64)),
    ],
)
def test_iteration_counts_beyond_c_int(name, call):
    # these were pybind11 "incompatible function arguments" TypeErrors that did not name the argument
    with pytest.raises(ValueError, match=f"{name}: expected <= {2**31 - 1}"):
        call()


@pytest.mark.parametrize("seed", [2**64, 2**70])
def test_sdp_huge_seeds(seed):
    # reduced modulo 2^64 like kmeans/gmm_em do (they were pybind11 TypeErrors)
    res = loglik.kmeans_sdp(X, 2, seed=seed)
    np.testing.assert_array_equal(res.labels, loglik.kmeans_sdp(X, 2, seed=seed % 2**64).labels)
    assert loglik.ila_sdp(X, 2, seed=seed, max_rounds=1).labels.shape == (12,)


def test_lm_chunk_size_beyond_int64():
    h, w, t = _lm_inputs()
    with pytest.raises(ValueError, match=r"chunk_size: expected an int in \[1, 2\*\*63\)"):
        loglik.linear_logprobs(h, w, t, chunk_size=2**64)  # was a RuntimeError from the custom op's schema


def test_set_num_threads_absurd_count():
    before = loglik.get_num_threads()
    with pytest.raises(ValueError, match="n: expected at most"):
        loglik.set_num_threads(100_000)  # the next parallel region segfaulted
    with pytest.raises(ValueError, match="n: expected at most"):
        loglik.set_num_threads(2**64)
    assert loglik.get_num_threads() == before


def test_cluster_cli_truth_column_out_of_range(tmp_path):
    from loglik.commands.cluster import read_csv

    path = tmp_path / "two.csv"
    path.write_text("a,b,c\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="--truth-column: index 7 out of range for 3 columns"):
        read_csv(str(path), "7")  # used to wrap around to column 1 and score against it
    with pytest.raises(ValueError, match="--truth-column: index -4 out of range"):
        read_csv(str(path), "-4")
    X_, header, truth = read_csv(str(path), "-1")
    assert header == ["a", "b"] and truth.tolist() == [0, 1] and X_.shape == (2, 2)


def test_tweedie_gamma_k_type():
    y = np.ones((2, 3))
    with pytest.raises(TypeError, match="k: expected a real number"):
        loglik.tweedie_denoise(y, y, "gamma", k=torch.tensor(3.0))  # said "expected a finite number > 1, got 3"
    with pytest.raises(ValueError, match="k: expected a finite number > 1"):
        loglik.tweedie_denoise(y, y, "gamma", k=1.0)


def test_read_only_numpy_inputs_warn_nothing():
    # torch.from_numpy warns about read-only arrays (an error under filterwarnings=error, as in this suite)
    g = np.random.default_rng(1)
    h = g.random((2, 5, 4)).astype(np.float32)
    w = g.random((7, 4)).astype(np.float32)
    t = g.integers(0, 7, (2, 5))
    for a in (h, w, t):
        a.setflags(write=False)
    lp = loglik.linear_logprobs(h, w, t)
    np.testing.assert_allclose(lp, loglik.linear_logprobs(h.copy(), w.copy(), t.copy()))
    assert loglik.logprobs_from_logits(h, t % 4).shape == (2, 5)
    assert loglik.sequence_logprobs(h[..., 0] - 1, t > 2).shape == (2,)
    Xr = X.copy()
    Xr.setflags(write=False)
    x = torch.tensor(X[:3], requires_grad=True)
    assert loglik.gmm_logpdf(x, Xr[:2], np.stack([np.eye(3)] * 2), np.array([0.5, 0.5])).shape == (3,)


def test_gmm_em_values_near_float64_max():
    Xh = X.copy()
    Xh[0] = 1.5e308
    Xh[1] = -1.5e308  # the mean and the range overflow: still the ValueError naming X, no RuntimeWarning
    with pytest.raises(ValueError, match="X: deviations from the mean up to"):
        loglik.gmm_em(Xh, 2, seed=0)
    with pytest.raises(ValueError, match="X: values up to"):
        loglik.kmeans(Xh, 2, seed=0)
