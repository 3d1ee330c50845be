"""Several competing carriers (sim.core.carriers) on the generic substrate, and standardisation.

- one carrier (the default) is the plain substrate: the same substrate value, no carrier process;
- neutral carriers (accepted everywhere, free to keep and make) reduce to one currency;
- the JAX engine reproduces the plain-Python reference with every carrier mechanism switched on;
- the tissue's carrier A + D is conserved and the held carriers sum to A;
- standardisation: with conversion cost 0 the carriers stay mixed, a high conversion cost makes one
  carrier take over on a well-connected tissue, and less so on a ring (the threshold falls as
  connectivity rises); with a storage-cost spread the cheapest carrier wins;
- bad carrier configs are refused with one clear message.
"""

import dataclasses

import jax
import numpy as np
import pytest

from sim import api
from sim.core import carriers as car
from sim.core import engine
from sim.core.config import compose as sim_compose
from sim.errors import ConfigError
from sim.experiments import standardization as std
from sim.substrates import generic

jax.config.update("jax_enable_x64", True)

TISSUE = ["experiment=tissue", "substrate=generic_tissue", "figures=false"]
MIXED = ["carriers=competing", "topology=ring", "topology.n_cells=8", "seed=3", "dt=0.05",
         "differentiation.pattern_period=2", "differentiation.alpha=2", "substrate.transport.loss_fraction=0.1"]


def prepared(overrides):
    return api.prepare(sim_compose(TISSUE + overrides))


def run(sub, built, steps, replicates=2):
    res = engine.run(sub, built.state, built.params, seed=built.seed, steps=steps, record_every=10,
                     replicates=replicates)
    assert res.error is None
    return res


def test_one_carrier_is_the_plain_substrate():
    cfg, sub, built = prepared(["topology=ring", "topology.n_cells=6"])
    assert sub is generic.SUBSTRATE  # the same program: results are bit for bit those of before
    assert "carrier_upkeep" not in sub.process_names and "held" not in sub.record_fields
    assert built.state.carriers.held.shape == (6, 0) and built.state.carriers.accept.shape == (6, 0)
    cfg, sub3, _ = prepared(["carriers=competing", "topology=ring", "topology.n_cells=6"])
    assert sub3.process_names[-2:] == ("carrier_upkeep", "carrier_strategy") and "held" in sub3.record_fields


def test_neutral_carriers_reduce_to_one_currency():
    """Carriers accepted everywhere, free to keep and make, never switching: the charged pool moves
    and is spent exactly as one currency (lossless transport is linear, so per-carrier flows sum to
    the pool's; with a loss, carriers crossing in opposite directions each pay it)."""
    common = ["topology=ring", "topology.n_cells=8", "seed=2", "dt=0.05", "differentiation.pattern_period=2",
              "differentiation.alpha=2"]
    _, sub1, b1 = prepared(common)
    _, sub3, b3 = prepared(common + ["carriers=competing", "carriers.accepts=all", "carriers.storage=0",
                                     "carriers.rule=fixed", "carriers.conversion_cost=0.5"])
    assert len(np.unique(b3.state.carriers.make)) > 1  # the carriers really are mixed
    # the plain-Python references (the engine reproduces them: test_engine_reproduces_the_reference_*)
    one, three = sub1.reference(b1, 0), sub3.reference(b3, 0)
    for _ in range(200):
        one.step()
        three.step()
    s1, s3 = one.state(), three.state()
    for name in ("a", "d"):
        np.testing.assert_allclose(getattr(s3.cells, name), getattr(s1.cells, name), rtol=1e-12, atol=1e-14)
    for name in ("work", "produced", "spent"):
        np.testing.assert_allclose(getattr(s3.ledger, name), getattr(s1.ledger, name), rtol=1e-12, err_msg=name)
    assert np.all(s3.carriers.held > 0)  # every carrier moved into every cell


@pytest.fixture(scope="module")
def busy():
    """Every mechanism at once: storage and production costs that differ per carrier, background and
    on-demand conversion, random accepted subsets, imitation with mutation, failures and births."""
    cfg, sub, built = prepared(MIXED + [
        "carriers.storage=[0.01,0.05,0.2]", "carriers.production_cost=[0.0,0.1,0.3]", "carriers.conversion_rate=0.5",
        "carriers.conversion_cost=0.3", "carriers.accepts=random", "carriers.accept_size=2", "carriers.rate=2.0",
        "carriers.mutation=0.2", "carriers.payoff=neighbourhood", "substrate.producers.hazard=0.1",
        "substrate.producers.birth_rate=0.5"])
    res = run(sub, built, 240)
    refs = []
    for r in range(2):
        ref = sub.reference(built, r)
        for _ in range(240):
            ref.step()
        refs.append(ref)
    return cfg, sub, built, res, refs


def test_engine_reproduces_the_reference_with_carriers(busy):
    _, _, _, res, refs = busy
    st = res.state.carriers
    assert float(np.sum(st.switches)) > 20 and float(np.sum(st.decayed)) > 0.1
    assert float(np.sum(st.converted)) > 0.1 and float(np.sum(st.production_lost)) > 0.1
    for r, ref in enumerate(refs):
        final = jax.device_get(engine.take(res.state, r))
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(final), jax.tree_util.tree_leaves(ref.state())):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-11, atol=1e-13,
                                       err_msg=jax.tree_util.keystr(path))


