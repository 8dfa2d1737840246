"""Tests of Tweedie denoising, AR-DAE, Hutchinson, the Ito density estimator and superposition (loglik.score)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import digamma

import loglik
from loglik.reference import score as ref

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------------------------------------------------------
# Tweedie: closed forms with conjugate priors
# ---------------------------------------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**31 - 1),
    sigma=st.floats(0.01, 5.0),
    mu=st.floats(-3.0, 3.0),
    tau=st.floats(0.05, 5.0),
)
def test_tweedie_gaussian_is_posterior_mean(seed, sigma, mu, tau):
    rng = np.random.default_rng(seed)
    x = mu + tau * rng.standard_normal(200)
    y = x + sigma * rng.standard_normal(200)
    score, post_mean = ref.conjugate_gaussian(y, sigma, mu, tau)
    est = loglik.tweedie_denoise(y, score, "gaussian", sigma=sigma)
    np.testing.assert_allclose(est, post_mean, rtol=1e-9, atol=1e-9 * np.abs(post_mean).max())


@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.floats(1.5, 500.0),
    shape=st.floats(0.5, 20.0),
    scale=st.floats(0.1, 20.0),
)
def test_tweedie_gamma_is_harmonic_posterior_mean(seed, k, shape, scale):
    rng = np.random.default_rng(seed)
    x = 1.0 / rng.gamma(shape, 1.0 / scale, 200)  # inverse-gamma prior
    y = rng.gamma(k, x / k)  # mean x, variance x^2 / k
    y = np.maximum(y, 1e-300)
    score, harmonic = ref.conjugate_gamma(y, k, shape, scale)
    est = loglik.tweedie_denoise(y, score, "gamma", k=k)
    np.testing.assert_allclose(est, harmonic, rtol=1e-9)
    # and it really is 1 / E[1/x | y]: the posterior of 1/x is Gamma(shape + k, rate scale + k y)
    np.testing.assert_allclose(est, (scale + k * y) / (shape + k), rtol=1e-9)


@given(
    seed=st.integers(0, 2**31 - 1),
    zeta=st.floats(0.001, 2.0),
    shape=st.floats(0.5, 20.0),
    rate=st.floats(0.05, 5.0),
)
def test_tweedie_poisson_within_digamma_approximation(seed, zeta, shape, rate):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(shape, 1.0 / rate, 200)
    z = rng.poisson(lam).astype(np.float64)
    y = zeta * z
    score, geo_mean = ref.conjugate_poisson(y, zeta, shape, rate)
    est = loglik.tweedie_denoise(y, score, "poisson", zeta=zeta)
    # exact identity: log x_hat - log exp(E[log x | y]) = log(z + 1/2) - psi(z + 1), the approximation's error ...
    np.testing.assert_allclose(np.log(est) - np.log(geo_mean), np.log(z + 0.5) - digamma(z + 1), atol=1e-9)
    # ... which is bounded by 1 / (24 (z + 1/2)^2)
    assert np.all(np.abs(np.log(est / geo_mean)) <= 1.0 / (24 * (z + 0.5) ** 2) + 1e-12)


def test_tweedie_torch_callable_and_grad():
    y = torch.rand(4, 5, dtype=torch.float64) + 0.1
    y.requires_grad_(True)
    est = loglik.tweedie_denoise(y, lambda v: -v, "gaussian", sigma=0.5)
    torch.testing.assert_close(est, y * 0.75)
    est.sum().backward()
    torch.testing.assert_close(y.grad, torch.full_like(y, 0.75))
    for noise, kw in (("poisson", {"zeta": 0.1}), ("gamma", {"k": 10.0})):
        out = loglik.tweedie_denoise(y.detach(), torch.zeros_like(y), noise, **kw)
        assert isinstance(out, torch.Tensor) and out.shape == y.shape


def test_tweedie_gamma_denominator_guard():
    y = np.array([0.5, 1.0, 2.0])
    est = loglik.tweedie_denoise(y, np.array([1e6, 0.0, -1.0]), "gamma", k=5.0)
    assert np.isfinite(est).all() and (est > 0).all()
    np.testing.assert_allclose(est[1:], 5 * y[1:] / (4 - y[1:] * np.array([0.0, -1.0])))


def test_tweedie_does_not_modify_inputs():
    y = np.array([0.2, 0.4])
    s = np.array([1.0, -1.0])
    loglik.tweedie_denoise(y, s, "poisson", zeta=0.1)
    np.testing.assert_array_equal(y, [0.2, 0.4])
    np.testing.assert_array_equal(s, [1.0, -1.0])


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "name"),
    [
        ((np.ones(3), np.ones(3), "gaussian"), {}, ValueError, "sigma"),
        ((np.ones(3), np.ones(3), "gaussian"), {"sigma": 0.0}, ValueError, "sigma"),
        ((np.ones(3), np.ones(3), "gaussian"), {"sigma": float("nan")}, ValueError, "sigma"),
        ((np.ones(3), np.ones(3), "poisson"), {"zeta": -1.0}, ValueError, "zeta"),
        ((np.ones(3), np.ones(3), "poisson"), {}, ValueError, "zeta"),
        ((np.ones(3), np.ones(3), "gamma"), {"k": 1.0}, ValueError, "k"),
        ((np.ones(3), np.ones(3), "gamma"), {"k": float("inf")}, ValueError, "k"),
        ((-np.ones(3), np.ones(3), "gamma"), {"k": 3.0}, ValueError, "y"),
        ((-np.ones(3), np.ones(3), "poisson"), {"zeta": 1.0}, ValueError, "y"),
        ((np.array([np.nan]), np.ones(1), "gaussian"), {"sigma": 1.0}, ValueError, "y"),
        ((np.ones(3), np.array([0, np.inf, 0]), "gaussian"), {"sigma": 1.0}, ValueError, "score"),
        ((np.ones(3), np.ones(4), "gaussian"), {"sigma": 1.0}, ValueError, "score"),
        ((np.ones(3), np.ones(3), "laplace"), {}, ValueError, "noise"),
        # regression: complex / non-numeric arrays were accepted (complex output, or numpy's own error)
        ((np.ones(3, complex), np.ones(3), "gaussian"), {"sigma": 1.0}, TypeError, "y"),
        ((np.ones(3), np.ones(3, complex), "gaussian"), {"sigma": 1.0}, TypeError, "score"),
        ((np.array(["a", "b"]), np.ones(2), "gaussian"), {"sigma": 1.0}, TypeError, "y"),
        ((torch.ones(3, dtype=torch.complex64), torch.ones(3), "gaussian"), {"sigma": 1.0}, TypeError, "y"),
    ],
)
def test_tweedie_bad_input(args, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        loglik.tweedie_denoise(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# AR-DAE
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [0.5, 1.0, 1.5])
def test_ardae_loss_matches_closed_form_for_gaussian_data(c):
    """y ~ N(0, tau^2 I), R(v) = -c v / (tau^2 + sigma^2): E||u + sigma R||^2 / D = (1 - c s2/V)^2 + c^2 s2 t2 / V^2,
    minimised at c = 1 (the score of the smoothed density) with value tau^2 / V."""
    tau, sigma = 0.7, 0.3
    var = tau**2 + sigma**2
    gen = torch.Generator().manual_seed(0)
    y = tau * torch.randn(40000, 4, generator=gen, dtype=torch.float64)
    loss = loglik.ardae_loss(lambda v: -c * v / var, y, sigma, generator=gen)
    want = (1 - c * sigma**2 / var) ** 2 + c**2 * sigma**2 * tau**2 / var**2
    assert abs(float(loss) - want) < 0.02 * want
    assert want >= tau**2 / var - 1e-12


def test_ardae_learns_the_score():
    """A linear model R(v) = a v trained with the AR-DAE loss converges to the smoothed score -v / (tau^2 + s^2)."""
    tau, sigma = 1.0, 0.2
    gen = torch.Generator().manual_seed(1)
    a = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([a], lr=0.05)
    for _ in range(400):
        y = tau * torch.randn(512, 2, generator=gen)
        loss = loglik.ardae_loss(lambda v: a * v, y, sigma, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(float(a.detach()) + 1 / (tau**2 + sigma**2)) < 0.05


def test_ardae_per_example_sigma_and_conditional_net():
    y = torch.randn(6, 1, 4, 4)
    sig = torch.linspace(0.1, 0.6, 6)
    seen = {}

    def net(v, s):
        seen["s"] = s
        return torch.zeros_like(v)

    loss = loglik.ardae_loss(net, y, sig, pass_sigma=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen["s"], sig)
    assert 0.5 < float(loss) < 1.5  # ||u||^2 / D with R = 0


def test_ardae_bad_input():
    y = torch.randn(3, 2)
    with pytest.raises(ValueError, match="sigma_a"):
        loglik.ardae_loss(lambda v: v, y, 0.0)
    with pytest.raises(ValueError, match="sigma_a"):
        loglik.ardae_loss(lambda v: v, y, torch.tensor([0.1, -0.1, 0.1]))
    with pytest.raises(ValueError, match="sigma_a"):
        loglik.ardae_loss(lambda v: v, y, torch.tensor([0.1, 0.1]))
    with pytest.raises(TypeError, match="y"):
        loglik.ardae_loss(lambda v: v, np.ones((3, 2)), 0.1)
    with pytest.raises(ValueError, match="y"):
        loglik.ardae_loss(lambda v: v, torch.full((3, 2), float("nan")), 0.1)
    with pytest.raises(ValueError, match="score_net"):
        loglik.ardae_loss(lambda v: v[:, :1], y, 0.1)


def test_ardae_sigma_schedule():
    vals = [loglik.ardae_sigma(i, 11, 1.0, 0.01) for i in range(11)]
    assert vals[0] == pytest.approx(1.0) and vals[-1] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(vals, vals[1:], strict=False))
    np.testing.assert_allclose(np.diff(np.log(vals)), math.log(0.01) / 10)
    assert loglik.ardae_sigma(0, 1, 1.0, 0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        loglik.ardae_sigma(0, 5, 0.1, 1.0)
    with pytest.raises(ValueError, match="step"):
        loglik.ardae_sigma(5, 5, 1.0, 0.1)
    with pytest.raises(ValueError, match="n_steps"):
        loglik.ardae_sigma(0, 0, 1.0, 0.1)


# ---------------------------------------------------------------------------------------------------------------
# Hutchinson
# ---------------------------------------------------------------------------------------------------------------


def _linear_field(d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a, (lambda x: x @ a.T)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_unbiased_and_standard_error(probe):
    a, f = _linear_field()
    sym = 0.5 * (a + a.T)
    var = 2 * float((sym**2).sum()) - (2 * float((sym.diagonal() ** 2).sum()) if probe == "rademacher" else 0.0)
    x = torch.zeros(400, 6, dtype=torch.float64)  # 400 independent estimates (rows) of the same divergence
    gen = torch.Generator().manual_seed(0)
    div16, se16 = loglik.hutchinson_divergence(f, x, 16, probe=probe, generator=gen)
    div1024, se1024 = loglik.hutchinson_divergence(f, x, 1024, probe=probe, generator=gen)
    tr = float(a.trace())
    # unbiased: the average of 400 independent 16-probe estimates is within 4 of its standard errors of tr(A)
    assert abs(float(div16.mean()) - tr) < 4 * math.sqrt(var / 16 / 400)
    # the reported standard error matches the analytic one and falls as 1 / sqrt(probes)
    assert float(se16.mean()) == pytest.approx(math.sqrt(var / 16), rel=0.1)
    assert float(se1024.mean()) == pytest.approx(math.sqrt(var / 1024), rel=0.05)
    assert float(se16.mean() / se1024.mean()) == pytest.approx(8.0, rel=0.12)
    assert float(((div1024 - tr) / se1024).pow(2).mean()) == pytest.approx(1.0, abs=0.25)


def test_hutchinson_nonlinear_field_against_exact():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    f = lambda x: torch.tanh(x @ w) * x.sin()
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    div, se = loglik.hutchinson_divergence(f, x, 4000, generator=gen)
    exact = ref.divergence_exact(f, x)
    assert torch.all((div - exact).abs() < 5 * se + 1e-12)


def test_hutchinson_single_probe_and_graph():
    a, f = _linear_field(3)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    div, se = loglik.hutchinson_divergence(f, x, 1)
    assert torch.isinf(se).all() and torch.isfinite(div).all()
    # create_graph lets the estimate be differentiated: d/dx of a linear field's divergence is 0
    g = lambda z: z**3
    d3, _ = loglik.hutchinson_divergence(g, x, 3, create_graph=True, probe="rademacher")
    (grad,) = torch.autograd.grad(d3.sum(), x)
    torch.testing.assert_close(grad, 6 * x.detach())  # Rademacher probes are exact for a diagonal Jacobian


def test_hutchinson_bad_input():
    f = lambda x: x
    with pytest.raises(ValueError, match="n_probes"):
        loglik.hutchinson_divergence(f, torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="probe"):
        loglik.hutchinson_divergence(f, torch.zeros(2, 2), 2, probe="sphere")
    with pytest.raises(TypeError, match="x"):
        loglik.hutchinson_divergence(f, np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="x"):
        loglik.hutchinson_divergence(f, torch.full((2, 2), float("nan")), 2)
    with pytest.raises(ValueError, match="f"):
        loglik.hutchinson_divergence(lambda x: x.sum(1), torch.zeros(2, 2), 2)
    # regression: an integer x and an f whose output is detached from x gave torch RuntimeErrors
    with pytest.raises(TypeError, match="x"):
        loglik.hutchinson_divergence(f, torch.zeros(2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="f"):
        loglik.hutchinson_divergence(lambda x: torch.ones_like(x), torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="f"):
        loglik.hutchinson_divergence(lambda x: x.detach() * 2, torch.zeros(2, 2), 2)
    with pytest.raises(TypeError, match="f"):
        loglik.hutchinson_divergence(lambda x: x.detach().numpy(), torch.zeros(2, 2), 2)


# ---------------------------------------------------------------------------------------------------------------
# Ito density estimator and superposition
# ---------------------------------------------------------------------------------------------------------------


def _gaussian_model(sde, mean, std0):
    """Exact marginal log-density and score of x_0 ~ N(mean, std0^2 I) under the SDE."""

    def var_mean(t):
        alpha, sigma = sde.marginal(t)
        return alpha**2 * std0**2 + sigma**2, alpha * mean

    def logq(x, t):
        v, m = var_mean(t)
        d = x.shape[1]
        return -((x - m) ** 2).sum(1) / (2 * v) - 0.5 * d * math.log(2 * math.pi * v)

    def score(x, t):
        v, m = var_mean(t)
        return -(x - m) / v

    return logq, score


def _run_ito(sde, n_steps, d=16, b=64, std0=0.5, t_end=1e-3, seed=0):
    logq_fn, score_fn = _gaussian_model(sde, torch.zeros(d, dtype=torch.float64), std0)
    gen = torch.Generator().manual_seed(seed)
    v1, _ = (lambda a, s: (a**2 * std0**2 + s**2, None))(*sde.marginal(1.0))
    x = math.sqrt(v1) * torch.randn(b, d, generator=gen, dtype=torch.float64)
    logq = logq_fn(x, 1.0)
    ts = np.linspace(1.0, t_end, n_steps + 1)
    for i in range(n_steps):
        t, dtau = float(ts[i]), float(ts[i] - ts[i + 1])
        s = score_fn(x, t)
        f, g = sde.drift(x, t), sde.diffusion(t)
        dx = (-f + g * g * s) * dtau + g * math.sqrt(dtau) * torch.randn(b, d, generator=gen, dtype=torch.float64)
        logq = loglik.ito_logdensity_step(logq, dx, s, drift=f, diffusion=g, div_drift=sde.div_drift(x, t), dtau=dtau)
        x = x + dx
    err = logq - logq_fn(x, t_end)
    return float(err.mean()), float(err.abs().mean())


def test_ito_tracks_exact_logdensity_vp():
    """16-D Gaussian data under the VP SDE: the estimate's mean error over trajectories is < 0.5 nats at 1000
    Euler-Maruyama steps; the per-trajectory error shrinks like sqrt(step) (strong order 1/2)."""
    bias100, err100 = _run_ito(loglik.VPSDE(), 100)
    bias1000, err1000 = _run_ito(loglik.VPSDE(), 1000)
    bias4000, err4000 = _run_ito(loglik.VPSDE(), 4000)
    assert abs(bias1000) < 0.5
    assert err1000 < 0.3 * err100
    assert err4000 < 0.7 * err1000
    assert err4000 < 0.5


def test_ito_tracks_exact_logdensity_ve():
    sde = loglik.VESDE(sigma_min=0.01, sigma_max=5.0)
    bias100, err100 = _run_ito(sde, 100, t_end=0.05)
    bias1000, err1000 = _run_ito(sde, 1000, t_end=0.05)
    assert abs(bias1000) < 0.5
    assert err1000 < 0.5 * err100


def test_ito_step_is_the_formula():
    gen = torch.Generator().manual_seed(0)
    dx, s, f = (torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    lq = torch.randn(3, generator=gen, dtype=torch.float64)
    div = torch.full((3,), -2.0, dtype=torch.float64)
    out = loglik.ito_logdensity_step(lq, dx, s, drift=f, diffusion=1.5, div_drift=div, dtau=0.01)
    want = lq + (dx * s).sum(1) + (div + ((f - 0.5 * 1.5**2 * s) * s).sum(1)) * 0.01
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="dtau"):
        loglik.ito_logdensity_step(lq, dx, s, drift=f, diffusion=1.0, div_drift=div, dtau=0.0)
    with pytest.raises(ValueError, match="score"):
        loglik.ito_logdensity_step(lq, dx, s[:, :2], drift=f, diffusion=1.0, div_drift=div, dtau=0.1)
    with pytest.raises(ValueError, match="logq"):
        loglik.ito_logdensity_step(lq[:2], dx, s, drift=f, diffusion=1.0, div_drift=div, dtau=0.1)


def test_sde_parameterisations():
    vp = loglik.VPSDE()
    a, s = vp.marginal(0.7)
    assert a**2 + s**2 == pytest.approx(1.0)
    assert vp.marginal(0.0) == (1.0, 0.0)
    x = torch.ones(2, 3)
    torch.testing.assert_close(vp.div_drift(x, 0.5), torch.full((2,), -1.5 * vp.beta(0.5)))
    ve = loglik.VESDE(0.01, 10.0)
    # g^2 = d sigma^2 / dt
    eps = 1e-6
    dsig2 = (ve.sigma(0.5 + eps) ** 2 - ve.sigma(0.5 - eps) ** 2) / (2 * eps)
    assert ve.diffusion(0.5) ** 2 == pytest.approx(dsig2, rel=1e-6)
    with pytest.raises(ValueError, match="sigma_max"):
        loglik.VESDE(1.0, 0.5)
    with pytest.raises(ValueError, match="beta_min"):
        loglik.VPSDE(beta_min=-1.0)


def _two_gaussians(sde, m=2.0, d=2, std0=0.3):
    mean = torch.zeros(d, dtype=torch.float64)
    mean[0] = m
    return _gaussian_model(sde, -mean, std0), _gaussian_model(sde, mean, std0)


def test_superpose_or_samples_the_mixture_and_tracks_logq():
    sde = loglik.VPSDE()
    (lq1, s1), (lq2, s2) = _two_gaussians(sde)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    init = torch.stack([lq1(x0, 1.0), lq2(x0, 1.0)])
    res = loglik.superpose([s1, s2], x0, sde, 500, mode="or", logq_init=init, generator=gen)
    frac = float((res.x[:, 0] > 0).double().mean())
    assert 0.4 < frac < 0.6
    assert float((res.x[:, 0].abs() - 2.0).abs().mean()) < 0.4  # samples sit on the two modes
    exact = torch.stack([lq1(res.x, res.t_end), lq2(res.x, res.t_end)])
    assert torch.isfinite(res.logq).all()
    # the Ito estimate of each model's log-density along the superposed trajectory
    assert float((res.logq - exact).abs().mean()) < 0.5
    # a bias picks a model
    res_b = loglik.superpose([s1, s2], x0, sde, 100, mode="or", bias=[4.0, 0.0], logq_init=init, generator=gen)
    assert float((res_b.x[:, 0] < 0).double().mean()) > 0.9


def test_superpose_and_equalises_densities():
    sde = loglik.VPSDE()
    (lq1, s1), (lq2, s2) = _two_gaussians(sde, m=1.0, std0=0.6)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    res = loglik.superpose([s1, s2], x0, sde, 200, mode="and", generator=gen)
    assert torch.isfinite(res.x).all()
    # the defining property: the tracked log-densities stay equal ...
    assert float((res.logq[0] - res.logq[1]).abs().max()) < 1e-6
    # ... and so do the exact ones (the samples lie on the equal-density hyperplane x_0 = 0)
    exact = torch.stack([lq1(res.x, res.t_end), lq2(res.x, res.t_end)])
    assert float((exact[0] - exact[1]).abs().mean()) < 1.0
    assert abs(float(res.x[:, 0].mean())) < 0.2


def test_superposition_weights():
    lq = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    k = loglik.superposition_weights(lq, "or", temperature=2.0, bias=[0.0, 0.0, -1.0])
    torch.testing.assert_close(k, torch.softmax(2 * lq + torch.tensor([[0.0], [0.0], [-1.0]]), dim=0).T)
    # AND: after the step all models' log-densities are equal
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(3, 2, 4, generator=gen, dtype=torch.float64)
    f = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    noise = 0.1 * torch.randn(2, 4, generator=gen, dtype=torch.float64)
    div = torch.zeros(2, dtype=torch.float64)
    kap = loglik.superposition_weights(
        lq, "and", scores=s, drift=f, diffusion=1.3, div_drift=div, dtau=0.01, noise=noise, ridge=0.0
    )
    torch.testing.assert_close(kap.sum(1), torch.ones(2, dtype=torch.float64))
    dx = (-f + 1.69 * (kap.T[:, :, None] * s).sum(0)) * 0.01 + 1.3 * noise
    new = torch.stack(
        [
            loglik.ito_logdensity_step(lq[i], dx, s[i], drift=f, diffusion=1.3, div_drift=div, dtau=0.01)
            for i in range(3)
        ]
    )
    torch.testing.assert_close(new - new[0], torch.zeros_like(new), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="mode"):
        loglik.superposition_weights(lq, "xor")
    with pytest.raises(ValueError, match="needs"):
        loglik.superposition_weights(lq, "and")


def test_superpose_bad_input():
    sde = loglik.VPSDE()
    fn = lambda x, t: -x
    with pytest.raises(ValueError, match="score_fns"):
        loglik.superpose([], torch.zeros(2, 2), sde, 10)
    with pytest.raises(ValueError, match="n_steps"):
        loglik.superpose([fn], torch.zeros(2, 2), sde, 0)
    with pytest.raises(ValueError, match="t_end"):
        loglik.superpose([fn], torch.zeros(2, 2), sde, 10, t_end=1.5)
    with pytest.raises(ValueError, match="logq_init"):
        loglik.superpose([fn], torch.zeros(2, 2), sde, 10, logq_init=torch.zeros(2, 3))
    with pytest.raises(TypeError, match="x_init"):
        loglik.superpose([fn], np.zeros((2, 2)), sde, 10)


def test_sde_ito_and_superposition_bad_input_regressions():
    # Regression: these gave silent NaN, torch RuntimeErrors / AttributeErrors, or "math domain error".
    sde = loglik.VPSDE()
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="beta_max"):
        loglik.VPSDE(20.0, 0.1)
    for bad_t in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match="t:"):
            sde.diffusion(bad_t)
        with pytest.raises(ValueError, match="t:"):
            loglik.VESDE().marginal(bad_t)
    with pytest.raises(TypeError, match="t:"):
        sde.drift(x, torch.full((4,), 0.5))
    assert sde.diffusion(torch.tensor(0.5)) == pytest.approx(sde.diffusion(0.5))
    lq = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="logq"):
        loglik.superposition_weights(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="logq"):
        loglik.superposition_weights(torch.full((2, 4), -math.inf))
    with pytest.raises(TypeError, match="logq"):
        loglik.superposition_weights(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="bias"):
        loglik.superposition_weights(lq, bias=torch.zeros(3))
    with pytest.raises(ValueError, match="bias"):
        loglik.superposition_weights(lq, bias=torch.full((2,), float("nan")))
    kappa = loglik.superposition_weights(torch.tensor([[0.0, 0.0], [-math.inf, 0.0]]))
    assert torch.isfinite(kappa).all() and float(kappa[0, 1]) == 0.0
    and_kw = dict(
        scores=torch.randn(2, 4, 2), drift=torch.zeros(4, 2), diffusion=1.0, div_drift=torch.zeros(4), dtau=0.01,
        noise=torch.randn(4, 2),
    )  # fmt: skip
    for key, value, exc in [
        ("scores", torch.full((2, 4, 2), float("nan")), ValueError),
        ("scores", torch.zeros(3, 4, 2), ValueError),
        ("drift", torch.zeros(4, 3), ValueError),
        ("noise", torch.zeros(4), ValueError),
        ("div_drift", torch.zeros(5), ValueError),
        ("ridge", -1.0, ValueError),
        ("diffusion", float("nan"), ValueError),
    ]:
        with pytest.raises(exc, match=key):
            loglik.superposition_weights(lq, "and", **{**and_kw, key: value})
    step_kw = dict(drift=torch.zeros(4, 2), diffusion=1.0, div_drift=torch.zeros(4), dtau=0.01)
    with pytest.raises(ValueError, match="dx"):
        loglik.ito_logdensity_step(torch.zeros(4), torch.full((4, 2), float("nan")), torch.zeros(4, 2), **step_kw)
    with pytest.raises(ValueError, match="div_drift"):
        loglik.ito_logdensity_step(
            torch.zeros(4), torch.zeros(4, 2), torch.zeros(4, 2), **{**step_kw, "div_drift": torch.zeros(6)}
        )
    with pytest.raises(TypeError, match="drift"):
        loglik.ito_logdensity_step(torch.zeros(4), torch.zeros(4, 2), torch.zeros(4, 2), **{**step_kw, "drift": 0.0})
    fn = lambda x, t: -x
    with pytest.raises(ValueError, match=r"score_fns\[1\]"):
        loglik.superpose([fn, lambda x, t: x * float("nan")], torch.zeros(4, 2), sde, 3)
    with pytest.raises(ValueError, match=r"score_fns\[0\]"):
        loglik.superpose([lambda x, t: x[:, :1]], torch.zeros(4, 2), sde, 3)
    with pytest.raises(TypeError, match=r"score_fns\[0\]"):
        loglik.superpose([1], torch.zeros(4, 2), sde, 3)
    with pytest.raises(ValueError, match="bias"):
        loglik.superpose([fn, fn], torch.zeros(4, 2), sde, 3, bias=torch.zeros(5))
    with pytest.raises(TypeError, match="sde"):
        loglik.superpose([fn], torch.zeros(4, 2), "vp", 3)
    with pytest.raises(TypeError, match="x_init"):
        loglik.superpose([fn], torch.zeros(4, 2, dtype=torch.long), sde, 3)
    with pytest.raises(ValueError, match="x_init"):
        loglik.superpose([fn], torch.zeros(0, 2), sde, 3)
