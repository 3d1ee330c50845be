"""How much work one biology step does per agent, counted from the compiled program (issue 10).

Load-independent numbers, from ``jax.jit(BIO.step).lower(...).compile()`` at a given tissue size:

* kernels per step and bytes per agent (operand + result bytes of every kernel, while bodies times
  their trip counts; the one data-dependent loop, the producer-failure candidates of
  ``sim.core.rare_events``, counted at :data:`RARE_TRIPS` trips, what it runs at rest; a buffer a fusion reads through
  ``dynamic-slice`` or updates in place counts the slice: ``bench.baselines.kernel_bytes(...,
  sliced=True)``) and XLA's own ``cost_analysis``;
* transcendentals per cell: every exp / log / expm1 / log1p / pow / sqrt / ... the optimised HLO
  evaluates, counted by element inside every fusion, while bodies times their trip counts; the
  branches of a ``conditional`` (the creatine-kinase Newton solve, skipped without creatine) are
  counted apart, the step's figure takes the cheapest branch (the one the preset runs);
* Threefry hashes per cell: ``uint32`` left shifts / 20 (one rotate per round, 20 rounds per hash)
  of ``sim.rng``'s unrolled hash, which counts a hash twice where XLA copied it into two consumer
  fusions; a while loop with ``uint32`` shifts (JAX's own rolled Threefry, 5 trips of 4 rounds)
  counts one hash per element of its widest shift.

And wall-clock, as interleaved A/B ratios in one process: ``ab`` builds the step of another commit
(a copy of the working tree with the step's own files, ``STEP_FILES``, as of REV; ``--whole-tree``:
all of ``sim`` and ``bench`` as of REV), imported in turn under the name ``sim``, compiled, its
modules dropped, so old and new compiled chunks alternate in the same process under the same load;
wall and CPU time (all threads of this process: less hit by other processes' load) per step, the
median and spread of the per-block ratios, and how far the two final states are apart.
``precision`` measures ``precision=float32`` against float64 (error of the tissue means, speed).

    python bench/bench_step_work.py work 1000 10000            # counts (float64; --dtype float32)
    python bench/bench_step_work.py where 10000 --top 25          # bytes by process, largest kernels
    python bench/bench_step_work.py profile 40000                # kernel time by process, slowest kernels
    python bench/bench_step_work.py precision 1000               # float32 against float64: error, speed
    python bench/bench_step_work.py ab --old HEAD 10000 100000  # A/B ratio, median of 7 blocks
                                          # (A: the step's own files as of --old, the rest as now)
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TRANSCENDENTAL = {"exponential", "exponential-minus-one", "log", "log-plus-one", "power", "sqrt", "rsqrt", "cbrt",
                  "tanh", "logistic", "sine", "cosine", "tan", "atan2", "erf"}
CHUNK_STEPS = 20  # steps of the engine chunk counted by work()
# trips per step of the failure-candidate loop (sim.core.rare_events) at rest in the bench tissue:
# 0.032 expected candidates per step at 10,000 cells (health ~0.99997), so ~0.03 trips
RARE_TRIPS = 0.03
ROUNDS_PER_HASH = 20  # Threefry-2x32: 5 x 4 rounds, one rotate (one left shift) each
_ELEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_TYPE = re.compile(r"^(pred|[suf]\d+|bf16|c64|c128)\[([0-9,]*)\]")


def _elements(rtype: str) -> tuple[str, int]:
    m = _TYPE.match(rtype)
    if not m:
        return "", 0
    n = 1
    for d in m.group(2).split(","):
        if d:
            n *= int(d)
    return m.group(1), n


def hlo_ops(text: str) -> dict:
    """name -> list of (opcode, element type, elements, attrs) of every computation of an HLO text."""
    from bench.baselines import _split_instr, walk_hlo

    def record(m, cur):
        rtype, op, _, attrs = _split_instr(m.group(2))
        et, n = _elements(rtype)
        return (op, et, n, attrs)

    return walk_hlo(text, record)


def count_ops(mod: dict, name: str | None = None) -> dict:
    """Counter of 'transcendental' and 'hash_shifts' elements of one run of computation ``name``;
    conditionals: each branch's counts under 'branches' (list of Counters)."""
    comps = mod["computations"]
    out = collections.Counter()
    branches = []
    for op, et, n, attrs in comps[name or mod["entry"]]:
        if op in TRANSCENDENTAL:
            out["transcendental"] += n
            out["t:" + op] += n
        elif op == "shift-left" and et == "u32":
            out["hash_shifts"] += n
            out["hash_width"] = max(out["hash_width"], n)
        elif op == "while":
            trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attrs)
            k = int(trip.group(1)) if trip else RARE_TRIPS
            body = re.search(r"body=%?([\w.\-]+)", attrs).group(1)
            sub = count_ops(mod, body)
            for key, v in sub.items():
                if key == "hash_shifts" and sub.get("hash_width"):  # JAX's rolled Threefry: one hash
                    out[key] += ROUNDS_PER_HASH * sub["hash_width"]  # per element over its 5 trips
                elif key not in ("branches", "hash_width"):
                    out[key] += k * v
        elif op == "fusion" or op == "call":
            callee = re.search(r"(?:calls|to_apply)=%?([\w.\-]+)", attrs)
            if callee and callee.group(1) in comps:
                sub = count_ops(mod, callee.group(1))
                branches += sub.pop("branches", [])
                out["hash_width"] = max(out["hash_width"], sub.pop("hash_width", 0))
                out.update(sub)
        elif op == "conditional":
            names = re.search(r"branch_computations=\{([^}]*)\}", attrs)
            if names:
                branches.append([count_ops(mod, b.strip().lstrip("%")) for b in names.group(1).split(",")])
    if branches:
        out["branches"] = branches
    return out


