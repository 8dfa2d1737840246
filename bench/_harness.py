"""Timing, result rows, environment capture, table, JSON and plot for every benchmark.

Timings are medians with the interquartile range as spread, all implementations of a case measured in the same
run so their ratio is meaningful on a shared, noisy machine.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass
class Timing:
    median: float
    q25: float
    q75: float
    n: int

    @property
    def spread(self) -> float:
        return self.q75 - self.q25


@dataclasses.dataclass
class Row:
    """One measurement: implementation ``impl`` on case ``case`` of suite ``suite``.

    ``seconds``/``spread`` are the median and IQR wall time (None for accuracy-only rows); ``metrics`` holds the
    rest (objective, error, GFLOP/s, peak MB ...).
    """

    suite: str
    case: str
    impl: str
    seconds: float | None = None
    spread: float | None = None
    repeats: int = 0
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


def time_call(
    fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, max_seconds: float = 60.0
) -> tuple[Timing, Any]:
    """Run fn warmup + repeat times (stopping early once max_seconds is spent); return timing and last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeat)):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent > max_seconds:
            break
    times.sort()
    if len(times) >= 4:
        q = statistics.quantiles(times, n=4)
        q25, q75 = q[0], q[2]
    else:
        q25, q75 = times[0], times[-1]
    return Timing(statistics.median(times), q25, q75, len(times)), out


def timed_row(suite: str, case: str, impl: str, fn: Callable[[], Any], **kw: Any) -> tuple[Row, Any]:
    timing, out = time_call(fn, **kw)
    return Row(suite, case, impl, timing.median, timing.spread, timing.n), out


def proc_status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (e.g. VmRSS, VmHWM); None where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def environment() -> dict[str, Any]:
    """Hardware and versions, written next to every result."""
    env: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
    }
    for mod in ("loglik", "numpy", "scipy", "sklearn", "torch", "triton", "cvxpy", "scs"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", "?")
        except Exception:
            env[mod] = None
    try:
        import loglik

        env["loglik_threads"] = loglik.get_num_threads()
    except Exception:
        pass
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_metric(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def ratios(rows: Sequence[Row], base_impl_prefix: str = "loglik") -> dict[int, float]:
    """time(row) / time(loglik row of the same case): how many times slower than loglik the row is."""
    base: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.impl.startswith(base_impl_prefix) and r.seconds is not None:
            base.setdefault((r.suite, r.case), r.seconds)
    out: dict[int, float] = {}
    for i, r in enumerate(rows):
        b = base.get((r.suite, r.case))
        if b and r.seconds is not None:
            out[i] = r.seconds / b
    return out


def format_table(rows: Sequence[Row]) -> str:
    rat = ratios(rows)
    header = ["suite", "case", "impl", "median", "IQR", "n", "time/loglik", "metrics"]
    body = []
    for i, r in enumerate(rows):
        metrics = " ".join(f"{k}={_fmt_metric(v)}" for k, v in r.metrics.items())
        body.append(
            [
                r.suite,
                r.case,
                r.impl,
                _fmt_seconds(r.seconds),
                _fmt_seconds(r.spread),
                str(r.repeats or "-"),
                f"{rat[i]:.2f}x" if i in rat else "-",
                metrics,
            ]
        )
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def write_json(path: str, rows: Sequence[Row], env: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"environment": env, "results": [dataclasses.asdict(r) for r in rows]}, f, indent=1)


def plot(path: str, rows: Sequence[Row], env: dict[str, Any]) -> None:
    """One panel per suite: median time per case and implementation (log scale) with IQR error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r.seconds is not None]
    suites = list(dict.fromkeys(r.suite for r in timed))
    if not suites:
        return
    fig, axes = plt.subplots(len(suites), 1, figsize=(10, 3.2 * len(suites)), squeeze=False)
    for ax, suite in zip(axes[:, 0], suites, strict=True):
        rs = [r for r in timed if r.suite == suite]
        cases = list(dict.fromkeys(r.case for r in rs))
        impls = list(dict.fromkeys(r.impl for r in rs))
        width = 0.8 / max(1, len(impls))
        for j, impl in enumerate(impls):
            xs, ys, es = [], [], []
            for ci, case in enumerate(cases):
                for r in rs:
                    if r.case == case and r.impl == impl:
                        xs.append(ci + j * width)
                        ys.append(r.seconds)
                        es.append((r.spread or 0) / 2)
            ax.bar(xs, ys, width, yerr=es, label=impl)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
        ax.set_xticklabels(cases, rotation=15, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"loglik bench {suite}  -  {env.get('cpu', '')}, {env.get('cores')} cores", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
