"""The generic substrate (``sim.substrates.generic``): a dimensionless economy of one currency.

- the JAX engine reproduces the plain-Python float64 reference to ~1e-12 over a run with producer
  failures and births, rationed consumption, transport and transit losses (2 replicates,
  heterogeneous cells);
- the carrier A + D is conserved to 1e-12 at every record (transport loss dissipates charge, not carrier);
- tiers: maintenance (tier 0) is served first, the rest shared proportionally within tier 1;
- a single cell without failures or transport settles on the analytic steady state of
  production = consumption (Michaelis-Menten forms, S held at S_ext);
- properties over random states and parameters: pools finite and >= 0, ledgers >= 0 and growing;
- ``python -m sim substrate=generic`` writes a complete run folder; bad keys are refused (exit 2).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
import xarray as xr
from _support import TISSUE, run_child
from scipy.optimize import brentq

import sim  # noqa: F401  (float64)
from sim import api
from sim.app import CONF_DIR
from sim.core import engine
from sim.errors import ConfigError
from sim.substrates.generic import SUBSTRATE as GENERIC
from sim.substrates.generic import kernels, spec
from sim.substrates.generic.reference import ReferenceGeneric

RUN = ["substrate=generic", "figures=false", "replicates=2", "record_every=10"]


def compose(overrides) -> dict:
    """The config of a plain run (experiment=tissue, not the analogy default) with ``overrides``."""
    from hydra import compose as h_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        return OmegaConf.to_container(h_compose(config_name="config", overrides=[TISSUE, *overrides]), resolve=True)


def heterogeneous(built, seed=0):
    """Cells that differ (random pools and producer health), so transport and rationing happen."""
    rng = np.random.default_rng(seed)
    s = built.state
    n = built.n_cells
    cells = dataclasses.replace(s.cells, s=rng.uniform(0, 2, n), a=rng.uniform(0, 2, n), d=rng.uniform(0, 2, n))
    prod = dataclasses.replace(s.producers, health=rng.uniform(0.2, 1.0, s.producers.health.shape))
    return dataclasses.replace(built, state=dataclasses.replace(s, cells=cells, producers=prod))


class CountingReference(ReferenceGeneric):
    """The reference, counting the cell-steps in which a tier was rationed (asked more than A)."""

    rationed = 0

    def consumption(self):
        p = self.p
        for i in range(self.n):
            a = self.A[i]
            ask = sum(p["dt"] * v * p["demand_scale"] * a / (km + a) for v, km in zip(self.c_vmax[i], self.c_km[i]))
            self.rationed += ask > a
        super().consumption()


@pytest.fixture(scope="module")
def agreement():
    # a mixed regime: some cells ration (A runs out within a step), others keep A and export it
    kinds = [f"substrate.consumers.kinds.{k}.affinity=0.2" for k in ("maintenance", "work")]
    cfg = compose(RUN + kinds + ["topology=ring", "topology.n_cells=6", "steps=300", "seed=11", "dt=0.04",
                                 "substrate.producers.count=4", "substrate.producers.capacity=3",
                                 "substrate.supply.external=5", "substrate.initial.carrier=3",
                                 "substrate.producers.hazard=0.3", "substrate.producers.birth_rate=0.2",
                                 "substrate.transport.conductance=2.0",
                                 "substrate.transport.loss_fraction=0.1", "params.demand_scale=6"])
    built = heterogeneous(spec.build(cfg))
    res = engine.run(GENERIC, built.state, built.params, seed=built.seed, steps=300, record_every=10, replicates=2)
    assert res.error is None
    refs, records = [], []
    for r in range(2):
        ref = CountingReference(built, r)
        recs = []
        for s in range(300):
            ref.step()
            if (s + 1) % 10 == 0:
                recs.append(jax.device_get(spec.observe(ref.state())))
        refs.append(ref)
        records.append({k: np.stack([np.asarray(x[k]) for x in recs]) for k in recs[0]})
    ref_rec = {k: np.stack([rec[k] for rec in records]) for k in records[0]}
    return built, res, refs, ref_rec


def test_engine_reproduces_the_reference_with_failures_rationing_and_losses(agreement):
    built, res, refs, ref_rec = agreement
    assert ref_rec["failures"][:, -1].sum() >= 10 and ref_rec["births"][:, -1].sum() >= 10
    assert sum(r.rationed for r in refs) > 100
    assert 0.2 < np.mean(ref_rec["a"] > 0) < 0.99  # drained (rationed) cells and cells holding currency
    assert ref_rec["lost"][:, -1].sum() > 0.1 and ref_rec["transported_out"][:, -1].sum() > 1
    for name in ("alive", "producers_alive", "failures", "births"):
        assert np.array_equal(res.records[name], ref_rec[name]), name
    for name, x in res.records.items():
        np.testing.assert_allclose(x, ref_rec[name], rtol=1e-12, atol=1e-13, err_msg=name)
    final = jax.device_get(engine.take(res.state, 1))
    for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(refs[1].state())):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12, atol=1e-13)


def test_carrier_is_conserved_at_every_record(agreement):
    built, res, _, _ = agreement
    s0 = built.state.cells
    total0 = float(np.sum(s0.a + s0.d))
    rec = res.records
    total = (rec["a"] + rec["d"]).sum(-1)  # (R, T)
    assert np.max(np.abs(total - total0)) <= 1e-12 * total0
    cfg = compose(RUN + ["topology=ring", "topology.n_cells=6", "steps=300"])
    summary = spec.summarize(built, res, cfg)
    assert summary["status"] == "ok" and summary["conservation_error"] <= 1e-12


def test_maintenance_first_then_proportional_shares():
    """A = 1, asks (dt V A/(K+A), K = 1, dt = 1): tier 0 asks 0.8 (served), tier 1 asks 0.3 + 0.1 out of
    the 0.2 left (shares 0.15, 0.05); A ends at 0, never below."""
    built = spec.build(compose(RUN + ["topology=single", "dt=0.01"]))
    s = built.state
    cells = dataclasses.replace(s.cells, a=np.array([1.0]), d=np.array([0.5]))
    cons = spec.Consumers(vmax=np.array([[1.6, 0.6, 0.2]]), km=np.ones((1, 3)), tier=np.array([[0, 1, 1]], np.int32),
                          value=np.array([[1.0, 2.0, 3.0]]))
    state = dataclasses.replace(s, cells=cells, consumers=cons)
    params = dataclasses.replace(built.params, dt=np.float64(1.0))
    out = kernels.consumption(state, params)
    assert float(out.cells.a[0]) == 0.0
    np.testing.assert_allclose(float(out.ledger.spent[0]), 1.0, rtol=1e-15)
    np.testing.assert_allclose(float(out.ledger.work[0]), 0.8 + 2 * 0.15 + 3 * 0.05, rtol=1e-14)
    np.testing.assert_allclose(float(out.cells.d[0]), 1.5, rtol=1e-15)


def test_single_cell_settles_on_the_analytic_steady_state():
    """No failures, no transport, S held at S_ext (yield 1e9: substrate use is negligible). With
    D = T - A, the step's fixed point solves P(T - A) = C(A + dt P(T - A)) (consumption sees A after
    production), with P(D) = n V S/(K_S+S) D/(K_D+D) and C(A) = sum_k V_k A/(K_k+A); as dt -> 0 it
    tends to the ODE's P(T - A) = C(A)."""
    over = ["substrate.producers.hazard=0", "substrate.producers.birth_rate=0", "substrate.producers.capacity=1.3", "substrate.producers.count=2", "substrate.producers.k_discharged=0.7",
            "substrate.producers.k_substrate=0.4", "substrate.producers.yield=1e9", "substrate.supply.external=1.5",
            "substrate.initial.carrier=2.0", "substrate.consumers.kinds.maintenance.capacity=0.8",
            "substrate.consumers.kinds.maintenance.affinity=0.5", "substrate.consumers.kinds.work.capacity=0.9",
            "substrate.consumers.kinds.work.affinity=2.0"]
    cfg = compose(["substrate=generic", "topology=single", "steps=2000", "record_every=2000", "replicates=1",
                   "figures=false", "dt=0.02"] + over)
    out = api.run(cfg)
    a_sim = float(out.dataset["a"].values[0, -1, 0])
    dt, total, s_ext = 0.02, 2.0, 1.5
    prod = lambda a: 2 * 1.3 * s_ext / (0.4 + s_ext) * (total - a) / (0.7 + total - a)  # noqa: E731
    cons = lambda a: 0.8 * a / (0.5 + a) + 0.9 * a / (2.0 + a)  # noqa: E731
    a_step = brentq(lambda a: prod(a) - cons(a + dt * prod(a)), 0.0, total, xtol=1e-15)
    a_ode = brentq(lambda a: prod(a) - cons(a), 0.0, total, xtol=1e-15)
    assert abs(a_sim - a_step) <= 1e-6 * a_step
    assert abs(a_sim - a_ode) <= 2 * dt * a_ode  # the splitting error of the explicit step, O(dt)
    assert out.summary["conservation_error"] <= 1e-12 and out.summary["failures"] == out.summary["births"] == 0


