"""Benchmarks (not tests): ``make bench`` -> bench/results/bench.json, figures, README table.

Sections: honest baselines (``bench/baselines.py``: the JAX engine against a plain numpy step,
``bench/numpy_step.py``, and the Mesa reference without and, labelled, with a DataCollector, timed
interleaved in one process); bytes per agent and step counted from the compiled HLO and the
achieved fraction of the measured copy bandwidth; JAX scaling from 1e3 to 1e6 agents (each size in
a fresh subprocess, so peak RSS and compile time are honest); junctions; compile time; experiments;
ensembles of 1..256 replicates in one call; replicates sharded over two forced host devices (a
child process); the cost of bitwise batch invariance; an LLM cluster.

Agents counted: cells + living producers + consumers + chain slots (the bio preset has 11
producers alive of 16 slots, 5 consumers and 8 ribosome cohorts per cell: 25 agents per cell). An
agent-update is one agent advanced one step. Times are wall-clock after compilation; every timing
is the median over ``REPEATS`` (>= 5) calls, with min-max (and quartiles in bench.json): this is a
shared, loaded 2-core machine. ``--quick`` runs small sizes only (a smoke test: ~3.5 CPU-minutes, 6 min wall at load 8);
``--no-readme`` leaves README.md alone (the tables also go to bench/results/readme_table.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))


def bio_cfg(n_cells: int, seed: int = 0) -> dict:
    import yaml

    sub = yaml.safe_load((ROOT / "sim/conf/substrate/bio.yaml").read_text())
    topo = {"kind": "small_world", "n_cells": n_cells, "k": 4, "p": 0.1} if n_cells > 4 else {"kind": "ring", "n_cells": n_cells}
    return {"substrate": sub, "topology": topo, "seed": seed, "dt": 0.02}


def agents_per_cell(model) -> float:
    """Cells + living producers + consumer slots + chain slots (ribosome cohorts), per cell."""
    s = model.state
    n = s.cells.alive.shape[0]
    chains = s.chains.active.size if getattr(s, "chains", None) is not None else 0
    return (n + int(np.sum(s.producers.alive)) + s.consumers.kind.size + chains) / n


REPEATS = 5  # timed calls per measurement (median and spread reported)


def time_jax(model, steps: int, replicates: int = 1, dtype=np.float64, repeats: int = REPEATS) -> dict:
    """Median (and spread) over ``repeats`` whole ``engine.run`` calls after a compiling call."""
    import jax

    from bench.baselines import spread
    from sim.core import engine
    from sim.substrates.bio import SUBSTRATE as BIO

    state = engine.cast(model.state, dtype)
    params = engine.cast(model.params, dtype)
    t0 = time.perf_counter()
    r = engine.run(BIO, state, params, seed=0, steps=steps, record_every=steps, replicates=replicates)
    first = time.perf_counter() - t0
    compile_s = r.compile_s
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = engine.run(BIO, state, params, seed=0, steps=steps, record_every=steps, replicates=replicates)
        jax.block_until_ready(r.state)
        ts.append((time.perf_counter() - t0) / steps)
    sp = spread(ts)
    return {"s_per_step": sp["median"], "s_per_step_spread": sp, "compile_s": compile_s, "first_call_s": first}


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM). Not ru_maxrss: Linux carries that across
    fork+exec, so a worker would report its parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scaling_worker(n_cells: int, dtype: str, steps: int, width: int = 256) -> dict:
    """Run in a fresh process: compile time, throughput, peak RSS for one size, with the CPU vector
    width ``width`` (``sim.core.codegen``: ``auto`` picks 512 only for runs long enough to pay for
    its compile, so the short timed runs here name the width instead of letting auto choose)."""
    import jax

    import sim  # noqa: F401  (x64 on)
    from sim.core import engine
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    rss0 = peak_rss_mb()
    dt = np.float64 if dtype == "float64" else np.float32
    state = engine.cast(model.state, dt)
    params = engine.cast(model.params, dt)
    nbytes = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(state))
    ebytes = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(params.edges))
    from bench.baselines import spread

    r = engine.run(BIO, state, params, seed=0, steps=steps, record_every=steps, replicates=1, vector_width=width)
    ts = []
    for _ in range(REPEATS):  # median of 5 with spread: this shared 2-core VM is noisy
        t0 = time.perf_counter()
        r2 = engine.run(BIO, state, params, seed=0, steps=steps, record_every=steps, replicates=1,
                        vector_width=width)
        jax.block_until_ready(r2.state)
        ts.append((time.perf_counter() - t0) / steps)
    rss = peak_rss_mb()
    agents = int(round(agents_per_cell(model) * n_cells))
    sp = spread(ts)
    return {
        "cells": n_cells, "agents": agents, "edges": int(params.edges.src.shape[0]), "dtype": dtype,
        "vector_width": int(width),
        "compile_s": r.compile_s, "s_per_step": sp["median"], "s_per_step_spread": sp,
        "agent_updates_per_s": agents / sp["median"], "agent_updates_per_s_spread": spread(agents / np.asarray(ts)),
        "state_bytes": nbytes, "edge_bytes": ebytes, "bytes_per_agent": (nbytes + ebytes) / agents,
        "peak_rss_mb": rss, "rss_before_run_mb": rss0,
    }


def section_scaling(agent_targets, dtype: str, width: int = 256) -> list[dict]:
    rows = []
    for target in agent_targets:
        n = max(4, int(round(target / 25)))
        # ~1 s per timed call at 1e8 agent-updates/s (at most 2,000 steps): calls of ~0.2 s, as before,
        # were noisy and carried the per-call work of engine.run (guard, records) in a few percent
        steps = int(min(2000, max(20, round(1e8 / target / 10) * 10)))
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(n), dtype, str(steps), str(width)],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
        )
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        a = row["agent_updates_per_s_spread"]
        print(f"  scaling {row['agents']:>8} agents ({dtype}, {width}-bit): {row['agent_updates_per_s']:.3g} agent-updates/s "
              f"({a['min']:.3g}-{a['max']:.3g}), "
              f"compile {row['compile_s']:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB, {row['bytes_per_agent']:.0f} B/agent")
        rows.append(row)
    return rows


DETERMINISM_MODES = {
    "default": "XLA reductions, FMA allowed",
    "no_fma": "XLA reductions, no FMA",
    "deterministic": "fixed-order sums, no FMA (deterministic_reductions=true)",
}


def determinism_worker(mode: str, n_cells: int, replicates: int, steps: int) -> dict:
    """Run in a fresh process (the no-FMA flag is read when the backend starts): ms/step of one mode."""
    from sim import determinism

    if mode == "deterministic":
        status = determinism.configure(True)
        assert status.bitwise, status.reason
    elif mode == "no_fma":
        ok, why = determinism.request_no_fma()
        assert ok, why
    import sim  # noqa: F401
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    t = time_jax(model, steps, replicates=replicates)
    agents = agents_per_cell(model) * n_cells * replicates
    return {"mode": mode, "cells": n_cells, "replicates": replicates, "s_per_step": t["s_per_step"],
            "s_per_step_spread": t["s_per_step_spread"],
            "compile_s": t["compile_s"], "agent_updates_per_s": agents / t["s_per_step"]}


def section_determinism(shapes, steps: int) -> list[dict]:
    """Cost of bitwise batch invariance (sim.determinism) at (cells, replicates) shapes; every mode
    runs in its own process (the no-FMA flag is read when the backend starts)."""
    rows = []
    for n_cells, replicates in shapes:
        shape_rows = []
        for mode in DETERMINISM_MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--det-worker", mode, str(n_cells), str(replicates), str(steps)],
                capture_output=True, text=True, cwd=ROOT, timeout=600,
                env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
            )
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            shape_rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = next((r["s_per_step"] for r in shape_rows if r["mode"] == "default"), None)
        for r in shape_rows:
            r["relative_time"] = r["s_per_step"] / base if base else float("nan")
            print(f"  {n_cells:>6} cells x {replicates:>3} replicates, {r['mode']:>13}: "
                  f"{1e3 * r['s_per_step']:.2f} ms/step ({r['relative_time']:.2f}x)")
        rows += shape_rows
    return rows


def section_edges(n_cells: int, ks) -> list[dict]:
    """Time per step against the number of junctions at a fixed number of cells (small world, k)."""
    from sim.substrates.bio.build import build

    rows = []
    for k in ks:
        cfg = bio_cfg(n_cells)
        cfg["topology"] = {"kind": "small_world", "n_cells": n_cells, "k": k, "p": 0.1}
        model = build(cfg)
        t = time_jax(model, steps=50)
        rows.append({"cells": n_cells, "k": k, "edges": int(model.params.edges.src.shape[0]), "s_per_step": t["s_per_step"],
                     "s_per_step_spread": t["s_per_step_spread"]})
        print(f"  edges   {rows[-1]['edges']:>7} junctions, {n_cells} cells: {1e3 * t['s_per_step']:.2f} ms/step")
    return rows


def section_compile_vs_steps(n_cells: int, steps_list) -> list[dict]:
    """Compile time of a run against its number of steps (chunked scan: it must not grow)."""
    from sim.core import engine
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    rows = []
    for steps in steps_list:
        engine.clear_caches()
        r = engine.run(BIO, model.state, model.params, seed=0, steps=steps, record_every=10, chunk_records=100)
        rows.append({"steps": steps, "compile_s": r.compile_s, "run_s": r.wall_s})
        print(f"  compile {steps:>7} steps: {r.compile_s:.2f} s (run {r.wall_s:.2f} s)")
    return rows


def section_experiments() -> list[dict]:
    """Compile time and wall time of every shipped experiment, small sizes (target: compile < 10 s)."""
    import sim.api
    from sim.core import engine
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.llm.build import compose

    cases = {
        "tissue": ["experiment=tissue", "steps=200"],
        "tissue (mesa backend)": ["experiment=tissue", "steps=20", "backend=mesa", "replicates=1", "record_every=10"],
        "roofline": ["experiment=roofline"],
        "serving": ["experiment=serving", "steps=1000"],
        "cascade": ["experiment=cascade"],
    }
    rows = []
    # compile, not a cache load: JAX's persistent cache off (compile_cache=null) and the engine's
    # executable store off (a second make bench on unchanged sources would load every program)
    from unittest import mock

    from sim.core import executable_store

    with mock.patch.dict(os.environ, {executable_store.ENV_SWITCH: "off"}):
        for name, over in cases.items():
            engine.clear_caches()
            t0 = time.perf_counter()
            out = sim.api.run(compose(over + ["figures=false", "compile_cache=null"]))
            wall = time.perf_counter() - t0
            rows.append({"experiment": name, "compile_s": out.summary.get("compile_s"), "wall_s": wall,
                         "status": out.summary.get("status")})
            c = rows[-1]["compile_s"]
            print(f"  experiment {name:<22} compile {'n/a' if c is None else f'{c:.2f} s'}, wall {wall:.1f} s")
    return rows


def section_ensembles(n_cells: int, reps_list, repeats: int = REPEATS) -> list[dict]:
    """R replicates of ``n_cells`` cells in one call. The issue-10 measure is the per-agent rate
    against ONE replicate of R x ``n_cells`` cells (the same work if batching cost nothing), timed
    in interleaved blocks in one process with the HLO's bytes and kernels of both
    (``bench/bench_ensemble.py``); ``relative_throughput_per_replicate`` (against one replicate of
    ``n_cells`` cells, an overhead-bound run) is kept as the second column."""
    from bench.bench_ensemble import measure
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    rows = []
    base = None
    for reps in reps_list:
        t = time_jax(model, steps=100 if reps < 64 else 40, replicates=reps, repeats=repeats)
        per_rep = t["s_per_step"] / reps
        base = base or per_rep
        row = {"cells": n_cells, "replicates": reps, "s_per_step": t["s_per_step"],
               "s_per_step_spread": t["s_per_step_spread"],
               "s_per_step_per_replicate": per_rep, "relative_throughput_per_replicate": base / per_rep,
               "compile_s": t["compile_s"]}
        line = (f"  ensemble {reps:>4} x {n_cells} cells: {1e3 * t['s_per_step']:.2f} ms/step, "
                f"per replicate {base / per_rep:.2f} of a single {n_cells}-cell run")
        if reps > 1:  # the per-agent rate against one replicate of reps x n_cells cells
            m = measure((reps, n_cells), steps=20, blocks=repeats)
            row["vs_one_replicate"] = m
            row["per_agent_rate_vs_one_replicate"] = m["ratio_wall"]
            row["per_agent_rate_vs_one_replicate_cpu"] = m["ratio_cpu"]
            w, c = m["ratio_wall"], m["ratio_cpu"]
            line += (f"; per-agent rate vs one {reps * n_cells:,}-cell replicate {w['median']:.2f} "
                     f"({w['min']:.2f}-{w['max']:.2f}), CPU time {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f}); "
                     f"HLO B/agent/step {m['ensemble']['bytes_per_agent_step']:.0f} vs "
                     f"{m['one_replicate']['bytes_per_agent_step']:.0f}")
        rows.append(row)
        print(line)
    return rows


def ensemble_lines(rows) -> list[str]:
    """The README table of :func:`section_ensembles`."""
    from bench import baselines as B

    if not rows:
        return []
    n = rows[0]["cells"]
    lines = [f"R replicates of {n:,} cells in one call against ONE replicate of R x {n:,} cells (the same number of cells): "
             "per-agent rate of the ensemble / per-agent rate of the one replicate, median (min-max) over interleaved "
             "blocks in one process, from wall and from CPU time (`bench/bench_ensemble.py`; the issue-10 target is "
             ">= 0.9). The last column compares with one replicate of "
             f"{n:,} cells, a run bound by per-call overhead, so it flatters batching.", "",
             "| replicates | cells | ms/step, median (min-max) | per-agent rate vs one replicate of R x cells (wall) | (CPU) "
             "| throughput per replicate vs 1 |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        w, c = r.get("per_agent_rate_vs_one_replicate"), r.get("per_agent_rate_vs_one_replicate_cpu")
        ws = "1 (itself)" if w is None else f"{w['median']:.2f} ({w['min']:.2f}-{w['max']:.2f})"
        cs = "" if c is None else f"{c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f})"
        lines.append(f"| {r['replicates']} | {r['cells']} | {B.fmt_ms(r['s_per_step_spread'])} | {ws} | {cs} | "
                     f"{r['relative_throughput_per_replicate']:.2f} |")
    return lines


def section_llm(n_models: int = 64, gpus: int = 8, slots: int = 256, steps: int = 500) -> dict:
    """A serving-sized LLM cluster: ``n_models`` model instances of Llama-3-70B on ``gpus`` H100s
    each (tensor parallel), ``slots`` decode-stream slots each, on a small-world graph with routing."""
    from sim.core import engine
    from sim.substrates.llm import SUBSTRATE as LLM
    from sim.substrates.llm.build import build_llm, compose

    cfg = compose([
        "experiment=serving", "model=llama3_70b", "gpu=h100", "topology=small_world",
        f"topology.n_cells={n_models}", f"substrate.gpus_per_model={gpus}", f"substrate.chain_slots={slots}",
        f"substrate.max_batch={slots}", "substrate.arrivals.rate_per_s=8", "replicates=1",
        f"steps={steps}", f"record_every={steps}",
    ])
    llm = build_llm(cfg)
    kw = dict(seed=0, steps=steps, record_every=steps, replicates=1)
    from bench.baselines import spread

    r = engine.run(LLM, llm.state, llm.params, **kw)
    ts = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        engine.run(LLM, llm.state, llm.params, **kw)
        ts.append(time.perf_counter() - t0)
    sp = spread(np.asarray(ts) / steps)
    best = sp["median"] * steps
    agents = n_models * (1 + gpus + slots)
    row = {"models": n_models, "gpus_per_model": gpus, "chain_slots": slots, "agents": agents,
           "s_per_step": sp["median"], "s_per_step_spread": sp, "agent_updates_per_s": agents * steps / best,
           "compile_s": r.compile_s, "simulated_s_per_wall_s": steps * float(cfg["dt"]) / best}
    print(f"  llm cluster {n_models} x ({gpus} GPUs, {slots} slots): {1e3 * row['s_per_step']:.2f} ms/step, "
          f"{row['agent_updates_per_s']:.3g} agent-updates/s, {row['simulated_s_per_wall_s']:.0f} simulated s per wall s")
    return row


def readme_lines(results: dict) -> list[str]:
    """The tables of the README's Benchmarks block, from ``results``."""
    from bench import baselines as B

    bl = results.get("baselines", [])
    reps = bl[0]["repeats"] if bl else REPEATS
    lines = ["The JAX engine against a plain numpy step of the same equations (`bench/numpy_step.py`, equal to the engine "
             "to ~1e-13 with the engine's random stream: `tests/test_numpy_baseline.py`) and the Mesa reference without and, "
             f"separately, with a DataCollector; median (min-max) over {reps} interleaved blocks in one process (each "
             "block times every implementation once); the speed-up is the median (min-max) of the per-block ratios:", ""]
    lines += B.baseline_table(results.get("baselines", []))
    lines += ["", "| agents | cells | edges | dtype | vector width | agent-updates/s, median (min-max) | compile s | peak RSS MB | state bytes/agent |",
              "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results.get("scaling", []):
        a = r.get("agent_updates_per_s_spread", {"min": float("nan"), "max": float("nan")})
        lines.append(f"| {r['agents']:,} | {r['cells']:,} | {r['edges']:,} | {r['dtype']} | {r.get('vector_width', 256)} "
                     f"| {r['agent_updates_per_s']:.3g} "
                     f"({a['min']:.3g}-{a['max']:.3g}) | {r['compile_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['bytes_per_agent']:.0f} |")
    ed = results.get("edges", [])
    lines += ["", f"| junctions ({ed[0]['cells']:,} cells) | ms/step, median (min-max) |" if ed else "| junctions | ms/step |",
              "|---:|---:|"]
    for r in results.get("edges", []):
        lines.append(f"| {r['edges']:,} | {B.fmt_ms(r['s_per_step_spread'])} |")
    lines += ["", "| steps in the run | compile s |", "|---:|---:|"]
    for r in results.get("compile_vs_steps", []):
        lines.append(f"| {r['steps']:,} | {r['compile_s']:.2f} |")
    lines += ["", "| experiment | compile s | wall s (small run) |", "|---|---:|---:|"]
    for r in results.get("experiments", []):
        c = "n/a" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
        lines.append(f"| {r['experiment']} | {c} | {r['wall_s']:.1f} |")
    ens = ensemble_lines(results.get("ensembles", []))
    if ens:
        lines += [""] + ens
    lines += [""] + B.sharding_lines(results.get("sharding", []))
    det = results.get("determinism", [])
    if det:
        lines += ["", "| reductions | cells x replicates | ms/step, median (min-max) | relative to default |", "|---|---:|---:|---:|"]
        for r in det:
            lines.append(f"| {DETERMINISM_MODES[r['mode']]} | {r['cells']:,} x {r['replicates']} | "
                         f"{B.fmt_ms(r['s_per_step_spread'])} | {r['relative_time']:.2f}x |")
    llm = results.get("llm")
    if llm:
        lines += ["", f"LLM preset, {llm['models']} Llama-3-70B instances x {llm['gpus_per_model']} H100 "
                  f"({llm['chain_slots']} decode slots each, {llm['agents']:,} agents): "
                  f"{1e3 * llm['s_per_step']:.2f} ms/step, {llm['agent_updates_per_s']:.3g} agent-updates/s, "
                  f"{llm['simulated_s_per_wall_s']:.0f} simulated seconds per wall-clock second."]
    hlo = results.get("hlo_bytes", [])
    if hlo:
        lines += ["", "Bytes moved per agent and step, counted from the compiled step (`jax.jit(step).lower(...).compile()`: XLA's "
                  "`cost_analysis()` and a walk of the optimised HLO that adds operand and result bytes of every kernel, "
                  "while-loop bodies times their trip counts):", ""]
        lines += B.hlo_table(hlo)
    bw = results.get("bandwidth", {})
    roof = results.get("roofline", [])
    if bw and roof:
        nb, jb = bw["numpy_copy_bytes_per_s"], bw["jax_scale_bytes_per_s"]
        big = max(roof, key=lambda r: (r["dtype"] == "float64", r["agents"], r.get("vector_width", 256)))
        lines += ["", f"Copy bandwidth on this machine (256 MB, read + write, median (min-max) of {nb['n']}): numpy "
                  f"{nb['median'] / 1e9:.1f} ({nb['min'] / 1e9:.1f}-{nb['max'] / 1e9:.1f}) GB/s, JAX "
                  f"{jb['median'] / 1e9:.1f} ({jb['min'] / 1e9:.1f}-{jb['max'] / 1e9:.1f}) GB/s. At {big['agents']:,} agents "
                  f"({big['dtype']}, {big.get('vector_width', 256)}-bit code) the step moves {big['bytes_per_agent']:.0f} B per agent (XLA cost analysis), "
                  f"{big['bytes_per_s'] / 1e9:.1f} GB/s: {100 * big['fraction']:.0f}% of the numpy copy bandwidth "
                  f"({100 * big['fraction_low']:.0f}-{100 * big['fraction_high']:.0f}% from the extremes of both)."]
        if "transcendental_floor_ns" in big:
            th = results["throughputs"]
            lines[-1] += (f" Per agent-update it takes {big['ns_per_agent_update']:.1f} ns; moving its bytes at the copy "
                          f"bandwidth alone takes {big['copy_floor_ns']:.1f} ns, its exp/log alone "
                          f"{big['transcendental_floor_ns']:.1f} ns (measured {th['transcendentals_per_s']['median']:.3g}/s) "
                          f"and its Threefry hashes alone {big['hash_floor_ns']:.1f} ns (measured "
                          f"{th['threefry_hashes_per_s']['median']:.3g}/s).")
    meta = results["meta"]
    load = ""
    if "loadavg_start" in meta:
        load = (f", 1-minute load average {meta['loadavg_start'][0]:.1f} at the start and "
                f"{meta.get('loadavg_end', [float('nan')])[0]:.1f} at the end")
    lines += ["", f"_Measured {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs{load}), Python {meta['python']}, "
              f"jax {meta['jax']}, mesa {meta['mesa']}, code {meta.get('revision', 'unknown')}; `make bench` regenerates this table._"]
    return lines


def write_readme_table(results: dict, readme_too: bool = True, name: str = "readme_table.md") -> None:
    """Write the tables to bench/results/``name`` and (``readme_too``) replace the block between
    the bench markers in README.md with them."""
    lines = readme_lines(results)
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    readme = ROOT / "README.md"
    if not readme_too or not readme.is_file():
        return
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail)


