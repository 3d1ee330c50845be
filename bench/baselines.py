"""Honest baselines for ``make bench`` (issue 10, item 1 and part of item 4).

* :func:`section_baselines`: the JAX engine against a plain numpy step (``bench/numpy_step.py``, the
  engine's random stream and the same stream-free arithmetic with numpy's PCG64 draws) and the Mesa
  reference WITHOUT a DataCollector (``collect_every=0``: nothing collected per step) and, labelled
  separately, WITH one (``collect_every=1``: the model and agent reporters and a state export after
  every step, what the old bench timed). The five are timed in interleaved blocks (A B C D E, A B C
  D E, ...) in one process, so load on this shared machine hits all of them alike; every timing is
  reported as median, min-max and IQR over the repeats, and each ratio is the median of the per-block
  ratios.
* :func:`hlo_bytes`: bytes moved per agent and step, counted from the compiled program, not by hand:
  XLA's own ``cost_analysis()["bytes accessed"]`` of one jitted step, and a count from the optimised
  HLO text (operand + result bytes of every kernel the step launches, while-loop bodies multiplied by
  their known trip counts), next to the bytes of reading and writing the state once.
* :func:`section_bandwidth`: copy bandwidth (numpy ``copyto`` of 256 MB, read + write) with spread,
  the roofline denominator.
* :func:`sharding_worker` / :func:`section_sharding`: replicates sharded over two forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2`` in a child process, a ``NamedSharding``
  over the replicate axis) against the same run on one device, timed interleaved, results compared.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ----------------------------------------------------------------------------- statistics
def spread(samples) -> dict:
    """Median, min, max, quartiles and count of a list of timings (seconds or ratios)."""
    x = np.asarray(samples, float)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return {"median": float(med), "min": float(x.min()), "max": float(x.max()), "q1": float(q1), "q3": float(q3),
            "n": int(x.size), "samples": [float(v) for v in x]}


def fmt_ms(s: dict, digits: int = 2) -> str:
    """'median (min-max)' in ms."""
    return f"{1e3 * s['median']:.{digits}f} ({1e3 * s['min']:.{digits}f}-{1e3 * s['max']:.{digits}f})"


def fmt_ratio(s: dict) -> str:
    return f"{s['median']:.1f}x ({s['min']:.1f}-{s['max']:.1f})"


# ----------------------------------------------------------------------------- the baselines
def _agents(model) -> int:
    from bench.run_bench import agents_per_cell

    return int(round(agents_per_cell(model) * model.n_cells))


def section_baselines(sizes, repeats: int = 5) -> list[dict]:
    """Per size: JAX engine, numpy (Threefry = the engine's stream; PCG64), Mesa reference without
    and with a DataCollector, timed in ``repeats`` interleaved blocks."""
    import jax

    from bench.numpy_step import NumpyTissue
    from bench.run_bench import bio_cfg
    from sim import rng
    from sim.core import engine
    from sim.mesa_model import CurrencyModel
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    rows = []
    for n in sizes:
        model = build(bio_cfg(n))
        agents = _agents(model)
        # steps per timed block: ~0.1-0.5 s each on this machine
        jax_steps = 200 if n <= 1000 else 50
        np_steps = 40 if n <= 1000 else 8
        mesa_steps = 4 if n <= 1000 else 1
        key = rng.replicate_keys(0, 1, 0)[0]
        run_kw = dict(seed=0, steps=jax_steps, record_every=jax_steps, replicates=1)
        t0 = time.perf_counter()
        r = engine.run(BIO, model.state, model.params, **run_kw)  # compile
        jax.block_until_ready(r.state)
        first_call = time.perf_counter() - t0
        tissues = {"numpy_threefry": NumpyTissue(model.state, model.params, key, draws="threefry"),
                   "numpy_pcg64": NumpyTissue(model.state, model.params, draws="pcg64", seed=0)}
        for t in tissues.values():
            t.run(2)  # warm
        t0 = time.perf_counter()
        mesa = CurrencyModel(model=model, backend="mesa", collect_every=0)
        mesa_build = time.perf_counter() - t0
        mesa.step()  # warm caches
        names = ("jax", "numpy_threefry", "numpy_pcg64", "mesa_no_dc", "mesa_dc")
        times = {k: [] for k in names}
        cpu = {k: [] for k in names}  # CPU seconds of this process (all its threads) per step

        def timed(name, fn, steps):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / steps)
            cpu[name].append((time.process_time() - c0) / steps)

        def jax_block():
            jax.block_until_ready(engine.run(BIO, model.state, model.params, **run_kw).state)

        def mesa_block(every):
            mesa.collect_every = every  # read by every step(): 0 collects nothing
            for _ in range(mesa_steps):
                mesa.step()

        for _ in range(repeats):
            timed("jax", jax_block, jax_steps)
            for name, t in tissues.items():
                timed(name, lambda t=t: t.run(np_steps), np_steps)
            timed("mesa_no_dc", lambda: mesa_block(0), mesa_steps)
            timed("mesa_dc", lambda: mesa_block(1), mesa_steps)
        row = {"cells": n, "agents": agents, "edges": int(model.params.edges.src.shape[0]), "repeats": repeats,
               "steps_per_block": {"jax": jax_steps, "numpy": np_steps, "mesa": mesa_steps},
               "jax_first_call_s": first_call, "jax_compile_s": r.compile_s if r.compile_s else None,
               "mesa_build_s": mesa_build, "mesa_datacollector_rows": len(mesa.datacollector.model_vars.get(
                   "total_atp", []))}
        jx = np.asarray(times["jax"])
        for name, v in times.items():
            row[name + "_s_per_step"] = spread(v)
            row[name + "_cpu_s_per_step"] = spread(cpu[name])
            row[name + "_agent_updates_per_s"] = spread(agents / np.asarray(v))
            if name != "jax":
                row["jax_speedup_vs_" + name] = spread(np.asarray(v) / jx)
        rows.append(row)
        print(f"  baselines {n:>6} cells ({agents:,} agents), median (min-max) ms/step over {repeats} interleaved blocks:")
        for name in times:
            extra = "" if name == "jax" else f"   JAX is {fmt_ratio(row['jax_speedup_vs_' + name])} faster"
            print(f"    {name:<15} {fmt_ms(row[name + '_s_per_step'], 3):>28} (CPU {fmt_ms(row[name + '_cpu_s_per_step'], 3)})"
                  f"{extra}")
    return rows


# ----------------------------------------------------------------------------- bytes from the HLO

class _KnownChunk:
    """A jitted chunk whose ``lower(state, params, keys)`` traces with the facts the engine reads from
    the concrete parameters (``substrate.known``, :mod:`sim.core.known`), as ``engine.chunk_executable``
    does."""

    def __init__(self, jitted, substrate, known):
        self.jitted, self.substrate, self.known = jitted, substrate, known

    def lower(self, state, params, keys):
        with self.known.tracing(tuple(self.substrate.known(params))):
            return self.jitted.lower(state, params, keys)


def engine_chunk(engine, substrate, n_records: int, record_every: int, params_axes=None):
    """``jax.jit`` of the engine's chunk for ``substrate`` as ``engine`` (the ``sim.core.engine`` module
    of the tree under test) builds it: ``engine.chunk_function`` (the scan of a vmapped step), or the
    ``vmap(scan_records)`` of trees older than it (the A side of an A/B against an old commit); in
    trees with ``sim.core.known``, lowered with the facts of the parameters it is lowered for."""
    import functools

    import jax

    kw = dict(n_records=n_records, record_every=record_every, check_fn=substrate.step_check)
    if hasattr(engine, "chunk_function"):
        jitted = jax.jit(engine.chunk_function(substrate.step, substrate.observe, params_axes=params_axes, **kw))
        known = getattr(engine, "known", None)
        return jitted if known is None else _KnownChunk(jitted, substrate, known)
    fn = functools.partial(engine.scan_records, substrate.step, substrate.observe, **kw)
    return jax.jit(jax.vmap(fn, in_axes=(0, params_axes, 0)))


def overlaid_tree(old_files, prefix: str = "ab_old_") -> str:
    """A temporary copy of the working tree's ``sim`` and ``bench`` with every ``.py`` file under
    ``old_files`` (a snapshot of some files, at their paths relative to the repository) laid over
    it: the "old" side of an interleaved A/B while others edit the same tree. Returns its path."""
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix=prefix)
    ignore = shutil.ignore_patterns("__pycache__", "results")
    shutil.copytree(ROOT / "sim", Path(tmp) / "sim", ignore=ignore)
    shutil.copytree(ROOT / "bench", Path(tmp) / "bench", ignore=ignore)
    for path in sorted(Path(old_files).rglob("*.py")):
        target = Path(tmp) / path.relative_to(old_files)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return tmp


def interleaved_times(chunks: dict, blocks: int, steps: int):
    """Time ``chunks`` (label -> (compiled, args, ...), each call running ``steps`` steps) in
    ``blocks`` interleaved blocks, the order alternating per block so load drifts hit every label
    alike. Returns (wall s/step per label, CPU s/step per label, (load average before, after)); CPU
    time is the process's, all threads: less hit by load than wall time."""
    import time

    import jax

    t = {label: [] for label in chunks}
    cpu = {label: [] for label in chunks}
    load0 = os.getloadavg()[0]
    labels = list(chunks)
    for i in range(blocks):
        for label in (labels if i % 2 == 0 else labels[::-1]):
            compiled, args = chunks[label][:2]
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(compiled(*args))
            t[label].append((time.perf_counter() - t0) / steps)
            cpu[label].append((time.process_time() - c0) / steps)
    return t, cpu, (load0, os.getloadavg()[0])

