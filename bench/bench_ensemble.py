"""Ensembles against one large replicate, per agent (issue 10: "ensembles at >= 0.9 of the per-agent
rate of one large replicate").

For each shape R x C: the engine's compiled chunk (``jit(vmap(scan))``, built as
``sim.core.engine.chunk_executable`` builds it, with ``sim.core.ops.COMPILE_OPTIONS``) of R
replicates of a C-cell biology tissue (``bench.run_bench.bio_cfg``: small world, k = 4) against the
chunk of ONE replicate of an R*C-cell tissue: the same number of cells, so the same work if
batching replicates costs nothing. (Comparing R replicates against one replicate of C cells, as the
old bench table did, measures how overhead-bound a C-cell run is, not what batching costs.)

* time: the two chunks timed in interleaved blocks in one process (``bench.baselines.
  interleaved_times``: order alternating per block, wall and CPU seconds of this process per step);
  the ratio is (agents_ens / t_ens) / (agents_big / t_big) per block, reported as median (min-max);
  agents as ``bench.run_bench.agents_per_cell`` counts them (living producers differ a little
  between the two tissues, so rates, not times, are compared);
* work: bytes per agent and step and kernels per step of both compiled chunks, counted from the
  optimised HLO (``bench.baselines.kernel_bytes``: operand + result bytes of every kernel, while
  bodies times their trip counts), so a cause shows up without timing noise.

    python bench/bench_ensemble.py                        # 256x100 64x400 16x1000 4x10000
    python bench/bench_ensemble.py 256x100 --blocks 9 --steps 20
    python bench/bench_ensemble.py --work-only 256x100    # HLO counts only (no timing)
    python bench/bench_ensemble.py --by-process 256x100   # each process alone (+ the step counter),
        # ensemble against one replicate: which process loses under vmap
    python bench/bench_ensemble.py --old-files SNAP 256x100
        # A/B of the ensemble chunk: the working tree with SNAP's files laid over it (old) against
        # the working tree (new): bit-identity of every final state leaf and records, then timing
    python bench/bench_ensemble.py --new-files PATCH [--old-files SNAP] 256x100
        # the same with PATCH's files laid over the working tree as the new side (a change tried
        # without editing the tree); without --old-files: the ratio measured with PATCH laid over
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SHAPES = ((256, 100), (64, 400), (16, 1000), (4, 10000))


def build_chunk(n_cells: int, replicates: int, steps: int, dtype: str = "float64"):
    """(compiled chunk of ``steps`` steps, its arguments, agents in the batch) of ``replicates``
    replicates of an ``n_cells`` tissue, compiled as the engine compiles a run's chunk."""
    from bench.baselines import engine_chunk
    from bench.run_bench import agents_per_cell, bio_cfg
    from sim.core import engine, ops
    from sim.rng import replicate_keys
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    dt = np.float64 if dtype == "float64" else np.float32
    state = engine.broadcast_state(engine.cast(model.state, dt), replicates)
    params = engine.cast(model.params, dt)
    keys = replicate_keys(0, replicates)
    lowered = engine_chunk(engine, BIO, 1, steps).lower(state, params, keys)
    compiled = ops.compile_lowered(lowered)
    agents = agents_per_cell(model) * n_cells * replicates
    return compiled, (state, params, keys), agents


def hlo_work(compiled, steps: int, agents: float) -> dict:
    from bench.baselines import kernel_bytes, parse_hlo

    moved, kernels = kernel_bytes(parse_hlo(compiled.as_text()))
    return {"bytes_per_agent_step": moved / steps / agents, "kernels_per_step": kernels / steps}


