"""CUDA pieces of the LM core: the optional C ABI library (csrc/cuda/logprobs.cu) and the compiled Triton kernels.

The loader tests run anywhere (the library build needs nvcc, and its argument checks run without a GPU). The
numerical tests need a CUDA GPU and skip otherwise; on a GPU machine run them with ``LOGLIK_TEST_GPU=1`` so that
conftest.py does not switch Triton to the interpreter.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from loglik import _cuda_ext  # noqa: E402

IGNORE = -100
HAS_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (and LOGLIK_TEST_GPU=1 so Triton is compiled)")


@pytest.fixture(scope="module")
def built_lib(tmp_path_factory: Any) -> Path:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not available")
    return _cuda_ext.build(tmp_path_factory.mktemp("loglik_cuda"))


def test_loader_is_optional(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOGLIK_CUDA_LIB", str(tmp_path / "missing.so"))
    monkeypatch.setenv("LOGLIK_CUDA_CACHE", str(tmp_path))
    monkeypatch.delenv("LOGLIK_CUDA_JIT", raising=False)
    monkeypatch.setattr(_cuda_ext, "__file__", str(tmp_path / "_cuda_ext.py"))
    _cuda_ext._load_cached.cache_clear()
    try:
        assert _cuda_ext.library_path() is None
        assert _cuda_ext.load() is None
        assert _cuda_ext.available() is False
        assert _cuda_ext.load(tmp_path / "not_a_library.so") is None
    finally:
        _cuda_ext._load_cached.cache_clear()


def test_built_library_exports_the_c_abi(built_lib: Path) -> None:
    lib = _cuda_ext.load(built_lib)
    assert lib is not None
    assert lib.loglik_cuda_abi_version() == _cuda_ext.ABI_VERSION
    # Argument checks happen before any CUDA call, so they work without a GPU.
    rc = lib.loglik_cuda_logprobs_fwd(None, 0, 4, 0, 0, None, IGNORE, 1.0, None, 0.0, None, None, None, None)
    assert rc != 0
    assert b"v >= 1" in lib.loglik_cuda_last_error()
    rc = lib.loglik_cuda_logprobs_fwd(None, 7, 0, 3, 3, None, IGNORE, 1.0, None, 0.0, None, None, None, None)
    assert rc == 0  # n == 0: nothing to do
    rc = lib.loglik_cuda_logprobs_bwd(
        None, 0, 2, 3, 3, None, IGNORE, 1.0, None, 0.0, None, None, None, ctypes.c_void_p(8), None, None, 3, None
    )
    assert rc != 0 and b"entropy" in lib.loglik_cuda_last_error()


def reference(logits: Any, t: Any, *, temperature: Any = 1.0, softcap: float | None = None) -> tuple:
    x = logits.double()
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    temp = temperature.double()[:, None] if isinstance(temperature, torch.Tensor) else temperature
    z = x / temp
    lse = torch.logsumexp(z, 1)
    logp = z - lse[:, None]
    ignored = t == IGNORE
    safe = torch.where(ignored, torch.zeros_like(t), t)
    lp = torch.where(ignored, torch.zeros_like(lse), logp.gather(1, safe[:, None])[:, 0])
    ent = torch.where(ignored, torch.zeros_like(lse), -(logp.exp() * logp).sum(1))
    return lp, lse, ent


def _err(a: Any, b: Any) -> float:
    return float((a.double() - b.double()).abs().max())


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("opts", [{}, {"softcap": 30.0, "temperature": "rows"}, {"temperature": 0.3}])
def test_cuda_logprobs_from_logits(
    built_lib: Path, dtype: Any, opts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGLIK_CUDA_LIB", str(built_lib))
    _cuda_ext._load_cached.cache_clear()
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    n, v = 67, 50257
    logits = (torch.randn(n, v, generator=g, device=dev) * 5).to(dtype)
    t = torch.randint(0, v, (n,), generator=g, device=dev)
    t[3] = IGNORE
    kw: dict[str, Any] = {}
    if opts.get("temperature") == "rows":
        kw["temperature"] = torch.rand(n, generator=g, device=dev) * 2.7 + 0.3
    elif "temperature" in opts:
        kw["temperature"] = opts["temperature"]
    if "softcap" in opts:
        kw["softcap"] = opts["softcap"]
    lp, lse, ent = _cuda_ext.logprobs_fwd(logits, t, return_entropy=True, **kw)
    rlp, rlse, rent = reference(logits, t, **kw)
    assert _err(lp, rlp) < 1e-4 and _err(lse, rlse) < 1e-4 and _err(ent, rent) < 1e-4
    g_lp, g_ent, g_lse = (torch.randn(n, generator=g, device=dev) for _ in range(3))
    grad = _cuda_ext.logprobs_bwd(logits, t, lse, g_lp, g_ent, entropy=ent, grad_lse=g_lse, **kw)
    ld = logits.double().requires_grad_()
    rlp, rlse, rent = reference(ld, t, **kw)
    keep = (t != IGNORE).double()
    ref = torch.autograd.grad((g_lp * rlp + g_ent * rent + keep * g_lse * rlse).sum(), ld)[0]
    tol = 1e-6 if dtype == torch.float32 else 1e-2 * float(ref.abs().max())
    assert grad.dtype == dtype and _err(grad, ref) < tol
    # the Triton logits kernel agrees too
    from loglik.kernels import lm as K

    tlp, tlse, tent = K.logprobs_from_logits_fwd(logits, t, return_entropy=True, **kw)
    assert _err(tlp, rlp) < 1e-4 and _err(tent, rent) < 1e-4
    tgrad = K.logprobs_from_logits_bwd(logits, t, tlse, g_lp, g_ent, entropy=tent, grad_lse=g_lse, **kw)
    assert _err(tgrad, ref) < tol


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_fused_linear_on_gpu(dtype: Any) -> None:
    from loglik.kernels import lm as K

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(1)
    n, d, v = 333, 257, 5003  # odd sizes: partial row, D and vocabulary tiles
    h = torch.randn(n, d, generator=g, device=dev).to(dtype)
    w = (torch.randn(v, d, generator=g, device=dev) * 0.05).to(dtype)
    b = torch.randn(v, generator=g, device=dev).to(dtype)
    t = torch.randint(0, v, (n,), generator=g, device=dev)
    t[::7] = IGNORE
    temp = torch.rand(n, generator=g, device=dev) + 0.5
    lp, lse, ent = K.linear_logprobs_fwd(h, w, t, bias=b, temperature=temp, softcap=20.0, return_entropy=True)
    hd, wd, bd = (x.double().requires_grad_() for x in (h, w, b))
    x = 20.0 * torch.tanh((hd @ wd.T + bd) / 20.0) / temp.double()[:, None]
    logp = torch.log_softmax(x, 1)
    ignored = t == IGNORE
    safe = torch.where(ignored, torch.zeros_like(t), t)
    rlp = torch.where(ignored, 0.0, logp.gather(1, safe[:, None])[:, 0])
    rent = torch.where(ignored, 0.0, -(logp.exp() * logp).sum(1))
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    assert _err(lp, rlp) < tol and _err(ent, rent) < tol
    g_lp, g_ent = torch.randn(n, generator=g, device=dev), torch.randn(n, generator=g, device=dev)
    gh, gw, gb = K.linear_logprobs_bwd(h, w, t, lse, g_lp, g_ent, bias=b, temperature=temp, softcap=20.0, entropy=ent)
    rh, rw, rb = torch.autograd.grad((g_lp * rlp + g_ent * rent).sum(), [hd, wd, bd])
    for got, ref in ((gh, rh), (gw, rw), (gb, rb)):
        assert _err(got, ref) <= 2e-2 * max(float(ref.abs().max()), 1e-3)


def _host_call(lib: Any, logits: Any, t: Any, kw: dict[str, Any], grads: tuple | None = None) -> tuple:
    """Run the host emulation of the CUDA kernels (float32, CPU tensors)."""
    n, v = logits.shape
    logits = logits.contiguous()
    t = t.to(torch.int64).contiguous()
    temp = kw.get("temperature", 1.0)
    rows = (1.0 / temp).float().contiguous() if isinstance(temp, torch.Tensor) else None
    inv = 1.0 if rows is not None else 1.0 / float(temp)
    cap = float(kw.get("softcap") or 0.0)
    lp, lse, ent = torch.empty(n), torch.empty(n), torch.empty(n)
    ptr = _cuda_ext._ptr
    rc = lib.loglik_cuda_host_logprobs_fwd(
        ptr(logits), n, v, v, ptr(t), IGNORE, inv, ptr(rows), cap, ptr(lp), ptr(lse), ptr(ent)
    )
    assert rc == 0
    if grads is None:
        return lp, lse, ent
    g_lp, g_ent, g_lse = (g.float().contiguous() for g in grads)
    grad = torch.empty(n, v)
    rc = lib.loglik_cuda_host_logprobs_bwd(
        ptr(logits), n, v, v, ptr(t), IGNORE, inv, ptr(rows), cap, ptr(lse), ptr(ent), ptr(g_lp), ptr(g_ent),
        ptr(g_lse), ptr(grad), v,
    )  # fmt: skip
    assert rc == 0
    return lp, lse, ent, grad


@pytest.mark.parametrize(
    "opts", [{}, {"softcap": 5.0}, {"temperature": 0.3}, {"temperature": "rows", "softcap": 2.0}, {"scale": 3e3}]
)
def test_cuda_kernel_arithmetic_on_the_host(built_lib: Path, opts: dict[str, Any]) -> None:
    """The CUDA kernels' math (online updates, butterfly merge order, gradient), emulated on the CPU."""
    lib = _cuda_ext.load(built_lib)
    g = torch.Generator().manual_seed(3)
    n, v = 7, 1031  # several elements per virtual thread, a ragged last round
    logits = torch.randn(n, v, generator=g) * opts.get("scale", 4.0)
    t = torch.randint(0, v, (n,), generator=g)
    t[2] = IGNORE
    kw: dict[str, Any] = {}
    if opts.get("temperature") == "rows":
        kw["temperature"] = torch.rand(n, generator=g) * 2.7 + 0.3
    elif "temperature" in opts:
        kw["temperature"] = opts["temperature"]
    if "softcap" in opts:
        kw["softcap"] = opts["softcap"]
    grads = tuple(torch.randn(n, generator=g) for _ in range(3))
    lp, lse, ent, grad = _host_call(lib, logits, t, kw, grads)
    rlp, rlse, rent = reference(logits, t, **kw)
    tol = 4 * torch.finfo(torch.float32).eps * max(1.0, float(rlse.abs().max())) + 2e-6  # float32 rounding of z
    assert _err(lp, rlp) < tol and _err(lse, rlse) < tol and _err(ent, rent) < tol
    assert lp[2] == 0 and ent[2] == 0
    ld = logits.double().requires_grad_()
    rlp, rlse, rent = reference(ld, t, **kw)
    keep = (t != IGNORE).double()
    g_lp, g_ent, g_lse = (x.double() for x in grads)
    ref = torch.autograd.grad((g_lp * rlp + g_ent * rent + keep * g_lse * rlse).sum(), ld)[0]
    assert _err(grad, ref) < 1e-5 * max(1.0, float(ref.abs().max()))
    assert grad[2].abs().max() == 0


