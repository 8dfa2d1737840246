"""Vocabulary-parallel log-probs and cross-entropy: the output head's weight is sharded by vocabulary rows across a
``torch.distributed`` process group (tensor parallelism), and nothing of size tokens x vocab is ever formed.

Each rank holds ``weight_shard`` = rows ``[vocab_start, vocab_start + V_r)`` of the full [V, D] head and the same
(replicated) ``hidden`` and ``targets``. A rank reduces its shard chunk by chunk (``chunk_size`` rows x
``vocab_chunk_size`` vocabulary entries at a time) to per-token statistics: the max logit m, the sum-exp
s = sum exp(z - m), a = sum exp(z - m) (z - m) for the entropy, the target logit (only the rank that owns the target
has it) and the logit sum (for label smoothing). Two all-reduces merge them: MAX of m, then one SUM of the rescaled
(s, a, target logit, logit sum). The backward recomputes the chunks, forms the local softmax gradient, and
all-reduces grad_hidden (each rank's shard contributes a part); the weight (and bias) gradient of a shard stays local.

Per token (as in :mod:`loglik.lm`): ``z = softcap(hidden @ W^T + b) / temperature`` with softcap(x) = c tanh(x / c),
``logprob = z[target] - lse`` (0 at ignored tokens), ``entropy = lse - sum softmax(z) z`` (0 at ignored tokens).
All accumulation is float32 (float64 for float64 inputs); 16-bit chunks are upcast before their matmuls.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

from . import _backend
from ._checks import check_bool, check_choice

__all__ = ["linear_logprobs_vocab_parallel", "linear_cross_entropy_vocab_parallel"]

_DEFAULT_CHUNK = 512
_DEFAULT_VOCAB_CHUNK = 4096


def _dist() -> Any:
    _backend.torch()
    import torch.distributed as dist

    return dist


def _acc_dtype(dtype: Any) -> Any:
    torch = _backend.torch()
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_logits(
    h: Any, w: Any, b: Any, inv_t: Any, softcap: float | None, acc: Any, keep_y: bool = False
) -> tuple[Any, Any]:
    """(y, z) for one [rows, vocab] chunk: y = softcap(h w^T + b) (pre-temperature), z = y * inv_t.

    Works in place on the one GEMM output; y is None unless keep_y (the softcap backward needs it).
    """
    y = h.to(acc) @ w.to(acc).T
    if b is not None:
        y.add_(b.to(acc))
    if softcap is not None:
        y.div_(softcap).tanh_().mul_(softcap)
    if keep_y:
        return y, y * inv_t[:, None]
    return None, y.mul_(inv_t[:, None])


def _all_reduce(x: Any, op: Any, group: Any) -> Any:
    dist = _dist()
    dist.all_reduce(x, op=op, group=group)
    return x


def _local_stats(
    hidden: Any, weight: Any, bias: Any, local_t: Any, inv_t: Any, softcap: float | None, chunk: int, vchunk: int
) -> tuple[Any, Any, Any, Any, Any]:
    """Per-token (m, s, a, target logit, logit sum) over this rank's shard, chunk by chunk."""
    torch = _backend.torch()
    n, v_r = hidden.shape[0], weight.shape[0]
    acc = _acc_dtype(hidden.dtype)
    kw = dict(device=hidden.device, dtype=acc)
    m = torch.full((n,), float("-inf"), **kw)
    s, a, tz, zsum = (torch.zeros(n, **kw) for _ in range(4))
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        h = hidden[r0:r1]
        mc, sc, ac = m[r0:r1], s[r0:r1], a[r0:r1]
        for c0 in range(0, v_r, vchunk):
            c1 = min(v_r, c0 + vchunk)
            _, z = _chunk_logits(h, weight[c0:c1], None if bias is None else bias[c0:c1], inv_t[r0:r1], softcap, acc)
            zsum[r0:r1] += z.sum(dim=1)
            t = local_t[r0:r1]
            hit = (t >= c0) & (t < c1)
            if bool(hit.any()):
                idx = torch.where(hit, t - c0, torch.zeros_like(t))
                tz[r0:r1] += torch.where(hit, z.gather(1, idx[:, None])[:, 0], torch.zeros_like(mc))
            m_new = torch.maximum(mc, z.max(dim=1).values)
            zc = z.sub_(m_new[:, None])  # in place: two [rows, vocab] temporaries per chunk in all
            p = torch.exp(zc)
            s_tile = p.sum(dim=1)
            a_tile = p.mul_(zc).sum(dim=1)
            alpha = torch.exp(mc - m_new)
            rescaled = torch.where(sc > 0, alpha * (ac + (mc - m_new) * sc), torch.zeros_like(ac))
            ac.copy_(rescaled + a_tile)
            sc.copy_(alpha * sc + s_tile)
            mc.copy_(m_new)
    return m, s, a, tz, zsum


