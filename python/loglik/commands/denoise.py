"""``loglik denoise``: Noise2Score on a real image that ships with scikit-image, trained on the noisy image alone.

For each noise model (Gaussian sigma = 25/255, Poisson zeta = 0.01, Gamma k = 100) the clean image is corrupted, a
small noise-conditional CNN learns the score of the noisy image's patch distribution with the AR-DAE loss
(:func:`loglik.ardae_loss`, perturbation annealed with :func:`loglik.ardae_sigma`), and Tweedie's formula
(:func:`loglik.tweedie_denoise`) turns the learned score into the denoised image. The clean image is used only to
report PSNR. A PNG with clean / noisy / denoised panels is written.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

HELP = "Noise2Score demo: learn a score from one noisy image (AR-DAE) and denoise it with Tweedie's formula"

NOISES = ("gaussian", "poisson", "gamma")
IMAGES = ("camera", "coins", "moon", "text", "brick", "grass", "gravel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--noise", choices=(*NOISES, "all"), default="all", help="noise model (default: all)")
    parser.add_argument("--image", choices=IMAGES, default="camera", help="scikit-image test image (default: camera)")
    parser.add_argument("--size", type=int, default=128, help="side of the (downsampled, cropped) image (128)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per noise model (default: 1000)")
    parser.add_argument("--batch", type=int, default=16, help="patches per step (default: 16)")
    parser.add_argument("--patch", type=int, default=40, help="training patch side (default: 40)")
    parser.add_argument("--width", type=int, default=32, help="hidden channels of the CNN (default: 32)")
    parser.add_argument("--depth", type=int, default=6, help="3x3 convolutions of the CNN (default: 6)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: 2e-3)")
    parser.add_argument("--sigma-max", type=float, default=0.1, help="AR-DAE perturbation at the start (0.1)")
    parser.add_argument("--sigma-min", type=float, default=0.01, help="AR-DAE perturbation at the end (0.01)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", default="denoise.png", help="PNG to write (default: denoise.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for training (default: 1; a net this small gains little from more, and on a busy "
        "machine oversubscribed torch threads run several times slower)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny image and a few steps (smoke test, seconds)")


def load_image(name: str, size: int) -> np.ndarray:
    """A bundled scikit-image test image as float64 in [0, 1], box-downsampled to about ``size`` and center-cropped."""
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    img = img.astype(np.float64)
    img = img / 255.0 if img.max() > 1.5 else img
    factor = max(1, min(img.shape) // (2 * size))
    if factor > 1:
        h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
        img = img[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    if top < 0 or left < 0:
        raise ValueError(f"--size: {size} is larger than the image {img.shape}")
    return np.ascontiguousarray(img[top : top + size, left : left + size])


NOISE_PARAMS = {"gaussian": {"sigma": 25.0 / 255.0}, "poisson": {"zeta": 0.01}, "gamma": {"k": 100.0}}


def corrupt(clean: np.ndarray, noise: str, rng: np.random.Generator) -> np.ndarray:
    """Noisy observation of ``clean`` under the named noise model (parameters in NOISE_PARAMS)."""
    p = NOISE_PARAMS[noise]
    if noise == "gaussian":
        return clean + p["sigma"] * rng.standard_normal(clean.shape)
    if noise == "poisson":
        return p["zeta"] * rng.poisson(clean / p["zeta"]).astype(np.float64)
    k = p["k"]
    return rng.gamma(k, clean / k)


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = float(np.mean((np.clip(estimate, 0, 1) - clean) ** 2))
    return 10.0 * math.log10(1.0 / mse)


def train_score(noisy: np.ndarray, args: argparse.Namespace, seed: int) -> tuple[Any, float]:
    """Fit a ScoreCNN to the noisy image with the AR-DAE loss; returns (model, seconds)."""
    import torch

    from ..score import ardae_loss, ardae_sigma
    from ..score_nets import ScoreCNN

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    img = torch.from_numpy(noisy).float()[None, None]
    model = ScoreCNN(1, args.width, args.depth, sigma_ref=args.sigma_max)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr * 0.05)
    side = img.shape[-1]
    p = min(args.patch, side)
    t0 = time.perf_counter()
    for step in range(args.steps):
        ys = torch.randint(0, side - p + 1, (args.batch,), generator=gen)
        xs = torch.randint(0, side - p + 1, (args.batch,), generator=gen)
        batch = torch.stack([img[0, :, a : a + p, b : b + p] for a, b in zip(ys.tolist(), xs.tolist(), strict=True)])
        flips = torch.randint(0, 8, (1,), generator=gen).item()  # dihedral augmentation (one per batch)
        batch = torch.rot90(batch, int(flips) % 4, dims=(2, 3))
        if flips >= 4:
            batch = torch.flip(batch, dims=(3,))
        # per-example sigma_a: log-uniform between sigma_min and the annealed upper end
        hi = ardae_sigma(step, args.steps, args.sigma_max, args.sigma_min)
        u = torch.rand(args.batch, generator=gen)
        sig = args.sigma_min * (hi / args.sigma_min) ** u
        loss = ardae_loss(model, batch, sig, pass_sigma=True, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model, time.perf_counter() - t0


def denoise_one(clean: np.ndarray, noise: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import torch

    from ..score import tweedie_denoise

    rng = np.random.default_rng(seed)
    noisy = corrupt(clean, noise, rng)
    model, seconds = train_score(noisy, args, seed)
    with torch.no_grad():
        y = torch.from_numpy(noisy).float()[None, None]
        s = model(y, torch.full((1,), args.sigma_min))
    score = s[0, 0].double().numpy()
    est = tweedie_denoise(noisy, score, noise, **NOISE_PARAMS[noise])
    return {
        "noise": noise,
        "noisy": noisy,
        "denoised": est,
        "psnr_noisy": psnr(noisy, clean),
        "psnr_denoised": psnr(est, clean),
        "seconds": seconds,
    }


def main(args: argparse.Namespace) -> int:
    import torch

    # checked before --quick replaces the sizes, so that a bad value is reported even with --quick
    for name in ("size", "steps", "batch", "patch", "width", "depth", "torch_threads"):
        if getattr(args, name) < (2 if name == "depth" else 1):
            raise SystemExit(f"loglik denoise: --{name.replace('_', '-')} must be positive")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise SystemExit("loglik denoise: --lr must be a finite number > 0")
    if args.quick:
        args.size, args.steps, args.batch, args.patch, args.width, args.depth = 32, 20, 4, 24, 8, 3
    if not (0 < args.sigma_min <= args.sigma_max and math.isfinite(args.sigma_max)):
        raise SystemExit("loglik denoise: need 0 < --sigma-min <= --sigma-max < inf")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace) -> int:
    import torch

    clean = load_image(args.image, args.size)
    noises = list(NOISES) if args.noise == "all" else [args.noise]
    print(
        f"image {args.image} {clean.shape[0]}x{clean.shape[1]}, {args.steps} steps x {args.batch} patches of "
        f"{args.patch}px, CNN width {args.width} depth {args.depth}, torch threads {torch.get_num_threads()}"
    )
    results = []
    for i, noise in enumerate(noises):
        res = denoise_one(clean, noise, args, args.seed + i)
        gain = res["psnr_denoised"] - res["psnr_noisy"]
        params = ", ".join(f"{k}={v:.4g}" for k, v in NOISE_PARAMS[noise].items())
        print(
            f"{noise:9s} ({params}): PSNR noisy {res['psnr_noisy']:.2f} dB -> denoised {res['psnr_denoised']:.2f} dB "
            f"(gain {gain:+.2f} dB), training {res['seconds']:.1f} s",
            flush=True,
        )
        results.append(res)
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(results), 3, figsize=(9, 3 * len(results)), squeeze=False)
        for row, res in zip(axes, results, strict=True):
            panels = [
                (clean, "clean"),
                (res["noisy"], f"{res['noise']} noisy {res['psnr_noisy']:.2f} dB"),
                (res["denoised"], f"Noise2Score {res['psnr_denoised']:.2f} dB"),
            ]
            for ax, (im, title) in zip(row, panels, strict=True):
                ax.imshow(np.clip(im, 0, 1), cmap="gray", vmin=0, vmax=1)
                ax.set_title(title, fontsize=9)
                ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        plt.close(fig)
        print(f"wrote {args.out}")
    return 0