def work(n_cells: int, dtype: str = "float64", compiler_options: dict | None = None, step=None) -> dict:
    """Load-independent counts of one compiled biology step at ``n_cells`` (see the module doc)."""
    import jax

    from bench.baselines import _agents, engine_chunk, kernel_bytes, parse_hlo
    from bench.run_bench import bio_cfg
    from sim.core import engine
    from sim.rng import replicate_keys
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    dt = np.float64 if dtype == "float64" else np.float32
    state, params = engine.cast(model.state, dt), engine.cast(model.params, dt)
    key = replicate_keys(0, 1)[0]
    lowered = jax.jit(step or BIO.step).lower(state, params, key)
    if compiler_options is None:  # as the engine compiles a run (sim.core.ops.COMPILE_OPTIONS)
        from sim.core import ops

        compiled = ops.compile_lowered(lowered)
    else:
        compiled = lowered.compile(compiler_options) if compiler_options else lowered.compile()
    text = compiled.as_text()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    moved, kernels = kernel_bytes(parse_hlo(text), sliced=True, unknown_trips=RARE_TRIPS)
    ops = count_ops(hlo_ops(text))
    cheapest = ops["transcendental"]
    costliest = ops["transcendental"]
    for group in ops.get("branches", []):
        t = [b["transcendental"] for b in group]
        cheapest += min(t)
        costliest += max(t)
    agents = _agents(model)
    # the engine's own chunk (jit(vmap(scan)) of CHUNK_STEPS steps and one record): the state is a loop
    # carry there, so what a step leaves unchanged is not copied as it is out of jit(step)
    from sim.core import ops as core_ops

    chunk_steps = CHUNK_STEPS
    bstate = engine.broadcast_state(state, 1)
    keys = replicate_keys(0, 1)
    chunk_lowered = engine_chunk(engine, BIO, 1, chunk_steps).lower(bstate, params, keys)
    if compiler_options is None:
        chunk = core_ops.compile_lowered(chunk_lowered)
    else:
        chunk = chunk_lowered.compile(compiler_options) if compiler_options else chunk_lowered.compile()
    chunk_moved, chunk_kernels = kernel_bytes(parse_hlo(chunk.as_text()), sliced=True, unknown_trips=RARE_TRIPS)
    return {"cells": n_cells, "agents": agents, "dtype": dtype, "kernels_per_step": kernels,
            "engine_chunk_bytes_per_agent_step": chunk_moved / chunk_steps / agents,
            "engine_chunk_kernels_per_step": chunk_kernels / chunk_steps,
            "hlo_kernel_bytes_per_agent": moved / agents,
            "xla_bytes_accessed_per_agent": float(ca.get("bytes accessed", float("nan"))) / agents,
            "xla_transcendentals_per_cell": float(ca.get("transcendentals", float("nan"))) / n_cells,
            "transcendentals_per_cell": cheapest / n_cells,
            "transcendentals_per_cell_all_branches": costliest / n_cells,
            "transcendentals_by_op_per_cell": {k[2:]: v / n_cells for k, v in sorted(ops.items()) if k.startswith("t:")},
            "threefry_hashes_per_cell": ops["hash_shifts"] / ROUNDS_PER_HASH / n_cells}


