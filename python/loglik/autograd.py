"""torch custom ops (``loglik::...``) wiring the language-model kernels to autograd and torch.compile.

Each op is registered with ``torch.library.custom_op`` (opaque to the compiler), a fake implementation (shapes only,
so ``torch.compile(fullgraph=True)`` traces through) and ``register_autograd``:

- ``loglik::linear_logprobs`` -> (logprobs, entropy, lse, mean_logit) per token; backward by recomputation
  (``loglik::linear_logprobs_backward``).
- ``loglik::linear_cross_entropy_fused`` -> (loss, lse, grad_hidden, grad_weight, grad_bias) for mean/sum: the
  gradients are computed in the forward pass, the backward only scales them by the upstream scalar and hands them
  over without a copy (so it can run once per forward).
- ``loglik::logprobs_from_logits`` -> (logprobs, entropy, lse); backward ``loglik::logprobs_from_logits_backward``.

Registration happens on first use (importing loglik never imports torch). The ops take flattened 2-D hidden/logits
and 1-D int64 targets; :mod:`loglik.lm` validates and reshapes.
"""

import functools
from typing import Any

from . import _backend
from ._checks import check_bool

__all__ = ["linear_logprobs_op", "cross_entropy_fused_op", "logits_logprobs_op"]


def _none_if_empty(t: Any) -> Any:
    return None if t is None or t.numel() == 0 and t.ndim == 1 and t.shape[0] == 0 else t


def _temp(temperature: Any, temperature_scalar: float) -> Any:
    """Per-row inverse temperature tensor, or the scalar."""
    return 1.0 / float(temperature_scalar) if temperature is None else 1.0 / temperature


class _CudaLogits:
    """The CUDA C++ logprobs_from_logits kernels under the Triton launchers' names."""

    @staticmethod
    def logprobs_from_logits_fwd(*args: Any, **kw: Any) -> Any:
        from . import _cuda_ext

        return _cuda_ext.logprobs_fwd(*args, **kw)

    @staticmethod
    def logprobs_from_logits_bwd(*args: Any, **kw: Any) -> Any:
        from . import _cuda_ext

        return _cuda_ext.logprobs_bwd(*args, **kw)


def _logits_kernels(impl: str) -> Any:
    if impl == "cuda":
        return _CudaLogits
    from .kernels import lm as klm

    return klm


def _kernel_temperature(temperature: Any, temperature_scalar: float) -> Any:
    return float(temperature_scalar) if temperature is None else temperature


_OPS: dict[str, Any] | None = None


def _get_ops() -> dict[str, Any]:
    """The registered ops; a global read once registered, so torch.compile never traces the registration."""
    return _OPS if _OPS is not None else _ops()


