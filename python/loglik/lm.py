"""Language-model log-likelihoods without materialising the logits: fused linear log-probs, cross-entropy, entropy.

Per token i with hidden state h_i [D], output head W [V, D] (optional bias b [V]) and target t_i::

    x_i = h_i @ W^T + b                         raw logits [V] (only ever a chunk of rows at a time)
    y_i = softcap * tanh(x_i / softcap)         only when softcap is given
    z_i = y_i / temperature_i                   temperature: a float or one value per token (not differentiated)
    lse_i = log sum_v exp(z_iv),   logprob_i = z_i[t_i] - lse_i,   entropy_i = lse_i - sum_v softmax(z_i)_v z_iv
    ce_i = w_i * ((1 - eps) * (-logprob_i) + eps * (lse_i - mean_v z_iv) + z_loss * lse_i^2)

Tokens whose target is ``ignore_index`` get logprob 0, entropy 0, loss 0 and contribute no gradient (their lse is
still the true log-sum-exp). ``reduction="mean"`` divides the (weighted) sum by the number of non-ignored tokens;
when every token is ignored it returns 0 with zero gradients, never NaN.

How it runs (``impl``):

- ``"cpu"`` (default for CPU tensors): rows are processed in chunks of ``chunk_size`` tokens. For each chunk the
  logits ``h_chunk @ W^T`` come from torch's own GEMM (oneDNN/MKL, AMX for bfloat16) into one reused buffer, then a
  C++ pass (``loglik._C.lm_chunk_*``: OpenMP over rows, AVX-512/AVX2 exp, GIL released) computes the row statistics
  and, for a scalar loss (mean/sum), writes the softmax gradient into the same buffer, which two more GEMMs turn into
  ``grad_hidden`` (chunk rows) and ``grad_weight`` (accumulated in float32). So the backward of a scalar loss costs
  nothing but a scale, and the peak extra memory is one ``chunk_size x V`` float32 buffer (128 MiB by default).
  Per-token outputs (``linear_logprobs``, ``reduction="none"``) recompute the chunks in their backward instead.
- ``"triton"`` (default for CUDA tensors): the fused Triton kernels of :mod:`loglik.kernels.lm` (the logits tile
  never leaves registers). Runs on CPU under ``TRITON_INTERPRET=1`` for tests.
- ``"reference"``: :mod:`loglik.reference.lm` (materialises the logits; float64-capable; for checking).

Internal per-chunk helpers (shared with the vocabulary-parallel code, documented for reuse):

- :func:`_chunk_stats` (logits chunk -> per-row statistics [rows, 5] = (max m, sumexp s = sum exp(z - m), target
  logit, sum of logits, sum exp(z - m) (z - m))), exact to merge across vocabulary slices with
  :func:`_combine_stats`, and turned into (lse, E[z], target logit) by :func:`_finalize_stats`.
- :func:`_chunk_grad` writes dL/dx for a chunk from per-row coefficients (see :func:`_ce_coef`,
  :func:`_logprob_coef`): ``dL/dz_j = p_j (a0 + 2 zl lse + c (z_j - E[z])) + b [j == t] + g``.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Any

import numpy as np

from . import _backend
from ._checks import check_bool, check_choice

__all__ = ["linear_logprobs", "linear_cross_entropy", "logprobs_from_logits", "sequence_logprobs"]

# torch, cached on first use as a plain module global (torch.compile traces a global read, not an import). When torch
# is already imported by the time loglik is, pick it up now (this imports nothing).
_TORCH: Any = sys.modules.get("torch")


def _torch() -> Any:
    global _TORCH
    if _TORCH is None:
        _TORCH = _backend.torch()
    return _TORCH


# Default size of the one logits buffer a CPU chunk uses (bytes); rows = this / (4 * V), at least 8.
_CHUNK_BYTES = 128 * 2**20
_IMPLS = ("auto", "cpu", "triton", "reference")


# ----------------------------------------------------------------------------------------------------------------
# Per-chunk reductions (CPU: C++ kernels; other devices: the same formulas in torch).


def _compute_dtype(dtype: Any) -> Any:
    torch = _torch()
    return torch.float64 if dtype == torch.float64 else torch.float32


def _np(t: Any) -> np.ndarray:
    """Zero-copy numpy view of a contiguous CPU tensor (writes through)."""
    return t.detach().numpy()


def _use_c(t: Any) -> bool:
    torch = _torch()
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and _backend.has_compiled()


def _inv_temp_args(inv_temp: Any, dtype: Any) -> tuple[Any, float]:
    """(per-row tensor or None, scalar) for the kernels."""
    if isinstance(inv_temp, numbers.Real):
        return None, float(inv_temp)
    return inv_temp.to(dtype).contiguous(), 1.0


def _transform_torch(x: Any, inv_temp: Any, softcap: float | None) -> Any:
    torch = _torch()
    z = x if softcap is None else softcap * torch.tanh(x / softcap)
    if isinstance(inv_temp, numbers.Real):
        return z * inv_temp if inv_temp != 1.0 else z
    return z * inv_temp[:, None]


def _chunk_stats(
    logits: Any,
    targets: Any,
    *,
    vocab_start: int = 0,
    ignore_index: int = -100,
    inv_temp: Any = 1.0,
    softcap: float | None = None,
    in_place: bool = False,
    transformed: bool = False,
) -> Any:
    """Per-row statistics of a logits chunk (one vocabulary slice ``[vocab_start, vocab_start + Vc)``).

    Args:
        logits: [rows, Vc] raw logits (or already-transformed ones with ``transformed=True``).
        targets: [rows] int64 global vocabulary ids (``ignore_index`` rows: stats of the row, no target).
        vocab_start: global id of column 0 of this slice.
        ignore_index: target value of ignored rows.
        inv_temp: 1/temperature, a float or a [rows] tensor.
        softcap: optional cap applied before the temperature.
        in_place: store the transformed logits into ``logits`` (CPU float32/float64 contiguous only), so that a
            following :func:`_chunk_grad` can pass ``transformed=True`` and skip the tanh.
        transformed: ``logits`` already hold z.

    Returns:
        [rows, 5] in the compute dtype (float32, float64 for float64): max m, s = sum exp(z - m), target logit (0
        when the target is outside the slice), sum_j z_j, sum exp(z - m) (z - m).
    """
    torch = _torch()
    rows = logits.shape[0]
    cdt = _compute_dtype(logits.dtype)
    if _use_c(logits) and logits.is_contiguous():
        stats = torch.empty(rows, 5, dtype=cdt)
        itr, its = _inv_temp_args(inv_temp, cdt)
        x = _np(logits)
        _backend.C().lm_chunk_stats(
            x, x if in_place else None, _np(targets.contiguous()), int(vocab_start), int(ignore_index),
            None if itr is None else _np(itr), its, float(softcap or 0.0), not transformed, _np(stats),
        )  # fmt: skip
        return stats
    z = logits.to(cdt)
    if not transformed:
        z = _transform_torch(z, inv_temp, softcap)
    m = z.max(dim=1).values
    d = z - m[:, None]
    e = torch.exp(d)
    local = targets - vocab_start
    inside = (local >= 0) & (local < z.shape[1]) & (targets != ignore_index)
    zt = torch.gather(z, 1, local.clamp(0, z.shape[1] - 1)[:, None])[:, 0]
    zt = torch.where(inside, zt, torch.zeros_like(zt))
    stats = torch.stack([m, e.sum(1), zt, z.sum(1), (e * d).sum(1)], dim=1)
    if in_place and not transformed and logits.dtype == cdt:
        logits.copy_(z)
    return stats


def _combine_stats(a: Any, b: Any) -> Any:
    """Merge the statistics of two vocabulary slices of the same rows (exact, associative)."""
    torch = _torch()
    m = torch.maximum(a[:, 0], b[:, 0])
    ea, eb = torch.exp(a[:, 0] - m), torch.exp(b[:, 0] - m)
    s = a[:, 1] * ea + b[:, 1] * eb
    se = ea * (a[:, 4] + a[:, 1] * (a[:, 0] - m)) + eb * (b[:, 4] + b[:, 1] * (b[:, 0] - m))
    return torch.stack([m, s, a[:, 2] + b[:, 2], a[:, 3] + b[:, 3], se], dim=1)


def _finalize_stats(stats: Any) -> tuple[Any, Any, Any]:
    """(lse, E_p[z], target logit) per row from merged statistics."""
    torch = _torch()
    lse = stats[:, 0] + torch.log(stats[:, 1])
    ez = stats[:, 0] + stats[:, 4] / stats[:, 1]
    return lse, ez, stats[:, 2]


def _ce_coef(
    weights: Any, scale: Any, label_smoothing: float, z_loss: float, vocab_size: int, valid: Any, dtype: Any
) -> Any:
    """Gradient coefficients [rows, 5] of ``scale * w * ce`` (scale: float or [rows] upstream gradient)."""
    torch = _torch()
    w = valid.to(dtype) if weights is None else weights.to(dtype) * valid.to(dtype)
    w = w * scale
    eps = float(label_smoothing)
    zero = torch.zeros_like(w)
    return torch.stack([w, w * float(z_loss), -(1.0 - eps) * w, zero, (-eps / vocab_size) * w], dim=1).contiguous()


def _logprob_coef(g_lp: Any, g_ent: Any, g_lse: Any, g_meanz: Any, vocab_size: int, valid: Any) -> Any:
    """Gradient coefficients [rows, 5] of ``sum(g_lp*logprob + g_ent*entropy + g_lse*lse + g_meanz*mean_z)``.

    Ignored rows get zero coefficients for logprob/entropy (those outputs are constant 0 there); lse and mean_z are
    real functions of the logits on every row, but the kernels skip ignored rows' gradients, matching the Triton
    kernels (documented: ignored tokens contribute no gradient).
    """
    torch = _torch()
    v = valid.to(g_lp.dtype)
    g_lp, g_ent, g_lse, g_meanz = g_lp * v, g_ent * v, g_lse * v, g_meanz * v
    zero = torch.zeros_like(g_lp)
    return torch.stack([g_lse - g_lp, zero, g_lp, -g_ent, g_meanz / vocab_size], dim=1).contiguous()


def _chunk_grad(
    logits: Any,
    targets: Any,
    lse: Any,
    ez: Any,
    coef: Any,
    *,
    vocab_start: int = 0,
    ignore_index: int = -100,
    inv_temp: Any = 1.0,
    softcap: float | None = None,
    transformed: bool = False,
    out: Any = None,
) -> Any:
    """dL/dx of a logits chunk (slice) given the rows' global lse and E[z] and coefficients [rows, 5].

    ``out`` may be ``logits`` itself (in place). Returns the gradient in the compute dtype.
    """
    torch = _torch()
    cdt = _compute_dtype(logits.dtype)
    if _use_c(logits) and logits.is_contiguous() and (out is None or (out.dtype == cdt and out.is_contiguous())):
        dx = torch.empty_like(logits, dtype=cdt) if out is None else out
        itr, its = _inv_temp_args(inv_temp, cdt)
        lse_ez = torch.stack([lse.to(cdt), ez.to(cdt)], dim=1).contiguous()
        _backend.C().lm_chunk_grad(
            _np(logits), _np(dx), _np(targets.contiguous()), int(vocab_start), int(ignore_index),
            None if itr is None else _np(itr), its, float(softcap or 0.0), not transformed, _np(lse_ez),
            _np(coef.to(cdt).contiguous()),
        )  # fmt: skip
        return dx
    dx = _chunk_grad_torch(logits, targets, lse, ez, coef, vocab_start=vocab_start, ignore_index=ignore_index,
                           inv_temp=inv_temp, softcap=softcap, transformed=transformed)  # fmt: skip
    if out is not None:
        out.copy_(dx)
        return out
    return dx


def _chunk_grad_torch(
    logits: Any, targets: Any, lse: Any, ez: Any, coef: Any, *, vocab_start: int, ignore_index: int, inv_temp: Any,
    softcap: float | None, transformed: bool,
) -> Any:  # fmt: skip
    """The formula of :func:`_chunk_grad` in plain torch (any device; materialises temporaries of the chunk)."""
    torch = _torch()
    cdt = _compute_dtype(logits.dtype)
    x = logits.to(cdt)
    z = x if transformed else _transform_torch(x, inv_temp, softcap)
    coef = coef.to(cdt)
    p = torch.exp(z - lse.to(cdt)[:, None])
    a = coef[:, 0] + 2.0 * coef[:, 1] * lse.to(cdt)
    dz = p * (a[:, None] + coef[:, 3:4] * (z - ez.to(cdt)[:, None])) + coef[:, 4:5]
    local = targets - vocab_start
    inside = (local >= 0) & (local < z.shape[1]) & (targets != ignore_index)
    onehot = torch.zeros_like(dz)
    onehot.scatter_(1, local.clamp(0, z.shape[1] - 1)[:, None], torch.where(inside, coef[:, 2], 0.0)[:, None])
    dz = dz + onehot
    dz = torch.where((targets != ignore_index)[:, None], dz, torch.zeros_like(dz))
    if isinstance(inv_temp, numbers.Real):
        it = torch.full_like(lse, float(inv_temp), dtype=cdt)
    else:
        it = inv_temp.to(cdt)
    deriv = it[:, None] if softcap is None else it[:, None] * (1.0 - (z / (it[:, None] * softcap)) ** 2)
    return dz * deriv


def _chunk_fused(buf: Any, targets: Any, *, ignore_index: int, inv_temp: Any, softcap: float | None, coef: Any) -> Any:
    """Stats of raw logits in ``buf`` and, when ``coef`` is given, the gradient written over ``buf`` (single shard)."""
    torch = _torch()
    cdt = buf.dtype
    rows = buf.shape[0]
    if _use_c(buf) and buf.is_contiguous():
        stats = torch.empty(rows, 5, dtype=cdt)
        itr, its = _inv_temp_args(inv_temp, cdt)
        c = coef if coef is not None else torch.zeros(rows, 5, dtype=cdt)
        _backend.C().lm_chunk_fused(
            _np(buf), _np(targets.contiguous()), int(ignore_index), None if itr is None else _np(itr), its,
            float(softcap or 0.0), _np(stats), _np(c.to(cdt).contiguous()), coef is not None,
        )  # fmt: skip
        return stats
    stats = _chunk_stats(buf, targets, ignore_index=ignore_index, inv_temp=inv_temp, softcap=softcap, in_place=True)
    if coef is not None:
        lse, ez, _ = _finalize_stats(stats)
        _chunk_grad(buf, targets, lse, ez, coef, ignore_index=ignore_index, inv_temp=inv_temp, softcap=softcap,
                    transformed=True, out=buf)  # fmt: skip
    return stats


# ----------------------------------------------------------------------------------------------------------------
# The chunked driver (CPU with the C++ kernels; any torch device with the torch formulas).


def _auto_chunk(n: int, v: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, min(int(chunk_size), max(n, 1)))
    rows = max(8, _CHUNK_BYTES // (4 * max(v, 1)))
    if rows >= 64:
        rows -= rows % 16
    return max(1, min(rows, max(n, 1)))


def _rows_of(t: Any, i0: int, i1: int) -> Any:
    return t if isinstance(t, numbers.Real) else t[i0:i1]


def _linear_pass(
    hidden: Any,
    weight: Any,
    bias: Any,
    targets: Any,
    *,
    inv_temp: Any,
    softcap: float | None,
    ignore_index: int,
    chunk_size: int | None,
    coef: Any = None,
    lse_ez: Any = None,
    needs: tuple[bool, bool, bool] = (True, True, True),
) -> dict[str, Any]:
    """One sweep over token chunks of ``hidden [N, D] @ weight [V, D]^T``.

    - ``coef is None``: forward only; returns {"stats": [N, 5]}.
    - ``coef`` given, ``lse_ez`` None: fused forward + gradient (coef must not depend on the stats except through
      the z-loss term); returns stats and the gradients.
    - ``coef`` and ``lse_ez`` ([N, 2]) given: backward by recomputation; returns the gradients.

    Gradients: grad_hidden [N, D] (hidden dtype), grad_weight [V, D] (float32/float64 accumulator), grad_bias [V].
    """
    torch = _torch()
    n, d = hidden.shape
    v = weight.shape[0]
    cdt = _compute_dtype(hidden.dtype)
    low = hidden.dtype != cdt
    chunk = _auto_chunk(n, v, chunk_size)
    dev = hidden.device
    want_grad = coef is not None
    out: dict[str, Any] = {}
    stats: Any = torch.empty(n, 5, dtype=cdt, device=dev) if lse_ez is None else None
    gh = torch.empty(n, d, dtype=hidden.dtype, device=dev) if want_grad and needs[0] else None
    gw: Any = None
    gw_started = False
    if want_grad and needs[1]:
        gw = torch.empty(v, d, dtype=cdt, device=dev) if not low else torch.zeros(v, d, dtype=cdt, device=dev)
    gb = torch.zeros(v, dtype=cdt, device=dev) if want_grad and needs[2] and bias is not None else None
    buf = torch.empty(min(chunk, n), v, dtype=cdt, device=dev)
    lbuf: Any = torch.empty(min(chunk, n), v, dtype=hidden.dtype, device=dev) if low else None
    wt = weight.t()
    vb = 8192  # vocabulary block of the low-precision weight-gradient GEMM (its bf16 output is added in float32)
    tmp: Any = torch.empty(min(vb, v), d, dtype=hidden.dtype, device=dev) if (low and gw is not None) else None
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        r = i1 - i0
        hc = hidden[i0:i1]
        tc = targets[i0:i1]
        itc = _rows_of(inv_temp, i0, i1)
        b = buf[:r]
        if low:
            lb = lbuf[:r]
            if bias is None:
                torch.mm(hc, wt, out=lb)
            else:
                torch.addmm(bias, hc, wt, out=lb)
            b.copy_(lb)
        elif bias is None:
            torch.mm(hc, wt, out=b)
        else:
            torch.addmm(bias.to(cdt), hc, wt, out=b)
        if lse_ez is None:
            st = _chunk_fused(b, tc, ignore_index=ignore_index, inv_temp=itc, softcap=softcap,
                              coef=None if coef is None else coef[i0:i1])  # fmt: skip
            stats[i0:i1] = st
        else:
            _chunk_grad(b, tc, lse_ez[i0:i1, 0], lse_ez[i0:i1, 1], coef[i0:i1], ignore_index=ignore_index,
                        inv_temp=itc, softcap=softcap, out=b)  # fmt: skip
        if not want_grad:
            continue
        g = b
        if low:
            lbuf[:r].copy_(b)
            g = lbuf[:r]
        if gh is not None:
            torch.mm(g, weight, out=gh[i0:i1])
        if gw is not None:
            if not low:
                if gw_started:
                    gw.addmm_(g.t(), hc)
                else:
                    torch.mm(g.t(), hc, out=gw)
                    gw_started = True
            else:
                for v0 in range(0, v, vb):
                    v1 = min(v, v0 + vb)
                    t = tmp[: v1 - v0]
                    torch.mm(g[:, v0:v1].t(), hc, out=t)
                    gw[v0:v1] += t
        if gb is not None:
            gb += b.sum(0)
    if gw is not None and not gw_started and not low:
        gw.zero_()  # n == 0
    if stats is not None:
        out["stats"] = stats
    out.update(grad_hidden=gh, grad_weight=gw, grad_bias=gb)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Validation.


def _is_float_tensor(torch: Any, x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _as_tensor(torch: Any, x: Any, name: str) -> tuple[Any, bool]:
    """A torch tensor from a tensor or numpy array; the flag says it came from numpy."""
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:
            # torch warns about every read-only array (an error under -W error); loglik never writes its inputs, so
            # share the memory and silence that one warning instead of copying
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(x), True
        return torch.from_numpy(x), True
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_finite(torch: Any, x: Any, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def _check_real(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or v > high or (low_open and v == low):
        raise ValueError(f"{name}: expected a finite number in {'(' if low_open else '['}{low}, {high}], got {value!r}")
    return v


def _prepare(
    hidden: Any,
    weight: Any,
    targets: Any,
    bias: Any,
    temperature: Any,
    softcap: Any,
    ignore_index: Any,
    chunk_size: Any,
    impl: str,
) -> dict[str, Any]:
    """Validate the common arguments; returns flattened 2-D views and normalised settings."""
    torch = _torch()
    hidden, from_np = _as_tensor(torch, hidden, "hidden")
    weight, _ = _as_tensor(torch, weight, "weight")
    targets, _ = _as_tensor(torch, targets, "targets")
    if not _is_float_tensor(torch, hidden):
        raise TypeError(f"hidden: expected a float16/bfloat16/float32/float64 tensor, got {hidden.dtype}")
    if hidden.ndim < 1:
        raise ValueError("hidden: expected shape [..., D], got a 0-D tensor")
    if hidden.shape[-1] < 1:
        raise ValueError(f"hidden: expected shape [..., D] with D >= 1, got {tuple(hidden.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight: expected dtype {hidden.dtype} (same as hidden), got {weight.dtype}")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight: expected shape [V, {hidden.shape[-1]}], got {tuple(weight.shape)}")
    if weight.shape[0] < 1:
        raise ValueError("weight: the vocabulary must have at least one entry")
    if weight.device != hidden.device:
        raise ValueError(f"weight: expected device {hidden.device}, got {weight.device}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"targets: expected an integer tensor, got {targets.dtype}")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"targets: expected shape {tuple(hidden.shape[:-1])}, got {tuple(targets.shape)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
    if not -(2**63) <= int(ignore_index) < 2**63:  # compared with int64 targets (was an OverflowError)
        raise ValueError(f"ignore_index: expected an int64 value, got {ignore_index}")
    check_choice(impl, "impl", _IMPLS)
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
            raise TypeError(f"chunk_size: expected an int, got {chunk_size!r}")
        if not 1 <= int(chunk_size) < 2**63:  # passed to the custom ops as an int64
            raise ValueError(f"chunk_size: expected an int in [1, 2**63), got {chunk_size}")
    v = weight.shape[0]
    d = hidden.shape[-1]
    compiling = _compiling(torch)
    h2 = hidden.reshape(-1, d)
    t1 = targets.reshape(-1).to(device=hidden.device, dtype=torch.int64)
    if not compiling and t1.numel():
        bad = (t1 != int(ignore_index)) & ((t1 < 0) | (t1 >= v))
        if bool(bad.any()):
            raise ValueError(f"targets: values must be in [0, {v}) or equal ignore_index={ignore_index}")
    if bias is not None:
        bias, _ = _as_tensor(torch, bias, "bias")
        if not _is_float_tensor(torch, bias):
            raise TypeError(f"bias: expected a float tensor, got {bias.dtype}")
        if tuple(bias.shape) != (v,):
            raise ValueError(f"bias: expected shape ({v},), got {tuple(bias.shape)}")
        bias = bias.to(device=hidden.device, dtype=hidden.dtype)
        if not compiling:
            _check_finite(torch, bias, "bias")
    cdt = _compute_dtype(hidden.dtype)
    if isinstance(temperature, (numbers.Real, np.floating)) and not isinstance(temperature, bool):
        t = _check_real(temperature, "temperature", 0.0, float("inf"), low_open=True)
        inv_temp: Any = 1.0 / t
        temp_rows = None
    else:
        temperature, _ = _as_tensor(torch, temperature, "temperature")
        if tuple(temperature.shape) != tuple(hidden.shape[:-1]):
            raise ValueError(
                f"temperature: expected a float or a tensor of shape {tuple(hidden.shape[:-1])}, "
                f"got {tuple(temperature.shape)}"
            )
        temp_rows = temperature.reshape(-1).to(device=hidden.device, dtype=cdt).detach()
        if not compiling and temp_rows.numel() and not bool(((temp_rows > 0) & torch.isfinite(temp_rows)).all()):
            raise ValueError("temperature: values must be finite and > 0")
        inv_temp = 1.0 / temp_rows
    cap = None if softcap is None else _check_real(softcap, "softcap", 0.0, float("inf"), low_open=True)
    return {
        "hidden": hidden, "h2": h2, "weight": weight, "targets": targets, "t1": t1, "bias": bias,
        "inv_temp": inv_temp, "temp_rows": temp_rows, "softcap": cap, "ignore_index": int(ignore_index),
        "chunk_size": None if chunk_size is None else int(chunk_size), "from_numpy": from_np, "V": v,
        "impl": _resolve_impl(impl, hidden),
    }  # fmt: skip


def _compiling(torch: Any) -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - old torch
        return False


def _resolve_impl(impl: str, hidden: Any) -> str:
    if impl != "auto":
        if impl == "triton" and not _backend.has_triton():
            raise ValueError("impl: 'triton' needs the triton package")
        return impl
    if hidden.device.type == "cuda" and _backend.has_triton():
        return "triton"
    return "cpu"


def _post_check(torch: Any, lse: Any, p: dict[str, Any], *extras: Any) -> None:
    """Non-finite log-sum-exp means non-finite inputs: name the argument (cheap: checks N values first). ``extras``
    (per-token log-probs, entropies) are checked too: finite logits of huge magnitude can overflow those alone."""
    if _compiling(torch) or all(t.numel() == 0 or bool(torch.isfinite(t).all()) for t in (lse, *extras)):
        return
    _check_finite(torch, p["hidden"], "hidden")
    _check_finite(torch, p["weight"], "weight")
    raise ValueError("hidden/weight: the logits overflow to inf (values too large for the dtype)")


def _post_check_logits(torch: Any, *outs: Any) -> None:
    """logprobs_from_logits: finite logits of huge magnitude (~1e38 in float32) can overflow lse, log-probs or
    entropies: name the argument instead of returning inf."""
    if _compiling(torch) or all(t.numel() == 0 or bool(torch.isfinite(t).all()) for t in outs):
        return
    raise ValueError("logits: values too large for the computation (log-sum-exp, log-probs or entropy overflow)")


def _temp_arg(p: dict[str, Any]) -> tuple[Any, float]:
    """(per-row temperature tensor or None, scalar temperature) for the custom ops."""
    if p["temp_rows"] is not None:
        return p["temp_rows"], 1.0
    return None, 1.0 / float(p["inv_temp"])


def _back_to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy()


# ----------------------------------------------------------------------------------------------------------------
# Public API.


def linear_logprobs(
    hidden: Any,
    weight: Any,
    targets: Any,
    *,
    bias: Any = None,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    return_entropy: bool = False,
    return_lse: bool = False,
    process_group: Any = None,
    vocab_start: int | None = None,
    chunk_size: int | None = None,
    impl: str = "auto",
) -> Any:
    """Per-token log p(target) under a linear output head, without forming the [N, V] logits.

    Args:
        hidden: [..., D] float16/bfloat16/float32/float64 tensor (or numpy array) of hidden states.
        weight: [V, D] output head, same dtype and device as hidden (with ``process_group``: this rank's
            vocabulary shard [V_r, D]).
        targets: [...] integer target ids in [0, V) or ``ignore_index``.
        bias: optional [V] bias.
        temperature: float > 0, or a tensor of targets' shape (one temperature per token; not differentiated).
        softcap: optional c > 0: logits become c * tanh(logits / c) before the temperature.
        ignore_index: target value of ignored tokens (log-prob 0, entropy 0, no gradient; lse still returned).
        return_entropy: also return the entropy of each token's distribution (differentiable).
        return_lse: also return each token's log-sum-exp (differentiable).
        process_group: a ``torch.distributed`` group over which ``weight`` is sharded by vocabulary; then
            ``vocab_start`` (this rank's first vocabulary id) is required and the call goes to
            :func:`loglik.lm_distributed.linear_logprobs_vocab_parallel`.
        vocab_start: see ``process_group``.
        chunk_size: tokens per chunk on the CPU path (default: 128 MiB of float32 logits).
        impl: "auto" (CPU: "cpu", CUDA: "triton"), "cpu", "triton" or "reference".

    Returns:
        logprobs [...] (float32; float64 for float64 inputs). With return_entropy and/or return_lse, a tuple
        ``(logprobs, entropy, lse)`` holding only the requested extras, in that order. Differentiable w.r.t.
        hidden, weight and bias. numpy inputs give numpy outputs (no autograd).
    """
    return_entropy = check_bool(return_entropy, "return_entropy")
    return_lse = check_bool(return_lse, "return_lse")
    if process_group is not None:
        return _vocab_parallel("linear_logprobs_vocab_parallel", hidden, weight, targets, vocab_start, process_group,
                               bias=bias, temperature=temperature, softcap=softcap, ignore_index=ignore_index,
                               return_entropy=return_entropy, return_lse=return_lse)  # fmt: skip
    torch = _torch()
    p = _prepare(hidden, weight, targets, bias, temperature, softcap, ignore_index, chunk_size, impl)
    from .autograd import linear_logprobs_op

    lp, ent, lse, _ = linear_logprobs_op(p, need_entropy=bool(return_entropy))
    _post_check(torch, lse, p, lp, *([ent] if return_entropy else []))
    shape = tuple(p["targets"].shape)
    outs = [lp.reshape(shape)]
    if return_entropy:
        outs.append(ent.reshape(shape))
    if return_lse:
        outs.append(lse.reshape(shape))
    if p["from_numpy"]:
        outs = [_back_to_numpy(o) for o in outs]
    return outs[0] if len(outs) == 1 else tuple(outs)


def linear_cross_entropy(
    hidden: Any,
    weight: Any,
    targets: Any,
    *,
    bias: Any = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: Any = 1.0,
    weights: Any = None,
    process_group: Any = None,
    vocab_start: int | None = None,
    chunk_size: int | None = None,
    impl: str = "auto",
) -> Any:
    """Cross-entropy of a linear output head, with the gradients computed during the forward for mean/sum.

    Per token: ``loss = w * ((1 - eps) * (lse - z[t]) + eps * (lse - mean_v z_v) + z_loss * lse^2)`` where z are
    the (softcapped, temperature-scaled) logits, eps = label_smoothing and w the optional per-token weight.

    Args:
        hidden: [..., D] float16/bfloat16/float32/float64 tensor (or numpy array).
        weight: [V, D] output head (with ``process_group``: this rank's vocabulary shard).
        targets: [...] integer ids in [0, V) or ``ignore_index``.
        bias: optional [V].
        reduction: "mean" (weighted sum / number of non-ignored tokens; 0 with zero gradients when all tokens are
            ignored, never NaN), "sum", or "none" (per-token losses of targets' shape, 0 at ignored tokens).
        ignore_index: target value of ignored tokens.
        label_smoothing: eps in [0, 1] (same convention as ``torch.nn.functional.cross_entropy``).
        z_loss: coefficient >= 0 of lse^2 (PaLM's auxiliary loss), added to each token's loss.
        softcap: optional c > 0 (logits -> c tanh(logits / c)).
        temperature: float > 0 or per-token tensor of targets' shape (not differentiated).
        weights: optional per-token weights of targets' shape; may be negative (unlikelihood / gradient ascent).
            Not differentiated.
        process_group, vocab_start: vocabulary-parallel head, see :func:`linear_logprobs`.
        chunk_size: tokens per chunk on the CPU path.
        impl: "auto", "cpu", "triton" or "reference".

    Returns:
        A scalar (mean/sum) or a [...] tensor (none); float32 (float64 for float64 inputs). Differentiable w.r.t.
        hidden, weight and bias. With mean/sum on the CPU path the backward only scales gradients computed during
        the forward (so it can run once per forward).
    """
    check_choice(reduction, "reduction", ("mean", "sum", "none"))
    eps = _check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = _check_real(z_loss, "z_loss", 0.0, float("inf"))
    if process_group is not None:
        return _vocab_parallel("linear_cross_entropy_vocab_parallel", hidden, weight, targets, vocab_start,
                               process_group, bias=bias, reduction=reduction, ignore_index=ignore_index,
                               label_smoothing=eps, z_loss=zl, softcap=softcap, temperature=temperature,
                               weights=weights)  # fmt: skip
    torch = _torch()
    p = _prepare(hidden, weight, targets, bias, temperature, softcap, ignore_index, chunk_size, impl)
    w = None
    if weights is not None:
        w, _ = _as_tensor(torch, weights, "weights")
        if not _is_float_tensor(torch, w):
            raise TypeError(f"weights: expected a float tensor, got {w.dtype}")
        if tuple(w.shape) != tuple(p["targets"].shape):
            raise ValueError(f"weights: expected shape {tuple(p['targets'].shape)}, got {tuple(w.shape)}")
        w = w.reshape(-1).to(device=p["h2"].device, dtype=_compute_dtype(p["hidden"].dtype)).detach()
        if not _compiling(torch):
            _check_finite(torch, w, "weights")
    from .autograd import cross_entropy_fused_op, linear_logprobs_op

    if eps > 0 and p["impl"] == "triton":
        p["impl"] = "cpu"  # the Triton kernels have no logit-sum output; the chunked torch path handles smoothing
    if reduction != "none" and p["impl"] == "cpu":
        loss, lse = cross_entropy_fused_op(p, w, reduction, eps, zl)
        _post_check(torch, lse, p)
        return _back_to_numpy(loss) if p["from_numpy"] else loss
    # Per-token composition (reduction="none", Triton, reference): autograd flows through the log-prob op.
    lp, _, lse, meanz = linear_logprobs_op(p, need_entropy=False, need_meanz=eps > 0)
    _post_check(torch, lse, p)
    valid = p["t1"] != p["ignore_index"]
    loss = -(1.0 - eps) * lp
    if eps > 0:
        loss = loss + eps * (lse - meanz)
    if zl > 0:
        loss = loss + zl * lse * lse
    if w is not None:
        loss = loss * w
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        out = loss.reshape(tuple(p["targets"].shape))
    elif reduction == "sum":
        out = loss.sum()
    else:
        out = loss.sum() / valid.sum().clamp(min=1).to(loss.dtype)
    return _back_to_numpy(out) if p["from_numpy"] else out


def logprobs_from_logits(
    logits: Any,
    targets: Any,
    *,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    return_entropy: bool = False,
    return_lse: bool = False,
    chunk_size: int | None = None,
    impl: str = "auto",
) -> Any:
    """Per-token log p(target), entropy and log-sum-exp from logits the caller already holds.

    One streaming pass per row (no log_softmax copy of the logits); the backward writes the [..., V] gradient of
    the logits directly.

    Args:
        logits: [..., V] float16/bfloat16/float32/float64 tensor (or numpy array). Never modified.
        targets: [...] integer ids in [0, V) or ``ignore_index``.
        temperature: float > 0 or a per-token tensor of targets' shape (not differentiated).
        softcap: optional c > 0 applied before the temperature.
        ignore_index: target value of ignored tokens (log-prob 0, entropy 0, no gradient).
        return_entropy, return_lse: also return those (differentiable).
        chunk_size: rows upcast at once for 16-bit logits on the CPU path.
        impl: "auto" (CPU: "cpu"; CUDA: the CUDA C++ kernel of csrc/cuda when its library is built, else
            "triton"), "cpu", "triton", "cuda" or "reference".

    Returns:
        logprobs [...] float32 (float64 for float64 logits), or a tuple ``(logprobs, entropy, lse)`` with only the
        requested extras. Differentiable w.r.t. logits.
    """
    return_entropy = check_bool(return_entropy, "return_entropy")
    return_lse = check_bool(return_lse, "return_lse")
    torch = _torch()
    logits, from_np = _as_tensor(torch, logits, "logits")
    if not _is_float_tensor(torch, logits):
        raise TypeError(f"logits: expected a float16/bfloat16/float32/float64 tensor, got {logits.dtype}")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: expected shape [..., V] with V >= 1, got {tuple(logits.shape)}")
    v = logits.shape[-1]
    check_choice(impl, "impl", (*_IMPLS, "cuda"))
    # Reuse the common validation with a stand-in weight of the right width (no data is touched).
    p = _prepare(logits, logits.new_empty((1,)).as_strided((v, v), (0, 0)), targets, None, temperature, softcap,
                 ignore_index, chunk_size, "auto" if impl == "cuda" else impl)  # fmt: skip
    if impl == "cuda" or (impl == "auto" and logits.device.type == "cuda" and _cuda_ext_available()):
        if not _cuda_ext_available():
            raise ValueError("impl: 'cuda' needs the compiled loglik CUDA library (see loglik._cuda_ext.build)")
        p["impl"] = "cuda"
    if not _compiling(torch):
        _check_finite(torch, logits, "logits")
    from .autograd import logits_logprobs_op

    lp, ent, lse = logits_logprobs_op(p, logits.reshape(-1, v), need_entropy=bool(return_entropy))
    _post_check_logits(torch, lse, lp, *([ent] if return_entropy else []))
    shape = tuple(p["targets"].shape)
    outs = [lp.reshape(shape)]
    if return_entropy:
        outs.append(ent.reshape(shape))
    if return_lse:
        outs.append(lse.reshape(shape))
    if from_np:
        outs = [_back_to_numpy(o) for o in outs]
    return outs[0] if len(outs) == 1 else tuple(outs)


def sequence_logprobs(
    token_logprobs: Any, mask_or_segment_ids: Any, *, average: bool = False, num_segments: int | None = None
) -> Any:
    """Sum (or average) token log-probs per sequence, for padded or packed batches.

    Args:
        token_logprobs: [B, T] (or [T]) float tensor / numpy array of per-token log-probs.
        mask_or_segment_ids: same shape. A **bool** (or floating 0/1) tensor is a padding mask: True/1 marks valid
            tokens, one sequence per row. An **integer** tensor holds packed segment ids: tokens with id k >= 0
            belong to sequence k of their row, negative ids are padding. Ids must be < T (a row of T tokens holds
            at most T sequences) unless ``num_segments`` is given.
        average: divide each sum by the sequence's number of valid tokens.
        num_segments: segment ids only: the number of output columns S (ids must be < S). Default: max id + 1.
            Needed for ids >= T (e.g. ids numbered across the whole batch); the result is [B, S], so a huge S
            is a huge allocation that the caller asked for explicitly.

    Returns:
        Mask input: [B] (or a scalar for 1-D input). Segment ids: [B, S] (or [S]) with S = max id + 1 (or
        ``num_segments``).
        With ``average=False``: the sums; a sequence without valid tokens gives 0.
        With ``average=True``: a tuple ``(mean, valid)``: ``mean`` is 0 where the sequence has no valid token and
        ``valid`` (bool, same shape) reports which sequences had at least one. Never NaN. Differentiable w.r.t.
        token_logprobs. numpy in, numpy out.

    Raises:
        ValueError: shapes differ, non-finite token_logprobs, a floating mask other than 0/1, a segment id >= T
            (or >= num_segments).
        TypeError: non-float token_logprobs, a mask/ids tensor that is neither bool, float nor integer, a non-bool
            ``average``, a non-int ``num_segments``.
    """
    torch = _torch()
    average = check_bool(average, "average")
    if num_segments is not None:
        if isinstance(num_segments, bool) or not isinstance(num_segments, numbers.Integral):
            raise TypeError(f"num_segments: expected an int or None, got {num_segments!r}")
        if num_segments < 0:
            raise ValueError(f"num_segments: expected >= 0, got {num_segments}")
        num_segments = int(num_segments)
    lp, from_np = _as_tensor(torch, token_logprobs, "token_logprobs")
    ids, _ = _as_tensor(torch, mask_or_segment_ids, "mask_or_segment_ids")
    if not _is_float_tensor(torch, lp):
        raise TypeError(f"token_logprobs: expected a float tensor, got {lp.dtype}")
    if tuple(ids.shape) != tuple(lp.shape):
        raise ValueError(f"mask_or_segment_ids: expected shape {tuple(lp.shape)}, got {tuple(ids.shape)}")
    if lp.ndim not in (1, 2):
        raise ValueError(f"token_logprobs: expected shape [B, T] or [T], got {tuple(lp.shape)}")
    if not _compiling(torch):
        _check_finite(torch, lp, "token_logprobs")
    squeeze = lp.ndim == 1
    lp2 = lp[None] if squeeze else lp
    ids2 = (ids[None] if squeeze else ids).to(lp.device)
    if ids2.dtype == torch.bool or ids2.is_floating_point():
        if num_segments is not None:
            raise ValueError("num_segments: only meaningful with integer segment ids, got a mask")
        if ids2.is_floating_point() and not bool(((ids2 == 0) | (ids2 == 1)).all()):
            raise ValueError("mask_or_segment_ids: a floating mask must hold only 0 and 1")
        m = ids2.to(lp.dtype)
        total = (lp2 * m).sum(-1)
        count = m.sum(-1)
    elif ids2.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        ids2 = ids2.to(torch.int64)
        top = int(ids2.max().item()) if ids2.numel() else -1
        # the result has B x (max id + 1) entries: bound the id so that a stray huge id (a token id, a global
        # document id) is a clear error instead of a multi-gigabyte allocation
        if num_segments is None and top >= ids2.shape[1]:
            raise ValueError(
                f"mask_or_segment_ids: segment id {top} >= T = {ids2.shape[1]} (tokens per row); ids number the "
                "sequences of each row 0, 1, ... Pass num_segments=S for ids in [0, S), or relabel the ids "
                "(e.g. torch.unique(ids, return_inverse=True))"
            )
        if num_segments is not None and top >= num_segments:
            raise ValueError(f"mask_or_segment_ids: segment id {top} >= num_segments = {num_segments}")
        s = max(top + 1, 0) if num_segments is None else num_segments
        valid = ids2 >= 0
        idx = torch.where(valid, ids2, torch.zeros_like(ids2))
        m = valid.to(lp.dtype)
        if s == 0:  # every token is padding (or T == 0): no sequence, an empty [B, 0] result (scatter would fail)
            total, count = (lp2 * m)[:, :0], m[:, :0]
        else:
            total = torch.zeros(lp2.shape[0], s, dtype=lp.dtype, device=lp.device).scatter_add(1, idx, lp2 * m)
            count = torch.zeros(lp2.shape[0], s, dtype=lp.dtype, device=lp.device).scatter_add(1, idx, m)
    else:
        raise TypeError(f"mask_or_segment_ids: expected a bool mask or integer segment ids, got {ids2.dtype}")
    if squeeze:
        total, count = total[0], count[0]
    if not average:
        return _back_to_numpy(total) if from_np else total
    has = count > 0
    mean = torch.where(has, total / count.clamp(min=1), torch.zeros_like(total))
    if from_np:
        return _back_to_numpy(mean), _back_to_numpy(has)
    return mean, has


def _cuda_ext_available() -> bool:
    from . import _cuda_ext

    return bool(_cuda_ext.available())


def _vocab_parallel(
    fn_name: str, hidden: Any, weight: Any, targets: Any, vocab_start: Any, group: Any, **kw: Any
) -> Any:
    if vocab_start is None:
        raise ValueError("vocab_start: required with process_group (the first vocabulary id of this rank's shard)")
    from . import lm_distributed

    fn = getattr(lm_distributed, fn_name)
    return fn(hidden, weight, targets, vocab_start=vocab_start, process_group=group, **kw)


def _register_ops_if_torch_loaded() -> None:
    """Register the loglik:: custom ops now when torch is already imported (cheap), so that a first call made under
    torch.compile finds them registered instead of tracing the registration. Without torch nothing happens (the
    ops are then registered by the first eager call)."""
    if _TORCH is not None:
        from . import autograd

        autograd._get_ops()


_register_ops_if_torch_loaded()