def print_work(r: dict) -> None:
    print(f"  {r['cells']:>7,} cells {r['dtype']}: {r['kernels_per_step']:.0f} kernels, "
          f"{r['hlo_kernel_bytes_per_agent']:.0f} B/agent (HLO kernels), {r['xla_bytes_accessed_per_agent']:.0f} B/agent "
          f"(XLA cost analysis), {r['transcendentals_per_cell']:.1f} transcendentals/cell "
          f"({r['transcendentals_per_cell_all_branches']:.1f} with every branch; XLA {r['xla_transcendentals_per_cell']:.0f}), "
          f"{r['threefry_hashes_per_cell']:.2f} Threefry hashes/cell; the engine's chunk: "
          f"{r['engine_chunk_bytes_per_agent_step']:.0f} B/agent/step over {r['engine_chunk_kernels_per_step']:.0f} "
          f"kernels/step")


def _scope(op_name: str, scopes: tuple) -> str:
    """The innermost of ``scopes`` in a kernel's ``op_name`` path (``jax.named_scope`` segments), or 'engine'."""
    parts = op_name.split("/")
    for part in reversed(parts):
        if part in scopes:
            return part
    return "engine"


def where(n_cells: int, top: int = 25, dtype: str = "float64") -> dict:
    """Bytes per agent and step of the engine's chunk at ``n_cells`` by process and by kernel, from
    each kernel's ``op_name``: ``Substrate.step`` names every process with ``jax.named_scope``
    (metabolism names its chains' part ``chains``), so every fusion carries the process it came from
    (a fusion of two processes' ops goes to the one XLA named it after). Counted as
    :func:`bench.baselines.kernel_bytes` counts them (sliced, the rare-event loop at
    :data:`RARE_TRIPS` trips)."""
    from bench.baselines import _agents, _touched_bytes, parse_hlo
    from sim.substrates.bio import SUBSTRATE as BIO

    model, compiled, _ = _chunk(n_cells, dtype)
    mod = parse_hlo(compiled.as_text())
    scopes = tuple(BIO.process_names) + ("chains",)
    comps = mod["computations"]
    rows = []

    def walk(name, mult):
        details = mod.get("detail", {}).get(name)
        for i, (op, rb, ob, attrs) in enumerate(comps[name]):
            if op in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast") or not op:
                continue
            if op == "while":
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attrs)
                t = int(trip.group(1)) if trip else RARE_TRIPS
                walk(re.search(r"body=%?([\w.\-]+)", attrs).group(1), mult * t)
                walk(re.search(r"condition=%?([\w.\-]+)", attrs).group(1), mult * (t + 1))
            elif op in ("call", "conditional", "async-start"):
                for callee in re.findall(r"(?:to_apply|calls|branch_computations=\{)[=]?%?([\w.\-]+)", attrs):
                    if callee in comps:
                        walk(callee, mult)
            else:
                b = rb + ob
                callee = re.search(r"calls=%?([\w.\-]+)", attrs) if op == "fusion" and details else None
                if callee and len(details) == len(comps[name]):
                    b = _touched_bytes(mod, callee.group(1), [x for _, x in details[i][3]], rb)
                m = re.search(r'op_name="([^"]*)"', attrs)
                label = details[i][0] if details else op
                rows.append((b * mult, label, _scope(m.group(1) if m else "", scopes)))

    walk(mod["entry"], 1)
    per = CHUNK_STEPS * _agents(model)
    by = collections.Counter()
    for b, _, scope in rows:
        by[scope] += b / per
    rows.sort(key=lambda r: -r[0])
    return {"cells": n_cells, "dtype": dtype, "bytes_per_agent_step": sum(by.values()),
            "by_process": dict(by.most_common()),
            "top_kernels": [(label, scope, b / per) for b, label, scope in rows[:top]]}


