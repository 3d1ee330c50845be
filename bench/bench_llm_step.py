"""How much work one LLM-engine step does, counted from the compiled program, and an interleaved A/B
of its speed against a snapshot of older files (issue 10, item 5).

At the LLM size of ``make bench`` (``bench.run_bench.section_llm``: 64 Llama-3-70B instances x 8
H100s x 256 chain slots, 512 queue slots, small-world routing; 16,960 agents):

* ``work``: kernels per step and bytes per agent of ``jit(LLM.step)`` and of the engine's own chunk
  (``jit(vmap(scan))`` of ``CHUNK_STEPS`` steps, where the state is a loop carry), counted with
  ``bench.baselines.kernel_bytes`` (operand + result bytes of every kernel, while bodies times their
  trip counts), plus the step's top-level kernels by kind (sorts, scatters, while loops, fusions...)
  so the biggest remaining costs can be read off.
* ``ab``: old and new compiled chunks alternate in one process under the same load (the
  ``bench/bench_step_work.py`` scheme): A is the working tree with the files of a snapshot folder
  laid over it (e.g. a copy of ``sim/substrates/llm`` taken before a change), B the working tree;
  CPU time (all threads of this process) and wall time per step, median and spread of the per-block
  ratios, the load average, and whether the two final states are bit-identical.
* ``compile``: the compile time of the LLM experiments (``serving`` with 1,000 steps, ``roofline``;
  ``--experiments`` adds the biology ``tissue`` and ``bio1000``, the scaling table's 1,000-cell
  program; the engine's chunk as ``sim.api.run`` builds it, compile cache off): trace + lowering and XLA
  compile timed apart (wall and the process's CPU time) from fresh functions, ``--repeats`` times,
  with the optimised module's HLO instructions, fusions, while loops and conditionals and the
  StableHLO's lines; with ``--old-files`` / ``--old-tree`` both sides alternate in one process and
  the paired new/old ratios are printed (compile time shared with other jobs is noisy: the CPU
  ratio is the steadier one).

    python bench/bench_llm_step.py work
    python bench/bench_llm_step.py compile --old-files /tmp/llm_before --repeats 3
    python bench/bench_llm_step.py ab --old-files /tmp/llm_before --blocks 9 --steps 50
    python bench/bench_llm_step.py ab --old-tree /tmp/llm_old --blocks 15 --steps 100   # a whole older tree
    python bench/bench_llm_step.py --set substrate.arrivals.rate_per_s=2000 ab --old-files ...  # saturated

``--old-tree`` takes a whole older checkout as it is (``git worktree add /tmp/llm_old bd81509``: the
code when issue 10 was filed, compiled the way it compiled then) instead of files laid over the
working tree. The two versions may hold different fields (task kinds, the queue layout): the fields
both have are compared (the queues as their active entries in ticket order, since where a request
sits in the ring is layout), the largest relative difference of each differing leaf is printed, and
so are the ledger totals of both runs, which show whether they simulated the same cluster (the same
requests, tokens and counts) where the bits are not identical.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK_STEPS = 20


EXTRA: list = []  # more overrides (``--set``), e.g. a saturated cluster


def llm_cfg(n_models: int = 64, gpus: int = 8, slots: int = 256, steps: int = 100):
    """The config of ``bench.run_bench.section_llm`` (same overrides), then :data:`EXTRA`."""
    from sim.substrates.llm.build import compose

    return compose([
        "experiment=serving", "model=llama3_70b", "gpu=h100", "topology=small_world",
        f"topology.n_cells={n_models}", f"substrate.gpus_per_model={gpus}", f"substrate.chain_slots={slots}",
        f"substrate.max_batch={slots}", "substrate.arrivals.rate_per_s=8", "replicates=1",
        f"steps={steps}", f"record_every={steps}",
    ] + list(EXTRA))


def _kinds_of_kernels(text: str) -> collections.Counter:
    """Top-level kernels of the entry computation by kind: 'fusion:<kind>' or the opcode; while loops
    count their bodies' kernels times the trip count under 'while-body'."""
    from bench.baselines import _split_instr, walk_hlo

    free = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}

    def record(m, cur):
        rtype, op, _, attrs = _split_instr(m.group(2))
        return op, attrs

    mod = walk_hlo(text, record)
    comps = mod["computations"]

    def walk(name, mult, out):
        for op, attrs in comps[name]:
            if op in free:
                continue
            if op == "while":
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attrs)
                k = int(trip.group(1)) if trip else 1
                body = re.search(r"body=%?([\w.\-]+)", attrs).group(1)
                walk(body, mult * k, out)
                out["while"] += mult
                continue
            if op == "fusion":
                kind = re.search(r"kind=(\w+)", attrs)
                out["fusion:" + (kind.group(1) if kind else "?")] += mult
            else:
                out[op] += mult
        return out

    return walk(mod["entry"], 1, collections.Counter())


