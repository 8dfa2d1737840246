"""EELS anomaly detection: synthetic Fe L-edge generator, PCA baseline, CVAE3D, reader and the ``loglik eels`` CLI."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import loglik
from loglik import _backend

needs_compiled = pytest.mark.skipif(not _backend.has_compiled(), reason="compiled core not built")


def _auc(mask, scores):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(mask.ravel(), scores.ravel())


@pytest.fixture(scope="module")
def small_cube():
    return loglik.synthetic_fe_spectrum_image((16, 16), 128, shift_ev=8.0, anomaly_fraction=0.1, seed=3)


def test_import_does_not_import_torch():
    code = "import sys, loglik; loglik.CVAE3D; loglik.eels_anomaly_scores; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("edge", ["real", "model"])
def test_synthetic_generator(edge):
    d = loglik.synthetic_fe_spectrum_image((20, 15), 200, shift_ev=2.0, anomaly_fraction=0.05, seed=1, edge=edge)
    cube, mask, energy, clean = d["cube"], d["mask"], d["energy"], d["clean"]
    assert cube.shape == clean.shape == (20, 15, 200) and mask.shape == (20, 15) and energy.shape == (200,)
    assert mask.sum() == round(0.05 * 300)
    assert np.all(cube >= 0) and np.all(cube == np.round(cube))
    assert np.allclose(np.diff(energy), 0.2)
    assert energy[0] < 708 < energy[-1]
    # the Poisson noise has the expected mean
    assert abs(cube.sum() / clean.sum() - 1) < 0.01
    # determinism
    again = loglik.synthetic_fe_spectrum_image((20, 15), 200, shift_ev=2.0, anomaly_fraction=0.05, seed=1, edge=edge)
    np.testing.assert_array_equal(again["cube"], cube)
    # the edge of the anomalous region is shifted by 2 eV = 10 channels: compare edge onsets of the clean spectra
    norm = clean / clean[..., -1:]
    inside, outside = norm[mask].mean(0), norm[~mask].mean(0)
    assert np.argmax(np.diff(inside)) - np.argmax(np.diff(outside)) == 10


def test_synthetic_zero_shift_is_null():
    d = loglik.synthetic_fe_spectrum_image((12, 12), 100, shift_ev=0.0, anomaly_fraction=0.2, seed=0)
    # with no shift the region differs only by the smooth thickness/background maps, not by the edge
    ratio = d["clean"] / d["clean"].sum(axis=2, keepdims=True)
    assert np.abs(ratio[d["mask"]].mean(0) - ratio[~d["mask"]].mean(0)).max() < 0.05 * ratio.max()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"shape": (10,)}, "shape"),
        ({"n_energy": 8}, "n_energy"),
        ({"anomaly_fraction": 0.9}, "anomaly_fraction"),
        ({"dose": -1.0}, "dose"),
        ({"shift_ev": float("nan")}, "shift_ev"),
        ({"edge": "xyz"}, "edge"),
        ({"thickness_range": (0.0, 1.0)}, "thickness_range"),
        ({"seed": -1}, "seed"),  # regression: numpy's "expected non-negative integer" named no argument
    ],
)
def test_synthetic_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        loglik.synthetic_fe_spectrum_image(**kwargs)


def test_pca_scores(small_cube):
    """Matches an independent sklearn PCA on Keenan-Kotula-scaled data; shapes, windows and dispatch agree."""
    from sklearn.decomposition import PCA

    mask = small_cube["mask"]
    x = small_cube["cube"].reshape(-1, small_cube["cube"].shape[2])
    g = np.sqrt(x.mean(axis=1, keepdims=True))
    h = np.sqrt(x.mean(axis=0, keepdims=True))
    h = h / h.mean()
    for k in (3, 4, 5):
        pca = PCA(k, svd_solver="full").fit(x / (g * h))
        xhat = pca.inverse_transform(pca.transform(x / (g * h))) * (g * h)
        expected = 0.5 * ((x - xhat) ** 2 / np.maximum(xhat, 1)).sum(1)
        s = loglik.pca_anomaly_scores(small_cube["cube"], k, score="nll")
        assert s.shape == mask.shape
        np.testing.assert_allclose(s.ravel(), expected, rtol=1e-6)
        mu = np.maximum(xhat, 1e-3)
        dev = 2 * (np.where(x > 0, x * np.log(np.maximum(x, 1) / mu), 0) - (x - mu)).sum(1)
        np.testing.assert_allclose(loglik.pca_anomaly_scores(small_cube["cube"], k).ravel(), dev, rtol=1e-6)
    s = loglik.pca_anomaly_scores(
        small_cube["cube"], 3, score="correlation", window=(700, 720), energy=small_cube["energy"]
    )
    assert s.shape == mask.shape and np.all(s >= -1e-12) and np.all(s <= 2)
    assert np.array_equal(loglik.eels_anomaly_scores(small_cube["cube"], "pca", n_components=3),
                          loglik.pca_anomaly_scores(small_cube["cube"], 3))  # fmt: skip


def test_pca_full_rank_reconstructs_exactly():
    rng = np.random.default_rng(0)
    cube = rng.poisson(50, (4, 3, 20)).astype(float)
    for score in ("nll", "deviance"):
        s = loglik.pca_anomaly_scores(cube, 11, poisson_scaling=False, score=score)
        np.testing.assert_allclose(s, 0, atol=1e-9)


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        ((np.zeros((4, 4)),), {}, ValueError, "cube: expected a 3-D"),
        ((np.full((4, 4, 16), np.nan),), {}, ValueError, "cube: contains NaN"),
        ((np.ones((4, 4, 16)), 0), {}, ValueError, "n_components"),
        ((np.ones((4, 4, 16)), 16), {}, ValueError, "n_components"),
        ((np.ones((4, 4, 16)),), {"score": "l2"}, ValueError, "score"),
        ((np.ones((4, 4, 16)),), {"window": (5, 2)}, ValueError, "window"),
        ((np.ones((4, 4, 4)),), {}, ValueError, "at least 8 energy channels"),
        # regressions: numpy's "cannot convert float NaN to integer"; a NaN train_cube was reported as "cube"
        ((np.ones((4, 4, 16)),), {"window": (float("nan"), 2)}, ValueError, "window"),
        ((np.ones((4, 4, 16)),), {"window": ("a", 2)}, TypeError, "window"),
        ((np.ones((4, 4, 16)),), {"train_cube": np.full((4, 4, 16), np.nan)}, ValueError, "train_cube: contains NaN"),
        ((np.ones((4, 4, 16)),), {"train_cube": np.ones((4, 16))}, ValueError, "train_cube: expected a 3-D"),
        # regressions of the validation pass: truthy strings, negative counts, one pixel, a wrong energy axis
        ((np.ones((4, 4, 16)),), {"poisson_scaling": "no"}, TypeError, "poisson_scaling"),
        ((-np.ones((4, 4, 16)),), {}, ValueError, "cube: expected non-negative counts"),
        ((np.ones((1, 1, 16)), 1), {}, ValueError, "cube: PCA needs at least 2 pixels"),
        ((np.ones((4, 4, 16)),), {"energy": np.arange(15.0)}, ValueError, "energy: expected 16 values"),
        ((np.ones((4, 4, 16)),), {"energy": np.arange(16.0)[::-1].copy()}, ValueError, "strictly increasing"),
        ((np.ones((4, 4, 16)),), {"energy": np.arange(16.0), "window": (90, 99)}, ValueError, "window: .*eV"),
        ((np.ones((4, 4, 16)),), {"train_cube": -np.ones((4, 4, 16))}, ValueError, "train_cube: expected non-neg"),
    ],
)
def test_pca_bad_inputs(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        loglik.pca_anomaly_scores(*args, **kwargs)


def test_eels_scores_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "svm")
    with pytest.raises(ValueError, match="non-negative"):
        loglik.eels_anomaly_scores(-np.ones((4, 4, 16)), "pca")
    with pytest.raises(ValueError, match="epochs"):
        loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "cvae", epochs=0)
    for flag in ("return_model", "lr_decay", "progress"):
        with pytest.raises(TypeError, match=flag):
            loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "pca", **{flag: "no"})
    with pytest.raises(ValueError, match="seed"):
        loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "pca", seed=-1)
    with pytest.raises(ValueError, match="energy: expected 16 values"):
        loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "cvae", energy=np.arange(17.0))
    with pytest.raises(ValueError, match="model: a trained CVAE3D is used by method='cvae' only"):
        loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "pca", model=object())
    scores, model = loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "pca", n_components=1, return_model=True)
    assert scores.shape == (4, 4) and model is None
    with pytest.raises(ValueError, match="train_cube: expected non-negative"):
        loglik.eels_anomaly_scores(np.ones((4, 4, 16)), "cvae", train_cube=-np.ones((4, 4, 16)))
    if _backend.has_torch():
        with pytest.raises(TypeError, match="learn_variance"):
            loglik.CVAE3D(64, learn_variance="no")
        with pytest.raises(ValueError, match="kernel: KX and KY must be odd"):
            loglik.CVAE3D(64, kernel=(2, 3, 7))
        with pytest.raises(ValueError, match="kernel: expected 3 sizes"):
            loglik.CVAE3D(64, kernel=3)
        with pytest.raises(TypeError, match="channels"):
            loglik.CVAE3D(64, channels=8)


def test_cvae_training_keeps_the_global_rng_and_names_divergence():
    torch = pytest.importorskip("torch")
    c = loglik.synthetic_fe_spectrum_image((8, 8), 64, seed=0)["cube"]
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    s1 = loglik.eels_anomaly_scores(c, epochs=1)
    assert torch.equal(torch.rand(1), expected)  # training used its own RNG stream
    np.testing.assert_array_equal(s1, loglik.eels_anomaly_scores(c, epochs=1))
    with pytest.raises(ValueError, match="lr: training diverged"):
        loglik.eels_anomaly_scores(c, epochs=2, lr=1e6)
    # a caller's model: training arguments are not checked (unused) and its train/eval mode is kept
    s, model = loglik.eels_anomaly_scores(c, epochs=1, return_model=True)
    model.train()
    np.testing.assert_allclose(loglik.eels_anomaly_scores(c, model=model, epochs=0), s)
    assert model.training


def test_eels_argument_errors_name_the_argument():
    c = loglik.synthetic_fe_spectrum_image((8, 8), 64, seed=0)["cube"]
    cases = [
        (lambda: loglik.pca_anomaly_scores(c, 2, window=5), "window: expected"),
        (lambda: loglik.synthetic_fe_spectrum_image(8, 64), "shape: expected"),
        (lambda: loglik.synthetic_fe_spectrum_image((4, 4), 64, thickness_range=(1, 1, 1)), "thickness_range"),
        (lambda: loglik.synthetic_fe_spectrum_image((4, 4), 64, dose=1e30), "dose: expected at most"),
        (lambda: loglik.eels_anomaly_scores(c, epochs=1, model_kwargs=[1]), "model_kwargs"),
        (lambda: loglik.eels_anomaly_scores(c, epochs=1, seed=2**64), "seed"),
    ]
    if _backend.has_torch():
        import torch

        cases += [
            (lambda: loglik.CVAE3D(64).loss(np.ones((1, 1, 2, 2, 64))), "counts: expected a torch tensor"),
            (lambda: loglik.CVAE3D(64).loss(torch.ones((1, 1, 2, 2, 60))), "counts: expected a torch tensor"),
        ]
    for call, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            call()


def test_cvae3d_pickles_and_rejects_bad_training_counts():
    torch = pytest.importorskip("torch")
    import io
    import pickle

    model = loglik.CVAE3D(64)
    clone = pickle.loads(pickle.dumps(model))
    assert isinstance(clone, loglik.CVAE3D) and type(clone).__name__ == "CVAE3D"
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    assert isinstance(torch.load(buf, weights_only=False), loglik.CVAE3D)
    with pytest.raises(ValueError, match="counts: expected finite, non-negative"):
        model.fit_normalisation(torch.full((1, 1, 2, 2, 64), float("nan")))
    assert torch.isfinite(model.log_sigma).all()


@needs_compiled
@pytest.mark.parametrize("likelihood", ["gaussian", "poisson"])
def test_cvae3d_module(likelihood):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = loglik.CVAE3D(64, latent_dim=3, channels=(4, 6), kernel=(3, 3, 5), energy_stride=4, likelihood=likelihood)
    assert isinstance(model, loglik.CVAE3D) and isinstance(model, torch.nn.Module)
    assert model.lengths == [64, 16, 4]
    counts = torch.poisson(torch.full((2, 1, 5, 4, 64), 20.0))
    mu, logvar = model.encode(model.normalise(counts)[0])
    assert mu.shape == logvar.shape == (2, 3, 5, 4)
    assert model.decode(mu).shape == (2, 1, 5, 4, 64)
    loss = model.loss(counts)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the encoder really runs loglik.conv3d (the custom op), not torch's convolution
    with torch.autograd.profiler.profile() as prof:
        model.encode(model.normalise(counts)[0])
    assert any("loglik::conv3d" in e.name for e in prof.function_events)


@needs_compiled
def test_cvae3d_gradient_matches_torch_convolutions():
    """The CVAE3D loss gradient through loglik.conv3d equals the one through torch's conv3d / conv_transpose3d."""
    torch = pytest.importorskip("torch")
    import loglik.conv as conv_mod

    torch.manual_seed(0)
    model = loglik.CVAE3D(32, latent_dim=2, channels=(3,), kernel=(3, 3, 5), energy_stride=2).double().eval()
    counts = torch.poisson(torch.full((1, 1, 4, 3, 32), 10.0, dtype=torch.float64))
    loss = model.loss(counts)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])

    F = torch.nn.functional

    def t_conv(x, w, b=None, stride=1, padding=0, dilation=1, **kw):
        return F.conv3d(x, w, b, stride, padding, dilation)

    def t_convT(y, w, shape, stride=1, padding=0, dilation=1):
        return torch.nn.grad.conv3d_input(list(shape), w, y, stride, padding, dilation)

    mp = pytest.MonkeyPatch()
    mp.setattr(conv_mod, "conv3d", t_conv)
    mp.setattr(conv_mod, "conv3d_grad_input", t_convT)
    try:
        ref_model = loglik.eels._build_cvae_class()(32, latent_dim=2, channels=(3,), kernel=(3, 3, 5), energy_stride=2)
        ref_model = ref_model.double().eval()
        ref_model.load_state_dict(model.state_dict())
        ref_loss = ref_model.loss(counts)
        ref_grads = torch.autograd.grad(ref_loss, [p for p in ref_model.parameters() if p.requires_grad])
    finally:
        mp.undo()
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