# Target ids handed to the Triton kernels: a target owned by another rank becomes -1 (matches no column, so the
# kernel's target logit is 0), and the kernel's own ignore_index is -2, which never occurs, so it reduces every row.
_NOT_LOCAL = -1
_KERNEL_IGNORE = -2


def _kernels() -> Any:
    from .kernels import lm as kernels_lm

    return kernels_lm


def _local_stats_triton(
    hidden: Any, weight: Any, bias: Any, local_t: Any, inv_t: Any, softcap: float | None, need_zmean: bool
) -> tuple[Any, Any, Any, Any, Any]:
    """The same statistics as :func:`_local_stats` from the fused Triton kernel (no logits in memory).

    The kernel gives the shard's (logprob, lse, entropy); with the shard's lse as reference point the online
    triple is (m, s, a) = (lse_r, 1, -entropy_r), and the target logit is logprob_r + lse_r where the target is local.
    """
    torch = _backend.torch()
    out = _kernels().linear_logprobs_fwd(
        hidden, weight, local_t, bias=bias, temperature=1.0 / inv_t, softcap=softcap, ignore_index=_KERNEL_IGNORE,
        return_entropy=True, return_logit_mean=need_zmean,
    )  # fmt: skip
    lp, lse, ent = out[:3]
    tz = torch.where(local_t >= 0, lp + lse, torch.zeros_like(lse))
    zsum = out[3] * weight.shape[0] if need_zmean else torch.zeros_like(lse)
    return lse, torch.ones_like(lse), -ent, tz, zsum


