"""EELS spectrum-image anomaly detection: a 3D convolutional VAE (CVAE3D) on loglik.conv3d, a PCA baseline and a
synthetic Fe L2,3-edge benchmark generator.

Spectrum images are (X, Y, E) arrays of counts. ``eels_anomaly_scores`` returns one score per pixel: the negative
log-likelihood of the spectrum under the model's reconstruction (Gaussian or Poisson), or one minus the
correlation between spectrum and reconstruction over an energy window. Importing this module imports numpy only;
torch is imported when a CVAE3D is built.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from . import _backend
from ._checks import as_float_array, check_bool, check_choice, check_int, check_positive

__all__ = [
    "CVAE3D",
    "eels_anomaly_scores",
    "pca_anomaly_scores",
    "synthetic_fe_spectrum_image",
    "load_spectrum_image",
]

FE_L3_EV = 708.0  # Fe L3 onset region (eV)
_MN_L3_EV = 640.0  # Mn L3 of the shipped real spectrum
ENERGY_SCALE_EV = 0.2  # channel width of the shipped real spectrum


# ----------------------------------------------------------------------------------------------------------------
# synthetic benchmark


def _real_coreloss() -> tuple[np.ndarray, np.ndarray] | None:
    """The real core-loss spectrum that exspy ships (EMSA, 360-770 eV at 0.2 eV: O K and Mn L2,3 edges)."""
    spec = importlib.util.find_spec("exspy")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "tests", "components", "coreloss_spectrum.msa")
    if not os.path.exists(path):
        return None
    offset, scale, values = 0.0, 1.0, []
    with open(path) as f:
        for line in f:
            if line.startswith("#OFFSET"):
                offset = float(line.split(":")[1])
            elif line.startswith("#XPERCHAN"):
                scale = float(line.split(":")[1])
            elif line.strip() and not line.startswith("#"):
                values.append(float(line.split(",")[0]))
    y = np.asarray(values)
    return offset + scale * np.arange(y.size), y


def _edge_shape(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(energy, signal) of an L2,3 edge with its onset placed at the Fe L3 energy, background removed.

    kind="real": the measured Mn L2,3 edge of exspy's real core-loss spectrum, power-law background fitted on
    600-632 eV and subtracted, moved to the Fe L3 energy (the L3/L2 white-line fine structure and continuum are
    real data; the spin-orbit splitting is Mn's, 11 eV instead of Fe's 13 eV). kind="model": exspy's EELS_MnFe
    Fe components (arctan step at 708 eV, Gaussian L3 at 708 eV and L2 at 730 eV), computed here directly.
    """
    if kind == "real":
        got = _real_coreloss()
        if got is None:
            raise ImportError("edge='real' needs exspy (its bundled core-loss spectrum): pip install loglik[eels]")
        e, y = got
        fit = (e >= 600) & (e <= 632)
        slope, icpt = np.polyfit(np.log(e[fit]), np.log(y[fit]), 1)
        sel = e >= 630
        signal = y[sel] - np.exp(icpt) * e[sel] ** slope
        signal = np.convolve(signal, np.ones(3) / 3, mode="same")  # light smoothing of the counting noise
        signal = np.maximum(signal, 0.0)
        return e[sel] + (FE_L3_EV - _MN_L3_EV), signal / signal.max()
    e = np.arange(600.0, 900.0, 0.05)
    arctan = 1 * (np.pi / 2 + np.arctan(0.2 * (e - 708))) / np.pi  # EELSArctan(A=1, k=0.2, x0=708), normalised
    l3 = 150 / (4 * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((e - 708) / 4) ** 2)
    l2 = 50 / (3 * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((e - 730) / 3) ** 2)
    signal = arctan * 2.0 + l3 + l2
    return e, signal / signal.max()


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], n_bumps: int = 4) -> np.ndarray:
    """A smooth random field in [0, 1] (sum of wide Gaussians), for thickness and background maps."""
    xx, yy = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    f = np.zeros(shape)
    for _ in range(n_bumps):
        cx, cy, w = rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2), rng.uniform(0.25, 0.6)
        f += rng.uniform(0.5, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * w**2))
    f -= f.min()
    return f / max(f.max(), 1e-12)


