"""GPU timing of the LM kernels (prepared for a GPU machine; not run on one yet).

    LOGLIK_TEST_GPU=1 python docs/lm_gpu_bench.py                 # CUDA: the sizes of issue 3
    TRITON_INTERPRET=1 python docs/lm_gpu_bench.py --smoke        # CPU, tiny sizes: checks the script only

Measures forward+backward of the mean cross-entropy through the fused Triton kernels (kernels/lm.py) against plain
torch (F.linear + F.cross_entropy), median and spread of CUDA-event times, peak memory beyond the inputs, and the
GEMM efficiency (6 N D V useful FLOPs per second over the FLOP/s of one torch.matmul [N, D] x [D, V]); then the
log-probs-from-logits reductions (Triton, the CUDA library, torch log_softmax + gather).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from loglik.kernels import lm as K

from loglik import _cuda_ext


def _timeit(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, float]:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times) - min(times)


def _peak_extra(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_linear(n: int, d: int, v: int, dtype: torch.dtype, device: torch.device, repeats: int) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    h = (torch.randn(n, d, generator=g, device=device) * 0.5).to(dtype)
    w = (torch.randn(v, d, generator=g, device=device) * 0.02).to(dtype)
    t = torch.randint(0, v, (n,), generator=g, device=device)

    def loglik_step() -> None:
        lp, lse, _ = K.linear_logprobs_fwd(h, w, t)
        K.linear_logprobs_bwd(h, w, t, lse, torch.full((n,), -1.0 / n, device=device))

    def torch_step() -> None:
        hh, ww = h.detach().requires_grad_(), w.detach().requires_grad_()
        F.cross_entropy(F.linear(hh, ww).float(), t).backward()

    a, b = torch.randn(n, d, device=device, dtype=dtype), torch.randn(d, v, device=device, dtype=dtype)
    mm, _ = _timeit(lambda: a @ b, device, repeats)
    mm_flops = 2 * n * d * v / mm
    useful = 6 * n * d * v
    for name, fn in (("loglik triton", loglik_step), ("torch F.linear+F.cross_entropy", torch_step)):
        sec, spread = _timeit(fn, device, repeats)
        mem = _peak_extra(fn, device)
        print(
            f"{str(dtype).removeprefix('torch.'):8s} N={n} D={d} V={v} {name:32s} {sec * 1e3:9.2f} ms "
            f"(spread {spread * 1e3:.2f}) {useful / sec / 1e12:7.2f} TFLOP/s  GEMM eff {useful / sec / mm_flops:5.2f}  "
            f"peak extra {mem:8.1f} MiB"
        )


def bench_logits(n: int, v: int, dtype: torch.dtype, device: torch.device, repeats: int) -> None:
    g = torch.Generator(device=device).manual_seed(1)
    logits = (torch.randn(n, v, generator=g, device=device) * 4).to(dtype)
    t = torch.randint(0, v, (n,), generator=g, device=device)
    impls: list[tuple[str, Callable[[], Any]]] = [
        ("loglik triton", lambda: K.logprobs_from_logits_fwd(logits, t, return_entropy=True)),
        ("torch log_softmax+gather", lambda: torch.log_softmax(logits.float(), -1).gather(1, t[:, None])),
    ]
    if device.type == "cuda" and _cuda_ext.available():
        impls.insert(1, ("loglik cuda", lambda: _cuda_ext.logprobs_fwd(logits, t, return_entropy=True)))
    nbytes = logits.numel() * logits.element_size()
    for name, fn in impls:
        sec, spread = _timeit(fn, device, repeats)
        print(
            f"{str(dtype).removeprefix('torch.'):8s} N={n} V={v} {name:26s} {sec * 1e3:9.3f} ms "
            f"(spread {spread * 1e3:.3f}) {nbytes / sec / 1e9:8.1f} GB/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (TRITON_INTERPRET=1)")
    args = parser.parse_args()
    if args.smoke:
        device, repeats = torch.device("cpu"), 1
        bench_linear(20, 32, 100, torch.float32, device, repeats)
        bench_logits(20, 100, torch.float32, device, repeats)
        return
    device, repeats = torch.device("cuda"), 5
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "allow_tf32", torch.backends.cuda.matmul.allow_tf32)
    for dtype in (torch.float32, torch.bfloat16):
        for n, d, v in ((2048, 1024, 32000), (4096, 2048, 128256)):
            bench_linear(n, d, v, dtype, device, repeats)
        bench_logits(4096, 128256, dtype, device, repeats)


if __name__ == "__main__":
    main()
