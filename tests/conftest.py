"""Shared test settings: Triton runs interpreted on CPU when no GPU is present; hypothesis profiles."""

from __future__ import annotations

import os

# Must be set before Triton is imported anywhere: without a GPU, Triton kernels run under the interpreter.
if os.environ.get("LOGLIK_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