def _build(n_models: int):
    from sim.core import engine
    from sim.substrates.llm.build import build_llm

    llm = build_llm(llm_cfg(n_models))
    return llm, engine.cast(llm.state, np.float64), engine.cast(llm.params, np.float64)


def work(n_models: int = 64) -> dict:
    """Load-independent counts of one compiled LLM step (see the module doc)."""
    import jax

    from bench.baselines import engine_chunk, kernel_bytes, parse_hlo
    from sim.core import engine, ops
    from sim.rng import replicate_keys
    from sim.substrates.llm import SUBSTRATE as LLM

    llm, state, params = _build(n_models)
    n, g = np.asarray(llm.state.gpus.alive).shape
    s = np.asarray(llm.state.chains.active).shape[1]
    q = np.asarray(llm.state.queue.active).shape[1]
    agents = n * (1 + g + s)
    key = replicate_keys(0, 1)[0]
    compiled = ops.compile_lowered(jax.jit(LLM.step).lower(state, params, key))
    text = compiled.as_text()
    moved, kernels = kernel_bytes(parse_hlo(text))
    kinds = _kinds_of_kernels(text)
    chunk = ops.compile_lowered(engine_chunk(engine, LLM, 1, CHUNK_STEPS).lower(
        engine.broadcast_state(state, 1), params, replicate_keys(0, 1)))
    chunk_moved, chunk_kernels = kernel_bytes(parse_hlo(chunk.as_text()))
    return {"models": n, "gpus": g, "chain_slots": s, "queue_slots": q, "agents": agents,
            "kernels_per_step": kernels, "hlo_kernel_bytes_per_agent": moved / agents,
            "engine_chunk_kernels_per_step": chunk_kernels / CHUNK_STEPS,
            "engine_chunk_bytes_per_agent_step": chunk_moved / CHUNK_STEPS / agents,
            "kernels_by_kind": dict(kinds.most_common())}


def print_work(r: dict) -> None:
    print(f"  LLM step, {r['models']} x ({r['gpus']} GPUs, {r['chain_slots']} chain slots, {r['queue_slots']} "
          f"queue slots), {r['agents']:,} agents: {r['kernels_per_step']} kernels, "
          f"{r['hlo_kernel_bytes_per_agent']:.0f} B/agent (jit(step)); the engine's chunk: "
          f"{r['engine_chunk_kernels_per_step']:.0f} kernels/step, {r['engine_chunk_bytes_per_agent_step']:.0f} "
          f"B/agent/step")
    print("  kernels by kind: " + ", ".join(f"{k} {v}" for k, v in r["kernels_by_kind"].items()))


# ----------------------------------------------------------------------------- interleaved A/B
_TREES: set = set()


def _import_tree(path: str):
    """Drop every ``sim``/``bench`` module and put ``path`` first on sys.path."""
    for name in [m for m in sys.modules if m in ("sim", "bench") or m.startswith(("sim.", "bench."))]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p not in _TREES]
    sys.path.insert(0, path)


def _chunk(n_models: int, steps: int):
    import jax

    from sim.core import engine
    from sim.rng import replicate_keys
    from sim.substrates.llm import SUBSTRATE as LLM

    _, state, params = _build(n_models)
    state = engine.broadcast_state(state, 1)
    keys = replicate_keys(0, 1)
    compiled = engine.chunk_executable(LLM, 1, steps, None, False, state, params, keys)
    if isinstance(compiled, tuple):  # (executable, info) since the executable store; the bare one before
        compiled = compiled[0]
    out = compiled(state, params, keys)
    jax.block_until_ready(out)
    return compiled, (state, params, keys), jax.device_get(out)


