"""Several competing carriers (sim.core.carriers) on the biology substrate: nucleoside triphosphates
sharing one phosphate potential.

- one carrier (the default) is the plain bio substrate: the same substrate value, no carrier process,
  zero-width carrier arrays (nothing of the carrier layer is traced);
- the JAX engine reproduces the plain-Python reference with every carrier mechanism switched on
  (storage and production costs differing by carrier, on-demand and background conversion, random
  accepted subsets, imitation with mutation) and with producer failure, wear, repair, biogenesis,
  leaky junctions, differentiation moves, cell death and the creatine kinase buffer;
- adenine, total phosphate and high-energy phosphate are conserved, the held carriers sum to the
  ATP pool, the ATP ledger balances with the carriers' losses and the energy ledger closes;
- the nucleotides preset (conf/carriers/nucleotides.yaml) runs end to end.
"""

import dataclasses

import jax
import numpy as np
import pytest

from sim import api
from sim.core import engine
from sim.core.config import compose
from sim.substrates import bio
from sim.substrates.bio.state import ADP, AMP, ATP, N_SPECIES, PI

jax.config.update("jax_enable_x64", True)

TISSUE = ["experiment=tissue", "substrate=bio", "topology=ring", "topology.n_cells=4", "figures=false"]
STEPS = 100
CREATINE_MM = 10.0  # replicate 1 runs with the creatine kinase buffer (the kinases' Newton path)
BUSY = TISSUE + [
    "seed=1", "carriers=nucleotides", "carriers.storage=[0.01,0.05,0.1,0.2]",
    "carriers.production_cost=[0.0,0.1,0.2,0.3]", "carriers.conversion_rate=0.5", "carriers.conversion_cost=0.3",
    "carriers.accepts=random", "carriers.accept_size=2", "carriers.rate=3.0", "carriers.mutation=0.3",
    "carriers.payoff=neighbourhood",
    "differentiation=imitation", "differentiation.rate=3.0", "differentiation.switch_cost=0.05",
    "substrate.producers.hazard_per_s=0.2", "substrate.producers.birth_per_s=2.0",
    "substrate.producers.kinds.mitochondrion.damage_per_s=0.05", "substrate.consumers.demand_cv=1.0",
    "substrate.supply.uptake_cv=1.0", "substrate.transport.loss_fraction=0.05",
    "substrate.transport.conductance_per_s=2.0",
    # the neediest cell of each replicate starves to death within the run (its carriers still decay)
    "substrate.cell.stress_threshold=0.958", "substrate.cell.stress_death_s=0.5",
]


def test_one_carrier_is_the_plain_substrate():
    cfg, sub, model = api.prepare(compose(TISSUE))
    assert sub is bio.SUBSTRATE  # the same program: results are bit for bit those of before
    assert "carrier_upkeep" not in sub.process_names and "held" not in sub.record_fields
    cs = model.state.carriers
    assert cs.held.shape == (4, 0) and cs.accept.shape == (4, 0) and model.params.carriers.storage.shape == (0,)
    _, sub4, model4 = api.prepare(compose(TISSUE + ["carriers=nucleotides"]))
    assert sub4.process_names[-2:] == ("carrier_upkeep", "carrier_strategy") and "held" in sub4.record_fields
    held = model4.state.carriers.held
    assert held.shape == (4, 4)
    np.testing.assert_array_equal(held.sum(1), model4.state.cells.pools[:, ATP])


@pytest.fixture(scope="module")
def busy():
    cfg, sub, model = api.prepare(compose(BUSY))
    p = model.params
    plist = [p, dataclasses.replace(p, creatine_total=np.asarray(CREATINE_MM, p.dt.dtype))]
    params = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *plist)
    res = engine.run(sub, model.state, params, seed=model.seed, steps=STEPS, record_every=10, replicates=2,
                     batched_params=True)
    assert res.error is None
    refs = []
    for r, pr in enumerate(plist):
        ref = bio.SUBSTRATE.reference(dataclasses.replace(model, params=pr), r)
        for _ in range(STEPS):
            ref.step()
        refs.append(ref)
    return cfg, sub, model, res, refs


