"""Triton kernels for language-model log-likelihoods: fused linear head + log-softmax reductions, and a reduction
over logits that the caller already holds.

No autograd here (``loglik.autograd`` / ``loglik.lm`` wire these to torch). Triton is imported when this module is
imported, never by ``import loglik``. Every helper works on CUDA tensors, and on CPU tensors under
``TRITON_INTERPRET=1`` (that is how the tests run without a GPU).

What is computed, per row i (token) with target t_i::

    x_i   = hidden_i @ weight^T + bias                 # [V], never stored in global memory
    y_i   = softcap * tanh(x_i / softcap)              # only when softcap is given
    z_i   = y_i / temperature_i                        # temperature: a float or a tensor [N]
    lse_i = log sum_v exp(z_iv)
    logprob_i = z_i[t_i] - lse_i                       # 0 where t_i == ignore_index
    entropy_i = lse_i - sum_v softmax(z_i)_v z_iv      # 0 where t_i == ignore_index

Ignored rows (``targets == ignore_index``) get logprob 0 and entropy 0, and they contribute nothing to any gradient
(their upstream gradients are treated as 0); their ``lse`` is still the true log-sum-exp. A target that is neither
ignore_index nor in [0, V) is NOT checked here (that needs a device sync; ``loglik.lm`` validates): such a row gets
target logit 0, i.e. logprob = -lse, and no one-hot term in the gradient (the vocab-parallel code relies on this for
targets owned by another rank).

Launch helpers (the stable interface; block sizes and splits are keyword-only tuning knobs with defaults)::

    linear_logprobs_fwd(hidden[N, D], weight[V, D], targets[N], *, bias=None, temperature=1.0 or tensor[N],
                        softcap=None, ignore_index=-100, return_entropy=False)
        -> (logprobs[N] float32, lse[N] float32, entropy[N] float32 or None)

    linear_logprobs_bwd(hidden, weight, targets, lse, grad_logprobs[N], grad_entropy[N] or None, *, bias=None,
                        temperature=1.0, softcap=None, ignore_index=-100, entropy=None, grad_lse=None,
                        needs_hidden_grad=True, needs_weight_grad=True)
        -> (grad_hidden[N, D] in hidden.dtype or None, grad_weight[V, D] in weight.dtype or None,
            grad_bias[V] in bias.dtype or None)

    logprobs_from_logits_fwd(logits[N, V], targets[N], *, temperature=1.0 or tensor[N], softcap=None,
                             ignore_index=-100, return_entropy=False)
        -> (logprobs[N] float32, lse[N] float32, entropy[N] float32 or None)

    logprobs_from_logits_bwd(logits, targets, lse, grad_logprobs[N], grad_entropy[N] or None, *, temperature=1.0,
                             softcap=None, ignore_index=-100, entropy=None, grad_lse=None)
        -> grad_logits[N, V] in logits.dtype

``grad_lse`` (optional, [N]) is the upstream gradient of the returned lse (for a z-loss). The fused forward also takes
``return_logit_mean=True`` (then a 4th output, mean_v z_v per row, for label smoothing) and the backward
``grad_logit_mean=`` ([N], its upstream gradient). ``entropy`` is the forward's
entropy; when ``grad_entropy`` is given without it, the backward recomputes it with one extra forward pass.

Algorithm and memory. Forward: grid (row blocks, vocab splits); each program loops over its vocab tiles, computes
the logits tile ``h[BLOCK_N, :] @ W[BLOCK_V, :]^T`` with ``tl.dot`` over BLOCK_D chunks in float32 registers, applies
bias / softcap / temperature, and keeps an online (max, sum-exp, sum p*(z - max)) per row plus the target logit.
The per-split partial statistics ([N, splits], tiny) are merged in torch. Extra memory: O(N * splits).

Backward: a deterministic two-pass split (no contended atomics): pass A (grid over row blocks) recomputes the logits
tiles, forms the logit gradient ``dz`` in registers and accumulates ``grad_hidden[rows] += dz @ W_tile``; pass B
(grid over vocab tiles) recomputes them again and accumulates ``grad_weight[cols] += dz^T @ h`` and
``grad_bias[cols] += sum_rows dz``. Each output element is owned by exactly one program, which adds into a float32
buffer with relaxed ``tl.atomic_add`` (used only for memory coherence, so the result is bit-for-bit reproducible).
Cost: 4 N*V*D multiply-adds instead of the 3 of a single pass with contended atomics; buffers: float32 [N, D] and
[V, D]. Pass A is also split over the vocabulary when N is small against the GPU: deterministically with up to 4
float32 [N, D] slices summed afterwards, or (``deterministic=False``) with contended atomics into one buffer.

Precision: products accumulate in float32. float32 inputs use IEEE float32 dots unless ``allow_tf32`` (default:
``torch.backends.cuda.matmul.allow_tf32``, i.e. the same choice torch's own matmul makes). bfloat16/float16 inputs use
the tensor cores; in the backward the float32 ``dz`` is rounded to the input dtype before its dots, as torch's own
low-precision backward does. The interpreter (CPU) upcasts low-precision operands to float32 first because its
bfloat16 dot is not reliable; the values are the same up to float32 rounding.
"""

