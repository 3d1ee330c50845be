"""Benchmark (not a test): the edge-list loader, ``sim.topology.load_graph_file``, against file size.

    python bench/bench_edgelist.py                      # 1e4, 1e5, 1e6 lines, 1e7 if it fits in --budget-s
    python bench/bench_edgelist.py --sizes 1e4,1e5 --repeats 3

Each size is a whitespace edge list of random junctions between ``lines / 5`` cells (at most
``MAX_FILE_NODES``), one ``u v`` pair per line, written to a temporary file and loaded through the
whole path a run takes (read, decode, parse, build the networkx graph, drop self-loops, relabel
integer labels). It prints lines, cells, junctions, file size, seconds and microseconds per line;
a linear loader has a flat us/line column up to the memory hierarchy (the quadratic one before
issue 16 took 109 s for 40k lines, ~2.7 ms per line, and grew in proportion to the file). The
``dict us/line`` column is a yardstick for the machine: a bare Python dict-of-dicts adjacency built
from the same pairs (what any networkx graph is). Both grow by a similar factor once the graph no
longer fits in the CPU caches (hundreds of MB at 1e6 lines, GBs at 1e7), and on a shared machine
with the load of others' jobs.

A file of 1e7 lines is larger than ``MAX_FILE_BYTES`` (64 MiB): for sizes past that cap the cap
is raised for the measurement (the row says so), since what is measured is the loader's cost
per line, not the cap. A size is skipped when the last two sizes predict more than
``--budget-s`` seconds for it (the last time per line, times its growth from the size before).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim import topology  # noqa: E402


def write_edgelist(path: Path, lines: int, seed: int = 0) -> tuple[int, int]:
    """``lines`` random ``u v`` lines (u != v) over ``lines / 5`` cells; returns (cells, bytes)."""
    n = int(min(max(2, lines // 5), topology.MAX_FILE_NODES))
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        step = 1_000_000
        for start in range(0, lines, step):
            m = min(step, lines - start)
            u = rng.integers(0, n, m)
            v = (u + rng.integers(1, n, m)) % n  # never u: no self-loops
            fh.write("\n".join(f"{a} {b}" for a, b in zip(u.tolist(), v.tolist())))
            fh.write("\n")
    return n, path.stat().st_size


def time_load(path: Path, repeats: int) -> tuple[float, object]:
    best, g = float("inf"), None
    for _ in range(repeats):
        g = None
        gc.collect()
        t0 = time.perf_counter()
        g = topology.load_graph_file(str(path), "edgelist")
        best = min(best, time.perf_counter() - t0)
    return best, g


def dict_baseline(path: Path) -> float:
    """Seconds to build a bare dict-of-dicts adjacency from the file's pairs (ints, in memory)."""
    pairs = [tuple(map(int, line.split())) for line in path.read_text().splitlines()]
    gc.collect()
    t0 = time.perf_counter()
    adj: dict = {}
    for a, b in pairs:
        d: dict = {}
        adj.setdefault(a, {})[b] = d
        adj.setdefault(b, {})[a] = d
    seconds = time.perf_counter() - t0
    del adj, pairs
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="comma-separated numbers of lines")
    ap.add_argument("--repeats", type=int, default=1, help="loads per size (best is reported)")
    ap.add_argument("--budget-s", type=float, default=60.0, help="skip a size predicted to take longer")
    ap.add_argument("--no-baseline", action="store_true", help="skip the dict-of-dicts yardstick")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    print(f"{'lines':>10} {'cells':>9} {'junctions':>10} {'MB':>7} {'seconds':>9} {'us/line':>8} "
          f"{'dict us/line':>12}  note")
    per_line, growth = None, 1.0
    with tempfile.TemporaryDirectory() as tmp:
        for lines in sizes:
            if per_line is not None and per_line * growth * lines > args.budget_s:
                print(f"{lines:>10} {'':>9} {'':>10} {'':>7} {'skipped':>9} {'':>8} {'':>12}  "
                      f"predicted {per_line * growth * lines:.0f} s > --budget-s {args.budget_s:g}")
                continue
            path = Path(tmp) / f"edges-{lines}.txt"
            cells, size = write_edgelist(path, lines)
            note, cap = "", topology.MAX_FILE_BYTES
            if size > cap:
                topology.MAX_FILE_BYTES = size
                note = f"MAX_FILE_BYTES raised from {cap} for this size"
            try:
                seconds, g = time_load(path, args.repeats)
            finally:
                topology.MAX_FILE_BYTES = cap
            if per_line is not None:
                growth = max(1.0, (seconds / lines) / per_line)
            per_line = seconds / lines
            nodes, edges = g.number_of_nodes(), g.number_of_edges()
            del g
            base = "" if args.no_baseline else f"{dict_baseline(path) / lines * 1e6:.2f}"
            print(f"{lines:>10} {nodes:>9} {edges:>10} {size / 1e6:>7.1f} "
                  f"{seconds:>9.3f} {per_line * 1e6:>8.2f} {base:>12}  {note}", flush=True)
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
