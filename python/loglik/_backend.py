"""Lazy access to the optional pieces: the compiled core ``_C``, torch and Triton.

Importing loglik imports numpy only. torch and Triton are imported on first use, and nothing here ever initialises
CUDA: ``has_cuda()`` asks torch only when torch is already importable and never allocates on a device.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

__all__ = [
    "C",
    "has_compiled",
    "has_torch",
    "has_triton",
    "has_cuda",
    "torch",
    "is_torch",
    "set_num_threads",
    "get_num_threads",
]


def _thread_limit() -> int:
    return max(1024, 4 * (os.cpu_count() or 1))


@functools.cache
def _load_C() -> ModuleType | None:
    try:
        mod = importlib.import_module("loglik._C")
    except ImportError:
        return None
    # OMP_NUM_THREADS=100000 made the first OpenMP region segfault (the thread stacks cannot be mapped): cap it
    limit = _thread_limit()
    if mod.get_num_threads() > limit:
        mod.set_num_threads(limit)
    return mod


def has_compiled() -> bool:
    """True when the C++ extension ``loglik._C`` was built and imports."""
    return _load_C() is not None


def C() -> Any:
    """The compiled core; raises ImportError with a build hint if it is missing."""
    mod = _load_C()
    if mod is None:
        raise ImportError(
            "loglik._C (the compiled core) is not available: reinstall loglik with `pip install .` "
            "so that the C++ extension is built"
        )
    return mod


@functools.cache
def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch() -> Any:
    """Import and return torch (raises ImportError with an install hint if missing)."""
    mod = sys.modules.get("torch")  # already imported: no import machinery (torch.compile cannot trace it)
    if mod is not None:
        return mod
    if not has_torch():
        raise ImportError("this loglik function needs PyTorch: pip install torch==2.13.0")
    return importlib.import_module("torch")


def is_torch(x: object) -> bool:
    """True when x is a torch.Tensor, without importing torch if it was never imported."""
    # torch.Tensor anywhere in the class hierarchy: Parameter, and users' own Tensor subclasses too
    return any(c.__name__ == "Tensor" and c.__module__ == "torch" for c in type(x).__mro__)


@functools.cache
def has_triton() -> bool:
    """True when Triton is importable (its kernels run on a GPU, or on CPU under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


def has_cuda() -> bool:
    """True when torch is installed with CUDA support and a CUDA device is visible."""
    if not has_torch():
        return False
    t = torch()
    return bool(t.cuda.is_available())


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def set_num_threads(n: int) -> None:
    """Set the number of threads of loglik's C++ kernels (OpenMP) and of the OpenBLAS it links.

    The default is ``OMP_NUM_THREADS`` or the number of cores. numpy's and torch's own thread pools are not
    touched; loglik never calls into them from inside its parallel regions.
    """
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n: expected a positive int, got {n!r}")
    if n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    # an absurd count made the next OpenMP region segfault (100000 threads: their stacks cannot be mapped)
    limit = _thread_limit()
    if n > limit:
        raise ValueError(
            f"n: expected at most {limit} threads (4 x the {os.cpu_count()} cores, at least 1024), got {n}"
        )
    C().set_num_threads(n)


def get_num_threads() -> int:
    """The thread count loglik's C++ kernels use."""
    return int(C().get_num_threads())
