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

    python bench/bench_llm_step.py work
    python bench/bench_llm_step.py ab --old-files /tmp/llm_before --blocks 9 --steps 50
    python bench/bench_llm_step.py --set substrate.arrivals.rate_per_s=2000 ab --old-files ...  # saturated
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
    import functools

    import jax

    from bench.baselines import kernel_bytes, parse_hlo
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
    fn = functools.partial(engine.scan_records, LLM.step, LLM.observe, n_records=1, record_every=CHUNK_STEPS,
                           check_fn=LLM.step_check)
    chunk = ops.compile_lowered(jax.jit(jax.vmap(fn, in_axes=(0, None, 0))).lower(
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
    compiled, _ = engine.chunk_executable(LLM, 1, steps, None, False, state, params, keys)
    out = compiled(state, params, keys)
    jax.block_until_ready(out)
    return compiled, (state, params, keys), jax.device_get(out)


def ab(old_files: str, n_models: int = 64, steps: int = 50, blocks: int = 9) -> dict:
    """Interleaved A/B: A = working tree with ``old_files``' files laid over it, B = working tree."""
    import jax

    from bench.baselines import overlaid_tree

    tmp = overlaid_tree(old_files, prefix="ab_llm_old_")
    _TREES.update({tmp, str(ROOT)})
    chunks = {}
    for label, tree in (("old", tmp), ("new", str(ROOT))):
        _import_tree(tree)
        chunks[label] = _chunk(n_models, steps)
    a, b = chunks["old"][2], chunks["new"][2]
    differs = [jax.tree_util.keystr(p) for (p, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                                                             jax.tree_util.tree_leaves(b))
               if not np.array_equal(np.asarray(x), np.asarray(y))]
    from bench.baselines import interleaved_times, spread

    t, cpu, (load0, load1) = interleaved_times(chunks, blocks, steps)

    row = {"models": n_models, "steps_per_block": steps, "blocks": blocks,
           "old_s_per_step": spread(t["old"]), "new_s_per_step": spread(t["new"]),
           "old_cpu_s_per_step": spread(cpu["old"]), "new_cpu_s_per_step": spread(cpu["new"]),
           "wall_old_over_new": spread(np.asarray(t["old"]) / np.asarray(t["new"])),
           "cpu_old_over_new": spread(np.asarray(cpu["old"]) / np.asarray(cpu["new"])),
           "differing_leaves_of_final_state_and_records": differs, "load_average": [load0, load1]}
    w, c = row["wall_old_over_new"], row["cpu_old_over_new"]
    print(f"  {n_models} models: old {1e3 * row['old_s_per_step']['median']:.2f} ms/step (CPU "
          f"{1e3 * row['old_cpu_s_per_step']['median']:.2f}), new {1e3 * row['new_s_per_step']['median']:.2f} ms/step "
          f"(CPU {1e3 * row['new_cpu_s_per_step']['median']:.2f}); old/new wall {w['median']:.3f} "
          f"(min {w['min']:.3f}, max {w['max']:.3f}), CPU {c['median']:.3f} (min {c['min']:.3f}, max {c['max']:.3f}, "
          f"IQR {c['q1']:.3f}-{c['q3']:.3f}) over {blocks} blocks; final states "
          f"{'bit-identical' if not differs else 'differ in ' + ', '.join(differs)}; load average "
          f"{load0:.1f} -> {load1:.1f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("work")
    w.add_argument("--models", type=int, default=64)
    a = sub.add_parser("ab")
    a.add_argument("--old-files", required=True, help="folder of old files at their paths relative to the repo")
    a.add_argument("--models", type=int, default=64)
    a.add_argument("--steps", type=int, default=50)
    a.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--set", action="append", default=[], help="a config override on top of the bench's (repeatable)")
    args = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    EXTRA[:] = args.set
    if args.cmd == "work":
        r = work(args.models)
        print_work(r)
    else:
        r = ab(args.old_files, args.models, args.steps, args.blocks)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
