"""The benchmark harness: timing statistics, ratios against loglik, table, JSON and plot output."""

from __future__ import annotations

import json

from loglik.bench import SUITES, _harness

from loglik import cli


def test_time_call_reports_median_and_spread() -> None:
    calls = []
    timing, out = _harness.time_call(lambda: calls.append(1) or len(calls), repeat=5, warmup=2)
    assert len(calls) == 7 and out == 7
    assert timing.n == 5 and timing.q25 <= timing.median <= timing.q75


def test_ratios_table_json_and_plot(tmp_path) -> None:
    rows = [
        _harness.Row("s", "case", "loglik", 0.5, 0.01, 5, {"objective": 1.0}),
        _harness.Row("s", "case", "peer", 2.0, 0.1, 5),
        _harness.Row("s", "acc", "loglik", None, None, 0, {"error_mean": 0.1}),
    ]
    assert _harness.ratios(rows) == {0: 1.0, 1: 4.0}
    table = _harness.format_table(rows)
    assert "4.00x" in table and "error_mean=0.1" in table
    path = tmp_path / "r.json"
    _harness.write_json(str(path), rows, _harness.environment())
    data = json.loads(path.read_text())
    assert data["environment"]["cores"] >= 1 and len(data["results"]) == 3
    _harness.plot(str(tmp_path / "r.png"), rows, data["environment"])
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_bench_rejects_unknown_suite(capsys) -> None:
    assert cli.main(["bench", "no-such-suite"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert set(SUITES) >= {"cluster", "lm", "score", "conv3d", "eels"}
