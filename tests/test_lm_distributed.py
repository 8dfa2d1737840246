"""Vocabulary-parallel log-probs / cross-entropy against the single-process float64 reference.

Two processes (torch.multiprocessing spawn) talk over the gloo backend on 127.0.0.1. One spawn runs every case and
each rank writes the measured errors to a JSON file; the tests below assert on them per case (values and the
gradients of hidden, of the rank's weight shard and of its bias shard).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 2
N_SHAPE = (3, 7)
D = 11
V = 37
SPLIT = (20, 17)  # uneven shards: rank 0 owns [0, 20), rank 1 owns [20, 37)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reference(h, w, t, *, bias=None, temperature=1.0, softcap=None, ignore_index=-100):
    """float64 single-process truth: (logprobs, entropy, lse, mean logit), each of targets' shape."""
    x = h.double() @ w.double().T
    if bias is not None:
        x = x + bias.double()
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    temp = temperature.double()[..., None] if isinstance(temperature, torch.Tensor) else temperature
    z = x / temp
    lse = torch.logsumexp(z, -1)
    logp = z - lse[..., None]
    ignored = t == ignore_index
    safe_t = torch.where(ignored, torch.zeros_like(t), t)
    lp = torch.where(ignored, torch.zeros_like(lse), logp.gather(-1, safe_t[..., None])[..., 0])
    ent = torch.where(ignored, torch.zeros_like(lse), -(logp.exp() * logp).sum(-1))
    return lp, ent, lse, z.mean(-1)


def reference_ce(h, w, t, *, reduction, label_smoothing=0.0, z_loss=0.0, weights=None, ignore_index=-100, **kw):
    lp, _, lse, zmean = reference(h, w, t, ignore_index=ignore_index, **kw)
    loss = -(1 - label_smoothing) * lp + label_smoothing * (lse - zmean) + z_loss * lse * lse
    if weights is not None:
        loss = loss * weights.double()
    valid = t != ignore_index
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1)


