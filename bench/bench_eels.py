"""``loglik bench eels``: ROC AUC of CVAE3D against PCA (3, 4, 5 components) for Fe L-edge shift detection.

Data: :func:`loglik.synthetic_fe_spectrum_image` - the real L2,3 edge shipped with exspy moved to the Fe L3
energy, Poisson noise, smooth thickness and background variation, and a compact region (1% or 5% of the pixels)
whose edge is shifted by 0.5, 1, 2, 4 or 8 eV. Both methods score every pixel by the same rule, the Poisson
deviance of its counts against its reconstruction (CVAE3D: trained with a Gaussian likelihood with learned
per-channel variance, reconstruction from the latent mean; PCA: Poisson-scaled PCA); the AUC compares the scores
with the true mask. Protocol of the paper: each method is fitted on a separate cube of bulk spectra (same
generator, no shifted region, another seed) and scores the test cube.

Sizes chosen so the full run stays near 10 minutes on 2 cores: 32 x 32 pixels x 512 channels, 2 seeds per case,
CVAE3D trained for 40 steps of 4 random 16 x 16 tiles (Adam, lr 1e-2). Quick mode: 24 x 24 x 256, shifts 1 and
4 eV at 5%, one seed, 30 steps. ``seconds`` is the mean time of one fit + scoring.
"""

from __future__ import annotations

import time

import numpy as np

from ._harness import Row

FULL = {"shape": (32, 32), "n_energy": 512, "shifts": (0.5, 1.0, 2.0, 4.0, 8.0), "fractions": (0.01, 0.05),
        "seeds": (0, 1), "epochs": 40}  # fmt: skip
QUICK = {"shape": (24, 24), "n_energy": 256, "shifts": (1.0, 4.0), "fractions": (0.05,), "seeds": (0,), "epochs": 30}


def _auc(mask: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(mask.ravel(), scores.ravel()))


def run(quick: bool = False) -> list[Row]:
    import loglik

    cfg = QUICK if quick else FULL
    rows: list[Row] = []
    for frac in cfg["fractions"]:
        for shift in cfg["shifts"]:
            results: dict[str, list[tuple[float, float]]] = {}
            for seed in cfg["seeds"]:
                data = loglik.synthetic_fe_spectrum_image(
                    cfg["shape"], cfg["n_energy"], shift_ev=shift, anomaly_fraction=frac, seed=1000 + seed
                )
                cube, mask = data["cube"], data["mask"]
                bulk = loglik.synthetic_fe_spectrum_image(
                    cfg["shape"], cfg["n_energy"], shift_ev=0.0, anomaly_fraction=0.0, seed=2000 + seed
                )["cube"]
                t0 = time.perf_counter()
                s = loglik.eels_anomaly_scores(cube, "cvae", epochs=cfg["epochs"], seed=seed, train_cube=bulk)
                results.setdefault("loglik CVAE3D", []).append((_auc(mask, s), time.perf_counter() - t0))
                for k in (3, 4, 5):
                    t0 = time.perf_counter()
                    s = loglik.pca_anomaly_scores(cube, k, train_cube=bulk)
                    results.setdefault(f"PCA k={k}", []).append((_auc(mask, s), time.perf_counter() - t0))
            case = f"shift={shift:g}eV frac={frac:.0%}"
            for impl, vals in results.items():
                aucs = np.array([v[0] for v in vals])
                secs = np.array([v[1] for v in vals])
                rows.append(
                    Row(
                        "eels",
                        case,
                        impl,
                        float(secs.mean()),
                        float(secs.max() - secs.min()),
                        len(vals),
                        {"AUC": float(aucs.mean()), "AUC_min": float(aucs.min()), "AUC_max": float(aucs.max())},
                    )
                )
            print(f"  {case}: " + ", ".join(f"{r.impl} AUC={r.metrics['AUC']:.3f}" for r in rows[-4:]), flush=True)
    return rows