def _leaves(tree) -> dict:
    import jax

    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _queue_in_ticket_order(leaves: dict) -> dict:
    """The queue's fields (``[0].queue.*``) replaced by the active entries in ticket order per cell
    (where a request sits in the queue is layout, not model: ring buffers since issue 10)."""
    act, seq = leaves.get("[0].queue.active"), leaves.get("[0].queue.seq")
    if act is None or seq is None:
        return leaves
    out = {k: v for k, v in leaves.items() if not k.startswith("[0].queue.")}
    for k, v in leaves.items():
        if k.startswith("[0].queue.") and k != "[0].queue.active":
            out[k] = [v[r, c][np.argsort(np.where(act[r, c], seq[r, c], np.iinfo(np.int64).max), kind="stable")]
                      [: int(act[r, c].sum())] for r in range(act.shape[0]) for c in range(act.shape[1])]
    out["[0].queue.active"] = act.sum(axis=-1)
    return out


def compare_outputs(a, b) -> tuple[list, list, dict]:
    """(paths that differ, paths only one side has, largest relative difference per differing path)
    of two chunk outputs (final state, records); with trees of different versions only the fields
    both have are compared, the queues in ticket order."""
    la, lb = _leaves(a), _leaves(b)
    if la.keys() != lb.keys():
        la, lb = _queue_in_ticket_order(la), _queue_in_ticket_order(lb)

    def same(x, y):
        if isinstance(x, list):
            return len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y))
        return np.shape(x) == np.shape(y) and np.array_equal(x, y)
    differs = [k for k in la if k in lb and not same(la[k], lb[k])]
    return differs, sorted(la.keys() ^ lb.keys()), {k: _rel_diff(la[k], lb[k]) for k in differs}


def _rel_diff(x, y) -> float:
    """Largest |x - y| over the largest |y| of a leaf (nan where the shapes differ)."""
    if isinstance(x, list) or np.shape(x) != np.shape(y):
        return float("nan")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = np.max(np.abs(y)) if y.size else 0.0
    return float(np.max(np.abs(x - y)) / scale) if scale > 0 else float(np.max(np.abs(x - y), initial=0.0))


def totals(out) -> dict:
    """Ledger lines summed over cells and replicates, and requests in system at the end, of a chunk
    output: what the run simulated, comparable across versions whose random streams differ."""
    led = out[0].ledger
    row = {name: float(np.sum(np.asarray(getattr(led, name), np.float64))) for name in led.__dataclass_fields__}
    row["queued_at_end"] = int(np.sum(np.asarray(out[0].queue.active)))
    row["active_chains_at_end"] = int(np.sum(np.asarray(out[0].chains.active)))
    return row


def ab(old_files: str | None, n_models: int = 64, steps: int = 50, blocks: int = 9,
       old_tree: str | None = None) -> dict:
    """Interleaved A/B: A = working tree with ``old_files``' files laid over it (or, with
    ``old_tree``, that whole tree as it is, e.g. a ``git worktree`` of an older commit), B = working
    tree."""
    from bench.baselines import overlaid_tree

    tmp = None
    if old_tree is not None:
        old = str(Path(old_tree).resolve())
    else:
        old = tmp = overlaid_tree(old_files, prefix="ab_llm_old_")
    _TREES.update({old, str(ROOT)})
    chunks = {}
    for label, tree in (("old", old), ("new", str(ROOT))):
        _import_tree(tree)
        chunks[label] = _chunk(n_models, steps)
    differs, one_side, rel = compare_outputs(chunks["old"][2], chunks["new"][2])
    from bench.baselines import interleaved_times, spread

    t, cpu, (load0, load1) = interleaved_times(chunks, blocks, steps)

    row = {"models": n_models, "steps_per_block": steps, "blocks": blocks,
           "old_s_per_step": spread(t["old"]), "new_s_per_step": spread(t["new"]),
           "old_cpu_s_per_step": spread(cpu["old"]), "new_cpu_s_per_step": spread(cpu["new"]),
           "wall_old_over_new": spread(np.asarray(t["old"]) / np.asarray(t["new"])),
           "cpu_old_over_new": spread(np.asarray(cpu["old"]) / np.asarray(cpu["new"])),
           "differing_leaves_of_final_state_and_records": differs, "leaves_on_one_side_only": one_side,
           "max_relative_difference": rel,
           "load_average": [load0, load1]}
    if old_tree is not None:
        row["old_totals"], row["new_totals"] = totals(chunks["old"][2]), totals(chunks["new"][2])
    w, c = row["wall_old_over_new"], row["cpu_old_over_new"]
    verdict = "bit-identical" if not differs else "differ in " + ", ".join(
        f"{k} (max rel {v:.1e})" for k, v in rel.items())
    print(f"  {n_models} models: old {1e3 * row['old_s_per_step']['median']:.2f} ms/step (CPU "
          f"{1e3 * row['old_cpu_s_per_step']['median']:.2f}), new {1e3 * row['new_s_per_step']['median']:.2f} ms/step "
          f"(CPU {1e3 * row['new_cpu_s_per_step']['median']:.2f}); old/new wall {w['median']:.3f} "
          f"(min {w['min']:.3f}, max {w['max']:.3f}), CPU {c['median']:.3f} (min {c['min']:.3f}, max {c['max']:.3f}, "
          f"IQR {c['q1']:.3f}-{c['q3']:.3f}) over {blocks} blocks; final states {verdict}; load average "
          f"{load0:.1f} -> {load1:.1f}")
    if old_tree is not None:
        ta, tb = row["old_totals"], row["new_totals"]
        print("  totals old / new (over cells): " + ", ".join(
            f"{k} {ta[k]:.6g}/{tb[k]:.6g}" for k in ta if k in tb))
        if one_side:
            print(f"  on one side only (not compared): {', '.join(one_side)}")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return row