@functools.cache
def _vocab_parallel_fn() -> Any:
    """The autograd Function (built on first use so that importing this module does not import torch)."""
    torch = _backend.torch()

    class _VocabParallelStats(torch.autograd.Function):  # type: ignore[name-defined]
        """(logprobs, lse, entropy, mean logit) [N] over a vocabulary-sharded head (differentiable)."""

        @staticmethod
        def forward(  # type: ignore[override]
            ctx, hidden, weight, bias, targets, inv_t, softcap, ignore_index, vocab_start, v_total, group, cfg
        ):
            dist = _dist()
            chunk, vchunk, use_triton, need_zmean = cfg
            v_r = weight.shape[0]
            local_t = targets - vocab_start
            local_t = torch.where((local_t >= 0) & (local_t < v_r), local_t, torch.full_like(local_t, _NOT_LOCAL))
            if use_triton:
                m, s, a, tz, zsum = _local_stats_triton(hidden, weight, bias, local_t, inv_t, softcap, need_zmean)
            else:
                m, s, a, tz, zsum = _local_stats(hidden, weight, bias, local_t, inv_t, softcap, chunk, vchunk)
            mx = _all_reduce(m.clone(), dist.ReduceOp.MAX, group)
            w = torch.exp(m - mx)  # 0 on an empty shard (m = -inf, mx finite)
            shift = torch.where(s > 0, m - mx, torch.zeros_like(m))
            a_rel = torch.where(s > 0, w * (a + shift * s), torch.zeros_like(a))
            sums = _all_reduce(torch.stack([w * s, a_rel, tz, zsum]), dist.ReduceOp.SUM, group)
            s_tot, a_tot, tz_tot, zsum_tot = sums.unbind(0)
            lse = mx + torch.log(s_tot)
            ignored = targets == ignore_index
            zero = torch.zeros_like(lse)
            logprobs = torch.where(ignored, zero, tz_tot - lse)
            entropy = torch.where(ignored, zero, (torch.log(s_tot) - a_tot / s_tot).clamp_min(0.0))
            zmean = zsum_tot / v_total
            ctx.save_for_backward(hidden, weight, bias, local_t, inv_t, lse, entropy, ignored)
            ctx.softcap, ctx.group, ctx.cfg, ctx.v_total = softcap, group, cfg, v_total
            ctx.has_bias = bias is not None
            return logprobs, lse, entropy, zmean

        @staticmethod
        def backward(ctx, g_lp, g_lse, g_ent, g_zmean):  # type: ignore[override]
            dist = _dist()
            hidden, weight, bias, local_t, inv_t, lse, entropy, ignored = ctx.saved_tensors
            acc = _acc_dtype(hidden.dtype)
            n, v_r = hidden.shape[0], weight.shape[0]
            chunk, vchunk, use_triton, _ = ctx.cfg

            def upstream(g: Any) -> Any:
                if g is None:
                    return torch.zeros(n, device=hidden.device, dtype=acc)
                return torch.where(ignored, torch.zeros_like(g), g).to(acc)

            g_lp, g_lse, g_ent, g_zm = upstream(g_lp), upstream(g_lse), upstream(g_ent), upstream(g_zmean)
            need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
            grad_h = torch.zeros((n, hidden.shape[1]), device=hidden.device, dtype=acc)
            grad_w = torch.zeros((v_r, hidden.shape[1]), device=hidden.device, dtype=acc) if need_w else None
            grad_b = torch.zeros((v_r,), device=hidden.device, dtype=acc) if need_b and ctx.has_bias else None
            if use_triton:
                # the kernel spreads grad_logit_mean over the shard's V_r columns; the global mean has 1 / V
                gh, gw, gb = _kernels().linear_logprobs_bwd(
                    hidden, weight, local_t, lse, g_lp, g_ent, bias=bias, temperature=1.0 / inv_t,
                    softcap=ctx.softcap, ignore_index=_KERNEL_IGNORE, entropy=entropy, grad_lse=g_lse,
                    grad_logit_mean=g_zm * (v_r / ctx.v_total), needs_hidden_grad=need_h,
                    needs_weight_grad=grad_w is not None or grad_b is not None,
                )  # fmt: skip
                if need_h:
                    grad_h += gh.to(acc)
                if grad_w is not None:
                    grad_w += gw.to(acc)
                if grad_b is not None:
                    grad_b += gb.to(acc)
            for r0 in range(0, 0 if use_triton else n, chunk):
                r1 = min(n, r0 + chunk)
                h = hidden[r0:r1].to(acc)
                for c0 in range(0, v_r, vchunk):
                    c1 = min(v_r, c0 + vchunk)
                    w = weight[c0:c1].to(acc)
                    b = None if bias is None else bias[c0:c1]
                    y, z = _chunk_logits(h, w, b, inv_t[r0:r1], ctx.softcap, acc, keep_y=ctx.softcap is not None)
                    logp = z.sub_(lse[r0:r1, None])
                    p = torch.exp(logp)
                    # dz = p * (-(g_lp - g_lse) - g_ent (log p + H)) + g_zm / V, built in place
                    coef = logp.add_(entropy[r0:r1, None]).mul_(-g_ent[r0:r1, None])
                    coef.sub_((g_lp[r0:r1] - g_lse[r0:r1])[:, None])
                    dz = p.mul_(coef).add_((g_zm[r0:r1] / ctx.v_total)[:, None])
                    t = local_t[r0:r1]
                    hit = (t >= c0) & (t < c1)
                    if bool(hit.any()):
                        rows = torch.nonzero(hit)[:, 0]
                        dz[rows, t[rows] - c0] += g_lp[r0:r1][rows]
                    dx = dz.mul_(inv_t[r0:r1, None])
                    if ctx.softcap is not None:
                        dx.mul_(y.div_(ctx.softcap).square_().neg_().add_(1.0))
                    if need_h:
                        grad_h[r0:r1] += dx @ w
                    if grad_w is not None:
                        grad_w[c0:c1] += dx.T @ h
                    if grad_b is not None:
                        grad_b[c0:c1] += dx.sum(dim=0)
            if need_h:
                # hidden is replicated: its gradient is the sum of every shard's contribution
                _all_reduce(grad_h, dist.ReduceOp.SUM, ctx.group)
            return (
                grad_h.to(hidden.dtype) if need_h else None,
                grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None,
            ) + (None,) * 8

    return _VocabParallelStats


