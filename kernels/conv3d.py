"""Triton kernel for loglik.conv3d on GPU: direct 3D cross-correlation over (N, C, X, Y, E) datacubes.

No autograd here (``loglik.conv`` wires it into the ``loglik::conv3d`` custom op). Triton is imported when this
module is imported, never by ``import loglik``. Works on CUDA tensors, and on CPU tensors under
``TRITON_INTERPRET=1`` (how the tests run without a GPU; interpreted, so only tiny shapes).

One program computes a (BLOCK_O output channels) x (BLOCK_E energies) tile of one output row (n, ox, oy): for every
input channel and kernel tap it loads one strided vector of the input row along E (masked at the zero padding) and
one vector of weights over the output channels, and accumulates their outer product. Accumulation is in float32
for float32/float16/bfloat16 inputs and float64 for float64.

Launch helper::

    conv3d_forward(x[N, C, X, Y, E], weight[O, C, KX, KY, KE], bias[O] or None, stride, padding, dilation)
        -> y[N, O, OX, OY, OE] (dtype of x)

stride / padding / dilation are 3-tuples of ints (X, Y, E); shapes are checked by the caller (loglik.conv).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _conv3d_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    C,
    X,
    Y,
    E,
    O,
    OX,
    OY,
    OE,
    KX,
    KY,
    KE,
    sx,
    sy,
    se,
    px,
    py,
    pe,
    dx,
    dy,
    de,
    HAS_BIAS: tl.constexpr,
    ACC_F64: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    pid_row = tl.program_id(0)
    pid_o = tl.program_id(1)
    pid_e = tl.program_id(2)
    oy = pid_row % OY
    ox = (pid_row // OY) % OX
    n = pid_row // (OX * OY)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_o = offs_o < O
    mask_e = offs_e < OE
    if ACC_F64:
        acc = tl.zeros((BLOCK_O, BLOCK_E), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_O, BLOCK_E), dtype=tl.float32)
    for c in range(C):
        for kx in range(KX):
            xi = ox * sx - px + kx * dx
            for ky in range(KY):
                yi = oy * sy - py + ky * dy
                # rows in the X/Y zero padding read nothing: their E bound drops to 0
                e_hi = tl.where((xi >= 0) & (xi < X) & (yi >= 0) & (yi < Y), E, 0)
                row = (((n * C + c) * X + xi) * Y + yi).to(tl.int64) * E
                for ke in range(KE):
                    ei = offs_e * se - pe + ke * de
                    m = mask_e & (ei >= 0) & (ei < e_hi)
                    xv = tl.load(x_ptr + row + ei, mask=m, other=0.0).to(acc.dtype)
                    widx = (((offs_o * C + c) * KX + kx) * KY + ky) * KE + ke
                    wv = tl.load(w_ptr + widx, mask=mask_o, other=0.0).to(acc.dtype)
                    acc += wv[:, None] * xv[None, :]
    if HAS_BIAS:
        bv = tl.load(b_ptr + offs_o, mask=mask_o, other=0.0).to(acc.dtype)
        acc += bv[:, None]
    out_row = (((n * O + offs_o) * OX + ox) * OY + oy).to(tl.int64) * OE
    ptrs = y_ptr + out_row[:, None] + offs_e[None, :]
    tl.store(ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_e[None, :])


def conv3d_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    dilation: tuple[int, int, int],
    *,
    block_o: int | None = None,
    block_e: int = 64,
) -> torch.Tensor:
    """y = conv3d(x, weight, bias) with the given (X, Y, E) stride, padding and dilation (see module docstring)."""
    x = x.contiguous()
    weight = weight.contiguous()
    n, c, nx, ny, ne = x.shape
    o, _, kx, ky, ke = weight.shape
    out = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip((nx, ny, ne), (kx, ky, ke), stride, padding, dilation, strict=True)
    ]
    y = torch.empty((n, o, *out), dtype=x.dtype, device=x.device)
    if block_o is None:
        block_o = min(16, max(1, triton.next_power_of_2(o)))
    block_e = max(16, min(block_e, triton.next_power_of_2(out[2])))
    grid = (n * out[0] * out[1], triton.cdiv(o, block_o), triton.cdiv(out[2], block_e))
    b = bias.contiguous() if bias is not None else weight  # dummy pointer when there is no bias
    _conv3d_fwd_kernel[grid](
        x, weight, b, y,
        c, nx, ny, ne, o, out[0], out[1], out[2], kx, ky, ke,
        *stride, *padding, *dilation,
        HAS_BIAS=bias is not None,
        ACC_F64=x.dtype == torch.float64,
        BLOCK_O=block_o,
        BLOCK_E=block_e,
    )  # fmt: skip
    return y
