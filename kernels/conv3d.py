"""Triton kernel for loglik.conv3d on GPU: direct 3D cross-correlation over (N, C, X, Y, E) datacubes.

No autograd here (``loglik.conv`` wires it into the ``loglik::conv3d`` custom op). Triton is imported when this
module is imported, never by ``import loglik``. Works on CUDA tensors, and on CPU tensors under
``TRITON_INTERPRET=1`` (how the tests run without a GPU; interpreted, so only tiny shapes).

One program computes a (BLOCK_O output channels) x (BLOCK_E energies) tile of one output row (n, ox, oy): for every
input channel and kernel tap it loads one strided vector of the input row along E (masked at the zero padding) and
one vector of weights over the output channels, and accumulates their outer product. Accumulation is in float32
for float32/float16/bfloat16 inputs and float64 for float64.

Gradients: grad_input uses the same tiling over input rows (the output index behind each tap is found by exact
division, so any stride works); grad_weight gives each program a block of output channels and one kernel tap, sums
over a chunk of output rows and all energies, and adds its partial sums into the result with atomic adds.

Launch helpers::

    conv3d_forward(x[N, C, X, Y, E], weight[O, C, KX, KY, KE], bias[O] or None, stride, padding, dilation)
        -> y[N, O, OX, OY, OE] (dtype of x)
    conv3d_grad_input(grad_output[N, O, OX, OY, OE], weight, input_shape, stride, padding, dilation)
        -> grad_x[N, C, X, Y, E]
    conv3d_grad_weight(x, grad_output, weight_shape, stride, padding, dilation) -> grad_w[O, C, KX, KY, KE]

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


@triton.jit
def _conv3d_gin_kernel(
    gy_ptr,
    w_ptr,
    gx_ptr,
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
    ACC_F64: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    # One program: a (BLOCK_C input channels) x (BLOCK_E energies) tile of one grad_input row (n, xi, yi). Output
    # position (ox, oy, oe) feeds input (xi, yi, e) through tap (kx, ky, ke) when xi = ox * sx - px + kx * dx (same
    # for y and e): the output index is found by division, kept where it divides exactly and lies inside.
    pid_row = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_e = tl.program_id(2)
    yi = pid_row % Y
    xi = (pid_row // Y) % X
    n = pid_row // (X * Y)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_c = offs_c < C
    mask_e = offs_e < E
    if ACC_F64:
        acc = tl.zeros((BLOCK_C, BLOCK_E), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_C, BLOCK_E), dtype=tl.float32)
    for kx in range(KX):
        tx = xi + px - kx * dx
        ox = tx // sx
        for ky in range(KY):
            ty = yi + py - ky * dy
            oy = ty // sy
            ok = (tx >= 0) & (tx % sx == 0) & (ox < OX) & (ty >= 0) & (ty % sy == 0) & (oy < OY)
            oe_hi = tl.where(ok, OE, 0)
            for ke in range(KE):
                te = offs_e + pe - ke * de
                oe = te // se
                m = mask_e & (te >= 0) & (te % se == 0) & (oe < oe_hi)
                for o in range(O):
                    row = (((n * O + o) * OX + ox) * OY + oy).to(tl.int64) * OE
                    gv = tl.load(gy_ptr + row + oe, mask=m, other=0.0).to(acc.dtype)
                    widx = (((o * C + offs_c) * KX + kx) * KY + ky) * KE + ke
                    wv = tl.load(w_ptr + widx, mask=mask_c, other=0.0).to(acc.dtype)
                    acc += wv[:, None] * gv[None, :]
    out_row = (((n * C + offs_c) * X + xi) * Y + yi).to(tl.int64) * E
    ptrs = gx_ptr + out_row[:, None] + offs_e[None, :]
    tl.store(ptrs, acc.to(gx_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_e[None, :])


@triton.jit
def _conv3d_gw_kernel(
    x_ptr,
    gy_ptr,
    gw_ptr,
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
    NROWS,
    ROWS_PER_PROG,
    BLOCK_O: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    # One program: BLOCK_O output channels x one tap (c, kx, ky, ke), summed over a chunk of output rows (n, ox, oy)
    # and all energies; chunks add into the float32/float64 buffer gw_ptr atomically.
    pid_o = tl.program_id(0)
    tap = tl.program_id(1)
    pid_r = tl.program_id(2)
    ke = tap % KE
    ky = (tap // KE) % KY
    kx = (tap // (KE * KY)) % KX
    c = tap // (KE * KY * KX)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < O
    acc = tl.zeros((BLOCK_O, BLOCK_E), dtype=gw_ptr.dtype.element_ty)
    r0 = pid_r * ROWS_PER_PROG
    for r in range(r0, tl.minimum(r0 + ROWS_PER_PROG, NROWS)):
        oy = r % OY
        ox = (r // OY) % OX
        n = r // (OX * OY)
        xi = ox * sx - px + kx * dx
        yi = oy * sy - py + ky * dy
        e_hi = tl.where((xi >= 0) & (xi < X) & (yi >= 0) & (yi < Y), E, 0)
        xrow = (((n * C + c) * X + xi) * Y + yi).to(tl.int64) * E
        grow = (((n * O + offs_o) * OX + ox) * OY + oy).to(tl.int64) * OE
        for e0 in range(0, OE, BLOCK_E):
            offs_e = e0 + tl.arange(0, BLOCK_E)
            ei = offs_e * se - pe + ke * de
            mx = (offs_e < OE) & (ei >= 0) & (ei < e_hi)
            xv = tl.load(x_ptr + xrow + ei, mask=mx, other=0.0).to(acc.dtype)
            mg = mask_o[:, None] & (offs_e < OE)[None, :]
            gv = tl.load(gy_ptr + grow[:, None] + offs_e[None, :], mask=mg, other=0.0).to(acc.dtype)
            acc += gv * xv[None, :]
    part = tl.sum(acc, axis=1)
    tl.atomic_add(gw_ptr + offs_o * (C * KX * KY * KE) + tap, part, mask=mask_o)


def conv3d_grad_input(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_shape: tuple[int, int, int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    dilation: tuple[int, int, int],
    *,
    block_c: int | None = None,
    block_e: int = 64,
) -> torch.Tensor:
    """grad_input[N, C, X, Y, E] of conv3d for grad_output[N, O, OX, OY, OE] (any stride, padding, dilation)."""
    gy = grad_output.contiguous()
    weight = weight.contiguous()
    n, c, nx, ny, ne = (int(v) for v in input_shape)
    o, _, kx, ky, ke = weight.shape
    _, _, ox, oy, oe = gy.shape
    gx = torch.empty((n, c, nx, ny, ne), dtype=gy.dtype, device=gy.device)
    if block_c is None:
        block_c = min(16, max(1, triton.next_power_of_2(c)))
    block_e = max(16, min(block_e, triton.next_power_of_2(ne)))
    grid = (n * nx * ny, triton.cdiv(c, block_c), triton.cdiv(ne, block_e))
    _conv3d_gin_kernel[grid](
        gy, weight, gx,
        c, nx, ny, ne, o, ox, oy, oe, kx, ky, ke,
        *stride, *padding, *dilation,
        ACC_F64=gy.dtype == torch.float64,
        BLOCK_C=block_c,
        BLOCK_E=block_e,
    )  # fmt: skip
    return gx


def conv3d_grad_weight(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    weight_shape: tuple[int, int, int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    dilation: tuple[int, int, int],
    *,
    block_o: int | None = None,
    block_e: int = 64,
    rows_per_program: int | None = None,
) -> torch.Tensor:
    """grad_weight[O, C, KX, KY, KE] of conv3d for x[N, C, X, Y, E] and grad_output[N, O, OX, OY, OE].

    Accumulates in float32 (float64 for float64 inputs) across programs with atomic adds, so the summation order
    (and the last bits of the result) can differ from run to run on a GPU.
    """
    x = x.contiguous()
    gy = grad_output.contiguous()
    n, c, nx, ny, ne = x.shape
    o, _, kx, ky, ke = (int(v) for v in weight_shape)
    _, _, ox, oy, oe = gy.shape
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    gw = torch.zeros((o, c, kx, ky, ke), dtype=acc_dtype, device=x.device)
    nrows = n * ox * oy
    if block_o is None:
        block_o = min(16, max(1, triton.next_power_of_2(o)))
    block_e = max(16, min(block_e, triton.next_power_of_2(oe)))
    if rows_per_program is None:
        rows_per_program = max(1, triton.cdiv(nrows, 64))  # ~64 row chunks per (channel block, tap)
    grid = (triton.cdiv(o, block_o), c * kx * ky * ke, triton.cdiv(nrows, rows_per_program))
    _conv3d_gw_kernel[grid](
        x, gy, gw,
        c, nx, ny, ne, o, ox, oy, oe, kx, ky, ke,
        *stride, *padding, *dilation,
        nrows, rows_per_program,
        BLOCK_O=block_o,
        BLOCK_E=block_e,
    )  # fmt: skip
    return gw.to(x.dtype)
