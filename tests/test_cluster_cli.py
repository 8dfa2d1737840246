"""``loglik cluster FILE.csv --k K --method ...``: labels CSV, scatter PNG, header/truth handling, bad files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from loglik import sdp
from loglik.cli import main


def _write(path, X, header=None, truth=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        for i, row in enumerate(X):
            w.writerow(list(row) + ([truth[i]] if truth is not None else []))


def _blobs(p=2, n_per=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = 8 * np.eye(3, p)
    X = np.concatenate([c + rng.normal(size=(n_per, p)) for c in centers])
    return X, np.repeat(np.arange(3), n_per)


def _labels(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["row", "label"]
    return np.array([int(r[1]) for r in rows[1:]])


@pytest.mark.parametrize("method", ["kmeans", "em"])
@pytest.mark.parametrize("p", [1, 2, 5])
def test_cluster_cli_writes_labels_and_plot(tmp_path, capsys, method, p):
    from loglik import misclustering_error

    X, y = _blobs(p)
    f = tmp_path / "data.csv"
    _write(f, X)
    assert main(["cluster", str(f), "--k", "3", "--method", method, "--n-init", "3"]) == 0
    labels = _labels(tmp_path / "data.labels.csv")
    assert len(labels) == len(X)
    if p > 1:
        assert misclustering_error(labels, y) < 0.05
    png = tmp_path / "data.clusters.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "cluster sizes" in out and str(png) in out


def test_cluster_cli_header_truth_and_paths(tmp_path, capsys):
    X, y = _blobs(4)
    f = tmp_path / "d.csv"
    _write(f, X, header=["a", "b", "c", "d", "species"], truth=np.array(["x", "y", "z"])[y])
    out_csv, out_png = tmp_path / "labels.csv", tmp_path / "plot.png"
    rc = main(
        ["cluster", str(f), "--k", "3", "--method", "kmeans", "--truth-column", "species", "--out", str(out_csv)]
        + ["--plot", str(out_png), "--standardize"]
    )
    assert rc == 0 and out_png.exists()
    assert len(_labels(out_csv)) == len(X)
    assert "mis-clustering error vs 'species': 0.0000" in capsys.readouterr().out


def test_cluster_cli_principal_components():
    from loglik.commands.cluster import principal_components

    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 4)) * [10, 3, 1, 0.1]
    Z, ratio = principal_components(X)
    assert Z.shape == (50, 2) and ratio[0] > ratio[1] > 0
    np.testing.assert_allclose(np.abs(np.corrcoef(Z[:, 0], X[:, 0])[0, 1]), 1, atol=0.01)


@pytest.mark.parametrize(
    "content,message",
    [
        ("1,2\n3,x\n", "row 2"),
        ("1,2\n3\n", "row 2 has 1 fields"),
        ("a,b\n", "no data rows"),
        ("", "no data rows"),
        ("1,nan\n2,3\n3,4\n", "NaN"),
    ],
)
def test_cluster_cli_bad_files(tmp_path, capsys, content, message):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    assert main(["cluster", str(f), "--k", "2", "--method", "kmeans", "--no-plot"]) == 2
    assert message in capsys.readouterr().err


def test_cluster_cli_bad_k(tmp_path, capsys):
    X, _ = _blobs(2, n_per=1)
    f = tmp_path / "d.csv"
    _write(f, X)
    assert main(["cluster", str(f), "--k", "5", "--method", "em", "--no-plot"]) == 2
    assert "n_clusters" in capsys.readouterr().err
    assert main(["cluster", str(tmp_path / "missing.csv"), "--k", "2"]) == 2


@pytest.mark.parametrize(
    "method,fn", [("sdp", "kmeans_sdp"), pytest.param("ila-sdp", "ila_sdp", marks=pytest.mark.slow)]
)
def test_cluster_cli_sdp_methods(tmp_path, capsys, method, fn):
    if not hasattr(sdp, fn):
        pytest.skip(f"loglik.sdp.{fn} is not available yet")
    from loglik import misclustering_error

    X, y = _blobs(3, n_per=20)
    f = tmp_path / "d.csv"
    _write(f, X)
    assert main(["cluster", str(f), "--k", "3", "--method", method]) == 0
    assert misclustering_error(_labels(tmp_path / "d.labels.csv"), y) < 0.05


def test_cluster_cli_unwritable_outputs_and_bad_threads(tmp_path, capsys):
    # Regression: an unwritable --out / --plot and --threads 0 ended in a Python traceback instead of a message.
    X, _ = _blobs(2, n_per=5)
    f = tmp_path / "d.csv"
    _write(f, X)
    missing = tmp_path / "no" / "such" / "dir"
    rc = main(["cluster", str(f), "--k", "2", "--method", "kmeans", "--no-plot", "--out", str(missing / "l.csv")])
    assert rc == 2
    assert "--out" in capsys.readouterr().err
    rc = main(["cluster", str(f), "--k", "2", "--method", "kmeans", "--plot", str(missing / "p.png")])
    assert rc == 2 and "--plot" in capsys.readouterr().err
    for bad in ("0", "-3"):
        with pytest.raises(SystemExit) as exc:
            main(["--threads", bad, "info"])
        assert exc.value.code == 2 and "--threads" in capsys.readouterr().err