def _inputs(dtype: Any, *, scale: float = 1.0, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*N_SHAPE, D, generator=g, dtype=torch.float64) * scale
    w = torch.randn(V, D, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(V, generator=g, dtype=torch.float64)
    t = torch.randint(0, V, N_SHAPE, generator=g)
    t[0, 2] = -100
    t[2, 6] = -100
    temp = torch.rand(N_SHAPE, generator=g, dtype=torch.float64) * 2.7 + 0.3
    weights = torch.randn(N_SHAPE, generator=g, dtype=torch.float64)  # negative entries: unlikelihood tokens
    return dict(h=h.to(dtype), w=w.to(dtype), b=b.to(dtype), t=t, temp=temp, weights=weights)


# (name, dtype, options, tolerance on values / gradients relative to the max magnitude)
LOGPROB_CASES = [
    ("plain_f64", torch.float64, {}, 1e-10),
    ("plain_f32", torch.float32, {}, 2e-5),
    ("bias_softcap_f64", torch.float64, {"bias": True, "softcap": 2.5}, 1e-10),
    ("temp03_f64", torch.float64, {"temperature": 0.3}, 1e-10),
    ("temp3_f32", torch.float32, {"temperature": 3.0, "bias": True}, 2e-5),
    ("temp_rows_f64", torch.float64, {"temperature": "rows", "softcap": 4.0}, 1e-10),
    ("extreme_f64", torch.float64, {"scale": 3e3}, 1e-9),
    ("bf16", torch.bfloat16, {"bias": True}, 3e-2),
    # the fused Triton kernels reduce each shard (interpreted on CPU here)
    ("triton_f32", torch.float32, {"impl": "triton", "bias": True}, 2e-5),
    ("triton_temp_rows_softcap", torch.float32, {"impl": "triton", "temperature": "rows", "softcap": 2.5}, 2e-5),
]
CE_CASES = [
    ("ce_mean", torch.float64, {"reduction": "mean"}, 1e-10),
    ("ce_sum_ls_z", torch.float64, {"reduction": "sum", "label_smoothing": 0.1, "z_loss": 1e-2, "bias": True}, 1e-10),
    ("ce_none_weights", torch.float64, {"reduction": "none", "weights": True, "softcap": 3.0}, 1e-10),
    ("ce_mean_weights_temp", torch.float64, {"reduction": "mean", "weights": True, "temperature": 0.3}, 1e-10),
    ("ce_all_ignored", torch.float64, {"reduction": "mean", "all_ignored": True}, 1e-10),
    (
        "ce_triton_ls_z",
        torch.float32,
        {
            "reduction": "sum",
            "label_smoothing": 0.2,
            "z_loss": 1e-2,
            "bias": True,
            "impl": "triton",
            "temperature": 0.7,
        },
        2e-5,
    ),
    ("ce_f32_torch_softcap_ls", torch.float32, {"reduction": "mean", "label_smoothing": 0.1, "softcap": 2.0}, 2e-5),
    (
        "ce_triton_softcap_ls",
        torch.float32,
        {"reduction": "none", "label_smoothing": 0.3, "softcap": 2.0, "impl": "triton", "weights": True},
        2e-5,
    ),
]


def _rel(a: Any, b: Any) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def _run_logprob_case(rank: int, dtype: Any, opts: dict[str, Any]) -> dict[str, float]:
    from loglik.lm_distributed import linear_logprobs_vocab_parallel

    inp = _inputs(dtype, scale=opts.get("scale", 1.0))
    start = 0 if rank == 0 else SPLIT[0]
    stop = start + SPLIT[rank]
    kw: dict[str, Any] = {}
    if "impl" in opts:
        kw["impl"] = opts["impl"]
    if "softcap" in opts:
        kw["softcap"] = opts["softcap"]
    if opts.get("temperature") == "rows":
        kw["temperature"] = inp["temp"]
    elif "temperature" in opts:
        kw["temperature"] = opts["temperature"]
    h = inp["h"].clone().requires_grad_()
    w_shard = inp["w"][start:stop].clone().requires_grad_()
    b_shard = inp["b"][start:stop].clone().requires_grad_() if opts.get("bias") else None
    lp, ent, lse = linear_logprobs_vocab_parallel(
        h, w_shard, inp["t"], vocab_start=start, bias=b_shard, return_entropy=True, return_lse=True,
        chunk_size=4, vocab_chunk_size=6, **kw,
    )  # fmt: skip
    kw.pop("impl", None)
    g = torch.Generator().manual_seed(1)
    g_lp, g_ent, g_lse = (torch.randn(N_SHAPE, generator=g, dtype=torch.float64) for _ in range(3))
    (lp * g_lp.to(lp.dtype) + ent * g_ent.to(lp.dtype) + lse * g_lse.to(lp.dtype)).sum().backward()

    hr = inp["h"].double().requires_grad_()
    wr = inp["w"].double().requires_grad_()
    br = inp["b"].double().requires_grad_() if opts.get("bias") else None
    rlp, rent, rlse, _ = reference(hr, wr, inp["t"], bias=br, **kw)
    ignored = inp["t"] == -100
    g_lse_ref = torch.where(ignored, torch.zeros_like(g_lse), g_lse)  # ignored tokens carry no gradient
    (rlp * g_lp + rent * g_ent + rlse * g_lse_ref).sum().backward()
    out = {
        "logprobs": _rel(lp, rlp),
        "entropy": _rel(ent, rent),
        "lse": _rel(lse, rlse),
        "grad_hidden": _rel(h.grad, hr.grad),
        "grad_weight": _rel(w_shard.grad, wr.grad[start:stop]),
    }
    if br is not None:
        out["grad_bias"] = _rel(b_shard.grad, br.grad[start:stop])
    out["logprobs_le_0"] = float(lp.detach().max())
    return out


def _run_ce_case(rank: int, dtype: Any, opts: dict[str, Any]) -> dict[str, float]:
    from loglik.lm_distributed import linear_cross_entropy_vocab_parallel

    inp = _inputs(dtype, seed=3)
    t = torch.full_like(inp["t"], -100) if opts.get("all_ignored") else inp["t"]
    start = 0 if rank == 0 else SPLIT[0]
    stop = start + SPLIT[rank]
    kw: dict[str, Any] = {
        k: opts[k] for k in ("reduction", "label_smoothing", "z_loss", "softcap", "temperature") if k in opts
    }
    h = inp["h"].clone().requires_grad_()
    w_shard = inp["w"][start:stop].clone().requires_grad_()
    b_shard = inp["b"][start:stop].clone().requires_grad_() if opts.get("bias") else None
    weights = inp["weights"] if opts.get("weights") else None
    loss = linear_cross_entropy_vocab_parallel(
        h, w_shard, t, vocab_start=start, bias=b_shard, weights=weights, chunk_size=5, vocab_chunk_size=7,
        impl=opts.get("impl", "auto"), **kw,
    )  # fmt: skip
    up = torch.randn(loss.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (loss * up).sum().backward()
    hr = inp["h"].double().requires_grad_()
    wr = inp["w"].double().requires_grad_()
    br = inp["b"].double().requires_grad_() if opts.get("bias") else None
    ref = reference_ce(hr, wr, t, bias=br, weights=weights, **kw)
    (ref * up).sum().backward()
    out = {
        "loss": _rel(loss, ref),
        "grad_hidden": _rel(h.grad, hr.grad),
        "grad_weight": _rel(w_shard.grad, wr.grad[start:stop]),
        "finite": float(torch.isfinite(loss).all() and torch.isfinite(h.grad).all()),
    }
    if br is not None:
        out["grad_bias"] = _rel(b_shard.grad, br.grad[start:stop])
    if opts.get("all_ignored"):
        out["loss_abs"] = float(loss.detach().abs())
        out["grad_abs"] = float(h.grad.abs().max() + w_shard.grad.abs().max())
    return out


def _run_bad_inputs(rank: int) -> dict[str, str]:
    from loglik.lm_distributed import linear_logprobs_vocab_parallel

    inp = _inputs(torch.float64)
    start = 0 if rank == 0 else SPLIT[0]
    w_shard = inp["w"][start : start + SPLIT[rank]]
    msgs: dict[str, str] = {}
    attempts = {
        "overlap": lambda: linear_logprobs_vocab_parallel(inp["h"], w_shard, inp["t"], vocab_start=0),
        "target_range": lambda: linear_logprobs_vocab_parallel(
            inp["h"], w_shard, torch.full_like(inp["t"], V), vocab_start=start
        ),
        "nan_hidden": lambda: linear_logprobs_vocab_parallel(
            inp["h"] * float("nan"), w_shard, inp["t"], vocab_start=start
        ),
        "temperature": lambda: linear_logprobs_vocab_parallel(
            inp["h"], w_shard, inp["t"], vocab_start=start, temperature=0.0
        ),
        "shape": lambda: linear_logprobs_vocab_parallel(inp["h"], w_shard[:, :-1], inp["t"], vocab_start=start),
        "impl": lambda: linear_logprobs_vocab_parallel(inp["h"], w_shard, inp["t"], vocab_start=start, impl="triton"),
    }
    for name, fn in attempts.items():
        try:
            fn()
            msgs[name] = "no error"
        except (ValueError, TypeError) as exc:
            msgs[name] = str(exc)
    return msgs


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results: dict[str, Any] = {}
        for name, dtype, opts, _ in LOGPROB_CASES:
            results[name] = _run_logprob_case(rank, dtype, opts)
        for name, dtype, opts, _ in CE_CASES:
            results[name] = _run_ce_case(rank, dtype, opts)
        results["bad_inputs"] = _run_bad_inputs(rank)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: Any) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("vocab_parallel")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD, join=True)
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.parametrize("name,tol", [(c[0], c[3]) for c in LOGPROB_CASES])
def test_logprobs_values_and_gradients(results: list[dict[str, Any]], name: str, tol: float) -> None:
    for rank in range(WORLD):
        errs = results[rank][name]
        assert errs["logprobs_le_0"] <= 0.0
        for key, err in errs.items():
            if key != "logprobs_le_0":
                assert err <= tol, f"rank {rank} {name} {key}: {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("name,tol", [(c[0], c[3]) for c in CE_CASES])
