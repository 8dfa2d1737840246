"""Loader of the optional CUDA library ``loglik_cuda`` (csrc/cuda/*.cu) and torch wrappers around its C ABI.

The library is never required: :func:`load` returns None when it is missing, and callers fall back to Triton or to
the CPU path. It is found, in order, at

1. ``$LOGLIK_CUDA_LIB`` (a path to the shared library),
2. ``libloglik_cuda.so`` next to this file (installed by CMake with ``-DLOGLIK_CUDA=ON``:
   ``pip install . -Ccmake.define.LOGLIK_CUDA=ON``),
3. a copy built on demand by :func:`build` (``nvcc`` from a source checkout, cached under
   ``$LOGLIK_CUDA_CACHE`` or ``~/.cache/loglik``); :func:`load` builds it automatically only when
   ``LOGLIK_CUDA_JIT=1``.

The C ABI (csrc/include/loglik/logprobs_cuda.hpp) takes raw device pointers, so no torch headers are involved; the
wrappers pass ``tensor.data_ptr()`` and torch's current CUDA stream. Importing this module imports neither torch nor
CUDA.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from . import _backend

__all__ = ["load", "available", "build", "library_path", "logprobs_fwd", "logprobs_bwd", "ABI_VERSION"]

ABI_VERSION = 1
_LIB_NAME = "libloglik_cuda.so"
_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


def _source_dir() -> Path | None:
    """csrc/ of a source checkout (editable install), or None for an installed wheel."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "csrc" / "cuda").is_dir() and (parent / "csrc" / "include" / "loglik").is_dir():
            return parent / "csrc"
    return None


def _cache_dir() -> Path:
    return Path(os.environ.get("LOGLIK_CUDA_CACHE", Path.home() / ".cache" / "loglik"))