def synthetic_fe_spectrum_image(
    shape: Sequence[int] = (64, 64),
    n_energy: int = 1024,
    shift_ev: float = 2.0,
    anomaly_fraction: float = 0.05,
    *,
    dose: float = 400.0,
    thickness_range: tuple[float, float] = (0.7, 1.3),
    background_ratio: float = 3.0,
    edge: str = "real",
    seed: int | None = 0,
) -> dict[str, np.ndarray]:
    """A synthetic Fe L2,3 spectrum image with a region whose edge is chemically shifted.

    Every pixel holds ``thickness * (background + edge(E - shift))`` counts drawn from a Poisson law: a power-law
    background whose amplitude and exponent vary smoothly across the map, a thickness map varying smoothly in
    ``thickness_range``, and the Fe L2,3 edge (see ``edge``). A compact, roughly round region covering
    ``anomaly_fraction`` of the pixels has its edge shifted by ``shift_ev`` eV.

    Args:
        shape: (X, Y) of the map.
        n_energy: number of energy channels (0.2 eV each; the L3 onset sits at 30% of the window).
        shift_ev: chemical shift of the anomalous region (eV, may be 0 for a null experiment).
        anomaly_fraction: fraction of pixels in the anomalous region, in [0, 0.5].
        dose: expected counts at the L3 maximum for unit thickness (sets the Poisson noise level).
        thickness_range: (min, max) relative thickness across the map.
        background_ratio: background counts at the L3 onset relative to the L3 maximum.
        edge: "real" (the measured L2,3 edge shipped with exspy, moved to 708 eV) or "model" (exspy's EELS_MnFe
            Fe components, computed analytically).
        seed: random seed.

    Returns:
        dict with "cube" (X, Y, E) float64 counts, "mask" (X, Y) bool (True = shifted region), "energy" (E,) eV,
        "clean" (X, Y, E) expected counts (before Poisson noise).
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 2:
        raise ValueError(f"shape: expected (X, Y), got {shape!r}")
    nx = check_int(shape[0], "shape", low=2)
    ny = check_int(shape[1], "shape", low=2)
    ne = check_int(n_energy, "n_energy", low=32)
    if not np.isfinite(shift_ev):
        raise ValueError(f"shift_ev: expected a finite number, got {shift_ev!r}")
    frac = float(anomaly_fraction)
    if not 0.0 <= frac <= 0.5:
        raise ValueError(f"anomaly_fraction: expected a value in [0, 0.5], got {anomaly_fraction!r}")
    dose = check_positive(dose, "dose")
    check_positive(background_ratio, "background_ratio", allow_zero=True)
    if (
        isinstance(thickness_range, (str, bytes))
        or not isinstance(thickness_range, Sequence)
        or len(thickness_range) != 2
    ):
        raise ValueError(f"thickness_range: expected (min, max), got {thickness_range!r}")
    if dose > 1e15:  # Poisson sampling of larger means fails (and the noise is negligible long before)
        raise ValueError(f"dose: expected at most 1e15 counts, got {dose!r}")
    t_lo, t_hi = (float(v) for v in thickness_range)
    if not 0 < t_lo <= t_hi:
        raise ValueError(f"thickness_range: expected 0 < min <= max, got {thickness_range!r}")
    check_choice(edge, "edge", ("real", "model"))
    if seed is not None and not isinstance(seed, np.random.Generator):
        check_int(seed, "seed", low=0)
    rng = np.random.default_rng(seed)

    energy = FE_L3_EV - 0.3 * ne * ENERGY_SCALE_EV + ENERGY_SCALE_EV * np.arange(ne)
    e_ref, s_ref = _edge_shape(edge)
    tail = float(np.mean(s_ref[-20:]))

    def edge_at(e: np.ndarray) -> np.ndarray:
        out = np.interp(e, e_ref, s_ref, left=0.0, right=tail)
        beyond = e > e_ref[-1]
        out[beyond] = tail * (e[beyond] / e_ref[-1]) ** -3.0  # continuum decays beyond the measured range
        return out

    thickness = t_lo + (t_hi - t_lo) * _smooth_field(rng, (nx, ny))
    bg_amp = background_ratio * (0.8 + 0.4 * _smooth_field(rng, (nx, ny)))
    bg_exp = 2.6 + 0.8 * _smooth_field(rng, (nx, ny))
    # Anomalous region: the pixels nearest a random centre, so it is compact and covers exactly `frac` of the map.
    n_anom = int(round(frac * nx * ny))
    mask = np.zeros((nx, ny), dtype=bool)
    if n_anom > 0:
        cx, cy = rng.uniform(0.25, 0.75) * nx, rng.uniform(0.25, 0.75) * ny
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2 + rng.uniform(0, 1e-3, (nx, ny))
        mask.flat[np.argsort(d2, axis=None)[:n_anom]] = True

    e_onset = FE_L3_EV - 5.0
    bg = bg_amp[..., None] * (energy[None, None, :] / e_onset) ** (-bg_exp[..., None])
    normal_edge = edge_at(energy)
    shifted_edge = edge_at(energy - shift_ev)
    edges = np.where(mask[..., None], shifted_edge[None, None, :], normal_edge[None, None, :])
    clean = dose * thickness[..., None] * (bg + edges)
    cube = rng.poisson(clean).astype(np.float64)
    return {"cube": cube, "mask": mask, "energy": energy, "clean": clean}


# ----------------------------------------------------------------------------------------------------------------
# reading real data


def load_spectrum_image(path: str) -> dict[str, Any]:
    """Read a spectrum image (.dm3, .dm4, .hspy, .msa ...) through rosettasciio (optional extra ``loglik[eels]``).

    Args:
        path: file to read.

    Returns:
        dict with "cube" (X, Y, E) float64 (a single spectrum becomes (1, 1, E), a line scan (1, L, E)),
        "energy" (E,) eV (channel index if the file has no calibration) and "metadata" (the reader's dict).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"path: no such file {path!r}")
    ext = os.path.splitext(path)[1].lower()
    readers = {
        ".dm3": "rsciio.digitalmicrograph",
        ".dm4": "rsciio.digitalmicrograph",
        ".hspy": "rsciio.hspy",
        ".msa": "rsciio.msa",
        ".ems": "rsciio.msa",
        ".mss": "rsciio.msa",
        ".emsa": "rsciio.msa",
    }
    if ext == ".npy":
        try:
            data = np.load(path)
        except Exception as exc:
            raise ValueError(f"path: could not read {path!r} as a .npy array: {exc}") from exc
        return {"cube": _as_cube(data, "path"), "energy": np.arange(data.shape[-1], dtype=float), "metadata": {}}
    if ext not in readers:
        raise ValueError(f"path: unsupported extension {ext!r}; expected one of {sorted([*readers, '.npy'])}")
    if importlib.util.find_spec("rsciio") is None:
        raise ImportError(f"reading {ext} files needs rosettasciio: pip install 'loglik[eels]' (or rosettasciio)")
    import importlib as _il

    reader = _il.import_module(readers[ext])
    try:
        items = reader.file_reader(path)
    except Exception as exc:  # the readers raise anything from NotImplementedError to struct.error on a bad file
        raise ValueError(f"path: could not read {path!r} as a {ext} file: {type(exc).__name__}: {exc}") from exc
    item = next((it for it in items if np.asarray(it["data"]).ndim >= 1), items[0])
    data = np.asarray(item["data"], dtype=np.float64)
    axes = item.get("axes", [])
    sig = [a for a in axes if not a.get("navigate", False)]
    energy = np.arange(data.shape[-1], dtype=float)
    if sig:
        ax = sig[-1]
        energy = ax.get("offset", 0.0) + ax.get("scale", 1.0) * np.arange(data.shape[-1])
    return {"cube": _as_cube(data, "path"), "energy": energy, "metadata": item.get("metadata", {})}


def _as_cube(data: np.ndarray, name: str) -> np.ndarray:
    if np.iscomplexobj(data):
        raise TypeError(f"{name}: complex data is not a spectrum image")
    try:
        data = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected numeric data, got {exc}") from None
    if data.ndim not in (1, 2, 3):
        raise ValueError(f"{name}: expected a spectrum, line scan or spectrum image (1-3 dims), got shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"{name}: the file holds no data (shape {data.shape})")
    return data.reshape((1,) * (3 - data.ndim) + data.shape)


# ----------------------------------------------------------------------------------------------------------------
# scores


def _check_cube(cube: Any, name: str = "cube") -> np.ndarray:
    c = as_float_array(cube, name, ndim=3)
    if c.shape[2] < 8:
        raise ValueError(f"{name}: expected at least 8 energy channels, got shape {c.shape}")
    return c.astype(np.float64, copy=False)


_SCORES = ("deviance", "nll", "correlation")


def _check_energy(energy: Any, n_energy: int) -> np.ndarray | None:
    """The optional (E,) energy axis, checked against the cube's channel count."""
    if energy is None:
        return None
    en = as_float_array(energy, "energy", ndim=1)
    if en.shape[0] != n_energy:
        raise ValueError(f"energy: expected {n_energy} values (one per channel of cube), got {en.shape[0]}")
    if n_energy > 1 and not (np.diff(en) > 0).all():
        raise ValueError("energy: expected a strictly increasing axis (eV)")
    return en


def _window(window: Any, n_energy: int, energy: np.ndarray | None) -> slice:
    """Energy window as a slice of channels: None (all), (lo, hi) channel indices, or eV when energy is given."""
    if window is None:
        return slice(0, n_energy)
    if isinstance(window, (str, bytes)) or not isinstance(window, Sequence) or len(window) != 2:
        raise ValueError(f"window: expected (lo, hi), got {window!r}")
    lo, hi = window
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"window: expected two real numbers (lo, hi), got {window!r}")
        if not math.isfinite(float(v)):
            raise ValueError(f"window: expected finite bounds, got {window!r}")
    if energy is not None:
        lo, hi = int(np.searchsorted(energy, lo)), int(np.searchsorted(energy, hi))
        if not 0 <= lo < hi <= n_energy:
            raise ValueError(
                f"window: expected lo < hi (eV) overlapping the energy axis {energy[0]:g}-{energy[-1]:g} eV, "
                f"got {window!r}"
            )
    lo, hi = int(lo), int(hi)
    if not 0 <= lo < hi <= n_energy:
        raise ValueError(f"window: expected 0 <= lo < hi <= {n_energy} channels, got {window!r}")
    return slice(lo, hi)


def _poisson_deviance(x: np.ndarray, xhat: np.ndarray) -> np.ndarray:
    """Poisson deviance per row of (P, E) counts x against predicted means xhat (clipped to >= 1e-3).

    2 * sum(x log(x / xhat) - (x - xhat)): the log-likelihood ratio of the reconstruction against the saturated
    model. Its expectation is about one per channel whatever the count level, so unlike the raw NLL it does not
    grow with thickness or dose.
    """
    mu = np.maximum(xhat, 1e-3)
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0) / mu), 0.0)
    return 2.0 * (xlogx - (x - mu)).sum(axis=1)


