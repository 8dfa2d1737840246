"""Reference twins of :mod:`loglik.lm` in plain torch: they materialise the [N, V] logits and compute in float64.

Same signatures as the kernels (implementation knobs such as ``chunk_size``/``impl``/``process_group`` are accepted
and ignored). Results are float64 tensors; autograd flows through them (tests use them for gradients too).
"""

from __future__ import annotations

import numbers
from typing import Any

from .. import _backend

__all__ = ["linear_logprobs", "linear_cross_entropy", "logprobs_from_logits", "sequence_logprobs"]


def _z(x: Any, temperature: Any, softcap: float | None) -> Any:
    """z = softcap(x) / temperature in float64; x: [N, V]."""
    torch = _backend.torch()
    x = x.to(torch.float64)
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    if isinstance(temperature, numbers.Real):
        return x / float(temperature)
    return x / temperature.reshape(-1, 1).to(torch.float64)


def _from_z(z: Any, targets: Any, ignore_index: int) -> tuple[Any, Any, Any, Any]:
    """(logprobs, entropy, lse, mean_logit) of z [N, V] (float64); logprobs/entropy are 0 at ignored rows."""
    torch = _backend.torch()
    t = targets.reshape(-1).to(torch.int64)
    valid = t != ignore_index
    lse = torch.logsumexp(z, dim=-1)
    logp = z - lse[:, None]
    lp = torch.gather(logp, 1, torch.where(valid, t, 0)[:, None])[:, 0]
    ent = -(torch.exp(logp) * logp).sum(-1)
    zero = torch.zeros_like(lse)
    return torch.where(valid, lp, zero), torch.where(valid, ent, zero), lse, z.mean(-1)


def _linear_stats(
    hidden: Any, weight: Any, targets: Any, *, bias: Any = None, temperature: Any = 1.0, softcap: Any = None,
    ignore_index: int = -100,
) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """(logprobs, entropy, lse, mean_logit), each [N] float64, for hidden [..., D] flattened to N rows."""
    torch = _backend.torch()
    h = hidden.reshape(-1, hidden.shape[-1]).to(torch.float64)
    x = h @ weight.to(torch.float64).t()
    if bias is not None:
        x = x + bias.to(torch.float64)
    return _from_z(_z(x, temperature, softcap), targets, ignore_index)


# The loglik.autograd "reference" implementation calls this name.
linear_stats_ref = _linear_stats


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
    **_ignored: Any,
) -> Any:
    """Twin of :func:`loglik.linear_logprobs` (hidden [..., D], weight [V, D], targets [...]) -> float64 [...]."""
    lp, ent, lse, _ = _linear_stats(
        hidden, weight, targets, bias=bias, temperature=temperature, softcap=softcap, ignore_index=ignore_index
    )
    shape = tuple(targets.shape)
    outs = [lp.reshape(shape)]
    if return_entropy:
        outs.append(ent.reshape(shape))
    if return_lse:
        outs.append(lse.reshape(shape))
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
    **_ignored: Any,
) -> Any:
    """Twin of :func:`loglik.linear_cross_entropy`; float64 scalar (mean/sum) or [...] (none)."""
    torch = _backend.torch()
    lp, _, lse, meanz = _linear_stats(
        hidden, weight, targets, bias=bias, temperature=temperature, softcap=softcap, ignore_index=ignore_index
    )
    valid = targets.reshape(-1) != ignore_index
    eps = float(label_smoothing)
    loss = -(1 - eps) * lp + eps * (lse - meanz) + float(z_loss) * lse**2
    if weights is not None:
        loss = loss * weights.reshape(-1).to(torch.float64)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss.reshape(tuple(targets.shape))
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(int(valid.sum()), 1)


def logprobs_from_logits(
    logits: Any,
    targets: Any,
    *,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    return_entropy: bool = False,
    return_lse: bool = False,
    **_ignored: Any,
) -> Any:
    """Twin of :func:`loglik.logprobs_from_logits` (logits [..., V]) -> float64 [...]."""
    lp, ent, lse, _ = _from_z(_z(logits.reshape(-1, logits.shape[-1]), temperature, softcap), targets, ignore_index)
    shape = tuple(targets.shape)
    outs = [lp.reshape(shape)]
    if return_entropy:
        outs.append(ent.reshape(shape))
    if return_lse:
        outs.append(lse.reshape(shape))
    return outs[0] if len(outs) == 1 else tuple(outs)


logprobs_from_logits_ref = logprobs_from_logits


def sequence_logprobs(
    token_logprobs: Any, mask_or_segment_ids: Any, *, average: bool = False, num_segments: int | None = None
) -> Any:
    """Twin of :func:`loglik.sequence_logprobs` with explicit Python loops over sequences (float64)."""
    torch = _backend.torch()
    lp = token_logprobs.to(torch.float64)
    ids = mask_or_segment_ids
    squeeze = lp.ndim == 1
    lp2 = lp[None] if squeeze else lp
    ids2 = ids[None] if squeeze else ids
    if ids2.dtype == torch.bool or ids2.is_floating_point():
        total = torch.stack([sum((lp2[b, i] for i in range(lp2.shape[1]) if ids2[b, i]), lp2.new_zeros(()))
                             for b in range(lp2.shape[0])])  # fmt: skip
        count = torch.tensor([float(sum(bool(ids2[b, i]) for i in range(lp2.shape[1]))) for b in range(lp2.shape[0])],
                             dtype=torch.float64)  # fmt: skip
    else:
        s = int(ids2.max()) + 1 if ids2.numel() else 0
        s = max(s, 0) if num_segments is None else num_segments
        total = lp2.new_zeros(lp2.shape[0], s)
        count = lp2.new_zeros(lp2.shape[0], s)
        for b in range(lp2.shape[0]):
            for i in range(lp2.shape[1]):
                k = int(ids2[b, i])
                if k >= 0:
                    total[b, k] = total[b, k] + lp2[b, i]
                    count[b, k] += 1
    if squeeze:
        total, count = total[0], count[0]
    if not average:
        return total
    has = count > 0
    return torch.where(has, total / count.clamp(min=1), torch.zeros_like(total)), has