def build(out_dir: str | os.PathLike[str] | None = None, *, arch: tuple[str, ...] = ("80", "90")) -> Path:
    """Compile csrc/cuda/*.cu into a shared library with nvcc and return its path.

    Args:
        out_dir: where to put ``libloglik_cuda.so`` (default: the cache directory).
        arch: SM architectures to generate code for (each gets SASS and PTX).

    Raises:
        RuntimeError: nvcc is missing, the sources are not present (installed wheel), or compilation failed.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("loglik CUDA build: nvcc was not found on PATH")
    src = _source_dir()
    if src is None:
        raise RuntimeError("loglik CUDA build: the csrc/ sources are not available (build from a source checkout)")
    sources = sorted(str(p) for p in (src / "cuda").glob("*.cu"))
    out = Path(out_dir) if out_dir is not None else _cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    target = out / _LIB_NAME
    gencode = [f"-gencode=arch=compute_{a},code=[sm_{a},compute_{a}]" for a in arch]
    cmd = [nvcc, "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC", f"-I{src / 'include'}", *gencode]
    cmd += [*sources, "-o", str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"loglik CUDA build failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return target


def library_path() -> Path | None:
    """The first existing candidate path of the library (see the module docstring), or None."""
    env = os.environ.get("LOGLIK_CUDA_LIB")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parent / _LIB_NAME, _cache_dir() / _LIB_NAME]
    for c in candidates:
        if c.is_file():
            return c
    return None


@functools.cache
def _load_cached() -> ctypes.CDLL | None:
    path = library_path()
    if path is None and os.environ.get("LOGLIK_CUDA_JIT") == "1":
        try:
            path = build()
        except RuntimeError:
            return None
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    return _declare(lib)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL | None:
    i64, f32, vp, i32 = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
    try:
        lib.loglik_cuda_abi_version.restype = i32
        if lib.loglik_cuda_abi_version() != ABI_VERSION:
            return None
        lib.loglik_cuda_last_error.restype = ctypes.c_char_p
        lib.loglik_cuda_logprobs_fwd.restype = i32
        lib.loglik_cuda_logprobs_fwd.argtypes = [vp, i32, i64, i64, i64, vp, i64, f32, vp, f32, vp, vp, vp, vp]
        lib.loglik_cuda_logprobs_bwd.restype = i32
        lib.loglik_cuda_logprobs_bwd.argtypes = [vp, i32, i64, i64, i64, vp, i64, f32, vp, f32]
        lib.loglik_cuda_logprobs_bwd.argtypes += [vp, vp, vp, vp, vp, vp, i64, vp]
        lib.loglik_cuda_host_logprobs_fwd.restype = i32
        lib.loglik_cuda_host_logprobs_fwd.argtypes = [vp, i64, i64, i64, vp, i64, f32, vp, f32, vp, vp, vp]
        lib.loglik_cuda_host_logprobs_bwd.restype = i32
        lib.loglik_cuda_host_logprobs_bwd.argtypes = [vp, i64, i64, i64, vp, i64, f32, vp, f32, vp, vp, vp, vp, vp]
        lib.loglik_cuda_host_logprobs_bwd.argtypes += [vp, i64]
    except AttributeError:
        return None
    return lib


def load(path: str | os.PathLike[str] | None = None) -> ctypes.CDLL | None:
    """The loaded library, or None when it is not available (never raises for a missing library).

    Args:
        path: load this file instead of searching (the result is not cached).
    """
    if path is not None:
        try:
            return _declare(ctypes.CDLL(str(path)))
        except OSError:
            return None
    return _load_cached()


def available() -> bool:
    """True when the library loads and torch sees a CUDA device."""
    return _backend.has_cuda() and load() is not None


def _ptr(t: Any) -> int | None:
    return None if t is None else int(t.data_ptr())


def _check(lib: ctypes.CDLL, rc: int) -> None:
    if rc != 0:
        msg = lib.loglik_cuda_last_error().decode(errors="replace")
        raise RuntimeError(f"loglik CUDA kernel failed (code {rc}): {msg}")


def _prepare(logits: Any, targets: Any, temperature: Any, softcap: float | None) -> tuple:
    torch = _backend.torch()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.device.type != "cuda":
        raise ValueError("logits: expected a 2-D CUDA tensor")
    code = _DTYPE_CODES.get(str(logits.dtype).removeprefix("torch."))
    if code is None:
        raise TypeError(f"logits: expected float32, float16 or bfloat16, got {logits.dtype}")
    if logits.shape[1] < 1:
        raise ValueError("logits: needs at least one column")
    if logits.stride(1) != 1 or logits.stride(0) < logits.shape[1]:
        logits = logits.contiguous()
    n = logits.shape[0]
    if not isinstance(targets, torch.Tensor) or targets.shape != (n,):
        raise ValueError(f"targets: expected a tensor of shape ({n},)")
    targets = targets.to(device=logits.device, dtype=torch.int64).contiguous()
    inv_rows = None
    inv = 1.0
    if isinstance(temperature, torch.Tensor) and temperature.ndim > 0:
        if temperature.shape != (n,):
            raise ValueError(f"temperature: expected a float or a tensor of shape ({n},)")
        inv_rows = (1.0 / temperature.detach().to(device=logits.device, dtype=torch.float32)).contiguous()
    else:
        t = float(temperature)
        if not 0 < t < float("inf"):
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
        inv = 1.0 / t
    cap = 0.0
    if softcap is not None:
        cap = float(softcap)
        if not 0 < cap < float("inf"):
            raise ValueError(f"softcap: expected None or a finite number > 0, got {softcap!r}")
    stream = torch.cuda.current_stream(logits.device).cuda_stream
    return logits, code, targets, inv, inv_rows, cap, stream


def _require() -> ctypes.CDLL:
    lib = load()
    if lib is None:
        raise RuntimeError("the loglik CUDA library is not available (see loglik._cuda_ext.build)")
    return lib


def logprobs_fwd(
    logits: Any,
    targets: Any,
    *,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    return_entropy: bool = False,
) -> tuple[Any, Any, Any]:
    """CUDA twin of ``kernels.lm.logprobs_from_logits_fwd``.

    Args:
        logits: [N, V] CUDA float32/float16/bfloat16 tensor (unit column stride; copied otherwise).
        targets: [N] integer tensor; rows equal to ignore_index give logprob 0 and entropy 0.
        temperature: float > 0 or a [N] tensor. softcap: None or c > 0 (c * tanh(x / c) before the temperature).
        ignore_index: target value of ignored rows. return_entropy: also compute the entropy.

    Returns:
        (logprobs [N], lse [N], entropy [N] or None), float32.
    """
    torch = _backend.torch()
    lib = _require()
    logits, code, targets, inv, inv_rows, cap, stream = _prepare(logits, targets, temperature, softcap)
    n, v = logits.shape
    f32 = dict(device=logits.device, dtype=torch.float32)
    logprobs, lse = torch.empty(n, **f32), torch.empty(n, **f32)
    entropy = torch.empty(n, **f32) if return_entropy else None
    rc = lib.loglik_cuda_logprobs_fwd(
        _ptr(logits), code, n, v, logits.stride(0), _ptr(targets), int(ignore_index), inv, _ptr(inv_rows), cap,
        _ptr(logprobs), _ptr(lse), _ptr(entropy), stream,
    )  # fmt: skip
    _check(lib, rc)
    return logprobs, lse, entropy


def logprobs_bwd(
    logits: Any,
    targets: Any,
    lse: Any,
    grad_logprobs: Any,
    grad_entropy: Any = None,
    *,
    temperature: Any = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    entropy: Any = None,
    grad_lse: Any = None,
) -> Any:
    """CUDA twin of ``kernels.lm.logprobs_from_logits_bwd``: grad_logits [N, V] in logits.dtype.

    Args:
        logits, targets, temperature, softcap, ignore_index: as in :func:`logprobs_fwd`.
        lse: [N] from the forward. entropy: [N] from the forward (recomputed when grad_entropy needs it).
        grad_logprobs, grad_entropy, grad_lse: [N] upstream gradients or None (zero).
    """
    torch = _backend.torch()
    lib = _require()
    logits, code, targets, inv, inv_rows, cap, stream = _prepare(logits, targets, temperature, softcap)
    n, v = logits.shape
    if grad_entropy is not None and entropy is None:
        _, _, entropy = logprobs_fwd(
            logits, targets, temperature=temperature, softcap=softcap, ignore_index=ignore_index, return_entropy=True
        )

    def f32(x: Any) -> Any:
        return None if x is None else x.detach().to(device=logits.device, dtype=torch.float32).contiguous()

    lse, entropy, g_lp, g_ent, g_lse = (f32(x) for x in (lse, entropy, grad_logprobs, grad_entropy, grad_lse))
    grad = torch.empty((n, v), device=logits.device, dtype=logits.dtype)
    rc = lib.loglik_cuda_logprobs_bwd(
        _ptr(logits), code, n, v, logits.stride(0), _ptr(targets), int(ignore_index), inv, _ptr(inv_rows), cap,
        _ptr(lse), _ptr(entropy), _ptr(g_lp), _ptr(g_ent), _ptr(g_lse), _ptr(grad), v, stream,
    )  # fmt: skip
    _check(lib, rc)
    return grad
