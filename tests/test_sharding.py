"""Rows of a run split over two JAX devices (``devices=2``, :mod:`sim.core.sharding`) give the
one-device results.

JAX reads ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` once, when its CPU backend starts,
so every check runs in a child process started with it (two children, run at the same time):

* ``engine``: default flags (FMA allowed, XLA's reductions), the generic substrate, 3 parameter
  points x 2 replicates as one batch of 6 rows (the study's layout: points and replicates on one
  axis, batched parameters), on one device and split 3 + 3 over two. Records and final states are
  compared to 1e-12 relative in float64, not bit for bit: each device runs a batch of 3 rows
  instead of 6, and XLA's CPU code may round a smaller batch differently (summation order, FMA
  contraction), as for replicate k alone vs in a batch (:mod:`sim.determinism`). The child reports
  whether they happened to be bitwise equal. :func:`sim.core.study.evaluate` with ``devices=2``
  reuses the sharded executable (no compile) and gives the same outcomes; a numerical failure in
  a row on the second device (a NaN parameter: the same programs) is named by the guard as on one
  device (step, row, cell, quantity, process).
* ``cli``: ``python -m sim`` (its entry point, twice in one process) with
  ``deterministic_reductions=true`` (fixed-order sums, no FMA) and ``devices=1`` / ``devices=2``:
  ``results.nc`` and ``summary.json`` bit for bit identical, which is what that setting promises.
  ``devices=3`` (more than the process has) and ``devices=abc`` are refused with exit code 2
  naming ``devices``.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from _support import ROOT, TISSUE, assert_same_results, child_env, run_child, run_entries

TWO_DEVICES = "--xla_force_host_platform_device_count=2"
SMALL = [TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4", "steps=40", "record_every=10",
         "chunk_records=2", "figures=false", "compile_cache=null"]

ENGINE_CHILD = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from hydra import compose, initialize_config_dir
from sim.api import prepare
from sim.core import engine, study
from sim.core.config import CONF_DIR
from sim.rng import replicate_keys

with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose("config", overrides=json.loads(sys.argv[1]))
cfg, sub, built = prepare(cfg)
names, x, R, points = ["demand_scale"], np.array([[0.8], [1.0], [1.25]]), 2, 3
kw = dict(seed=built.seed, steps=40, record_every=10, replicates=points * R, batched_params=True,
          keys=jnp.tile(replicate_keys(built.seed, R), (points, 1)), chunk_records=100)
params = study.stack_params(sub, built.params, points * R, {"demand_scale": np.repeat(x[:, 0], R)})
out = {"devices": [str(d) for d in jax.devices()]}
runs = {d: engine.run(sub, built.state, params, devices=d, **kw) for d in (1, 2)}
two = runs[2]
out["placement"] = str(two.state.step.sharding)
worst, bitwise = 0.0, True
pairs = [(runs[1].records[k], two.records[k]) for k in sub.record_fields]
pairs += list(zip(jax.tree_util.tree_leaves(jax.device_get(runs[1].state)),
                  jax.tree_util.tree_leaves(jax.device_get(two.state))))
for a, b in pairs:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    bitwise &= bool(np.array_equal(a, b))
    if np.issubdtype(a.dtype, np.floating):
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300), initial=0.0)))
    else:
        assert np.array_equal(a, b)
out.update(worst_relative=worst, bitwise=bitwise, errors=[str(r.error) for r in runs.values() if r.error])

compiles = engine.CACHE.compiles
res = {d: study.evaluate(sub, built, names, x, ["mean_last:a", "final:output"], steps=40, record_every=10,
                         replicates_per_point=R, chunk_points=points, devices=d) for d in (1, 2)}
out["study_compiles"] = engine.CACHE.compiles - compiles
out["study"] = {d: {o: v.tolist() for o, v in r.outcomes.items()} for d, r in res.items()}

# a failure in row 4 (point 2, replicate 0; the second device holds rows 3..5): the same programs, a NaN parameter
bad = study.stack_params(sub, built.params, points * R, {"demand_scale": np.repeat([0.8, 1.0, np.nan], R)})
errs = [engine.run(sub, built.state, bad, devices=d, **kw).error for d in (1, 2)]
out["guard"] = [[e.step, e.replicate, e.cell, e.quantity, e.process] if e is not None else None for e in errs]
print(json.dumps(out))
"""



@pytest.fixture(scope="module")
def children(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharding")
    (tmp / "engine.py").write_text(ENGINE_CHILD)
    cli = {name: [*SMALL, "replicates=4", "deterministic_reductions=true", f"devices={value}",
                  f"hydra.run.dir={tmp / name}"]
           for name, value in (("one", 1), ("two", 2), ("three", 3), ("abc", "abc"))}
    env = child_env(XLA_FLAGS=TWO_DEVICES)
    with ThreadPoolExecutor(max_workers=2) as pool:
        engine_f = pool.submit(run_child, [str(tmp / "engine.py"), json.dumps(SMALL)], 300, ROOT, env)
        cli_f = pool.submit(run_entries, cli, tmp, 300, env, True)
        res = engine_f.result()
        assert res.returncode == 0, res.stderr[-3000:]
        out = {"engine": json.loads(res.stdout.strip().splitlines()[-1]), "cli": cli_f.result()}
    out["tmp"] = tmp
    return out


def test_the_child_has_two_devices_and_the_rows_are_split(children):
    eng = children["engine"]
    assert len(eng["devices"]) == 2, eng["devices"]
    assert "NamedSharding" in eng["placement"] and "'rows': 2" in eng["placement"], eng["placement"]


def test_two_devices_equal_one_device_to_round_off(children):
    eng = children["engine"]
    assert eng["errors"] == []
    assert eng["worst_relative"] <= 1e-12, eng  # float64; bitwise only with deterministic_reductions
    print(f"two devices vs one (default reductions): bitwise {eng['bitwise']}, worst relative {eng['worst_relative']:.2e}")


def test_a_study_split_over_two_devices_reuses_its_executable_and_agrees(children):
    eng = children["engine"]
    assert eng["study_compiles"] == 0  # the same programs as the runs above, one and two devices
    one, two = eng["study"]["1"], eng["study"]["2"]
    for outcome in one:
        assert two[outcome] == pytest.approx(one[outcome], rel=1e-12, abs=1e-15), outcome


def test_the_guard_names_a_failure_on_the_second_device_as_on_one(children):
    one, two = children["engine"]["guard"]
    assert two is not None and two[1] == 4, two  # row 4: point 2, replicate 0
    assert two == one


def test_the_command_line_splits_the_run_and_is_bitwise_identical_with_deterministic_reductions(children):
    cli, tmp = children["cli"], children["tmp"]
    assert cli["one"]["code"] == 0, cli["one"]["stderr"][-2000:]
    assert cli["two"]["code"] == 0, cli["two"]["stderr"][-2000:]
    assert any("'rows', (0, 1)" in layout for layout in cli["layouts"]), cli["layouts"]  # devices=2 was used
    assert_same_results(tmp / "one", tmp / "two")


@pytest.mark.parametrize("case", ["three", "abc"])
def test_devices_beyond_the_process_or_not_a_number_is_refused(children, case):
    res = children["cli"][case]
    lines = [line for line in res["stderr"].splitlines() if line.strip()]
    assert res["code"] == 2, res
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: devices="), lines
