"""Score estimation: kernel score reductions, Tweedie denoising (Noise2Score), AR-DAE, Hutchinson, and the Ito
density estimator with OR / AND superposition of diffusion models (SuperDiff).

* :func:`kde_score` / :func:`kde_logpdf`: Gaussian KDE score and log-density as one streaming log-sum-exp over the
  samples (C++ on CPU, Triton on CUDA, never an M x N buffer).
* :func:`tweedie_denoise`: posterior-mean estimates from the score of the noisy density (Gaussian, Poisson, Gamma).
* :func:`ardae_loss`, :func:`ardae_sigma`: the amortised residual DAE loss that learns a score from noisy data.
* :func:`hutchinson_divergence`: unbiased divergence estimate with its standard error.
* :class:`VPSDE`, :class:`VESDE`, :func:`ito_logdensity_step`, :func:`superposition_weights`, :func:`superpose`:
  log q_t along a reverse-SDE trajectory from quantities the sampler already has, and the SuperDiff sampler.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import numpy as np

from . import _backend
from ._checks import as_float_array, check_bool, check_choice, check_int, check_positive

__all__ = [
    "kde_score",
    "kde_logpdf",
    "tweedie_denoise",
    "ardae_loss",
    "ardae_sigma",
    "hutchinson_divergence",
    "VPSDE",
    "VESDE",
    "ito_logdensity_step",
    "superposition_weights",
    "superpose",
    "SuperposeResult",
]

_IMPLS = ("auto", "cpp", "triton", "reference")


# ----------------------------------------------------------------------------------------------------------------
# Kernel density estimate: score and log-density
# ----------------------------------------------------------------------------------------------------------------


def _check_bandwidth(bandwidth: Any) -> float:
    if _backend.is_torch(bandwidth):
        if bandwidth.numel() != 1:
            raise ValueError(f"bandwidth: expected a scalar, got shape {tuple(bandwidth.shape)}")
        bandwidth = float(bandwidth.detach().cpu().item())
    elif isinstance(bandwidth, np.ndarray) and bandwidth.ndim == 0:
        bandwidth = bandwidth.item()
    return check_positive(bandwidth, "bandwidth")


def _prepare_kde(x: Any, samples: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated numpy views (no copy when already contiguous float): x [M, D], samples [N', D], log weights [N'].

    Zero-weight samples are dropped; log weights are normalised in float64 and cast to the working dtype.
    """
    xa = as_float_array(x, "x", ndim=2, min_rows=0)
    sa = as_float_array(samples, "samples", ndim=2)
    if sa.shape[1] != xa.shape[1]:
        raise ValueError(f"samples: expected {xa.shape[1]} columns like x, got shape {tuple(sa.shape)}")
    if xa.shape[1] < 1:
        raise ValueError("x: expected at least one column")
    dtype = np.result_type(xa.dtype, sa.dtype)
    xa = xa.astype(dtype, copy=False)
    sa = sa.astype(dtype, copy=False)
    if weights is None:
        return xa, sa, None
    wa = as_float_array(weights, "weights", ndim=1).astype(np.float64, copy=False)
    if wa.shape[0] != sa.shape[0]:
        raise ValueError(f"weights: expected {sa.shape[0]} entries (one per sample), got {wa.shape[0]}")
    if (wa < 0).any():
        raise ValueError("weights: expected nonnegative values")
    if wa.size and wa.max() > 0:
        wa = wa / wa.max()  # the sum of large finite weights (e.g. 1e308 each) would overflow to inf
    total = wa.sum()
    if not total > 0:
        raise ValueError("weights: all weights are zero")
    keep = wa > 0
    if not keep.all():
        sa = np.ascontiguousarray(sa[keep])
        wa = wa[keep]
    logw = (np.log(wa) - math.log(total)).astype(dtype)
    return xa, sa, logw