_SHAPE = re.compile(r"\b(pred|s8|s16|s32|s64|u8|u16|u32|u64|f16|bf16|f32|f64|c64|c128)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "opt-barrier",
         "partition-id", "replica-id", "iota"}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in _SHAPE.findall(text):
        n = 1
        for d in dims.split(","):
            if d:
                n *= int(d)
        total += n * _BYTES[dtype]
    return total


def _split_instr(rest: str):
    """(result type text, opcode, operand text, attribute text) of an HLO instruction's right side."""
    depth, i = 0, 0
    if rest.startswith("("):  # tuple result type
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                break
        rtype, rest2 = rest[: i + 1], rest[i + 1:].lstrip()
    else:
        rtype, _, rest2 = rest.partition(" ")
    m = re.match(r"([\w\-]+)\(", rest2)
    if not m:
        return rtype, "", "", rest2
    op = m.group(1)
    j, depth = m.end(), 1
    k = j
    while k < len(rest2) and depth:
        depth += rest2[k] == "("
        depth -= rest2[k] == ")"
        k += 1
    return rtype, op, rest2[j: k - 1], rest2[k:]


def walk_hlo(text: str, record) -> dict:
    """Computations of an HLO module text: name -> list of ``record(match, computation)`` for each
    instruction (``match`` of :data:`_INSTR`: group 1 the name, group 2 the rest; ``computation``
    the list being filled, for records that look back at earlier instructions)."""
    comps, cur, entry = {}, None, None
    for line in text.splitlines():
        if line.endswith("{") and not line.startswith(" ") and "(" in line:
            is_entry = line.startswith("ENTRY")
            name = line.split()[1 if is_entry else 0].lstrip("%")
            cur = comps.setdefault(name, [])
            entry = name if is_entry else entry
            continue
        if line.startswith("}"):
            cur = None
            continue
        if cur is None:
            continue
        m = _INSTR.match(line)
        if m:
            cur.append(record(m, cur))
    return {"computations": comps, "entry": entry}