# ------------------------------------------------------------------------------ properties

# The random-configuration property (pools, ledgers, conservation, producer counts at every step) is
# tests/test_properties.py's generic case, written once for every substrate.


# ------------------------------------------------------------------------------ command line


def test_command_line_writes_a_complete_run_folder(tmp_path):
    res = run_child(["-m", "sim", TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4", "steps=200",
                     "record_every=10", "replicates=2", "substrate.producers.hazard=0.3",
                     f"hydra.run.dir={tmp_path}/run"])
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["substrate"] == "generic"
    for key in ("currency_produced_units", "currency_spent_units", "currency_transported_units", "currency_lost_units",
                "work_done_units",
                "charged_fraction", "currency_pool_turnover", "conservation_error", "cells_total", "cells_alive",
                "wall_s", "compile_s", "simulated_time"):
        assert key in summary, key
    assert summary["conservation_error"] <= 1e-12 and summary["simulated_time"] == pytest.approx(4.0)
    ds = xr.load_dataset(run / "results.nc")
    assert dict(ds.sizes) == {"replicate": 2, "time": 20, "cell": 4}
    assert all(ds[v].attrs["units"] == "1" for v in ds.data_vars)
    assert (run / "figures" / "generic.png").stat().st_size > 0
    from sim.plot import main as plot_main  # `python -m sim.plot RUN` redraws the substrate's own figure

    (run / "figures" / "generic.png").unlink()
    assert plot_main([str(run)]) == 0 and (run / "figures" / "generic.png").stat().st_size > 0
    assert not (run / "figures" / "trajectories.png").exists()