_AOT_SCRIPT = r"""
import json, os, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from loglik.kernels import lm as K

out = {}
ptrs = ["OUT_M", "OUT_S", "OUT_A", "OUT_TZ", "OUT_ZS", "LSE", "ENT", "G_LP", "G_ENT", "G_LSE", "G_ZM", "GH", "GW", "GB"]
for dt, tdt in (("bf16", "bfloat16"), ("fp32", "float32")):
    import torch
    types = dict(H="*" + dt, W="*" + dt, L="*" + dt, GL="*" + dt, B="*fp32", T="*i64", TEMP="*fp32",
                 inv_temp="fp32", softcap="fp32", **{p: "*fp32" for p in ptrs})
    jobs = [(K._linear_fwd_kernel, "fwd"), (K._linear_bwd_hidden_kernel, "bwd"), (K._linear_bwd_weight_kernel, "bwd")]
    if dt == "fp32":
        jobs += [(K._logits_fwd_kernel, None), (K._logits_bwd_kernel, None)]
    for kernel, kind in jobs:
        if kind is None:
            consts = dict(HAS_SOFTCAP=True, TEMP_PER_ROW=True, BLOCK_N=4, BLOCK_V=1024)
            opts = {"num_warps": 4}
        else:
            bn, bv, bd, opts = K._launch_config(kind, getattr(torch, tdt), None, None, None, None)
            consts = dict(HAS_BIAS=True, HAS_SOFTCAP=True, TEMP_PER_ROW=True, UPCAST=False, PRECISION="ieee",
                          BLOCK_N=bn, BLOCK_V=bv, BLOCK_D=bd)
        sig = {n: ("constexpr" if n in consts else types.get(n, "i32")) for n in kernel.arg_names}
        src = ASTSource(fn=kernel, signature=sig,
                        constexprs={(kernel.arg_names.index(k),): v for k, v in consts.items()})
        ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
        out[f"{dt}:{kernel.fn.__name__}"] = len(ck.asm["cubin"])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_triton_kernels_compile_for_sm90_without_a_gpu() -> None:
    """Compile the Triton kernels ahead of time for an H100/H200 (sm_90) with their default launch settings.

    The interpreter cannot catch compile-time problems of the real code path (layouts, dot operand types,
    shared memory); this does, with Triton's bundled ptxas and no GPU. It runs in a subprocess because
    conftest.py switched this process to the interpreter.
    """
    triton = pytest.importorskip("triton")
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("Triton was built without its NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    compiled = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(compiled) == 8 and all(size > 0 for size in compiled.values()), compiled
    assert triton.__version__
