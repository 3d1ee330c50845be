"""Batched studies (sim.core.study, experiment=study) and SALib sensitivity (experiment=sensitivity):
a batched point equals the point run alone; an inert parameter has no Sobol index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sim  # noqa: F401  (float64)
from sim.api import prepare, run
from sim.core import engine
from sim.core import study as st
from sim.core.config import compose
from sim.errors import ConfigError

SMALL = ["steps=200", "record_every=50"]
SINGLE = ["topology=single", *SMALL, "sensitivity.chunk_points=32"]


def test_batched_points_equal_points_run_alone():
    cfg = compose(["experiment=study", "topology=ring", "topology.n_cells=3", *SMALL])
    cfg, sub, built = prepare(cfg)
    bounds = {"demand_scale": (0.5, 2.0), "supply_scale": (0.5, 2.0), "hazard0": (0.0, 0.05)}
    x = st.design("lhs", bounds, 50, seed=3)
    R = 2
    outcomes = ["mean_last:energy_charge", "final:n_producers", "total_last:produced"]
    # 50 points in calls of 16: three full calls and a padded one, all one compiled shape
    res = st.evaluate(sub, built, list(bounds), x, outcomes, steps=200, record_every=50, replicates_per_point=R,
                      chunk_points=16, seed=7)
    assert res.error is None and res.calls == 4
    assert all(np.isfinite(v).all() for v in res.outcomes.values())
    assert np.ptp(res.outcomes["mean_last:energy_charge"]) > 1e-3  # the points differ
    for i in (0, 17, 31, 49):  # 49: in the padded last call
        alone = engine.run(sub, built.state, st.point_params(built.params, list(bounds), x[i]), seed=7, steps=200,
                           record_every=50, replicates=R, first_replicate=0)
        for o in outcomes:
            reducer, q = st.parse_outcome(o, sub)
            ref = st.reduce_outcome(st.quantity_of(sub, alone.records, q, built.params), reducer, R)[0]
            np.testing.assert_allclose(res.outcomes[o][i], ref, rtol=1e-9, atol=0, err_msg=f"point {i} {o}")


def test_study_experiment_writes_point_table(tmp_path):
    out = run(compose(["experiment=study", "topology=single", *SMALL, "study.design=grid", "study.points=3",
                       "study.chunk_points=32", "study.params={demand_scale: [0.5, 2.0], supply_scale: [0.5, 2.0]}"]))
    assert out.summary["status"] == "ok" and out.summary["points"] == 9 and out.summary["engine_calls"] == 1
    ds = out.dataset
    assert ds.sizes["point"] == 9 and set(ds["demand_scale"].values) == {0.5, 1.25, 2.0}
    out.files(tmp_path)
    df = pd.read_parquet(tmp_path / "study.parquet")
    assert len(df) == 9 and {"demand_scale", "supply_scale", "mean_last:energy_charge"} <= set(df.columns)
    np.testing.assert_array_equal(df["mean_last:energy_charge"].values, ds["mean_last__energy_charge"].values)


@pytest.mark.parametrize("name", ["p_yield", "no_such_param", "dt"])
def test_study_refuses_non_scalar_parameters(name):
    cfg = compose(["experiment=study", "topology=single", *SMALL, f"study.params={{{name}: [0.5, 2.0]}}"])
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert err.value.key == f"study.params.{name}"
    assert "demand_scale" in str(err.value) and "hazard0" in str(err.value)


def test_sobol_inert_parameter_has_no_index(tmp_path):
    """A single cell has no junctions: conductance_scale cannot change the energy charge."""
    out = run(compose(["experiment=sensitivity", *SINGLE, "sensitivity.samples=32",
                       "sensitivity.params={demand_scale: [0.5, 2.0], supply_scale: [0.8, 1.2], "
                       "conductance_scale: [0.5, 2.0]}"]))
    s = out.summary
    assert s["status"] == "ok" and s["points"] == 32 * 5
    o = "mean_last:energy_charge"
    st_ = {p: s[f"ST {p} {o}"] for p in ("demand_scale", "supply_scale", "conductance_scale")}
    s1 = {p: s[f"S1 {p} {o}"] for p in st_}
    print("Sobol ST", st_, "S1", s1)
    assert abs(st_["conductance_scale"]) < 0.02 and abs(s1["conductance_scale"]) < 0.02
    assert st_["demand_scale"] == max(st_.values()) and s1["demand_scale"] == max(s1.values())
    out.files(tmp_path)
    out.figures(tmp_path)
    df = pd.read_csv(tmp_path / "sensitivity.csv")
    assert len(df) == 3 and {"S1", "S1_conf", "ST", "ST_conf"} <= set(df.columns)
    assert (tmp_path / "sensitivity.md").read_text().startswith("| outcome | param |")
    assert (tmp_path / "figures" / "sensitivity.png").stat().st_size > 1000


def test_morris_on_generic_substrate():
    out = run(compose(["experiment=sensitivity", "substrate=generic", *SINGLE, "sensitivity.method=morris",
                       "sensitivity.samples=4",
                       "sensitivity.params={demand_scale: [0.5, 2.0], conductance_scale: [0.5, 2.0]}"]))
    s = out.summary
    assert s["status"] == "ok" and s["points"] == 4 * 3
    o = "mean_last:charged_fraction"
    assert s[f"mu_star conductance_scale {o}"] < 1e-9 < s[f"mu_star demand_scale {o}"]


def test_derived_energy_charge_counts_the_bound_pools():
    """The study's energy charge is the substrate's (total pools: free + bound ADP and AMP), not the
    free pools' (which reads ~0.98 at rest instead of ~0.93)."""
    from sim.substrates.bio.kernels.thermo import energy_charge_of

    cfg, sub, built = prepare(compose(["topology=single", *SMALL]))
    rec = {"pools": np.asarray(built.state.cells.pools)[None, None]}
    got = st.quantity_of(sub, rec, "energy_charge", built.params)
    want = energy_charge_of(np.asarray(built.state.cells.pools), built.params, xp=np)
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-15)
    assert float(np.asarray(built.params.adp_bound)) > 0 and got[0, 0, 0] < st.quantity_of(sub, rec, "energy_charge")[0, 0, 0]
