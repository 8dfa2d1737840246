"""Vocabulary-parallel cross-entropy on CPU with gloo: a correctness example and a small timing/memory comparison.

    python docs/lm_gpu_vocab_parallel.py            # example: 2 ranks vs single-process torch, float64
    python docs/lm_gpu_vocab_parallel.py --bench    # forward+backward time and peak RSS, float32, (2048, 1024, 32000)

Each rank holds half of the [V, D] head. The benchmark runs every measurement in a fresh process (peak RSS is a
process-wide high-water mark) and compares with plain torch (F.linear + F.cross_entropy) in one process.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from loglik.lm_distributed import linear_cross_entropy_vocab_parallel, linear_logprobs_vocab_parallel


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def example(rank: int, port: int) -> None:
    n, d, v, split = 64, 128, 32000, 20000
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64) * 0.1
    t = torch.randint(0, v, (n,), generator=g)
    lo, hi = (0, split) if rank == 0 else (split, v)
    shard = w[lo:hi].clone().requires_grad_()
    loss = linear_cross_entropy_vocab_parallel(h, shard, t, vocab_start=lo, label_smoothing=0.1)
    loss.backward()
    _, ent = linear_logprobs_vocab_parallel(h.detach(), shard.detach(), t, vocab_start=lo, return_entropy=True)
    ref_h = h.detach().clone().requires_grad_()
    ref_w = w.clone().requires_grad_()
    ref = F.cross_entropy(ref_h @ ref_w.T, t, label_smoothing=0.1)
    ref.backward()
    print(
        f"rank {rank}: loss {loss.item():.12f} (torch {ref.item():.12f}), "
        f"max |grad_hidden - torch| {(h.grad - ref_h.grad).abs().max():.1e}, "
        f"max |grad_weight shard - torch| {(shard.grad - ref_w.grad[lo:hi]).abs().max():.1e}, "
        f"mean entropy {ent.mean():.4f}"
    )
    dist.destroy_process_group()


N, D, V, REPEATS = 2048, 1024, 32000, 3


def _inputs() -> tuple:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=g) * 0.5
    w = torch.randn(V, D, generator=g) * 0.02
    t = torch.randint(0, V, (N,), generator=g)
    return h, w, t


def bench_parallel(rank: int, port: int, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    h, w, t = _inputs()
    lo, hi = (0, V // 2) if rank == 0 else (V // 2, V)
    shard = w[lo:hi].clone().requires_grad_()
    hh = h.clone().requires_grad_()
    base = _peak_mib()
    times = []
    for _ in range(REPEATS):
        hh.grad = shard.grad = None
        dist.barrier()
        t0 = time.perf_counter()
        linear_cross_entropy_vocab_parallel(hh, shard, t, vocab_start=lo).backward()
        times.append(time.perf_counter() - t0)
    out[rank] = (statistics.median(times), max(times) - min(times), _peak_mib() - base)
    dist.destroy_process_group()


def bench_torch(threads: int, out: dict) -> None:
    torch.set_num_threads(threads)
    h, w, t = _inputs()
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    base = _peak_mib()
    times = []
    for _ in range(REPEATS):
        hh.grad = ww.grad = None
        t0 = time.perf_counter()
        F.cross_entropy(F.linear(hh, ww), t).backward()
        times.append(time.perf_counter() - t0)
    out["torch"] = (statistics.median(times), max(times) - min(times), _peak_mib() - base)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", action="store_true")
    args = parser.parse_args()
    if not args.bench:
        mp.spawn(example, args=(_port(),), nprocs=2)
        return
    flops = 6 * N * D * V  # forward logits + the two backward GEMMs
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(bench_parallel, args=(_port(), out), nprocs=2)
        par = dict(out)
        for threads in (2,):
            p = mp.get_context("spawn").Process(target=bench_torch, args=(threads, out))
            p.start()
            p.join()
            tt = out["torch"]
            print(
                f"torch F.linear+F.cross_entropy, 1 process x {threads} threads: {tt[0]:.3f} s "
                f"(spread {tt[1]:.3f}), {flops / tt[0] / 1e9:.1f} GFLOP/s, peak extra RSS {tt[2]:.0f} MiB"
            )
        sec = max(par[r][0] for r in (0, 1))
        print(
            f"loglik vocab-parallel, 2 processes x 1 thread (gloo): {sec:.3f} s "
            f"(spread {max(par[r][1] for r in (0, 1)):.3f}), {flops / sec / 1e9:.1f} GFLOP/s, "
            f"peak extra RSS per rank {max(par[r][2] for r in (0, 1)):.0f} MiB; ratio loglik/torch "
            f"{sec / out['torch'][0]:.2f}"
        )


if __name__ == "__main__":
    main()