def parse_hlo(text: str) -> dict:
    """Computations of an HLO module text: name -> list of (opcode, result bytes, operand bytes, attrs);
    ``detail``: name -> list of (instruction name, opcode, result bytes, [(operand name, bytes)]),
    what :func:`kernel_bytes` needs to see which parts of its operands a fusion really touches."""
    sizes_of: dict = {}
    detail: dict = {}

    def record(m, cur):
        rtype, op, operands, attrs = _split_instr(m.group(2))
        rb = _shape_bytes(rtype)
        sizes = sizes_of.setdefault(id(cur), {})
        sizes[m.group(1)] = rb
        refs = re.findall(r"%([\w.\-]+)", operands)
        # operands are printed as typed values (older XLA) or as bare %names (looked up here)
        typed = bool(_SHAPE.search(operands))
        ob = _shape_bytes(operands) if typed else sum(sizes.get(ref, 0) for ref in refs)
        if not typed:
            detail.setdefault(id(cur), []).append((m.group(1), op, rb, [(r, sizes.get(r, 0)) for r in refs], operands))
        return (op, rb, ob, attrs)

    mod = walk_hlo(text, record)
    mod["detail"] = {name: detail.get(id(instrs), []) for name, instrs in mod["computations"].items()}
    return mod


def _touched_bytes(mod: dict, callee: str, operand_bytes: list, result_bytes: int) -> int:
    """Bytes a fusion really moves: a parameter read only through ``dynamic-slice`` counts the
    slices, and a root ``dynamic-update-slice`` into a parameter (XLA updates it in place) counts
    the update, not the whole buffer, read and written."""
    instrs = mod["detail"].get(callee) or []
    params = {}
    for name, op, rb, refs, operands in instrs:
        if op == "parameter":
            params[name] = int(operands.strip() or 0)
    users: dict = {}
    for name, op, rb, refs, operands in instrs:
        for k, (ref, _) in enumerate(refs):
            users.setdefault(ref, []).append((op, k, rb, refs))
    total = sum(operand_bytes) + result_bytes
    root = instrs[-1] if instrs else None
    for pname, index in params.items():
        if index >= len(operand_bytes):
            continue
        uses = users.get(pname, [])
        if uses and all(op == "dynamic-slice" and k == 0 for op, k, rb, refs in uses):
            total += sum(rb for op, k, rb, refs in uses) - operand_bytes[index]
        elif (root is not None and root[1] == "dynamic-update-slice" and root[3] and root[3][0][0] == pname
              and len(uses) == 1):
            update = root[3][1][1]
            total += 2 * update - operand_bytes[index] - result_bytes
    return total