from __future__ import annotations

import os
from typing import Any

import triton
import triton.language as tl

__all__ = [
    "linear_logprobs_fwd",
    "linear_logprobs_bwd",
    "logprobs_from_logits_fwd",
    "logprobs_from_logits_bwd",
]


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ----------------------------------------------------------------------------------------------------------------
# jit helpers


@triton.jit
def _tanh(x):
    # tanh without overflow: e = exp(-2|x|) is in (0, 1].
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _head_tile(
    H,
    W,
    B,
    rows,
    cols,
    row_mask,
    col_mask,
    D,
    s_hn,
    s_hd,
    s_wv,
    s_wd,
    softcap,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """y = softcap(h[rows] @ W[cols]^T + b[cols]) as a float32 [BLOCK_N, BLOCK_V] register tile."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    rows64 = rows.to(tl.int64)
    cols64 = cols.to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        dmask = ds < D
        h = tl.load(H + rows64[:, None] * s_hn + ds[None, :] * s_hd, mask=row_mask[:, None] & dmask[None, :], other=0.0)
        w = tl.load(W + cols64[:, None] * s_wv + ds[None, :] * s_wd, mask=col_mask[:, None] & dmask[None, :], other=0.0)
        if UPCAST:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_SOFTCAP:
        acc = softcap * _tanh(acc / softcap)
    return acc


@triton.jit
def _row_inv_temp(TEMP, rows, row_mask, inv_temp, TEMP_PER_ROW: tl.constexpr):
    if TEMP_PER_ROW:
        return tl.load(TEMP + rows, mask=row_mask, other=1.0).to(tl.float32)
    else:
        return tl.zeros_like(rows.to(tl.float32)) + inv_temp


@triton.jit
def _online_update(z, col_mask, m, s, a):
    """One online step of (max m, sum-exp s = sum e^(z-m), a = sum e^(z-m) (z-m)) with a [BN, BV] tile."""
    # Masked logits take the finite -1e30 instead of -inf: exp() of it underflows to 0, and no inf - inf or 0 * inf
    # ever appears (NaN on the GPU, and a RuntimeWarning, i.e. a test error, in the interpreter).
    z = tl.where(col_mask[None, :], z, -1.0e30)
    m_new = tl.maximum(m, tl.max(z, axis=1))
    alpha = tl.exp(m - m_new)
    zc = z - m_new[:, None]
    p = tl.where(col_mask[None, :], tl.exp(zc), 0.0)
    a_tile = tl.sum(tl.where(col_mask[None, :], p * zc, 0.0), axis=1)
    # sum e^(z-m_new)(z-m_new) over old columns = alpha * (a + (m - m_new) s); s == 0 on the first tile.
    a = tl.where(s > 0, alpha * (a + (m - m_new) * s), 0.0) + a_tile
    s = alpha * s + tl.sum(p, axis=1)
    return m_new, s, a


@triton.jit
def _grad_logits(
    z, y, col_mask, tgt, cols, lse, ent, g_lp, g_ent, g_lse, g_zm, inv_t, softcap, HAS_SOFTCAP: tl.constexpr
):
    """d loss / d x for a [BN, BV] tile, where x is the pre-softcap logit (float32); g_zm is grad_logit_mean / V."""
    zc = tl.where(col_mask[None, :], z - lse[:, None], -1.0e30)  # log p
    p = tl.where(col_mask[None, :], tl.exp(zc), 0.0)
    onehot = (cols[None, :] == tgt[:, None]) & col_mask[None, :]
    dz = tl.where(onehot, g_lp[:, None], 0.0) - p * (g_lp - g_lse)[:, None]
    dz -= g_ent[:, None] * tl.where(col_mask[None, :], p * (zc + ent[:, None]), 0.0)
    dz += tl.where(col_mask[None, :], g_zm[:, None], 0.0)
    dx = dz * inv_t[:, None]
    if HAS_SOFTCAP:
        r = y / softcap
        dx = dx * (1.0 - r * r)
    return dx


# ----------------------------------------------------------------------------------------------------------------
# fused linear head: forward


@triton.jit
def _linear_fwd_kernel(
    H,
    W,
    B,
    T,
    TEMP,
    OUT_M,
    OUT_S,
    OUT_A,
    OUT_TZ,
    OUT_ZS,
    N,
    V,
    D,
    s_hn,
    s_hd,
    s_wv,
    s_wd,
    inv_temp,
    softcap,
    tiles_per_split,
    num_splits,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    TEMP_PER_ROW: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    tgt = tl.load(T + rows, mask=row_mask, other=-1).to(tl.int64)
    inv_t = _row_inv_temp(TEMP, rows, row_mask, inv_temp, TEMP_PER_ROW)
    m = tl.zeros((BLOCK_N,), dtype=tl.float32) - 1.0e30
    s = tl.zeros((BLOCK_N,), dtype=tl.float32)
    a = tl.zeros((BLOCK_N,), dtype=tl.float32)
    tz = tl.zeros((BLOCK_N,), dtype=tl.float32)
    zs = tl.zeros((BLOCK_N,), dtype=tl.float32)
    v_begin = pid_s * tiles_per_split * BLOCK_V
    for tile in range(0, tiles_per_split):
        cols = v_begin + tile * BLOCK_V + tl.arange(0, BLOCK_V)
        col_mask = cols < V
        y = _head_tile(
            H, W, B, rows, cols, row_mask, col_mask, D, s_hn, s_hd, s_wv, s_wd, softcap,
            HAS_BIAS, HAS_SOFTCAP, UPCAST, PRECISION, BLOCK_N, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        z = y * inv_t[:, None]
        m, s, a = _online_update(z, col_mask, m, s, a)
        hit = (cols[None, :] == tgt[:, None]) & col_mask[None, :]
        tz += tl.sum(tl.where(hit, z, 0.0), axis=1)
        zs += tl.sum(tl.where(col_mask[None, :], z, 0.0), axis=1)
    out = rows * num_splits + pid_s
    tl.store(OUT_M + out, m, mask=row_mask)
    tl.store(OUT_S + out, s, mask=row_mask)
    tl.store(OUT_A + out, a, mask=row_mask)
    tl.store(OUT_TZ + out, tz, mask=row_mask)
    tl.store(OUT_ZS + out, zs, mask=row_mask)


# ----------------------------------------------------------------------------------------------------------------
# fused linear head: backward (pass A: grad_hidden over row blocks; pass B: grad_weight/bias over vocab tiles)


@triton.jit
def _linear_bwd_hidden_kernel(
    H,
    W,
    B,
    T,
    TEMP,
    LSE,
    ENT,
    G_LP,
    G_ENT,
    G_LSE,
    G_ZM,
    GH,
    N,
    V,
    D,
    s_hn,
    s_hd,
    s_wv,
    s_wd,
    inv_temp,
    softcap,
    tiles_per_split,
    gh_split_stride,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    TEMP_PER_ROW: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    tgt = tl.load(T + rows, mask=row_mask, other=-1).to(tl.int64)
    inv_t = _row_inv_temp(TEMP, rows, row_mask, inv_temp, TEMP_PER_ROW)
    lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
    ent = tl.load(ENT + rows, mask=row_mask, other=0.0)
    g_lp = tl.load(G_LP + rows, mask=row_mask, other=0.0)
    g_ent = tl.load(G_ENT + rows, mask=row_mask, other=0.0)
    g_lse = tl.load(G_LSE + rows, mask=row_mask, other=0.0)
    g_zm = tl.load(G_ZM + rows, mask=row_mask, other=0.0)
    v_begin = pid_s * tiles_per_split * BLOCK_V
    for tile in range(0, tiles_per_split):
        cols = v_begin + tile * BLOCK_V + tl.arange(0, BLOCK_V)
        col_mask = cols < V
        cols64 = cols.to(tl.int64)
        y = _head_tile(
            H, W, B, rows, cols, row_mask, col_mask, D, s_hn, s_hd, s_wv, s_wd, softcap,
            HAS_BIAS, HAS_SOFTCAP, UPCAST, PRECISION, BLOCK_N, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        z = y * inv_t[:, None]
        dx = _grad_logits(z, y, col_mask, tgt, cols, lse, ent, g_lp, g_ent, g_lse, g_zm, inv_t, softcap, HAS_SOFTCAP)
        dx = dx.to(W.dtype.element_ty)
        if UPCAST:
            dx = dx.to(tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds < D
            w = tl.load(
                W + cols64[:, None] * s_wv + ds[None, :] * s_wd, mask=col_mask[:, None] & dmask[None, :], other=0.0
            )
            if UPCAST:
                w = w.to(tl.float32)
            part = tl.dot(dx, w, input_precision=PRECISION)
            tl.atomic_add(
                GH + pid_s * gh_split_stride + rows64[:, None] * D + ds[None, :],
                part,
                mask=row_mask[:, None] & dmask[None, :],
                sem="relaxed",
            )


@triton.jit
def _linear_bwd_weight_kernel(
    H,
    W,
    B,
    T,
    TEMP,
    LSE,
    ENT,
    G_LP,
    G_ENT,
    G_LSE,
    G_ZM,
    GW,
    GB,
    N,
    V,
    D,
    s_hn,
    s_hd,
    s_wv,
    s_wd,
    inv_temp,
    softcap,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    TEMP_PER_ROW: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_v = tl.program_id(0)
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    col_mask = cols < V
    cols64 = cols.to(tl.int64)
    gb = tl.zeros((BLOCK_V,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        row_mask = rows < N
        rows64 = rows.to(tl.int64)
        tgt = tl.load(T + rows, mask=row_mask, other=-1).to(tl.int64)
        inv_t = _row_inv_temp(TEMP, rows, row_mask, inv_temp, TEMP_PER_ROW)
        lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
        ent = tl.load(ENT + rows, mask=row_mask, other=0.0)
        g_lp = tl.load(G_LP + rows, mask=row_mask, other=0.0)
        g_ent = tl.load(G_ENT + rows, mask=row_mask, other=0.0)
        g_lse = tl.load(G_LSE + rows, mask=row_mask, other=0.0)
        g_zm = tl.load(G_ZM + rows, mask=row_mask, other=0.0)
        y = _head_tile(
            H, W, B, rows, cols, row_mask, col_mask, D, s_hn, s_hd, s_wv, s_wd, softcap,
            HAS_BIAS, HAS_SOFTCAP, UPCAST, PRECISION, BLOCK_N, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        z = y * inv_t[:, None]
        dx = _grad_logits(z, y, col_mask, tgt, cols, lse, ent, g_lp, g_ent, g_lse, g_zm, inv_t, softcap, HAS_SOFTCAP)
        dx = tl.where(row_mask[:, None], dx, 0.0)
        if HAS_BIAS:
            gb += tl.sum(dx, axis=0)
        dx = dx.to(H.dtype.element_ty)
        if UPCAST:
            dx = dx.to(tl.float32)
        dxt = tl.trans(dx)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds < D
            h = tl.load(
                H + rows64[:, None] * s_hn + ds[None, :] * s_hd, mask=row_mask[:, None] & dmask[None, :], other=0.0
            )
            if UPCAST:
                h = h.to(tl.float32)
            part = tl.dot(dxt, h, input_precision=PRECISION)
            tl.atomic_add(
                GW + cols64[:, None] * D + ds[None, :], part, mask=col_mask[:, None] & dmask[None, :], sem="relaxed"
            )
    if HAS_BIAS:
        tl.store(GB + cols, gb, mask=col_mask)


# ----------------------------------------------------------------------------------------------------------------
# reduction over given logits


@triton.jit
def _logits_fwd_kernel(
    L,
    T,
    TEMP,
    OUT_M,
    OUT_S,
    OUT_A,
    OUT_TZ,
    N,
    V,
    s_ln,
    s_lv,
    inv_temp,
    softcap,
    HAS_SOFTCAP: tl.constexpr,
    TEMP_PER_ROW: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    pid_n = tl.program_id(0)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    tgt = tl.load(T + rows, mask=row_mask, other=-1).to(tl.int64)
    inv_t = _row_inv_temp(TEMP, rows, row_mask, inv_temp, TEMP_PER_ROW)
    m = tl.zeros((BLOCK_N,), dtype=tl.float32) - 1.0e30
    s = tl.zeros((BLOCK_N,), dtype=tl.float32)
    a = tl.zeros((BLOCK_N,), dtype=tl.float32)
    tz = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < V
        y = tl.load(
            L + rows64[:, None] * s_ln + cols[None, :].to(tl.int64) * s_lv,
            mask=row_mask[:, None] & col_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        if HAS_SOFTCAP:
            y = softcap * _tanh(y / softcap)
        z = y * inv_t[:, None]
        m, s, a = _online_update(z, col_mask, m, s, a)
        hit = (cols[None, :] == tgt[:, None]) & col_mask[None, :]
        tz += tl.sum(tl.where(hit, z, 0.0), axis=1)
    tl.store(OUT_M + rows, m, mask=row_mask)
    tl.store(OUT_S + rows, s, mask=row_mask)
    tl.store(OUT_A + rows, a, mask=row_mask)
    tl.store(OUT_TZ + rows, tz, mask=row_mask)


@triton.jit
def _logits_bwd_kernel(
    L,
    T,
    TEMP,
    LSE,
    ENT,
    G_LP,
    G_ENT,
    G_LSE,
    GL,
    N,
    V,
    s_ln,
    s_lv,
    inv_temp,
    softcap,
    HAS_SOFTCAP: tl.constexpr,
    TEMP_PER_ROW: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    pid_n = tl.program_id(0)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    tgt = tl.load(T + rows, mask=row_mask, other=-1).to(tl.int64)
    inv_t = _row_inv_temp(TEMP, rows, row_mask, inv_temp, TEMP_PER_ROW)
    lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
    ent = tl.load(ENT + rows, mask=row_mask, other=0.0)
    g_lp = tl.load(G_LP + rows, mask=row_mask, other=0.0)
    g_ent = tl.load(G_ENT + rows, mask=row_mask, other=0.0)
    g_lse = tl.load(G_LSE + rows, mask=row_mask, other=0.0)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < V
        mask2 = row_mask[:, None] & col_mask[None, :]
        x = tl.load(L + rows64[:, None] * s_ln + cols[None, :].to(tl.int64) * s_lv, mask=mask2, other=0.0)
        y = x.to(tl.float32)
        if HAS_SOFTCAP:
            y = softcap * _tanh(y / softcap)
        z = y * inv_t[:, None]
        dx = _grad_logits(
            z, y, col_mask, tgt, cols, lse, ent, g_lp, g_ent, g_lse, g_lse * 0.0, inv_t, softcap, HAS_SOFTCAP
        )
        tl.store(GL + rows64[:, None] * V + cols[None, :].to(tl.int64), dx.to(GL.dtype.element_ty), mask=mask2)


# ----------------------------------------------------------------------------------------------------------------
# launch helpers

_FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def _torch() -> Any:
    import torch

    return torch


def _check_2d(x: Any, name: str) -> None:
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D tensor, got shape {tuple(x.shape)}")
    if str(x.dtype).removeprefix("torch.") not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32, bfloat16 or float16, got {x.dtype}")


def _check_targets(targets: Any, n: int, device: Any) -> Any:
    torch = _torch()
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets: expected a torch.Tensor, got {type(targets).__name__}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"targets: expected int64 or int32, got {targets.dtype}")
    if targets.shape != (n,):
        raise ValueError(f"targets: expected shape ({n},), got {tuple(targets.shape)}")
    if targets.device != device:
        raise ValueError(f"targets: expected device {device}, got {targets.device}")
    return targets.contiguous()


def _row_vector(x: Any, n: int, name: str, device: Any) -> Any:
    """A contiguous float32 [n] tensor (or None)."""
    if x is None:
        return None
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(x).__name__}")
    if x.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(x.shape)}")
    return x.detach().to(device=device, dtype=torch.float32).contiguous()


def _temperature_args(temperature: Any, n: int, device: Any) -> tuple[Any, float, bool]:
    """(per-row inverse temperature tensor or a dummy, scalar inverse temperature, per_row flag)."""
    torch = _torch()
    if isinstance(temperature, torch.Tensor) and temperature.ndim > 0:
        t = _row_vector(temperature, n, "temperature", device)
        return 1.0 / t, 1.0, True
    t = float(temperature)
    if not t > 0 or t == float("inf"):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    return None, 1.0 / t, False


def _softcap_arg(softcap: Any) -> tuple[float, bool]:
    if softcap is None:
        return 1.0, False
    c = float(softcap)
    if not c > 0 or c == float("inf"):
        raise ValueError(f"softcap: expected None or a finite number > 0, got {softcap!r}")
    return c, True


def _precision(dtype: Any, allow_tf32: bool | None) -> str:
    torch = _torch()
    if dtype != torch.float32:
        return "ieee"  # ignored for 16-bit operands (always tensor cores)
    if allow_tf32 is None:
        allow_tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    return "tf32" if allow_tf32 and not _interpret() else "ieee"


def _upcast(dtype: Any) -> bool:
    # The interpreter's bfloat16 dot is unreliable (numpy has no bfloat16): compute those dots in float32 there.
    return _interpret() and dtype != _torch().float32


def _blocks(block: int | None, default: int, name: str, minimum: int = 16) -> int:
    """A block size: a power of two >= minimum (16 for the tiles that feed tl.dot)."""
    b = default if block is None else int(block)
    if b < minimum or b & (b - 1):
        raise ValueError(f"{name}: expected a power of two >= {minimum}, got {block!r}")
    return b


# Launch defaults on a GPU, per kernel and operand dtype: (block_n, block_v, block_d, num_warps, num_stages). Chosen
# so that sm_90 code needs no register spills (checked by compiling ahead of time for GPUTarget("cuda", 90, 32) and
# reading cuobjdump --dump-resource-usage: STACK 0); not yet timed on a GPU. The interpreter uses 16-wide tiles.
_GPU_DEFAULTS = {
    ("fwd", True): (64, 128, 64, 8, 3),  # 16-bit operands
    ("fwd", False): (64, 128, 32, 8, 3),  # float32 operands
    ("bwd", True): (64, 64, 64, 8, 3),
    ("bwd", False): (64, 64, 32, 8, 2),
}


# Pass A's vocabulary splits in deterministic mode each need a float32 [N, D] buffer: at most this many.
_MAX_DETERMINISTIC_SPLITS = 4


def _launch_config(kind: str, dtype: Any, block_n: Any, block_v: Any, block_d: Any, num_warps: Any) -> tuple:
    """(bn, bv, bd, launch options) for a fused-head kernel: user values where given, else the defaults above."""
    if _interpret():
        dn, dv, dd, nw, ns = 16, 16, 16, None, None
    else:
        dn, dv, dd, nw, ns = _GPU_DEFAULTS[(kind, dtype != _torch().float32)]
    bn = _blocks(block_n, dn, "block_n")
    bv = _blocks(block_v, dv, "block_v")
    bd = _blocks(block_d, dd, "block_d")
    opts = {}
    if num_warps is not None or nw is not None:
        opts["num_warps"] = int(num_warps if num_warps is not None else nw)
    if ns is not None:
        opts["num_stages"] = ns
    return bn, bv, bd, opts


def _default_splits(device: Any, row_blocks: int, n_tiles: int) -> int:
    torch = _torch()
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(n_tiles, -(-2 * sms // max(row_blocks, 1))))


def _merge(m: Any, s: Any, a: Any, tz: Any, targets: Any, ignore_index: int, return_entropy: bool) -> tuple:
    """Merge per-split (max, sum-exp, sum p (z - max), target logit) [N, S] into (logprob, lse, entropy) [N]."""
    torch = _torch()
    mx = m.max(dim=1).values
    w = torch.exp(m - mx[:, None])
    s_tot = (w * s).sum(dim=1)
    lse = mx + torch.log(s_tot)
    ignored = targets == ignore_index
    logprobs = torch.where(ignored, torch.zeros_like(lse), tz.sum(dim=1) - lse)
    entropy = None
    if return_entropy:
        rel = torch.where(s > 0, w * (a + (m - mx[:, None]) * s), torch.zeros_like(s))
        entropy = torch.log(s_tot) - rel.sum(dim=1) / s_tot
        entropy = torch.where(ignored, torch.zeros_like(entropy), entropy.clamp_min(0.0))
    return logprobs, lse, entropy


def linear_logprobs_fwd(
    hidden: Any,
    weight: Any,
    targets: Any,
    *,
    bias: Any = None,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    return_entropy: bool = False,
    return_logit_mean: bool = False,
    block_n: int | None = None,
    block_v: int | None = None,
    block_d: int | None = None,
    num_splits: int | None = None,
    allow_tf32: bool | None = None,
    num_warps: int | None = None,
) -> tuple[Any, Any, Any]:
    """Fused ``log_softmax(softcap(hidden @ weight^T + bias) / temperature)[targets]`` without N x V logits.

    Args:
        hidden: [N, D] float32/bfloat16/float16 (any strides), on CUDA or on CPU under TRITON_INTERPRET=1.
        weight: [V, D], same dtype and device as hidden.
        targets: [N] int64/int32; rows equal to ``ignore_index`` give 0.
        bias: optional [V] (any float dtype).
        temperature: float > 0 or a [N] tensor (per-row temperature).
        softcap: optional cap c > 0: logits become c * tanh(logits / c) before the temperature.
        ignore_index: target value of ignored rows.
        return_entropy: also return the entropy of each row's distribution.
        return_logit_mean: also return mean_v z_v per row (label smoothing), as a 4th output.
        block_n, block_v, block_d: tile sizes (powers of two >= 16).
        num_splits: vocab splits per row block (parallelism over V); default fills the GPU, 1 in the interpreter.
        allow_tf32: float32 dots in TF32; default follows ``torch.backends.cuda.matmul.allow_tf32``.
        num_warps: Triton launch option.

    Returns:
        (logprobs [N], lse [N], entropy [N] or None), all float32; with return_logit_mean a 4th [N] output (not
        zeroed at ignored rows).
    """
    torch = _torch()
    _check_2d(hidden, "hidden")
    _check_2d(weight, "weight")
    n, d = hidden.shape
    v = weight.shape[0]
    if weight.shape[1] != d:
        raise ValueError(f"weight: expected shape (V, {d}) to match hidden [N, {d}], got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise TypeError(
            f"weight: expected dtype {hidden.dtype} on {hidden.device}, got {weight.dtype} on {weight.device}"
        )
    if v < 1:
        raise ValueError("weight: needs at least one vocabulary row")
    device = hidden.device
    targets = _check_targets(targets, n, device)
    if bias is not None:
        bias = _row_vector(bias, v, "bias", device)
    temp_t, inv_temp, per_row = _temperature_args(temperature, n, device)
    cap, has_cap = _softcap_arg(softcap)
    bn, bv, bd, opts = _launch_config("fwd", hidden.dtype, block_n, block_v, block_d, num_warps)
    row_blocks = triton.cdiv(max(n, 1), bn)
    n_tiles = triton.cdiv(v, bv)
    splits = _default_splits(device, row_blocks, n_tiles) if num_splits is None else int(num_splits)
    splits = max(1, min(splits, n_tiles))
    tiles_per_split = triton.cdiv(n_tiles, splits)
    splits = triton.cdiv(n_tiles, tiles_per_split)  # every split owns at least one tile
    f32 = dict(device=device, dtype=torch.float32)
    m, s, a, tz, zs = (torch.empty((n, splits), **f32) for _ in range(5))
    dummy = m
    if n > 0:
        _linear_fwd_kernel[(row_blocks, splits)](
            hidden, weight, dummy if bias is None else bias, targets, dummy if temp_t is None else temp_t,
            m, s, a, tz, zs, n, v, d, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            inv_temp, cap, tiles_per_split, splits,
            HAS_BIAS=bias is not None, HAS_SOFTCAP=has_cap, TEMP_PER_ROW=per_row, UPCAST=_upcast(hidden.dtype),
            PRECISION=_precision(hidden.dtype, allow_tf32), BLOCK_N=bn, BLOCK_V=bv, BLOCK_D=bd, **opts,
        )  # fmt: skip
    out = _merge(m, s, a, tz, targets, ignore_index, return_entropy)
    if return_logit_mean:
        return (*out, zs.sum(dim=1) / v)
    return out


def _upstream(grad: Any, n: int, name: str, ignored: Any, device: Any) -> Any:
    torch = _torch()
    if grad is None:
        return torch.zeros(n, device=device, dtype=torch.float32)
    g = _row_vector(grad, n, name, device)
    return torch.where(ignored, torch.zeros_like(g), g)


def linear_logprobs_bwd(
    hidden: Any,
    weight: Any,
    targets: Any,
    lse: Any,
    grad_logprobs: Any,
    grad_entropy: Any = None,
    *,
    bias: Any = None,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    entropy: Any = None,
    grad_lse: Any = None,
    grad_logit_mean: Any = None,
    needs_hidden_grad: bool = True,
    needs_weight_grad: bool = True,
    deterministic: bool = True,
    hidden_splits: int | None = None,
    block_n: int | None = None,
    block_v: int | None = None,
    block_d: int | None = None,
    allow_tf32: bool | None = None,
    num_warps: int | None = None,
) -> tuple[Any, Any, Any]:
    """Gradients of ``sum(g_lp * logprobs + g_ent * entropy + g_lse * lse + g_mean * logit_mean)`` by recomputation.

    Args:
        hidden, weight, targets, bias, temperature, softcap, ignore_index: as in :func:`linear_logprobs_fwd`.
        lse: [N] float32 from the forward.
        grad_logprobs: [N] upstream gradient of the log-probs (None means 0).
        grad_entropy: [N] upstream gradient of the entropy, or None.
        entropy: [N] the forward's entropy; recomputed (one extra forward) when grad_entropy is given without it.
        grad_lse: optional [N] upstream gradient of lse (e.g. a z-loss).
        grad_logit_mean: optional [N] upstream gradient of the forward's logit mean (label smoothing).
        needs_hidden_grad, needs_weight_grad: skip pass A / pass B when False (returns None there).
        deterministic: pass A splits the vocabulary over ``hidden_splits`` programs per row block (more
            parallelism when N / block_n is small against the number of SMs). True (default): each split adds
            into its own float32 [N, D] slice (at most 4 slices), summed in a fixed order, so results are
            bit-for-bit reproducible. False: all splits add into one buffer with contended float32 atomics (no
            extra memory, any number of splits; the last bits may change from run to run).
        hidden_splits: vocabulary splits of pass A (default: enough programs to fill the GPU; 1 in the
            interpreter).
        block_n, block_v, block_d, allow_tf32, num_warps: tuning knobs as in the forward.

    Returns:
        (grad_hidden [N, D] in hidden.dtype or None, grad_weight [V, D] in weight.dtype or None,
        grad_bias [V] in bias.dtype or None). Accumulation is float32.
    """
    torch = _torch()
    _check_2d(hidden, "hidden")
    _check_2d(weight, "weight")
    n, d = hidden.shape
    v = weight.shape[0]
    if weight.shape[1] != d or weight.dtype != hidden.dtype:
        raise ValueError(f"weight: expected shape (V, {d}) and dtype {hidden.dtype}, got {tuple(weight.shape)}")
    device = hidden.device
    targets = _check_targets(targets, n, device)
    ignored = targets == ignore_index
    lse = _row_vector(lse, n, "lse", device)
    g_lp = _upstream(grad_logprobs, n, "grad_logprobs", ignored, device)
    g_ent = _upstream(grad_entropy, n, "grad_entropy", ignored, device)
    g_lse = _upstream(grad_lse, n, "grad_lse", ignored, device)
    g_zm = _upstream(grad_logit_mean, n, "grad_logit_mean", ignored, device) / v
    if grad_entropy is not None and entropy is None:
        _, _, entropy = linear_logprobs_fwd(
            hidden, weight, targets, bias=bias, temperature=temperature, softcap=softcap,
            ignore_index=ignore_index, return_entropy=True, allow_tf32=allow_tf32,
        )  # fmt: skip
    ent = _row_vector(entropy, n, "entropy", device) if entropy is not None else torch.zeros_like(lse)
    bias_f = _row_vector(bias, v, "bias", device) if bias is not None else None
    temp_t, inv_temp, per_row = _temperature_args(temperature, n, device)
    cap, has_cap = _softcap_arg(softcap)
    bn, bv, bd, opts = _launch_config("bwd", hidden.dtype, block_n, block_v, block_d, num_warps)
    dummy = lse
    common = (
        hidden, weight, dummy if bias_f is None else bias_f, targets, dummy if temp_t is None else temp_t,
        lse, ent, g_lp, g_ent, g_lse, g_zm,
    )  # fmt: skip
    consts = dict(
        HAS_BIAS=bias_f is not None,
        HAS_SOFTCAP=has_cap,
        TEMP_PER_ROW=per_row,
        UPCAST=_upcast(hidden.dtype),
        PRECISION=_precision(hidden.dtype, allow_tf32),
        BLOCK_N=bn,
        BLOCK_V=bv,
        BLOCK_D=bd,
        **opts,
    )
    strides = (hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1))
    grad_hidden = grad_weight = grad_bias = None
    if needs_hidden_grad:
        row_blocks, n_tiles = triton.cdiv(max(n, 1), bn), triton.cdiv(v, bv)
        splits = _default_splits(device, row_blocks, n_tiles) if hidden_splits is None else int(hidden_splits)
        if deterministic:
            splits = min(splits, _MAX_DETERMINISTIC_SPLITS)
        splits = max(1, min(splits, n_tiles))
        tiles_per_split = triton.cdiv(n_tiles, splits)
        splits = triton.cdiv(n_tiles, tiles_per_split)
        # deterministic: one float32 [N, D] slice per split, summed in a fixed order; else one shared buffer
        parts = splits if deterministic else 1
        gh = torch.zeros((parts, n, d), device=device, dtype=torch.float32)
        if n > 0:
            _linear_bwd_hidden_kernel[(row_blocks, splits)](
                *common, gh, n, v, d, *strides, inv_temp, cap, tiles_per_split, n * d if deterministic else 0,
                **consts,
            )  # fmt: skip
        grad_hidden = (gh[0] if parts == 1 else gh.sum(dim=0)).to(hidden.dtype)
    if needs_weight_grad:
        gw = torch.zeros((v, d), device=device, dtype=torch.float32)
        gb = torch.zeros((v,), device=device, dtype=torch.float32)
        if n > 0:
            _linear_bwd_weight_kernel[(triton.cdiv(v, bv),)](
                *common, gw, gb, n, v, d, *strides, inv_temp, cap, **consts
            )
        grad_weight = gw.to(weight.dtype)
        if bias is not None:
            grad_bias = gb.to(bias.dtype)
    return grad_hidden, grad_weight, grad_bias


def logprobs_from_logits_fwd(
    logits: Any,
    targets: Any,
    *,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    return_entropy: bool = False,
    block_n: int | None = None,
    block_v: int | None = None,
    num_warps: int | None = None,
) -> tuple[Any, Any, Any]:
    """One pass over given logits: ``log_softmax(softcap(logits) / temperature)[targets]``, lse and entropy.

    Args:
        logits: [N, V] float32/bfloat16/float16 (any strides).
        targets: [N] int64/int32; rows equal to ``ignore_index`` give logprob 0 and entropy 0.
        temperature, softcap, ignore_index, return_entropy: as in :func:`linear_logprobs_fwd`.
        block_n, block_v, num_warps: tuning knobs.

    Returns:
        (logprobs [N], lse [N], entropy [N] or None), float32.
    """
    torch = _torch()
    _check_2d(logits, "logits")
    n, v = logits.shape
    if v < 1:
        raise ValueError("logits: needs at least one column")
    device = logits.device
    targets = _check_targets(targets, n, device)
    temp_t, inv_temp, per_row = _temperature_args(temperature, n, device)
    cap, has_cap = _softcap_arg(softcap)
    bn = _blocks(block_n, 16 if _interpret() else 4, "block_n", minimum=1)
    bv = _blocks(block_v, 16 if _interpret() else 1024, "block_v", minimum=1)
    f32 = dict(device=device, dtype=torch.float32)
    m, s, a, tz = (torch.empty((n, 1), **f32) for _ in range(4))
    if n > 0:
        opts = {} if num_warps is None else {"num_warps": num_warps}
        _logits_fwd_kernel[(triton.cdiv(n, bn),)](
            logits, targets, m if temp_t is None else temp_t, m, s, a, tz, n, v, logits.stride(0), logits.stride(1),
            inv_temp, cap, HAS_SOFTCAP=has_cap, TEMP_PER_ROW=per_row, BLOCK_N=bn, BLOCK_V=bv, **opts,
        )  # fmt: skip
    return _merge(m, s, a, tz, targets, ignore_index, return_entropy)


def logprobs_from_logits_bwd(
    logits: Any,
    targets: Any,
    lse: Any,
    grad_logprobs: Any,
    grad_entropy: Any = None,
    *,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    entropy: Any = None,
    grad_lse: Any = None,
    block_n: int | None = None,
    block_v: int | None = None,
    num_warps: int | None = None,
) -> Any:
    """Gradient w.r.t. the logits of ``sum(grad_logprobs * logprobs + grad_entropy * entropy + grad_lse * lse)``.

    Args:
        logits, targets, temperature, softcap, ignore_index: as in :func:`logprobs_from_logits_fwd`.
        lse: [N] from the forward. entropy: [N] from the forward (recomputed if needed and not given).
        grad_logprobs, grad_entropy, grad_lse: [N] upstream gradients (None means 0).

    Returns:
        grad_logits [N, V] in logits.dtype (contiguous).
    """
    torch = _torch()
    _check_2d(logits, "logits")
    n, v = logits.shape
    device = logits.device
    targets = _check_targets(targets, n, device)
    ignored = targets == ignore_index
    lse = _row_vector(lse, n, "lse", device)
    g_lp = _upstream(grad_logprobs, n, "grad_logprobs", ignored, device)
    g_ent = _upstream(grad_entropy, n, "grad_entropy", ignored, device)
    g_lse = _upstream(grad_lse, n, "grad_lse", ignored, device)
    if grad_entropy is not None and entropy is None:
        _, _, entropy = logprobs_from_logits_fwd(
            logits, targets, temperature=temperature, softcap=softcap, ignore_index=ignore_index, return_entropy=True
        )
    ent = _row_vector(entropy, n, "entropy", device) if entropy is not None else torch.zeros_like(lse)
    temp_t, inv_temp, per_row = _temperature_args(temperature, n, device)
    cap, has_cap = _softcap_arg(softcap)
    bn = _blocks(block_n, 16 if _interpret() else 4, "block_n", minimum=1)
    bv = _blocks(block_v, 16 if _interpret() else 1024, "block_v", minimum=1)
    grad = torch.empty((n, v), device=device, dtype=logits.dtype)
    if n > 0:
        opts = {} if num_warps is None else {"num_warps": num_warps}
        _logits_bwd_kernel[(triton.cdiv(n, bn),)](
            logits, targets, lse if temp_t is None else temp_t, lse, ent, g_lp, g_ent, g_lse, grad, n, v,
            logits.stride(0), logits.stride(1), inv_temp, cap,
            HAS_SOFTCAP=has_cap, TEMP_PER_ROW=per_row, BLOCK_N=bn, BLOCK_V=bv, **opts,
        )  # fmt: skip
    return grad
