"""``loglik bench cluster``: K-means SDP speed against cvxpy + SCS, and clustering accuracy of every method."""

from __future__ import annotations

from ._harness import Row


def run(quick: bool = False) -> list[Row]:
    from . import cluster_accuracy, cluster_speed

    return cluster_speed.speed_rows(quick) + cluster_accuracy.accuracy_rows(quick)
