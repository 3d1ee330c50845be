"""The core's contract, written once and checked for every built-in substrate (biology, LLM
serving, generic): the engine reproduces the plain-Python reference, a sweep of parameter values
reuses one executable, a bad value that exists only between two records is caught by the per-step
check, and ``python -m sim substrate=<name>`` writes a complete run folder through the one run path.
(The guard's naming, kill-and-resume, determinism and replicate k alone = in a batch, for every
substrate too: tests/test_reliability.py; invariants and conservation laws over random accepted
configurations: tests/test_properties.py.)

Each substrate contributes only a small config and a transient fault (:data:`CASES`, :func:`_transient`);
a substrate added to ``sim.substrates.BUILTIN`` without a case fails :func:`test_every_builtin_substrate_has_a_case`.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import sim.api
from _support import TISSUE, run_child, with_fault
from sim import substrates
from sim.core import engine
from sim.errors import NumericalError
from sim.substrates.llm.build import compose
from sim.pytree import replace

RUN = ["replicates=2", "steps=60", "record_every=10", "chunk_records=2", "figures=false"]


CASES = {  # a small stochastic run of each substrate
    "bio": {
        "over": [TISSUE, "substrate=bio", "topology=ring", "topology.n_cells=4", "+params.hazard0=0.05", "+params.birth_rate=0.5"],
    },
    "llm": {
        "over": [TISSUE, "substrate=llm", "topology=ring", "topology.n_cells=3", "substrate.chain_slots=8",
                 "substrate.queue_slots=16", "substrate.max_batch=6", "substrate.arrivals.rate_per_s=20",
                 "substrate.tools.p_per_token=0.01"],
    },
    "generic": {
        "over": [TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4"],
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