def _chunk(n_cells: int, dtype: str = "float64"):
    """The engine's chunk (``CHUNK_STEPS`` steps, one replicate) of the biology bench tissue, compiled
    with the engine's options: (model, compiled, arguments)."""
    from bench.baselines import engine_chunk
    from bench.run_bench import bio_cfg
    from sim.core import engine
    from sim.core import ops as core_ops
    from sim.rng import replicate_keys
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    dt = np.float64 if dtype == "float64" else np.float32
    state, params = engine.cast(model.state, dt), engine.cast(model.params, dt)
    args = (engine.broadcast_state(state, 1), params, replicate_keys(0, 1))
    return model, core_ops.compile_lowered(engine_chunk(engine, BIO, 1, CHUNK_STEPS).lower(*args)), args


def profile(n_cells: int, top: int = 25, dtype: str = "float64", reps: int = 3) -> dict:
    """Kernel time of the engine's chunk by process and by kernel, from a ``jax.profiler`` trace of
    ``reps`` chunk calls after a warm-up call: XLA's CPU runtime reports every kernel it runs (one
    thread each; independent kernels run at once), and each kernel's ``op_name`` names its process
    (as in :func:`where`). Times are summed over threads and taken with the profiler on (which slows
    the step): use them as shares, and wall-clock A/B (``ab``) for speed."""
    import gzip
    import jax

    from sim.substrates.bio import SUBSTRATE as BIO

    model, compiled, args = _chunk(n_cells, dtype)
    scopes = tuple(BIO.process_names) + ("chains",)
    scope_of = {}
    for line in compiled.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if m:
            op = re.search(r'op_name="([^"]*)"', line)
            scope_of[m.group(1)] = _scope(op.group(1) if op else "", scopes)
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(reps):
                jax.block_until_ready(compiled(*args))
        trace = next(Path(d).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace))["traceEvents"]
    per_kernel = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in scope_of:
            per_kernel[e["name"]] += e["dur"] * 1e-3  # us -> ms
    steps = reps * CHUNK_STEPS
    by = collections.Counter()
    for k, v in per_kernel.items():
        by[scope_of[k]] += v / steps
    return {"cells": n_cells, "dtype": dtype, "kernel_ms_per_step": sum(by.values()),
            "by_process": dict(by.most_common()),
            "top_kernels": [(k, scope_of[k], v / steps) for k, v in per_kernel.most_common(top)]}


def print_profile(r: dict) -> None:
    total = r["kernel_ms_per_step"]
    print(f"  {r['cells']:,} cells {r['dtype']}: {total:.2f} ms of kernel time per step (summed over threads, "
          f"profiler on)")
    for scope, ms in r["by_process"].items():
        print(f"    {scope:<22} {ms:7.3f} ms {100 * ms / total:5.1f}%")
    print("  slowest kernels (ms/step):")
    for label, scope, ms in r["top_kernels"]:
        print(f"    {ms:7.3f}  {scope:<20} {label}")


def print_where(r: dict) -> None:
    print(f"  {r['cells']:,} cells {r['dtype']}: {r['bytes_per_agent_step']:.0f} B/agent/step in the engine's chunk")
    for scope, b in r["by_process"].items():
        print(f"    {scope:<22} {b:6.1f}")
    print("  largest kernels (B/agent/step):")
    for label, scope, b in r["top_kernels"]:
        print(f"    {b:6.1f}  {scope:<20} {label}")


