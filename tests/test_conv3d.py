"""conv3d (C++ kernel, torch custom op, numpy entry point) against torch.nn.functional.conv3d in float64."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import loglik
from loglik import _backend
from loglik.reference import conv as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(not _backend.has_compiled(), reason="compiled core not built")

# (x shape, weight shape, stride, padding, dilation): odd sizes, batch 1, one channel, anisotropic kernels.
CASES = [
    ((2, 3, 5, 6, 37), (5, 3, 3, 2, 7), 1, (1, 0, 3), 1),
    ((1, 1, 7, 5, 50), (3, 1, 3, 3, 5), (2, 1, 3), (1, 2, 2), (1, 2, 2)),
    ((2, 2, 6, 7, 41), (9, 2, 2, 3, 4), (1, 2, 2), (0, 1, 3), (2, 1, 3)),
    ((1, 1, 3, 3, 9), (1, 1, 3, 3, 9), 1, 0, 1),
    ((1, 2, 4, 4, 33), (4, 2, 1, 1, 15), (1, 1, 4), (0, 0, 5), 1),
    ((3, 1, 1, 1, 129), (17, 1, 1, 1, 7), (1, 1, 2), (0, 0, 3), (1, 1, 3)),
    ((1, 13, 3, 4, 20), (1, 13, 3, 3, 3), 1, 1, 1),
    ((1, 2, 5, 5, 16), (6, 2, 3, 3, 3), 3, 2, 2),
    # long energy axes: wide register blocks inside, narrow ones and zero-padded segment copies at the row ends;
    # C * KE <= 8 takes grad_input's lifted-taps path
    ((2, 1, 4, 5, 300), (16, 1, 3, 3, 7), 1, (1, 1, 3), 1),
    ((1, 2, 3, 3, 211), (5, 2, 3, 1, 4), (1, 2, 1), (1, 0, 5), (1, 1, 2)),
    ((1, 1, 2, 2, 70), (3, 1, 1, 2, 3), 1, (0, 1, 0), (1, 1, 3)),
    ((1, 4, 3, 3, 200), (8, 4, 3, 3, 3), 1, 1, 1),
    # rows of whole vectors and few rows per position: grad_weight reads grad_output in place
    ((2, 1, 3, 4, 64), (5, 1, 3, 3, 5), 1, (1, 1, 2), 1),
    # kernels spanning the whole energy axis with a 1x1 footprint: "auto" runs them as BLAS products
    ((2, 3, 4, 5, 16), (6, 3, 1, 1, 16), 1, 0, 1),
    ((1, 2, 3, 3, 9), (4, 2, 1, 1, 9), (1, 1, 3), 0, 1),
]
ISAS = ["auto", "avx512", "avx2", "generic"]


def _isa_ok(isa: str) -> bool:
    try:
        loglik._backend.C().conv3d_forward(
            np.zeros((1, 1, 1, 1, 1)), np.zeros((1, 1, 1, 1, 1)), None, (1, 1, 1), (0, 0, 0), (1, 1, 1), isa
        )
    except ValueError:
        return False
    return True


def _torch_truth(x, w, b, gy, s, p, d):
    xt = torch.from_numpy(x).double().requires_grad_()
    wt = torch.from_numpy(w).double().requires_grad_()
    y = F.conv3d(xt, wt, None if b is None else torch.from_numpy(b).double(), stride=s, padding=p, dilation=d)
    y.backward(torch.from_numpy(gy).double())
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _make(xs, ws, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("xs,ws,s,p,d", CASES)
def test_kernel_matches_torch_float64(xs, ws, s, p, d, isa):
    if not _isa_ok(isa):
        pytest.skip(f"CPU lacks {isa}")
    C = _backend.C()
    x, w, b = _make(xs, ws, np.float64)
    st_, pt, dt = (loglik.conv._triple(v, "v", low=0) for v in (s, p, d))
    y, used = C.conv3d_forward(x, w, b, st_, pt, dt, isa)
    dense = ws[2:4] == (1, 1) and ws[4] == xs[4] and p == 0
    if isa == "auto":
        assert (used == "blas") == dense
    else:
        assert used == isa
    gy = np.random.default_rng(1).standard_normal(y.shape)
    y_t, gx_t, gw_t = _torch_truth(x, w, b, gy, s, p, d)
    gx, _ = C.conv3d_grad_input(gy, w, list(xs), st_, pt, dt, isa)
    gw, _ = C.conv3d_grad_weight(x, gy, list(ws), st_, pt, dt, isa)
    np.testing.assert_allclose(y, y_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, gx_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, gw_t, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("xs,ws,s,p,d", CASES)
def test_reference_matches_torch(xs, ws, s, p, d):
    x, w, b = _make(xs, ws, np.float64)
    y = ref.conv3d(x, w, b, s, p, d)
    gy = np.random.default_rng(1).standard_normal(y.shape)
    y_t, gx_t, gw_t = _torch_truth(x, w, b, gy, s, p, d)
    np.testing.assert_allclose(y, y_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.conv3d_grad_input(gy, w, xs, s, p, d), gx_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.conv3d_grad_weight(x, gy, ws, s, p, d), gw_t, rtol=1e-12, atol=1e-11)
    assert ref.conv3d_output_shape(xs, ws, s, p, d) == y.shape == loglik.conv3d_output_shape(xs, ws, s, p, d)


@pytest.mark.parametrize("xs,ws,s,p,d", CASES[:5])
def test_float32_error_within_torch_float32_error(xs, ws, s, p, d):
    """loglik's float32 error (vs float64 truth) is at most a few times torch's own float32 error."""
    x, w, b = _make(xs, ws, np.float32)
    y32 = loglik.conv3d(x, w, b, s, p, d)
    assert y32.dtype == np.float32
    gy = np.random.default_rng(1).standard_normal(y32.shape).astype(np.float32)
    y_t, gx_t, gw_t = _torch_truth(x, w, b, gy, s, p, d)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    yt32 = F.conv3d(xt, wt, torch.from_numpy(b), stride=s, padding=p, dilation=d)
    yt32.backward(torch.from_numpy(gy))
    gx32 = loglik.conv3d_grad_input(gy, w, xs, s, p, d)
    gw32 = loglik.conv3d_grad_weight(x, gy, ws, s, p, d)
    for ours, theirs, truth in (
        (y32, yt32.detach().numpy(), y_t),
        (gx32, xt.grad.numpy(), gx_t),
        (gw32, wt.grad.numpy(), gw_t),
    ):
        err = np.abs(ours - truth).max()
        err_torch = np.abs(theirs - truth).max()
        scale = np.abs(truth).max()
        assert err <= 4 * err_torch + 1e-6 * scale


@pytest.mark.parametrize("xs,ws,s,p,d", CASES[:4])
def test_torch_op_forward_and_gradients(xs, ws, s, p, d):
    x, w, b = _make(xs, ws, np.float64)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    y = loglik.conv3d(xt, wt, bt, s, p, d)
    gy = torch.randn(y.shape, dtype=torch.float64)
    y.backward(gy)
    x2, w2, b2 = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    y2 = F.conv3d(x2, w2, b2, stride=s, padding=p, dilation=d)
    y2.backward(gy)
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xt.grad, x2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(wt.grad, w2.grad, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(bt.grad, b2.grad, rtol=1e-12, atol=1e-11)


def _small_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 3, 9, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)
    return g, x, w, b, (1, 2, 2), (1, 0, 2), (1, 1, 2)


def test_gradcheck():
    g, x, w, b, s, p, d = _small_problem()
    assert torch.autograd.gradcheck(lambda x, w, b: loglik.conv3d(x, w, b, s, p, d), (x, w, b))
    out_shape = loglik.conv3d_output_shape(x.shape, w.shape, s, p, d)
    gy = torch.randn(out_shape, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda gy, w: loglik.conv3d_grad_input(gy, w, x.shape, s, p, d), (gy, w))
    assert torch.autograd.gradcheck(lambda x, gy: loglik.conv3d_grad_weight(x, gy, w.shape, s, p, d), (x, gy))


def test_gradgradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 1, 2, 1, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w: loglik.conv3d(x, w, None, 1, (0, 1, 1), (1, 1, 2)), (x, w))
    # with a bias that requires grad (its gradient used to leave the graph through numpy)
    b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, b: loglik.conv3d(x, w, b, 1, (0, 1, 1), (1, 1, 2)), (x, w, b))


def test_opcheck():
    _, x, w, b, s, p, d = _small_problem()
    loglik.conv._torch_ops()  # registers the loglik:: ops (done lazily on first use)
    res = torch.library.opcheck(torch.ops.loglik.conv3d.default, (x, w, b, list(s), list(p), list(d)))
    assert all(v == "SUCCESS" for v in res.values()), res


def test_numpy_and_torch_entry_points_agree_and_inputs_untouched():
    x, w, b = _make((2, 2, 5, 4, 31), (3, 2, 3, 3, 7), np.float32)
    x0, w0 = x.copy(), w.copy()
    y_np = loglik.conv3d(x, w, b, 1, (1, 1, 3))
    y_t = loglik.conv3d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 1, (1, 1, 3))
    assert isinstance(y_np, np.ndarray) and isinstance(y_t, torch.Tensor)
    np.testing.assert_array_equal(y_np, y_t.numpy())
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)
    y_ref = loglik.conv3d(x.astype(np.float64), w.astype(np.float64), b, 1, (1, 1, 3), impl="reference")
    np.testing.assert_allclose(y_np, y_ref, rtol=1e-4, atol=1e-4)
    # mixed float32/float64 numpy inputs promote to float64
    assert loglik.conv3d(x, w.astype(np.float64)).dtype == np.float64
    # non-contiguous torch input
    xt = torch.from_numpy(x).transpose(2, 3).contiguous().transpose(2, 3)
    assert not xt.is_contiguous()
    np.testing.assert_array_equal(loglik.conv3d(xt, torch.from_numpy(w)).numpy(), loglik.conv3d(x, w))


def test_weight_only_backward_skips_input_gradient():
    x = torch.randn(1, 1, 4, 4, 32)
    w = torch.randn(4, 1, 3, 3, 7, requires_grad=True)
    loglik.conv3d(x, w, None, 1, (1, 1, 3)).sum().backward()
    assert x.grad is None and w.grad is not None


finite = st.floats(-10, 10, allow_nan=False, width=64)


@st.composite
def conv_problem(draw):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    o = draw(st.integers(1, 5))
    k = [draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 7))]
    s = [draw(st.integers(1, 2)) for _ in range(3)]
    d = [draw(st.integers(1, 2)) for _ in range(3)]
    p = [draw(st.integers(0, 2)) for _ in range(3)]
    size = []
    for a in range(3):
        span = d[a] * (k[a] - 1) + 1
        size.append(draw(st.integers(max(1, span - 2 * p[a]), span + (5 if a < 2 else 40))))
    seed = draw(st.integers(0, 2**31 - 1))
    return (n, c, *size), (o, c, *k), tuple(s), tuple(p), tuple(d), seed


@given(conv_problem(), finite, finite)
def test_linearity(problem, alpha, beta):
    xs, ws, s, p, d, seed = problem
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal(xs), rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    lhs = loglik.conv3d(alpha * x1 + beta * x2, w, None, s, p, d)
    rhs = alpha * loglik.conv3d(x1, w, None, s, p, d) + beta * loglik.conv3d(x2, w, None, s, p, d)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10 * (1 + abs(alpha) + abs(beta)) * np.prod(ws[1:]))


@given(conv_problem())
def test_adjoint_identity(problem):
    """<conv(x), y> = <x, conv_transpose(y)> and <conv(x, w), y> = <w, grad_weight(x, y)>."""
    xs, ws, s, p, d, seed = problem
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    y = rng.standard_normal(loglik.conv3d_output_shape(xs, ws, s, p, d))
    lhs = float(np.vdot(loglik.conv3d(x, w, None, s, p, d), y))
    rhs_x = float(np.vdot(x, loglik.conv3d_grad_input(y, w, xs, s, p, d)))
    rhs_w = float(np.vdot(w, loglik.conv3d_grad_weight(x, y, ws, s, p, d)))
    tol = 1e-10 * (1 + np.abs(x).sum() * np.abs(w).max() * np.abs(y).max())
    assert abs(lhs - rhs_x) <= tol
    assert abs(lhs - rhs_w) <= tol


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"x": np.zeros((1, 1, 4, 4))}, ValueError, "x: expected a 5-D"),
        ({"weight": np.zeros((2, 3, 3, 3))}, ValueError, "weight: expected a 5-D"),
        ({"weight": np.zeros((2, 3, 3, 3, 3))}, ValueError, "weight: expected 1 input channels"),
        ({"weight": np.zeros((2, 1, 5, 3, 3))}, ValueError, "weight: kernel extent"),
        ({"dilation": (1, 1, 20)}, ValueError, "weight: kernel extent"),
        ({"stride": 0}, ValueError, "stride"),
        ({"stride": (1, -1, 1)}, ValueError, "stride"),
        ({"stride": (1, 1)}, ValueError, "stride"),
        ({"stride": 1.5}, TypeError, "stride"),
        ({"padding": -1}, ValueError, "padding"),
        ({"dilation": 0}, ValueError, "dilation"),
        ({"x": np.full((1, 1, 4, 4, 16), np.nan)}, ValueError, "x: contains NaN"),
        ({"weight": np.full((2, 1, 3, 3, 3), np.inf)}, ValueError, "weight: contains NaN"),
        ({"bias": np.zeros(3)}, ValueError, "bias: expected shape"),
        ({"x": np.zeros((1, 1, 4, 4, 16), dtype=complex)}, TypeError, "x: complex"),
        ({"x": np.array([["a"]])}, TypeError, "x: expected a numeric"),
        ({"impl": "gpu"}, ValueError, "impl"),
        ({"check_finite": "no"}, TypeError, "check_finite"),
        ({"bias": np.zeros(3), "impl": "reference"}, ValueError, "bias: expected shape"),
    ],
)
def test_bad_inputs_numpy(kwargs, exc, match):
    args = {"x": np.zeros((1, 1, 4, 4, 16)), "weight": np.zeros((2, 1, 3, 3, 3)), "bias": None, "stride": 1}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        loglik.conv3d(**args)


def test_bad_inputs_torch():
    x = torch.zeros(1, 1, 4, 4, 16)
    w = torch.zeros(2, 1, 3, 3, 3)
    with pytest.raises(TypeError, match="weight: dtype"):
        loglik.conv3d(x, w.double())
    with pytest.raises(TypeError, match="x: expected float32 or float64"):
        loglik.conv3d(x.half(), w.half())
    with pytest.raises(ValueError, match="x: contains NaN"):
        loglik.conv3d(x.clone().fill_(float("nan")), w)
    with pytest.raises(TypeError, match="weight: expected a torch.Tensor"):
        loglik.conv3d(x, w.numpy())
    with pytest.raises(ValueError, match="weight: expected 1 input channels"):
        loglik.conv3d(x, torch.zeros(2, 2, 3, 3, 3))
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        loglik.conv3d_grad_input(torch.zeros(1, 2, 3, 3, 3), w, (1, 1, 4, 4, 16))
    with pytest.raises(ValueError, match="input_shape"):
        loglik.conv3d_grad_input(np.zeros((1, 2, 2, 2, 14)), w.numpy(), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        loglik.conv3d_grad_weight(np.zeros((1, 1, 4, 4, 16)), np.zeros((1, 2, 2, 2, 2)), (2, 1, 3, 3, 3))
    with pytest.raises(ValueError, match="grad_output: contains NaN"):
        loglik.conv3d_grad_weight(x, torch.full((1, 2, 2, 2, 14), float("nan")), (2, 1, 3, 3, 3))
    with pytest.raises(TypeError, match="grad_output: dtype"):
        loglik.conv3d_grad_weight(x, torch.zeros(1, 2, 2, 2, 14, dtype=torch.float64), (2, 1, 3, 3, 3))


def test_huge_hyper_parameters_and_shape_entries():
    # Regression: stride 2**24 reached the kernels (std::bad_alloc MemoryError), padding 2**31 failed in numpy with
    # a message naming no argument, and conv3d_output_shape accepted 1.5 / "abc" as sizes.
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 2, 5, 6, 7)), rng.standard_normal((2, 2, 2, 2, 2))
    for stride in ((2**24, 2**30, 2**31 - 1), (9, 1, 100), (1, 1, 8)):
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        yt = torch.nn.functional.conv3d(xt, wt, stride=stride, padding=1)
        g = torch.randn_like(yt)
        yt.backward(g)
        np.testing.assert_allclose(loglik.conv3d(x, w, stride=stride, padding=1), yt.detach().numpy(), atol=1e-12)
        gw = loglik.conv3d_grad_weight(x, g.numpy(), w.shape, stride=stride, padding=1)
        np.testing.assert_allclose(gw, wt.grad.numpy(), atol=1e-12)
        gi = loglik.conv3d_grad_input(g.numpy(), w, x.shape, stride=stride, padding=1)
        np.testing.assert_allclose(gi, xt.grad.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="stride"):
        loglik.conv3d(x, w, stride=2**40)
    with pytest.raises(ValueError, match="padding"):
        loglik.conv3d(x, w, padding=2**31)
    with pytest.raises(ValueError, match="padding"):
        loglik.conv3d(x, w, padding=2**20)
    with pytest.raises(TypeError, match="input_shape"):
        loglik.conv3d_output_shape((1.5, 2, 5, 6, 7), w.shape)
    with pytest.raises(TypeError, match="weight_shape"):
        loglik.conv3d_grad_weight(x, np.zeros((1, 2, 4, 5, 6)), "abcde")
    assert loglik.conv3d_output_shape(np.array(x.shape), torch.Size(w.shape)) == (1, 2, 4, 5, 6)


def test_bad_inputs_compiled_layer():
    """Direct calls into the compiled module raise instead of crashing."""
    C = _backend.C()
    x = np.zeros((1, 1, 4, 4, 16))
    with pytest.raises(ValueError):
        C.conv3d_forward(x, np.zeros((2, 1, 9, 3, 3)), None, (1, 1, 1), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError):
        C.conv3d_forward(x, np.zeros((2, 1, 3, 3, 3)), None, (0, 1, 1), (0, 0, 0), (1, 1, 1))
    with pytest.raises(TypeError):
        C.conv3d_forward(x.astype(np.int64), np.zeros((2, 1, 3, 3, 3), np.int64), None, (1, 1, 1), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError):
        C.conv3d_forward(x, np.zeros((2, 1, 3, 3, 3)), None, (1, 1, 1), (0, 0, 0), (1, 1, 1), "sse9")


@pytest.mark.triton
def test_triton_forward_interpreted():
    pytest.importorskip("triton")
    from loglik.kernels import conv3d as tk

    g = torch.Generator().manual_seed(0)
    for xs, ws, s, p, d in [
        ((1, 2, 3, 4, 21), (3, 2, 3, 2, 5), (1, 1, 2), (1, 0, 2), (1, 1, 2)),
        ((2, 1, 2, 2, 9), (1, 1, 1, 2, 3), (2, 1, 1), (0, 1, 1), 1),
    ]:
        x = torch.randn(xs, generator=g)
        w = torch.randn(ws, generator=g)
        b = torch.randn(ws[0], generator=g)
        st_, pt, dt = (loglik.conv._triple(v, "v", low=0) for v in (s, p, d))
        y = tk.conv3d_forward(x, w, b, st_, pt, dt)
        torch.testing.assert_close(y, F.conv3d(x, w, b, stride=s, padding=p, dilation=d), rtol=1e-4, atol=1e-4)


@pytest.mark.triton
def test_triton_gradients_interpreted():
    pytest.importorskip("triton")
    from loglik.kernels import conv3d as tk

    g = torch.Generator().manual_seed(1)
    for xs, ws, s, p, d in [
        ((1, 2, 3, 2, 13), (3, 2, 3, 2, 3), (1, 1, 2), (1, 0, 2), (1, 1, 2)),
        ((2, 1, 2, 2, 9), (2, 1, 1, 2, 3), (2, 1, 1), (0, 1, 1), (1, 1, 1)),
    ]:
        x = torch.randn(xs, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(ws, generator=g, dtype=torch.float64, requires_grad=True)
        y = F.conv3d(x, w, None, stride=s, padding=p, dilation=d)
        gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
        gx_ref, gw_ref = torch.autograd.grad(y, (x, w), gy)
        gx = tk.conv3d_grad_input(gy, w.detach(), xs, s, p, d)
        gw = tk.conv3d_grad_weight(x.detach(), gy, ws, s, p, d, rows_per_program=2)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gw, gw_ref, rtol=1e-12, atol=1e-12)
        gw32 = tk.conv3d_grad_weight(x.detach().float(), gy.float(), ws, s, p, d)
        assert gw32.dtype == torch.float32
        torch.testing.assert_close(gw32.double(), gw_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("e", "pad_e", "stride_e"), [(2, 3, 7), (7, 0, 8), (3, 1, 9)])
def test_grad_input_stride_beyond_padded_row_regression(e: int, pad_e: int, stride_e: int) -> None:
    # stride_e > pad_e + E used to write past the row of grad_input (heap corruption) and give wrong values
    torch = pytest.importorskip("torch")
    x = torch.randn(1, 1, 2, 1, e, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 1, 1, 2, dtype=torch.float64, requires_grad=True)
    for _ in range(20):
        out = loglik.conv3d(x, w, stride=(1, 1, stride_e), padding=(0, 0, pad_e))
        gx, gw = torch.autograd.grad(out.sum(), (x, w))
    ref = torch.nn.functional.conv3d(x, w, stride=(1, 1, stride_e), padding=(0, 0, pad_e))
    rx, rw = torch.autograd.grad(ref.sum(), (x, w))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)


def test_check_finite_false_skips_the_scan_on_numpy_and_shapes_name_their_argument():
    x = np.zeros((1, 1, 4, 4, 16))
    x[0, 0, 0, 0, 0] = np.nan
    y = loglik.conv3d(x, np.ones((2, 1, 1, 1, 1)), check_finite=False)  # NaN propagates, as the user asked
    assert np.isnan(y[0, :, 0, 0, 0]).all() and np.isfinite(y[0, :, 1:]).all()
    with pytest.raises(ValueError, match="input_shape: expected positive sizes"):
        loglik.conv3d_grad_input(np.zeros((1, 2, 2, 4, 4)), np.zeros((2, 2, 1, 1, 3)), (1, 2, -4, 4, 6))
    with pytest.raises(ValueError, match="weight_shape: expected positive sizes"):
        loglik.conv3d_grad_weight(np.zeros((1, 2, 2, 4, 6)), np.zeros((1, 2, 2, 4, 4)), (2, 2, 0, 1, 3))


def test_tensor_subclasses_are_tensors():
    class Tagged(torch.Tensor):
        pass

    x = torch.randn(1, 1, 3, 3, 8, dtype=torch.float64).as_subclass(Tagged)
    w = torch.randn(2, 1, 1, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(loglik.conv3d(x, w).as_subclass(torch.Tensor), F.conv3d(x.as_subclass(torch.Tensor), w))


def test_meta_tensors_triton_on_cpu_and_padded_length_messages(monkeypatch):
    x = torch.randn(1, 1, 2, 2, 8, device="meta")
    assert loglik.conv3d(x, torch.randn(2, 1, 1, 1, 3, device="meta")).shape == (1, 2, 2, 2, 6)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="impl: 'triton' needs CUDA tensors"):
        loglik.conv3d(torch.randn(1, 1, 2, 2, 8), torch.randn(2, 1, 1, 1, 3), impl="triton")
    with pytest.raises(ValueError, match="padding: the padded input would exceed"):
        loglik.conv3d(np.ones((1, 1, 2, 2, 8)), np.ones((1, 1, 1, 1, 2)), None, 1, (0, 0, 2**30), (1, 1, 2**31 - 1))
