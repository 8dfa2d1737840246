"""Pure numpy twins of loglik.conv3d and its two gradients (float64-capable, no compiled code).

Layout: x (N, C, X, Y, E), weight (O, C, KX, KY, KE), output (N, O, OX, OY, OE); cross-correlation exactly as
torch.nn.functional.conv3d, groups=1. Each tap (kx, ky, ke) is one strided slice of the zero-padded input and one
einsum over channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["conv3d", "conv3d_grad_input", "conv3d_grad_weight", "conv3d_output_shape"]


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(v, int | np.integer):
        return (int(v),) * 3
    t = tuple(int(a) for a in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def conv3d_output_shape(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> tuple[int, int, int, int, int]:
    """(N, O, OX, OY, OE) of conv3d for x of ``input_shape`` (N, C, X, Y, E) and weight (O, C, KX, KY, KE)."""
    s, p, d = _triple(stride), _triple(padding), _triple(dilation)
    out = [(input_shape[2 + a] + 2 * p[a] - d[a] * (weight_shape[2 + a] - 1) - 1) // s[a] + 1 for a in range(3)]
    return (int(input_shape[0]), int(weight_shape[0]), out[0], out[1], out[2])


def _tap_slices(k: tuple[int, int, int], out: Sequence[int], s, d) -> tuple[slice, ...]:
    return tuple(slice(k[a] * d[a], k[a] * d[a] + s[a] * (out[a] - 1) + 1, s[a]) for a in range(3))


def conv3d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> np.ndarray:
    """Reference 3D cross-correlation.

    Args:
        x: (N, C, X, Y, E) input.
        weight: (O, C, KX, KY, KE) filters.
        bias: optional (O,) bias.
        stride, padding, dilation: int or 3 ints (X, Y, E).

    Returns:
        (N, O, OX, OY, OE) output in the promoted dtype of x and weight.
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    s, p, d = _triple(stride), _triple(padding), _triple(dilation)
    n, o, ox, oy, oe = conv3d_output_shape(x.shape, weight.shape, s, p, d)
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1]), (p[2], p[2])))
    y = np.zeros((n, o, ox, oy, oe), dtype=np.result_type(x, weight))
    for k in np.ndindex(*weight.shape[2:]):
        sl = xp[(slice(None), slice(None), *_tap_slices(k, (ox, oy, oe), s, d))]
        y += np.einsum("ncxye,oc->noxye", sl, weight[(slice(None), slice(None), *k)])
    if bias is not None:
        y += np.asarray(bias)[None, :, None, None, None]
    return y


def conv3d_grad_input(
    grad_output: np.ndarray,
    weight: np.ndarray,
    input_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> np.ndarray:
    """Reference gradient of conv3d with respect to x (the transposed convolution of grad_output).

    Args:
        grad_output: (N, O, OX, OY, OE).
        weight: (O, C, KX, KY, KE).
        input_shape: (N, C, X, Y, E) of x.

    Returns:
        (N, C, X, Y, E) gradient.
    """
    gy = np.asarray(grad_output)
    weight = np.asarray(weight)
    s, p, d = _triple(stride), _triple(padding), _triple(dilation)
    n, c = int(input_shape[0]), int(input_shape[1])
    sp = [int(input_shape[2 + a]) + 2 * p[a] for a in range(3)]
    gxp = np.zeros((n, c, *sp), dtype=np.result_type(gy, weight))
    for k in np.ndindex(*weight.shape[2:]):
        idx = (slice(None), slice(None), *_tap_slices(k, gy.shape[2:], s, d))
        gxp[idx] += np.einsum("noxye,oc->ncxye", gy, weight[(slice(None), slice(None), *k)])
    return np.ascontiguousarray(
        gxp[:, :, p[0] : p[0] + input_shape[2], p[1] : p[1] + input_shape[3], p[2] : p[2] + input_shape[4]]
    )


def conv3d_grad_weight(
    x: np.ndarray,
    grad_output: np.ndarray,
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> np.ndarray:
    """Reference gradient of conv3d with respect to the weight.

    Args:
        x: (N, C, X, Y, E) input.
        grad_output: (N, O, OX, OY, OE).
        weight_shape: (O, C, KX, KY, KE).

    Returns:
        (O, C, KX, KY, KE) gradient.
    """
    x = np.asarray(x)
    gy = np.asarray(grad_output)
    s, p, d = _triple(stride), _triple(padding), _triple(dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1]), (p[2], p[2])))
    gw = np.zeros(tuple(int(v) for v in weight_shape), dtype=np.result_type(x, gy))
    for k in np.ndindex(*gw.shape[2:]):
        sl = xp[(slice(None), slice(None), *_tap_slices(k, gy.shape[2:], s, d))]
        gw[(slice(None), slice(None), *k)] = np.einsum("noxye,ncxye->oc", gy, sl)
    return gw
