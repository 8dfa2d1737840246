"""Triton LM kernels (kernels/lm.py) against a float64 pure-torch reference.

Without a GPU these run under TRITON_INTERPRET=1 (set in conftest.py) on tiny shapes whose block sizes force several
vocabulary tiles, a partial last tile, partial D chunks and several vocabulary splits.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from loglik.kernels import lm as K  # noqa: E402

pytestmark = [
    pytest.mark.triton,
    # these tests build CPU tensors: they exercise the kernels through the interpreter (compiled GPU runs of the same
    # kernels are in test_lm_cuda.py)
    pytest.mark.skipif(not K._interpret(), reason="needs TRITON_INTERPRET=1 (CPU tensors)"),
]

N, D, V = 5, 40, 37
BLOCKS = dict(block_n=16, block_v=16, block_d=16)  # V=37 -> 3 tiles (last partial), D=40 -> 3 chunks (last partial)
IGNORE = -100


def reference(h, w, t, *, bias=None, temperature=1.0, softcap=None, ignore_index=IGNORE, logits=None):
    """float64 (logprobs, lse, entropy) of log_softmax(softcap(h w^T + b) / temperature); 0 at ignored rows."""
    x = logits.double() if logits is not None else h.double() @ w.double().T
    if bias is not None:
        x = x + bias.double()
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    temp = temperature.double()[:, None] if isinstance(temperature, torch.Tensor) else temperature
    z = x / temp
    lse = torch.logsumexp(z, 1)
    logp = z - lse[:, None]
    ignored = t == ignore_index
    safe_t = torch.where(ignored, torch.zeros_like(t), t)
    lp = torch.where(ignored, torch.zeros_like(lse), logp.gather(1, safe_t[:, None])[:, 0])
    ent = torch.where(ignored, torch.zeros_like(lse), -(logp.exp() * logp).sum(1))
    return lp, lse, ent


def make(dtype=torch.float32, *, scale=1.0, seed=0, n=N, d=D, v=V):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    w = (torch.randn(v, d, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    b = torch.randn(v, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randint(0, v, (n,), generator=g)
    if n > 2:
        t[2] = IGNORE
    temp = (torch.rand(n, generator=g, dtype=torch.float64) * 2.7 + 0.3).to(torch.float32)
    return h, w, b, t, temp


OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param({"bias": True}, id="bias"),
    pytest.param({"temperature": 0.3, "softcap": 3.0}, id="temp0.3-softcap"),
    pytest.param({"temperature": 3.0, "bias": True}, id="temp3-bias"),
    pytest.param({"temperature": "rows", "softcap": 2.0, "bias": True}, id="temp-rows-softcap-bias"),
]


def _kw(opts: dict[str, Any], b: Any, temp: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if opts.get("bias"):
        kw["bias"] = b
    if opts.get("temperature") == "rows":
        kw["temperature"] = temp
    elif "temperature" in opts:
        kw["temperature"] = opts["temperature"]
    if "softcap" in opts:
        kw["softcap"] = opts["softcap"]
    return kw


def _err(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("splits", [1, 3])
def test_linear_forward_matches_reference(opts: dict[str, Any], splits: int) -> None:
    h, w, b, t, temp = make()
    kw = _kw(opts, b, temp)
    lp, lse, ent = K.linear_logprobs_fwd(h, w, t, return_entropy=True, num_splits=splits, **BLOCKS, **kw)
    rlp, rlse, rent = reference(h, w, t, **kw)
    assert lp.dtype == lse.dtype == ent.dtype == torch.float32
    assert _err(lp, rlp) < 1e-5 and _err(lse, rlse) < 1e-5 and _err(ent, rent) < 1e-5
    assert lp[2] == 0 and ent[2] == 0  # the ignored row
    _, _, none = K.linear_logprobs_fwd(h, w, t, **BLOCKS, **kw)
    assert none is None


def _reference_grads(h, w, b, t, kw, g_lp, g_ent, g_lse):
    hd = h.double().requires_grad_()
    wd = w.double().requires_grad_()
    bd = b.double().requires_grad_() if "bias" in kw else None
    rkw = {**kw, "bias": bd} if bd is not None else kw
    rlp, rlse, rent = reference(hd, wd, t, **rkw)
    keep = (t != IGNORE).double()
    loss = (g_lp.double() * rlp + g_ent.double() * rent + keep * g_lse.double() * rlse).sum()
    grads = torch.autograd.grad(loss, [x for x in (hd, wd, bd) if x is not None])
    return grads[0], grads[1], (grads[2] if bd is not None else None)


@pytest.mark.parametrize("opts", OPTIONS)
def test_linear_backward_matches_reference(opts: dict[str, Any]) -> None:
    h, w, b, t, temp = make()
    kw = _kw(opts, b, temp)
    g = torch.Generator().manual_seed(1)
    g_lp, g_ent, g_lse = (torch.randn(N, generator=g) for _ in range(3))
    _, lse, ent = K.linear_logprobs_fwd(h, w, t, return_entropy=True, **BLOCKS, **kw)
    gh, gw, gb = K.linear_logprobs_bwd(h, w, t, lse, g_lp, g_ent, entropy=ent, grad_lse=g_lse, **BLOCKS, **kw)
    rh, rw, rb = _reference_grads(h, w, b, t, kw, g_lp, g_ent, g_lse)
    assert gh.dtype == h.dtype and gw.dtype == w.dtype
    assert _err(gh, rh) < 2e-5 and _err(gw, rw) < 2e-5
    if "bias" in kw:
        assert gb is not None and gb.dtype == b.dtype and _err(gb, rb) < 2e-5
    else:
        assert gb is None
    assert gh[2].abs().max() == 0  # ignored row: no gradient
    # without the entropy, the backward recomputes it and gives the same numbers
    gh2, gw2, _ = K.linear_logprobs_bwd(h, w, t, lse, g_lp, g_ent, grad_lse=g_lse, **BLOCKS, **kw)
    assert torch.equal(gh, gh2) and torch.equal(gw, gw2)


@pytest.mark.parametrize("opts", [OPTIONS[0], OPTIONS[4]])
def test_logit_mean_and_its_gradient(opts: dict[str, Any]) -> None:
    h, w, b, t, temp = make(seed=12)
    kw = _kw(opts, b, temp)
    lp, lse, ent, zmean = K.linear_logprobs_fwd(h, w, t, return_logit_mean=True, **BLOCKS, **kw)
    assert ent is None
    hd, wd = h.double().requires_grad_(), w.double().requires_grad_()
    bd = b.double().requires_grad_() if "bias" in kw else None
    x = hd @ wd.T + (bd if bd is not None else 0.0)
    if "softcap" in kw:
        x = kw["softcap"] * torch.tanh(x / kw["softcap"])
    tt = kw.get("temperature", 1.0)
    z = x / (tt.double()[:, None] if isinstance(tt, torch.Tensor) else tt)
    assert _err(zmean, z.mean(1)) < 1e-5
    g_lp, g_zm = torch.randn(N), torch.randn(N)
    gh, gw, gb = K.linear_logprobs_bwd(h, w, t, lse, g_lp, grad_logit_mean=g_zm, **BLOCKS, **kw)
    keep = (t != IGNORE).double()
    rlp = reference(hd, wd, t, **{**kw, "bias": bd} if bd is not None else kw)[0]
    loss = (g_lp.double() * rlp).sum() + (keep * g_zm.double() * z.mean(1)).sum()
    refs = torch.autograd.grad(loss, [x for x in (hd, wd, bd) if x is not None])
    assert _err(gh, refs[0]) < 2e-5 and _err(gw, refs[1]) < 2e-5
    if bd is not None:
        assert _err(gb, refs[2]) < 2e-5


def test_backward_is_deterministic_and_skips_unneeded_passes() -> None:
    h, w, b, t, _ = make(seed=4)
    g_lp = torch.randn(N)
    _, lse, _ = K.linear_logprobs_fwd(h, w, t, bias=b, **BLOCKS)
    first = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, **BLOCKS)
    second = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, **BLOCKS)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    gh, gw, gb = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, needs_weight_grad=False, **BLOCKS)
    assert gw is None and gb is None and torch.equal(gh, first[0])
    gh, gw, gb = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, needs_hidden_grad=False, **BLOCKS)
    assert gh is None and torch.equal(gw, first[1]) and torch.equal(gb, first[2])
    # vocabulary-split pass A: per-split slices (deterministic) or contended atomics: same values up to summation order
    split1 = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, hidden_splits=3, **BLOCKS)[0]
    split2 = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, hidden_splits=3, **BLOCKS)[0]
    assert torch.equal(split1, split2) and _err(split1, first[0]) < 1e-6
    gh, gw, _ = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, deterministic=False, hidden_splits=3, **BLOCKS)
    assert _err(gh, first[0]) < 1e-6 and torch.equal(gw, first[1])


def test_extreme_logits_and_all_ignored() -> None:
    h, w, b, t, _ = make(scale=3e3, seed=2)  # |logits| ~ 1e4
    x = h.double() @ w.double().T
    assert x.abs().max() > 5e3
    lp, lse, ent = K.linear_logprobs_fwd(h, w, t, return_entropy=True, **BLOCKS)
    rlp, rlse, rent = reference(h, w, t)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    # float32 logits of size 1e4 carry ~1e-3 absolute rounding, as in any float32 implementation
    assert _err(lp, rlp) < 1e-2 and _err(lse, rlse) / 1e4 < 1e-6 and _err(ent, rent) < 1e-2
    gh, gw, _ = K.linear_logprobs_bwd(h, w, t, lse, torch.ones(N), torch.ones(N), entropy=ent, **BLOCKS)
    assert torch.isfinite(gh).all() and torch.isfinite(gw).all()
    t_all = torch.full((N,), IGNORE)
    lp, _, ent = K.linear_logprobs_fwd(h, w, t_all, return_entropy=True, **BLOCKS)
    assert lp.abs().max() == 0 and ent.abs().max() == 0
    gh, gw, _ = K.linear_logprobs_bwd(h, w, t_all, lse, torch.ones(N), torch.ones(N), entropy=ent, **BLOCKS)
    assert gh.abs().max() == 0 and gw.abs().max() == 0


def test_strided_hidden_and_int32_targets() -> None:
    h, w, b, t, _ = make(seed=5)
    wide = torch.randn(N, 2 * D)
    wide[:, ::2] = h
    hs = wide[:, ::2]  # stride (2D, 2)
    assert not hs.is_contiguous()
    lp, lse, _ = K.linear_logprobs_fwd(hs, w, t.to(torch.int32), **BLOCKS)
    rlp, rlse, _ = reference(h, w, t)
    assert _err(lp, rlp) < 1e-5 and _err(lse, rlse) < 1e-5
    gh, gw, _ = K.linear_logprobs_bwd(hs, w, t.to(torch.int32), lse, torch.ones(N), **BLOCKS)
    rh, rw, _ = _reference_grads(h, w, b, t, {}, torch.ones(N), torch.zeros(N), torch.zeros(N))
    assert _err(gh, rh) < 2e-5 and _err(gw, rw) < 2e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_within_twice_torch_error(dtype: Any) -> None:
    h, w, b, t, _ = make(dtype, seed=6)
    rlp, rlse, rent = reference(h, w, t, bias=b)  # float64 truth of the rounded inputs
    lp, lse, ent = K.linear_logprobs_fwd(h, w, t, bias=b, return_entropy=True, **BLOCKS)
    # torch's own low-precision pipeline: logits in the input dtype, log_softmax in the input dtype
    z = torch.nn.functional.linear(h, w, b)
    tl = torch.log_softmax(z, dim=-1).float()
    safe_t = torch.where(t == IGNORE, torch.zeros_like(t), t)
    torch_lp = torch.where(t == IGNORE, torch.zeros(N), tl.gather(1, safe_t[:, None])[:, 0])
    torch_err = _err(torch_lp, rlp)
    assert _err(lp, rlp) <= 2 * torch_err + 1e-6
    assert _err(lse, rlse) < 1e-4 and _err(ent, rent) < 1e-4
    g_lp = torch.randn(N, generator=torch.Generator().manual_seed(7))
    gh, gw, gb = K.linear_logprobs_bwd(h, w, t, lse, g_lp, bias=b, **BLOCKS)
    assert gh.dtype == dtype and gw.dtype == dtype and gb.dtype == dtype
    rh, rw, rb = _reference_grads(h, w, b, t, {"bias": b}, g_lp, torch.zeros(N), torch.zeros(N))
    hq = h.detach().clone().requires_grad_()
    wq = w.detach().clone().requires_grad_()
    zq = torch.nn.functional.linear(hq, wq, b)
    lpq = torch.log_softmax(zq, -1).gather(1, safe_t[:, None])[:, 0]
    (torch.where(t == IGNORE, 0.0, g_lp).to(dtype) * lpq).sum().backward()
    assert _err(gh, rh) <= 2 * _err(hq.grad, rh) + 1e-6
    assert _err(gw, rw) <= 2 * _err(wq.grad, rw) + 1e-6


# ---------------------------------------------------------------------------------------------- logits kernels


@pytest.mark.parametrize("opts", [{}, {"temperature": "rows", "softcap": 4.0}, {"temperature": 0.3}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_from_logits_matches_reference(opts: dict[str, Any], dtype: Any) -> None:
    g = torch.Generator().manual_seed(8)
    logits = (torch.randn(N, V, generator=g) * 4).to(dtype)
    _, _, _, t, temp = make()
    kw = _kw(opts, None, temp)
    lp, lse, ent = K.logprobs_from_logits_fwd(logits, t, return_entropy=True, block_v=16, **kw)
    rlp, rlse, rent = reference(None, None, t, logits=logits, **kw)
    assert _err(lp, rlp) < 1e-5 and _err(lse, rlse) < 1e-5 and _err(ent, rent) < 1e-5
    g_lp, g_ent, g_lse = (torch.randn(N, generator=g) for _ in range(3))
    grad = K.logprobs_from_logits_bwd(logits, t, lse, g_lp, g_ent, entropy=ent, grad_lse=g_lse, block_v=16, **kw)
    ld = logits.double().requires_grad_()
    rlp, rlse, rent = reference(None, None, t, logits=ld, **kw)
    keep = (t != IGNORE).double()
    ref = torch.autograd.grad((g_lp * rlp + g_ent * rent + keep * g_lse * rlse).sum(), ld)[0]
    assert grad.dtype == dtype and grad.shape == (N, V)
    tol = 1e-5 if dtype == torch.float32 else 2e-2 * float(ref.abs().max())
    assert _err(grad, ref) < tol


def test_logprobs_from_logits_strided() -> None:
    g = torch.Generator().manual_seed(9)
    big = torch.randn(V, N, generator=g)
    logits = big.T  # column stride != 1
    _, _, _, t, _ = make()
    lp, lse, _ = K.logprobs_from_logits_fwd(logits, t, block_v=16)
    rlp, rlse, _ = reference(None, None, t, logits=logits)
    assert _err(lp, rlp) < 1e-5 and _err(lse, rlse) < 1e-5


# ---------------------------------------------------------------------------------------------- properties


@given(shift=st.floats(-50, 50), seed=st.integers(0, 2**16))
def test_lse_shift_invariance(shift: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, V, generator=g) * 3
    t = torch.randint(0, V, (N,), generator=g)
    lp, lse, ent = K.logprobs_from_logits_fwd(logits, t, return_entropy=True, block_v=16)
    lp2, lse2, ent2 = K.logprobs_from_logits_fwd(logits + shift, t, return_entropy=True, block_v=16)
    assert _err(lse2 - shift, lse) < 1e-4
    assert _err(lp2, lp) < 1e-4 and _err(ent2, ent) < 1e-4


@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 30.0), cap=st.one_of(st.none(), st.floats(0.5, 20.0)))
def test_probabilities_sum_to_one_and_bounds(seed: int, scale: float, cap: float | None) -> None:
    v = 21
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, 16, generator=g).expand(v, 16) * scale  # the same token, every vocabulary entry as target
    w = torch.randn(v, 16, generator=g) * 0.5
    t = torch.arange(v)
    lp, _, ent = K.linear_logprobs_fwd(h, w, t, softcap=cap, return_entropy=True, block_n=16, block_v=16, block_d=16)
    assert (lp <= 0).all()
    assert abs(float(lp.double().exp().sum()) - 1.0) < 1e-4
    assert (ent >= 0).all() and (ent <= math.log(v) + 1e-5).all()


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_naming_the_argument() -> None:
    h, w, b, t, _ = make()
    cases = [
        (lambda: K.linear_logprobs_fwd(h[0], w, t), ValueError, "hidden"),
        (lambda: K.linear_logprobs_fwd(h, w[:, :-1], t), ValueError, "weight"),
        (lambda: K.linear_logprobs_fwd(h, w.double(), t), TypeError, "weight"),
        (lambda: K.linear_logprobs_fwd(h.double(), w.double(), t), TypeError, "hidden"),
        (lambda: K.linear_logprobs_fwd(h, w, t.float()), TypeError, "targets"),
        (lambda: K.linear_logprobs_fwd(h, w, t[:-1]), ValueError, "targets"),
        (lambda: K.linear_logprobs_fwd(h, w, t, temperature=0.0), ValueError, "temperature"),
        (lambda: K.linear_logprobs_fwd(h, w, t, temperature=torch.ones(N + 1)), ValueError, "temperature"),
        (lambda: K.linear_logprobs_fwd(h, w, t, softcap=-1.0), ValueError, "softcap"),
        (lambda: K.linear_logprobs_fwd(h, w, t, bias=b[:-1]), ValueError, "bias"),
        (lambda: K.linear_logprobs_fwd(h, w, t, block_v=24), ValueError, "block_v"),
        (lambda: K.linear_logprobs_bwd(h, w, t, torch.zeros(N - 1), torch.ones(N)), ValueError, "lse"),
        (lambda: K.logprobs_from_logits_fwd(h, t, softcap=float("inf")), ValueError, "softcap"),
    ]
    for fn, exc, name in cases:
        with pytest.raises(exc, match=f"^{name}"):
            fn()


def test_inputs_not_modified_and_empty_batch() -> None:
    h, w, b, t, temp = make()
    copies = [x.clone() for x in (h, w, b, t, temp)]
    _, lse, ent = K.linear_logprobs_fwd(h, w, t, bias=b, temperature=temp, return_entropy=True, **BLOCKS)
    K.linear_logprobs_bwd(h, w, t, lse, torch.ones(N), torch.ones(N), bias=b, temperature=temp, **BLOCKS)
    assert all(torch.equal(x, y) for x, y in zip(copies, (h, w, b, t, temp), strict=True))
    lp, lse, ent = K.linear_logprobs_fwd(h[:0], w, t[:0], return_entropy=True, **BLOCKS)
    assert lp.shape == lse.shape == ent.shape == (0,)
    gh, gw, _ = K.linear_logprobs_bwd(h[:0], w, t[:0], lse, lp, **BLOCKS)
    assert gh.shape == (0, D) and gw.abs().max() == 0