@needs_compiled
def test_cvae_anomaly_scores_train_and_reuse(small_cube):
    pytest.importorskip("torch")
    calls = []
    s, model = loglik.eels_anomaly_scores(
        small_cube["cube"], "cvae", epochs=15, tile=8, batch_tiles=2, seed=0, return_model=True,
        progress=lambda step, loss: calls.append(loss),
    )  # fmt: skip
    assert s.shape == (16, 16) and np.isfinite(s).all()
    assert len(calls) == 15 * 2 and np.isfinite(calls).all()
    assert calls[-1] < calls[0]  # training reduces the loss
    again = loglik.eels_anomaly_scores(small_cube["cube"], "cvae", model=model)
    np.testing.assert_allclose(again, s, rtol=1e-5)
    c = loglik.eels_anomaly_scores(
        small_cube["cube"], model=model, score="correlation", window=(700, 730), energy=small_cube["energy"]
    )
    w = loglik.eels_anomaly_scores(small_cube["cube"], model=model, window=(10, 100), score="nll")
    nll = loglik.eels_anomaly_scores(small_cube["cube"], model=model, score="nll")
    assert c.shape == w.shape == nll.shape == (16, 16)
    assert np.isfinite(c).all() and np.isfinite(w).all() and np.isfinite(nll).all()
    with pytest.raises(ValueError, match="model: trained for"):
        loglik.eels_anomaly_scores(small_cube["cube"][..., :64], model=model)
    with pytest.raises(TypeError, match="model"):
        loglik.eels_anomaly_scores(small_cube["cube"], model=object())


