"""Tests of loglik.score's kernel score reductions: kde_score / kde_logpdf (C++, Triton, reference)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import loglik
from loglik import _backend
from loglik.reference import score as ref

torch = pytest.importorskip("torch")

needs_compiled = pytest.mark.skipif(not _backend.has_compiled(), reason="loglik._C not built")
needs_triton = pytest.mark.skipif(not _backend.has_triton(), reason="Triton not installed")

# (dtype, rtol): errors are measured relative to the largest magnitude of the float64 truth
TOL = {np.float32: 5e-5, np.float64: 1e-11}
# few queries against many samples take the split-samples path of the C++ driver
SHAPES = [
    (1, 1, 1),
    (7, 13, 3),
    (37, 1025, 2),
    (65, 300, 5),
    (3, 17, 17),
    (20, 2049, 4),
    (5, 40, 1),
    (1, 5000, 3),
    (2, 3001, 6),
]


def truth(x, samples, h, weights=None):
    x64 = np.asarray(x, dtype=np.float64)
    s64 = np.asarray(samples, dtype=np.float64)
    w64 = None if weights is None else np.asarray(weights, dtype=np.float64)
    return ref.kde_score(x64, s64, h, weights=w64), ref.kde_logpdf(x64, s64, h, weights=w64)


def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    return float(np.abs(got - want).max() / max(1.0, np.abs(want).max())) if want.size else 0.0


def make(rng, m, n, d, dtype, weighted):
    x = rng.normal(size=(m, d)).astype(dtype)
    s = rng.normal(size=(n, d)).astype(dtype)
    w = rng.random(n) if weighted else None
    if weighted and n > 2:
        w[1] = 0.0
    return x, s, w


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_cpp_matches_reference(rng, dtype, shape, weighted):
    m, n, d = shape
    x, s, w = make(rng, m, n, d, dtype, weighted)
    h = 0.35
    score, logpdf = loglik.kde_score(x, s, h, weights=w, impl="cpp", return_logpdf=True)
    assert score.dtype == dtype and logpdf.dtype == dtype
    assert score.shape == (m, d) and logpdf.shape == (m,)
    want_s, want_l = truth(x, s, h, w)
    assert rel_err(score, want_s) < TOL[dtype]
    assert rel_err(logpdf, want_l) < TOL[dtype]
    # the same-dtype reference is no more accurate than the kernel (kernel error <= 4x reference error + eps)
    if dtype == np.float32:
        rs = ref.kde_score(x, s, np.float32(h), weights=w)
        assert rel_err(score, want_s) <= 4 * rel_err(rs, want_s) + 2e-6


@needs_compiled
@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_instruction_set_agrees(rng, isa, dtype):
    x, s, w = make(rng, 19, 1500, 3, dtype, True)
    score, logpdf = loglik.kde_score(x, s, 0.2, weights=w, impl="cpp", isa=isa, return_logpdf=True)
    want_s, want_l = truth(x, s, 0.2, w)
    assert rel_err(score, want_s) < TOL[dtype]
    assert rel_err(logpdf, want_l) < TOL[dtype]
    x9, s9, _ = make(rng, 4, 100, 9, dtype, False)  # generic-D path
    assert rel_err(loglik.kde_score(x9, s9, 0.7, isa=isa), truth(x9, s9, 0.7)[0]) < TOL[dtype]


@pytest.mark.triton
@needs_triton
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 70, 3), (33, 20, 2)])
def test_triton_matches_reference(rng, dtype, shape):
    m, n, d = shape
    x, s, w = make(rng, m, n, d, dtype, n > 3)
    xt, st_ = torch.from_numpy(x), torch.from_numpy(s)
    score, logpdf = loglik.kde_score(xt, st_, 0.5, weights=w, impl="triton", return_logpdf=True)
    assert isinstance(score, torch.Tensor) and score.dtype == xt.dtype
    want_s, want_l = truth(x, s, 0.5, w)
    assert rel_err(score.numpy(), want_s) < TOL[dtype]
    assert rel_err(logpdf.numpy(), want_l) < TOL[dtype]


@pytest.mark.triton
@needs_triton
def test_triton_far_queries_are_finite(rng):
    x = np.array([[400.0, -300.0]], dtype=np.float32)
    s = rng.normal(size=(40, 2)).astype(np.float32)
    score, logpdf = loglik.kde_score(torch.from_numpy(x), torch.from_numpy(s), 0.1, impl="triton", return_logpdf=True)
    want_s, want_l = truth(x, s, 0.1)
    assert torch.isfinite(score).all() and torch.isfinite(logpdf).all()
    assert rel_err(score.numpy(), want_s) < 1e-4 and rel_err(logpdf.numpy(), want_l) < 1e-5


def _queries(kind, rng, s, m):
    d = s.shape[1]
    if kind == "random":
        return rng.normal(size=(m, d)) * 2
    if kind == "clustered":
        return s[rng.integers(0, len(s), m)] + 1e-3 * rng.normal(size=(m, d))
    direction = rng.normal(size=(m, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return 200.0 * direction  # hundreds of bandwidths away: every exp underflows without the max shift


@needs_compiled
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.integers(1, 12),
    n=st.integers(1, 300),
    d=st.integers(1, 6),
    h=st.floats(0.05, 3.0),
    kind=st.sampled_from(["random", "clustered", "far"]),
    weighted=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_kde_property_against_reference(seed, m, n, d, h, kind, weighted, dtype):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 3
    s = centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d)) * 0.5
    x = _queries(kind, rng, s, m).astype(dtype)
    s = s.astype(dtype)
    w = rng.random(n) + (rng.random(n) < 0.2) * 5 if weighted else None
    score, logpdf = loglik.kde_score(x, s, h, weights=w, return_logpdf=True)
    want_s, want_l = truth(x, s, h, w)
    assert np.isfinite(score).all() and np.isfinite(logpdf).all()
    # float32: the distance itself carries a relative rounding of ~1e-7 (of ||x - s||^2 / h^2 for far queries)
    tol = TOL[dtype] * (10 if dtype == np.float32 else 1)
    assert float(np.abs(score - want_s).max()) <= tol * max(1.0, np.abs(want_s).max())
    assert float(np.abs(logpdf - want_l).max()) <= tol * max(1.0, np.abs(want_l).max())


@needs_compiled
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 5), h=st.floats(0.1, 2.0))
def test_single_sample_is_a_gaussian(seed, d, h):
    rng = np.random.default_rng(seed)
    x, s = rng.normal(size=(6, d)), rng.normal(size=(1, d))
    score, logpdf = loglik.kde_score(x, s, h, return_logpdf=True)
    np.testing.assert_allclose(score, (s - x) / h**2, rtol=1e-12, atol=1e-12)
    want = -((x - s) ** 2).sum(1) / (2 * h * h) - 0.5 * d * math.log(2 * math.pi * h * h)
    np.testing.assert_allclose(logpdf, want, rtol=1e-12, atol=1e-12)


@needs_compiled
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-50, 50), scale=st.floats(0.1, 10.0))
def test_invariances(seed, shift, scale):
    rng = np.random.default_rng(seed)
    x, s, w = rng.normal(size=(9, 3)), rng.normal(size=(40, 3)), rng.random(40) + 0.1
    score, logpdf = loglik.kde_score(x, s, 0.5, weights=w, return_logpdf=True)
    # translation equivariance
    s2, l2 = loglik.kde_score(x + shift, s + shift, 0.5, weights=w, return_logpdf=True)
    np.testing.assert_allclose(s2, score, rtol=1e-8, atol=1e-8 * (1 + abs(shift)))
    np.testing.assert_allclose(l2, logpdf, rtol=1e-9, atol=1e-9 * (1 + abs(shift)))
    # weights are normalised: scaling them changes nothing
    np.testing.assert_allclose(loglik.kde_score(x, s, 0.5, weights=w * scale), score, rtol=1e-10, atol=1e-10)
    # a duplicated sample is the same as doubling its weight
    s_dup = np.concatenate([s, s[:1]])
    w_dup = np.concatenate([w, w[:1]])
    w_dbl = w.copy()
    w_dbl[0] *= 2
    np.testing.assert_allclose(
        loglik.kde_logpdf(x, s_dup, 0.5, weights=w_dup), loglik.kde_logpdf(x, s, 0.5, weights=w_dbl), rtol=1e-10
    )


@needs_compiled
def test_logpdf_integrates_to_one_in_1d(rng):
    s = rng.normal(size=(30, 1))
    grid = np.linspace(-10, 10, 20001)[:, None]
    p = np.exp(loglik.kde_logpdf(grid, s, 0.3))
    assert abs(np.trapezoid(p, grid[:, 0]) - 1.0) < 1e-6


@needs_compiled
def test_score_is_gradient_of_logpdf_finite_differences(rng):
    x, s = rng.normal(size=(5, 3)), rng.normal(size=(50, 3))
    score = loglik.kde_score(x, s, 0.4)
    eps = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = eps
        fd = (loglik.kde_logpdf(x + e, s, 0.4) - loglik.kde_logpdf(x - e, s, 0.4)) / (2 * eps)
        np.testing.assert_allclose(score[:, k], fd, rtol=1e-6, atol=1e-6)


@needs_compiled
def test_torch_cpu_in_torch_out_and_inputs_untouched(rng):
    x, s, w = make(rng, 8, 30, 2, np.float32, True)
    xt, stt, wt = torch.from_numpy(x.copy()), torch.from_numpy(s.copy()), torch.from_numpy(w.copy())
    score = loglik.kde_score(xt, stt, 0.3, weights=wt)
    assert isinstance(score, torch.Tensor) and score.dtype == torch.float32 and score.device.type == "cpu"
    np.testing.assert_array_equal(xt.numpy(), x)
    np.testing.assert_array_equal(stt.numpy(), s)
    np.testing.assert_array_equal(wt.numpy(), w)
    xn, sn = x.copy(), s.copy()
    loglik.kde_logpdf(xn, sn, 0.3, weights=w)
    np.testing.assert_array_equal(xn, x)
    np.testing.assert_array_equal(sn, s)
    # mixed precision promotes to float64
    assert loglik.kde_score(x, s.astype(np.float64), 0.3).dtype == np.float64
    # non-contiguous views are accepted
    xs = np.asfortranarray(x)
    np.testing.assert_allclose(loglik.kde_score(xs, s, 0.3), loglik.kde_score(x, s, 0.3), rtol=1e-6)


def test_bfloat16_tensor_inputs(rng):
    # regression: bfloat16 tensors failed in the numpy conversion with "Got unsupported ScalarType BFloat16"
    x, s, _ = make(rng, 5, 40, 2, np.float32, False)
    xb, sb = torch.from_numpy(x).bfloat16(), torch.from_numpy(s).bfloat16()
    got = loglik.kde_score(xb, sb, 0.5)
    want = loglik.kde_score(xb.float(), sb.float(), 0.5)
    assert isinstance(got, torch.Tensor) and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want.float())


@needs_compiled
@pytest.mark.parametrize("impl", ["cpp", "reference"])
def test_autograd_wrt_x(rng, impl):
    x = torch.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    s = torch.tensor(rng.normal(size=(25, 3)))
    w = torch.tensor(rng.random(25))
    assert torch.autograd.gradcheck(lambda a: loglik.kde_logpdf(a, s, 0.5, weights=w, impl=impl), (x,))
    assert torch.autograd.gradcheck(lambda a: loglik.kde_score(a, s, 0.5, weights=w, impl=impl), (x,))
    # d logpdf / dx is the score
    (g,) = torch.autograd.grad(loglik.kde_logpdf(x, s, 0.5, weights=w, impl=impl).sum(), x)
    torch.testing.assert_close(g, loglik.kde_score(x.detach(), s, 0.5, weights=w), rtol=1e-10, atol=1e-10)


def test_autograd_wrt_samples_weights_and_bandwidth(rng):
    x = torch.tensor(rng.normal(size=(3, 2)), requires_grad=True)
    s = torch.tensor(rng.normal(size=(9, 2)), requires_grad=True)
    w = torch.tensor(rng.random(9) + 0.1, requires_grad=True)
    h = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c, e: loglik.kde_logpdf(a, b, e, weights=c), (x, s, w, h))
    assert torch.autograd.gradcheck(lambda a, b, c, e: loglik.kde_score(a, b, e, weights=c), (x, s, w, h))


@needs_compiled
def test_empty_queries(rng):
    s = rng.normal(size=(5, 2))
    score, logpdf = loglik.kde_score(np.zeros((0, 2)), s, 1.0, return_logpdf=True)
    assert score.shape == (0, 2) and logpdf.shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"x": np.full((2, 2), np.nan)}, ValueError, "x"),
        ({"x": np.array([[np.inf, 0.0]])}, ValueError, "x"),
        ({"x": np.zeros(3)}, ValueError, "x"),
        ({"samples": np.zeros((4, 3))}, ValueError, "samples"),
        ({"samples": np.zeros((0, 2))}, ValueError, "samples"),
        ({"samples": np.array([[np.nan, 0.0]])}, ValueError, "samples"),
        ({"bandwidth": 0.0}, ValueError, "bandwidth"),
        ({"bandwidth": -1.0}, ValueError, "bandwidth"),
        ({"bandwidth": float("nan")}, ValueError, "bandwidth"),
        ({"bandwidth": float("inf")}, ValueError, "bandwidth"),
        ({"bandwidth": "wide"}, TypeError, "bandwidth"),
        ({"weights": np.array([1.0, -1.0, 1.0])}, ValueError, "weights"),
        ({"weights": np.zeros(3)}, ValueError, "weights"),
        ({"weights": np.ones(4)}, ValueError, "weights"),
        ({"weights": np.array([1.0, np.nan, 1.0])}, ValueError, "weights"),
        ({"x": np.zeros((2, 2), dtype=complex)}, TypeError, "x"),
        ({"x": np.array([["a", "b"]])}, TypeError, "x"),
        ({"impl": "cuda"}, ValueError, "impl"),
        ({"isa": "sse9"}, ValueError, "isa"),
    ],
)
@pytest.mark.parametrize("fn", [loglik.kde_score, loglik.kde_logpdf])
def test_bad_input(fn, kwargs, exc, name):
    args = {"x": np.zeros((2, 2)), "samples": np.ones((3, 2)), "bandwidth": 1.0, "weights": None}
    args.update(kwargs)
    x, s, h, w = args.pop("x"), args.pop("samples"), args.pop("bandwidth"), args.pop("weights")
    with pytest.raises(exc, match=name):
        fn(x, s, h, weights=w, **args)


@pytest.mark.triton
@needs_triton
def test_bad_input_triton():
    with pytest.raises(ValueError, match="x"):
        loglik.kde_score(torch.full((2, 2), float("nan")), torch.ones(3, 2), 1.0, impl="triton")
    with pytest.raises(ValueError, match="weights"):
        loglik.kde_score(torch.zeros(2, 2), torch.ones(3, 2), 1.0, weights=torch.zeros(3), impl="triton")


@needs_compiled
def test_streaming_memory_is_not_m_times_n():
    """M = 60,000 queries x N = 8,192 samples in float32 would be 2 GB as a matrix; the kernel needs kilobytes."""
    code = (
        "import resource, numpy as np, loglik\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(60000, 1)).astype(np.float32); s = rng.normal(size=(8192, 1)).astype(np.float32)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "out = loglik.kde_score(x, s, 0.2, impl='cpp')\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert np.isfinite(out).all()\n"
        "print((after - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert float(out.stdout.strip().splitlines()[-1]) < 100.0  # MB of peak-RSS growth


@pytest.mark.gpu
@pytest.mark.triton
@pytest.mark.skipif(not _backend.has_cuda() or not _backend.has_triton(), reason="needs a CUDA device and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_auto_dispatch_uses_triton_and_matches_reference(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=gen, dtype=dtype)
    s = torch.randn(3000, 3, generator=gen, dtype=dtype)
    w = torch.rand(3000, generator=gen, dtype=dtype)
    score, logpdf = loglik.kde_score(x.cuda(), s.cuda(), 0.3, weights=w.cuda(), return_logpdf=True)
    assert score.device.type == "cuda" and score.dtype == dtype
    want_s, want_l = truth(x.numpy(), s.numpy(), 0.3, w.numpy())
    tol = TOL[np.float32 if dtype == torch.float32 else np.float64]
    assert rel_err(score.cpu().numpy(), want_s) < tol
    assert rel_err(logpdf.cpu().numpy(), want_l) < tol
