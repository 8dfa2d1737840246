"""loglik's benchmark suite (shipped as ``loglik.bench``; run with ``loglik bench``).

Each ``bench_<name>.py`` module defines ``run(quick: bool) -> list[Row]``: loglik and the peers a user would
otherwise pick, measured in the same run. ``SUITES`` maps the names accepted by ``loglik bench NAME`` to modules.
"""

SUITES: dict[str, str] = {
    "cluster": "bench_cluster",
    "lm": "bench_lm",
    "score": "bench_score",
    "conv3d": "bench_conv3d",
    "eels": "bench_eels",
}
