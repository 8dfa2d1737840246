"""Input validation shared by every domain: clear errors that name the argument, never a silent NaN.

Functions that take numpy arrays or torch tensors convert with :func:`as_float_array` and give results back in the
caller's type with :func:`like_input`.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import _backend

__all__ = ["as_float_array", "check_bool", "check_int", "check_positive", "check_choice", "like_input", "to_numpy"]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view of x (numpy array, torch tensor on any device, or nested sequence) without modifying it."""
    if _backend.is_torch(x):
        t = x.detach().cpu()
        if t.dtype == _backend.torch().bfloat16:  # numpy has no bfloat16; float32 holds every bfloat16 exactly
            t = t.float()
        return t.numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{name}: expected an array-like of numbers, got {type(x).__name__}") from exc


def as_float_array(
    x: Any,
    name: str,
    *,
    ndim: int | None = None,
    dtypes: tuple[type, ...] = (np.float32, np.float64),
    finite: bool = True,
    min_rows: int = 1,
) -> np.ndarray:
    """Validate and return a C-contiguous float array (float32 stays float32; ints and bools become float64).

    Raises ValueError naming ``name`` for a wrong number of dimensions, too few rows, or non-finite values, and
    TypeError for a non-numeric dtype. The input is never modified: a copy is made whenever conversion is needed.
    """
    a = to_numpy(x, name)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{name}: complex values are not supported")
    if a.dtype not in dtypes:
        a = a.astype(dtypes[-1] if np.dtype(a.dtype).itemsize > 4 or a.dtype.kind in "iub" else dtypes[0])
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(a.shape)}")
    if a.ndim >= 1 and a.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} row(s), got shape {tuple(a.shape)}")
    if finite and not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return np.ascontiguousarray(a)


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An int in [low, high] (bounds inclusive), or a ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name}: expected >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name}: expected <= {high}, got {v}")
    return v


def check_bool(value: Any, name: str) -> bool:
    """A Python bool from a bool or numpy.bool_, or a TypeError naming ``name``.

    Truthy stand-ins are refused on purpose: ``flag="false"`` or ``flag="no"`` would otherwise silently mean True,
    and ``0``/``1`` usually mean a count was passed to the wrong argument.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected a bool (True or False), got {value!r}")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite float > 0 (or >= 0 with allow_zero)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return str(value)


def like_input(result: np.ndarray, template: Any) -> Any:
    """Return ``result`` as a torch tensor on the template's device when the template is a tensor."""
    if _backend.is_torch(template):
        torch = _backend.torch()
        return torch.from_numpy(np.ascontiguousarray(result)).to(template.device)
    return result
