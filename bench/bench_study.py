"""Benchmark (not a test): a batched parameter study against separate runs, and process start-up.

    python bench/bench_study.py                  # 1,000 points of a 16-cell biology tissue, 500 steps
    python bench/bench_study.py --points 200 --separate 10 --processes 3

Three ways to evaluate the same ``P`` parameter points (``demand_scale`` and ``supply_scale`` over
a Latin hypercube, one replicate each, the outcome ``mean_last:energy_charge``):

``batched``    :func:`sim.core.study.evaluate`: the points as rows of a few engine calls
               (``chunk_points`` at a time), one compile;
``separate``   one ``engine.run`` per point in this process, the compiled program reused (the
               fairest competitor: only the same work, no process start, one compile like the
               batched study's); the first call and ``--separate`` more are timed, the rest scaled;
``processes``  one ``python -m sim`` per point, as a Hydra sweep without a batched study runs it,
               with a warm persistent compilation cache; timed on ``--processes`` points and scaled
               to ``P``.

Start-up: the wall time of ``python -m sim`` for a 1-step run, with an empty compilation cache
(cold) and again with the cache the first one filled (warm: JAX's persistent cache, and the engine's
chunk program loaded whole from the executable store, :mod:`sim.core.executable_store`, untraced);
the time from the process's start to its first step done (the run's ``first_chunk_s``: interpreter,
imports, config, build, compile and the step, not the writing of results.nc and summary.json after
it); and the compile part of it
(``compile_s``). Each is the median of ``--repeats`` runs; the spread is the
min-max. Writes ``bench/results/study.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

OVERRIDES = ["experiment=tissue", "substrate=bio", "topology=ring", "topology.n_cells=16", "replicates=1",
             "figures=false", "progress=false"]


def child_env(cache_home: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XDG_CACHE_HOME=cache_home, HYDRA_FULL_ERROR="0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli(args, cache_home: str, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "sim", *args, f"hydra.run.dir={out}"], env=child_env(cache_home),
                         capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"python -m sim {' '.join(args)} failed: {res.stderr[-1500:]}")
    return wall, json.loads((out / "summary.json").read_text())


def spread(xs) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--chunk-points", type=int, default=250)
    ap.add_argument("--separate", type=int, default=20, help="points timed as separate engine runs")
    ap.add_argument("--processes", type=int, default=3, help="points timed as separate processes")
    ap.add_argument("--repeats", type=int, default=3, help="start-up runs per cache state")
    a = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    from sim import api
    from sim.core import engine, study
    from sim.core.config import compose

    cfg = compose(OVERRIDES + [f"steps={a.steps}", "record_every=50"])
    cfg, sub, built = api.prepare(cfg)
    names = ["demand_scale", "supply_scale"]
    x = study.design("lhs", {n: [0.5, 2.0] for n in names}, a.points, seed=0)
    outcome = "mean_last:energy_charge"

    t0 = time.perf_counter()
    res = study.evaluate(sub, built, names, x, [outcome], steps=a.steps, record_every=50, chunk_points=a.chunk_points)
    batched = time.perf_counter() - t0
    assert res.error is None, res.error

    # separate engine runs, one point each, the executable reused after the first (not timed)
    def one(i):
        p = study.point_params(built.params, names, x[i])
        r = engine.run(sub, built.state, p, seed=built.seed, steps=a.steps, record_every=50, replicates=1)
        assert r.error is None
        return r

    t0 = time.perf_counter()
    one(0)  # the compile, paid once like the batched study's
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(1, a.separate + 1):
        one(i)
    per_run = (time.perf_counter() - t0) / a.separate
    separate_total = first + per_run * (a.points - 1)

    # separate processes with a warm cache (the first one fills it, not timed)
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        point = lambda i: [f"params.demand_scale={x[i, 0]}", f"params.supply_scale={x[i, 1]}",  # noqa: E731
                           f"steps={a.steps}", "record_every=50"]
        run_cli(OVERRIDES + point(0), cache, Path(tmp) / "warmup")
        walls = [run_cli(OVERRIDES + point(i), cache, Path(tmp) / f"p{i}")[0] for i in range(a.processes)]
        per_process = statistics.median(walls)

        # start-up: a 1-step run, cold (empty cache each time) and warm
        cold, warm, cold_compile, warm_compile, cold_first, warm_first, stored = [], [], [], [], [], [], []
        for k in range(a.repeats):
            c = str(Path(tmp) / f"cold{k}")
            w, s = run_cli(OVERRIDES + ["steps=1", "record_every=1"], c, Path(tmp) / f"c{k}")
            cold.append(w)
            cold_compile.append(s["compile_s"])
            cold_first.append(s.get("first_chunk_s", float("nan")))
            # the engine's chunk program, serialized whole for the warm run (sim.core.executable_store)
            stored.append(len(list((Path(c) / "currency-sim" / "jax" / "executables").glob("*.exe"))))
            w, s = run_cli(OVERRIDES + ["steps=1", "record_every=1"], c, Path(tmp) / f"w{k}")
            warm.append(w)
            warm_compile.append(s["compile_s"])
            warm_first.append(s.get("first_chunk_s", float("nan")))

    out = {
        "points": a.points, "steps": a.steps, "cells": 16, "chunk_points": a.chunk_points,
        "batched_s": batched, "batched_engine_calls": res.calls, "batched_compile_s": res.compile_s,
        "separate_run_s": per_run, "separate_first_s": first, "separate_total_s_scaled": separate_total,
        "process_s": spread(walls), "processes_total_s_scaled": per_process * a.points,
        "speedup_vs_separate_runs": separate_total / batched,
        "speedup_vs_processes": per_process * a.points / batched,
        "startup_cold_s": spread(cold), "startup_warm_s": spread(warm),
        "compile_cold_s": spread(cold_compile), "compile_warm_s": spread(warm_compile),
        "first_step_cold_s": spread(cold_first), "first_step_warm_s": spread(warm_first),
        "executables_stored_per_cold_run": stored,
        "loadavg": os.getloadavg(),
    }
    path = ROOT / "bench" / "results" / "study.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{a.points} points x {a.steps} steps, 16-cell biology tissue, one replicate per point:")
    print(f"  batched study     {batched:8.1f} s  ({res.calls} engine calls, compile {res.compile_s:.1f} s)")
    print(f"  separate runs     {separate_total:8.1f} s  (first {first:.1f} s with its compile, then scaled from "
          f"{a.separate}: {per_run * 1e3:.1f} ms each)"
          f"  -> batched is {out['speedup_vs_separate_runs']:.1f}x faster")
    print(f"  separate processes{per_process * a.points:8.0f} s  (scaled from {a.processes}: {per_process:.1f} s each, "
          f"warm cache)  -> batched is {out['speedup_vs_processes']:.0f}x faster")
    print(f"start-up of a 1-step run (median of {a.repeats}, min-max): cold {out['startup_cold_s']['median']:.1f} s "
          f"({min(cold):.1f}-{max(cold):.1f}; compile {statistics.median(cold_compile):.1f} s), warm "
          f"{out['startup_warm_s']['median']:.1f} s ({min(warm):.1f}-{max(warm):.1f}; compile "
          f"{statistics.median(warm_compile):.2f} s); load average {out['loadavg'][0]:.1f}")
    print(f"start-up to the first step done (process start -> first chunk): cold "
          f"{out['first_step_cold_s']['median']:.1f} s ({min(cold_first):.1f}-{max(cold_first):.1f}), warm "
          f"{out['first_step_warm_s']['median']:.1f} s ({min(warm_first):.1f}-{max(warm_first):.1f}); "
          f"executables stored by each cold run: {stored}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
