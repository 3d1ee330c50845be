"""The core's contract, written once and checked for every built-in substrate (biology, LLM
serving, generic): the engine reproduces the plain-Python reference, the guard names a failure by
step, replicate, compartment, quantity and process, kill-and-resume is bit-identical, replicate k
is the same alone and in a batch, a sweep of parameter values reuses one executable, and
``python -m sim substrate=<name>`` writes a complete run folder through the one run path.

Each substrate contributes only a small config and a fault to inject (:data:`CASES`); a substrate
added to ``sim.substrates.BUILTIN`` without a case here fails :func:`test_every_builtin_substrate_has_a_case`.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import sim.api
from _support import TISSUE, Stop, assert_same_results, run_child, stop_after_checkpoint, with_fault
from sim import substrates
from sim.app import EXIT_NUMERICAL, execute, resume_run
from sim.core import engine
from sim.errors import NumericalError
from sim.substrates.llm.build import compose
from sim.pytree import replace

RUN = ["replicates=2", "steps=60", "record_every=10", "chunk_records=2", "figures=false"]


def _nan_pool(s):  # biology: ATP of cell 1
    return replace(s, cells=replace(s.cells, pools=s.cells.pools.at[1, 1].set(jnp.nan)))


def _nan_kv(s):  # LLM: free KV cache of instance 1
    return replace(s, cells=replace(s.cells, kv_free=s.cells.kv_free.at[1].set(jnp.nan)))


def _negative_charged(s):  # generic: the charged currency of cell 1
    return replace(s, cells=replace(s.cells, a=s.cells.a.at[1].set(-1.0)))


CASES = {
    "bio": {
        "over": [TISSUE, "substrate=bio", "topology=ring", "topology.n_cells=4", "+params.hazard0=0.05", "+params.birth_rate=0.5"],
        "fault": ("transport", _nan_pool, "atp"),
    },
    "llm": {
        "over": [TISSUE, "substrate=llm", "topology=ring", "topology.n_cells=3", "substrate.chain_slots=8",
                 "substrate.queue_slots=16", "substrate.max_batch=6", "substrate.arrivals.rate_per_s=20",
                 "substrate.tools.p_per_token=0.01"],
        "fault": ("decode", _nan_kv, "kv_free"),
    },
    "generic": {
        "over": [TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4"],
        "fault": ("transport", _negative_charged, "a"),
    },
}
NAMES = sorted(CASES)


def cfg_of(name, *extra):
    return compose(CASES[name]["over"] + RUN + list(extra))


def test_every_builtin_substrate_has_a_case():
    assert sorted(substrates.BUILTIN) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_engine_reproduces_the_reference(name):
    a = sim.api.run(cfg_of(name, "replicates=1"))
    b = sim.api.run(cfg_of(name, "replicates=1", "backend=mesa"))
    assert a.result.error is None and b.result.error is None
    for var in a.dataset.data_vars:
        x, y = a.dataset[var].values, b.dataset[var].values
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=f"{name}: {var}")
        else:
            assert np.array_equal(x, y), f"{name}: {var}"


@pytest.mark.parametrize("name", NAMES)
def test_guard_names_step_replicate_compartment_quantity_process(name):
    process, change, quantity = CASES[name]["fault"]
    sub = substrates.get(name)
    with substrates.override(with_fault(name, process, 33, change)):
        out = sim.api.run(cfg_of(name))
    err = out.result.error
    assert isinstance(err, NumericalError), out.summary
    assert (err.step, err.cell, err.quantity, err.process, err.replicate) == (33, 1, quantity, process, 0)
    assert err.compartment == sub.compartment and f"quantity {quantity}" in str(err)
    assert out.summary["failure_quantity"] == quantity and out.summary["status"] == "failed"
    assert out.dataset.sizes["time"] == 2  # the chunk before the bad one (steps 0..19) is kept


@pytest.mark.parametrize("name", NAMES)
def test_kill_and_resume_is_bit_identical(name, monkeypatch, tmp_path):
    cfg = cfg_of(name, "checkpoint_every=1")
    assert execute(cfg, tmp_path / "whole", quiet=True) == 0
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, 1)
        with pytest.raises(Stop):
            execute(cfg, tmp_path / "killed", quiet=True)
    assert resume_run(tmp_path / "killed", quiet=True) == 0
    assert_same_results(tmp_path / "whole", tmp_path / "killed")


@pytest.mark.parametrize("name", NAMES)
def test_replicate_alone_is_the_replicate_of_a_batch(name):
    sub = substrates.get(name)
    _, _, built = sim.api.prepare(cfg_of(name))
    kw = dict(seed=5, steps=40, record_every=10)
    batch = engine.run(sub, built.state, built.params, replicates=3, **kw)
    alone = engine.run(sub, built.state, built.params, replicates=1, first_replicate=2, **kw)
    for k in sub.record_fields:
        np.testing.assert_allclose(alone.records[k][0], batch.records[k][2], rtol=1e-12, atol=1e-14, err_msg=k)
    assert not all(np.array_equal(batch.records[k][0], batch.records[k][2]) for k in sub.record_fields)


@pytest.mark.parametrize("name", NAMES)
def test_a_sweep_of_the_demand_knob_reuses_one_executable(name):
    sub = substrates.get(name)
    _, _, built = sim.api.prepare(cfg_of(name))
    kw = dict(seed=0, steps=40, record_every=10, replicates=2)
    base = engine.run(sub, built.state, built.params, **kw)
    before = engine.CACHE.compiles
    knob = np.asarray(getattr(built.params, sub.demand_knob))
    more = replace(built.params, **{sub.demand_knob: np.asarray(knob * 2.0, knob.dtype)})
    stepped = engine.run(sub, built.state, more, **kw)
    assert engine.CACHE.compiles == before
    assert any(not np.allclose(base.records[k], stepped.records[k]) for k in sub.record_fields)


@pytest.mark.parametrize("name", NAMES)
def test_command_line_writes_a_complete_run_folder(name, tmp_path):
    out = tmp_path / "run"
    res = run_child(["-m", "sim", *CASES[name]["over"], *RUN[:-1], f"hydra.run.dir={out}"])
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["substrate"] == name
    ds = xr.load_dataset(out / "results.nc")
    assert {"replicate", "time", "cell"} <= set(ds.dims) and ds.sizes["time"] == 6
    assert all("units" in ds[v].attrs for v in ds.data_vars)
    assert (out / ".hydra" / "config.yaml").is_file() and list((out / "figures").glob("*.png"))
    assert f"run: {out}" in res.stdout


def test_numerical_failure_exits_3_from_the_command_line_for_any_substrate(tmp_path):
    """(One substrate from the command line is enough here: the exit path does not depend on it.)"""
    from _support import fault_child_script

    script = fault_child_script(tmp_path / "child.py", "llm", "decode", 33,
                                "def change(s):\n    return replace(s, cells=replace(s.cells, "
                                "kv_free=s.cells.kv_free.at[1].set(jnp.nan)))\n")
    out = tmp_path / "run"
    res = run_child([str(script), *CASES["llm"]["over"], *RUN, f"hydra.run.dir={out}"])
    assert res.returncode == EXIT_NUMERICAL, res.stderr
    assert "step 33, replicate 0, cell 1 (model instance), quantity kv_free, process decode" in res.stderr


def _transient(name):
    """(the substrate's last process, a fault it leaves at step 34, the repair before step 35): the bad
    value exists only between two steps, and no record (every 10 steps) ever shows it."""
    from sim.substrates.llm.spec import kv_occupied

    return {
        "bio": ("cell_stress", lambda s: replace(s, cells=replace(s.cells, pools=s.cells.pools.at[1, 1].set(-0.5))),
                lambda s: replace(s, cells=replace(s.cells, pools=jnp.abs(s.cells.pools)))),
        "llm": ("account", lambda s: replace(s, cells=replace(s.cells, kv_free=s.cells.kv_free.at[1].add(-1e6))),
                lambda s: replace(s, cells=replace(s.cells, kv_free=s.cells.kv_capacity - kv_occupied(s)))),
        "generic": (None, lambda s: replace(s, cells=replace(s.cells, a=s.cells.a.at[1].set(-1.0))),
                    lambda s: replace(s, cells=replace(s.cells, a=jnp.abs(s.cells.a)))),
    }[name]


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_value_between_records_is_caught_by_the_per_step_check(name):
    """A value that is bad only between two steps (repaired before the next one, as later dynamics
    might smooth it) stops the run and is named when the substrate has a per-step check
    (``Substrate.step_check``), and goes unseen without it (so the check is what catches it)."""
    import dataclasses

    sub = substrates.get(name)
    last, fault, repair = _transient(name)
    last = last or sub.processes[-1][0]
    faulty = with_fault(name, last, 34, fault)
    procs = list(faulty.processes)
    first_name, first_fn = procs[0]

    def repaired_first(state, params, key=None):
        fixed = repair(state)
        state = jax.tree_util.tree_map(lambda x, y: jnp.where(state.step == 35, x, y), fixed, state)
        return first_fn(state, params, key)

    procs[0] = (first_name, repaired_first)
    faulty = dataclasses.replace(faulty, processes=tuple(procs))
    with substrates.override(faulty):
        out = sim.api.run(cfg_of(name))
    err = out.result.error
    assert isinstance(err, NumericalError), out.summary
    assert (err.step, err.cell, err.process) == (34, 1, last)
    blind = dataclasses.replace(faulty, step_check=None)
    with substrates.override(blind):
        assert sim.api.run(cfg_of(name)).result.error is None  # the records alone never see it
