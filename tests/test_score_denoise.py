"""Smoke and accuracy tests of the ``loglik denoise`` demo (Noise2Score on a bundled scikit-image image)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("skimage")

from loglik.commands import denoise  # noqa: E402


def _args(**kw):
    parser = argparse.ArgumentParser()
    denoise.add_arguments(parser)
    args = parser.parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_quick_run_writes_png(tmp_path, capsys):
    out = tmp_path / "d.png"
    assert denoise.main(_args(quick=True, out=str(out))) == 0
    text = capsys.readouterr().out
    for noise in denoise.NOISES:
        assert noise in text
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("noise", denoise.NOISES)
def test_corrupt_has_the_stated_statistics(noise):
    rng = np.random.default_rng(0)
    clean = np.full(200_000, 0.4)
    y = denoise.corrupt(clean, noise, rng)
    p = denoise.NOISE_PARAMS[noise]
    var = {"gaussian": p.get("sigma", 0) ** 2, "poisson": 0.4 * p.get("zeta", 0), "gamma": 0.16 / p.get("k", 1)}[noise]
    assert abs(y.mean() - 0.4) < 5 * np.sqrt(var / y.size)
    assert y.var() == pytest.approx(var, rel=0.02)


def test_load_image_and_psnr():
    img = denoise.load_image("camera", 64)
    assert img.shape == (64, 64) and 0 <= img.min() and img.max() <= 1
    assert denoise.psnr(img, img + 0.1) == pytest.approx(20.0)


@pytest.mark.slow
def test_short_training_improves_psnr_gaussian():
    import torch

    args = _args(noise="gaussian", size=48, steps=150, patch=32, no_plot=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = denoise.denoise_one(denoise.load_image("camera", 48), "gaussian", args, 0)
    finally:
        torch.set_num_threads(threads)
    assert res["psnr_denoised"] > res["psnr_noisy"] + 2.0


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"steps": 0}, "--steps"),
        ({"batch": -1}, "--batch"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"sigma_max": float("inf")}, "--sigma-max"),
    ],
)
def test_bad_arguments_are_reported_even_with_quick(kw, match):
    # Regression: --quick silently replaced a bad --steps/--batch, --lr was never checked, and --sigma-max inf
    # ended in a ValueError traceback from ardae_sigma.
    with pytest.raises(SystemExit, match=match):
        denoise.main(_args(quick=True, no_plot=True, **kw))