def kernel_bytes(mod: dict, name: str | None = None, depth: int = 0, sliced: bool = False,
                 unknown_trips: float = 1) -> tuple[float, int]:
    """(bytes, kernels launched) of one run of computation ``name`` (the entry by default): operand +
    result bytes of every instruction that is a kernel; while bodies x their known trip count
    (``unknown_trips`` times when it is data-dependent), called computations recursed into;
    parameters, constants, tuples and bitcasts are free. ``sliced``: a fusion counts only the slices
    of a buffer it reads through ``dynamic-slice`` and the update it writes in place
    (:func:`_touched_bytes`)."""
    comps = mod["computations"]
    details = mod.get("detail", {}).get(name or mod["entry"]) if sliced else None
    total, kernels = 0.0, 0
    for i, (op, rb, ob, attrs) in enumerate(comps[name or mod["entry"]]):
        if op in _FREE or not op:
            continue
        if op == "while":
            trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attrs)
            n = int(trip.group(1)) if trip else unknown_trips
            body = re.search(r"body=%?([\w.\-]+)", attrs).group(1)
            cond = re.search(r"condition=%?([\w.\-]+)", attrs).group(1)
            b, kb = kernel_bytes(mod, body, depth + 1, sliced, unknown_trips)
            c, kc = kernel_bytes(mod, cond, depth + 1, sliced, unknown_trips)
            total += n * b + (n + 1) * c
            kernels += n * kb + (n + 1) * kc
        elif op in ("call", "conditional", "async-start"):
            for callee in re.findall(r"(?:to_apply|calls|branch_computations=\{)[=]?%?([\w.\-]+)", attrs):
                if callee in comps:
                    b, k = kernel_bytes(mod, callee, depth + 1, sliced, unknown_trips)
                    total += b
                    kernels += k
        else:
            callee = re.search(r"calls=%?([\w.\-]+)", attrs) if op == "fusion" and details else None
            if callee and len(details) == len(comps[name or mod["entry"]]):
                total += _touched_bytes(mod, callee.group(1), [b for _, b in details[i][3]], rb)
            else:
                total += rb + ob
            kernels += 1
    return total, kernels


def hlo_bytes(n_cells: int, dtype: str = "float64") -> dict:
    """Bytes per agent and step of the engine's step at ``n_cells``, from the step compiled as the
    engine compiles it (``bench.bench_step_work.work``: kernels, bytes, transcendentals and
    Threefry hashes counted from the optimised HLO), plus what reading and writing the state once
    would move."""
    import jax

    from bench.bench_step_work import work
    from bench.run_bench import bio_cfg
    from sim.core import engine
    from sim.substrates.bio.build import build

    out = work(n_cells, dtype)
    model = build(bio_cfg(n_cells))
    dt = np.float64 if dtype == "float64" else np.float32
    state, params = engine.cast(model.state, dt), engine.cast(model.params, dt)
    state_b = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(state))
    param_b = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(params))
    out["state_read_write_once_per_agent"] = (2 * state_b + param_b) / out["agents"]
    return out