def measure(shape, steps: int, blocks: int, work_only: bool = False) -> dict:
    import jax

    from bench.baselines import interleaved_times, spread

    reps, cells = shape
    chunks, row = {}, {"replicates": reps, "cells": cells, "steps_per_block": steps, "blocks": blocks}
    for label, (n, r) in (("ensemble", (cells, reps)), ("one_replicate", (reps * cells, 1))):
        compiled, args, agents = build_chunk(n, r, steps)
        jax.block_until_ready(compiled(*args))  # warm
        chunks[label] = (compiled, args)
        row[label] = {"cells": n, "replicates": r, "agents": agents, **hlo_work(compiled, steps, agents)}
    if not work_only:
        t, cpu, load = interleaved_times(chunks, blocks, steps)
        a_e, a_1 = row["ensemble"]["agents"], row["one_replicate"]["agents"]
        for label in chunks:
            row[label]["s_per_step"] = spread(t[label])
            row[label]["cpu_s_per_step"] = spread(cpu[label])
            row[label]["agent_updates_per_s"] = spread(row[label]["agents"] / np.asarray(t[label]))
        # per block: (agents_e / t_e) / (agents_1 / t_1)
        row["ratio_wall"] = spread((a_e / np.asarray(t["ensemble"])) / (a_1 / np.asarray(t["one_replicate"])))
        row["ratio_cpu"] = spread((a_e / np.asarray(cpu["ensemble"])) / (a_1 / np.asarray(cpu["one_replicate"])))
        row["load_average"] = list(load)
    return row


def print_row(r: dict) -> None:
    e, o = r["ensemble"], r["one_replicate"]
    head = f"  {r['replicates']:>4} x {r['cells']:>6} cells vs 1 x {o['cells']:>7}:"
    work = (f" HLO B/agent/step {e['bytes_per_agent_step']:.0f} vs {o['bytes_per_agent_step']:.0f}, "
            f"kernels/step {e['kernels_per_step']:.0f} vs {o['kernels_per_step']:.0f}")
    if "ratio_wall" not in r:
        print(head + work)
        return
    w, c = r["ratio_wall"], r["ratio_cpu"]
    print(head + f" {1e3 * e['s_per_step']['median']:.2f} vs {1e3 * o['s_per_step']['median']:.2f} ms/step "
          f"({e['agents']:,.0f} vs {o['agents']:,.0f} agents); per-agent rate ratio wall {w['median']:.3f} "
          f"({w['min']:.3f}-{w['max']:.3f}), CPU {c['median']:.3f} ({c['min']:.3f}-{c['max']:.3f});" + work
          + f"; load {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f}")


def by_process(shape, steps: int, blocks: int) -> list[dict]:
    """Each process of the biology step alone, then all of them, with the step counter advanced (so
    draws are not loop-invariant and hoisted out), ``steps`` steps in a ``fori_loop`` under the
    engine's ``vmap``: R replicates of C cells against one replicate of R*C cells, CPU time of
    interleaved blocks. Which process costs more per agent when batched."""
    import dataclasses

    import jax

    from bench.baselines import interleaved_times, spread
    from bench.run_bench import bio_cfg
    from sim.core import engine, ops
    from sim.rng import replicate_keys
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    reps, cells = shape
    args = {}
    for label, (n, r) in (("ensemble", (cells, reps)), ("one_replicate", (reps * cells, 1))):
        m = build(bio_cfg(n))
        args[label] = (engine.broadcast_state(m.state, r), m.params, replicate_keys(0, r))
    groups = [(name, (fn,)) for name, fn in BIO.processes] + [("all", tuple(fn for _, fn in BIO.processes))]
    rows = []
    for name, fns in groups:
        def loop(s, p, k, fns=fns):
            def one_step(_, s):
                for fn in fns:
                    s = fn(s, p, k)
                return dataclasses.replace(s, step=s.step + 1)
            return jax.lax.fori_loop(0, steps, one_step, s)

        chunks = {}
        for label, a in args.items():
            compiled = ops.compile_lowered(jax.jit(jax.vmap(loop, in_axes=(0, None, 0))).lower(*a))
            jax.block_until_ready(compiled(*a))
            chunks[label] = (compiled, a)
        _, cpu, load = interleaved_times(chunks, blocks, steps)
        ratio = spread(np.asarray(cpu["ensemble"]) / np.asarray(cpu["one_replicate"]))
        rows.append({"process": name, "ensemble_cpu_s_per_step": spread(cpu["ensemble"]),
                     "one_replicate_cpu_s_per_step": spread(cpu["one_replicate"]), "cpu_time_ratio": ratio,
                     "load_average": list(load)})
        print(f"  {reps} x {cells} vs 1 x {reps * cells}, {name:<20} CPU ms/step {1e3 * np.median(cpu['ensemble']):7.3f} vs "
              f"{1e3 * np.median(cpu['one_replicate']):7.3f}: ensemble/one {ratio['median']:.2f} "
              f"({ratio['min']:.2f}-{ratio['max']:.2f}); load {load[0]:.1f} -> {load[1]:.1f}", flush=True)
    return rows


