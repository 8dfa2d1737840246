"""The ``loglik`` command: ``info``, ``bench`` (the main job) and the domain demos (``cluster``, ...)."""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import sys
from collections.abc import Sequence

from . import _backend
from .commands import COMMANDS


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def info() -> dict[str, object]:
    """Version, build flags, CPU features, BLAS, threads and accelerator availability."""
    from . import __version__

    out: dict[str, object] = {"loglik": __version__, "python": sys.version.split()[0]}
    flags = _cpu_flags()
    out["cpu_features"] = {
        name: (flag in flags)
        for name, flag in [
            ("avx2", "avx2"),
            ("fma", "fma"),
            ("avx512f", "avx512f"),
            ("avx512_bf16", "avx512_bf16"),
            ("amx_tile", "amx_tile"),
            ("amx_bf16", "amx_bf16"),
        ]
    }
    out["cores"] = os.cpu_count()
    if _backend.has_compiled():
        C = _backend.C()
        bi = C.build_info()
        out["compiled"] = True
        out["build_flags"] = bi["build_flags"]
        out["openmp"] = bi["openmp"]
        out["blas"] = "OpenBLAS (scipy-openblas32): " + bi["blas"].strip()
        out["loglik_threads"] = C.get_num_threads()
        out["openblas_threads"] = C.openblas_num_threads()
    else:
        out["compiled"] = False
    out["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    out["torch"] = _version("torch")
    out["triton"] = _version("triton") if _backend.has_triton() else None
    out["triton_interpret"] = _backend.triton_interpret()
    out["cuda"] = _backend.has_cuda() if _backend.has_torch() else False
    return out


def _version(mod: str) -> str | None:
    try:
        return str(importlib.import_module(mod).__version__)
    except Exception:
        return None


def _cmd_info(args: argparse.Namespace) -> int:
    for k, v in info().items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={'yes' if b is True else 'no' if b is False else b}" for a, b in v.items())
        print(f"{k:18s} {v}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import SUITES, _harness

    names = args.names or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"loglik bench: unknown suite(s) {unknown}; choose from {sorted(SUITES)}", file=sys.stderr)
        return 2
    # Sizes: every suite at once runs the quick sizes (a few minutes on 2 cores); a named suite runs the full sizes
    # of its issue. --quick / --full override either way.
    quick = args.quick or (not args.full and not args.names)
    env = _harness.environment()
    env["quick"] = quick
    rows: list[_harness.Row] = []
    for name in names:
        try:
            mod = importlib.import_module(f"loglik.bench.{SUITES[name]}")
        except ModuleNotFoundError as exc:
            if exc.name == f"loglik.bench.{SUITES[name]}":
                print(f"[{name}] not available in this version", file=sys.stderr)
                continue
            raise
        print(f"== loglik bench {name} ({'quick' if quick else 'full'} sizes)", flush=True)
        got = mod.run(quick=quick)
        print(_harness.format_table(got), flush=True)
        rows += got
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = args.json or os.path.join("bench_results", f"bench-{stamp}.json")
    _harness.write_json(json_path, rows, env)
    png_path = os.path.splitext(json_path)[0] + ".png"
    _harness.plot(png_path, rows, env)
    print("\n== summary", flush=True)
    print(_harness.format_table(rows))
    print(f"\nmachine: {env['cpu']}, {env['cores']} cores; torch {env.get('torch')}")
    print(f"results: {json_path}\nplot:    {png_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loglik", description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="threads for loglik's kernels (default: all cores)")
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("info", help="version, build flags, CPU features, BLAS, threads, Triton/CUDA")
    sp.set_defaults(func=_cmd_info)
    sp = sub.add_parser("bench", help="run the benchmark suite against peer libraries")
    sp.add_argument("names", nargs="*", help="suites to run (default: all)")
    size = sp.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (the default when no suite is named)")
    size.add_argument("--full", action="store_true", help="the full sizes (the default when suites are named)")
    sp.add_argument("--json", default=None, help="where to write the JSON results (a PNG plot goes beside it)")
    sp.set_defaults(func=_cmd_bench)
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            raise
        sp = sub.add_parser(name, help=mod.HELP)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.main)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        try:
            _backend.set_num_threads(args.threads)
        except ValueError as exc:
            parser.error(f"argument --threads: {exc}")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