def test_cross_entropy_values_and_gradients(results: list[dict[str, Any]], name: str, tol: float) -> None:
    for rank in range(WORLD):
        errs = results[rank][name]
        assert errs["finite"] == 1.0
        for key in ("loss", "grad_hidden", "grad_weight", "grad_bias"):
            if key in errs:
                assert errs[key] <= tol, f"rank {rank} {name} {key}: {errs[key]:.3g} > {tol:.3g}"
        if name == "ce_all_ignored":
            assert errs["loss_abs"] == 0.0
            assert errs["grad_abs"] == 0.0


def test_bad_inputs_raise_naming_the_argument(results: list[dict[str, Any]]) -> None:
    expected = {
        "overlap": "vocab_start",
        "target_range": "targets",
        "nan_hidden": "hidden",
        "temperature": "temperature",
        "shape": "weight_shard",
        "impl": "impl",
    }
    for rank in range(WORLD):
        msgs = results[rank]["bad_inputs"]
        for case, arg in expected.items():
            assert msgs[case].startswith(arg), f"rank {rank} {case}: {msgs[case]!r}"


def test_needs_an_initialised_process_group() -> None:
    from loglik.lm_distributed import linear_logprobs_vocab_parallel

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="process_group"):
        linear_logprobs_vocab_parallel(
            torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(2, dtype=torch.int64), vocab_start=0
        )