def plot(results: dict, path: Path | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    bl = results.get("baselines", [])
    if bl:
        labels = {"jax": "JAX engine", "numpy_threefry": "numpy (engine's stream)", "numpy_pcg64": "numpy (PCG64)",
                  "mesa_no_dc": "Mesa, no DataCollector", "mesa_dc": "Mesa, DataCollector"}
        a = [r["agents"] for r in bl]
        for k, lab in labels.items():
            med = np.array([r[k + "_s_per_step"]["median"] for r in bl])
            lo = med - np.array([r[k + "_s_per_step"]["min"] for r in bl])
            hi = np.array([r[k + "_s_per_step"]["max"] for r in bl]) - med
            axes[0].errorbar(a, med, yerr=[lo, hi], fmt="o-", capsize=3, label=lab)
        axes[0].set(xscale="log", yscale="log", xlabel="agents", ylabel="s per step (median, min-max)",
                    title="baselines (bio tissue)")
        axes[0].legend(fontsize=7)
    sc = results.get("scaling", [])
    for dtype, width in sorted({(r["dtype"], r.get("vector_width", 256)) for r in sc}):
        rr = [r for r in sc if r["dtype"] == dtype and r.get("vector_width", 256) == width]
        axes[1].loglog([r["agents"] for r in rr], [r["s_per_step"] for r in rr], "o-",
                       label=f"time/step {dtype}, {width}-bit")
    if sc:
        a = np.array([r["agents"] for r in sc], float)
        axes[1].loglog(a, sc[0]["s_per_step"] * a / a[0], "k--", lw=0.8, label="linear")
        axes[1].set(xlabel="agents", ylabel="s per step", title="scaling (linear = dashed)")
        axes[1].legend(fontsize=8)
    en = results.get("ensembles", [])
    if en:
        rr = [r for r in en if "per_agent_rate_vs_one_replicate" in r]
        med = np.array([r["per_agent_rate_vs_one_replicate"]["median"] for r in rr])
        lo = med - np.array([r["per_agent_rate_vs_one_replicate"]["min"] for r in rr])
        hi = np.array([r["per_agent_rate_vs_one_replicate"]["max"] for r in rr]) - med
        axes[2].errorbar([r["replicates"] for r in rr], med, yerr=[lo, hi], fmt="o-", capsize=3,
                         label=f"vs one replicate of R x {en[0]['cells']} cells")
        axes[2].axhline(0.9, color="r", ls=":", label="target 0.9")
        axes[2].set(xscale="log", xlabel="replicates in one call", ylabel="per-agent rate / one replicate's",
                    title="ensembles", ylim=(0, None))
        axes[2].legend(fontsize=8)
    ed = results.get("edges", [])
    if ed:
        e = np.array([r["edges"] for r in ed], float)
        axes[3].plot(e, [1e3 * r["s_per_step"] for r in ed], "o-", label="measured")
        axes[3].set(xlabel="junctions (edges)", ylabel="ms per step", title=f"time vs edges ({ed[0]['cells']} cells)")
        axes[3].set_xlim(left=0)
        axes[3].set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path or RESULTS / "bench.png", dpi=110)