@functools.cache
def _ops() -> Any:
    global _OPS
    torch = _backend.torch()
    from . import lm
    from .reference import lm as ref

    empty = functools.partial(torch.empty, 0)

    # ------------------------------------------------------------------------------------------------------------
    # linear_logprobs
    @torch.library.custom_op(
        "loglik::linear_logprobs",
        mutates_args=(),
        schema="(Tensor hidden, Tensor weight, Tensor targets, Tensor? bias, Tensor? temperature, "
        "float temperature_scalar, float softcap, int ignore_index, int chunk_size, str impl, bool need_entropy) "
        "-> (Tensor, Tensor, Tensor, Tensor)",
    )
    def linear_logprobs(
        hidden, weight, targets, bias, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl,
        need_entropy,
    ):  # fmt: skip
        cap = softcap if softcap > 0 else None
        valid = targets != ignore_index
        v = weight.shape[0]
        if impl == "triton":
            from .kernels import lm as klm

            lp, lse, ent = klm.linear_logprobs_fwd(
                hidden, weight, targets, bias=bias, temperature=_kernel_temperature(temperature, temperature_scalar),
                softcap=cap, ignore_index=ignore_index, return_entropy=need_entropy,
            )  # fmt: skip
            if ent is None:
                ent = torch.zeros_like(lse)
            return lp, ent, lse, torch.zeros_like(lse)
        if impl == "reference":
            t = None if temperature is None else temperature
            lp, ent, lse, meanz = ref.linear_stats_ref(
                hidden, weight, targets, bias=bias, temperature=t if t is not None else temperature_scalar,
                softcap=cap, ignore_index=ignore_index,
            )  # fmt: skip
            cdt = lm._compute_dtype(hidden.dtype)
            return lp.to(cdt), ent.to(cdt), lse.to(cdt), meanz.to(cdt)
        out = lm._linear_pass(
            hidden, weight, bias, targets, inv_temp=_temp(temperature, temperature_scalar), softcap=cap,
            ignore_index=ignore_index, chunk_size=chunk_size or None,
        )  # fmt: skip
        stats = out["stats"]
        lse, ez, zt = lm._finalize_stats(stats)
        zero = torch.zeros_like(lse)
        lp = torch.where(valid, (zt - lse).clamp(max=0.0), zero)
        ent = torch.where(valid, (lse - ez).clamp(min=0.0), zero)
        return lp, ent, lse, stats[:, 3] / v

    @linear_logprobs.register_fake
    def _(hidden, weight, targets, bias, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl,
          need_entropy):  # fmt: skip
        n = hidden.shape[0]
        cdt = lm._compute_dtype(hidden.dtype)
        return tuple(hidden.new_empty((n,), dtype=cdt) for _ in range(4))

    @torch.library.custom_op(
        "loglik::linear_logprobs_backward",
        mutates_args=(),
        schema="(Tensor hidden, Tensor weight, Tensor targets, Tensor? bias, Tensor? temperature, "
        "float temperature_scalar, float softcap, int ignore_index, int chunk_size, str impl, Tensor lse, "
        "Tensor entropy, Tensor grad_logprobs, Tensor grad_entropy, Tensor grad_lse, Tensor grad_mean_logit, "
        "bool needs_hidden, bool needs_weight, bool needs_bias) -> (Tensor, Tensor, Tensor)",
    )
    def linear_logprobs_backward(
        hidden, weight, targets, bias, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl, lse,
        entropy, g_lp, g_ent, g_lse, g_meanz, needs_hidden, needs_weight, needs_bias,
    ):  # fmt: skip
        cap = softcap if softcap > 0 else None
        valid = targets != ignore_index
        v = weight.shape[0]
        needs_bias = needs_bias and bias is not None
        if impl == "triton":
            from .kernels import lm as klm

            gh, gw, gb = klm.linear_logprobs_bwd(
                hidden, weight, targets, lse, g_lp, g_ent, bias=bias,
                temperature=_kernel_temperature(temperature, temperature_scalar), softcap=cap,
                ignore_index=ignore_index, entropy=entropy, grad_lse=g_lse, needs_hidden_grad=needs_hidden,
                needs_weight_grad=needs_weight or needs_bias,
            )  # fmt: skip
        elif impl == "reference":
            # Materialised float64 logits and the closed-form gradient (autograd is unavailable inside an op).
            h64, w64 = hidden.to(torch.float64), weight.to(torch.float64)
            x = h64 @ w64.t() + (0.0 if bias is None else bias.to(torch.float64))
            coef = lm._logprob_coef(g_lp.double(), g_ent.double(), g_lse.double(), g_meanz.double(), v, valid)
            inv = _temp(temperature, temperature_scalar)
            ez = (lse - entropy).double()
            dx = lm._chunk_grad_torch(x, targets, lse.double(), ez, coef, vocab_start=0, ignore_index=ignore_index,
                                      inv_temp=inv, softcap=cap, transformed=False)  # fmt: skip
            gh, gw, gb = dx @ w64, dx.t() @ h64, dx.sum(0)
        else:
            cdt = lm._compute_dtype(hidden.dtype)
            coef = lm._logprob_coef(g_lp.to(cdt), g_ent.to(cdt), g_lse.to(cdt), g_meanz.to(cdt), v, valid)
            lse_ez = torch.stack([lse.to(cdt), (lse - entropy).to(cdt)], dim=1)
            out = lm._linear_pass(
                hidden, weight, bias, targets, inv_temp=_temp(temperature, temperature_scalar), softcap=cap,
                ignore_index=ignore_index, chunk_size=chunk_size or None, coef=coef, lse_ez=lse_ez,
                needs=(needs_hidden, needs_weight, needs_bias),
            )  # fmt: skip
            gh, gw, gb = out["grad_hidden"], out["grad_weight"], out["grad_bias"]
        gh = empty(dtype=hidden.dtype) if gh is None or not needs_hidden else gh.to(hidden.dtype)
        gw = empty(dtype=weight.dtype) if gw is None or not needs_weight else gw.to(weight.dtype)
        gb = empty(dtype=hidden.dtype) if gb is None or not needs_bias else gb.to(bias.dtype)
        return gh, gw, gb

    @linear_logprobs_backward.register_fake
    def _(hidden, weight, targets, bias, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl, lse,
          entropy, g_lp, g_ent, g_lse, g_meanz, needs_hidden, needs_weight, needs_bias):  # fmt: skip
        gh = torch.empty_like(hidden) if needs_hidden else hidden.new_empty((0,))
        gw = torch.empty_like(weight) if needs_weight else weight.new_empty((0,))
        gb = torch.empty_like(bias) if (needs_bias and bias is not None) else hidden.new_empty((0,))
        return gh, gw, gb

    def _lp_setup(ctx, inputs, output):
        (hidden, weight, targets, bias, temperature, ts, softcap, ii, cs, impl, _ne) = inputs
        ctx.save_for_backward(hidden, weight, targets, bias, temperature, output[2], output[1])
        ctx.settings = (ts, softcap, ii, cs, impl)
        ctx.set_materialize_grads(False)
        ctx.needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[3])

    def _lp_backward(ctx, g_lp, g_ent, g_lse, g_meanz):
        hidden, weight, targets, bias, temperature, lse, ent = ctx.saved_tensors
        ts, softcap, ii, cs, impl = ctx.settings
        z = torch.zeros_like(lse)
        g_lp, g_ent, g_lse, g_meanz = (z if g is None else g for g in (g_lp, g_ent, g_lse, g_meanz))
        gh, gw, gb = linear_logprobs_backward(
            hidden, weight, targets, bias, temperature, ts, softcap, ii, cs, impl, lse, ent, g_lp, g_ent, g_lse,
            g_meanz, *ctx.needs,
        )  # fmt: skip
        return (gh if ctx.needs[0] else None, gw if ctx.needs[1] else None, None, gb if ctx.needs[2] else None,
                None, None, None, None, None, None, None)  # fmt: skip

    linear_logprobs.register_autograd(_lp_backward, setup_context=_lp_setup)

    # ------------------------------------------------------------------------------------------------------------
    # linear_cross_entropy (mean/sum) with the gradients computed in the forward pass
    @torch.library.custom_op(
        "loglik::linear_cross_entropy_fused",
        mutates_args=(),
        schema="(Tensor hidden, Tensor weight, Tensor targets, Tensor? bias, Tensor? weights, Tensor? temperature, "
        "float temperature_scalar, float softcap, int ignore_index, float label_smoothing, float z_loss, "
        "str reduction, int chunk_size, bool needs_hidden, bool needs_weight, bool needs_bias) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    )
    def linear_cross_entropy_fused(
        hidden, weight, targets, bias, weights, temperature, temperature_scalar, softcap, ignore_index,
        label_smoothing, z_loss, reduction, chunk_size, needs_hidden, needs_weight, needs_bias,
    ):  # fmt: skip
        cap = softcap if softcap > 0 else None
        cdt = lm._compute_dtype(hidden.dtype)
        v = weight.shape[0]
        valid = targets != ignore_index
        n_valid = int(valid.sum())
        scale = (1.0 / n_valid if n_valid else 0.0) if reduction == "mean" else 1.0
        needs_bias = needs_bias and bias is not None
        compute_grad = needs_hidden or needs_weight or needs_bias
        coef = lm._ce_coef(weights, scale, label_smoothing, z_loss, v, valid, cdt) if compute_grad else None
        out = lm._linear_pass(
            hidden, weight, bias, targets, inv_temp=_temp(temperature, temperature_scalar), softcap=cap,
            ignore_index=ignore_index, chunk_size=chunk_size or None, coef=coef,
            needs=(needs_hidden, needs_weight, needs_bias),
        )  # fmt: skip
        stats = out["stats"]
        lse, _, zt = lm._finalize_stats(stats)
        eps = float(label_smoothing)
        per = (1.0 - eps) * (lse - zt)
        if eps > 0:
            per = per + eps * (lse - stats[:, 3] / v)
        if z_loss > 0:
            per = per + float(z_loss) * lse * lse
        if weights is not None:
            per = per * weights.to(cdt)
        per = torch.where(valid, per, torch.zeros_like(per))
        loss = per.sum() * scale
        gh, gw, gb = out["grad_hidden"], out["grad_weight"], out["grad_bias"]
        gh = empty(dtype=hidden.dtype) if gh is None else gh
        gw = empty(dtype=weight.dtype) if gw is None else gw.to(weight.dtype)
        gb = empty(dtype=hidden.dtype) if gb is None else gb.to(bias.dtype)
        return loss, lse, gh, gw, gb

    @linear_cross_entropy_fused.register_fake
    def _(hidden, weight, targets, bias, weights, temperature, temperature_scalar, softcap, ignore_index,
          label_smoothing, z_loss, reduction, chunk_size, needs_hidden, needs_weight, needs_bias):  # fmt: skip
        cdt = lm._compute_dtype(hidden.dtype)
        gh = torch.empty_like(hidden) if needs_hidden else hidden.new_empty((0,))
        gw = torch.empty_like(weight) if needs_weight else weight.new_empty((0,))
        gb = torch.empty_like(bias) if (needs_bias and bias is not None) else hidden.new_empty((0,))
        return hidden.new_empty((), dtype=cdt), hidden.new_empty((hidden.shape[0],), dtype=cdt), gh, gw, gb

    def _ce_setup(ctx, inputs, output):
        # The gradients are kept as detached attributes (not saved tensors) so the backward can hand them to
        # autograd without a copy; detaching avoids a reference cycle through the output's grad_fn.
        # No zero-filled gradients for the outputs nobody used (that would allocate a weight-sized tensor).
        ctx.set_materialize_grads(False)
        ctx.grads = [None if g.numel() == 0 and g.ndim == 1 else g.detach() for g in output[2:]]
        bias = inputs[3]
        ctx.needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[3])
        # Inputs are kept (references, no copies) for a second backward (retain_graph=True, gradcheck), which then
        # recomputes the gradients.
        ctx.save_for_backward(*inputs[:6])
        ctx.settings = inputs[6:13]

    def _ce_backward(ctx, g_loss, _g_lse, _gh, _gw, _gb):
        if g_loss is None:
            return (None,) * 16
        grads = ctx.grads
        if grads is None:  # a second backward of the same graph: recompute (the first one handed its buffers over)
            saved = ctx.saved_tensors
            _, _, gh, gw, gb = linear_cross_entropy_fused(*saved, *ctx.settings, *ctx.needs)
            grads = [None if g.numel() == 0 and g.ndim == 1 else g for g in (gh, gw, gb)]
        ctx.grads = None
        compiling = lm._compiling(torch)
        result = []
        for need, g in zip(ctx.needs, grads, strict=True):
            if not need or g is None:
                result.append(None)
            elif compiling:
                result.append(g * g_loss.to(g.dtype))
            elif g_loss.device.type == "cpu" and float(g_loss) == 1.0:
                result.append(g)
            else:
                result.append(g.mul_(g_loss.to(g.dtype)))
        gh, gw, gb = result
        return (gh, gw, None, gb) + (None,) * 12

    linear_cross_entropy_fused.register_autograd(_ce_backward, setup_context=_ce_setup)

    # ------------------------------------------------------------------------------------------------------------
    # logprobs_from_logits
    @torch.library.custom_op(
        "loglik::logprobs_from_logits",
        mutates_args=(),
        schema="(Tensor logits, Tensor targets, Tensor? temperature, float temperature_scalar, float softcap, "
        "int ignore_index, int chunk_size, str impl, bool need_entropy) -> (Tensor, Tensor, Tensor)",
    )
    def logprobs_from_logits(
        logits, targets, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl, need_entropy
    ):
        cap = softcap if softcap > 0 else None
        valid = targets != ignore_index
        if impl in ("triton", "cuda"):
            klm = _logits_kernels(impl)
            lp, lse, ent = klm.logprobs_from_logits_fwd(
                logits, targets, temperature=_kernel_temperature(temperature, temperature_scalar), softcap=cap,
                ignore_index=ignore_index, return_entropy=need_entropy,
            )  # fmt: skip
            return lp, torch.zeros_like(lse) if ent is None else ent, lse
        if impl == "reference":
            lp, ent, lse = ref.logprobs_from_logits_ref(
                logits, targets, temperature=temperature if temperature is not None else temperature_scalar,
                softcap=cap, ignore_index=ignore_index, return_entropy=True, return_lse=True,
            )  # fmt: skip
            cdt = lm._compute_dtype(logits.dtype)
            return lp.to(cdt), ent.to(cdt), lse.to(cdt)
        stats = _logits_stats(logits, targets, temperature, temperature_scalar, cap, ignore_index, chunk_size)
        lse, ez, zt = lm._finalize_stats(stats)
        zero = torch.zeros_like(lse)
        return (
            torch.where(valid, (zt - lse).clamp(max=0.0), zero),
            torch.where(valid, (lse - ez).clamp(min=0.0), zero),
            lse,
        )

    def _logits_stats(logits, targets, temperature, ts, cap, ii, chunk_size):
        n, v = logits.shape
        inv = _temp(temperature, ts)
        cdt = lm._compute_dtype(logits.dtype)
        if logits.dtype == cdt:
            return lm._chunk_stats(logits.contiguous(), targets, ignore_index=ii, inv_temp=inv, softcap=cap)
        chunk = lm._auto_chunk(n, v, chunk_size or None)
        stats = torch.empty(n, 5, dtype=cdt, device=logits.device)
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            stats[i0:i1] = lm._chunk_stats(logits[i0:i1].to(cdt), targets[i0:i1], ignore_index=ii,
                                           inv_temp=lm._rows_of(inv, i0, i1), softcap=cap, in_place=True)  # fmt: skip
        return stats

    @logprobs_from_logits.register_fake
    def _(logits, targets, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl, need_entropy):
        cdt = lm._compute_dtype(logits.dtype)
        return tuple(logits.new_empty((logits.shape[0],), dtype=cdt) for _ in range(3))

    @torch.library.custom_op(
        "loglik::logprobs_from_logits_backward",
        mutates_args=(),
        schema="(Tensor logits, Tensor targets, Tensor? temperature, float temperature_scalar, float softcap, "
        "int ignore_index, int chunk_size, str impl, Tensor lse, Tensor entropy, Tensor grad_logprobs, "
        "Tensor grad_entropy, Tensor grad_lse) -> Tensor",
    )
    def logprobs_from_logits_backward(
        logits, targets, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl, lse, entropy,
        g_lp, g_ent, g_lse,
    ):  # fmt: skip
        cap = softcap if softcap > 0 else None
        if impl in ("triton", "cuda"):
            klm = _logits_kernels(impl)
            return klm.logprobs_from_logits_bwd(
                logits, targets, lse, g_lp, g_ent, temperature=_kernel_temperature(temperature, temperature_scalar),
                softcap=cap, ignore_index=ignore_index, entropy=entropy, grad_lse=g_lse,
            )  # fmt: skip
        if impl == "reference":
            valid = targets != ignore_index
            z0 = torch.zeros_like(lse, dtype=torch.float64)
            coef = lm._logprob_coef(g_lp.double(), g_ent.double(), g_lse.double(), z0, logits.shape[1], valid)
            inv = _temp(temperature, temperature_scalar)
            ez = (lse - entropy).double()
            x64 = logits.double()
            gx = lm._chunk_grad_torch(x64, targets, lse.double(), ez, coef, vocab_start=0, ignore_index=ignore_index,
                                      inv_temp=inv, softcap=cap, transformed=False)  # fmt: skip
            return gx.to(logits.dtype)
        n, v = logits.shape
        cdt = lm._compute_dtype(logits.dtype)
        valid = targets != ignore_index
        coef = lm._logprob_coef(g_lp.to(cdt), g_ent.to(cdt), g_lse.to(cdt), torch.zeros_like(lse, dtype=cdt), v,
                                valid)  # fmt: skip
        inv = _temp(temperature, temperature_scalar)
        ez = (lse - entropy).to(cdt)
        lse_c = lse.to(cdt)
        if logits.dtype == cdt:
            return lm._chunk_grad(logits.contiguous(), targets, lse_c, ez, coef, ignore_index=ignore_index,
                                  inv_temp=inv, softcap=cap)  # fmt: skip
        out = torch.empty_like(logits)
        chunk = lm._auto_chunk(n, v, chunk_size or None)
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            buf = logits[i0:i1].to(cdt)
            lm._chunk_grad(buf, targets[i0:i1], lse_c[i0:i1], ez[i0:i1], coef[i0:i1], ignore_index=ignore_index,
                           inv_temp=lm._rows_of(inv, i0, i1), softcap=cap, out=buf)  # fmt: skip
            out[i0:i1] = buf
        return out

    @logprobs_from_logits_backward.register_fake
    def _(logits, targets, temperature, temperature_scalar, softcap, ignore_index, chunk_size, impl, lse, entropy,
          g_lp, g_ent, g_lse):  # fmt: skip
        return torch.empty_like(logits)

    def _lf_setup(ctx, inputs, output):
        logits, targets, temperature, ts, softcap, ii, cs, impl, _ne = inputs
        ctx.save_for_backward(logits, targets, temperature, output[2], output[1])
        ctx.settings = (ts, softcap, ii, cs, impl)
        ctx.set_materialize_grads(False)

    def _lf_backward(ctx, g_lp, g_ent, g_lse):
        logits, targets, temperature, lse, ent = ctx.saved_tensors
        z = torch.zeros_like(lse)
        g_lp, g_ent, g_lse = (z if g is None else g for g in (g_lp, g_ent, g_lse))
        gx = logprobs_from_logits_backward(logits, targets, temperature, *ctx.settings, lse, ent, g_lp, g_ent, g_lse)
        return (gx,) + (None,) * 8

    logprobs_from_logits.register_autograd(_lf_backward, setup_context=_lf_setup)

    _OPS = {
        "linear_logprobs": linear_logprobs,
        "linear_cross_entropy_fused": linear_cross_entropy_fused,
        "logprobs_from_logits": logprobs_from_logits,
    }
    return _OPS