def test_carrier_is_conserved_and_held_sums_to_the_charged_pool(busy):
    cfg, sub, built, res, _ = busy
    rec = res.records
    total0 = float(np.sum(built.state.cells.a + built.state.cells.d))
    assert np.max(np.abs((rec["a"] + rec["d"]).sum(-1) - total0)) <= 1e-12 * total0
    np.testing.assert_allclose(rec["held"].sum(-1), rec["a"], rtol=1e-13, atol=1e-15)
    assert rec["held"].min() >= 0
    s = sub.summarize(built, res, cfg)
    assert s["carriers"] == 3 and 1 / 3 <= s["carrier_herfindahl"] <= 1 and s["conservation_error"] <= 1e-12
    assert abs(sum(s[f"carrier_share_carrier_{k}"] for k in range(3)) - 1) < 1e-12


@pytest.fixture(scope="module")
def phase():
    """Adaptive tissues only (the controls are exercised by the command-line test): conversion cost
    0 vs 0.9 without a storage spread, and 0.9 with one, on a complete graph and on a ring."""
    cfg = sim_compose(["experiment=standardization", "steps=6000", "record_every=200", "figures=false"])
    copts = car.read_config(cfg)
    opts = dict(std.read_options(cfg), n_cells=24, replicates=6, conversion_costs=[0.0, 0.9], storage_spreads=[0.0, 3.0])
    out = {}
    for kind in ("complete", "ring"):
        sub = api.substrate_of(cfg)
        _, rows, res = std.run_call(sub, cfg, kind, 3, opts, copts, modes=("adaptive",))
        assert res.error is None
        r = std.per_row(res, 3)
        shape = (2, 2, 6)
        out[kind] = {k: np.asarray(r[k]).reshape(shape) for k in ("herfindahl", "winner")}
    return out


def test_conversion_cost_drives_standardisation_more_on_a_well_connected_tissue(phase):
    h = {k: v["herfindahl"][:, 0].mean(-1) for k, v in phase.items()}  # (cost,) without storage spread
    # cost 0: neutral carriers stay mixed (an even mix of 3 is 1/3; mutation-drift balance ~0.5 at 24 cells)
    assert h["complete"][0] < 0.65 and h["ring"][0] < 0.65
    assert h["complete"][1] > h["complete"][0] + 0.15  # a high conversion cost: one carrier takes over
    assert h["complete"][1] > h["ring"][1] + 0.1  # ... less so on a ring: the threshold falls with connectivity


def test_the_cheapest_carrier_to_store_wins(phase):
    wins = (phase["complete"]["winner"][1, 1] == 0).mean()  # cost 0.9, storage spread 3
    assert wins >= 2 / 3


@pytest.mark.parametrize("override, key", [
    (["carriers.n=0"], "carriers.n"),
    (["carriers=competing", "carriers.storage=-1"], "carriers.storage"),
    (["carriers=competing", "carriers.storage=[0.1,0.2]"], "carriers.storage"),
    (["carriers=competing", "carriers.accepts=random", "carriers.accept_size=5"], "carriers.accept_size"),
    (["carriers=competing", "carriers.production_cost=1.0"], "carriers.production_cost"),
    (["carriers=competing", "carriers.rule=gradient"], "carriers.rule"),
    (["carriers=competing", "+carriers.speed=1"], "carriers.speed"),
])
def test_bad_carrier_configs_are_refused(override, key):
    with pytest.raises(ConfigError) as err:
        prepared(["topology=ring", "topology.n_cells=6"] + override)
    assert key in str(err.value)


def test_several_carriers_on_a_substrate_without_them_are_refused():
    with pytest.raises(ConfigError) as err:
        api.prepare(sim_compose(["experiment=tissue", "substrate=llm", "carriers=competing", "topology=ring",
                                 "topology.n_cells=2"]))
    assert "carriers.n" in str(err.value) and "llm" in str(err.value)


def test_standardization_refuses_fixed_strategies():
    from sim.experiments.standardization import run_standardization

    with pytest.raises(ConfigError, match="carriers.rule"):
        run_standardization(sim_compose(["experiment=standardization", "carriers.rule=fixed"]))


def test_shares_and_herfindahl():
    make = np.array([[0, 0, 1, 2], [1, 1, 1, 1]])
    alive = np.array([[True, True, True, False], [True] * 4])
    s = car.shares(make, alive, 3)
    np.testing.assert_allclose(s, [[2 / 3, 1 / 3, 0], [0, 1, 0]])
    np.testing.assert_allclose(car.herfindahl(s), [5 / 9, 1])
    assert list(car.time_to_standard(np.array([[0.5, 0.95, 0.8], [0.5, 0.6, 0.7]]), [1, 2, 3])) == [2, np.inf]


def test_standardization_writes_its_run_folder(tmp_path):
    """End to end through the command line: the table, the dataset, the figure and the report."""
    import json

    import xarray as xr
    from _support import run_child

    out = tmp_path / "std"
    res = run_child(["-m", "sim", "experiment=standardization", "standardization.topologies=[ring]",
                     "standardization.n_cells=6", "standardization.replicates=2", "standardization.conversion_costs=[0,0.9]",
                     "standardization.storage_spreads=[0]", "steps=400", "record_every=100", f"hydra.run.dir={out}"],
                    timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"run: {out} (ok;" in res.stdout and "Herfindahl" in res.stdout
    for f in ("results.nc", "summary.json", "standardization.parquet", "figures/standardization.png"):
        assert (out / f).is_file(), f
    ds = xr.load_dataset(out / "results.nc")
    assert ds["herfindahl"].dims == ("topology", "n_carriers", "conversion_cost", "storage_spread")
    assert ((ds["herfindahl"] >= 1 / 3 - 1e-12) & (ds["herfindahl"] <= 1)).all()
    # the controls: forced onto carrier 0 the tissue is one standard; forced mixed it stays as it started
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["engine_calls"] == 1 and summary["rows_per_call"] == 12
    assert float(ds["mixed_herfindahl"].max()) < 1