def git_revision() -> str:
    """The checkout's commit (``-dirty`` with local changes), or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


SECTIONS = ("baselines", "hlo_bytes", "bandwidth", "throughputs", "scaling", "edges", "compile_vs_steps", "experiments",
            "ensembles", "sharding", "determinism", "llm")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--det-worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README.md (tables still go to bench/results/readme_table.md)")
    ap.add_argument("--only", help="comma-separated sections to run (" + ", ".join(SECTIONS) + "); results go to "
                    "bench/results/bench_partial.json, README.md is left alone")
    ap.add_argument("--shard-worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.shard_worker:
        from bench.baselines import sharding_worker

        n, reps, steps, repeats = (int(v) for v in args.shard_worker)
        print(json.dumps(sharding_worker(n, reps, steps, repeats)))
        return 0
    if args.worker:
        print(json.dumps(scaling_worker(int(args.worker[0]), args.worker[1], int(args.worker[2]),
                                        int(args.worker[3]) if len(args.worker) > 3 else 256)))
        return 0
    if args.det_worker:
        mode, n, reps, steps = args.det_worker
        print(json.dumps(determinism_worker(mode, int(n), int(reps), int(steps))))
        return 0
    import jax

    import sim  # noqa: F401

    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        import mesa

        mesa_version = mesa.__version__
    except ImportError:
        mesa_version = "n/a"
    results = {"meta": {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.machine() + " " + platform.processor(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
        "mesa": mesa_version, "devices": [str(d) for d in jax.devices()], "revision": git_revision(),
    }}
    from bench import baselines as B

    q = args.quick
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        ap.error(f"--only: unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    results["meta"]["loadavg_start"] = os.getloadavg()
    t0 = time.perf_counter()

    def section(name, title, fn):
        if name in only:
            print(title)
            load = os.getloadavg()[0]
            results[name] = fn()
            results.setdefault("loadavg_1min", {})[name] = [load, os.getloadavg()[0]]

    section("baselines", "Baselines (JAX engine, numpy, Mesa without / with a DataCollector):",
            lambda: B.section_baselines([100, 1000] if q else [1000, 10000], repeats=REPEATS))
    section("hlo_bytes", "Bytes per agent and step from the compiled HLO:",
            lambda: B.section_hlo_bytes([1000] if q else [1000, 10000]))
    section("bandwidth", "Copy bandwidth:", B.section_bandwidth)
    section("throughputs", "Transcendental and Threefry throughput:", B.section_throughputs)
    # 512-bit code (sim.core.codegen) at the sizes where auto picks it for runs of ~10,000 steps and more
    section("scaling", "JAX scaling:", lambda: section_scaling([1e3, 1e4] if q else [1e3, 1e4, 1e5, 3e5, 1e6], "float64")
            + section_scaling([1e4] if q else [1e5, 3e5, 1e6], "float64", 512)
            + ([] if q else section_scaling([1e5, 1e6], "float32")))
    if all(k in results for k in ("hlo_bytes", "bandwidth", "scaling")):
        results["roofline"] = B.roofline(results["hlo_bytes"], results["bandwidth"], results["scaling"], results.get("throughputs"))
        for r in results["roofline"]:
            print(f"  roofline {r['agents']:>8} agents ({r['dtype']}, {r.get('vector_width', 256)}-bit): {r['bytes_per_s'] / 1e9:.1f} GB/s moved, "
                  f"{100 * r['fraction']:.0f}% of the copy bandwidth ({100 * r['fraction_low']:.0f}-{100 * r['fraction_high']:.0f}%); "
                  f"{r['ns_per_agent_update']:.1f} ns per agent-update against floors of {r['copy_floor_ns']:.1f} (bytes), "
                  f"{r.get('transcendental_floor_ns', float('nan')):.1f} (exp/log), {r.get('hash_floor_ns', float('nan')):.1f} (Threefry) ns")
    section("edges", "Edges:", lambda: section_edges(2000 if q else 10000, [2, 4, 8] if q else [2, 4, 8, 16, 32]))
    section("compile_vs_steps", "Compile time vs steps:",
            lambda: section_compile_vs_steps(100, [1000, 10000] if q else [1000, 10000, 100000]))
    section("experiments", "Experiments:", section_experiments)
    section("ensembles", "Ensembles:", lambda: section_ensembles(20 if q else 100, [1, 4] if q else [1, 4, 16, 64, 256]))
    section("sharding", "Replicates sharded over two forced host devices:",
            lambda: B.section_sharding([(100, 16)] if q else [(100, 64), (1000, 16)], steps=50 if q else 100, repeats=REPEATS))
    section("determinism", "Determinism (bitwise batch invariance) cost:",
            lambda: section_determinism([(100, 16)] if q else [(100, 256), (10000, 1)], 100))
    section("llm", "LLM cluster:", lambda: section_llm(steps=200 if q else 1000))
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - t0
    partial = only != set(SECTIONS)
    out = RESULTS / ("bench_partial.json" if partial else "bench_quick.json" if args.quick else "bench.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    written = [out]
    if not partial:  # a partial run leaves the figure and the tables of the last full run alone
        suffix = "_quick" if args.quick else ""  # a smoke test leaves the full run's figure and tables alone
        plot(results, RESULTS / f"bench{suffix}.png")
        write_readme_table(results, readme_too=not (args.quick or args.no_readme), name=f"readme_table{suffix}.md")
        written += [RESULTS / f"bench{suffix}.png", RESULTS / f"readme_table{suffix}.md"]
    if "baselines" in results:
        print()
        print("\n".join(B.baseline_table(results["baselines"])))
    print(f"wrote {', '.join(map(str, written))} in {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
