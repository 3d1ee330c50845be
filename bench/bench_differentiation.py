"""Benchmark (not a test): what differentiation costs per step (issue 12: at most +20% on a 10,000-cell tissue).

``python bench/bench_differentiation.py [--cells 10000] [--steps 200] [--repeats 5]`` times the same
tissue (substrate=generic_tissue, small-world graph) with ``differentiation=fixed`` (no adaptation
process: the plain substrate) against ``imitation`` and ``gradient`` (theta adapting every step),
after compilation, median and min-max over ``--repeats`` runs, and writes
``bench/results/differentiation.json``. Biology is timed the same way when ``--bio`` is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def time_case(overrides: list[str], steps: int, repeats: int) -> dict:
    from sim.api import prepare
    from sim.core import engine
    from sim.core.config import compose

    cfg, sub, built = prepare(compose(overrides))
    run = lambda: engine.run(sub, built.state, built.params, seed=0, steps=steps, record_every=steps,  # noqa: E731
                             replicates=1)
    t0 = time.perf_counter()
    first = run()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        r = run()
        times.append(r.wall_s / steps)
    return {"processes": list(sub.process_names), "compile_and_first_s": compile_s, "engine_compile_s": first.compile_s,
            "step_ms_median": 1e3 * statistics.median(times), "step_ms_min": 1e3 * min(times),
            "step_ms_max": 1e3 * max(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bio", action="store_true", help="also time the biology substrate")
    args = ap.parse_args()
    out = {"cells": args.cells, "steps": args.steps, "repeats": args.repeats, "cases": {}}
    subs = [("generic", ["experiment=tissue", "substrate=generic_tissue"])] + (
        [("bio", ["experiment=tissue", "substrate=bio"])] if args.bio else [])
    for name, base in subs:
        base = base + ["topology=small_world", f"topology.n_cells={args.cells}", "replicates=1"]
        for rule in ("fixed", "imitation", "gradient"):
            extra = [f"differentiation={rule}"] + (["differentiation.alpha=2"] if rule != "fixed" else [])
            res = time_case(base + extra, args.steps, args.repeats)
            out["cases"][f"{name}/{rule}"] = res
            ref = out["cases"][f"{name}/fixed"]["step_ms_median"]
            res["overhead_vs_fixed"] = res["step_ms_median"] / ref - 1.0
            print(f"{name:8s} {rule:10s} {res['step_ms_median']:7.3f} ms/step (min {res['step_ms_min']:.3f}, "
                  f"max {res['step_ms_max']:.3f}; {100 * res['overhead_vs_fixed']:+.1f}% vs fixed)", flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "differentiation.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
