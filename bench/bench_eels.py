"""``loglik bench eels``: ROC AUC of CVAE3D against PCA (3, 4, 5 components) for Fe L-edge shift detection.

Data: :func:`loglik.synthetic_fe_spectrum_image` - the real L2,3 edge shipped with exspy moved to the Fe L3
energy, Poisson noise, smooth thickness and background variation, and a compact region (1% or 5% of the pixels)
whose edge is shifted by 0.5, 1, 2, 4 or 8 eV. Both methods score every pixel by the same rule, the Poisson
deviance of its counts against its reconstruction (CVAE3D: Gaussian likelihood with learned per-channel variance,
reconstruction from the latent mean; PCA: Poisson-scaled PCA), over the whole spectrum and, in separate cases,
over the window 690-760 eV around the Fe L2,3 edge (chosen from where the edge is, not tuned on the mask). The
AUC compares the scores with the true mask. Protocol of the paper: each method is fitted on a separate cube of
bulk spectra (same generator, no shifted region, another seed) and scores the test cube. One CVAE3D is trained
per seed and scores every test cube of that seed (the bulk cube does not depend on the shift or the fraction).
The bulk reference has as many pixels as the test cube but is made of ``bulk_regions`` independent bulk cubes
(2 x 2 tiles of half the size, each with its own thickness and background maps), like bulk spectra collected from
several areas of a specimen: a single bulk cube covers only one smooth patch of background shapes and both methods
then misfit part of the test cube's bulk (docs/conv.md has the numbers for ``bulk_regions=1`` too).

Full run: 64 x 64 pixels x 1024 channels (the paper's cube size), 3 seeds, CVAE3D with the library defaults
(100 epochs = 400 Adam steps of 4 random 16 x 16 tiles, cosine decay from lr 5e-3). Quick mode: 32 x 32 x 512,
shifts 0.5 and 2 eV at 5%, one seed, 40 steps. ``seconds``: CVAE3D = its training time + scoring one cube (mean
over seeds); PCA = fit on the bulk cube + scoring. Metrics: mean AUC over seeds, its min and max, and ``sep`` =
(mean score of shifted pixels - mean of normal pixels) / standard deviation of normal pixels (mean over seeds).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._harness import Row

WINDOW_EV = (690.0, 760.0)
FULL: dict[str, Any] = {
    "shape": (64, 64), "n_energy": 1024, "shifts": (0.5, 1.0, 2.0, 4.0, 8.0), "fractions": (0.01, 0.05),
    "seeds": (0, 1, 2), "epochs": 100, "bulk_regions": 4,
}  # fmt: skip
QUICK: dict[str, Any] = {
    "shape": (32, 32), "n_energy": 512, "shifts": (0.5, 2.0), "fractions": (0.05,), "seeds": (0,), "epochs": 40,
    "bulk_regions": 4,
}  # fmt: skip


def bulk_reference(shape: tuple[int, int], n_energy: int, seed: int, regions: int) -> np.ndarray:
    """(X, Y, E) bulk cube: one synthetic cube (regions=1) or 2 x 2 tiles of independent half-size cubes (4)."""
    import loglik

    if regions == 1:
        return loglik.synthetic_fe_spectrum_image(shape, n_energy, anomaly_fraction=0.0, seed=2000 + seed)["cube"]
    if regions != 4:
        raise ValueError(f"bulk_regions: expected 1 or 4, got {regions!r}")
    half = (shape[0] // 2, shape[1] // 2)
    tiles = [
        loglik.synthetic_fe_spectrum_image(half, n_energy, anomaly_fraction=0.0, seed=3000 + 10 * seed + i)["cube"]
        for i in range(4)
    ]
    return np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)


def _auc(mask: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(mask.ravel(), scores.ravel()))


def _sep(mask: np.ndarray, scores: np.ndarray) -> float:
    normal = scores[~mask]
    return float((scores[mask].mean() - normal.mean()) / max(normal.std(), 1e-300))


def run(quick: bool = False) -> list[Row]:
    import loglik

    cfg = QUICK if quick else FULL
    shape, ne = cfg["shape"], cfg["n_energy"]
    # results[(frac, shift, windowed)][impl] -> list of (auc, sep, seconds) over seeds
    results: dict[tuple[float, float, bool], dict[str, list[tuple[float, float, float]]]] = {}
    for seed in cfg["seeds"]:
        bulk = bulk_reference(shape, ne, seed, cfg["bulk_regions"])
        t0 = time.perf_counter()
        _, model = loglik.eels_anomaly_scores(
            bulk[:2, :2], "cvae", epochs=cfg["epochs"], seed=seed, train_cube=bulk, return_model=True
        )
        t_train = time.perf_counter() - t0
        print(f"  seed {seed}: CVAE3D trained on the bulk cube in {t_train:.1f} s", flush=True)
        for frac in cfg["fractions"]:
            for shift in cfg["shifts"]:
                data = loglik.synthetic_fe_spectrum_image(
                    shape, ne, shift_ev=shift, anomaly_fraction=frac, seed=1000 + seed
                )
                cube, mask, energy = data["cube"], data["mask"], data["energy"]
                for windowed in (False, True):
                    win: dict[str, Any] = {"window": WINDOW_EV, "energy": energy} if windowed else {}
                    res = results.setdefault((frac, shift, windowed), {})
                    t0 = time.perf_counter()
                    s = loglik.eels_anomaly_scores(cube, model=model, **win)
                    secs = t_train + time.perf_counter() - t0
                    res.setdefault("loglik CVAE3D", []).append((_auc(mask, s), _sep(mask, s), secs))
                    for k in (3, 4, 5):
                        t0 = time.perf_counter()
                        s = loglik.pca_anomaly_scores(cube, k, train_cube=bulk, **win)
                        secs = time.perf_counter() - t0
                        res.setdefault(f"PCA k={k}", []).append((_auc(mask, s), _sep(mask, s), secs))
    rows: list[Row] = []
    for (frac, shift, windowed), res in results.items():
        case = f"shift={shift:g}eV frac={frac:.0%}"
        if windowed:
            case += f" window={WINDOW_EV[0]:g}-{WINDOW_EV[1]:g}eV"
        for impl, vals in res.items():
            aucs = np.array([v[0] for v in vals])
            seps = np.array([v[1] for v in vals])
            times = np.array([v[2] for v in vals])
            metrics = {"AUC": float(aucs.mean()), "AUC_min": float(aucs.min()), "AUC_max": float(aucs.max()),
                       "sep": float(seps.mean())}  # fmt: skip
            rows.append(
                Row("eels", case, impl, float(times.mean()), float(times.max() - times.min()), len(vals), metrics)
            )
        print(f"  {case}: " + ", ".join(f"{r.impl} AUC={r.metrics['AUC']:.3f}" for r in rows[-4:]), flush=True)
    return rows