def section_throughputs(repeats: int = 5) -> dict:
    """What a step's arithmetic floor is made of, measured: jitted float64 ``exp`` + ``log`` results per
    second and ``sim.rng.uniforms`` draws (one Threefry-2x32 hash each) per second, 4M elements."""
    import jax
    import jax.numpy as jnp

    from sim import rng

    n = 4 * 1024 * 1024
    x = jnp.linspace(0.1, 2.0, n)
    f_exp = jax.jit(lambda v: jnp.exp(-v) + jnp.log(v))  # 2 transcendentals per element
    ids = jnp.arange(n, dtype=jnp.uint32)
    key = rng.replicate_keys(0, 1)[0]
    f_hash = jax.jit(lambda k, i: rng.uniforms(k, jnp.int32(3), rng.PRODUCER_FAILURE, i))
    out = {}
    for name, fn, args, per in (("transcendentals_per_s", f_exp, (x,), 2), ("threefry_hashes_per_s", f_hash, (key, ids), 1)):
        fn(*args).block_until_ready()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*args).block_until_ready()
            ts.append(time.perf_counter() - t0)
        out[name] = spread(per * n / np.asarray(ts))
    print(f"  throughput: {out['transcendentals_per_s']['median']:.3g} exp/log per s "
          f"({out['transcendentals_per_s']['min']:.3g}-{out['transcendentals_per_s']['max']:.3g}), "
          f"{out['threefry_hashes_per_s']['median']:.3g} Threefry hashes per s "
          f"({out['threefry_hashes_per_s']['min']:.3g}-{out['threefry_hashes_per_s']['max']:.3g})")
    return out


def section_hlo_bytes(sizes, dtypes=("float64", "float32")) -> list[dict]:
    rows = []
    for n in sizes:
        for dtype in dtypes:
            r = hlo_bytes(n, dtype)
            rows.append(r)
            print(f"  HLO bytes {n:>6} cells {dtype}: {r['xla_bytes_accessed_per_agent']:.0f} B/agent (XLA cost analysis), "
                  f"{r['hlo_kernel_bytes_per_agent']:.0f} B/agent over {r['kernels_per_step']:.0f} kernels (HLO text), "
                  f"state read+written once {r['state_read_write_once_per_agent']:.0f} B/agent; "
                  f"{r['transcendentals_per_cell']:.0f} transcendentals and {r['threefry_hashes_per_cell']:.0f} Threefry hashes per cell")
    return rows


# ----------------------------------------------------------------------------- bandwidth
def section_bandwidth(repeats: int = 7) -> dict:
    """Copy bandwidth (bytes read + written per second) of a 256 MB float64 array: numpy ``copyto``
    and a jitted JAX scale; spread over ``repeats``."""
    import jax
    import jax.numpy as jnp

    n = 32 * 1024 * 1024
    a = np.ones(n)
    b = np.empty_like(a)
    np.copyto(b, a)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        ts.append(time.perf_counter() - t0)
    x = jnp.ones(n)
    f = jax.jit(lambda v: v * 1.0000001)
    f(x).block_until_ready()
    tj = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        tj.append(time.perf_counter() - t0)
    np_bw = spread(2 * a.nbytes / np.asarray(ts))
    jx_bw = spread(2 * a.nbytes / np.asarray(tj))
    print(f"  copy bandwidth: numpy {np_bw['median'] / 1e9:.1f} GB/s ({np_bw['min'] / 1e9:.1f}-{np_bw['max'] / 1e9:.1f}), "
          f"JAX scale {jx_bw['median'] / 1e9:.1f} GB/s ({jx_bw['min'] / 1e9:.1f}-{jx_bw['max'] / 1e9:.1f})")
    return {"numpy_copy_bytes_per_s": np_bw, "jax_scale_bytes_per_s": jx_bw}


# ----------------------------------------------------------------------------- two host devices
SHARD_FLAG = "--xla_force_host_platform_device_count=2"