def _check_tensor(x: Any, name: str, ndim: int | None = None) -> Any:
    torch = _backend.torch()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise TypeError(f"{name}: expected a float32/float64/bfloat16/float16 tensor, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def _prepare(
    hidden: Any,
    weight_shard: Any,
    targets: Any,
    vocab_start: Any,
    process_group: Any,
    bias: Any,
    temperature: Any,
    softcap: Any,
    ignore_index: Any,
    chunk_size: Any,
    vocab_chunk_size: Any,
    impl: Any,
    need_zmean: bool,
) -> dict[str, Any]:
    torch = _backend.torch()
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("process_group: torch.distributed is not initialised (call init_process_group first)")
    group = process_group if process_group is not None else dist.group.WORLD
    _check_tensor(hidden, "hidden")
    if hidden.ndim < 1:
        raise ValueError("hidden: expected shape [..., D]")
    _check_tensor(weight_shard, "weight_shard", 2)
    d = hidden.shape[-1]
    if weight_shard.shape[1] != d:
        raise ValueError(f"weight_shard: expected shape (V_shard, {d}), got {tuple(weight_shard.shape)}")
    if weight_shard.dtype != hidden.dtype:
        raise TypeError(f"weight_shard: expected dtype {hidden.dtype} (as hidden), got {weight_shard.dtype}")
    if weight_shard.device != hidden.device:
        raise ValueError(f"weight_shard: expected device {hidden.device}, got {weight_shard.device}")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int64, torch.int32):
        raise TypeError("targets: expected an int64/int32 torch.Tensor")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(
            f"targets: expected hidden's leading shape {tuple(hidden.shape[:-1])}, got {tuple(targets.shape)}"
        )
    if isinstance(vocab_start, bool) or not isinstance(vocab_start, numbers.Integral) or vocab_start < 0:
        raise ValueError(f"vocab_start: expected an int >= 0, got {vocab_start!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
    v_r = weight_shard.shape[0]
    if bias is not None:
        _check_tensor(bias, "bias", 1)
        if bias.shape != (v_r,):
            raise ValueError(f"bias: expected shape ({v_r},) (this rank's shard), got {tuple(bias.shape)}")
    n = targets.numel()
    acc = _acc_dtype(hidden.dtype)
    if isinstance(temperature, torch.Tensor) and temperature.ndim > 0:
        if temperature.shape != targets.shape:
            raise ValueError(f"temperature: expected a float or shape {tuple(targets.shape)}")
        inv_t = temperature.detach().reshape(n).to(device=hidden.device, dtype=acc)
        if not bool((torch.isfinite(inv_t) & (inv_t > 0)).all()):
            raise ValueError("temperature: expected finite values > 0")
        inv_t = 1.0 / inv_t
    else:
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
            raise TypeError(f"temperature: expected a real number or a tensor, got {temperature!r}")
        if not 0 < float(temperature) < float("inf"):
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
        inv_t = torch.full((n,), 1.0 / float(temperature), device=hidden.device, dtype=acc)
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, numbers.Real) or not 0 < float(softcap) < float("inf"):
            raise ValueError(f"softcap: expected None or a finite number > 0, got {softcap!r}")
        softcap = float(softcap)
    chunk = _DEFAULT_CHUNK if chunk_size is None else chunk_size
    vchunk = _DEFAULT_VOCAB_CHUNK if vocab_chunk_size is None else vocab_chunk_size
    for name, c in (("chunk_size", chunk), ("vocab_chunk_size", vchunk)):
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {c!r}")
    # The shards must tile [0, V) exactly: gather every rank's (start, size).
    world = dist.get_world_size(group)
    mine = torch.tensor([int(vocab_start), v_r], dtype=torch.int64, device=hidden.device)
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine, group=group)
    spans = sorted((int(e[0]), int(e[1])) for e in every)
    pos = 0
    for start, size in spans:
        if start != pos:
            raise ValueError(f"vocab_start: the ranks' shards do not tile the vocabulary (got (start, size) = {spans})")
        pos += size
    v_total = pos
    if v_total < 1:
        raise ValueError("weight_shard: the shards of the group hold no vocabulary rows")
    flat_t = targets.reshape(n).to(torch.int64)
    bad = (flat_t != ignore_index) & ((flat_t < 0) | (flat_t >= v_total))
    if bool(bad.any()):
        raise ValueError(f"targets: values must be in [0, {v_total}) or ignore_index={ignore_index}")
    use_triton = _use_triton(impl, hidden, v_r)
    return dict(
        hidden=hidden.reshape(n, d),
        targets=flat_t,
        inv_t=inv_t,
        softcap=softcap,
        group=group,
        v_total=v_total,
        cfg=(int(chunk), int(vchunk), use_triton, bool(need_zmean)),
    )