# ----------------------------------------------------------------------------- compile time A/B
# the LLM experiments, and the biology tissue beside them (the engine's chunk is shared code)
EXPERIMENTS = {"serving": ["experiment=serving", "steps=1000"], "roofline": ["experiment=roofline"],
               "tissue": ["experiment=tissue"],
               # the program of the scaling table's 1,000-cell row (run_bench.bio_cfg): the biology
               # preset on a small-world graph, one replicate
               "bio1000": ["experiment=tissue", "substrate=bio", "topology=small_world", "topology.n_cells=1000",
                           "replicates=1", "steps=100", "record_every=50", "dt=0.02"]}


def _captured_chunk(overrides):
    """The arguments of the engine's chunk compile in ``sim.api.run`` of an experiment (compile cache
    off), captured by wrapping ``engine.chunk_executable`` during one run."""
    import sim.api
    from sim.core import engine
    from sim.substrates.llm.build import compose

    seen = []
    orig = engine.chunk_executable

    def spy(*args, **kw):
        seen.append((args, kw, engine))  # the engine of the substrate's own import (see _time_compile)
        return orig(*args, **kw)

    engine.chunk_executable = spy
    try:
        engine.clear_caches()
        sim.api.run(compose(list(overrides) + ["figures=false", "compile_cache=null"]))
    finally:
        engine.chunk_executable = orig
    return seen[0]


_THIS_TREE: dict = {}  # this tree's bench.baselines helpers, taken before an older tree is imported


def _time_compile(captured) -> dict:
    """Trace + lower, then XLA compile, of the engine's chunk (as ``engine.chunk_executable`` does,
    from a fresh function: nothing reused); HLO counts of the optimised module."""
    import time

    # the engine (and its ops) imported with the captured substrate: its processes read settings of
    # that import while they are traced (sim.core.known), not of a later re-import of the tree
    (substrate, chunk, record_every, axes, fixed_order, state, params, keys, *_), _, engine = captured
    ops = engine.ops
    t0, c0 = time.perf_counter(), time.process_time()
    with ops.reduction_order(fixed_order):
        lowered = _THIS_TREE["engine_chunk"](engine, substrate, chunk, record_every, axes).lower(state, params, keys)
    t1, c1 = time.perf_counter(), time.process_time()
    compile_lowered = getattr(ops, "compile_lowered", lambda lo: lo.compile())  # older trees: plain compile
    compiled = compile_lowered(lowered)
    t2, c2 = time.perf_counter(), time.process_time()
    text = compiled.as_text()
    _split_instr, walk_hlo = _THIS_TREE["_split_instr"], _THIS_TREE["walk_hlo"]
    comps = walk_hlo(text, lambda m, cur: _split_instr(m.group(2))[1])["computations"]
    ops_ = [op for body in comps.values() for op in body]
    c = collections.Counter(ops_)
    mlir = lowered.as_text()
    return {"lower_s": t1 - t0, "compile_s": t2 - t1, "cpu_s": c2 - c0, "hlo_instructions": len(ops_),
            "fusions": c["fusion"],
            "whiles": c["while"], "conditionals": c["conditional"], "stablehlo_lines": mlir.count("\n")}