@needs_compiled
def test_cvae_fit_normalisation():
    """log_sigma starts at the Poisson noise level of the normalised spectra (sigma = 1 was ~30x too wide: training
    stalled at a bulk deviance of 160 per channel); the decoder predicts deviations from the mean spectrum."""
    torch = pytest.importorskip("torch")
    bulk = loglik.synthetic_fe_spectrum_image((8, 8), 64, anomaly_fraction=0.0, seed=5)["cube"]
    counts = torch.from_numpy(bulk.astype(np.float32))[None, None]
    model = loglik.CVAE3D(64, latent_dim=2, channels=(4,), kernel=(3, 3, 5), energy_stride=4)
    before = counts.clone()
    model.fit_normalisation(counts)
    assert torch.equal(counts, before)  # input not modified
    xn, m = model.normalise(counts)
    flat = xn.reshape(-1, 64)
    torch.testing.assert_close(model.spectrum_mean, flat.mean(0))
    torch.testing.assert_close(model.spectrum_scale, flat.std(0))
    noise = 0.5 * torch.log((xn / m).reshape(-1, 64).mean(0))
    torch.testing.assert_close(model.log_sigma.detach(), noise)
    # a zero latent decodes near the mean spectrum (the decoder's output is scaled by the spread over pixels)
    with torch.no_grad():
        dec = model.decode(torch.zeros(1, 2, 3, 3))
    assert dec.shape == (1, 1, 3, 3, 64)
    assert ((dec[0, 0] - model.spectrum_mean).abs() / model.spectrum_scale).max() < 10
    # a Poisson model decodes to log-rates around log(mean spectrum)
    pm = loglik.CVAE3D(64, latent_dim=2, channels=(4,), kernel=(3, 3, 5), energy_stride=4, likelihood="poisson")
    pm.fit_normalisation(counts)
    assert pm.log_sigma.detach().abs().max() > 0  # set, but unused and not trained for Poisson
    assert not pm.log_sigma.requires_grad