def sharding_worker(n_cells: int, replicates: int, steps: int, repeats: int) -> dict:
    """In a process started with two forced host devices: the same ensemble on one device and with
    its replicate axis sharded over both (``NamedSharding``), timed interleaved, final states compared."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import sim  # noqa: F401
    from bench.run_bench import bio_cfg
    from sim.core import engine
    from sim.rng import replicate_keys
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    devs = jax.devices()
    if len(devs) < 2:
        return {"error": f"only {len(devs)} device(s): XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}"}
    model = build(bio_cfg(n_cells))
    batched = engine.broadcast_state(model.state, replicates)
    keys = replicate_keys(0, replicates)
    mesh = Mesh(np.array(devs[:2]), ("replicate",))
    shard = NamedSharding(mesh, PartitionSpec("replicate"))
    one = {"state": jax.device_put(batched, devs[0]), "keys": jax.device_put(keys, devs[0])}
    two = {"state": jax.device_put(batched, shard), "keys": jax.device_put(keys, shard)}
    kw = dict(seed=0, steps=steps, record_every=steps, replicates=replicates)
    out, compile_s = {}, {}
    for name, args in (("one_device", one), ("two_devices", two)):
        r = engine.run(BIO, args["state"], model.params, keys=args["keys"], **kw)
        compile_s[name] = r.compile_s
        out[name] = r
    placed = [str(getattr(x, "sharding", None)) for x in jax.tree_util.tree_leaves(out["two_devices"].state)[:1]]
    times = {"one_device": [], "two_devices": []}
    for _ in range(repeats):
        for name, args in (("one_device", one), ("two_devices", two)):
            t0 = time.perf_counter()
            r = engine.run(BIO, args["state"], model.params, keys=args["keys"], **kw)
            jax.block_until_ready(r.state)
            times[name].append((time.perf_counter() - t0) / steps)
            out[name] = r
    a = jax.device_get(out["one_device"].state)
    b = jax.device_get(out["two_devices"].state)
    worst = 0.0
    exact = True
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind == "f":
            scale = max(float(np.max(np.abs(x))), 1e-300) if x.size else 1.0
            worst = max(worst, float(np.max(np.abs(x - y))) / scale if x.size else 0.0)
        else:
            exact &= bool(np.array_equal(x, y))
    agents = _agents(model) * replicates
    one_s, two_s = np.asarray(times["one_device"]), np.asarray(times["two_devices"])
    return {"cells": n_cells, "replicates": replicates, "agents": agents, "steps": steps, "devices": [str(d) for d in devs],
            "sharding": placed[0], "compile_s": compile_s,
            "one_device_s_per_step": spread(one_s), "two_devices_s_per_step": spread(two_s),
            "speedup": spread(one_s / two_s), "two_devices_agent_updates_per_s": spread(agents / two_s),
            "max_rel_diff": worst, "discrete_fields_equal": exact}


def section_sharding(shapes, steps: int, repeats: int) -> list[dict]:
    rows = []
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SHARD_FLAG).strip()
    env["JAX_PLATFORMS"] = "cpu"
    for n_cells, reps in shapes:
        out = subprocess.run([sys.executable, str(HERE / "run_bench.py"), "--shard-worker", str(n_cells), str(reps),
                              str(steps), str(repeats)], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            rows.append({"cells": n_cells, "replicates": reps, "error": out.stderr[-500:]})
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        if "error" in row:
            print(f"  sharding: {row['error']}")
            continue
        print(f"  sharding {n_cells} cells x {reps} replicates: one device {fmt_ms(row['one_device_s_per_step'])} ms/step, "
              f"two devices {fmt_ms(row['two_devices_s_per_step'])} ms/step, speed-up {fmt_ratio(row['speedup'])}, "
              f"max rel. diff {row['max_rel_diff']:.1e}, discrete fields equal: {row['discrete_fields_equal']}")
    return rows


# ----------------------------------------------------------------------------- tables
IMPLEMENTATIONS = {
    "jax": "JAX engine (`engine.run`, float64)",
    "numpy_threefry": "numpy step, the engine's Threefry stream (validated)",
    "numpy_pcg64": "numpy step, PCG64 draws",
    "mesa_no_dc": "Mesa reference, no DataCollector (`collect_every=0`)",
    "mesa_dc": "Mesa reference, DataCollector every step (`collect_every=1`)",
}


def baseline_table(rows) -> list[str]:
    """The comparison table (markdown lines): JAX vs numpy vs Mesa without / with a DataCollector,
    one line per size and implementation, median (min-max) over the interleaved blocks."""
    lines = ["| cells | agents | implementation | ms/step | agent-updates/s | JAX speed-up | CPU ms/step (all threads) |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        for k, label in IMPLEMENTATIONS.items():
            a = r[k + "_agent_updates_per_s"]
            digits = 3 if k == "jax" else (2 if k.startswith("numpy") else 1)
            sp = "1" if k == "jax" else fmt_ratio(r["jax_speedup_vs_" + k])
            lines.append(f"| {r['cells']:,} | {r['agents']:,} | {label} | {fmt_ms(r[k + '_s_per_step'], digits)} | "
                         f"{a['median']:.3g} ({a['min']:.3g}-{a['max']:.3g}) | {sp} | "
                         f"{fmt_ms(r[k + '_cpu_s_per_step'], digits) if k + '_cpu_s_per_step' in r else 'n/a'} |")
    return lines


def hlo_table(rows) -> list[str]:
    lines = ["| cells | dtype | bytes/agent/step, XLA cost analysis | bytes/agent/step, HLO kernels | kernels/step | "
             "state read + written once, bytes/agent | transcendentals/cell/step | Threefry hashes/cell/step |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['cells']:,} | {r['dtype']} | {r['xla_bytes_accessed_per_agent']:.0f} | "
                     f"{r['hlo_kernel_bytes_per_agent']:.0f} | {r['kernels_per_step']:.0f} | "
                     f"{r['state_read_write_once_per_agent']:.0f} | {r['transcendentals_per_cell']:.0f} | "
                     f"{r['threefry_hashes_per_cell']:.0f} |")
    return lines


def roofline(hlo_rows, bandwidth: dict, scaling: list, throughputs: dict | None = None) -> list[dict]:
    """Achieved fraction of the copy bandwidth at each scaling size: agent-updates/s x bytes per agent
    (XLA cost analysis, same dtype, largest size counted) / numpy copy bandwidth (median, and the range
    from the extremes of both); with ``throughputs`` also the time per agent-update that the step's
    transcendentals and Threefry hashes alone take at the measured rates (floors, in ns)."""
    out = []
    bw = bandwidth["numpy_copy_bytes_per_s"]
    for s in scaling:
        hr = [h for h in hlo_rows if h["dtype"] == s["dtype"]]
        if not hr:
            continue
        b = max(hr, key=lambda h: h["cells"])["xla_bytes_accessed_per_agent"]
        aus = s.get("agent_updates_per_s_spread") or {"median": s["agent_updates_per_s"], "min": s["agent_updates_per_s"],
                                                      "max": s["agent_updates_per_s"]}
        h = max(hr, key=lambda h: h["cells"])
        row = {"agents": s["agents"], "dtype": s["dtype"], "vector_width": s.get("vector_width", 256), "bytes_per_agent": b,
               "bytes_per_s": aus["median"] * b,
               "fraction": aus["median"] * b / bw["median"],
               "fraction_low": aus["min"] * b / bw["max"], "fraction_high": aus["max"] * b / bw["min"],
               "ns_per_agent_update": 1e9 / aus["median"], "copy_floor_ns": 1e9 * b / bw["median"]}
        if throughputs:
            per_agent = h["agents"] / h["cells"]
            row["transcendental_floor_ns"] = 1e9 * h["transcendentals_per_cell"] / per_agent / throughputs["transcendentals_per_s"]["median"]
            row["hash_floor_ns"] = 1e9 * h["threefry_hashes_per_cell"] / per_agent / throughputs["threefry_hashes_per_s"]["median"]
        out.append(row)
    return out


def sharding_lines(rows) -> list[str]:
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"Two forced host devices, {r['cells']} cells x {r['replicates']} replicates: failed ({r['error'][:200]!r}).")
            continue
        lines.append(f"Two forced host devices (`{SHARD_FLAG}`, `NamedSharding` over the replicate axis), "
                     f"{r['cells']:,} cells x {r['replicates']} replicates: one device {fmt_ms(r['one_device_s_per_step'])} ms/step, "
                     f"two {fmt_ms(r['two_devices_s_per_step'])} ms/step, speed-up {fmt_ratio(r['speedup'])}; final states "
                     f"agree to {r['max_rel_diff']:.1e} relative (discrete fields equal: {r['discrete_fields_equal']}).")
    return lines