# ----------------------------------------------------------------------------- A/B in one process
def _compiled_chunk(n_cells: int, steps: int, dtype: str, options: dict | None = None):
    """(compiled chunk of ``steps`` steps, its arguments) of the ``sim`` package imported now: its
    engine's own executable, or with ``options`` the same chunk compiled with those XLA options."""
    from bench.run_bench import bio_cfg
    from sim.core import engine
    from sim.rng import replicate_keys
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells))
    dt = np.float64 if dtype == "float64" else np.float32
    state = engine.broadcast_state(engine.cast(model.state, dt), 1)
    params = engine.cast(model.params, dt)
    keys = replicate_keys(0, 1)
    if options is None:
        compiled, _ = engine.chunk_executable(BIO, 1, steps, None, False, state, params, keys)
    else:
        compiled = _THIS_TREE["engine_chunk"](engine, BIO, 1, steps).lower(state, params, keys).compile(dict(options))
    return compiled, (state, params, keys)


def _import_tree(path: str):
    """Drop every ``sim`` module and put ``path`` first on sys.path (``sim`` is imported from it next)."""
    for name in [m for m in sys.modules if m == "sim" or m.startswith("sim.") or m.startswith("bench.")
                 or m == "bench"]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p not in _TREES]
    sys.path.insert(0, path)


_TREES: set = set()
_THIS_TREE: dict = {}  # this tree's bench helpers, taken before an older tree's ``bench`` is imported


STEP_FILES = ("sim/rng.py", "sim/core/ops.py", "sim/core/engine.py", "sim/core/chains.py",
              "sim/substrates/bio/kernels/*.py")