@needs_compiled
@pytest.mark.parametrize("likelihood", ["gaussian", "poisson"])
def test_cvae_trained_on_bulk_detects_shift(likelihood):
    """The paper's protocol on a tiny cube: trained on a separate bulk cube, the CVAE reconstructs bulk spectra to
    the Poisson noise level (deviance ~ 1 per channel) and separates a 4 eV shift; it does not track thickness."""
    pytest.importorskip("torch")
    bulk = loglik.synthetic_fe_spectrum_image((16, 16), 128, shift_ev=0.0, anomaly_fraction=0.0, seed=7)["cube"]
    d = loglik.synthetic_fe_spectrum_image((16, 16), 128, shift_ev=4.0, anomaly_fraction=0.1, seed=3)
    s, model = loglik.eels_anomaly_scores(
        d["cube"], "cvae", train_cube=bulk, epochs=40, tile=8, batch_tiles=4, seed=0, likelihood=likelihood,
        return_model=True,
    )  # fmt: skip
    assert _auc(d["mask"], s) > 0.97
    normal = s[~d["mask"]]
    assert normal.mean() / 128 < 1.5  # close to the noise level (was 160 per channel before fit_normalisation)
    assert np.median(s[d["mask"]]) > np.percentile(normal, 99)
    bulk_scores = loglik.eels_anomaly_scores(bulk, model=model)
    assert abs(np.corrcoef(bulk_scores.ravel(), bulk.sum(2).ravel())[0, 1]) < 0.5
    w = loglik.eels_anomaly_scores(d["cube"], model=model, window=(700, 730), energy=d["energy"])
    assert _auc(d["mask"], w) > 0.97


