"""``loglik bench lm``: forward+backward time and peak memory of the linear cross-entropy head.

Implementations, measured in the same run on the same inputs (hidden [N, D], weight [V, D], mean reduction):

- ``loglik``: :func:`loglik.linear_cross_entropy` (chunked GEMMs + C++ row pass, gradients during the forward).
- ``torch``: plain ``F.linear`` + ``F.cross_entropy`` (materialises the [N, V] logits and their gradient).
- ``torch-chunked``: torch's own ``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())`` when present.
- ``liger`` / ``cut-cross-entropy``: reported as not runnable unless installed with a GPU (both are Triton/CUDA).

Per case: median and IQR of forward+backward wall time; GFLOP/s of the 3 GEMMs (6 N D V flop); GEMM efficiency =
achieved FLOP/s over the FLOP/s of one plain ``torch.matmul`` of the [N, D] x [D, V] product timed in the same run;
peak memory beyond the inputs and the gradients, measured as the RSS high-water mark (``ru_maxrss``) of a fresh
subprocess per implementation minus its high-water mark after the inputs were created, minus the gradient bytes; and
the loss difference against plain torch. The big shape needs ~8 GB: run under ``flock /tmp/loglik-bench.lock``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from ._harness import Row, proc_status_kb, reset_peak_rss, time_call

SUITE = "lm"
FULL_CASES = [
    (2048, 1024, 32000, "float32"),
    (2048, 1024, 32000, "bfloat16"),
    (4096, 2048, 128256, "float32"),
    (4096, 2048, 128256, "bfloat16"),
]
QUICK_CASES = [(256, 128, 4096, "float32"), (256, 128, 4096, "bfloat16")]


def _torch() -> Any:
    import torch

    return torch


def _inputs(n: int, d: int, v: int, dtype: str, seed: int = 0) -> tuple[Any, Any, Any]:
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    h = (torch.randn(n, d, generator=g) / d**0.5).to(dt)
    w = (torch.randn(v, d, generator=g)).to(dt)
    t = torch.randint(0, v, (n,), generator=g)
    t[::17] = -100
    return h, w, t


def _chunked_options() -> Any:
    try:
        from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions
    except ImportError:
        return None
    return LinearCrossEntropyOptions()


def _step_fn(impl: str, h: Any, w: Any, t: Any) -> Any:
    """A closure running one forward+backward; returns the loss (float)."""
    torch = _torch()
    F = torch.nn.functional
    hh = h.detach().requires_grad_()
    ww = w.detach().requires_grad_()

    if impl == "loglik":
        import loglik

        def run() -> float:
            hh.grad = ww.grad = None
            loss = loglik.linear_cross_entropy(hh, ww, t)
            loss.backward()
            return float(loss.detach())

    elif impl == "torch":

        def run() -> float:
            hh.grad = ww.grad = None
            loss = F.cross_entropy(F.linear(hh, ww).float(), t)
            loss.backward()
            return float(loss.detach())

    elif impl == "torch-chunked":
        opts = _chunked_options()

        def run() -> float:
            hh.grad = ww.grad = None
            loss = F.linear_cross_entropy(hh, ww, t, ignore_index=-100, options=opts)
            loss.backward()
            return float(loss.detach())

    else:  # pragma: no cover
        raise ValueError(impl)
    return run


def _available_impls() -> tuple[list[str], list[tuple[str, str]]]:
    torch = _torch()
    impls = ["loglik", "torch"]
    missing: list[tuple[str, str]] = []
    if hasattr(torch.nn.functional, "linear_cross_entropy") and _chunked_options() is not None:
        impls.append("torch-chunked")
    else:
        missing.append(("torch-chunked", "torch.nn.functional.linear_cross_entropy with options is not available"))
    import importlib.util

    for name, mod in (("liger", "liger_kernel"), ("cut-cross-entropy", "cut_cross_entropy")):
        if importlib.util.find_spec(mod) is None:
            missing.append((name, f"{mod} is not installed (pip); it needs Triton on a CUDA GPU, none here"))
        elif not torch.cuda.is_available():
            missing.append((name, f"{mod} is installed but needs a CUDA GPU (Triton kernels); none here"))
    return impls, missing


def _peak_worker(impl: str, n: int, d: int, v: int, dtype: str) -> dict[str, float]:
    """Run in a fresh subprocess: resident memory (bytes) before and at the peak of one forward+backward.

    The RSS high-water mark is reset after the inputs exist (Linux ``clear_refs``), so the peak is that of the step
    alone; without it, ``ru_maxrss`` is used (then import-time peaks can hide small steps).
    """
    import resource

    _step_fn(impl, *_inputs(64, min(d, 64), 512, dtype))()  # one-time library set-up (MKL, thread pools) first
    h, w, t = _inputs(n, d, v, dtype)
    run = _step_fn(impl, h, w, t)
    if reset_peak_rss() and proc_status_kb("VmRSS") is not None:
        base = float(proc_status_kb("VmRSS") or 0) * 1024
        run()
        peak = float(proc_status_kb("VmHWM") or 0) * 1024
    else:  # pragma: no cover - non-Linux
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
        run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    grads = (h.numel() + w.numel()) * h.element_size()
    return {"base": base, "peak": peak, "grads": float(grads)}


def _measure_peak(impl: str, n: int, d: int, v: int, dtype: str) -> float | None:
    """Peak extra MB (beyond inputs and gradients) of impl, from a fresh subprocess; None if it failed."""
    code = (
        "import json, sys; from loglik.bench import bench_lm as b; "
        f"print('PEAK' + json.dumps(b._peak_worker({impl!r}, {n}, {d}, {v}, {dtype!r})))"
    )
    env = dict(os.environ)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600, env=env)
    except subprocess.TimeoutExpired:
        return None
    for line in out.stdout.splitlines():
        if line.startswith("PEAK"):
            r = json.loads(line[4:])
            return (r["peak"] - r["base"] - r["grads"]) / 2**20
    return None


def _matmul_gflops(h: Any, w: Any, repeat: int) -> float:
    torch = _torch()
    n, d = h.shape
    v = w.shape[0]
    buf = [torch.empty(n, v, dtype=h.dtype)]
    timing, _ = time_call(lambda: torch.mm(h, w.t(), out=buf[0]), repeat=repeat, warmup=1)
    buf.clear()
    return 2.0 * n * d * v / timing.median / 1e9


def run(quick: bool = False) -> list[Row]:
    cases = QUICK_CASES if quick else FULL_CASES
    impls, missing = _available_impls()
    rows: list[Row] = []
    too_slow: dict[str, str] = {}
    for n, d, v, dtype in cases:
        case = f"N={n} D={d} V={v} {dtype}"
        big = n * v >= 2**28
        repeat, warmup = (2, 0) if big else (3, 1)
        h, w, t = _inputs(n, d, v, dtype)
        mm_gflops = _matmul_gflops(h, w, repeat=2 if big else 3)
        losses: dict[str, float] = {}
        for impl in impls:
            if impl in too_slow:
                rows.append(Row(SUITE, case, impl, metrics={"skipped": too_slow[impl]}))
                continue
            fn = _step_fn(impl, h, w, t)
            try:
                timing, loss = time_call(fn, repeat=repeat, warmup=warmup, max_seconds=600)
            except (RuntimeError, MemoryError) as exc:  # e.g. out of memory at the big shape
                rows.append(Row(SUITE, case, impl if impl != "loglik" else "loglik", metrics={"error": str(exc)[:80]}))
                continue
            losses[impl] = loss
            gflops = 6.0 * n * d * v / timing.median / 1e9
            metrics: dict[str, Any] = {
                "GFLOP/s": round(gflops, 1),
                "gemm_eff": round(gflops / mm_gflops, 3),
                "matmul_GFLOP/s": round(mm_gflops, 1),
                "loss": round(loss, 6),
            }
            peak = _measure_peak(impl, n, d, v, dtype)
            if peak is not None:
                metrics["peak_extra_MB"] = round(peak, 1)
            rows.append(Row(SUITE, case, impl, timing.median, timing.q75 - timing.q25, timing.n, metrics))
            del fn
        base = losses.get("torch")
        for r in rows:
            if r.case == case and r.impl in losses and base is not None:
                r.metrics["|loss-torch|"] = float(f"{abs(losses[r.impl] - base):.3g}")
        lrow = next((r for r in rows if r.case == case and r.impl == "loglik"), None)
        for r in rows:  # a peer far slower than loglik at a small shape is not run at the big ones (hours)
            if r.case == case and r.impl != "loglik" and lrow and r.seconds and lrow.seconds:
                if r.seconds > 5 * lrow.seconds:
                    too_slow[r.impl] = (
                        f"{r.seconds / lrow.seconds:.0f}x slower than loglik at {case}; not run at larger"
                    )

        trow = next((r for r in rows if r.case == case and r.impl == "torch"), None)
        if lrow and trow and "peak_extra_MB" in lrow.metrics and trow.metrics.get("peak_extra_MB"):
            lrow.metrics["mem_vs_torch"] = round(lrow.metrics["peak_extra_MB"] / trow.metrics["peak_extra_MB"], 4)
        for name, why in missing:
            rows.append(Row(SUITE, case, name, metrics={"skipped": why}))
        del h, w, t
    return rows


if __name__ == "__main__":  # pragma: no cover
    from ._harness import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
