"""loglik.lm against the float64 reference: values and every gradient, every option, odd shapes, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import loglik  # noqa: E402
from loglik import lm  # noqa: E402
from loglik.reference import lm as ref  # noqa: E402

pytestmark = pytest.mark.skipif(not loglik.has_compiled(), reason="loglik._C not built")

B, T, D, V = 3, 7, 123, 507  # the odd shape of the issue
TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (2e-5, 2e-4)}  # (rtol, atol) against the float64 reference


def _inputs(dtype=torch.float32, *, scale=1.0, seed=0, ignore=True, shape=(B, T), d=D, v=V):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(*shape, d, generator=g, dtype=torch.float64) * scale / math.sqrt(d)).to(dtype)
    w = torch.randn(v, d, generator=g, dtype=torch.float64).to(dtype)
    b = (0.1 * torch.randn(v, generator=g, dtype=torch.float64)).to(dtype)
    t = torch.randint(0, v, shape, generator=g)
    if ignore:
        t.view(-1)[::5] = -100
    return h, w, b, t


def _close(a, b, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol * scale)


def _grads(out, inputs, upstream):
    total = sum((o * u).sum() for o, u in zip(out, upstream, strict=True))
    return torch.autograd.grad(total, inputs)


OPTIONS = [
    {},
    {"bias": True},
    {"softcap": 2.5},
    {"temperature": 0.3},
    {"temperature": 3.0},
    {"temperature": "rows"},
    {"softcap": 4.0, "temperature": 0.7, "bias": True},
]


def _kw(opt, h, b):
    kw = dict(opt)
    if kw.pop("bias", False):
        kw["bias"] = b
    if kw.get("temperature") == "rows":
        g = torch.Generator().manual_seed(3)
        kw["temperature"] = (0.3 + 2.7 * torch.rand(h.shape[:-1], generator=g, dtype=torch.float64)).to(h.dtype)
    return kw


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_linear_logprobs_values_and_grads(dtype, opt, chunk_size):
    h, w, b, t = _inputs(dtype, scale=4.0)
    kw = _kw(opt, h, b)
    leaves = [h.requires_grad_(), w.requires_grad_()] + ([kw["bias"].requires_grad_()] if "bias" in kw else [])
    out = loglik.linear_logprobs(h, w, t, return_entropy=True, return_lse=True, chunk_size=chunk_size, **kw)
    h64 = [x.detach().double().requires_grad_() for x in leaves]
    kw64 = dict(kw)
    if "bias" in kw:
        kw64["bias"] = h64[2]
    if torch.is_tensor(kw.get("temperature")):
        kw64["temperature"] = kw["temperature"].double()
    exp = ref.linear_logprobs(h64[0], h64[1], t, return_entropy=True, return_lse=True, **kw64)
    for o, e in zip(out, exp, strict=True):
        assert o.dtype == dtype and o.shape == t.shape
        _close(o, e, dtype)
    valid = (t != -100).double()
    g = torch.Generator().manual_seed(1)
    ups = [torch.randn(t.shape, generator=g, dtype=torch.float64) * valid for _ in range(3)]
    got = _grads(out, leaves, [u.to(dtype) for u in ups])
    want = _grads(exp, h64, ups)
    for a, e in zip(got, want, strict=True):
        _close(a, e, dtype, scale=10.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "opt",
    [
        {},
        {"label_smoothing": 0.1},
        {"z_loss": 1e-3},
        {"weights": True},
        {"softcap": 3.0, "temperature": 0.3, "bias": True},
        {"label_smoothing": 0.2, "z_loss": 1e-2, "weights": True, "temperature": "rows", "softcap": 5.0},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain",
)
def test_linear_cross_entropy(dtype, reduction, opt):
    h, w, b, t = _inputs(dtype, scale=4.0, seed=2)
    opt = dict(opt)
    if opt.pop("weights", False):
        g = torch.Generator().manual_seed(5)
        opt["weights"] = torch.randn(t.shape, generator=g, dtype=torch.float64).to(dtype)  # negative ones too
    kw = _kw(opt, h, b)
    leaves = [h.requires_grad_(), w.requires_grad_()] + ([kw["bias"].requires_grad_()] if "bias" in kw else [])
    loss = loglik.linear_cross_entropy(h, w, t, reduction=reduction, chunk_size=4, **kw)
    h64 = [x.detach().double().requires_grad_() for x in leaves]
    kw64 = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}
    if "bias" in kw:
        kw64["bias"] = h64[2]
    exp = ref.linear_cross_entropy(h64[0], h64[1], t, reduction=reduction, **kw64)
    assert loss.shape == exp.shape and loss.dtype == dtype
    _close(loss, exp, dtype)
    up = torch.randn(exp.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    got = torch.autograd.grad((loss * up.to(dtype)).sum(), leaves)
    want = torch.autograd.grad((exp * up).sum(), h64)
    for a, e in zip(got, want, strict=True):
        _close(a, e, dtype, scale=10.0)


def test_cross_entropy_matches_torch():
    h, w, b, t = _inputs(torch.float32, scale=3.0, seed=4)
    for kw in ({}, {"label_smoothing": 0.1}):
        ours = loglik.linear_cross_entropy(h, w, t, bias=b, **kw)
        theirs = torch.nn.functional.cross_entropy((h @ w.t() + b).reshape(-1, V), t.reshape(-1), **kw)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored(reduction):
    h, w, _, t = _inputs(torch.float32)
    t = torch.full_like(t, -100)
    h.requires_grad_()
    w.requires_grad_()
    loss = loglik.linear_cross_entropy(h, w, t, reduction=reduction, z_loss=0.1, label_smoothing=0.1)
    assert torch.isfinite(loss).all() and float(loss.detach().abs().sum()) == 0.0
    gh, gw = torch.autograd.grad(loss.sum(), (h, w))
    assert float(gh.abs().max()) == 0.0 and float(gw.abs().max()) == 0.0
    lp, ent = loglik.linear_logprobs(h, w, t, return_entropy=True)
    assert float(lp.detach().abs().max()) == 0.0 and float(ent.detach().abs().max()) == 0.0


def test_empty_batch():
    h, w, _, _ = _inputs(torch.float32)
    h0 = h[:0].requires_grad_()
    t0 = torch.zeros(0, T, dtype=torch.int64)
    loss = loglik.linear_cross_entropy(h0, w.requires_grad_(), t0)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert loglik.linear_logprobs(h0, w, t0).shape == (0, T)


@pytest.mark.parametrize("fn", ["logprobs", "ce"])
def test_extreme_logits(fn):
    # |z| ~ 1e4: the max-shifted sums must not overflow, and nothing may become NaN.
    h, w, _, t = _inputs(torch.float32, scale=1.0, seed=6)
    h = (h / h.norm(dim=-1, keepdim=True) * 1e4 / w.norm(dim=1).mean()).detach()
    h.requires_grad_()
    w.requires_grad_()
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    if fn == "logprobs":
        out = loglik.linear_logprobs(h, w, t, return_entropy=True)
        exp = ref.linear_logprobs(h64, w64, t, return_entropy=True)
        assert float(exp[0].detach().abs().max()) > 1e2  # really extreme
        for o, e in zip(out, exp, strict=True):
            torch.testing.assert_close(o.double(), e, rtol=1e-4, atol=1e-1)
        out, exp = out[0].sum(), exp[0].sum()
    else:
        out = loglik.linear_cross_entropy(h, w, t)
        exp = ref.linear_cross_entropy(h64, w64, t)
        torch.testing.assert_close(out.double(), exp, rtol=1e-4, atol=1e-1)
    got = torch.autograd.grad(out, (h, w))
    want = torch.autograd.grad(exp, (h64, w64))
    for a, e in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), e, rtol=1e-3, atol=1e-2 * float(e.abs().max()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_within_2x_torch(dtype):
    # float64 truth on the low-precision inputs; loglik's error vs plain torch's error in the same dtype.
    h, w, _, t = _inputs(torch.float64, scale=4.0, seed=7, d=256)
    h, w = h.to(dtype), w.to(dtype)
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    truth = ref.linear_cross_entropy(h64, w64, t)
    tg = torch.autograd.grad(truth, (h64, w64))
    hl, wl = h.clone().requires_grad_(), w.clone().requires_grad_()
    ours = loglik.linear_cross_entropy(hl, wl, t, chunk_size=8)
    og = torch.autograd.grad(ours, (hl, wl))
    ht, wt = h.clone().requires_grad_(), w.clone().requires_grad_()
    theirs = torch.nn.functional.cross_entropy((ht @ wt.t()).reshape(-1, V), t.reshape(-1))
    thg = torch.autograd.grad(theirs, (ht, wt))
    assert og[0].dtype == dtype and og[1].dtype == dtype
    # Per-token losses (a single scalar's error is too much a matter of luck to compare).
    tok_truth = ref.linear_cross_entropy(h.double(), w.double(), t, reduction="none")
    tok_ours = loglik.linear_cross_entropy(h, w, t, reduction="none", chunk_size=8).double()
    tok_torch = torch.nn.functional.cross_entropy((h @ w.t()).reshape(-1, V), t.reshape(-1), reduction="none")
    err_ours = float((tok_ours - tok_truth).abs().mean())
    err_torch = float((tok_torch.double().reshape(t.shape) - tok_truth).abs().mean())
    assert err_ours <= 2 * err_torch + 1e-6, (err_ours, err_torch)
    for a, b, e in zip(og, thg, tg, strict=True):
        e_ours = float((a.double() - e).abs().max())
        e_torch = float((b.double() - e).abs().max())
        assert e_ours <= 2 * e_torch + 1e-6, (e_ours, e_torch)
    lp = loglik.linear_logprobs(h, w, t)
    lp_t = torch.log_softmax((h @ w.t()).float(), -1).gather(-1, t.clamp(min=0)[..., None])[..., 0]
    lp_t = torch.where(t != -100, lp_t, 0.0)
    lp_truth = ref.linear_logprobs(h.double(), w.double(), t)
    assert float((lp.double() - lp_truth).abs().max()) <= 2 * float((lp_t.double() - lp_truth).abs().max()) + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logprobs_from_logits(dtype):
    g = torch.Generator().manual_seed(8)
    x = (4 * torch.randn(B, T, V, generator=g, dtype=torch.float64)).to(dtype)
    t = torch.randint(0, V, (B, T), generator=g)
    t[1, 3] = -100
    temp = 0.3 + torch.rand(B, T, generator=g, dtype=torch.float64)
    x0 = x.clone()
    x.requires_grad_()
    for kw in ({}, {"softcap": 3.0, "temperature": 0.3}, {"temperature": temp.to(dtype)}):
        out = loglik.logprobs_from_logits(x, t, return_entropy=True, return_lse=True, chunk_size=4, **kw)
        x64 = x.detach().double().requires_grad_()
        kw64 = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}
        exp = ref.logprobs_from_logits(x64, t, return_entropy=True, return_lse=True, **kw64)
        tol = {"rtol": 1e-2, "atol": 5e-2} if dtype == torch.bfloat16 else {"rtol": 2e-5, "atol": 1e-4}
        for o, e in zip(out, exp, strict=True):
            torch.testing.assert_close(o.double(), e, **tol)
        valid = (t != -100).double()
        ups = [torch.randn(t.shape, generator=g, dtype=torch.float64) * valid for _ in range(3)]
        (gx,) = _grads(out, [x], [u.to(out[0].dtype) for u in ups])
        (ge,) = _grads(exp, [x64], ups)
        assert gx.dtype == dtype and gx.shape == x.shape
        torch.testing.assert_close(gx.double(), ge, **tol)
    assert torch.equal(x.detach(), x0)  # never modified


def test_inputs_not_modified_and_numpy_roundtrip():
    h, w, b, t = _inputs(torch.float32)
    copies = [x.clone() for x in (h, w, b, t)]
    loglik.linear_cross_entropy(h, w, t, bias=b, softcap=2.0, temperature=0.5)
    loglik.linear_logprobs(h, w, t, bias=b, softcap=2.0)
    for a, c in zip((h, w, b, t), copies, strict=True):
        assert torch.equal(a, c)
    out = loglik.linear_logprobs(h.numpy(), w.numpy(), t.numpy(), return_entropy=True)
    assert isinstance(out[0], np.ndarray) and out[0].shape == (B, T)
    np.testing.assert_allclose(out[0], loglik.linear_logprobs(h, w, t).numpy(), rtol=1e-6, atol=1e-6)
    loss = loglik.linear_cross_entropy(h.numpy(), w.numpy(), t.numpy())
    assert isinstance(loss, np.ndarray)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(11)
    h = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1, 8, -100], [0, 4, 4]])

    def f_lp(h, w, b):
        lp, ent, lse = loglik.linear_logprobs(h, w, t, bias=b, softcap=2.0, temperature=0.7, return_entropy=True,
                                              return_lse=True, chunk_size=2)  # fmt: skip
        return lp, ent, lse * (t != -100)  # lse gets gradients on non-ignored rows only (documented)

    def f_ce(h, w, b):
        return loglik.linear_cross_entropy(h, w, t, bias=b, label_smoothing=0.1, z_loss=0.01, softcap=3.0,
                                           chunk_size=4)  # fmt: skip

    def f_ce_none(h, w, b):
        return loglik.linear_cross_entropy(h, w, t, bias=b, reduction="none", label_smoothing=0.1, z_loss=0.01)

    def f_lse_valid(h, w, b):  # lse only gets gradients on non-ignored rows (documented)
        lse = loglik.linear_logprobs(h, w, t, bias=b, return_lse=True)[1]
        return lse * (t != -100)

    for f in (f_lp, f_ce, f_ce_none, f_lse_valid):
        assert torch.autograd.gradcheck(f, (h, w, b), eps=1e-6, atol=1e-5, fast_mode=True)
    x = torch.randn(2, 3, 9, generator=g, dtype=torch.float64, requires_grad=True)

    def f_logits(x):
        lp, ent, lse = loglik.logprobs_from_logits(x, t, softcap=2.0, temperature=1.5, return_entropy=True,
                                                   return_lse=True)  # fmt: skip
        return lp, ent, lse * (t != -100)

    assert torch.autograd.gradcheck(f_logits, (x,), fast_mode=True)


def test_backward_twice_recomputes():
    # The first backward hands over the gradients computed in the forward; a second one recomputes them.
    h, w, _, t = _inputs(torch.float32)
    h.requires_grad_()
    loss = loglik.linear_cross_entropy(h, w, t, label_smoothing=0.1)
    loss.backward(retain_graph=True)
    first = h.grad.clone()
    (2.0 * loss).backward()
    torch.testing.assert_close(h.grad, 3.0 * first)


def test_upstream_scale_and_no_grad():
    h, w, _, t = _inputs(torch.float32)
    h.requires_grad_()
    w.requires_grad_()
    (3.0 * loglik.linear_cross_entropy(h, w, t, reduction="sum")).backward()
    gh3, gw3 = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    loglik.linear_cross_entropy(h, w, t, reduction="sum").backward()
    torch.testing.assert_close(gh3, 3.0 * h.grad)
    torch.testing.assert_close(gw3, 3.0 * w.grad)
    with torch.no_grad():
        loss = loglik.linear_cross_entropy(h, w, t)
    assert not loss.requires_grad


def test_chunk_helpers_merge_across_vocab_slices():
    # The per-chunk statistics of two vocabulary slices merge exactly into those of the whole row (vocab-parallel).
    g = torch.Generator().manual_seed(12)
    x = 5 * torch.randn(6, 50, generator=g)
    t = torch.tensor([3, 49, 20, -100, 25, 0])
    full = lm._chunk_stats(x.clone(), t, softcap=4.0, inv_temp=0.5)
    a = lm._chunk_stats(x[:, :25].contiguous(), t, softcap=4.0, inv_temp=0.5)
    b = lm._chunk_stats(x[:, 25:].contiguous(), t, vocab_start=25, softcap=4.0, inv_temp=0.5)
    merged = lm._combine_stats(a, b)
    lse_f, ez_f, zt_f = lm._finalize_stats(full)
    lse_m, ez_m, zt_m = lm._finalize_stats(merged)
    for p, q in ((lse_f, lse_m), (ez_f, ez_m), (zt_f, zt_m), (full[:, 3], merged[:, 3])):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)
    # The torch fallback (other devices / dtypes) computes the same statistics and gradients as the C++ kernels.
    torch_stats = lm._chunk_stats(x.half(), t, softcap=4.0, inv_temp=0.5)
    torch.testing.assert_close(lm._finalize_stats(torch_stats)[0], lse_f, rtol=1e-3, atol=1e-2)
    coef = lm._ce_coef(None, 1.0, 0.1, 0.01, 50, t != -100, torch.float32)
    dc = lm._chunk_grad(x, t, lse_f, ez_f, coef, softcap=4.0, inv_temp=0.5)
    dt = lm._chunk_grad_torch(x, t, lse_f, ez_f, coef, vocab_start=0, ignore_index=-100, inv_temp=0.5, softcap=4.0,
                              transformed=False)  # fmt: skip
    torch.testing.assert_close(dc, dt, rtol=1e-5, atol=1e-6)


def test_reference_impl_and_nn_modules():
    from loglik import nn as lnn

    h, w, b, t = _inputs(torch.float64)
    mod = lnn.LinearCrossEntropy(label_smoothing=0.1, softcap=5.0)
    torch.testing.assert_close(mod(h, w, t, bias=b), ref.linear_cross_entropy(h, w, t, bias=b, label_smoothing=0.1,
                                                                              softcap=5.0))  # fmt: skip
    lp_mod = lnn.LinearLogprobs(return_entropy=True, impl="reference")
    lp, ent = lp_mod(h, w, t)
    e_lp, e_ent = ref.linear_logprobs(h, w, t, return_entropy=True)
    torch.testing.assert_close(lp, e_lp)
    torch.testing.assert_close(ent, e_ent)
    assert "softcap=5.0" in repr(mod)


def test_sequence_logprobs():
    g = torch.Generator().manual_seed(13)
    lp = -torch.rand(3, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 1, 1]], dtype=torch.bool)
    lp.requires_grad_()
    s = loglik.sequence_logprobs(lp, mask)
    torch.testing.assert_close(s, ref.sequence_logprobs(lp, mask))
    assert float(s[1].detach()) == 0.0
    mean, valid = loglik.sequence_logprobs(lp, mask, average=True)
    assert valid.tolist() == [True, False, True] and torch.isfinite(mean).all() and float(mean[1].detach()) == 0.0
    torch.testing.assert_close(mean[0], lp[0, :3].mean())
    (gl,) = torch.autograd.grad(mean.sum(), lp)
    torch.testing.assert_close(gl, mask.double() / mask.double().sum(1, keepdim=True).clamp(min=1))
    seg = torch.tensor([[0, 0, 1, 1, 1, -1], [2, 2, -1, -1, 0, 0], [-1, -1, -1, -1, -1, -1]])
    s = loglik.sequence_logprobs(lp, seg)
    torch.testing.assert_close(s, ref.sequence_logprobs(lp, seg))
    mean, valid = loglik.sequence_logprobs(lp, seg, average=True)
    em, ev = ref.sequence_logprobs(lp, seg, average=True)
    torch.testing.assert_close(mean, em)
    assert torch.equal(valid, ev) and not bool(valid[2].any()) and valid[1].tolist() == [True, False, True]
    out = loglik.sequence_logprobs(lp.detach().numpy(), mask.numpy())
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    assert float(loglik.sequence_logprobs(lp[0], mask[0]).detach()) == pytest.approx(float(lp[0, :3].sum().detach()))


def test_sequence_logprobs_all_padding_segment_ids():
    # Regression: every segment id negative (all padding) raised a torch RuntimeError from scatter_add.
    lp = -torch.rand(2, 5, dtype=torch.float64, requires_grad=True)
    seg = torch.full((2, 5), -1)
    s = loglik.sequence_logprobs(lp, seg)
    assert s.shape == (2, 0) and s.requires_grad
    mean, valid = loglik.sequence_logprobs(lp, seg, average=True)
    assert mean.shape == (2, 0) and valid.shape == (2, 0) and valid.dtype == torch.bool
    out = loglik.sequence_logprobs(np.zeros(4), -np.ones(4, dtype=np.int64))
    assert isinstance(out, np.ndarray) and out.shape == (0,)


def _bad_calls():
    h, w, b, t = _inputs(torch.float32)
    nan_h = h.clone()
    nan_h[0, 0, 0] = float("nan")
    inf_w = w.clone()
    inf_w[3, 2] = float("inf")
    return [
        ("hidden", lambda: loglik.linear_logprobs(nan_h, w, t), ValueError),
        ("weight", lambda: loglik.linear_cross_entropy(h, inf_w, t), ValueError),
        ("weight", lambda: loglik.linear_logprobs(h, w[:, :-1], t), ValueError),
        ("weight", lambda: loglik.linear_logprobs(h, w.double(), t), TypeError),
        ("targets", lambda: loglik.linear_logprobs(h, w, t[:, :-1]), ValueError),
        ("targets", lambda: loglik.linear_logprobs(h, w, t.float()), TypeError),
        ("targets", lambda: loglik.linear_logprobs(h, w, torch.full_like(t, V)), ValueError),
        ("targets", lambda: loglik.linear_logprobs(h, w, torch.full_like(t, -3)), ValueError),
        ("hidden", lambda: loglik.linear_logprobs(h.int(), w.int(), t), TypeError),
        ("bias", lambda: loglik.linear_logprobs(h, w, t, bias=b[:-1]), ValueError),
        ("temperature", lambda: loglik.linear_logprobs(h, w, t, temperature=0.0), ValueError),
        ("temperature", lambda: loglik.linear_logprobs(h, w, t, temperature=float("nan")), ValueError),
        ("temperature", lambda: loglik.linear_logprobs(h, w, t, temperature=-torch.ones(B, T)), ValueError),
        ("temperature", lambda: loglik.linear_logprobs(h, w, t, temperature=torch.ones(B)), ValueError),
        ("softcap", lambda: loglik.linear_logprobs(h, w, t, softcap=-1.0), ValueError),
        ("label_smoothing", lambda: loglik.linear_cross_entropy(h, w, t, label_smoothing=1.5), ValueError),
        ("z_loss", lambda: loglik.linear_cross_entropy(h, w, t, z_loss=-0.1), ValueError),
        ("reduction", lambda: loglik.linear_cross_entropy(h, w, t, reduction="avg"), ValueError),
        ("weights", lambda: loglik.linear_cross_entropy(h, w, t, weights=torch.ones(B)), ValueError),
        ("weights", lambda: loglik.linear_cross_entropy(h, w, t, weights=torch.full((B, T), np.inf)), ValueError),
        ("impl", lambda: loglik.linear_logprobs(h, w, t, impl="fast"), ValueError),
        ("chunk_size", lambda: loglik.linear_logprobs(h, w, t, chunk_size=0), ValueError),
        ("ignore_index", lambda: loglik.linear_logprobs(h, w, t, ignore_index=1.5), TypeError),
        ("vocab_start", lambda: loglik.linear_logprobs(h, w, t, process_group=object()), ValueError),
        (
            "logits",
            lambda: loglik.logprobs_from_logits(torch.full((2, 5), float("nan")), torch.zeros(2).long()),
            ValueError,
        ),  # fmt: skip
        ("mask_or_segment_ids", lambda: loglik.sequence_logprobs(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError),
        (
            "token_logprobs",
            lambda: loglik.sequence_logprobs(torch.full((2, 3), np.nan), torch.ones(2, 3).bool()),
            ValueError,
        ),  # fmt: skip
        ("hidden", lambda: loglik.linear_logprobs([[1.0]], w, t), TypeError),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_inputs_name_the_argument(case):
    name, call, exc = _bad_calls()[case]
    with pytest.raises(exc, match=name):
        call()


def test_torch_compile_fullgraph():
    h, w, b, t = _inputs(torch.float32, shape=(2, 3), d=8, v=11)
    h.requires_grad_()
    w.requires_grad_()

    def step(h, w, t):
        loss = loglik.linear_cross_entropy(h, w, t, z_loss=1e-3)
        lp, ent = loglik.linear_logprobs(h, w, t, return_entropy=True)
        return loss + 0.1 * (lp * 2).sum() + ent.mean()

    try:
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        out = compiled(h, w, t)
    except Exception as exc:  # pragma: no cover - environment without a working compiler stack
        if "fullgraph" in str(exc) or "Unsupported" in type(exc).__name__:
            raise
        pytest.skip(f"torch.compile cannot run here: {type(exc).__name__}: {exc}")
    g = torch.autograd.grad(out, (h, w))
    eager = step(h, w, t)
    ge = torch.autograd.grad(eager, (h, w))
    torch.testing.assert_close(out, eager)
    for a, e in zip(g, ge, strict=True):
        torch.testing.assert_close(a, e)


def test_triton_dispatch_interpreted():
    pytest.importorskip("triton")
    import os

    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
    h, w, b, t = _inputs(torch.float32, shape=(2, 5), d=16, v=37)
    h.requires_grad_()
    w.requires_grad_()
    out = loglik.linear_logprobs(h, w, t, bias=b, softcap=3.0, temperature=0.7, return_entropy=True, impl="triton")
    exp = ref.linear_logprobs(h.double(), w.double(), t, bias=b.double(), softcap=3.0, temperature=0.7,
                              return_entropy=True)  # fmt: skip
    for o, e in zip(out, exp, strict=True):
        torch.testing.assert_close(o.double(), e, rtol=1e-5, atol=1e-5)
    loss = loglik.linear_cross_entropy(h, w, t, impl="triton", z_loss=0.01)
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    exp = ref.linear_cross_entropy(h64, w64, t, z_loss=0.01)
    for a, e in zip(torch.autograd.grad(loss, (h, w)), torch.autograd.grad(exp, (h64, w64)), strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5)


def test_process_group_delegates_to_vocab_parallel():
    # One-rank gloo group in this process: the public API with process_group= must match the single-process path.
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised here")
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        h, w, b, t = _inputs(torch.float64, shape=(2, 5), d=6, v=13)
        group = dist.group.WORLD
        lp, ent = loglik.linear_logprobs(h, w, t, bias=b, return_entropy=True, process_group=group, vocab_start=0)
        e_lp, e_ent = loglik.linear_logprobs(h, w, t, bias=b, return_entropy=True)
        torch.testing.assert_close(lp, e_lp)
        torch.testing.assert_close(ent, e_ent)
        kw = {"label_smoothing": 0.1, "z_loss": 0.01, "softcap": 3.0}
        loss = loglik.linear_cross_entropy(h, w, t, process_group=group, vocab_start=0, **kw)
        torch.testing.assert_close(loss, loglik.linear_cross_entropy(h, w, t, **kw))
    finally:
        dist.destroy_process_group()