def _use_triton(impl: Any, hidden: Any, weight_rows: int) -> bool:
    """Whether a rank reduces its shard with the fused Triton kernels (else: chunked torch matmuls)."""
    torch = _backend.torch()
    check_choice(impl, "impl", ("auto", "torch", "triton"))
    fits = hidden.dtype != torch.float64 and weight_rows > 0
    if impl == "auto":
        return hidden.device.type == "cuda" and _backend.has_triton() and fits
    if impl == "torch":
        return False
    if not _backend.has_triton():
        raise ValueError("impl: 'triton' needs the triton package")
    if not fits:
        raise ValueError("impl: 'triton' supports float32/bfloat16/float16 and a non-empty shard")
    if hidden.device.type != "cuda" and not _backend.triton_interpret():
        raise ValueError("impl: 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
    return True


def _stats(p: dict[str, Any], weight_shard: Any, bias: Any, vocab_start: int, ignore_index: int) -> tuple:
    return _vocab_parallel_fn().apply(
        p["hidden"], weight_shard, bias, p["targets"], p["inv_t"], p["softcap"], int(ignore_index), int(vocab_start),
        p["v_total"], p["group"], p["cfg"],
    )  # fmt: skip


def linear_logprobs_vocab_parallel(
    hidden: Any,
    weight_shard: Any,
    targets: Any,
    *,
    vocab_start: int,
    process_group: Any = None,
    bias: Any = None,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    return_entropy: bool = False,
    return_lse: bool = False,
    chunk_size: int | None = None,
    vocab_chunk_size: int | None = None,
    impl: str = "auto",
) -> Any:
    """Per-token log p(target) under a vocabulary-sharded linear head (every rank calls it with its shard).

    Args:
        hidden: [..., D] float tensor, the same on every rank of the group.
        weight_shard: [V_r, D] rows ``vocab_start : vocab_start + V_r`` of the full [V, D] head (same dtype as hidden).
        targets: [...] int64/int32 global vocabulary ids (the same on every rank); ``ignore_index`` marks ignored
            tokens.
        vocab_start: first global vocabulary id of this rank's shard; the shards of the group must tile [0, V).
        process_group: the torch.distributed group (default: the world group).
        bias: optional [V_r] bias shard.
        temperature: float > 0 or a tensor of targets' shape (per-token; not differentiated).
        softcap: optional c > 0; logits become c * tanh(logits / c) before the temperature.
        ignore_index: target value of ignored tokens (log-prob 0, entropy 0, no gradient).
        return_entropy: also return the per-token entropy.
        return_lse: also return the per-token log-sum-exp.
        chunk_size, vocab_chunk_size: rows x vocabulary entries reduced at once (peak extra memory
            O(chunk_size * vocab_chunk_size)); defaults 512 x 4096. Used by the torch path only.
        impl: "auto" (the fused Triton kernels of :mod:`loglik.kernels.lm` for CUDA tensors when Triton is
            installed, else chunked torch matmuls), "torch" or "triton" (CPU tensors need TRITON_INTERPRET=1).

    Returns:
        logprobs [...] in the accumulation dtype (float32, float64 for float64 inputs); with return_entropy and/or
        return_lse, a tuple ``(logprobs, entropy, lse)`` holding only the requested extras, in that order.
        Identical on every rank; differentiable w.r.t. hidden, weight_shard and bias (grad_hidden is all-reduced).
    """
    return_entropy = check_bool(return_entropy, "return_entropy")
    return_lse = check_bool(return_lse, "return_lse")
    p = _prepare(
        hidden, weight_shard, targets, vocab_start, process_group, bias, temperature, softcap, ignore_index,
        chunk_size, vocab_chunk_size, impl, False,
    )  # fmt: skip
    logprobs, lse, entropy, _ = _stats(p, weight_shard, bias, vocab_start, ignore_index)
    shape = targets.shape
    out = [logprobs.reshape(shape)]
    if return_entropy:
        out.append(entropy.reshape(shape))
    if return_lse:
        out.append(lse.reshape(shape))
    return out[0] if len(out) == 1 else tuple(out)


def linear_cross_entropy_vocab_parallel(
    hidden: Any,
    weight_shard: Any,
    targets: Any,
    *,
    vocab_start: int,
    process_group: Any = None,
    bias: Any = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: Any = 1.0,
    weights: Any = None,
    chunk_size: int | None = None,
    vocab_chunk_size: int | None = None,
    impl: str = "auto",
) -> Any:
    """Cross-entropy under a vocabulary-sharded linear head (same on every rank).

    Per token: ``loss = w * ((1 - eps) * (-logprob) + eps * (lse - mean_v z) + z_loss * lse^2)`` with eps =
    label_smoothing and w the optional per-token weight (may be negative). Ignored tokens contribute 0.

    Args:
        hidden, weight_shard, targets, vocab_start, process_group, bias, softcap, temperature, ignore_index,
            chunk_size, vocab_chunk_size, impl: as in :func:`linear_logprobs_vocab_parallel`.
        reduction: "mean" (sum over tokens divided by the number of non-ignored tokens; 0 with zero gradients when
            every token is ignored), "sum", or "none" (shape of targets).
        label_smoothing: eps in [0, 1].
        z_loss: coefficient >= 0 of lse^2.
        weights: optional per-token weights, shape of targets.

    Returns:
        A scalar (mean/sum) or a [...] tensor (none) in the accumulation dtype.
    """
    torch = _backend.torch()
    check_choice(reduction, "reduction", ("mean", "sum", "none"))
    for name, val, hi in (("label_smoothing", label_smoothing, 1.0), ("z_loss", z_loss, float("inf"))):
        if isinstance(val, bool) or not isinstance(val, numbers.Real) or not 0 <= float(val) <= hi or val != val:
            raise ValueError(f"{name}: expected a number in [0, {hi}], got {val!r}")
    p = _prepare(
        hidden, weight_shard, targets, vocab_start, process_group, bias, temperature, softcap, ignore_index,
        chunk_size, vocab_chunk_size, impl, float(label_smoothing) > 0,
    )  # fmt: skip
    logprobs, lse, _, zmean = _stats(p, weight_shard, bias, vocab_start, ignore_index)
    valid = p["targets"] != ignore_index
    eps = float(label_smoothing)
    loss = -(1.0 - eps) * logprobs
    if eps > 0:
        loss = loss + eps * (lse - zmean)
    if z_loss > 0:
        loss = loss + float(z_loss) * lse * lse
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or weights.shape != targets.shape:
            raise ValueError(f"weights: expected a tensor of shape {tuple(targets.shape)}")
        _check_tensor(weights, "weights")
        loss = loss * weights.reshape(-1).to(loss.dtype)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss.reshape(targets.shape)
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp_min(1).to(total.dtype)
