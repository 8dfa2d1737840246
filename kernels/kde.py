"""Triton kernel of the Gaussian-KDE score / log-density reduction (GPU; runs on CPU under TRITON_INTERPRET=1).

One program owns BLOCK_M queries and streams over the samples in tiles of BLOCK_N with an online log-sum-exp
(running max, rescaled sum and rescaled weighted sum of the samples), the same algorithm as csrc's kde.hpp, so memory
is O(M D + N D) and never M x N. D is padded to a power of two BLOCK_D (padding columns are zero in both operands).
"""

from __future__ import annotations

import math
from typing import Any

import triton
import triton.language as tl

__all__ = ["kde_reduce_triton"]


@triton.jit
def _kde_fwd_kernel(
    x_ptr,  # [M, D]
    s_ptr,  # [N, D]
    logw_ptr,  # [N] normalised log weights
    score_ptr,  # [M, D]
    logpdf_ptr,  # [M]
    M,
    N,
    D,
    coef,  # -1 / (2 h^2)
    inv_h2,
    log_norm,  # -(D/2) log(2 pi h^2)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    col_ok = cols < D
    x = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=x.dtype)
    run_sum = tl.zeros((BLOCK_M,), dtype=x.dtype)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=x.dtype)
    for n0 in range(0, N, BLOCK_N):
        js = n0 + tl.arange(0, BLOCK_N)
        j_ok = js < N
        s = tl.load(s_ptr + js[:, None] * D + cols[None, :], mask=j_ok[:, None] & col_ok[None, :], other=0.0)
        logw = tl.load(logw_ptr + js, mask=j_ok, other=float("-inf"))
        diff = x[:, None, :] - s[None, :, :]  # [BLOCK_M, BLOCK_N, BLOCK_D]
        dist = tl.sum(diff * diff, axis=2)
        logits = logw[None, :] + coef * dist
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        alpha = tl.exp(run_max - new_max)
        p = tl.exp(logits - new_max[:, None])
        run_sum = run_sum * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * s[None, :, :], axis=1)
        run_max = new_max
    mean = acc / run_sum[:, None]
    score = (mean - x) * inv_h2
    tl.store(score_ptr + rows[:, None] * D + cols[None, :], score, mask=row_ok[:, None] & col_ok[None, :])
    tl.store(logpdf_ptr + rows, run_max + tl.log(run_sum) + log_norm, mask=row_ok)


def kde_reduce_triton(
    x: Any, samples: Any, log_weights: Any, bandwidth: float, *, block_m: int = 32, block_n: int = 64
) -> tuple[Any, Any]:
    """Launch the kernel.

    Args:
        x: queries [M, D], contiguous float32/float64 torch tensor.
        samples: [N, D], same dtype and device.
        log_weights: [N] normalised log weights (logsumexp = 0), same dtype and device.
        bandwidth: scalar h > 0.
        block_m, block_n: tile sizes (powers of two).

    Returns:
        (score [M, D], logpdf [M]) tensors on x's device.
    """
    import torch

    m, d = x.shape
    n = samples.shape[0]
    block_d = max(1, triton.next_power_of_2(d))
    score = torch.empty_like(x)
    logpdf = torch.empty(m, dtype=x.dtype, device=x.device)
    h2 = float(bandwidth) ** 2
    grid = (triton.cdiv(m, block_m),)
    _kde_fwd_kernel[grid](
        x,
        samples,
        log_weights,
        score,
        logpdf,
        m,
        n,
        d,
        -0.5 / h2,
        1.0 / h2,
        -0.5 * d * math.log(2 * math.pi * h2),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return score, logpdf