@pytest.fixture
def single_rank_group() -> Any:
    """A one-process gloo group in this process (destroyed afterwards)."""
    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_gradcheck_single_rank(single_rank_group: Any) -> None:
    from loglik.lm_distributed import linear_cross_entropy_vocab_parallel, linear_logprobs_vocab_parallel

    g = torch.Generator().manual_seed(11)
    h = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(9, 5, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    b = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 9, (2, 3), generator=g)
    t[1, 1] = IGNORE = -100

    def f(h, w, b):
        lp, ent, lse = linear_logprobs_vocab_parallel(
            h, w, t, vocab_start=0, bias=b, softcap=2.0, temperature=0.7, return_entropy=True, return_lse=True,
            chunk_size=2, vocab_chunk_size=4,
        )  # fmt: skip
        keep = (t != IGNORE).double()
        return lp, ent, lse * keep

    assert torch.autograd.gradcheck(f, (h, w, b))

    def ce(h, w, b):
        return linear_cross_entropy_vocab_parallel(
            h, w, t, vocab_start=0, bias=b, label_smoothing=0.2, z_loss=0.01, reduction="none", chunk_size=3
        )

    assert torch.autograd.gradcheck(ce, (h, w, b))
    # gradients only where asked for: frozen hidden, frozen bias
    w2 = w.detach().clone().requires_grad_()
    loss = linear_cross_entropy_vocab_parallel(h.detach(), w2, t, vocab_start=0, bias=b.detach())
    loss.backward()
    assert w2.grad is not None and torch.isfinite(w2.grad).all()
    # inputs are not modified
    h0, w0 = h.detach().clone(), w.detach().clone()
    linear_logprobs_vocab_parallel(h.detach(), w.detach(), t, vocab_start=0, softcap=3.0)
    assert torch.equal(h0, h.detach()) and torch.equal(w0, w.detach())
