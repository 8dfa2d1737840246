"""The package itself: import cost, no CUDA initialisation, info, thread control."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import loglik
from loglik import cli


def test_import_does_not_import_torch_triton_or_sklearn() -> None:
    code = "import sys, loglik; print(json.dumps([m in sys.modules for m in ('torch', 'triton', 'sklearn')]))"
    out = subprocess.run([sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False, False]


def test_import_never_initialises_cuda() -> None:
    code = "import torch, loglik, loglik.kernels; print(torch.cuda.is_initialized())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_compiled_core_and_info() -> None:
    assert loglik.has_compiled()
    got = cli.info()
    assert got["compiled"] is True
    assert "OpenBLAS" in str(got["blas"])
    assert isinstance(got["cpu_features"], dict)


def test_set_num_threads_roundtrip() -> None:
    before = loglik.get_num_threads()
    try:
        loglik.set_num_threads(1)
        assert loglik.get_num_threads() == 1
    finally:
        loglik.set_num_threads(before)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n: expected a positive int"):
            loglik.set_num_threads(bad)
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="n: expected a positive int"):
            loglik.set_num_threads(bad)


def test_absurd_omp_num_threads_is_capped_not_a_crash() -> None:
    # OMP_NUM_THREADS=100000 used to segfault the first parallel region
    code = "import loglik, numpy as np; print(loglik.get_num_threads()); loglik.kmeans(np.ones((300, 2)), 1)"
    env = {**os.environ, "OMP_NUM_THREADS": "100000"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 1 <= int(out.stdout.split()[0]) <= 100000


def test_cli_info_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info"]) == 0
    assert "build_flags" in capsys.readouterr().out


def test_public_names_are_documented() -> None:
    for name in loglik.__all__:
        obj = getattr(loglik, name)
        if callable(obj):
            assert obj.__doc__, f"loglik.{name} has no docstring"
