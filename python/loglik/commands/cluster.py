"""``loglik cluster FILE.csv --k K --method ila-sdp|sdp|em|kmeans``: cluster the rows of a CSV file.

Writes the labels as CSV (``row,label``) and a scatter plot (PNG) of the points coloured by cluster, on the first
two principal components when there are more than two columns. A header row is detected (a first row that is not
all numbers); ``--truth-column`` names (or indexes) a column of known classes, which is then left out of the
features and used to print the mis-clustering error.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from typing import Any

import numpy as np

HELP = "cluster the rows of a CSV file (iLA-SDP, K-means SDP, EM or K-means); writes labels and a scatter plot"

METHODS = ("ila-sdp", "sdp", "em", "kmeans")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="CSV file, one point per row (an optional header row is detected)")
    parser.add_argument("--k", type=int, required=True, help="number of clusters")
    parser.add_argument("--method", choices=METHODS, default="ila-sdp", help="clustering method (default: ila-sdp)")
    parser.add_argument("--out", default=None, help="labels CSV to write (default: FILE.labels.csv)")
    parser.add_argument("--plot", default=None, help="scatter plot PNG to write (default: FILE.clusters.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the plot")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--standardize", action="store_true", help="scale every column to unit variance first")
    parser.add_argument(
        "--covariance", choices=("full", "diag", "spherical"), default="full", help="EM covariance type"
    )
    parser.add_argument("--n-init", type=int, default=1, help="restarts for em / kmeans (default: 1)")
    parser.add_argument(
        "--truth-column", default=None, help="column (name or 0-based index) of known classes: excluded, scored"
    )


def read_csv(path: str, truth_column: str | None = None) -> tuple[np.ndarray, list[str] | None, np.ndarray | None]:
    """(X (n, p) float64, header or None, truth labels or None). Raises ValueError with the file and row."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: no data rows")

    def numeric(r: list[str]) -> bool:
        try:
            [float(c) for c in r]
        except ValueError:
            return False
        return True

    header = None
    if not numeric(rows[0]):
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path}: no data rows after the header")
    width = len(rows[0])
    truth_idx = None
    if truth_column is not None:
        if header is not None and truth_column in header:
            truth_idx = header.index(truth_column)
        elif truth_column.lstrip("-").isdigit():
            if not -width <= int(truth_column) < width:  # the modulo alone silently scored another column
                raise ValueError(f"--truth-column: index {truth_column} out of range for {width} columns in {path}")
            truth_idx = int(truth_column) % width
        else:
            raise ValueError(f"--truth-column: no column {truth_column!r} in {path}")
    truth_raw: list[str] = []
    data: list[list[float]] = []
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"{path}: row {i + 1 + (header is not None)} has {len(r)} fields, expected {width}")
        if truth_idx is not None:
            truth_raw.append(r[truth_idx].strip())
            r = r[:truth_idx] + r[truth_idx + 1 :]
        try:
            data.append([float(c) for c in r])
        except ValueError as exc:
            raise ValueError(f"{path}: row {i + 1 + (header is not None)}: {exc}") from None
    X = np.array(data, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"{path}: no feature columns")
    truth = None
    if truth_idx is not None:
        _, truth = np.unique(np.array(truth_raw), return_inverse=True)
        if header is not None:
            header = header[:truth_idx] + header[truth_idx + 1 :]
    return X, header, truth


def run_method(X: np.ndarray, k: int, method: str, *, seed: int, n_init: int, covariance: str) -> tuple[Any, str]:
    """(labels int64 (n,), one-line summary of the solver's result)."""
    from loglik import mixture

    if method == "kmeans":
        km = mixture.kmeans(X, k, n_init=n_init, seed=seed)
        return km.labels, f"inertia={km.inertia:.6g} n_iter={km.n_iter}"
    if method == "em":
        r = mixture.gmm_em(X, k, covariance, n_init=n_init, seed=seed)
        return r.labels, f"mean log-likelihood={r.log_likelihood:.6g} n_iter={r.n_iter} converged={r.converged}"
    from loglik import sdp

    name = "ila_sdp" if method == "ila-sdp" else "kmeans_sdp"
    fn = getattr(sdp, name, None)
    if fn is None:
        raise RuntimeError(f"--method {method}: loglik.{name} is not available in this build")
    r = fn(X, k, seed=seed)
    return np.asarray(
        r.labels, dtype=np.int64
    ), f"objective={r.objective:.6g} n_iter={r.n_iter} converged={r.converged}"


def principal_components(X: np.ndarray, n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(scores (rows, n), explained variance ratio (n,)) of the centred data, by SVD."""
    Xc = X - X.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    var = s**2
    return Xc @ vt[:n].T, var[:n] / max(var.sum(), np.finfo(np.float64).tiny)


def scatter_plot(path: str, X: np.ndarray, labels: np.ndarray, title: str, header: list[str] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = X.shape[1]
    if p > 2:
        Z, ratio = principal_components(X)
        xlabel, ylabel = f"PC1 ({ratio[0]:.0%})", f"PC2 ({ratio[1]:.0%})"
    elif p == 2:
        Z = X
        xlabel, ylabel = (header or ["x0", "x1"])[:2]
    else:
        Z = np.c_[X[:, 0], np.zeros(len(X))]
        xlabel, ylabel = (header or ["x0"])[0], ""
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(Z[:, 0], Z[:, 1], c=labels, cmap="tab10" if labels.max() < 10 else "tab20", s=12, alpha=0.85)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(*sc.legend_elements(), title="cluster", fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from loglik.mixture import misclustering_error

    try:
        X, header, truth = read_csv(args.file, args.truth_column)
    except (OSError, ValueError) as exc:
        print(f"loglik cluster: {exc}", file=sys.stderr)
        return 2
    if not np.isfinite(X).all():
        print(f"loglik cluster: {args.file} contains NaN or infinite values", file=sys.stderr)
        return 2
    if args.standardize:
        sd = X.std(0)
        X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    stem = os.path.splitext(args.file)[0]
    out = args.out or stem + ".labels.csv"
    png = args.plot or stem + ".clusters.png"
    t0 = time.perf_counter()
    try:
        labels, summary = run_method(
            X, args.k, args.method, seed=args.seed, n_init=args.n_init, covariance=args.covariance
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"loglik cluster: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    try:
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "label"])
            w.writerows(zip(range(len(labels)), labels.tolist(), strict=True))
    except OSError as exc:
        print(f"loglik cluster: --out: cannot write {out!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    sizes = np.bincount(labels, minlength=args.k)
    print(f"{args.method}: n={X.shape[0]} p={X.shape[1]} K={args.k} in {seconds:.3f} s; {summary}")
    print(f"cluster sizes: {sizes.tolist()}")
    if truth is not None:
        print(f"mis-clustering error vs {args.truth_column!r}: {misclustering_error(labels, truth):.4f}")
    print(f"labels: {out}")
    if not args.no_plot:
        title = f"loglik cluster --method {args.method} --k {args.k}: {os.path.basename(args.file)}"
        try:
            scatter_plot(png, X, labels, title, header)
        except OSError as exc:
            print(f"loglik cluster: --plot: cannot write {png!r}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"plot:   {png}")
    return 0