@pytest.mark.parametrize("override,key", [
    ("substrate.producers.k_discharged=0", "substrate.producers.k_discharged"),  # out of range
    ("+substrate.producers.vmax=2", "substrate.producers.vmax"),  # not a key of conf/substrate/generic.yaml
])
def test_bad_generic_keys_are_refused_with_exit_2(tmp_path, override, key):
    res = run_child(["-m", "sim", TISSUE, "substrate=generic", override, f"hydra.run.dir={tmp_path}/run"])
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert any(line.startswith(f"error: invalid config: {key}=") for line in lines), lines
    assert not (tmp_path / "run" / "results.nc").exists()


@pytest.mark.parametrize("override,key", [
    ("substrate.consumers.kinds.work.tier=2", "substrate.consumers.kinds.work.tier"),
    ("substrate.producers.count=9", "substrate.producers.count"),
    ("substrate.initial.charged_fraction=1.5", "substrate.initial.charged_fraction"),
    ("+params.hazard0=0.5", "params.hazard0"),
    ("dt=2.0", "dt"),  # the explicit step's stability, refused by build
])
def test_bad_values_are_refused_before_running(override, key):
    with pytest.raises(ConfigError) as info:
        api.prepare(compose(["substrate=generic", override]))
    assert key in {p.key for p in getattr(info.value, "problems", [info.value])}
