"""conv: 3D convolutions for spectral datacubes (x, y, energy) and EELS anomaly detection.

``conv3d`` is a cross-correlation with the semantics of ``torch.nn.functional.conv3d`` (groups=1) on tensors laid
out as (N, C, X, Y, E): few channels and a long, contiguous energy axis. Numpy arrays go straight to the compiled
C++ kernel; torch tensors go through the ``loglik::conv3d`` custom op (autograd, ``torch.compile``-friendly
fake kernel), which runs the C++ kernel on CPU and the Triton kernel on a CUDA device.

The EELS names (``CVAE3D``, ``eels_anomaly_scores``, ``pca_anomaly_scores``, ``synthetic_fe_spectrum_image``,
``load_spectrum_image``) live in :mod:`loglik.eels` and are re-exported here.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from . import _backend
from ._checks import as_float_array, check_bool, check_choice
from .eels import (
    CVAE3D,
    eels_anomaly_scores,
    load_spectrum_image,
    pca_anomaly_scores,
    synthetic_fe_spectrum_image,
)

__all__ = [
    "conv3d",
    "conv3d_grad_input",
    "conv3d_grad_weight",
    "conv3d_output_shape",
    "CVAE3D",
    "eels_anomaly_scores",
    "pca_anomaly_scores",
    "synthetic_fe_spectrum_image",
    "load_spectrum_image",
]

Triple = tuple[int, int, int]
_IMPLS = ("auto", "cpu", "triton", "reference")
_AXES = ("X", "Y", "E")
_INT32_MAX = 2**31 - 1


def _triple(value: Any, name: str, *, low: int) -> Triple:
    """An int or a sequence of 3 ints, each >= low, as a 3-tuple (ValueError/TypeError naming ``name``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        items: Sequence[Any] = (value,) * 3
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = value
    else:
        raise TypeError(f"{name}: expected an int or a sequence of 3 ints, got {value!r}")
    if len(items) != 3:
        raise ValueError(f"{name}: expected an int or 3 ints (X, Y, E), got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: expected ints, got {value!r}")
        if int(v) < low:
            raise ValueError(f"{name}: expected values >= {low}, got {value!r}")
        if int(v) > _INT32_MAX:  # the kernels index with 32-bit geometry; larger values overflowed in C++
            raise ValueError(f"{name}: expected values <= {_INT32_MAX}, got {value!r}")
        out.append(int(v))
    return (out[0], out[1], out[2])


def _geometry(
    x_shape: Sequence[int], w_shape: Sequence[int], stride: Any, padding: Any, dilation: Any
) -> tuple[Triple, Triple, Triple, tuple[int, int, int, int, int]]:
    """Checks shapes and hyper-parameters; returns (stride, padding, dilation, output shape)."""
    if len(x_shape) != 5:
        raise ValueError(f"x: expected a 5-D array (N, C, X, Y, E), got shape {tuple(x_shape)}")
    if len(w_shape) != 5:
        raise ValueError(f"weight: expected a 5-D array (O, C, KX, KY, KE), got shape {tuple(w_shape)}")
    if min(x_shape) < 1:
        raise ValueError(f"x: every dimension must be positive, got shape {tuple(x_shape)}")
    if min(w_shape) < 1:
        raise ValueError(f"weight: every dimension must be positive, got shape {tuple(w_shape)}")
    if w_shape[1] != x_shape[1]:
        raise ValueError(
            f"weight: expected {x_shape[1]} input channels (dim 1, groups=1) to match x, got shape {tuple(w_shape)}"
        )
    s = _triple(stride, "stride", low=1)
    p = _triple(padding, "padding", low=0)
    d = _triple(dilation, "dilation", low=1)
    out = []
    for a in range(3):
        span = d[a] * (w_shape[2 + a] - 1) + 1
        if x_shape[2 + a] + 2 * p[a] < span:
            raise ValueError(
                f"weight: kernel extent {span} along {_AXES[a]} (with dilation) is larger than the padded input "
                f"({x_shape[2 + a]} + 2*{p[a]})"
            )
        out.append((x_shape[2 + a] + 2 * p[a] - span) // s[a] + 1)
    out_shape = (int(x_shape[0]), int(w_shape[0]), out[0], out[1], out[2])
    # Any stride > (padded length - kernel extent) gives a single output along that axis, exactly as the smallest
    # such stride does, so it is reduced to that one before reaching the kernels, whose phase buffers grow with the
    # stride (std::bad_alloc for a stride of 2**24 on a tiny input).
    s = cast(
        Triple, tuple(min(s[a], x_shape[2 + a] + 2 * p[a] - (d[a] * (w_shape[2 + a] - 1) + 1) + 1) for a in range(3))
    )
    if max(x_shape[2 + a] + 2 * p[a] for a in range(3)) > _INT32_MAX:
        raise ValueError(f"padding: the padded input would exceed {_INT32_MAX} samples along an axis, got {p}")
    if math.prod(out_shape) > 2**48:
        raise ValueError(f"padding: the output shape {out_shape} would be too large (check padding and stride)")
    return s, p, d, out_shape


def conv3d_output_shape(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> tuple[int, int, int, int, int]:
    """Shape (N, O, OX, OY, OE) of ``conv3d`` for x of ``input_shape`` and weight of ``weight_shape``.

    Args:
        input_shape: (N, C, X, Y, E).
        weight_shape: (O, C, KX, KY, KE).
        stride, padding, dilation: int or 3 ints (X, Y, E).

    Returns:
        The output shape; raises ValueError when the kernel does not fit the padded input.
    """
    x_shape = _check_shape(input_shape, "input_shape")
    w_shape = _check_shape(weight_shape, "weight_shape")
    return _geometry(x_shape, w_shape, stride, padding, dilation)[3]


# ----------------------------------------------------------------------------------------------------------------
# numpy path (compiled kernel)


def _np_pair(a: Any, b: Any, name_a: str, name_b: str, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Two float arrays (finite unless ``finite=False``) promoted to one dtype (float64 if either is float64)."""
    a = as_float_array(a, name_a, finite=finite)
    b = as_float_array(b, name_b, finite=finite)
    dt = np.promote_types(a.dtype, b.dtype)
    return a.astype(dt, copy=False), b.astype(dt, copy=False)


def _np_conv3d(x, weight, bias, stride, padding, dilation, isa: str, check_finite: bool = True) -> np.ndarray:
    xa, wa = _np_pair(x, weight, "x", "weight", finite=check_finite)
    s, p, d, _ = _geometry(xa.shape, wa.shape, stride, padding, dilation)
    ba = None
    if bias is not None:
        ba = as_float_array(bias, "bias", ndim=1, finite=check_finite).astype(xa.dtype, copy=False)
        if ba.shape[0] != wa.shape[0]:
            raise ValueError(f"bias: expected shape ({wa.shape[0]},), got {ba.shape}")
    y, _ = _backend.C().conv3d_forward(xa, wa, ba, s, p, d, isa)
    return y


def _check_shape(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a sequence of 5 ints, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
        raise TypeError(f"{name}: expected a sequence of 5 ints, got {value!r}")
    shape = tuple(int(v) for v in value)
    if len(shape) != 5:
        raise ValueError(f"{name}: expected 5 sizes, got {value!r}")
    if any(v < 1 for v in shape):
        raise ValueError(f"{name}: expected positive sizes, got {shape}")
    return shape


# ----------------------------------------------------------------------------------------------------------------
# torch path: custom ops with autograd


@functools.cache
def _torch_ops() -> Any:
    """Registers loglik::conv3d, loglik::conv3d_grad_input and loglik::conv3d_grad_weight (once)."""
    torch = _backend.torch()
    from torch.library import custom_op

    def run_fwd(x, w, b, s, p, d):
        if x.is_cuda:
            from loglik.kernels import conv3d as tk

            return tk.conv3d_forward(x, w, b, tuple(s), tuple(p), tuple(d))
        xn = x.detach().contiguous().numpy()
        wn = w.detach().contiguous().numpy()
        bn = None if b is None else b.detach().contiguous().numpy()
        y, _ = _backend.C().conv3d_forward(xn, wn, bn, tuple(s), tuple(p), tuple(d), "auto")
        return torch.from_numpy(y)

    def run_gin(gy, w, shape, s, p, d):
        if gy.is_cuda:
            from loglik.kernels import conv3d as tk

            return tk.conv3d_grad_input(gy, w, tuple(shape), tuple(s), tuple(p), tuple(d))
        gx, _ = _backend.C().conv3d_grad_input(
            gy.detach().contiguous().numpy(), w.detach().contiguous().numpy(), list(shape), tuple(s), tuple(p),
            tuple(d), "auto",
        )  # fmt: skip
        return torch.from_numpy(gx)

    def run_gw(x, gy, shape, s, p, d):
        if gy.is_cuda:
            from loglik.kernels import conv3d as tk

            return tk.conv3d_grad_weight(x, gy, tuple(shape), tuple(s), tuple(p), tuple(d))
        gw, _ = _backend.C().conv3d_grad_weight(
            x.detach().contiguous().numpy(), gy.detach().contiguous().numpy(), list(shape), tuple(s), tuple(p),
            tuple(d), "auto",
        )  # fmt: skip
        return torch.from_numpy(gw)

    fwd = custom_op(
        "loglik::conv3d",
        run_fwd,
        mutates_args=(),
        schema="(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation) -> Tensor",
    )
    gin = custom_op(
        "loglik::conv3d_grad_input",
        run_gin,
        mutates_args=(),
        schema="(Tensor grad_output, Tensor weight, int[] input_shape, int[] stride, int[] padding, "
        "int[] dilation) -> Tensor",
    )
    gw = custom_op(
        "loglik::conv3d_grad_weight",
        run_gw,
        mutates_args=(),
        schema="(Tensor x, Tensor grad_output, int[] weight_shape, int[] stride, int[] padding, "
        "int[] dilation) -> Tensor",
    )

    @fwd.register_fake
    def _(x, w, b, s, p, d):
        shape = _geometry(tuple(x.shape), tuple(w.shape), tuple(s), tuple(p), tuple(d))[3]
        return x.new_empty(shape)

    @gin.register_fake
    def _(gy, w, shape, s, p, d):
        return gy.new_empty(list(shape))

    @gw.register_fake
    def _(x, gy, shape, s, p, d):
        return x.new_empty(list(shape))

    def setup_context(ctx, inputs, output):
        x, w, b, s, p, d = inputs
        ctx.save_for_backward(x, w)
        ctx.geometry = (list(s), list(p), list(d))
        ctx.has_bias = b is not None

    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        s, p, d = ctx.geometry
        gy = gy.contiguous()
        gx = gin(gy, w, list(x.shape), s, p, d) if ctx.needs_input_grad[0] else None
        gwt = gw(x, gy, list(w.shape), s, p, d) if ctx.needs_input_grad[1] else None
        gb = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # numpy on CPU: a torch reduction here would leave torch's OpenMP pool spinning while the next
            # loglik kernel runs on the same cores.
            # torch when the sum must stay differentiable (double backward) or numpy cannot see the data
            if gy.requires_grad or gy.is_cuda or type(gy) is not torch.Tensor:
                gb = gy.sum(dim=(0, 2, 3, 4))
            else:
                gb = torch.from_numpy(gy.numpy().sum(axis=(0, 2, 3, 4)))
        return gx, gwt, gb, None, None, None

    fwd.register_autograd(backward, setup_context=setup_context)

    def gin_setup(ctx, inputs, output):
        gy, w, shape, s, p, d = inputs
        ctx.save_for_backward(gy, w)
        ctx.geometry = (list(shape), list(s), list(p), list(d))

    def gin_backward(ctx, ggx):
        # grad_input is linear in (grad_output, weight): its adjoint in grad_output is the forward convolution.
        gy, w = ctx.saved_tensors
        shape, s, p, d = ctx.geometry
        ggx = ggx.contiguous()
        g_gy = fwd(ggx, w, None, s, p, d) if ctx.needs_input_grad[0] else None
        g_w = gw(ggx, gy, list(w.shape), s, p, d) if ctx.needs_input_grad[1] else None
        return g_gy, g_w, None, None, None, None

    gin.register_autograd(gin_backward, setup_context=gin_setup)

    def gw_setup(ctx, inputs, output):
        x, gy, shape, s, p, d = inputs
        ctx.save_for_backward(x, gy)
        ctx.geometry = (list(shape), list(s), list(p), list(d))

    def gw_backward(ctx, ggw):
        x, gy = ctx.saved_tensors
        shape, s, p, d = ctx.geometry
        ggw = ggw.contiguous()
        g_x = gin(gy, ggw, list(x.shape), s, p, d) if ctx.needs_input_grad[0] else None
        g_gy = fwd(x, ggw, None, s, p, d) if ctx.needs_input_grad[1] else None
        return g_x, g_gy, None, None, None, None

    gw.register_autograd(gw_backward, setup_context=gw_setup)
    return fwd, gin, gw


def _torch_check(t: Any, name: str, *, check_finite: bool) -> Any:
    torch = _backend.torch()
    if not _backend.is_torch(t):
        raise TypeError(f"{name}: expected a torch.Tensor like x, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected float32 or float64, got {t.dtype}")
    if check_finite and not _all_finite(t):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t


def _all_finite(t: Any) -> bool:
    torch = _backend.torch()
    if t.is_meta:  # no values to check (shape propagation)
        return True
    if t.is_cuda or type(t) not in (torch.Tensor, torch.nn.Parameter):  # GPU, or fake tensors under tracing
        return bool(torch.isfinite(t).all())
    # One float64 sum on the caller's thread (NaN/inf propagate, float32 cannot overflow it); the exact elementwise
    # check runs only when the sum is not finite. Avoids waking torch's thread pool between loglik kernels.
    a = t.detach().numpy()
    if np.isfinite(a.sum(dtype=np.float64)):
        return True
    return bool(np.isfinite(a).all())


def _torch_args(x, weight, bias, check_finite: bool, names: tuple[str, str] = ("x", "weight")) -> None:
    a, b = names
    _torch_check(x, a, check_finite=check_finite)
    _torch_check(weight, b, check_finite=check_finite)
    if weight.dtype != x.dtype:
        raise TypeError(f"{b}: dtype {weight.dtype} differs from {a} ({x.dtype})")
    if weight.device != x.device:
        raise ValueError(f"{b}: device {weight.device} differs from {a} ({x.device})")
    if bias is not None:
        _torch_check(bias, "bias", check_finite=check_finite)
        if bias.dtype != x.dtype or bias.device != x.device:
            raise TypeError("bias: dtype and device must match x")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias: expected shape ({weight.shape[0]},), got {tuple(bias.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# public API


def conv3d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    *,
    impl: str = "auto",
    check_finite: bool = True,
) -> Any:
    """3D cross-correlation over (X, Y, E) datacubes, as ``torch.nn.functional.conv3d`` with groups=1.

    ``y[n, o, i, j, k] = bias[o] + sum_{c, a, b, e} weight[o, c, a, b, e] * xpad[n, c, i*sx + a*dx, j*sy + b*dy,
    k*se + e*de]`` where xpad is x zero-padded by ``padding`` on both sides of each axis.

    Args:
        x: (N, C, X, Y, E) numpy array or torch tensor, float32 or float64 (E is the long, contiguous axis).
        weight: (O, C, KX, KY, KE) filters, same kind and dtype as x (numpy inputs are promoted together).
        bias: optional (O,) bias.
        stride: int or (sx, sy, se), each >= 1.
        padding: int or (px, py, pe), each >= 0 (zero padding).
        dilation: int or (dx, dy, de), each >= 1.
        impl: "auto" (C++ kernel on CPU, Triton on CUDA), "cpu", "triton" (torch CUDA tensors, or CPU under
            TRITON_INTERPRET=1; forward only, no autograd), or "reference" (numpy twin, numpy inputs only).
        check_finite: raise ValueError on NaN/inf inputs (one extra pass over memory).

    Returns:
        (N, O, OX, OY, OE) with OX = (X + 2 px - dx (KX - 1) - 1) // sx + 1 (likewise Y, E), of the input's kind.
        Torch outputs are differentiable in x, weight and bias (custom op ``loglik::conv3d``).
    """
    impl = check_choice(impl, "impl", _IMPLS)
    check_finite = check_bool(check_finite, "check_finite")
    if _backend.is_torch(x) or _backend.is_torch(weight):
        _torch_args(x, weight, bias, check_finite)
        s, p, d, _ = _geometry(tuple(x.shape), tuple(weight.shape), stride, padding, dilation)
        if impl == "reference":
            raise ValueError("impl: 'reference' takes numpy arrays; use loglik.reference.conv.conv3d")
        if impl == "triton":
            if not x.is_cuda and not _backend.triton_interpret():
                raise ValueError("impl: 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 to interpret it on CPU)")
            from loglik.kernels import conv3d as tk

            return tk.conv3d_forward(x, weight, bias, s, p, d)
        if impl == "cpu" and x.is_cuda:
            raise ValueError("impl: 'cpu' needs CPU tensors")
        fwd = _torch_ops()[0]
        return fwd(x.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(), s, p, d)
    if impl == "reference":
        from .reference import conv as ref

        xa, wa = _np_pair(x, weight, "x", "weight")
        s, p, d, _ = _geometry(xa.shape, wa.shape, stride, padding, dilation)
        ba = None if bias is None else as_float_array(bias, "bias", ndim=1)
        if ba is not None and ba.shape[0] != wa.shape[0]:
            raise ValueError(f"bias: expected shape ({wa.shape[0]},), got {ba.shape}")
        return ref.conv3d(xa, wa, ba, s, p, d)
    if impl == "triton":
        raise ValueError("impl: 'triton' takes torch tensors")
    return _np_conv3d(x, weight, bias, stride, padding, dilation, "auto", check_finite)


def conv3d_grad_input(
    grad_output: Any,
    weight: Any,
    input_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> Any:
    """Gradient of ``conv3d`` with respect to x: the transposed 3D convolution of ``grad_output``.

    It is the adjoint of conv3d in x: ``<conv3d(x, w), g> == <x, conv3d_grad_input(g, w, x.shape)>``.

    Args:
        grad_output: (N, O, OX, OY, OE) numpy array or torch tensor.
        weight: (O, C, KX, KY, KE).
        input_shape: (N, C, X, Y, E) of x (needed because strides make it ambiguous).
        stride, padding, dilation: as in :func:`conv3d`.

    Returns:
        (N, C, X, Y, E) gradient, of the kind of grad_output (torch results are differentiable).
    """
    shape = _check_shape(input_shape, "input_shape")
    if _backend.is_torch(grad_output) or _backend.is_torch(weight):
        _torch_args(grad_output, weight, None, True, ("grad_output", "weight"))
        s, p, d, oshape = _geometry(shape, tuple(weight.shape), stride, padding, dilation)
        if tuple(grad_output.shape) != oshape:
            raise ValueError(f"grad_output: expected shape {oshape}, got {tuple(grad_output.shape)}")
        return _torch_ops()[1](grad_output.contiguous(), weight.contiguous(), list(shape), s, p, d)
    ga, wa = _np_pair(grad_output, weight, "grad_output", "weight")
    s, p, d, oshape = _geometry(shape, wa.shape, stride, padding, dilation)
    if ga.shape != oshape:
        raise ValueError(f"grad_output: expected shape {oshape}, got {ga.shape}")
    return _backend.C().conv3d_grad_input(ga, wa, list(shape), s, p, d, "auto")[0]


def conv3d_grad_weight(
    x: Any,
    grad_output: Any,
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> Any:
    """Gradient of ``conv3d`` with respect to the weight.

    Args:
        x: (N, C, X, Y, E) input of the forward pass.
        grad_output: (N, O, OX, OY, OE).
        weight_shape: (O, C, KX, KY, KE).
        stride, padding, dilation: as in :func:`conv3d`.

    Returns:
        (O, C, KX, KY, KE) gradient, of the kind of x (torch results are differentiable).
    """
    shape = _check_shape(weight_shape, "weight_shape")
    if _backend.is_torch(x) or _backend.is_torch(grad_output):
        _torch_args(x, grad_output, None, True, ("x", "grad_output"))
        s, p, d, oshape = _geometry(tuple(x.shape), shape, stride, padding, dilation)
        if tuple(grad_output.shape) != oshape:
            raise ValueError(f"grad_output: expected shape {oshape}, got {tuple(grad_output.shape)}")
        return _torch_ops()[2](x.contiguous(), grad_output.contiguous(), list(shape), s, p, d)
    xa, ga = _np_pair(x, grad_output, "x", "grad_output")
    s, p, d, oshape = _geometry(xa.shape, shape, stride, padding, dilation)
    if ga.shape != oshape:
        raise ValueError(f"grad_output: expected shape {oshape}, got {ga.shape}")
    return _backend.C().conv3d_grad_weight(xa, ga, list(shape), s, p, d, "auto")[0]