def _prepare_kde_torch(x: Any, samples: Any, weights: Any) -> tuple[Any, Any, Any]:
    """The checks of :func:`_prepare_kde` done on the tensors' device (no host round trip for CUDA inputs).

    Returns contiguous (x [M, D], samples [N', D], normalised log weights [N']) of one float dtype on one device.
    """
    torch = _backend.torch()
    device = x.device if _backend.is_torch(x) else (samples.device if _backend.is_torch(samples) else "cpu")
    ts = []
    for name, a in (("x", x), ("samples", samples)):
        t = a.detach() if _backend.is_torch(a) else torch.tensor(as_float_array(a, name, min_rows=0))
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
            raise TypeError(f"{name}: expected a float32 or float64 array, got {t.dtype}")
        if t.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array, got shape {tuple(t.shape)}")
        ts.append(t.to(device))
    xt, st = ts
    if st.shape[0] < 1:
        raise ValueError("samples: expected at least 1 row(s)")
    if st.shape[1] != xt.shape[1] or xt.shape[1] < 1:
        raise ValueError(f"samples: expected {xt.shape[1]} columns like x, got shape {tuple(st.shape)}")
    dtype = torch.float64 if torch.float64 in (xt.dtype, st.dtype) or not xt.is_floating_point() else torch.float32
    xt, st = xt.to(dtype).contiguous(), st.to(dtype).contiguous()
    for name, t in (("x", xt), ("samples", st)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
    if weights is None:
        return xt, st, torch.full((st.shape[0],), -math.log(st.shape[0]), dtype=dtype, device=device)
    w = weights.detach() if _backend.is_torch(weights) else torch.tensor(as_float_array(weights, "weights"))
    w = w.to(device=device, dtype=torch.float64)
    if w.ndim != 1 or w.shape[0] != st.shape[0]:
        raise ValueError(f"weights: expected {st.shape[0]} entries (one per sample), got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("weights: contains NaN or infinite values")
    if (w < 0).any():
        raise ValueError("weights: expected nonnegative values")
    if w.numel() and w.max() > 0:
        w = w / w.max()  # the sum of large finite weights would overflow to inf
    total = w.sum()
    if not total > 0:
        raise ValueError("weights: all weights are zero")
    keep = w > 0
    if not keep.all():
        st, w = st[keep].contiguous(), w[keep]
    return xt, st, (torch.log(w) - torch.log(total)).to(dtype)


def _pick_impl(impl: str, x: Any, samples: Any) -> str:
    impl = check_choice(impl, "impl", _IMPLS)
    on_cuda = any(_backend.is_torch(t) and t.device.type == "cuda" for t in (x, samples))
    if impl == "auto":
        if on_cuda and _backend.has_triton():
            return "triton"
        if not on_cuda and _backend.has_compiled():
            return "cpp"
        return "reference"
    if impl == "cpp" and not _backend.has_compiled():
        raise ImportError("impl='cpp': loglik._C (the compiled core) is not available")
    if impl == "triton" and not _backend.has_triton():
        raise ImportError("impl='triton': Triton is not installed")
    if impl == "triton" and not on_cuda and not _backend.triton_interpret():
        raise ValueError("impl='triton': needs CUDA tensors (or TRITON_INTERPRET=1 to interpret the kernel on CPU)")
    return impl


def _needs_grad(*ts: Any) -> bool:
    return any(_backend.is_torch(t) and t.requires_grad for t in ts)


def _kde_forward(x: Any, samples: Any, bandwidth: float, weights: Any, impl: str, isa: str) -> tuple[Any, Any]:
    """(score, logpdf) without autograd, in x's array type (torch in -> torch out on x's device)."""
    if impl == "triton":
        from .kernels.kde import kde_reduce_triton

        xt, st, lw = _prepare_kde_torch(x, samples, weights)
        if xt.shape[0] == 0:
            score, logpdf = xt.clone(), xt.new_empty(0)
        else:
            score, logpdf = kde_reduce_triton(xt, st, lw, bandwidth)
        if not (_backend.is_torch(x) or _backend.is_torch(samples)):
            return score.cpu().numpy(), logpdf.cpu().numpy()
        return score, logpdf
    xa, sa, logw = _prepare_kde(x, samples, weights)
    if impl == "cpp":
        C = _backend.C()
        fn = C.kde_reduce_f32 if xa.dtype == np.float32 else C.kde_reduce_f64
        score, logpdf = fn(xa, sa, logw, bandwidth, True, True, isa)
    else:
        from .reference.score import _kde_parts

        w = None if logw is None else np.exp(logw.astype(np.float64))
        score, logpdf = _kde_parts(xa, sa, bandwidth, w, 1024)
    if _backend.is_torch(x) or _backend.is_torch(samples):
        torch = _backend.torch()
        device = x.device if _backend.is_torch(x) else samples.device
        return torch.from_numpy(score).to(device), torch.from_numpy(logpdf).to(device)
    return score, logpdf


def _kde_autograd(x: Any, samples: Any, bandwidth: float, weights: Any, impl: str, isa: str) -> tuple[Any, Any]:
    """Kernel forward with autograd w.r.t. x: d logpdf / dx is the score itself; the score's own derivative
    (the KDE Hessian) is obtained by differentiating the reference in the backward pass (O(M N) memory there)."""
    torch = _backend.torch()
    from .reference.score import kde_score as ref_kde_score

    function_base: Any = torch.autograd.Function

    class _KdeFn(function_base):
        @staticmethod
        def forward(ctx: Any, xt: Any) -> Any:  # type: ignore[override]
            score, logpdf = _kde_forward(xt, samples, bandwidth, weights, impl, isa)
            score = score.to(xt.dtype)
            logpdf = logpdf.to(xt.dtype)
            ctx.save_for_backward(xt, score)
            return score, logpdf

        @staticmethod
        def backward(ctx: Any, g_score: Any, g_logpdf: Any) -> Any:  # type: ignore[override]
            xt, score = ctx.saved_tensors
            grad = torch.zeros_like(xt)
            if g_logpdf is not None:
                grad = grad + g_logpdf[:, None] * score
            if g_score is not None:
                with torch.enable_grad():
                    xr = xt.detach().requires_grad_(True)
                    s_t = torch.as_tensor(samples).to(dtype=xt.dtype, device=xt.device)
                    w_t = None if weights is None else torch.as_tensor(weights).to(dtype=xt.dtype, device=xt.device)
                    sr = ref_kde_score(xr, s_t, bandwidth, weights=w_t)
                    (gs,) = torch.autograd.grad(sr, xr, g_score)
                grad = grad + gs
            return grad

    return _KdeFn.apply(x)


def _kde(x: Any, samples: Any, bandwidth: Any, weights: Any, impl: str, isa: str) -> tuple[Any, Any]:
    if _needs_grad(samples, weights, bandwidth):
        # gradients w.r.t. the samples, the weights or the bandwidth: differentiate the reference (O(M N) memory)
        from .reference.score import _kde_parts

        _prepare_kde(x, samples, weights)  # validation only
        _check_bandwidth(bandwidth)  # a tensor bandwidth too (a negative one gave the result of |h|)
        return _check_kde_result(*_kde_parts(x, samples, bandwidth, weights, 1024))
    h = _check_bandwidth(bandwidth)
    check_choice(isa, "isa", ("auto", "avx512", "avx2", "baseline"))
    impl = _pick_impl(impl, x, samples)
    if _needs_grad(x):
        return _check_kde_result(*_kde_autograd(x, samples, h, weights, impl, isa))
    return _check_kde_result(*_kde_forward(x, samples, h, weights, impl, isa))


def _check_kde_result(score: Any, logpdf: Any) -> tuple[Any, Any]:
    """Finite inputs give a non-finite score or log-density only when ||x - s||^2 / h^2 leaves the dtype's range:
    name the arguments instead of returning inf/NaN."""
    if not (_all_finite(score) and _all_finite(logpdf)):
        raise ValueError(
            f"x, samples, bandwidth: the KDE score or log-density overflows {score.dtype} (squared distances / "
            "bandwidth^2 beyond the dtype's range: queries very far from every sample, or a bandwidth too small); "
            "rescale x, samples and bandwidth together, or use float64"
        )
    return score, logpdf


@overload
def kde_score(
    x: Any,
    samples: Any,
    bandwidth: Any,
    *,
    weights: Any = ...,
    impl: str = ...,
    return_logpdf: Literal[False] = ...,
    isa: str = ...,
) -> Any: ...
@overload
def kde_score(
    x: Any,
    samples: Any,
    bandwidth: Any,
    *,
    weights: Any = ...,
    impl: str = ...,
    return_logpdf: Literal[True],
    isa: str = ...,
) -> tuple[Any, Any]: ...
def kde_score(
    x: Any,
    samples: Any,
    bandwidth: Any,
    *,
    weights: Any = None,
    impl: str = "auto",
    return_logpdf: bool = False,
    isa: str = "auto",
) -> Any:
    """Score grad_x log p(x) of the Gaussian kernel density estimate p = sum_j w_j N(s_j, h^2 I) / sum_j w_j.

    One streaming log-sum-exp over the samples: score(x) = (sum_j softmax_j(l_j) s_j - x) / h^2 with
    l_j = log w_j - ||x - s_j||^2 / (2 h^2). Memory is O((M + N) D), never M x N; far-away queries are exact (the
    softmax is taken relative to the nearest sample, no 0/0).

    Args:
        x: queries [M, D], numpy array or torch tensor (float32 or float64; ints become float64). Not modified.
        samples: kernel centres [N, D], N >= 1. The result dtype is the wider of x's and samples'.
        bandwidth: scalar h > 0 (float, 0-d array or scalar tensor).
        weights: optional nonnegative sample weights [N], not all zero (normalised internally; zero-weight samples
            are dropped).
        impl: "auto" (C++ for numpy and CPU tensors, Triton for CUDA tensors), "cpp", "triton" or "reference"
            (the O(M N)-memory twin in :mod:`loglik.reference.score`).
        return_logpdf: also return :func:`kde_logpdf` (same pass, no extra cost).
        isa: C++ instruction set: "auto", "avx512", "avx2" or "baseline" (for benchmarking).

    Returns:
        score [M, D] in the caller's array type (torch in, torch out on the same device); with ``return_logpdf``
        the tuple (score [M, D], logpdf [M]).

    Autograd (torch): the kernel path is differentiable w.r.t. ``x`` (the score's Jacobian comes from
    differentiating the reference in the backward pass); when ``samples``, ``weights`` or ``bandwidth`` require
    grad the whole call runs through the reference so that every gradient flows.
    """
    return_logpdf = check_bool(return_logpdf, "return_logpdf")
    score, logpdf = _kde(x, samples, bandwidth, weights, impl, isa)
    return (score, logpdf) if return_logpdf else score


def kde_logpdf(
    x: Any, samples: Any, bandwidth: Any, *, weights: Any = None, impl: str = "auto", isa: str = "auto"
) -> Any:
    """Log-density of the Gaussian KDE: log sum_j w_j N(x; s_j, h^2 I) - log sum_j w_j.

    Same reduction, arguments and dispatch as :func:`kde_score`. Its gradient w.r.t. ``x`` (torch autograd) is the
    score, returned from the forward pass without materialising anything.

    Args:
        x: queries [M, D]; samples: [N, D]; bandwidth: scalar h > 0; weights: optional [N] nonnegative.
        impl: "auto" | "cpp" | "triton" | "reference"; isa: C++ instruction set ("auto", "avx512", "avx2", "baseline").

    Returns:
        logpdf [M] in the caller's array type.
    """
    return _kde(x, samples, bandwidth, weights, impl, isa)[1]


# ----------------------------------------------------------------------------------------------------------------
# Tweedie denoising (Noise2Score)
# ----------------------------------------------------------------------------------------------------------------


def _xp(a: Any) -> Any:
    return _backend.torch() if _backend.is_torch(a) else np


def _check_real(a: Any, name: str) -> None:
    """TypeError naming ``name`` unless a (numpy array or torch tensor) holds real numbers (float, int or bool)."""
    if _backend.is_torch(a):
        if a.is_complex():
            raise TypeError(f"{name}: complex values are not supported")
        return
    if a.dtype.kind == "c":
        raise TypeError(f"{name}: complex values are not supported")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")


def _all_finite(a: Any) -> bool:
    if _backend.is_torch(a):
        return bool(_backend.torch().isfinite(a).all())
    return bool(np.isfinite(a).all())


def tweedie_denoise(
    y: Any,
    score: Any,
    noise: str = "gaussian",
    *,
    sigma: float | None = None,
    zeta: float | None = None,
    k: float | None = None,
    min_denominator: float = 1e-6,
) -> Any:
    """Posterior-mean estimate of the clean signal from the score of the noisy density (Tweedie / Noise2Score).

    * Gaussian, y = x + sigma n:                 x_hat = y + sigma^2 s(y)                  (= E[x | y])
    * Poisson, y = zeta z, z ~ Poisson(x / zeta): x_hat = (y + zeta / 2) exp(zeta s(y))    (= exp E[log x | y]
      with the digamma function psi(z + 1) approximated by log(z + 1/2))
    * Gamma with shape k and mean x:             x_hat = k y / ((k - 1) - y s(y))           (= 1 / E[1/x | y])

    Args:
        y: noisy observations, any shape (numpy array or torch tensor; not modified).
        score: s(y), the score of the noisy density at y: an array of y's shape, or a callable y -> s(y).
        noise: "gaussian", "poisson" or "gamma".
        sigma: Gaussian noise standard deviation (> 0), required for "gaussian".
        zeta: Poisson gain (> 0), required for "poisson"; y must be >= 0.
        k: Gamma shape (> 1), required for "gamma"; y must be >= 0.
        min_denominator: the Gamma denominator (k - 1) - y s(y) is clamped below at ``min_denominator * (k - 1)``
            so that a poor score estimate cannot produce a negative or infinite estimate.

    Returns:
        x_hat with y's shape and array type (differentiable in torch).
    """
    noise = check_choice(noise, "noise", ("gaussian", "poisson", "gamma"))
    if not (_backend.is_torch(y) or isinstance(y, np.ndarray)):
        y = as_float_array(y, "y", min_rows=0)
    _check_real(y, "y")
    if not _all_finite(y):
        raise ValueError("y: contains NaN or infinite values")
    s = score(y) if callable(score) else score
    if not (_backend.is_torch(s) or isinstance(s, np.ndarray)):
        s = as_float_array(s, "score", min_rows=0)
    _check_real(s, "score")
    if tuple(s.shape) != tuple(y.shape):
        raise ValueError(f"score: expected y's shape {tuple(y.shape)}, got {tuple(s.shape)}")
    if not _all_finite(s):
        raise ValueError("score: contains NaN or infinite values")
    if _backend.is_torch(y) and not _backend.is_torch(s):  # mixed types: the result follows y
        s = _backend.torch().as_tensor(s, device=y.device)
    elif not _backend.is_torch(y) and _backend.is_torch(s):
        s = s.detach().cpu().numpy()
    xp = _xp(y)
    if noise == "gaussian":
        if sigma is None:
            raise ValueError("sigma: required for noise='gaussian'")
        sig = check_positive(sigma, "sigma")
        return y + sig * sig * s
    if bool((y < 0).any()):
        raise ValueError(f"y: {noise} observations must be >= 0")
    if noise == "poisson":
        if zeta is None:
            raise ValueError("zeta: required for noise='poisson'")
        z = check_positive(zeta, "zeta")
        return (y + z / 2) * xp.exp(z * s)
    if k is None:
        raise ValueError("k: required for noise='gamma'")
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise TypeError(f"k: expected a real number (the Gamma shape, > 1), got {k!r}")
    if not math.isfinite(k) or k <= 1:
        raise ValueError(f"k: expected a finite number > 1, got {k!r}")
    check_positive(min_denominator, "min_denominator")
    den = (k - 1) - y * s
    floor = min_denominator * (k - 1)
    den = xp.clip(den, floor, None) if xp is np else den.clamp(min=floor)
    return k * y / den


# ----------------------------------------------------------------------------------------------------------------
# AR-DAE
# ----------------------------------------------------------------------------------------------------------------


def ardae_loss(
    score_net: Callable[..., Any], y: Any, sigma_a: Any, *, pass_sigma: bool = False, generator: Any = None
) -> Any:
    """Amortised residual denoising autoencoder loss: E_u ||u + sigma_a R(y + sigma_a u)||^2, u ~ N(0, I).

    Its minimiser over R is sigma_a-smoothed score of the law of y, R(v) = grad log (p_y * N(0, sigma_a^2))(v), which
    tends to the score of y as sigma_a -> 0 (anneal sigma_a with :func:`ardae_sigma`). One noise draw per example.

    Args:
        score_net: callable R mapping a batch shaped like y to a tensor of the same shape (e.g. an nn.Module); with
            ``pass_sigma`` it is called as R(v, sigma_a) with sigma_a a [B] tensor (noise-conditional networks).
        y: noisy data [B, ...] (torch tensor).
        sigma_a: perturbation scale(s) > 0: a float or a [B] tensor (one per example).
        pass_sigma: call ``score_net(v, sigma)`` instead of ``score_net(v)``.
        generator: optional torch.Generator for the perturbation u.

    Returns:
        scalar loss: the mean over the batch of ||u + sigma_a R||^2 / (number of elements per example).
    """
    torch = _backend.torch()
    pass_sigma = check_bool(pass_sigma, "pass_sigma")
    if not callable(score_net):
        raise TypeError(f"score_net: expected a callable (e.g. an nn.Module), got {type(score_net).__name__}")
    _check_generator(generator)
    if not _backend.is_torch(y):
        raise TypeError("y: expected a torch tensor")
    if not y.is_floating_point():
        raise TypeError(f"y: expected a floating-point tensor, got {y.dtype}")
    if y.ndim < 1 or y.shape[0] < 1:
        raise ValueError(f"y: expected a batch [B, ...] with B >= 1, got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y: contains NaN or infinite values")
    b = y.shape[0]
    if _backend.is_torch(sigma_a):
        sig = sigma_a.to(dtype=y.dtype, device=y.device).reshape(-1)
        if sig.numel() == 1:
            sig = sig.expand(b)
        if sig.numel() != b:
            raise ValueError(f"sigma_a: expected a scalar or {b} values, got shape {tuple(sigma_a.shape)}")
        if not (torch.isfinite(sig).all() and (sig > 0).all()):
            raise ValueError("sigma_a: expected finite values > 0")
    else:
        sig = torch.full((b,), check_positive(sigma_a, "sigma_a"), dtype=y.dtype, device=y.device)
    u = torch.randn(y.shape, generator=generator, dtype=y.dtype, device="cpu" if generator is not None else y.device)
    u = u.to(y.device)
    view = (b,) + (1,) * (y.ndim - 1)
    v = y + sig.view(view) * u
    r = score_net(v, sig) if pass_sigma else score_net(v)
    if not _backend.is_torch(r):
        raise TypeError(f"score_net: expected it to return a torch tensor, got {type(r).__name__}")
    if tuple(r.shape) != tuple(y.shape):
        raise ValueError(f"score_net: expected an output of y's shape {tuple(y.shape)}, got {tuple(r.shape)}")
    if not bool(torch.isfinite(r.detach()).all()):
        raise ValueError("score_net: returned NaN or infinite values")
    res = u + sig.view(view) * r
    return (res * res).reshape(b, -1).mean(dim=1).mean()


def ardae_sigma(step: int, n_steps: int, sigma_max: float, sigma_min: float) -> float:
    """Annealing schedule of the AR-DAE perturbation: geometric from sigma_max (step 0) to sigma_min (last step).

    Args:
        step: current step in [0, n_steps).
        n_steps: number of steps (>= 1).
        sigma_max, sigma_min: endpoints, sigma_max >= sigma_min > 0.

    Returns:
        sigma_a for this step.
    """
    n = check_int(n_steps, "n_steps", low=1)
    i = check_int(step, "step", low=0, high=n - 1)
    hi = check_positive(sigma_max, "sigma_max")
    lo = check_positive(sigma_min, "sigma_min")
    if lo > hi:
        raise ValueError(f"sigma_min: expected <= sigma_max ({hi}), got {lo}")
    if n == 1:
        return lo
    return float(hi * (lo / hi) ** (i / (n - 1)))


# ----------------------------------------------------------------------------------------------------------------
# Hutchinson divergence
# ----------------------------------------------------------------------------------------------------------------


def hutchinson_divergence(
    f: Callable[[Any], Any],
    x: Any,
    n_probes: int,
    *,
    probe: str = "rademacher",
    generator: Any = None,
    create_graph: bool = False,
) -> tuple[Any, Any]:
    """Unbiased estimate of div f(x) = tr(df/dx) per batch row, E_v[v^T (df/dx) v] with E[v v^T] = I.

    One forward pass of f, then one vector-Jacobian product per probe (autograd), averaged over the probes.

    Args:
        f: callable mapping x [B, ...] to a tensor of the same shape, row-wise independent.
        x: [B, ...] torch tensor.
        n_probes: number of probes (>= 1).
        probe: "rademacher" (+-1 entries, lower variance) or "gaussian".
        generator: optional torch.Generator (CPU) for the probes.
        create_graph: keep the graph so that the estimate can itself be differentiated.

    Returns:
        (divergence [B], standard error [B]): the mean over probes and the sample standard deviation of the per-probe
        estimates divided by sqrt(n_probes) (inf when n_probes == 1).
    """
    torch = _backend.torch()
    if not callable(f):
        raise TypeError(f"f: expected a callable x -> f(x), got {type(f).__name__}")
    _check_generator(generator)
    if not _backend.is_torch(x):
        raise TypeError("x: expected a torch tensor")
    n = check_int(n_probes, "n_probes", low=1)
    probe = check_choice(probe, "probe", ("rademacher", "gaussian"))
    create_graph = check_bool(create_graph, "create_graph")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor (autograd needs one), got {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected a batch [B, ...] with B >= 1, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x: contains NaN or infinite values")
    xr = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = f(xr)
    if not _backend.is_torch(out):
        raise TypeError(f"f: expected it to return a torch tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"f: expected an output of x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
    if not out.requires_grad:
        raise ValueError("f: its output does not depend on x through autograd (detached, or computed under no_grad)")
    if not bool(torch.isfinite(out.detach()).all()):
        raise ValueError("f: returned NaN or infinite values")
    b = x.shape[0]
    ests = []
    for i in range(n):
        if probe == "rademacher":
            v = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(dtype=x.dtype) * 2 - 1
        else:
            v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu")
        v = v.to(x.device)
        (vjp,) = torch.autograd.grad(out, xr, v, retain_graph=i < n - 1 or create_graph, create_graph=create_graph)
        ests.append((vjp * v).reshape(b, -1).sum(dim=1))
    est = torch.stack(ests)  # [n, B]
    div = est.mean(dim=0)
    if n == 1:
        stderr = torch.full_like(div, float("inf"))
    else:
        stderr = est.std(dim=0, unbiased=True) / math.sqrt(n)
    return div, stderr


# ----------------------------------------------------------------------------------------------------------------
# SDEs, the Ito density estimator and superposition (SuperDiff)
# ----------------------------------------------------------------------------------------------------------------


def _flat_dot(a: Any, b: Any) -> Any:
    return (a * b).reshape(a.shape[0], -1).sum(dim=1)


def _numel_per_row(x: Any) -> int:
    return int(np.prod(x.shape[1:])) if x.ndim > 1 else 1


def _check_time(t: Any) -> float:
    """The SDE time t as a float in [0, 1] (a Python/numpy number or a one-element tensor)."""
    if isinstance(t, bool):
        raise TypeError(f"t: expected a real number (the time in [0, 1]), got {t!r}")
    try:
        v = float(t)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"t: expected a real number (the time in [0, 1]), got {t!r}") from exc
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ValueError(f"t: expected a finite time in [0, 1], got {t!r}")
    return v


def check_real(value: Any, name: str) -> float:
    """A finite real number (not bool), or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number or a tensor, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _check_generator(generator: Any) -> None:
    """TypeError naming ``generator`` unless it is None or a torch.Generator."""
    if generator is not None and not isinstance(generator, _backend.torch().Generator):
        raise TypeError(f"generator: expected None or a torch.Generator, got {type(generator).__name__}")


def _check_tensor(a: Any, name: str, shape: tuple[int, ...] | None = None, *, finite: bool = True) -> None:
    """TypeError unless a is a floating-point torch tensor; ValueError for a wrong shape or NaN/inf values."""
    torch = _backend.torch()
    if not _backend.is_torch(a):
        raise TypeError(f"{name}: expected a torch tensor, got {type(a).__name__}")
    if not a.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    if finite and not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


@dataclasses.dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE dx = -beta(t)/2 x dt + sqrt(beta(t)) dW on t in [0, 1], beta linear in t.

    x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I) with alpha_t = exp(-B(t)/2), sigma_t^2 = 1 - alpha_t^2, where
    B(t) = beta_min t + (beta_max - beta_min) t^2 / 2.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        check_positive(self.beta_min, "beta_min")
        check_positive(self.beta_max, "beta_max")
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max: expected >= beta_min ({self.beta_min}), got {self.beta_max}")

    def beta(self, t: float) -> float:
        return self.beta_min + (self.beta_max - self.beta_min) * _check_time(t)

    def drift(self, x: Any, t: float) -> Any:
        """f(x, t) = -beta(t) x / 2, same shape as x."""
        return -0.5 * self.beta(t) * x

    def diffusion(self, t: float) -> float:
        """g(t) = sqrt(beta(t))."""
        return math.sqrt(self.beta(t))

    def div_drift(self, x: Any, t: float) -> Any:
        """div_x f = -beta(t) D / 2 per batch row ([B] tensor)."""
        torch = _backend.torch()
        return torch.full((x.shape[0],), -0.5 * self.beta(t) * _numel_per_row(x), dtype=x.dtype, device=x.device)

    def marginal(self, t: float) -> tuple[float, float]:
        """(alpha_t, sigma_t) of x_t = alpha_t x_0 + sigma_t eps."""
        t = _check_time(t)
        big_b = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t
        alpha = math.exp(-0.5 * big_b)
        return alpha, math.sqrt(max(0.0, -math.expm1(-big_b)))

    def prior_std(self) -> float:
        """Standard deviation of the reference distribution at t = 1 (approximately N(0, I))."""
        return 1.0


@dataclasses.dataclass(frozen=True)
class VESDE:
    """Variance-exploding SDE dx = sqrt(d sigma^2(t) / dt) dW with sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    x_t | x_0 ~ N(x_0, (sigma(t)^2 - sigma(0)^2) I); the drift is zero.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self) -> None:
        check_positive(self.sigma_min, "sigma_min")
        check_positive(self.sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError("sigma_max: expected > sigma_min")

    def sigma(self, t: float) -> float:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _check_time(t)

    def drift(self, x: Any, t: float) -> Any:
        _check_time(t)
        return 0.0 * x

    def diffusion(self, t: float) -> float:
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def div_drift(self, x: Any, t: float) -> Any:
        torch = _backend.torch()
        _check_time(t)
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def marginal(self, t: float) -> tuple[float, float]:
        return 1.0, math.sqrt(max(0.0, self.sigma(t) ** 2 - self.sigma_min**2))

    def prior_std(self) -> float:
        return self.sigma_max


def ito_logdensity_step(
    logq: Any, dx: Any, score: Any, *, drift: Any, diffusion: float, div_drift: Any, dtau: float
) -> Any:
    """One step of the Ito density estimator: log q along a reverse-time trajectory, no extra network pass.

    For the forward SDE dx = f dt + g dW with marginals q_t, and any reverse-time step x_tau -> x_tau + dx_tau of
    length dtau > 0 (forward time t -> t - dtau), Ito's lemma gives
    d log q_t(x_tau) = <dx_tau, s> + (div f + <f - (g^2 / 2) s, s>) dtau, with s = grad log q_t, f, g and div f
    evaluated at the start of the step (Euler-Maruyama).

    Args:
        logq: [B] current estimate of log q_t(x_t).
        dx: [B, ...] the step actually taken, x_{t - dtau} - x_t.
        score: [B, ...] s = grad_x log q_t(x_t) (the score the sampler already computed).
        drift: [B, ...] f(x_t, t).
        diffusion: g(t) (scalar).
        div_drift: [B] (or scalar) divergence of f at x_t (-beta D / 2 for VP, 0 for VE).
        dtau: step length in reverse time (> 0).

    Returns:
        [B] estimate of log q_{t - dtau}(x_{t - dtau}).
    """
    if not _backend.is_torch(dx):
        raise TypeError("dx: expected a torch tensor")
    if dx.ndim < 1:
        raise ValueError(f"dx: expected a batch [B, ...], got shape {tuple(dx.shape)}")
    _check_tensor(dx, "dx")
    for name, a in (("score", score), ("drift", drift)):
        if _backend.is_torch(a) and tuple(a.shape) != tuple(dx.shape):
            raise ValueError(
                f"score, drift: expected dx's shape {tuple(dx.shape)}, got "
                f"{tuple(getattr(score, 'shape', ()))}, {tuple(getattr(drift, 'shape', ()))}"
            )
        _check_tensor(a, name, tuple(dx.shape))
    _check_tensor(logq, "logq", (dx.shape[0],))
    if _backend.is_torch(div_drift):
        if tuple(div_drift.shape) not in ((), (dx.shape[0],)):
            raise ValueError(f"div_drift: expected a scalar or shape ({dx.shape[0]},), got {tuple(div_drift.shape)}")
        _check_tensor(div_drift, "div_drift")
    else:
        check_real(div_drift, "div_drift")
    dtau = check_positive(dtau, "dtau")
    g2 = check_positive(diffusion, "diffusion", allow_zero=True) ** 2
    return _ito_step(logq, dx, score, drift, g2, div_drift, dtau)


def _ito_step(logq: Any, dx: Any, score: Any, drift: Any, g2: float, div_drift: Any, dtau: float) -> Any:
    return logq + _flat_dot(dx, score) + (div_drift + _flat_dot(drift - 0.5 * g2 * score, score)) * dtau


def superposition_weights(
    logq: Any,
    mode: str = "or",
    *,
    temperature: float = 1.0,
    bias: Any = None,
    scores: Any = None,
    drift: Any = None,
    diffusion: float | None = None,
    div_drift: Any = None,
    dtau: float | None = None,
    noise: Any = None,
    ridge: float = 1e-8,
) -> Any:
    """Mixing weights kappa [B, K] of K score models for one reverse step (SuperDiff).

    * OR (mixture): kappa = softmax_i(T log q_i + bias_i).
    * AND (equal densities): kappa with sum_i kappa_i = 1 chosen so that after the step x -> x + dx, with
      dx = (-f + g^2 sum_i kappa_i s_i) dtau + g noise (noise = sqrt(dtau) z), the Ito-estimated log-densities of
      all models are equal: log q_i + d log q_i = c for every i (a (K + 1) x (K + 1) linear system per row, with a
      small ridge for degenerate configurations).

    Args:
        logq: [K, B] current log-density estimates of the models.
        mode: "or" or "and".
        temperature: T for OR (> 0).
        bias: optional [K] (or [K, B]) biases for OR.
        scores: [K, B, ...] model scores at x (AND only).
        drift: [B, ...] f(x, t); diffusion: g(t); div_drift: [B]; dtau: step; noise: [B, ...] g-free Brownian
            increment sqrt(dtau) z of the step (AND only).
        ridge: Tikhonov term added to the Gram block (AND).

    Returns:
        kappa [B, K] (rows sum to one; AND weights may be negative).
    """
    torch = _backend.torch()
    mode = check_choice(mode, "mode", ("or", "and"))
    if not _backend.is_torch(logq):
        raise TypeError(f"logq: expected a torch tensor, got {type(logq).__name__}")
    if logq.ndim != 2:
        raise ValueError(f"logq: expected [K, B], got shape {tuple(logq.shape)}")
    _check_tensor(logq, "logq", finite=False)
    if bool(torch.isnan(logq).any()) or bool(torch.isposinf(logq).any()):
        raise ValueError("logq: contains NaN or +inf values")
    k_models, b = logq.shape
    if mode == "or":
        t = check_positive(temperature, "temperature")
        logits = t * logq
        if bias is not None:
            bias_t = _as_real_tensor(bias, "bias", logq)
            if tuple(bias_t.shape) not in ((k_models,), (k_models, b)):
                raise ValueError(f"bias: expected shape ({k_models},) or ({k_models}, {b}), got {tuple(bias_t.shape)}")
            if bool(torch.isnan(bias_t).any()) or bool(torch.isposinf(bias_t).any()):
                raise ValueError("bias: contains NaN or +inf values")
            logits = logits + (bias_t[:, None] if bias_t.ndim == 1 else bias_t)
        if k_models and bool(torch.isneginf(logits).all(dim=0).any()):
            raise ValueError("logq: some batch row has log-density (plus bias) -inf under every model")
        # exp(l - logsumexp l) rather than torch.softmax, which is ~1000x slower for small float64 inputs on CPU
        return torch.exp(logits - torch.logsumexp(logits, dim=0, keepdim=True)).T
    if scores is None or drift is None or diffusion is None or div_drift is None or dtau is None or noise is None:
        raise ValueError("mode='and' needs scores, drift, diffusion, div_drift, dtau and noise")
    g = check_positive(diffusion, "diffusion", allow_zero=True)
    dt = check_positive(dtau, "dtau")
    ridge = check_positive(ridge, "ridge", allow_zero=True)
    if not bool(torch.isfinite(logq).all()):
        raise ValueError("logq: contains NaN or infinite values")
    if not _backend.is_torch(scores) or scores.ndim < 2 or tuple(scores.shape[:2]) != (k_models, b):
        raise ValueError(
            f"scores: expected a tensor [K={k_models}, B={b}, ...], got {tuple(getattr(scores, 'shape', ()))}"
        )
    _check_tensor(scores, "scores")
    _check_tensor(drift, "drift", tuple(scores.shape[1:]))
    _check_tensor(noise, "noise", tuple(scores.shape[1:]))
    if _backend.is_torch(div_drift):
        if tuple(div_drift.shape) not in ((), (b,)):
            raise ValueError(f"div_drift: expected a scalar or shape ({b},), got {tuple(div_drift.shape)}")
        _check_tensor(div_drift, "div_drift")
    else:
        div_drift = torch.as_tensor(check_real(div_drift, "div_drift"), dtype=scores.dtype, device=scores.device)
    s = scores.reshape(k_models, b, -1)  # [K, B, P]
    f = drift.reshape(b, -1)
    base_dx = -f * dt + g * noise.reshape(b, -1)  # kappa-independent part of the step
    a = (base_dx[None] * s).sum(-1) + (div_drift[None] + ((f[None] - 0.5 * g * g * s) * s).sum(-1)) * dt  # [K, B]
    # the (K + 1) x (K + 1) systems are assembled and solved in float64: in float32 the default ridge (1e-8
    # relative) is below the rounding, and two identical models (a natural sanity check) gave a singular system
    wide = torch.float64
    gram = torch.einsum("kbp,jbp->bkj", s, s).to(wide) * (g * g * dt)  # [B, K, K]: d(d log q_k)/d kappa_j
    eye = torch.eye(k_models, dtype=wide, device=s.device)
    gram = gram + ridge * (1 + gram.diagonal(dim1=1, dim2=2).abs().mean(-1))[:, None, None] * eye
    system = torch.zeros(b, k_models + 1, k_models + 1, dtype=wide, device=s.device)
    system[:, :k_models, :k_models] = gram
    system[:, :k_models, k_models] = -1.0
    system[:, k_models, :k_models] = 1.0
    rhs = torch.zeros(b, k_models + 1, dtype=wide, device=s.device)
    rhs[:, :k_models] = -(logq + a).T.to(wide)
    rhs[:, k_models] = 1.0
    try:
        sol = torch.linalg.solve(system, rhs).to(s.dtype)
    except RuntimeError as exc:  # torch.linalg.LinAlgError: a singular system at some batch row
        raise ValueError(
            "scores: the AND weights are undetermined (the models' scores are linearly dependent at some batch row, "
            "e.g. identical models with ridge=0); raise ridge"
        ) from exc
    return sol[:, :k_models]


def _as_real_tensor(a: Any, name: str, like: Any) -> Any:
    """``a`` as a tensor of ``like``'s dtype and device, or a TypeError naming ``name`` (strings, objects)."""
    torch = _backend.torch()
    try:
        t = torch.as_tensor(a)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name}: expected a tensor or array of real numbers, got {type(a).__name__}") from exc
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool)):
        raise TypeError(f"{name}: expected real numbers, got {t.dtype}")
    return t.to(dtype=like.dtype, device=like.device)