@needs_compiled
def test_cvae_poisson_likelihood_trains(small_cube):
    pytest.importorskip("torch")
    s = loglik.eels_anomaly_scores(small_cube["cube"], likelihood="poisson", epochs=4, tile=8, batch_tiles=2)
    assert s.shape == (16, 16) and np.isfinite(s).all()


def test_load_spectrum_image(tmp_path):
    cube = np.arange(2 * 3 * 10, dtype=float).reshape(2, 3, 10)
    np.save(tmp_path / "c.npy", cube)
    got = loglik.load_spectrum_image(str(tmp_path / "c.npy"))
    np.testing.assert_array_equal(got["cube"], cube)
    with pytest.raises(ValueError, match="no such file"):
        loglik.load_spectrum_image(str(tmp_path / "missing.dm4"))
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ValueError, match="unsupported extension"):
        loglik.load_spectrum_image(str(tmp_path / "x.txt"))
    with pytest.raises(TypeError, match="path"):
        loglik.load_spectrum_image(3)
    # regression: a corrupt file surfaced the reader's own exception (NotImplementedError, ...)
    (tmp_path / "bad.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="path: could not read"):
        loglik.load_spectrum_image(str(tmp_path / "bad.npy"))
    if importlib.util.find_spec("rsciio") is not None:
        (tmp_path / "bad.dm4").write_bytes(b"junk")
        with pytest.raises(ValueError, match="path: could not read"):
            loglik.load_spectrum_image(str(tmp_path / "bad.dm4"))


def test_load_msa_through_rosettasciio():
    pytest.importorskip("rsciio")
    import importlib.util
    import os

    spec = importlib.util.find_spec("exspy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("exspy's bundled spectrum not installed")
    msa = os.path.join(list(spec.submodule_search_locations)[0], "tests", "components", "coreloss_spectrum.msa")
    got = loglik.load_spectrum_image(msa)
    assert got["cube"].shape == (1, 1, 2048)
    np.testing.assert_allclose(got["energy"][:2], [360.0, 360.2])


@needs_compiled
def test_cli_eels(tmp_path, capsys):
    from loglik.commands import eels as cmd

    d = loglik.synthetic_fe_spectrum_image((12, 12), 64, shift_ev=8.0, anomaly_fraction=0.1, seed=0)
    np.save(tmp_path / "cube.npy", d["cube"])
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    for method in ("pca", "cvae"):
        args = parser.parse_args([str(tmp_path / "cube.npy"), "--method", method, "--epochs", "1", "--no-progress",
                                  "--out", str(tmp_path / method)])  # fmt: skip
        assert cmd.main(args) == 0
        assert np.load(tmp_path / f"{method}_scores.npy").shape == (12, 12)
        assert (tmp_path / f"{method}_anomaly.png").stat().st_size > 1000
    args = parser.parse_args([str(tmp_path / "nothing.dm3")])
    assert cmd.main(args) == 2
    # regressions: bad contents or options ended in tracebacks (or an IndexError on an empty file)
    np.save(tmp_path / "neg.npy", -d["cube"])
    np.save(tmp_path / "empty.npy", np.zeros((4, 4, 0)))
    for argv in (["neg.npy", "--method", "pca"], ["empty.npy"], ["cube.npy", "--method", "pca", "--window", "9", "5"],
                 ["cube.npy", "--method", "pca", "--components", "0"], ["cube.npy", "--train", "neg.npy"],
                 ["cube.npy", "--method", "pca", "--out", str(tmp_path / "no" / "dir")]):  # fmt: skip
        args = parser.parse_args([str(tmp_path / a) if a.endswith(".npy") else a for a in argv])
        assert cmd.main(args) == 2
        assert capsys.readouterr().err.startswith("loglik eels: ")


def test_pca_trained_on_bulk_detects_shift():
    bulk = loglik.synthetic_fe_spectrum_image((16, 16), 128, shift_ev=0.0, anomaly_fraction=0.0, seed=7)["cube"]
    d = loglik.synthetic_fe_spectrum_image((16, 16), 128, shift_ev=4.0, anomaly_fraction=0.05, seed=3)
    for k in (3, 4, 5):
        assert _auc(d["mask"], loglik.pca_anomaly_scores(d["cube"], k, train_cube=bulk)) > 0.95
    with pytest.raises(ValueError, match="train_cube"):
        loglik.pca_anomaly_scores(d["cube"], 3, train_cube=bulk[..., :64])
    with pytest.raises(ValueError, match="train_cube"):
        loglik.eels_anomaly_scores(d["cube"], "cvae", train_cube=bulk[..., :64])