# --------------------------------------------------------------------------------------------------------------------
# Entry points used by loglik.lm (p is the dict of validated arguments from lm._prepare).


def linear_logprobs_op(p: dict[str, Any], *, need_entropy: bool, need_meanz: bool = False) -> tuple[Any, ...]:
    """(logprobs, entropy, lse, mean_logit) per flattened token."""
    need_entropy = check_bool(need_entropy, "need_entropy")
    check_bool(need_meanz, "need_meanz")
    temp_rows, ts = _temp_arg(p)
    return _get_ops()["linear_logprobs"](
        p["h2"], p["weight"], p["t1"], p["bias"], temp_rows, ts, float(p["softcap"] or 0.0), p["ignore_index"],
        int(p["chunk_size"] or 0), p["impl"], need_entropy,
    )  # fmt: skip


def cross_entropy_fused_op(p: dict[str, Any], weights: Any, reduction: str, eps: float, z_loss: float) -> tuple:
    """(loss, lse) for reduction mean/sum on the CPU path, gradients computed in the forward when needed."""
    from .lm import _torch

    torch = _torch()
    temp_rows, ts = _temp_arg(p)
    grad_on = torch.is_grad_enabled()
    bias = p["bias"]
    needs = (
        grad_on and p["h2"].requires_grad,
        grad_on and p["weight"].requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    loss, lse, *_ = _get_ops()["linear_cross_entropy_fused"](
        p["h2"], p["weight"], p["t1"], bias, weights, temp_rows, ts, float(p["softcap"] or 0.0), p["ignore_index"],
        float(eps), float(z_loss), reduction, int(p["chunk_size"] or 0), *needs,
    )  # fmt: skip
    return loss, lse


def logits_logprobs_op(p: dict[str, Any], logits2d: Any, *, need_entropy: bool) -> tuple[Any, ...]:
    need_entropy = check_bool(need_entropy, "need_entropy")
    temp_rows, ts = _temp_arg(p)
    return _get_ops()["logprobs_from_logits"](
        logits2d, p["t1"], temp_rows, ts, float(p["softcap"] or 0.0), p["ignore_index"], int(p["chunk_size"] or 0),
        p["impl"], need_entropy,
    )  # fmt: skip


def _temp_arg(p: dict[str, Any]) -> tuple[Any, float]:
    if p["temp_rows"] is not None:
        return p["temp_rows"], 1.0
    return None, 1.0 / float(p["inv_temp"])