@dataclasses.dataclass
class SuperposeResult:
    """Output of :func:`superpose`: final samples x [B, ...], Ito log-densities logq [K, B] of every model at the
    final time, the last weights kappa [B, K], and the final time t_end."""

    x: Any
    logq: Any
    kappa: Any
    t_end: float


def superpose(
    score_fns: Sequence[Callable[[Any, float], Any]],
    x_init: Any,
    sde: VPSDE | VESDE,
    n_steps: int,
    *,
    mode: str = "or",
    temperature: float = 1.0,
    bias: Any = None,
    t_end: float = 1e-3,
    logq_init: Any = None,
    generator: Any = None,
) -> SuperposeResult:
    """Sample from the superposition of K diffusion models (SuperDiff) with Euler-Maruyama on the reverse SDE.

    Each step evaluates every model's score once, forms kappa with :func:`superposition_weights`, moves
    dx = (-f + g^2 sum_i kappa_i s_i) dtau + g sqrt(dtau) z and updates every log q_i with
    :func:`ito_logdensity_step` from the same scores (no extra network pass, no divergence of a network).

    Args:
        score_fns: K callables (x [B, ...], t) -> score [B, ...] of the models' noisy marginals q_i,t.
        x_init: [B, ...] samples of the reference distribution at t = 1.
        sde: the forward SDE shared by the models (:class:`VPSDE` or :class:`VESDE`).
        n_steps: number of reverse steps from t = 1 to t = t_end.
        mode: "or" (mixture) or "and" (equal densities).
        temperature, bias: OR parameters.
        t_end: final time (> 0, < 1).
        logq_init: [K, B] log q_i,1(x_init); default: the log-density of the SDE's N(0, prior_std^2 I) reference,
            identical for all models (only differences between models matter for the weights).
        generator: optional torch.Generator (CPU) for the Brownian increments.

    Returns:
        :class:`SuperposeResult`.
    """
    torch = _backend.torch()
    if len(score_fns) < 1:
        raise ValueError("score_fns: expected at least one model")
    for j, fn in enumerate(score_fns):
        if not callable(fn):
            raise TypeError(f"score_fns[{j}]: expected a callable (x, t) -> score, got {type(fn).__name__}")
    if not _backend.is_torch(x_init):
        raise TypeError("x_init: expected a torch tensor")
    if not x_init.is_floating_point():
        raise TypeError(f"x_init: expected a floating-point tensor, got {x_init.dtype}")
    if x_init.ndim < 1 or x_init.shape[0] < 1:
        raise ValueError(f"x_init: expected a batch [B, ...] with B >= 1, got shape {tuple(x_init.shape)}")
    if not torch.isfinite(x_init).all():
        raise ValueError("x_init: contains NaN or infinite values")
    if not all(callable(getattr(sde, m, None)) for m in ("drift", "diffusion", "div_drift", "prior_std")):
        raise TypeError(f"sde: expected a VPSDE or VESDE (drift, diffusion, div_drift, prior_std), got {sde!r}")
    n = check_int(n_steps, "n_steps", low=1)
    mode = check_choice(mode, "mode", ("or", "and"))
    _check_generator(generator)
    t1 = check_positive(t_end, "t_end")
    if t1 >= 1:
        raise ValueError(f"t_end: expected < 1, got {t1}")
    x = x_init.detach().clone()
    k_models, b = len(score_fns), x.shape[0]
    if logq_init is None:
        sd = sde.prior_std()
        d = _numel_per_row(x)
        lq0 = -0.5 * _flat_dot(x, x) / sd**2 - 0.5 * d * math.log(2 * math.pi * sd**2)
        logq = lq0[None].repeat(k_models, 1)
    else:
        logq = _as_real_tensor(logq_init, "logq_init", x).clone()
        if tuple(logq.shape) != (k_models, b):
            raise ValueError(f"logq_init: expected shape ({k_models}, {b}), got {tuple(logq.shape)}")
        if bool(torch.isnan(logq).any()) or bool(torch.isposinf(logq).any()):
            raise ValueError("logq_init: contains NaN or +inf values")
    ts = np.linspace(1.0, t1, n + 1)
    kappa = torch.full((b, k_models), 1.0 / k_models, dtype=x.dtype, device=x.device)
    for i in range(n):
        t, dtau = float(ts[i]), float(ts[i] - ts[i + 1])
        with torch.no_grad():
            outs = [fn(x, t) for fn in score_fns]
            for j, sj in enumerate(outs):
                if not _backend.is_torch(sj) or tuple(sj.shape) != tuple(x.shape):
                    raise ValueError(
                        f"score_fns[{j}]: expected a tensor of x's shape {tuple(x.shape)}, got "
                        f"{type(sj).__name__} {tuple(getattr(sj, 'shape', ()))}"
                    )
                if not bool(torch.isfinite(sj).all()):
                    raise ValueError(f"score_fns[{j}]: returned NaN or infinite values at t={t:.6g} (step {i})")
            scores = torch.stack(outs).to(x.dtype)  # [K, B, ...]
            f = sde.drift(x, t)
            g = sde.diffusion(t)
            div_f = sde.div_drift(x, t)
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
            noise = math.sqrt(dtau) * z
            if mode == "or":
                kappa = superposition_weights(logq, "or", temperature=temperature, bias=bias)
            else:
                kappa = superposition_weights(
                    logq, "and", scores=scores, drift=f, diffusion=g, div_drift=div_f, dtau=dtau, noise=noise
                )
            view = (b, k_models) + (1,) * (x.ndim - 1)
            mixed = (kappa.view(view) * scores.transpose(0, 1)).sum(dim=1)
            dx = (-f + g * g * mixed) * dtau + g * noise
            logq = torch.stack([_ito_step(logq[j], dx, scores[j], f, g * g, div_f, dtau) for j in range(k_models)])
            x = x + dx
    return SuperposeResult(x=x, logq=logq, kappa=kappa, t_end=t1)
