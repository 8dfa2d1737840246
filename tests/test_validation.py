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
