"""Clustering baselines and metrics: K-means, Gaussian-mixture EM, the mixture log-density and the mis-clustering
error.

Every solver runs entirely in the compiled core (``loglik._C``): k-means++ seeding and Lloyd iterations for
:func:`kmeans`; k-means++ (or random) initialisation, E-steps (Cholesky whitening + log-sum-exp) and M-steps (one
GEMM for the means, one SYRK per component for the covariances) for :func:`gmm_em`. :func:`gmm_logpdf` is the
E-step's reduction on its own; with torch tensors that require gradients it runs the differentiable torch twin.

Degenerate data is handled, never returned as NaN:

* an empty K-means cluster during Lloyd iterations is moved to the point farthest from its centre (this can only
  lower the inertia); with fewer than ``n_clusters`` distinct points some clusters stay empty;
* an EM component that starts empty is re-seeded at the point worst explained by the others, with the data's
  per-feature variances as covariance; a component whose total responsibility later falls below ``1e-6 n / K``
  keeps its previous mean and covariance (a generalised M-step: the log-likelihood still never decreases) and a
  tiny weight;
* every EM variance gets ``reg_covar`` added; full covariances get ``max(reg_covar, p eps max_j var(x_j))`` on
  their diagonal, where ``eps`` is the machine epsilon of X's dtype: that floor is the round-off a covariance
  carries in that precision (negligible in float64; in float32 it keeps nearly collinear features from producing
  meaningless E-steps). M-steps accumulate and Cholesky factors are computed in float64 for either dtype. When
  that is still not enough for a Cholesky factor (e.g. ``reg_covar=0`` with a constant column), extra diagonal
  loading of ``max(reg_covar, 10 eps s) 10^j`` (``s`` the mean feature variance, j = 0, 1, ...) is added, counted
  in ``info["n_jitter"]``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

from . import _backend
from ._checks import as_float_array, check_bool, check_choice, check_int, check_positive, like_input, to_numpy

__all__ = [
    "KMeansResult",
    "MixtureResult",
    "kmeans",
    "gmm_em",
    "gmm_logpdf",
    "misclustering_error",
]

_COV_CODES = {"full": 0, "diag": 1, "spherical": 2}
_INT_MAX = 2**31 - 1  # n_init and max_iter are C ints in the compiled core (larger ones were pybind TypeErrors)
_EM_INIT_CODES = {"kmeans++": 0, "random": 1, "kmeans": 3}


@dataclasses.dataclass(frozen=True, eq=False)
class KMeansResult:
    """Result of :func:`kmeans`.

    Attributes:
        labels: int64 (n,) cluster of each point, in [0, n_clusters).
        centers: (n_clusters, p) cluster centres, dtype of X.
        inertia: sum of squared distances of the points to their centres (computed in float64).
        n_iter: Lloyd iterations of the best run.
        converged: whether the best run met the tolerance (or reached a fixed point) before max_iter.
        n_relocated: empty clusters moved to far points during the best run.
    """

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int
    converged: bool = True
    n_relocated: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class MixtureResult:
    """Result of :func:`gmm_em`.

    Attributes:
        labels: int64 (n,) most responsible component of each point.
        means: (K, p) component means.
        covariances: (K, p, p) for "full", (K, p) variances for "diag", (K,) for "spherical".
        weights: (K,) mixing weights, summing to one.
        log_likelihood: mean per-point log-likelihood of the best run (the quantity EM increases).
        n_iter: EM iterations of the best run.
        converged: whether the change of the mean log-likelihood fell below tol before max_iter.
        responsibilities: (n, K) posterior membership probabilities (rows sum to one).
        history: (n_iter,) mean log-likelihood after each E-step of the best run (non-decreasing up to round-off).
        info: counters of regularisation events (n_reseeded, n_frozen, n_jitter) and best_init.
    """

    labels: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    log_likelihood: float
    n_iter: int
    converged: bool
    responsibilities: np.ndarray | None = None
    history: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def _check_seed(seed: Any) -> int:
    """A 63-bit seed for the compiled RNG: an int >= 0, a numpy Generator/RandomState, or None (fresh entropy)."""
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**63 - 1))
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if isinstance(seed, np.random.RandomState):
        return int(seed.randint(0, 2**31 - 1))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, a numpy Generator or None, got {seed!r}")
    if int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    return int(seed) % (2**64)


def _check_data(X: Any, n_clusters: Any) -> tuple[np.ndarray, int]:
    Xa = as_float_array(X, "X", ndim=2)
    if Xa.shape[1] < 1:
        raise ValueError(f"X: expected at least one feature (column), got shape {Xa.shape}")
    K = check_int(n_clusters, "n_clusters", low=1)
    if K > Xa.shape[0]:
        raise ValueError(f"n_clusters: expected <= the number of samples {Xa.shape[0]}, got {K}")
    return Xa, K


def _power_of_two_exponent(Xa: np.ndarray) -> int:
    """0 for data whose squared distances are safe in X's dtype, else e such that 2^e max |X| lies in [1, 2).

    Lloyd iterations and k-means++ compare squared distances computed in X's dtype: values above
    ~sqrt(max / p) overflow them (inf distances, wrong labels) and values below ~sqrt(tiny) / eps lose their
    precision (underflow). K-means is scale-equivariant and scaling by a power of two is exact, so rescaling such
    data gives the same partition as exact arithmetic would; data in the safe range is left untouched (bit-identical
    results).
    """
    a = max(float(Xa.max()), -float(Xa.min())) if Xa.size else 0.0  # no n x p temporary, unlike np.abs
    if a == 0.0:
        return 0
    fi = np.finfo(Xa.dtype)
    hi = float(np.sqrt(float(fi.max) / (16.0 * Xa.shape[1])))
    lo = float(np.sqrt(float(fi.tiny)) / float(fi.eps))
    if lo <= a <= hi:
        return 0
    return -int(np.floor(np.log2(a)))


def _check_variance_range(Xa: np.ndarray) -> None:
    """ValueError naming X when its variances cannot be represented in its dtype (EM's covariances would be inf)."""
    if not Xa.size:
        return
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing mean or range is exactly the error below
        mean = Xa.mean(0, dtype=np.float64)  # per-column extremes: no n x p temporary
        a = float(np.maximum(Xa.max(0) - mean, mean - Xa.min(0)).max())
    limit = float(np.sqrt(float(np.finfo(Xa.dtype).max) / 16.0))
    if not a <= limit:  # also NaN (inf - inf)
        raise ValueError(
            f"X: deviations from the mean up to {a:.3g} overflow {Xa.dtype} when squared (the covariances would be "
            f"inf); rescale X{' or pass float64' if Xa.dtype == np.float32 else ''}"
        )


def _check_init_array(init: Any, K: int, p: int, dtype: np.dtype) -> np.ndarray:
    arr = as_float_array(init, "init", ndim=2).astype(dtype, copy=False)
    if arr.shape != (K, p):
        raise ValueError(f"init: expected shape ({K}, {p}), got {arr.shape}")
    return np.ascontiguousarray(arr)


def kmeans(
    X: Any,
    n_clusters: int,
    *,
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: Any = None,
    init: Any = "k-means++",
) -> KMeansResult:
    """K-means by greedy k-means++ seeding and Lloyd iterations, in C++ (OpenMP + BLAS).

    Args:
        X: (n, p) data, numpy array or torch tensor, float32 or float64 (other numeric dtypes become float64).
        n_clusters: K, 1 <= K <= n.
        n_init: independent k-means++ runs; the lowest inertia wins (ignored when ``init`` is an array).
        max_iter: maximum Lloyd iterations per run.
        tol: convergence when the squared shift of all centres is <= tol * (mean per-feature variance of X), as in
            scikit-learn; a run also stops at a fixed point of the assignment.
        seed: int >= 0, numpy Generator, or None for fresh entropy.
        init: "k-means++" or a (K, p) array of initial centres.

    Returns:
        KMeansResult with labels int64 (n,), centers (K, p) in the dtype of X (numpy), inertia, n_iter.
    """
    Xa, K = _check_data(X, n_clusters)
    n_init = check_int(n_init, "n_init", low=1, high=_INT_MAX)
    max_iter = check_int(max_iter, "max_iter", low=1, high=_INT_MAX)
    tol = check_positive(tol, "tol", allow_zero=True)
    seed_ = _check_seed(seed)
    if isinstance(init, str):
        check_choice(init, "init", ("k-means++",))
        init_arr = None
    else:
        init_arr = _check_init_array(init, K, Xa.shape[1], Xa.dtype)
    e = _power_of_two_exponent(Xa)
    if e:  # extreme magnitudes: solve on exactly rescaled copies (the caller's arrays are untouched)
        Xa = np.ldexp(Xa, e).astype(Xa.dtype, copy=False)
        init_arr = None if init_arr is None else np.ldexp(init_arr, e).astype(init_arr.dtype, copy=False)
    d = _backend.C().kmeans(Xa, K, n_init, max_iter, tol, seed_, init_arr)
    centers = np.asarray(d["centers"])
    inertia = float(d["inertia"])
    if e:
        centers = np.ldexp(centers, -e).astype(centers.dtype, copy=False)
        with np.errstate(over="ignore", under="ignore"):
            inertia = float(np.ldexp(np.float64(inertia), -2 * e))
    if not (np.isfinite(inertia) and np.isfinite(centers).all()):
        raise ValueError(
            f"X: values up to {float(np.ldexp(np.abs(Xa).max(), -e)):.3g} make the inertia overflow float64; rescale X"
        )
    return KMeansResult(
        labels=d["labels"],
        centers=centers,
        inertia=inertia,
        n_iter=int(d["n_iter"]),
        converged=bool(d["converged"]),
        n_relocated=int(d["n_relocated"]),
    )


def gmm_em(
    X: Any,
    n_clusters: int,
    covariance: str = "full",
    *,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    seed: Any = None,
    init: Any = "kmeans++",
) -> MixtureResult:
    """Expectation-maximisation for a Gaussian mixture, entirely in C++ (OpenMP + BLAS/LAPACK).

    Args:
        X: (n, p) data, numpy array or torch tensor, float32 or float64.
        n_clusters: K, 1 <= K <= n.
        covariance: "full", "diag" or "spherical".
        n_init: independent initialisations; the highest final log-likelihood wins (ignored for an array init).
        max_iter: maximum EM iterations per run.
        tol: stop when the mean per-point log-likelihood changes by less than tol (scikit-learn's criterion).
        reg_covar: non-negative value added to every variance after each M-step.
        seed: int >= 0, numpy Generator, or None.
        init: "kmeans++" (k-means++ seeding, then hard assignment: fast, and what makes n_init matter),
            "kmeans" (a full K-means run, like scikit-learn's default), "random" (random responsibilities), or a
            (K, p) array of initial means (points are hard-assigned to the nearest one).

    Returns:
        MixtureResult (numpy arrays in the dtype of X; labels int64).
    """
    Xa, K = _check_data(X, n_clusters)
    cov = check_choice(covariance, "covariance", tuple(_COV_CODES))
    n_init = check_int(n_init, "n_init", low=1, high=_INT_MAX)
    max_iter = check_int(max_iter, "max_iter", low=1, high=_INT_MAX)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    seed_ = _check_seed(seed)
    _check_variance_range(Xa)
    if isinstance(init, str):
        init_code = _EM_INIT_CODES[check_choice(init, "init", tuple(_EM_INIT_CODES))]
        init_arr = None
    else:
        init_code = 2
        init_arr = _check_init_array(init, K, Xa.shape[1], Xa.dtype)
    try:
        d = _backend.C().gmm_em(Xa, K, _COV_CODES[cov], n_init, max_iter, tol, reg_covar, init_code, seed_, init_arr)
    except RuntimeError as exc:  # only when even heavy diagonal loading cannot rescue a covariance
        raise ValueError(f"X: {exc}") from exc
    if not all(np.isfinite(np.asarray(d[k])).all() for k in ("means", "covariances", "weights", "log_likelihood")):
        raise ValueError(
            "X: EM produced non-finite parameters (values too large or too small for the dtype); rescale X"
        )
    return MixtureResult(
        labels=d["labels"],
        means=d["means"],
        covariances=d["covariances"],
        weights=d["weights"],
        log_likelihood=float(d["log_likelihood"]),
        n_iter=int(d["n_iter"]),
        converged=bool(d["converged"]),
        responsibilities=d["responsibilities"],
        history=d["history"],
        info={k: int(d[k]) for k in ("n_reseeded", "n_frozen", "n_jitter", "best_init")},
    )


def _check_mixture_params(
    X: Any, means: Any, covariances: Any, weights: Any, covariance: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    cov = check_choice(covariance, "covariance", tuple(_COV_CODES))
    Xa = as_float_array(X, "X", ndim=2)
    M = as_float_array(means, "means", ndim=2)
    C = as_float_array(covariances, "covariances", ndim={"full": 3, "diag": 2, "spherical": 1}[cov])
    W = as_float_array(weights, "weights", ndim=1)
    K, p = M.shape
    if Xa.shape[1] != p:
        raise ValueError(f"X: expected {p} columns to match means, got shape {Xa.shape}")
    want = {"full": (K, p, p), "diag": (K, p), "spherical": (K,)}[cov]
    if C.shape != want:
        raise ValueError(f"covariances: expected shape {want} for covariance={cov!r}, got {C.shape}")
    if W.shape != (K,):
        raise ValueError(f"weights: expected shape ({K},), got {W.shape}")
    if (W < 0).any() or abs(float(W.sum(dtype=np.float64)) - 1.0) > 1e-4:
        raise ValueError("weights: expected non-negative values summing to one")
    if cov == "full" and not np.allclose(C, np.swapaxes(C, 1, 2), rtol=1e-5, atol=0):
        raise ValueError("covariances: expected symmetric matrices")
    return Xa, M, C, W, cov


def gmm_logpdf(
    X: Any,
    means: Any,
    covariances: Any,
    weights: Any,
    *,
    covariance: str = "full",
    return_responsibilities: bool = False,
) -> Any:
    """Log-density of a Gaussian mixture at each point, log sum_k w_k N(x_i | mu_k, Sigma_k), and optionally the
    responsibilities (the E-step of EM).

    Computed by Cholesky whitening (one triangular solve per component) and a log-sum-exp over components, so it
    never overflows or underflows for far-away points.

    Args:
        X: (n, p) points.
        means: (K, p) component means.
        covariances: (K, p, p) symmetric positive definite ("full"), (K, p) variances ("diag") or (K,) ("spherical").
        weights: (K,) non-negative mixing weights summing to one (zeros allowed).
        covariance: "full", "diag" or "spherical".
        return_responsibilities: also return the (n, K) posterior membership probabilities.

    Returns:
        (n,) log-densities, or a tuple (log_density (n,), responsibilities (n, K)). numpy in, numpy out; torch in,
        torch out (on the input's device). The dtype is float64 if any input is float64, else float32. Torch inputs
        that require gradients go through the differentiable torch twin (loglik.reference.gmm_logpdf).
    """
    return_responsibilities = check_bool(return_responsibilities, "return_responsibilities")
    args = (X, means, covariances, weights)
    if any(_backend.is_torch(a) and a.requires_grad for a in args):
        from .reference.mixture import gmm_logpdf as ref

        check_choice(covariance, "covariance", tuple(_COV_CODES))
        plain = [a.detach() if _backend.is_torch(a) else a for a in args]
        checked = _check_mixture_params(plain[0], plain[1], plain[2], plain[3], covariance)[:4]
        # numpy / list arguments next to a tensor that requires grad become tensors on its device (the torch twin
        # cannot mix the two); the validated float arrays are used so that ints and lists work too
        device = next(a for a in args if _backend.is_torch(a) and a.requires_grad).device
        torch = _backend.torch()
        _check_positive_definite(checked[2], covariance)  # the kernel path checks this in C++
        X, means, covariances, weights = (
            a if _backend.is_torch(a) else torch.tensor(c, device=device)  # a copy: c may be a read-only input
            for a, c in zip(args, checked, strict=True)
        )
        out = ref(
            X, means, covariances, weights, covariance=covariance, return_responsibilities=return_responsibilities
        )
        _check_log_density(to_numpy(out[0] if return_responsibilities else out, "log_density"))
        return out
    Xa, M, C, W, cov = _check_mixture_params(X, means, covariances, weights, covariance)
    dtype = np.result_type(Xa.dtype, M.dtype, C.dtype, W.dtype)
    Xa, M, C, W = (np.ascontiguousarray(a, dtype=dtype) for a in (Xa, M, C, W))
    _, log_density, resp = _backend.C().gmm_logpdf(Xa, M, C, W, _COV_CODES[cov], bool(return_responsibilities))
    _check_log_density(np.asarray(log_density))
    if return_responsibilities:
        # the kernel returns exp(lp_k - lse); when |lse| is huge (a point far from every component) lse loses the
        # log-sum's O(1) part to rounding and the rows no longer sum to one (two equal components gave [1, 1]).
        # The rows are still proportional to the posterior, so normalising them gives the exact softmax.
        resp = np.asarray(resp)
        resp = resp / resp.sum(1, keepdims=True)
    template = next((a for a in args if _backend.is_torch(a)), X)
    if return_responsibilities:
        return like_input(log_density, template), like_input(resp, template)
    return like_input(log_density, template)


def _check_positive_definite(C: np.ndarray, covariance: str) -> None:
    """ValueError naming ``covariances`` unless every component is positive definite (torch-twin path)."""
    for k in range(C.shape[0]):
        if covariance == "full":
            try:
                np.linalg.cholesky(C[k].astype(np.float64))
                continue
            except np.linalg.LinAlgError:
                pass
        elif (np.asarray(C[k]) > 0).all():
            continue
        raise ValueError(f"covariances: component {k} is not positive definite")


def _check_log_density(log_density: np.ndarray) -> None:
    """A NaN or infinite log-density means squared Mahalanobis distances overflowed: name X instead of returning it.

    (A point far from every component has log-density ~ -d^2 / 2, below the dtype's range, and its
    responsibilities come out as 0 / 0.)
    """
    bad = ~np.isfinite(log_density)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"X: the log-density of {rows.size} point(s) (rows {rows[:5].tolist()}{' ...' if rows.size > 5 else ''}) "
            f"overflows {log_density.dtype}: they are too far from every component for this dtype; rescale X, "
            "means and covariances (or use float64)"
        )


def misclustering_error(labels: Any, truth: Any) -> float:
    """Fraction of points whose cluster disagrees with the truth under the best one-to-one matching of labels.

    The matching maximises agreements over all injections between the label sets (Hungarian algorithm on the
    contingency table, scipy.optimize.linear_sum_assignment); label values are arbitrary (any ints, e.g. -1 for
    noise), and the two labelings may use different numbers of clusters (unmatched clusters count as errors).

    Args:
        labels: (n,) integer cluster labels (numpy or torch).
        truth: (n,) integer true classes.

    Returns:
        A float in [0, 1 - 1/max(#clusters)]: 0 means identical partitions.
    """
    from scipy.optimize import linear_sum_assignment

    a = _check_labels(labels, "labels")
    b = _check_labels(truth, "truth")
    if a.shape != b.shape:
        raise ValueError(f"labels: expected the shape of truth {b.shape}, got {a.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(1.0 - table[rows, cols].sum() / a.size)


def _check_labels(x: Any, name: str) -> np.ndarray:
    a = to_numpy(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one label")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"{name}: expected integer labels")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iub":
        raise TypeError(f"{name}: expected integer labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)
