"""Benchmark (not a test): every entry of the bad-input catalogue through the real command line.

    python bench/bad_inputs.py                    # the catalogue of make test (one rule per key), ~300 entries
    python bench/bad_inputs.py --full             # every rule of every key and every kind, ~900 entries
    python bench/bad_inputs.py --match cascade --limit 20
    python bench/bad_inputs.py --full --jobs 2         # two children at a time (CPU time and memory are per child)
    python bench/bad_inputs.py --full --reuse bench/results/bad_inputs.json   # measure only what that file lacks

The catalogue (``tests/_support.bad_input_catalogue``) is generated from the shipped configs
(``conf/config.yaml`` and every ``conf/<group>/*.yaml``). Each entry runs as
``python -m sim ARGV hydra.run.dir=TMP/<n>`` in its own child process, one at a time or ``--jobs`` at a
time (wall times then include waiting for a core; CPU time and peak memory are each child's own) (issue 16: each
must be refused with exit code 2, one line naming its key, no traceback, before compiling anything,
under 5 s and 500 MB). Measured per entry, from ``os.wait4`` of that child: wall time, CPU time
(user + system: what the load of other jobs on a shared machine does not inflate) and peak
resident memory (``ru_maxrss``). "Compiled" counts the files the child wrote into its JAX
persistent compilation cache (``compile_cache: auto`` under a fresh, empty ``XDG_CACHE_HOME`` per
entry): an executable compiled before the refusal leaves one there.

Writes ``bench/results/bad_inputs.json`` (every entry: argv, key, rule, exit code, first stderr line,
wall s, CPU s, peak MB, compiled files, which checks failed) and prints a summary: counts, the
max / median / p95 of time and memory, every entry over the limits or not refused as promised.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _support import bad_input_catalogue, child_env  # noqa: E402

LIMIT_S, LIMIT_MB = 5.0, 500.0


def run_one(argv, run_dir: Path, cache_home: Path, timeout: float) -> dict:
    """One child ``python -m sim ARGV``: exit code, stderr, wall/CPU seconds, peak MB, cache files."""
    cache_home.mkdir(parents=True, exist_ok=True)
    env = child_env(XDG_CACHE_HOME=str(cache_home))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "sim", *argv, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                timed_out = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # (so Popen does not wait for it again)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    compiled = sum(1 for p in cache_home.rglob("*") if p.is_file())
    return {
        "code": proc.returncode, "timed_out": timed_out, "stderr": stderr, "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024.0, "compiled_files": compiled,
    }


def problems(entry, res: dict, run_dir: Path) -> list[str]:
    lines = [ln for ln in res["stderr"].splitlines() if ln.strip()]
    out = []
    if res["timed_out"]:
        out.append("timed out")
    if res["code"] != 2:
        out.append(f"exit {res['code']}")
    if "Traceback" in res["stderr"]:
        out.append("traceback")
    if len(lines) != 1:
        out.append(f"{len(lines)} lines")
    if not lines or not lines[0].startswith(f"error: invalid config: {entry.key}="):
        out.append("key not named")
    if res["compiled_files"]:
        out.append("compiled")
    if (run_dir / "results.nc").exists():
        out.append("results written")
    if res["wall_s"] > LIMIT_S:
        out.append(f"over {LIMIT_S:g} s")
    if res["peak_mb"] > LIMIT_MB:
        out.append(f"over {LIMIT_MB:g} MB")
    return out


def quantiles(values):
    values = sorted(values)
    if not values:
        return {}
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return {"max": values[-1], "median": statistics.median(values), "p95": p95, "min": values[0]}


def summarize(rows, planned: int, full: bool, wall: float) -> dict:
    def broken(r):
        return [p for p in r["problems"] if not p.startswith("over")]

    return {
        "entries": len(rows), "planned": planned, "full": full, "total_wall_s": round(wall, 1),
        "limits": {"wall_s": LIMIT_S, "peak_mb": LIMIT_MB},
        "wall_s": quantiles([r["wall_s"] for r in rows]), "cpu_s": quantiles([r["cpu_s"] for r in rows]),
        "peak_mb": quantiles([r["peak_mb"] for r in rows]),
        "refused_as_promised": sum(1 for r in rows if not broken(r)),
        "over_time": [r["id"] for r in rows if r["wall_s"] > LIMIT_S],
        "over_cpu_time": [r["id"] for r in rows if r["cpu_s"] > LIMIT_S],
        "over_memory": [r["id"] for r in rows if r["peak_mb"] > LIMIT_MB],
        "not_refused_as_promised": {r["id"]: broken(r) for r in rows if broken(r)},
    }


def write(out: Path, summary: dict, rows: list) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".tmp-{out.name}")
    tmp_out.write_text(json.dumps({"summary": summary, "entries": rows}, indent=1))
    os.replace(tmp_out, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="every rule of every key and every kind")
    ap.add_argument("--match", default="", help="only entries whose id contains this text")
    ap.add_argument("--limit", type=int, default=0, help="at most this many entries (0: all)")
    ap.add_argument("--every", type=int, default=1, help="every n-th entry only (a spread sample of the catalogue)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a child is killed")
    ap.add_argument("--jobs", type=int, default=1, help="children run at the same time")
    ap.add_argument("--reuse", help="a results file: its entries (by id) are kept, not measured again")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bad_inputs.json"))
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="currency-sim-bad-inputs-"))
    edges = tmp / "edges.txt"
    edges.write_text("0 1\n1 2\n2 0\n")
    catalogue = [e for e in bad_input_catalogue(edges, full=args.full) if args.match in e.id]
    catalogue = catalogue[:: max(1, args.every)]
    if args.limit:
        catalogue = catalogue[: args.limit]
    rows = []
    if args.reuse:  # (read before --out, which may be the same file, is rewritten)
        ids = {e.id for e in catalogue}
        rows = [r for r in json.loads(Path(args.reuse).read_text())["entries"] if r["id"] in ids]
        kept = {r["id"] for r in rows}
        print(f"{len(rows)} entries kept from {args.reuse}")
        planned = len(catalogue)
        catalogue = [e for e in catalogue if e.id not in kept]
    else:
        planned = len(catalogue)
    t_start = time.perf_counter()
    out = Path(args.out)

    def measure(i):
        entry = catalogue[i]
        run_dir = tmp / "runs" / str(i)
        res = run_one(entry.argv, run_dir, tmp / "cache" / str(i), args.timeout)
        shutil.rmtree(tmp / "cache" / str(i), ignore_errors=True)
        return i, entry, res, problems(entry, res, run_dir)

    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for done, (i, entry, res, bad) in enumerate(pool.map(measure, range(len(catalogue))), start=1):
                first = next((ln for ln in res["stderr"].splitlines() if ln.strip()), "")
                rows.append({"id": entry.id, "argv": list(entry.argv), "key": entry.key, "rule": entry.rule,
                             "code": res["code"], "first_line": first[:300], "wall_s": round(res["wall_s"], 3),
                             "cpu_s": round(res["cpu_s"], 3), "peak_mb": round(res["peak_mb"], 1),
                             "compiled_files": res["compiled_files"], "problems": bad})
                print(f"[{len(rows)}/{planned}] {res['wall_s']:6.2f} s {res['cpu_s']:6.2f} cpu-s "
                      f"{res['peak_mb']:6.0f} MB "
                      f"exit {res['code']} {entry.id}" + (f"  <- {', '.join(bad)}" if bad else ""), flush=True)
                summary = summarize(rows, planned, args.full, time.perf_counter() - t_start)
                write(out, summary, rows)  # after every entry: a stopped benchmark keeps what it measured
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(rows, planned, args.full, time.perf_counter() - t_start)
    write(out, summary, rows)

    print()
    print(f"{summary['entries']} entries in {summary['total_wall_s']} s; refused as promised: "
          f"{summary['refused_as_promised']}")
    for what in ("wall_s", "cpu_s", "peak_mb"):
        q = summary[what]
        if q:
            print(f"  {what:8s} max {q['max']:.2f}  p95 {q['p95']:.2f}  median {q['median']:.2f}  min {q['min']:.2f}")
    print(f"  over {LIMIT_S:g} s: {len(summary['over_time'])} (CPU time over it: {len(summary['over_cpu_time'])}); "
          f"over {LIMIT_MB:g} MB: {len(summary['over_memory'])}")
    for name in summary["over_cpu_time"] + summary["over_memory"]:  # (wall time: inflated by other jobs' load)
        print(f"    {name}")
    for name, why in summary["not_refused_as_promised"].items():
        print(f"  not as promised: {name}: {', '.join(why)}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