def tree_with(files: str | None) -> str:
    """The working tree (None) or a temporary copy of its ``sim`` and ``bench`` with ``files`` laid over it."""
    from bench.baselines import overlaid_tree
    from bench.bench_step_work import _TREES

    tree = str(ROOT) if files is None else overlaid_tree(files, prefix="ens_tree_")
    _TREES.update({tree, str(ROOT)})
    if files is not None:
        _MADE.append(tree)
    return tree


_MADE: list = []  # temporary trees made by tree_with, removed when main() ends


def ab(old_files: str, shape, steps: int, blocks: int, new_files: str | None = None) -> dict:
    """The ensemble chunk of the working tree with ``old_files`` laid over it (old) against the
    working tree, or with ``new_files`` laid over it (new): whether every final-state leaf and
    record is the same bit for bit, then interleaved timing."""
    import jax

    from bench.bench_step_work import _import_tree

    reps, cells = shape
    chunks, outs = {}, {}
    for label, tree in (("old", tree_with(old_files)), ("new", tree_with(new_files))):
        _import_tree(tree)
        compiled, args, agents = build_chunk(cells, reps, steps)
        out = compiled(*args)
        outs[label] = jax.device_get(out)
        chunks[label] = (compiled, args)
        work = hlo_work(compiled, steps, agents)
        print(f"  {label}: HLO {work['bytes_per_agent_step']:.0f} B/agent/step, {work['kernels_per_step']:.0f} kernels/step")
    differ = []
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(outs["old"]), jax.tree_util.tree_leaves(outs["new"])):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.tobytes() != y.tobytes():
            differ.append(jax.tree_util.keystr(path))
    n = len(jax.tree_util.tree_leaves(outs["old"]))
    from bench.baselines import interleaved_times, spread

    t, cpu, load = interleaved_times(chunks, blocks, steps)
    row = {"replicates": reps, "cells": cells, "leaves": n, "leaves_differing": differ,
           "speedup_wall": spread(np.asarray(t["old"]) / np.asarray(t["new"])),
           "speedup_cpu": spread(np.asarray(cpu["old"]) / np.asarray(cpu["new"])), "load_average": list(load)}
    s, c = row["speedup_wall"], row["speedup_cpu"]
    print(f"  {reps} x {cells}: {n} leaves (state and records) compared bit for bit, {len(differ)} differ {differ[:5]}; "
          f"old/new wall {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}), CPU {c['median']:.3f} "
          f"({c['min']:.3f}-{c['max']:.3f}); load {load[0]:.1f} -> {load[1]:.1f}")
    return row


def parse_shape(text: str):
    r, c = text.lower().split("x")
    return int(r), int(c)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shapes", nargs="*", type=parse_shape, default=list(SHAPES), help="RxC, e.g. 256x100")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=7)
    ap.add_argument("--work-only", action="store_true", help="HLO counts only, no timing")
    ap.add_argument("--by-process", action="store_true", help="time each process alone, ensemble against one")
    ap.add_argument("--old-files", default=None, help="A/B: a snapshot folder laid over the working tree (old)")
    ap.add_argument("--new-files", default=None, help="a folder of files laid over the working tree as the new side")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.new_files and not args.old_files:  # measure the working tree with these files laid over it
        from bench.bench_step_work import _import_tree

        _import_tree(tree_with(args.new_files))
    import sim  # noqa: F401  (x64 on)

    print(f"load average at start {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    rows = []
    for shape in args.shapes:
        if args.by_process:
            rows += by_process(shape, min(args.steps, 10), args.blocks)
        elif args.old_files:
            rows.append(ab(args.old_files, shape, args.steps, args.blocks, args.new_files))
        else:
            rows.append(measure(shape, args.steps, args.blocks, args.work_only))
            print_row(rows[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    import shutil

    for tree in _MADE:
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
