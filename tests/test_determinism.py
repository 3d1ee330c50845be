"""Determinism: replicate k is bit for bit the same alone or in a batch of 256 (issue 4).

Bitwise batch invariance needs fixed-order sums and no FMA contraction (``sim.determinism``),
and the no-FMA flag is read when the JAX backend starts, so the end-to-end test runs
``python -m sim ... deterministic_reductions=true`` in fresh processes, as a user would: one run
of 256 replicates, and the same seed's replicates 7 and 253-255 computed by separate runs
(``first_replicate``), as a cluster job array would split the ensemble.
"""

from __future__ import annotations

import json
import os
import platform
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from _support import child_env, run_child
import sim.api
from sim import determinism

# a small stochastic tissue: producers fail and are rebuilt and cells die, so the draws matter
TISSUE = ["experiment=tissue", "topology=ring", "topology.n_cells=4", "+params.hazard0=0.5", "+params.birth_rate=2.0",
          "seed=11", "steps=200", "record_every=10", "chunk_records=20", "figures=false"]


# LLM serving on three routed model instances, with tools, memory and agent loops in play
SERVING = ["experiment=serving", "topology=ring", "topology.n_cells=3", "steps=600", "record_every=20",
           "chunk_records=10", "figures=false", "seed=5", "substrate.arrivals.rate_per_s=3",
           "substrate.tools.p_per_token=0.01", "substrate.memory.threshold_tokens=2000",
           "substrate.agent.followup_prob=0.5", "substrate.agent.max_turns=3"]


def _cli(args, out: Path, base=TISSUE):
    # no inherited XLA_FLAGS: the run must set the no-FMA flag itself
    return run_child(["-m", "sim", *base, *args, f"hydra.run.dir={out}"], timeout=300, env=child_env(drop=("XLA_FLAGS",)))


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("determinism")
    jobs = {
        "batch": ["replicates=256", "deterministic_reductions=true"],
        "alone": ["replicates=1", "first_replicate=7", "deterministic_reductions=true"],
        "tail": ["replicates=3", "first_replicate=253", "deterministic_reductions=true"],
        "fast": ["replicates=256"],
        "serving_batch": ["replicates=64", "deterministic_reductions=true"],
        "serving_alone": ["replicates=1", "first_replicate=41", "deterministic_reductions=true"],
    }
    with ThreadPoolExecutor(2) as pool:
        procs = dict(zip(jobs, pool.map(
            lambda kv: _cli(kv[1], tmp / kv[0], SERVING if kv[0].startswith("serving") else TISSUE), jobs.items())))
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
    return {name: (xr.load_dataset(tmp / name / "results.nc"), json.loads((tmp / name / "summary.json").read_text()))
            for name in jobs}


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="no FMA switch off x86-64")
def test_replicate_alone_is_bitwise_the_replicate_in_a_batch(split_runs):
    batch, summary = split_runs["batch"]
    assert summary["bitwise_batch_invariant"] is True and summary["deterministic_reductions"] is True
    assert int(batch["failures"].isel(time=-1).sum()) > 0 and int(batch["births"].isel(time=-1).sum()) > 0
    for name, reps in (("alone", [7]), ("tail", [253, 254, 255])):
        ds, s = split_runs[name]
        assert s["bitwise_batch_invariant"] is True and s["first_replicate"] == reps[0]
        assert list(ds["replicate"].values) == reps
        for var in batch.data_vars:
            a, b = batch[var].sel(replicate=reps).values, ds[var].values
            assert a.dtype == b.dtype and np.array_equal(a, b), (name, var, np.max(np.abs(a - b)))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="no FMA switch off x86-64")
def test_serving_replicate_alone_is_bitwise_the_replicate_in_a_batch(split_runs):
    """The LLM engine too: replicate 41 of a serving ensemble, alone or among 64, bit for bit."""
    batch, summary = split_runs["serving_batch"]
    alone, s = split_runs["serving_alone"]
    assert summary["bitwise_batch_invariant"] is True and s["bitwise_batch_invariant"] is True
    assert list(alone["replicate"].values) == [41]
    assert float(batch["completed"].isel(time=-1).sum()) > 0 and float(batch["tool_calls"].isel(time=-1).sum()) > 0
    for var in batch.data_vars:
        a, b = batch[var].sel(replicate=[41]).values, alone[var].values
        assert a.dtype == b.dtype and np.array_equal(a, b), (var, np.max(np.abs(a - b)))


def test_fast_reductions_agree_with_the_deterministic_run_to_round_off(split_runs):
    """Off (the default), XLA's own reductions and FMA: the same events, pools equal to ~1e-13."""
    det, fast = split_runs["batch"][0], split_runs["fast"][0]
    assert split_runs["fast"][1]["bitwise_batch_invariant"] is False
    for var in ("failures", "births", "alive", "n_producers"):
        assert np.array_equal(det[var].values, fast[var].values), var
    for var in ("pools", "produced", "spent", "energy_charge"):
        np.testing.assert_allclose(fast[var].values, det[var].values, rtol=1e-11, atol=1e-14)


def test_first_replicate_on_the_mesa_backend_is_the_engine_replicate(tmp_path):
    """Replicate numbering is one ensemble on both backends: Mesa's replicate 5 is the engine's."""
    base = ["experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=3", "steps=60",
            "record_every=10", "figures=false", "substrate.producers.hazard=2.0", "seed=3"]
    from hydra import compose, initialize_config_dir

    from sim.app import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        jax_cfg = compose(config_name="config", overrides=base + ["replicates=6"])
        mesa_cfg = compose(config_name="config", overrides=base + ["replicates=1", "first_replicate=5", "backend=mesa"])
    engine_ds, mesa_ds = sim.api.run(jax_cfg).dataset, sim.api.run(mesa_cfg).dataset
    assert list(mesa_ds["replicate"].values) == [5]
    ref = engine_ds.sel(replicate=[5])
    assert int(ref["failures"].isel(time=-1).sum()) > 0
    for var in ("failures", "producers_alive", "alive"):
        assert np.array_equal(ref[var].values, mesa_ds[var].values), var
    for var in ("s", "a", "d"):
        np.testing.assert_allclose(mesa_ds[var].values, ref[var].values, rtol=1e-9, atol=1e-12)


def test_xla_flags_parsing():
    assert determinism.fma_disabled("--xla_cpu_max_isa=AVX")
    assert determinism.fma_disabled("--foo=1 --xla_cpu_max_isa=sse4_2")
    assert not determinism.fma_disabled("--xla_cpu_max_isa=AVX --xla_cpu_max_isa=AVX512")  # the last one wins
    assert not determinism.fma_disabled("--xla_cpu_max_isa=AVX2")
    assert not determinism.fma_disabled("")


def test_too_late_or_conflicting_flag_is_reported_not_ignored(monkeypatch):
    """In a process whose backend already runs, asking for bitwise runs warns and says why."""
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # the backend is up
    try:
        monkeypatch.setenv("XLA_FLAGS", "")
        with pytest.warns(RuntimeWarning, match="fresh process"):
            status = determinism.configure(True)
        assert status.fixed_order_sums and not status.bitwise and determinism.current().fixed_order_sums
        assert os.environ["XLA_FLAGS"] == ""  # nothing set that could not take effect
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX512")
        with pytest.warns(RuntimeWarning, match="allows FMA"):
            assert not determinism.configure(True).bitwise
    finally:
        determinism.configure(False)
    assert not determinism.current().fixed_order_sums and determinism.current().reason == "deterministic_reductions is false"