def compile_ab(old_files: str | None, names, repeats: int = 3, old_tree: str | None = None) -> dict:
    """Interleaved compile-time A/B of the LLM experiments: A = the working tree with ``old_files``
    laid over it, B = the working tree; per experiment and side, ``repeats`` fresh traces and XLA
    compiles in alternating order (the same load for both), medians and spreads."""
    import os

    from bench.baselines import _split_instr, engine_chunk, overlaid_tree, spread, walk_hlo

    _THIS_TREE.update(_split_instr=_split_instr, walk_hlo=walk_hlo, engine_chunk=engine_chunk)
    trees = {"new": str(ROOT)}
    tmp = None
    if old_files is not None:
        tmp = overlaid_tree(old_files, prefix="ab_llm_compile_")
        trees = {"old": tmp, "new": str(ROOT)}
    elif old_tree is not None:
        trees = {"old": str(Path(old_tree).resolve()), "new": str(ROOT)}
    _TREES.update(trees.values())
    out = {}
    load0 = os.getloadavg()[0]
    for name in names:
        caps = {}
        for label, tree in trees.items():
            _import_tree(tree)
            caps[label] = _captured_chunk(EXPERIMENTS[name])
        rows = {label: [] for label in trees}
        for i in range(repeats):
            for label in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
                _import_tree(trees[label])
                rows[label].append(_time_compile(caps[label]))
        res = {}
        for label, rs in rows.items():
            res[label] = {"lower_s": spread([r["lower_s"] for r in rs]),
                          "compile_s": spread([r["compile_s"] for r in rs]),
                          "cpu_s": spread([r["cpu_s"] for r in rs]),
                          **{k: rs[0][k] for k in ("hlo_instructions", "fusions", "whiles", "conditionals",
                                                   "stablehlo_lines")}}
            r = res[label]
            print(f"  {name:<9} {label}: lower {r['lower_s']['median']:.2f} s ({r['lower_s']['min']:.2f}-"
                  f"{r['lower_s']['max']:.2f}), XLA compile {r['compile_s']['median']:.2f} s "
                  f"({r['compile_s']['min']:.2f}-{r['compile_s']['max']:.2f}); CPU (both) {r['cpu_s']['median']:.2f} s "
                  f"({r['cpu_s']['min']:.2f}-{r['cpu_s']['max']:.2f}); HLO {r['hlo_instructions']} "
                  f"instructions, {r['fusions']} fusions, {r['whiles']} whiles, {r['conditionals']} conditionals; "
                  f"StableHLO {r['stablehlo_lines']} lines", flush=True)
        if "old" in rows:
            tot = {lb: np.asarray([r["lower_s"] + r["compile_s"] for r in rows[lb]]) for lb in rows}
            ratio = spread(tot["new"] / tot["old"])
            cpu = spread(np.asarray([r["cpu_s"] for r in rows["new"]]) / np.asarray([r["cpu_s"] for r in rows["old"]]))
            res["new_over_old_total"], res["new_over_old_cpu"] = ratio, cpu
            print(f"  {name:<9} new/old (lower + compile, paired): wall {ratio['median']:.3f} "
                  f"({ratio['min']:.3f}-{ratio['max']:.3f}), CPU {cpu['median']:.3f} "
                  f"({cpu['min']:.3f}-{cpu['max']:.3f})",
                  flush=True)
        out[name] = res
    out["load_average"] = [load0, os.getloadavg()[0]]
    print(f"  load average {load0:.1f} -> {out['load_average'][1]:.1f}")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("work")
    w.add_argument("--models", type=int, default=64)
    a = sub.add_parser("ab")
    old = a.add_mutually_exclusive_group(required=True)
    old.add_argument("--old-files", help="folder of old files at their paths relative to the repo")
    old.add_argument("--old-tree", help="a whole older tree as it is (e.g. git worktree add /tmp/llm_old COMMIT)")
    a.add_argument("--models", type=int, default=64)
    a.add_argument("--steps", type=int, default=50)
    a.add_argument("--blocks", type=int, default=9)
    c = sub.add_parser("compile")
    cold = c.add_mutually_exclusive_group()
    cold.add_argument("--old-files", help="folder of old files at their paths relative to the repo (A side)")
    cold.add_argument("--old-tree", help="a whole older tree as it is (A side)")
    c.add_argument("--experiments", nargs="+", default=["serving", "roofline"], choices=list(EXPERIMENTS))
    c.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--set", action="append", default=[], help="a config override on top of the bench's (repeatable)")
    args = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    EXTRA[:] = args.set
    if args.cmd == "work":
        r = work(args.models)
        print_work(r)
    elif args.cmd == "compile":
        r = compile_ab(args.old_files, args.experiments, args.repeats, old_tree=args.old_tree)
    else:
        r = ab(args.old_files, args.models, args.steps, args.blocks, old_tree=args.old_tree)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