def _correlation_scores(x: np.ndarray, xhat: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation per row of (P, E) arrays."""
    xc = x - x.mean(axis=1, keepdims=True)
    hc = xhat - xhat.mean(axis=1, keepdims=True)
    den = np.sqrt((xc**2).sum(1) * (hc**2).sum(1))
    return 1.0 - (xc * hc).sum(1) / np.maximum(den, 1e-300)


def pca_anomaly_scores(
    cube: Any,
    n_components: int = 4,
    *,
    score: str = "deviance",
    window: Sequence[float] | None = None,
    energy: Any = None,
    poisson_scaling: bool = True,
    train_cube: Any = None,
) -> np.ndarray:
    """PCA baseline: per-pixel anomaly score from a rank-``n_components`` reconstruction of the spectrum image.

    With ``poisson_scaling`` the data are weighted as in Keenan & Kotula (divide by sqrt of the mean spectrum and
    mean image) so that Poisson noise is roughly homoscedastic before the SVD.

    Args:
        cube: (X, Y, E) counts.
        n_components: number of principal components kept, in [1, min(X*Y, E) - 1].
        score: "deviance" (Poisson deviance of the counts against the reconstruction: the likelihood ratio to the
            saturated model), "nll" (Gaussian NLL with Poisson variance, i.e. half the sum over the window of
            (x - xhat)^2 / max(xhat, 1)) or "correlation" (1 - Pearson correlation of spectrum and reconstruction).
        window: optional (lo, hi) energy window: channel indices, or eV when ``energy`` is given.
        energy: optional (E,) energy axis in eV.
        poisson_scaling: weight the data for Poisson noise before the SVD.
        train_cube: optional (X', Y', E) reference cube of bulk spectra: the principal components (and the energy
            weighting) are fitted on it and ``cube`` is projected on them. By default they are fitted on ``cube``
            itself, where a rare but strong anomaly can become a component of its own.

    Returns:
        (X, Y) float64 scores; larger means more anomalous.
    """
    c = _check_cube(cube)
    nx, ny, ne = c.shape
    if nx * ny < 2:
        raise ValueError(f"cube: PCA needs at least 2 pixels, got shape {c.shape}")
    k = check_int(n_components, "n_components", low=1, high=min(nx * ny, ne) - 1)
    check_choice(score, "score", _SCORES)
    poisson_scaling = check_bool(poisson_scaling, "poisson_scaling")
    if (poisson_scaling or score == "deviance") and (c < 0).any():
        raise ValueError("cube: expected non-negative counts (Poisson scaling and the deviance score need counts)")
    en = _check_energy(energy, ne)
    sl = _window(window, ne, en)
    x = c.reshape(nx * ny, ne)
    xt = x
    if train_cube is not None:
        t = _check_cube(train_cube, "train_cube")
        if t.shape[2] != ne:
            raise ValueError(f"train_cube: expected {ne} energy channels like cube, got shape {t.shape}")
        if (poisson_scaling or score == "deviance") and (t < 0).any():
            raise ValueError("train_cube: expected non-negative counts (like cube)")
        if t.shape[0] * t.shape[1] <= k:
            raise ValueError(f"train_cube: needs more than n_components={k} pixels")
        xt = t.reshape(-1, ne)
    if poisson_scaling:
        g = np.sqrt(np.maximum(x.mean(axis=1, keepdims=True), 1e-12))
        gt = np.sqrt(np.maximum(xt.mean(axis=1, keepdims=True), 1e-12))
        h = np.sqrt(np.maximum(xt.mean(axis=0, keepdims=True), 1e-12))
        h = h / h.mean()
    else:
        g = np.ones((x.shape[0], 1))
        gt = np.ones((xt.shape[0], 1))
        h = np.ones((1, ne))
    xs = x / (g * h)
    xts = xt / (gt * h)
    mean = xts.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xts - mean, full_matrices=False)
    basis = vt[:k]
    rec = ((xs - mean) @ basis.T) @ basis + mean
    xhat = rec * (g * h)
    if score == "correlation":
        s = _correlation_scores(x[:, sl], xhat[:, sl])
    elif score == "deviance":
        s = _poisson_deviance(x[:, sl], xhat[:, sl])
    else:
        s = 0.5 * (((x[:, sl] - xhat[:, sl]) ** 2) / np.maximum(xhat[:, sl], 1.0)).sum(axis=1)
    return s.reshape(nx, ny)


# ----------------------------------------------------------------------------------------------------------------
# CVAE3D (torch module built lazily so that importing loglik never imports torch)


def _build_cvae_class() -> type:
    torch = _backend.torch()
    nn: Any = torch.nn
    F = torch.nn.functional
    from .conv import conv3d, conv3d_grad_input

    class _Conv(nn.Module):
        """loglik.conv3d layer with (1, 1, stride_e) stride and 'same'-style padding in X and Y."""

        def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride_e: int, pad_e: int):
            super().__init__()
            fan_in = cin * kernel[0] * kernel[1] * kernel[2]
            self.weight = nn.Parameter(torch.randn(cout, cin, *kernel) * math.sqrt(2.0 / fan_in))
            self.bias = nn.Parameter(torch.zeros(cout))
            self.stride = (1, 1, stride_e)
            self.padding = (kernel[0] // 2, kernel[1] // 2, pad_e)

        def forward(self, x):
            return conv3d(x, self.weight, self.bias, self.stride, self.padding, 1, check_finite=False)

    class _ConvT(nn.Module):
        """Transposed loglik.conv3d (the adjoint of _Conv: conv3d_grad_input) to an explicit output shape."""

        def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride_e: int, pad_e: int):
            super().__init__()
            fan_in = cin * kernel[0] * kernel[1] * kernel[2] / stride_e
            self.weight = nn.Parameter(torch.randn(cin, cout, *kernel) * math.sqrt(2.0 / fan_in))
            self.bias = nn.Parameter(torch.zeros(cout))
            self.stride = (1, 1, stride_e)
            self.padding = (kernel[0] // 2, kernel[1] // 2, pad_e)

        def forward(self, y, out_shape):
            x = conv3d_grad_input(y, self.weight, out_shape, self.stride, self.padding, 1)
            return x + self.bias.view(1, -1, 1, 1, 1)

    class CVAE3D(nn.Module):
        """3D convolutional VAE for EELS spectrum images (see loglik.CVAE3D)."""

        def __init__(
            self,
            n_energy: int,
            latent_dim: int = 4,
            channels: Sequence[int] = (8, 16),
            kernel: Sequence[int] = (3, 3, 7),
            energy_stride: int = 4,
            likelihood: str = "gaussian",
            learn_variance: bool = True,
            beta: float = 1.0,
        ):
            super().__init__()
            self.n_energy = check_int(n_energy, "n_energy", low=8)
            self.latent_dim = check_int(latent_dim, "latent_dim", low=1)
            self.likelihood = check_choice(likelihood, "likelihood", ("gaussian", "poisson"))
            self.learn_variance = check_bool(learn_variance, "learn_variance")
            self.beta = check_positive(beta, "beta", allow_zero=True)
            if isinstance(kernel, (str, bytes)) or not isinstance(kernel, Sequence) or len(kernel) != 3:
                raise ValueError(f"kernel: expected 3 sizes (KX, KY, KE), got {kernel!r}")
            k: Any = tuple(check_int(v, "kernel", low=1) for v in kernel)
            if k[0] % 2 == 0 or k[1] % 2 == 0:
                raise ValueError(f"kernel: KX and KY must be odd ('same' padding in X and Y), got {kernel!r}")
            s = check_int(energy_stride, "energy_stride", low=1)
            if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
                raise TypeError(f"channels: expected a sequence of channel counts, got {channels!r}")
            chans = [check_int(c, "channels", low=1) for c in channels]
            if not chans:
                raise ValueError("channels: expected at least one encoder layer")
            lengths = [self.n_energy]
            for _ in chans:
                lengths.append((lengths[-1] + 2 * (k[2] // 2) - k[2]) // s + 1)
            if lengths[-1] < 1:
                raise ValueError(f"n_energy: {n_energy} channels are too few for {len(chans)} strided layers")
            self.lengths = lengths
            ins = [1, *chans[:-1]]
            self.enc = nn.ModuleList(_Conv(ci, co, k, s, k[2] // 2) for ci, co in zip(ins, chans, strict=True))
            self.to_latent = _Conv(chans[-1], 2 * self.latent_dim, (1, 1, lengths[-1]), 1, 0)
            self.from_latent = _ConvT(self.latent_dim, chans[-1], (1, 1, lengths[-1]), 1, 0)
            self.dec = nn.ModuleList(
                _ConvT(co, ci, k, s, k[2] // 2) for ci, co in reversed(list(zip(ins, chans, strict=True)))
            )
            # Per-channel log standard deviation of the Gaussian likelihood (fixed unless learned); set to the
            # Poisson noise level of the training spectra by fit_normalisation.
            self.log_sigma = nn.Parameter(
                torch.zeros(self.n_energy), requires_grad=self.learn_variance and self.likelihood == "gaussian"
            )
            # Mean and spread over pixels of the normalised training spectra: the encoder sees standardised
            # spectra and the decoder predicts the deviation from the mean spectrum (set by fit_normalisation).
            self.register_buffer("spectrum_mean", torch.ones(self.n_energy))
            self.register_buffer("spectrum_scale", torch.ones(self.n_energy))

        @torch.no_grad()
        def fit_normalisation(self, counts):
            """Set spectrum_mean, spectrum_scale and the Gaussian log_sigma from training counts (N, 1, X, Y, E).

            log_sigma starts at the Poisson noise level of the normalised spectra (sqrt(mean(x / m^2))): started at
            sigma = 1 (about 30 times the noise) the reconstruction term is too weak and training stalls."""
            if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
                raise ValueError("counts: expected finite, non-negative counts")
            xn, m = self.normalise(counts)
            flat = xn.reshape(-1, self.n_energy).double()
            mean = flat.mean(0)
            scale = flat.std(0) if flat.shape[0] > 1 else torch.ones_like(mean)
            scale = scale.clamp_min(1e-3 * float(mean.abs().mean()) + 1e-12)
            self.spectrum_mean.copy_(mean.clamp_min(1e-6).to(self.spectrum_mean.dtype))
            self.spectrum_scale.copy_(scale.to(self.spectrum_scale.dtype))
            noise = (xn / m).reshape(-1, self.n_energy).double().mean(0).clamp_min(1e-12)
            self.log_sigma.copy_((0.5 * torch.log(noise)).to(self.log_sigma.dtype))
            return self

        def encode(self, x):
            """x: (N, 1, X, Y, E) normalised spectra -> (mu, logvar), each (N, latent, X, Y)."""
            h = (x - self.spectrum_mean) / self.spectrum_scale
            for layer in self.enc:
                h = F.silu(layer(h))
            h = self.to_latent(h)[..., 0]
            return h[:, : self.latent_dim], h[:, self.latent_dim :].clamp(-12.0, 8.0)

        def decode(self, z):
            """z: (N, latent, X, Y) -> (N, 1, X, Y, E) mean (Gaussian, normalised units) or log-rate (Poisson)."""
            n, _, nx, ny = z.shape
            h = F.silu(self.from_latent(z[..., None], (n, self.dec[0].weight.shape[0], nx, ny, self.lengths[-1])))
            for i, layer in enumerate(self.dec):
                cout = layer.weight.shape[1]
                h = layer(h, (n, cout, nx, ny, self.lengths[-2 - i]))
                if i < len(self.dec) - 1:
                    h = F.silu(h)
            if self.likelihood == "poisson":
                return torch.log(self.spectrum_mean) + h * (self.spectrum_scale / self.spectrum_mean)
            return self.spectrum_mean + h * self.spectrum_scale

        def forward(self, x):
            """x: (N, 1, X, Y, E) normalised -> (decoded, mu, logvar) with a reparameterised latent sample."""
            mu, logvar = self.encode(x)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            return self.decode(z), mu, logvar

        @staticmethod
        def normalise(counts):
            """counts (N, 1, X, Y, E) -> (spectra divided by their mean count, the means (N, 1, X, Y, 1)).

            Per-spectrum normalisation takes thickness and dose out of what the network has to model; the
            likelihood is still that of the raw counts (the means are multiplied back)."""
            m = counts.mean(dim=-1, keepdim=True).clamp_min(1e-6)
            return counts / m, m

        def nll(self, decoded, counts):
            """Per-pixel negative log-likelihood (N, X, Y) of raw counts (N, 1, X, Y, E) given the decoder output."""
            _, m = self.normalise(counts)
            if self.likelihood == "poisson":
                log_rate = decoded + torch.log(m)
                return (torch.exp(log_rate) - counts * log_rate + torch.lgamma(counts + 1)).sum(dim=(1, 4))
            xn = counts / m
            log_sigma = self.log_sigma.view(1, 1, 1, 1, -1)
            r = (xn - decoded) * torch.exp(-log_sigma)
            nll = 0.5 * r * r + log_sigma + 0.5 * math.log(2 * math.pi) + torch.log(m)
            return nll.sum(dim=(1, 4))

        def loss(self, counts):
            """Mean over pixels of NLL + beta * KL for raw counts (N, 1, X, Y, E)."""
            if not isinstance(counts, torch.Tensor) or counts.ndim != 5 or counts.shape[-1] != self.n_energy:
                raise ValueError(
                    f"counts: expected a torch tensor (N, 1, X, Y, {self.n_energy}), got "
                    f"{type(counts).__name__} of shape {tuple(getattr(counts, 'shape', ()))}"
                )
            decoded, mu, logvar = self(self.normalise(counts)[0])
            kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)
            return (self.nll(decoded, counts) + self.beta * kl).mean()

    CVAE3D.__doc__ = _CVAE_DOC
    # Pickle (and torch.save of a whole model) finds classes by module and name: give these local classes
    # module-level names, which the module's __getattr__ (end of file) resolves.
    named = {"_CVAE3DModule": CVAE3D, "_CVAE3DConv": _Conv, "_CVAE3DConvT": _ConvT}
    for name, cls in named.items():
        cls.__qualname__ = name  # __name__ (what repr shows) stays CVAE3D / _Conv / _ConvT
        cls.__module__ = __name__
    CVAE3D._pickle_names = named
    return CVAE3D


_CVAE_DOC = """3D convolutional variational autoencoder for EELS spectrum images, built on loglik.conv3d.

Encoder: ``len(channels)`` loglik.conv3d layers with kernel ``kernel`` (X, Y, E; anisotropic, e.g. 3x3x7),
stride ``energy_stride`` along energy and SiLU, then a per-pixel convolution over the remaining energy samples to
(mu, logvar) of a ``latent_dim`` Gaussian latent per pixel. The decoder mirrors it with transposed loglik
convolutions (``conv3d_grad_input``) back to (N, 1, X, Y, E). Each spectrum is divided by its own mean count
(``normalise``); ``fit_normalisation(counts)`` records the mean and spread over pixels of the normalised training
spectra: the encoder sees standardised spectra and the decoder predicts the deviation from the mean spectrum (in
units of the spread). Loss: negative log-likelihood of the counts - Gaussian on the normalised spectra with a
per-energy standard deviation that starts at the Poisson noise level of the training spectra (learned when
``learn_variance``, else kept there), or Poisson on the raw counts (the decoder gives the log-rate) - plus
``beta`` times the KL divergence to N(0, I), averaged over pixels.

Args:
    n_energy: number of energy channels E.
    latent_dim: latent size per pixel.
    channels: encoder channel counts.
    kernel: (KX, KY, KE) convolution kernel.
    energy_stride: stride along energy of every encoder layer.
    likelihood: "gaussian" or "poisson".
    learn_variance: learn the per-channel Gaussian variance (ignored for Poisson).
    beta: weight of the KL term.

Shapes: ``encode(x)``: x (N, 1, X, Y, E) -> mu, logvar (N, latent_dim, X, Y); ``decode(z)`` -> (N, 1, X, Y, E);
``nll(decoded, counts)`` -> (N, X, Y); ``loss(counts)`` -> scalar; ``fit_normalisation(counts)`` with counts
(N, 1, X, Y, E) -> the model. Train with :func:`eels_anomaly_scores` or your own loop (call
``fit_normalisation`` on the training counts first: without it the Gaussian sigma starts at 1, some 30 times the
noise of typical spectra, and training stalls). Inputs of ``encode``/``forward`` are spectra normalised by
``CVAE3D.normalise`` (divided by their own mean count); ``nll`` and ``loss`` take raw counts.
"""


class _LazyTorchClass(type):
    """Metaclass: the placeholder class builds the real torch nn.Module subclass on first use."""

    _real: type | None = None

    def _get(cls) -> type:
        if cls._real is None:
            cls._real = _build_cvae_class()
        return cls._real

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._get()(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return cls._real is not None and isinstance(obj, cls._real)


class CVAE3D(metaclass=_LazyTorchClass):
    __doc__ = _CVAE_DOC


def _train_cvae(
    cube: np.ndarray,
    *,
    epochs: int,
    tile: int,
    batch_tiles: int,
    lr: float,
    seed: int,
    lr_decay: bool,
    model_kwargs: dict[str, Any],
    progress: bool | Callable[[int, float], None],
) -> Any:
    torch = _backend.torch()
    # the seed drives initialisation and the reparameterisation noise without touching the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _fit_cvae(torch, cube, epochs, tile, batch_tiles, lr, seed, lr_decay, model_kwargs, progress)
    model.eval()
    return model


def _fit_cvae(torch, cube, epochs, tile, batch_tiles, lr, seed, lr_decay, model_kwargs, progress) -> Any:
    """The training loop of _train_cvae (arguments as there), on the RNG state it set up."""
    nx, ny, ne = cube.shape
    gen = torch.Generator().manual_seed(seed)
    model: Any = CVAE3D(ne, **model_kwargs)  # type: ignore[call-arg]
    data = torch.from_numpy(np.ascontiguousarray(cube, dtype=np.float32))[None, None]
    model.fit_normalisation(data)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    tx, ty = min(tile, nx), min(tile, ny)
    steps_per_epoch = max(1, (nx * ny) // (tx * ty * batch_tiles))
    total = epochs * steps_per_epoch
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="CVAE3D training", unit="step")
    sched = None
    if lr_decay:  # cosine decay to zero: the last steps average out the noise of the random tiles
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * i / total)))
    model.train()
    for step in range(total):
        ix = torch.randint(0, nx - tx + 1, (batch_tiles,), generator=gen)
        iy = torch.randint(0, ny - ty + 1, (batch_tiles,), generator=gen)
        batch = torch.cat([data[..., i : i + tx, j : j + ty, :] for i, j in zip(ix.tolist(), iy.tolist(), strict=True)])
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not (math.isfinite(loss.item()) and all(bool(torch.isfinite(q).all()) for q in model.parameters())):
            raise ValueError(f"lr: training diverged at step {step} (non-finite loss or weights); try a smaller lr")
        if sched is not None:
            sched.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4g}")
        elif callable(progress):
            progress(step, loss.item())
    if bar is not None:
        bar.close()
    return model


def eels_anomaly_scores(
    cube: Any,
    method: str = "cvae",
    *,
    score: str = "deviance",
    window: Sequence[float] | None = None,
    energy: Any = None,
    n_components: int = 4,
    model: Any = None,
    epochs: int = 100,
    tile: int = 16,
    batch_tiles: int = 4,
    lr: float = 5e-3,
    latent_dim: int = 4,
    likelihood: str = "gaussian",
    seed: int = 0,
    progress: bool | Callable[[int, float], None] = False,
    return_model: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    train_cube: Any = None,
    lr_decay: bool = True,
) -> Any:
    """Per-pixel anomaly scores of an EELS spectrum image.

    method="cvae" trains a :class:`CVAE3D` on ``train_cube`` (bulk spectra, the paper's protocol) or on the cube
    itself (unsupervised: anomalies are rare, so the model learns the bulk) on random ``tile`` x ``tile`` crops with
    Adam and a cosine learning-rate decay, then scores every pixel against the reconstruction from
    the latent mean: by the Poisson deviance of its counts (likelihood ratio to the saturated model; default, the
    same rule as the PCA baseline), by the model's own negative log-likelihood, or by 1 - correlation of spectrum
    and reconstruction, over ``window``. method="pca" calls :func:`pca_anomaly_scores`.

    Args:
        cube: (X, Y, E) counts (numpy or torch), finite and non-negative.
        method: "cvae" or "pca".
        score: "deviance", "nll" or "correlation".
        window: optional (lo, hi) energy window (channels, or eV when ``energy`` is given) for the score.
        energy: optional (E,) energy axis in eV.
        n_components: PCA components (method="pca").
        model: an already trained CVAE3D to score with (skips training).
        epochs: training epochs (one epoch ~ as many tiles as cover the map once: 4 steps of 4 16x16 tiles for a
            64 x 64 map). The default (400 steps on 64 x 64) is where the bulk fit stopped improving in our tests;
            a third of it left the 0.5 eV AUC 0.09 lower.
        tile: crop size in X and Y for training.
        batch_tiles: crops per optimisation step.
        lr: Adam learning rate (peak; decays to zero along a cosine when ``lr_decay``).
        latent_dim: latent size per pixel.
        likelihood: "gaussian" (learned per-channel variance) or "poisson".
        seed: seed of initialisation and crop sampling.
        progress: True for a tqdm progress bar, or a callable(step, loss).
        return_model: also return the trained model.
        model_kwargs: extra CVAE3D arguments (channels, kernel, energy_stride, learn_variance, beta).
        train_cube: optional (X', Y', E) reference cube of bulk spectra to train on (the paper's protocol) instead
            of the scored cube itself; for method="pca" the components are fitted on it.
        lr_decay: cosine decay of the learning rate over the training steps.

    Returns:
        (X, Y) float64 scores (larger = more anomalous), or (scores, model) with ``return_model``.
    """
    check_choice(method, "method", ("cvae", "pca"))
    check_choice(score, "score", _SCORES)
    return_model = check_bool(return_model, "return_model")
    lr_decay = check_bool(lr_decay, "lr_decay")
    if not callable(progress):
        progress = check_bool(progress, "progress")
    check_int(seed, "seed", low=0, high=2**63 - 1)
    c = _check_cube(cube)
    if (c < 0).any():
        raise ValueError("cube: expected non-negative counts")
    if method == "pca":
        if model is not None:
            raise ValueError("model: a trained CVAE3D is used by method='cvae' only")
        out = pca_anomaly_scores(c, n_components, score=score, window=window, energy=energy, train_cube=train_cube)
        return (out, None) if return_model else out
    torch = _backend.torch()
    nx, ny, ne = c.shape
    en = _check_energy(energy, ne)
    sl = _window(window, ne, en)
    if model is None:  # the training arguments matter only when a model is trained here
        check_int(epochs, "epochs", low=1)
        check_int(tile, "tile", low=1)
        check_int(batch_tiles, "batch_tiles", low=1)
        check_positive(lr, "lr")
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs: expected a dict of CVAE3D arguments, got {type(model_kwargs).__name__}")
        kw = dict(model_kwargs or {})
        kw.setdefault("latent_dim", latent_dim)
        kw.setdefault("likelihood", likelihood)
        tc = c
        if train_cube is not None:
            tc = _check_cube(train_cube, "train_cube")
            if (tc < 0).any():
                raise ValueError("train_cube: expected non-negative counts")
            if tc.shape[2] != ne:
                raise ValueError(f"train_cube: expected {ne} energy channels like cube, got shape {tc.shape}")
        model = _train_cvae(
            tc, epochs=epochs, tile=tile, batch_tiles=batch_tiles, lr=lr, seed=seed, lr_decay=lr_decay,
            model_kwargs=kw, progress=progress,
        )  # fmt: skip
    elif not isinstance(model, CVAE3D):
        raise TypeError(f"model: expected a CVAE3D, got {type(model).__name__}")
    elif cast(Any, model).n_energy != ne:
        raise ValueError(f"model: trained for {cast(Any, model).n_energy} energy channels, cube has {ne}")
    model = cast(Any, model)
    was_training = model.training
    model.eval()
    data = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))[None, None]
    with torch.no_grad():
        xn, m = model.normalise(data)
        decoded, _, _ = model(xn)
        if score == "nll":
            if sl == slice(0, ne):
                s = model.nll(decoded, data)[0]
            else:
                s = model.nll(decoded[..., sl], data[..., sl]) if model.likelihood == "poisson" else None
                if s is None:  # Gaussian: the per-channel variance must be cut to the window too
                    xn = xn[..., sl]
                    ls = model.log_sigma[sl].view(1, 1, 1, 1, -1)
                    r = (xn - decoded[..., sl]) * torch.exp(-ls)
                    s = (0.5 * r * r + ls).sum(dim=(1, 4))
                s = s[0]
            out = s.double().numpy()
        else:
            rec = torch.exp(decoded) * m if model.likelihood == "poisson" else decoded * m
            xs, rs = c.reshape(-1, ne)[:, sl], rec[0, 0].double().numpy().reshape(-1, ne)[:, sl]
            out = _correlation_scores(xs, rs) if score == "correlation" else _poisson_deviance(xs, rs)
            out = out.reshape(nx, ny)
    model.train(was_training)  # a caller's model comes back in the mode it came in
    return (out, model) if return_model else out


def __getattr__(name: str) -> Any:
    if name in ("_CVAE3DModule", "_CVAE3DConv", "_CVAE3DConvT"):  # the torch classes behind CVAE3D, for pickle
        return CVAE3D._get()._pickle_names[name]  # type: ignore[attr-defined]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