def ab(old_rev: str, sizes, steps: int = 20, blocks: int = 7, dtype: str = "float64",
       whole_tree: bool = False, options: dict | None = None, old_files: str | None = None) -> list[dict]:
    """Interleaved A/B of the compiled step of ``old_rev`` (A) against the working tree (B). By default
    A is the working tree with only ``STEP_FILES`` taken from ``old_rev``; ``whole_tree``: all of
    ``sim`` and ``bench`` as of ``old_rev``; ``old_files``: the working tree with every file under
    that folder (a snapshot of some files, at their paths relative to the repository) laid over it,
    e.g. a copy taken before an uncommitted change while others edit the same tree. ``options``:
    compile both with these XLA options (the code's effect alone), instead of each with its own
    engine's."""
    import jax

    from bench.baselines import engine_chunk, overlaid_tree

    _THIS_TREE["engine_chunk"] = engine_chunk

    if whole_tree:
        tmp = tempfile.mkdtemp(prefix="ab_old_")
        archive = subprocess.run(["git", "archive", old_rev, "sim", "bench"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
    elif old_files:  # the working tree with the snapshot's files laid over it
        tmp = overlaid_tree(old_files)
    else:  # the working tree with only the step's own files as of ``old_rev`` (others' edits alike in A and B)
        snapshot = Path(tempfile.mkdtemp(prefix="ab_files_"))
        for rel in STEP_FILES:
            for path in sorted(ROOT.glob(rel)):
                r = str(path.relative_to(ROOT))
                old = subprocess.run(["git", "show", f"{old_rev}:{r}"], cwd=ROOT, capture_output=True)
                if old.returncode == 0:
                    (snapshot / r).parent.mkdir(parents=True, exist_ok=True)
                    (snapshot / r).write_bytes(old.stdout)
        tmp = overlaid_tree(snapshot)
        shutil.rmtree(snapshot, ignore_errors=True)
    _TREES.update({tmp, str(ROOT)})
    rows = []
    for n in sizes:
        chunks = {}
        for label, tree in (("old", tmp), ("new", str(ROOT))):
            _import_tree(tree)
            compiled, args = _compiled_chunk(n, steps, dtype, options)
            out = compiled(*args)
            jax.block_until_ready(out)
            chunks[label] = (compiled, args, jax.device_get(out[0]))
        a, b = chunks["old"][2], chunks["new"][2]
        worst, worst_leaf = 0.0, None  # max |old - new| / max |old| of each leaf (as bench.baselines' sharding check)
        for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype.kind == "f" and x.size:
                d = float(np.max(np.abs(x - y))) / max(float(np.max(np.abs(x))), 1e-300)
            else:
                d = 0.0 if np.array_equal(x, y) else float("inf")
            if d > worst:
                worst, worst_leaf = d, jax.tree_util.keystr(path)
        from bench.baselines import interleaved_times

        t, cpu, (load0, load1) = interleaved_times(chunks, blocks, steps)
        ratio = np.asarray(t["old"]) / np.asarray(t["new"])
        cpu_ratio = np.asarray(cpu["old"]) / np.asarray(cpu["new"])
        from bench.baselines import _agents, spread  # noqa: F401  (the working tree's bench)

        row = {"cells": n, "dtype": dtype, "steps_per_block": steps, "blocks": blocks,
               "old_s_per_step": spread(t["old"]), "new_s_per_step": spread(t["new"]),
               "speedup_old_over_new": spread(ratio), "cpu_speedup_old_over_new": spread(cpu_ratio),
               "old_cpu_s_per_step": spread(cpu["old"]), "new_cpu_s_per_step": spread(cpu["new"]),
               "max_rel_diff_final_state": worst, "worst_leaf": worst_leaf,
               "load_average": [load0, load1]}
        rows.append(row)
        s, c = row["speedup_old_over_new"], row["cpu_speedup_old_over_new"]
        print(f"  {n:>7,} cells: old {1e3 * row['old_s_per_step']['median']:.3f} ms/step, new "
              f"{1e3 * row['new_s_per_step']['median']:.3f} ms/step, old/new wall {s['median']:.3f} "
              f"(min {s['min']:.3f}, max {s['max']:.3f}, IQR {s['q1']:.3f}-{s['q3']:.3f}), CPU {c['median']:.3f} "
              f"(min {c['min']:.3f}, max {c['max']:.3f}, IQR {c['q1']:.3f}-{c['q3']:.3f}) over {blocks} blocks; "
              f"final states max rel. diff {worst:.1e} ({worst_leaf}); load average {load0:.1f} -> {load1:.1f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------- float32 against float64
PRECISION_FIELDS = ("pools", "produced", "spent", "work", "substrate_used", "health_mean", "n_producers", "failures",
                    "births")


def precision_error(n_cells: int, steps: int, record_every: int, seed: int = 0, blocks: int = 7) -> dict:
    """``precision=float32`` against float64 on the same tissue, seed and draws: the relative error of
    each recorded tissue mean (per record, worst over the run), the share of producer slots whose
    alive flag differs at the end (a draw compared with a probability computed in float32 can fall on
    the other side), and the step time of each, interleaved in one process (median of ``blocks``)."""
    import jax

    from bench.run_bench import bio_cfg
    from sim.core import engine
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    model = build(bio_cfg(n_cells, seed))
    runs, times = {}, {"float64": [], "float32": []}
    cast = {k: (engine.cast(model.state, np.dtype(k)), engine.cast(model.params, np.dtype(k))) for k in times}
    kw = dict(seed=seed, steps=steps, record_every=record_every, replicates=1)
    for k, (st, pa) in cast.items():
        runs[k] = engine.run(BIO, st, pa, **kw)
    for i in range(blocks):
        for k in (("float64", "float32") if i % 2 == 0 else ("float32", "float64")):
            st, pa = cast[k]
            t0 = time.perf_counter()
            jax.block_until_ready(engine.run(BIO, st, pa, **kw).state)
            times[k].append((time.perf_counter() - t0) / steps)
    errors = {}
    for f in PRECISION_FIELDS:
        a = np.asarray(runs["float64"].records[f], np.float64)
        b = np.asarray(runs["float32"].records[f], np.float64)
        axes = tuple(range(2, a.ndim)) if f != "pools" else (2,)
        ma, mb = a.mean(axis=axes), b.mean(axis=axes)  # tissue means per replicate, record (and species)
        errors[f] = float(np.max(np.abs(mb - ma) / np.maximum(np.abs(ma), 1e-300)))
    alive64 = np.asarray(runs["float64"].state.producers.alive)
    alive32 = np.asarray(runs["float32"].state.producers.alive)
    from bench.baselines import spread

    t64, t32 = np.asarray(times["float64"]), np.asarray(times["float32"])
    out = {"cells": n_cells, "steps": steps, "simulated_s": steps * float(np.asarray(model.params.dt)),
           "max_rel_error_of_tissue_means": errors, "producer_alive_differs": float(np.mean(alive64 != alive32)),
           "float64_s_per_step": spread(t64), "float32_s_per_step": spread(t32), "speedup": spread(t64 / t32)}
    sp = out["speedup"]
    print(f"  {n_cells:,} cells, {steps} steps ({out['simulated_s']:g} s): float32 vs float64, worst relative error of "
          f"a tissue mean over the run: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
          + f"; producer slots alive in one and not the other at the end: {out['producer_alive_differs']:.2%}; "
          f"float32 is {sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f}) faster")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("work", help="load-independent counts of the compiled step")
    w.add_argument("sizes", nargs="*", type=int, default=[1000, 10000])
    w.add_argument("--dtype", default="float64")
    w.add_argument("--json", action="store_true")
    w.add_argument("--plain", action="store_true", help="compile without the engine's XLA options")
    wh = sub.add_parser("where", help="the engine chunk's bytes per agent by process and largest kernels")
    wh.add_argument("sizes", nargs="*", type=int, default=[10000])
    wh.add_argument("--top", type=int, default=25)
    wh.add_argument("--dtype", default="float64")
    pf = sub.add_parser("profile", help="the engine chunk's kernel time by process and slowest kernels (jax.profiler)")
    pf.add_argument("sizes", nargs="*", type=int, default=[40000])
    pf.add_argument("--top", type=int, default=25)
    pf.add_argument("--dtype", default="float64")
    b = sub.add_parser("ab", help="interleaved A/B wall-clock ratio against another commit")
    b.add_argument("sizes", nargs="*", type=int, default=[10000, 100000])
    b.add_argument("--old", default="HEAD")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--blocks", type=int, default=7)
    b.add_argument("--dtype", default="float64")
    b.add_argument("--whole-tree", action="store_true", help="A: all of sim/ and bench/ as of --old")
    b.add_argument("--old-files", default=None,
                   help="A: the working tree with the files of this folder (paths relative to the repository) laid over it")
    b.add_argument("--same-options", action="store_true",
                   help="compile A and B with the working tree's sim.core.ops.COMPILE_OPTIONS (the code alone)")
    pr = sub.add_parser("precision", help="precision=float32 against float64: error and speed")
    pr.add_argument("sizes", nargs="*", type=int, default=[1000])
    pr.add_argument("--steps", type=int, default=5000)
    pr.add_argument("--record-every", type=int, default=100)
    pr.add_argument("--blocks", type=int, default=5)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.cmd == "work":
        for n in args.sizes:
            r = work(n, args.dtype, compiler_options={} if args.plain else None)
            print(json.dumps(r) if args.json else "", end="\n" if args.json else "")
            print_work(r)
    elif args.cmd == "where":
        for n in args.sizes:
            print_where(where(n, args.top, args.dtype))
    elif args.cmd == "profile":
        for n in args.sizes:
            print_profile(profile(n, args.top, args.dtype))
    elif args.cmd == "precision":
        for n in args.sizes:
            precision_error(n, args.steps, args.record_every, blocks=args.blocks)
    else:
        options = None
        if args.same_options:
            from sim.core import ops

            options = dict(ops.COMPILE_OPTIONS)
        ab(args.old, args.sizes, args.steps, args.blocks, args.dtype, args.whole_tree, options, args.old_files)


if __name__ == "__main__":
    main()
