"""``loglik eels FILE``: per-pixel anomaly map of an EELS spectrum image (CVAE3D or PCA).

FILE is a .dm3/.dm4/.hspy/.msa spectrum image (read through rosettasciio, the ``eels`` extra), a .npy array
(X, Y, E), or the word ``synthetic`` for the built-in Fe L-edge benchmark cube. Writes ``<out>_scores.npy`` (X, Y)
and ``<out>_anomaly.png``; shows a progress bar while the CVAE trains.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HELP = "anomaly map of an EELS spectrum image (CVAE3D or PCA): writes a PNG and the scores as .npy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="spectrum image (.dm3/.dm4/.hspy/.msa/.npy) or 'synthetic'")
    parser.add_argument("--method", choices=("cvae", "pca"), default="cvae")
    parser.add_argument("--score", choices=("deviance", "nll", "correlation"), default="deviance")
    parser.add_argument(
        "--window", nargs=2, type=float, default=None, metavar=("LO", "HI"),
        help="energy window for the score, in eV (channels if the file has no energy axis)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=100, help="CVAE training epochs (4 steps each on a 64 x 64 map)")
    parser.add_argument("--latent-dim", type=int, default=4)
    parser.add_argument("--likelihood", choices=("gaussian", "poisson"), default="gaussian")
    parser.add_argument("--components", type=int, default=4, help="PCA components")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=2.0, help="edge shift (eV) of the synthetic cube")
    parser.add_argument(
        "--train",
        default=None,
        help="spectrum image of bulk (normal) material to fit the model on, the paper's protocol; for 'synthetic' a "
        "separate bulk cube is generated. Without it the model is fitted on FILE itself, where a large anomalous "
        "region can be absorbed by the model",
    )
    parser.add_argument("--out", default=None, help="output prefix (default: next to FILE, or ./eels_synthetic)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    # Bad input (a file's contents, a window, a count) is reported in one line with exit status 2, as argparse does.
    try:
        return _run(args)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        print(f"loglik eels: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import loglik

    mask = None
    train_cube = None
    if args.file == "synthetic":
        data = loglik.synthetic_fe_spectrum_image((64, 64), 1024, shift_ev=args.shift, seed=args.seed)
        cube, energy, mask = data["cube"], data["energy"], data["mask"]
        prefix = args.out or "eels_synthetic"
        if args.train is None:  # bulk material: same generator, no shifted region, another seed
            bulk = loglik.synthetic_fe_spectrum_image((64, 64), 1024, anomaly_fraction=0.0, seed=args.seed + 1)
            train_cube = bulk["cube"]
    else:
        data = loglik.load_spectrum_image(args.file)
        cube, energy = data["cube"], data["energy"]
        prefix = args.out or os.path.splitext(args.file)[0]
    if args.train is not None:
        try:
            train_cube = loglik.load_spectrum_image(args.train)["cube"]
        except (ImportError, ValueError, TypeError, OSError) as exc:
            raise type(exc)(f"--train: {exc}") from None
    print(f"spectrum image {cube.shape[0]} x {cube.shape[1]} pixels x {cube.shape[2]} channels "
          f"({energy[0]:.1f}-{energy[-1]:.1f})", flush=True)  # fmt: skip
    window = tuple(args.window) if args.window else None
    if args.method == "cvae":
        scores = loglik.eels_anomaly_scores(
            cube, "cvae", score=args.score, window=window, energy=energy, epochs=args.epochs,
            latent_dim=args.latent_dim, likelihood=args.likelihood, seed=args.seed, progress=not args.no_progress,
            train_cube=train_cube,
        )  # fmt: skip
    else:
        scores = loglik.pca_anomaly_scores(
            cube, args.components, score=args.score, window=window, energy=energy, train_cube=train_cube
        )
    np.save(prefix + "_scores.npy", scores)
    _plot(prefix + "_anomaly.png", cube, scores, mask, f"{args.method} ({args.score})")
    if mask is not None:
        from sklearn.metrics import roc_auc_score

        print(f"ROC AUC against the true shifted region: {roc_auc_score(mask.ravel(), scores.ravel()):.4f}")
    print(f"scores: {prefix}_scores.npy\nmap:    {prefix}_anomaly.png")
    return 0


def _plot(path: str, cube: np.ndarray, scores: np.ndarray, mask: np.ndarray | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if mask is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.6))
    im = axes[0].imshow(cube.sum(axis=2).T, origin="lower", cmap="gray")
    axes[0].set_title("total counts")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    im = axes[1].imshow(scores.T, origin="lower", cmap="inferno")
    axes[1].set_title(f"anomaly score: {title}")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    if mask is not None:
        axes[2].imshow(mask.T, origin="lower", cmap="gray")
        axes[2].set_title("true shifted region")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
