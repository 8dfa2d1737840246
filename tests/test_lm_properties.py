"""Hypothesis properties of the LM log-likelihood kernels: invariants that hold for any input."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import loglik  # noqa: E402

pytestmark = pytest.mark.skipif(not loglik.has_compiled(), reason="loglik._C not built")

shapes = st.tuples(st.integers(1, 6), st.integers(1, 40))  # (rows, vocabulary)
settings_ = st.fixed_dictionaries(
    {
        "softcap": st.one_of(st.none(), st.floats(0.5, 50.0)),
        "temperature": st.floats(0.2, 5.0),
    }
)


def _logits(seed, rows, v, scale):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(rows, v, generator=g, dtype=torch.float64)


@given(shapes, st.integers(0, 2**16), st.floats(0.1, 100.0), st.floats(-1e3, 1e3), st.sampled_from(["f32", "f64"]))
def test_lse_shift_invariance(shape, seed, scale, shift, dt):
    # log-sum-exp(z + c) = log-sum-exp(z) + c, and log-probs and entropy do not change.
    rows, v = shape
    dtype = torch.float32 if dt == "f32" else torch.float64
    x = _logits(seed, rows, v, scale).to(dtype)
    t = torch.randint(0, v, (rows,), generator=torch.Generator().manual_seed(seed + 1))
    lp, ent, lse = loglik.logprobs_from_logits(x, t, return_entropy=True, return_lse=True)
    lp2, ent2, lse2 = loglik.logprobs_from_logits(x + shift, t, return_entropy=True, return_lse=True)
    tol = 1e-9 if dtype == torch.float64 else 2e-3 * max(1.0, abs(shift) / 100)
    torch.testing.assert_close(lse2, lse + shift, rtol=0, atol=tol * max(1.0, scale / 10) + 1e-6 * abs(shift))
    torch.testing.assert_close(lp2, lp, rtol=0, atol=tol * max(1.0, scale / 10) + 1e-6 * abs(shift))
    torch.testing.assert_close(ent2, ent, rtol=0, atol=tol * max(1.0, scale / 10) + 1e-6 * abs(shift))


@given(shapes, st.integers(0, 2**16), st.floats(0.01, 1e4), settings_)
def test_logprobs_nonpositive_and_entropy_bounds(shape, seed, scale, kw):
    rows, v = shape
    x = _logits(seed, rows, v, scale).to(torch.float32)
    t = torch.randint(0, v, (rows,), generator=torch.Generator().manual_seed(seed + 2))
    lp, ent = loglik.logprobs_from_logits(x, t, return_entropy=True, **kw)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    assert float(lp.max()) <= 1e-6
    assert float(ent.min()) >= -1e-5
    assert float(ent.max()) <= math.log(v) + 1e-4


@given(st.integers(1, 4), st.integers(1, 30), st.integers(1, 9), st.integers(0, 2**16), settings_)
def test_probabilities_of_all_targets_sum_to_one(rows, v, d, seed, kw):
    # exp(logprob) over every possible target of the same hidden state sums to 1 (fused linear path).
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, d, generator=g, dtype=torch.float64) * 3
    w = torch.randn(v, d, generator=g, dtype=torch.float64)
    hh = h[:, None, :].expand(rows, v, d)
    t = torch.arange(v).expand(rows, v)
    lp = loglik.linear_logprobs(hh, w, t, **kw)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(rows, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    lp32 = loglik.linear_logprobs(hh.float(), w.float(), t, chunk_size=3, **kw)
    torch.testing.assert_close(lp32.exp().sum(-1), torch.ones(rows), rtol=1e-5, atol=1e-5)


@given(st.integers(1, 5), st.integers(2, 30), st.integers(0, 2**16), st.floats(0.0, 1.0), st.floats(0.0, 0.1))
def test_cross_entropy_equals_minus_mean_logprob(rows, v, seed, eps, zl):
    # With eps = z_loss = 0, the CE is -mean(logprobs); with them, it is never below that minus eps*log-ratio terms,
    # and the reductions are consistent (sum = mean * valid count).
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, 4, generator=g)
    w = torch.randn(v, 4, generator=g)
    t = torch.randint(0, v, (rows,), generator=g)
    lp = loglik.linear_logprobs(h, w, t)
    torch.testing.assert_close(loglik.linear_cross_entropy(h, w, t), -lp.mean(), rtol=1e-5, atol=1e-5)
    mean = loglik.linear_cross_entropy(h, w, t, label_smoothing=eps, z_loss=zl)
    total = loglik.linear_cross_entropy(h, w, t, label_smoothing=eps, z_loss=zl, reduction="sum")
    none = loglik.linear_cross_entropy(h, w, t, label_smoothing=eps, z_loss=zl, reduction="none")
    torch.testing.assert_close(total, mean * rows, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(none.sum(), total, rtol=1e-5, atol=1e-5)
    assert float(none.min()) >= -1e-5  # a cross-entropy (plus a square) is never negative