def test_engine_reproduces_the_reference_with_carriers(busy):
    _, _, _, res, refs = busy
    st = jax.device_get(res.state)
    cs = st.carriers
    # every mechanism really ran
    assert float(np.sum(cs.switches)) >= 5 and float(np.sum(cs.decayed)) > 0.01
    assert float(np.sum(cs.converted)) > 0.01 and float(np.sum(cs.production_lost)) > 0.01
    assert float(np.sum(cs.conversion_lost)) > 0.001
    assert len(np.unique(cs.make)) > 1 and np.all((np.asarray(cs.held).sum(-2) > 0).sum(-1) >= 3)  # mixed
    led = st.ledger
    assert led.failures.sum() > 0 and led.births.sum() > 0 and led.repair_spent.sum() > 0
    assert led.switching.sum() > 0 and led.transported_out.sum() > 0 and led.lost[..., ATP].sum() > 0
    assert led.ck_atp[1].sum() != 0 and np.all(led.ck_atp[0] == 0)
    assert 1 <= (~st.cells.alive).sum() < st.cells.alive.size
    worst = 0.0
    for r, ref in enumerate(refs):
        final = jax.device_get(engine.take(res.state, r))
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(final), jax.tree_util.tree_leaves(ref.state()),
                                strict=True):
            a, b = np.asarray(a, float), np.asarray(b, float)
            key = f"replicate {r} {jax.tree_util.keystr(path)}"
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=key)
            scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
            worst = max(worst, float(np.max(np.abs(a - b) / scale, initial=0.0)))
    print(f"bio carriers: max relative difference engine vs reference after {STEPS} steps: {worst:.2e}")


def test_phosphate_and_adenine_are_conserved_and_held_sums_to_atp(busy):
    cfg, sub, model, res, _ = busy
    st, rec = jax.device_get(res.state), res.records
    p0, p1 = np.asarray(model.state.cells.pools), np.asarray(st.cells.pools)  # (C, S), (R, C, S)
    pcr0, pcr1 = np.asarray(model.state.cells.pcr), np.asarray(st.cells.pcr)
    lost = np.asarray(st.ledger.lost)
    # replicate 1 starts with no phosphocreatine and CREATINE_MM of creatine (PCr counts as phosphate)
    ad0 = p0[:, ATP:AMP + 1].sum()
    p_w = np.zeros(N_SPECIES)
    p_w[[ATP, ADP, AMP, PI]] = [3.0, 2.0, 1.0, 1.0]  # phosphates per molecule
    he_w = np.zeros(N_SPECIES)
    he_w[[ATP, ADP, PI]] = [2.0, 1.0, 1.0]  # Pi + high-energy phosphate 2 ATP + ADP (+ PCr)
    for r in range(2):
        ad1 = p1[r, :, ATP:AMP + 1].sum() + lost[r, :, ATP:AMP + 1].sum()
        assert abs(ad1 / ad0 - 1) < 1e-12
        for w in (p_w, he_w):
            before = (p0 @ w).sum() + pcr0.sum()
            after = (p1[r] @ w).sum() + (lost[r] @ w).sum() + pcr1[r].sum()
            assert abs(after / before - 1) < 1e-12
    held = np.asarray(rec["held"])  # (R, T, C, K)
    assert held.min() >= 0
    np.testing.assert_allclose(held.sum(-1), np.asarray(rec["pools"])[..., ATP], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.asarray(st.carriers.held).sum(-1), p1[..., ATP], rtol=1e-13, atol=1e-15)
    # the energy ledger closes: what substrate oxidation released is stored or heat
    led = st.ledger
    np.testing.assert_allclose(led.stored_energy_j + led.heat_j, led.substrate_energy_j, rtol=1e-10, atol=1e-24)
    s = sub.summarize(model, res, cfg)  # the ATP balance includes the carriers' losses
    assert s["conservation_error"] <= 1e-12 and s["carriers"] == 4
    assert abs(sum(s[f"carrier_share_{name}"] for name in ("ATP", "GTP", "UTP", "CTP")) - 1) < 1e-12


def test_the_nucleotides_preset_runs():
    """The preset as shipped, through the run path on the reference backend (no compilation)."""
    out = api.run(compose(TISSUE + ["carriers=nucleotides", "backend=mesa", "steps=40", "record_every=20",
                                    "replicates=1"]))
    assert out.result.error is None and out.summary["status"] == "ok"
    ds = out.dataset
    assert list(ds["carrier"].values) == ["ATP", "GTP", "UTP", "CTP"]
    assert ds["held"].dims == ("replicate", "time", "cell", "carrier") and ds["held"].attrs["units"] == "mM"
    np.testing.assert_allclose(ds["held"].sum("carrier"), ds["pools"].sel(species="atp"), rtol=1e-13)
    assert out.summary["carrier_winner"] in ("ATP", "GTP", "UTP", "CTP")
    assert 0.25 <= out.summary["carrier_herfindahl"] <= 1 and out.summary["conservation_error"] <= 1e-12
