"""Reference twins of the score-estimation kernels, and closed forms used to check them.

Plain numpy / torch, float64-capable, O(M N) memory (chunked over queries), never importing compiled code:
``kde_score`` / ``kde_logpdf`` say exactly what the C++ and Triton kernels compute. ``divergence_exact`` is the
Jacobian trace that ``hutchinson_divergence`` estimates. The ``conjugate_*`` functions give exact noisy-data scores
and posterior quantities for conjugate priors, the closed forms Tweedie's formula must reproduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _backend

__all__ = [
    "kde_score",
    "kde_logpdf",
    "divergence_exact",
    "conjugate_gaussian",
    "conjugate_poisson",
    "conjugate_gamma",
]


def _kde_parts(x: Any, samples: Any, bandwidth: Any, weights: Any, chunk: int) -> tuple[Any, Any]:
    """(score [M, D], logpdf [M]) in the array type of x; torch in, torch out (autograd flows through)."""
    if _backend.is_torch(x) or _backend.is_torch(samples):
        torch = _backend.torch()
        x_t = torch.as_tensor(x)
        s_t = torch.as_tensor(samples, dtype=x_t.dtype, device=x_t.device)
        h2 = torch.as_tensor(bandwidth, dtype=x_t.dtype, device=x_t.device) ** 2
        n, d = s_t.shape
        if weights is None:
            logw = torch.full((n,), -math.log(n), dtype=x_t.dtype, device=x_t.device)
        else:
            w = torch.as_tensor(weights, dtype=x_t.dtype, device=x_t.device)
            logw = torch.log(w) - torch.log(w.sum())
        scores, logps = [], []
        for i in range(0, x_t.shape[0], chunk):
            xc = x_t[i : i + chunk]
            diff = xc[:, None, :] - s_t[None, :, :]  # [m, N, D]
            logits = logw[None, :] - (diff * diff).sum(-1) / (2 * h2)  # [m, N]
            lse = torch.logsumexp(logits, dim=1)
            p = torch.exp(logits - lse[:, None])
            scores.append((p @ s_t - xc) / h2)
            logps.append(lse - 0.5 * d * torch.log(2 * math.pi * h2))
        return torch.cat(scores), torch.cat(logps)
    x_n = np.asarray(x)
    s_n = np.asarray(samples, dtype=x_n.dtype)
    n, d = s_n.shape
    h2 = float(bandwidth) ** 2
    if weights is None:
        logw = np.full(n, -math.log(n))
    else:
        w = np.asarray(weights, dtype=np.float64)
        with np.errstate(divide="ignore"):
            logw = np.log(w) - np.log(w.sum())
    logw = logw.astype(x_n.dtype)
    scores, logps = [], []
    for i in range(0, x_n.shape[0], chunk):
        xc = x_n[i : i + chunk]
        diff = xc[:, None, :] - s_n[None, :, :]
        logits = logw[None, :] - (diff * diff).sum(-1) / x_n.dtype.type(2 * h2)
        mx = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - mx)
        tot = e.sum(axis=1, keepdims=True)
        scores.append(((e / tot) @ s_n - xc) / x_n.dtype.type(h2))
        logps.append((mx[:, 0] + np.log(tot[:, 0]) - 0.5 * d * math.log(2 * math.pi * h2)).astype(x_n.dtype))
    return np.concatenate(scores), np.concatenate(logps)


def kde_score(
    x: Any,
    samples: Any,
    bandwidth: Any,
    *,
    weights: Any = None,
    return_logpdf: bool = False,
    chunk: int = 1024,
    **_ignored: Any,
) -> Any:
    """Score of a Gaussian KDE, grad_x log p(x), by materialising the [chunk, N] logits.

    Args:
        x: queries [M, D] (numpy or torch).
        samples: kernel centres [N, D].
        bandwidth: scalar h > 0 (a torch scalar tensor keeps autograd).
        weights: optional nonnegative weights [N] (need not sum to one).
        return_logpdf: also return the log-density [M].
        chunk: queries per chunk. Other keywords of loglik.kde_score (impl, isa) are accepted and ignored.

    Returns:
        score [M, D] = (sum_j softmax_j(log w_j - ||x - s_j||^2 / 2h^2) s_j - x) / h^2 (and logpdf [M]).
    """
    score, logpdf = _kde_parts(x, samples, bandwidth, weights, chunk)
    return (score, logpdf) if return_logpdf else score


def kde_logpdf(x: Any, samples: Any, bandwidth: Any, *, weights: Any = None, chunk: int = 1024, **_ignored: Any) -> Any:
    """Log-density of a Gaussian KDE: log sum_j w_j N(x; s_j, h^2 I) / sum_j w_j.

    Args:
        x: queries [M, D]; samples: [N, D]; bandwidth: scalar h; weights: optional [N].

    Returns:
        logpdf [M].
    """
    return _kde_parts(x, samples, bandwidth, weights, chunk)[1]


def divergence_exact(f: Callable[[Any], Any], x: Any) -> Any:
    """Exact divergence sum_i d f_i / d x_i of a batched torch field f: [B, ...] -> [B, ...] via the full Jacobian.

    Args:
        f: callable mapping x to a tensor of x's shape, acting independently on each batch row.
        x: [B, ...] torch tensor.

    Returns:
        [B] divergences (O(D) backward passes: a reference for small D only).
    """
    torch = _backend.torch()
    xb = x.detach().requires_grad_(True)
    out = f(xb).reshape(x.shape[0], -1)
    div = torch.zeros(x.shape[0], dtype=out.dtype, device=out.device)
    for i in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, i].sum(), xb, retain_graph=True)
        div = div + g.reshape(x.shape[0], -1)[:, i]
    return div


def conjugate_gaussian(y: np.ndarray, sigma: float, prior_mean: float, prior_std: float) -> tuple[Any, Any]:
    """x ~ N(mu, tau^2), y = x + sigma n: exact score of p(y) and the posterior mean E[x | y].

    Returns:
        (score [shape of y], posterior_mean [shape of y]).
    """
    var = prior_std**2 + sigma**2
    score = -(y - prior_mean) / var
    post_mean = (prior_std**2 * y + sigma**2 * prior_mean) / var
    return score, post_mean


def conjugate_poisson(y: np.ndarray, zeta: float, shape: float, rate: float) -> tuple[Any, Any]:
    """x / zeta ~ Gamma(shape, rate), y = zeta z with z ~ Poisson(x / zeta).

    The "score" of the discrete noisy law is the y-derivative of the log of its negative-binomial pmf continued to
    real z with Gamma functions: s(y) = (psi(shape + z) - psi(z + 1) - log(rate + 1)) / zeta.

    Returns:
        (score, exp(E[log x | y])): Tweedie's formula with the exact digamma gives the posterior mean of the
        natural parameter log x, i.e. this geometric posterior mean.
    """
    from scipy.special import digamma

    z = y / zeta
    score = (digamma(shape + z) - digamma(z + 1) - math.log(rate + 1)) / zeta
    geo_mean = zeta * np.exp(digamma(shape + z) - math.log(rate + 1))
    return score, geo_mean


def conjugate_gamma(y: np.ndarray, k: float, shape: float, scale: float) -> tuple[Any, Any]:
    """1 / x ~ Gamma(shape, rate=scale) (x inverse-gamma), y | x ~ Gamma(k, rate=k / x) (mean x, variance x^2 / k).

    Returns:
        (score of p(y) = (k - 1) / y - k (shape + k) / (scale + k y), 1 / E[1/x | y] = (scale + k y) / (shape + k)).
    """
    score = (k - 1) / y - k * (shape + k) / (scale + k * y)
    harmonic = (scale + k * y) / (shape + k)
    return score, harmonic
