"""kde_score benchmark: loglik's streaming C++ kernel against a chunked torch implementation and pykeops.

Case: M queries x N samples x D = 3 (20,000 x 20,000 full, 2,000 x 2,000 quick), float32, bandwidth 0.3, data from
a 3-cluster mixture. Every implementation runs in the same process and run; accuracy is the max relative error
against a float64 reference on the first 200 queries. pykeops rows appear only when pykeops is installed and
compiles here; otherwise a row says why it is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._harness import Row, timed_row

SUITE = "score"


def chunked_torch_kde_score(x: Any, samples: Any, bandwidth: float, chunk_elems: int = 1 << 24) -> Any:
    """What a torch user writes: per chunk of queries, logits = -cdist^2 / 2h^2, softmax, weighted mean of samples.

    Chunks hold about ``chunk_elems`` logits (64 MB in float32) so memory stays bounded.
    """
    import torch

    m, n = x.shape[0], samples.shape[0]
    step = max(1, chunk_elems // max(1, n))
    out = torch.empty_like(x)
    inv = 1.0 / (2 * bandwidth * bandwidth)
    with torch.no_grad():
        for i in range(0, m, step):
            xc = x[i : i + step]
            logits = torch.cdist(xc, samples).square_().mul_(-inv)
            p = torch.softmax(logits, dim=1)
            out[i : i + step] = (p @ samples - xc) / (bandwidth * bandwidth)
    return out


def _pykeops_kde_score(x: Any, samples: Any, bandwidth: float) -> Any:
    """The same reduction as a KeOps LazyTensor expression (log-sum-exp style softmax-weighted sum)."""
    from pykeops.torch import LazyTensor

    xi = LazyTensor(x[:, None, :])
    sj = LazyTensor(samples[None, :, :])
    logits = -((xi - sj) ** 2).sum(-1) / (2 * bandwidth * bandwidth)
    mean = logits.sumsoftmaxweight(sj, axis=1)
    return (mean - x) / (bandwidth * bandwidth)


def _data(m: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 2
    s = centres[rng.integers(0, 3, n)] + 0.5 * rng.normal(size=(n, d))
    x = centres[rng.integers(0, 3, m)] + 0.8 * rng.normal(size=(m, d))
    return x.astype(np.float32), s.astype(np.float32)


def run(quick: bool) -> list[Row]:
    import torch

    import loglik
    from loglik.reference.score import kde_score as ref_kde_score

    m = n = 2_000 if quick else 20_000
    d, h = 3, 0.3
    x, s = _data(m, n, d)
    case = f"kde_score {m}x{n}x{d} f32"
    pairs = float(m) * n
    check = slice(0, 200)
    truth = ref_kde_score(x[check].astype(np.float64), s.astype(np.float64), h)
    scale = float(np.abs(truth).max())
    repeat = 5 if quick else 3

    def err(out: Any) -> float:
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
        return float(np.abs(out[check].astype(np.float64) - truth).max() / scale)

    def metrics(row: Row, out: Any) -> Row:
        if row.seconds:
            row.metrics["Gpairs/s"] = pairs / row.seconds / 1e9
        row.metrics["max_rel_err"] = err(out)
        row.metrics["threads"] = loglik.get_num_threads()
        return row

    rows: list[Row] = []
    isa = loglik._backend.C().kde_active_isa("auto")
    row, out = timed_row(SUITE, case, f"loglik cpp ({isa})", lambda: loglik.kde_score(x, s, h), repeat=repeat)
    rows.append(metrics(row, out))
    if isa != "avx2" and loglik._backend.C().kde_active_isa("avx2") == "avx2":
        row, out = timed_row(
            SUITE, case, "loglik cpp (avx2 forced)", lambda: loglik.kde_score(x, s, h, isa="avx2"), repeat=repeat
        )
        rows.append(metrics(row, out))
    xt, st = torch.from_numpy(x), torch.from_numpy(s)
    row, out = timed_row(SUITE, case, "loglik torch-cpu in/out", lambda: loglik.kde_score(xt, st, h), repeat=repeat)
    rows.append(metrics(row, out))
    # torch at its default thread count and at one thread (on a busy machine its OpenMP barriers can make the
    # multi-threaded run the slower one); both measured, the reader picks
    threads = torch.get_num_threads()
    for n_threads in dict.fromkeys([threads, 1]):
        torch.set_num_threads(n_threads)
        try:
            row, out = timed_row(
                SUITE,
                case,
                f"torch chunked ({n_threads} thread{'s' if n_threads > 1 else ''})",
                lambda: chunked_torch_kde_score(xt, st, h),
                repeat=repeat,
            )
        finally:
            torch.set_num_threads(threads)
        rows.append(metrics(row, out))
    try:
        import pykeops  # noqa: F401

        _pykeops_kde_score(xt[:10], st[:10], h)  # compiles the formula once, outside the timing
        row, out = timed_row(SUITE, case, "pykeops (cpu)", lambda: _pykeops_kde_score(xt, st, h), repeat=repeat)
        rows.append(metrics(row, out))
    except Exception as exc:  # not installed, or cannot compile/run here: say so in the results
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        rows.append(Row(SUITE, case, "pykeops (unavailable)", metrics={"reason": reason}))
    return rows
