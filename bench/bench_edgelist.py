"""Benchmark (not a test): loading an edge list (``topology=file``) against its size.

    python bench/bench_edgelist.py                           # 1e4 .. 1e7 lines, ints and weighted, 3 repeats
    python bench/bench_edgelist.py --sizes 1e4,1e5 --kinds ints --repeats 5
    python bench/bench_edgelist.py --sizes 1e4,1e5,1e6 --loader line   # the line-by-line reference parser

Each size is a whitespace edge list of random junctions between ``lines / 5`` cells (at most
``MAX_FILE_NODES``), written to a temporary file, one line per junction; ``--kinds`` picks the
lines: ``ints`` (``u v``), ``weighted`` (``u v 0.123...``, a float written by ``repr``), ``strings``
(``c12 c7``: labels that are not integers). What is timed is the whole path a run takes from the
file to the engine's arrays: ``build_graph`` (read, check, number the cells, drop self-loops and
repeats, check the caps), ``edge_arrays`` and ``file_inputs`` (the weights), as a substrate's
``build`` calls them.

Each size is loaded ``--repeats`` times in a fresh process (so that its peak RSS is its own): the
table gives the median seconds and microseconds per line with the min-max over the repeats, and
the process's peak RSS (``ru_maxrss``) with, for scale, its RSS after the imports. A flat us/line
column from 1e4 to 1e7 lines is a linear loader (issue 16; the loader before it took ~20 us per
line, ``--loader line`` times that one, which stays the reference for files the fast path hands
back; see sim/graph_files.py).

Files past ``MAX_FILE_BYTES`` (64 MiB; 1e7 lines of these labels is ~130 MB) are measured with the
cap raised in the child process (the row says so): what is measured is the loader, not the cap.
A size is skipped when the previous size predicts more than ``--budget-s`` seconds for its repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("ints", "weighted", "strings")


def write_edgelist(path: Path, lines: int, kind: str, max_nodes: int, seed: int = 0) -> tuple[int, int]:
    """``lines`` random lines (u != v) over ``lines / 5`` cells; returns (cells drawn from, bytes)."""
    n = int(min(max(2, lines // 5), max_nodes))
    rng = np.random.default_rng(seed)
    prefix = "c" if kind == "strings" else ""
    with open(path, "w") as fh:
        step = 1_000_000
        for start in range(0, lines, step):
            m = min(step, lines - start)
            u = rng.integers(0, n, m)
            v = (u + rng.integers(1, n, m)) % n  # never u: no self-loops
            if kind == "weighted":
                w = rng.random(m)
                fh.write("\n".join(f"{a} {b} {c!r}" for a, b, c in zip(u.tolist(), v.tolist(), w.tolist())))
            else:
                fh.write("\n".join(f"{prefix}{a} {prefix}{b}" for a, b in zip(u.tolist(), v.tolist())))
            fh.write("\n")
    return n, path.stat().st_size


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss keeps the parent's peak across fork + exec on Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (kB on Linux)


def child(path: str, repeats: int, loader: str, max_bytes: int) -> dict:
    """Load ``path`` ``repeats`` times as a run does; seconds per load, peak RSS."""
    import gc
    import warnings

    import pandas  # noqa: F401 - imported by the first load of a process (~0.3 s): not the loader's time per line
    import scipy.sparse.csgraph  # noqa: F401

    from sim import graph_files, topology

    topology.MAX_FILE_BYTES = max(topology.MAX_FILE_BYTES, max_bytes)
    if loader == "line":
        graph_files.parse = lambda *a, **k: None  # every file read by the line-by-line parser
    rss_imports = peak_rss_mb()
    seconds, cpu, out = [], [], {}
    for _ in range(repeats):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        g = topology.build_graph({"kind": "file", "path": path, "format": "edgelist"})
        src, dst = topology.edge_arrays(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", topology.GraphFileWarning)
            inputs = topology.file_inputs(g, src, dst, substrate="generic", conductance_key="k", demand=True)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        out = {"nodes": g.number_of_nodes(), "edges": len(src), "weighted": bool((inputs.weight != 1).any()),
               "fast": isinstance(g, graph_files.FileGraph)}
        del g, src, dst, inputs
    return {**out, "seconds": seconds, "cpu_seconds": cpu, "rss_imports_mb": rss_imports, "peak_rss_mb": peak_rss_mb()}


def measure(path: Path, repeats: int, loader: str, size: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    res = subprocess.run([sys.executable, __file__, "--child", str(path), "--repeats", str(repeats), "--loader", loader,
                          "--max-bytes", str(size)], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"child failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="comma-separated numbers of lines")
    ap.add_argument("--kinds", default="ints,weighted", help=f"comma-separated, of {', '.join(KINDS)}")
    ap.add_argument("--repeats", type=int, default=3, help="loads per size, each timed")
    ap.add_argument("--loader", choices=("fast", "line"), default="fast",
                    help="fast: as a run loads (sim.graph_files); line: the line-by-line reference parser")
    ap.add_argument("--budget-s", type=float, default=300.0, help="skip a size predicted to take longer")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--max-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.loader, args.max_bytes)))
        return 0
    from sim import topology

    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    kinds = [k for k in args.kinds.split(",") if k.strip()]
    for kind in kinds:
        if kind not in KINDS:
            ap.error(f"--kinds: {kind!r} is not one of {', '.join(KINDS)}")
    print(f"loader: {args.loader}; {args.repeats} repeats per size, each size in a fresh process; median (min-max); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| lines | kind | cells | junctions | file MB | seconds | us/line | CPU us/line | peak RSS MB (after imports) "
          "| note |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            per_line = None
            for lines in sizes:
                if per_line is not None and per_line * lines * args.repeats > args.budget_s:
                    predicted = per_line * lines * args.repeats
                    print(f"| {lines:,} | {kind} | | | | skipped | | | | predicted {predicted:.0f} s "
                          f"> --budget-s {args.budget_s:g} |", flush=True)
                    continue
                path = Path(tmp) / f"edges-{kind}-{lines}.txt"
                write_edgelist(path, lines, kind, topology.MAX_FILE_NODES)
                size = path.stat().st_size
                note = f"MAX_FILE_BYTES raised from {topology.MAX_FILE_BYTES} for this size" \
                    if size > topology.MAX_FILE_BYTES else ""
                r = measure(path, args.repeats, args.loader, size)
                os.unlink(path)
                s = r["seconds"]
                med = statistics.median(s)
                per_line = med / lines
                if args.loader == "fast" and not r["fast"]:
                    note = (note + "; " if note else "") + "read by the line-by-line parser"
                us = [x / lines * 1e6 for x in s]
                cpu = [x / lines * 1e6 for x in r["cpu_seconds"]]
                print(f"| {lines:,} | {kind} | {r['nodes']:,} | {r['edges']:,} | {size / 1e6:.1f} | {med:.3f} "
                      f"({min(s):.3f}-{max(s):.3f}) | {statistics.median(us):.2f} ({min(us):.2f}-{max(us):.2f}) | "
                      f"{statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) | "
                      f"{r['peak_rss_mb']:.0f} ({r['rss_imports_mb']:.0f}) | {note} |", flush=True)
                rows.append({"lines": lines, "kind": kind, "bytes": size, "loader": args.loader, **r})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
