"""Conservation of the adenylate carrier, phosphate and glucose on a tissue with transport (float64).

Phosphate bookkeeping: ATP carries 3 phosphates, ADP 2, AMP 1, Pi 1. Synthesis (ADP + Pi -> ATP),
hydrolysis (the reverse, for consumers, repair and biogenesis) and adenylate kinase
(2 ADP <-> ATP + AMP) conserve both the total phosphate ``Pi + 3 ATP + 2 ADP + AMP`` and
``Pi + E`` with the high-energy phosphate ``E = 2 ATP + ADP``; the adenine pool
``ATP + ADP + AMP`` only changes by what leaks out of junctions (``ledger.lost``).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from _support import bio_substrate

import sim  # noqa: F401  (switches on float64)
from sim.core import engine
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.kernels.transport import transport
from sim.substrates.bio.build import build
from sim.substrates.bio.state import ADP, AMP, ATP, GLC, N_SPECIES, PI

DT = 0.02
STEPS = 10_000  # 200 s
RECORD_EVERY = 1_000
LOSS = 0.1
# replicates: (name, loss fraction, supply_scale); the last starves its cells (supply below what
# the ion pumps need) so some die
REPLICATES = (("no_loss", 0.0, 1.0), ("loss", LOSS, 1.0), ("loss_starved", LOSS, 0.12))
P_WEIGHTS = np.zeros(N_SPECIES)
P_WEIGHTS[[ATP, ADP, AMP, PI]] = [3.0, 2.0, 1.0, 1.0]  # phosphates per molecule
HE_WEIGHTS = np.zeros(N_SPECIES)
HE_WEIGHTS[[ATP, ADP, PI]] = [2.0, 1.0, 1.0]  # Pi + high-energy phosphate E = 2 ATP + ADP


def tissue_config(loss=0.0, conductance=0.5, n_cells=20):
    sub = bio_substrate()
    sub["supply"]["uptake_cv"] = 0.5  # heterogeneous cells, so gradients drive flux
    sub["consumers"]["demand_cv"] = 0.5
    sub["transport"]["conductance_per_s"] = conductance
    sub["transport"]["loss_fraction"] = loss
    prod = sub["producers"]
    prod["hazard_per_s"] = 2e-3  # producers fail ...
    prod["birth_per_s"] = 2e-2  # ... and are rebuilt, both paid for in the ledgers
    sub["cell"]["stress_death_s"] = 20.0
    sub["cell"]["stress_threshold"] = 0.9
    topo = dict(kind="small_world", n_cells=n_cells, k=4, p=0.2)
    return dict(substrate=sub, topology=topo, seed=3, dt=DT)


def stack_params(plist):
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *plist)


@pytest.fixture(scope="module")
def tissue():
    model = build(tissue_config())
    plist = []
    for _, loss, supply in REPLICATES:
        edges = dataclasses.replace(model.params.edges, loss=np.full_like(model.params.edges.loss, loss))
        plist.append(dataclasses.replace(model.params, edges=edges, supply_scale=np.float64(supply)))
    params = stack_params(plist)
    r = engine.run(
        BIO, model.state, params, seed=11, steps=STEPS, record_every=RECORD_EVERY,
        replicates=len(REPLICATES), batched_params=True,
    )
    assert r.error is None
    final = jax.tree_util.tree_map(np.asarray, r.state)
    return model, final


def rep(final, i):
    return jax.tree_util.tree_map(lambda x: x[i], final)


@pytest.mark.parametrize("i", range(len(REPLICATES)), ids=[r[0] for r in REPLICATES])
def test_tissue_ledgers_balance(tissue, i):
    model, final = tissue
    name, loss, _ = REPLICATES[i]
    s0, s1 = model.state, rep(final, i)
    led = s1.ledger
    p0, p1 = np.asarray(s0.cells.pools), s1.cells.pools
    assert p1.dtype == np.float64
    assert model.n_cells == 20 and len(model.params.edges.src) >= 20

    # the test can fail: currency really moved, producers failed and were rebuilt, repair was paid
    assert led.transported_out.sum() > 0.01 * led.produced.sum()
    assert led.failures.sum() > 0 and led.repair_spent.sum() > 0
    if name != "loss_starved":  # a starved cell's energy charge is below the biogenesis threshold
        assert led.births.sum() > 0 and led.birth_spent.sum() > 0
    if loss > 0:
        assert led.lost[:, ATP:AMP + 1].sum() > 0
    else:
        assert np.all(led.lost == 0)
    if name == "loss_starved":
        assert 1 <= (~s1.cells.alive).sum() < model.n_cells  # dead cells close their junctions

    # adenine nucleotides: in cells + lost in transit = initial
    ad0 = p0[:, ATP:AMP + 1].sum()
    ad1 = p1[:, ATP:AMP + 1].sum() + led.lost[:, ATP:AMP + 1].sum()
    assert ad1 == pytest.approx(ad0, rel=1e-9)
    assert abs(ad1 / ad0 - 1) < 1e-12  # in practice round-off

    # total phosphate and Pi + high-energy phosphate, each with what was lost
    for w in (P_WEIGHTS, HE_WEIGHTS):
        before = (p0 @ w).sum()
        after = (p1 @ w).sum() + (led.lost @ w).sum()
        assert after == pytest.approx(before, rel=1e-9)

    # glucose: in cells + lost = initial + taken up - used
    glc = p1[:, GLC].sum() + led.lost[:, GLC].sum()
    glc0 = p0[:, GLC].sum() + led.substrate_uptake.sum() - led.substrate_used.sum()
    assert glc == pytest.approx(glc0, rel=1e-9)

    # protein synthesis ran as chains (ribosome cohorts): their ATP is the protein-synthesis line
    # of the ledger (included in `spent` below) and their work the amino acids made
    k = model.consumer_kinds.index("protein_synthesis")
    cl = s1.chain_ledger
    assert cl.delivered.sum() > 0 and cl.initiated.sum() > 0
    np.testing.assert_allclose(cl.spent, led.spent[:, k], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cl.spent, cl.elongation_spent + cl.init_spent, rtol=1e-12)
    np.testing.assert_allclose(led.work[:, k], cl.elongation_spent / 4.0, rtol=1e-9)  # 4 ATP per aa
    # per cell ATP: change = produced - spent (all kinds + repair + birth) + AK + in - out
    spent = led.spent.sum(axis=1) + led.repair_spent + led.birth_spent
    flows = led.produced - spent + led.ak_atp + led.transported_in - led.transported_out
    gross = led.produced + spent + np.abs(led.ak_atp) + led.transported_in + led.transported_out
    np.testing.assert_array_less(np.abs((p1[:, ATP] - p0[:, ATP]) - flows), 1e-9 * gross)
    # junction accounts: what was sent arrived or was lost (ATP)
    assert led.transported_in.sum() == pytest.approx(
        led.transported_out.sum() - led.lost[:, ATP].sum(), rel=1e-12
    )
    if loss > 0:
        assert led.lost[:, ATP].sum() == pytest.approx(loss * led.transported_out.sum(), rel=1e-9)


def _random_state(model, rng, dead_fraction):
    st = model.state
    n = model.n_cells
    pools = rng.uniform(0.0, 10.0, (n, N_SPECIES)) * rng.uniform(0.1, 1.0, (n, 1))
    alive = rng.uniform(size=n) >= dead_fraction
    return dataclasses.replace(st, cells=dataclasses.replace(st.cells, pools=pools, alive=alive))


@pytest.mark.parametrize("loss", [0.0, 0.25])
def test_transport_alone_conserves_every_species(loss):
    model = build(tissue_config(loss=loss, conductance=2.0, n_cells=20))
    params = model.params
    perm = np.asarray(params.permeability)
    g = float(params.edges.conductance[0]) * float(params.conductance_scale) * float(params.dt)
    src, dst = np.asarray(params.edges.src), np.asarray(params.edges.dst)
    step = jax.jit(transport)
    rng = np.random.default_rng(2024)
    for trial in range(20):
        st = _random_state(model, rng, dead_fraction=0.0 if trial < 5 else 0.2)
        out = jax.tree_util.tree_map(np.asarray, step(st, params))
        before, after = np.asarray(st.cells.pools), out.cells.pools
        led = out.ledger
        assert np.all(after >= 0)
        assert led.transported_out.sum() > 0  # something moved
        lost = led.lost.sum(axis=0)
        np.testing.assert_allclose(after.sum(axis=0) + lost, before.sum(axis=0), rtol=1e-13)
        if loss == 0:
            assert np.all(lost == 0)
            np.testing.assert_allclose(after.sum(axis=0), before.sum(axis=0), rtol=1e-13)
            # and it is the graph Laplacian: dX_i = -g p sum_j (X_i - X_j) over open junctions
            alive = np.asarray(st.cells.alive)
            open_ = alive[src] & alive[dst]
            flux = g * perm * (before[src] - before[dst]) * open_[:, None]
            want = before.copy()
            np.add.at(want, src, -flux)
            np.add.at(want, dst, flux)
            np.testing.assert_allclose(after, want, rtol=1e-12, atol=1e-13)
            # dead cells neither send nor receive
            np.testing.assert_array_equal(after[~alive], before[~alive])
        else:
            assert lost.sum() > 0
        arrived = led.transported_out.sum() - lost[ATP]
        np.testing.assert_allclose(led.transported_in.sum(), arrived, rtol=1e-12)


def test_biogenesis_books_the_energy_of_the_atp_it_hydrolyses():
    """Every ATP spent is on the energy ledger: a producer birth releases cost x |dG| x volume (J)
    as heat, like the consumers' and repair's ATP (it once only reached the currency ledger)."""
    from sim.substrates.bio.kernels.fate import producer_biogenesis
    from sim.substrates.bio.kernels.thermo import dg_atp_kj
    from sim.pytree import replace

    model = build(tissue_config(n_cells=6))
    p = replace(model.params, birth_rate=1e6)  # a birth in every cell with a free slot
    s0 = jax.tree_util.tree_map(jax.numpy.asarray, model.state)
    s1 = producer_biogenesis(s0, p, jax.random.PRNGKey(0))
    born = np.asarray(s1.ledger.births - s0.ledger.births)
    assert born.sum() >= 2
    pools = np.asarray(s0.cells.pools)
    abs_dg = np.abs(dg_atp_kj(pools[:, ATP], pools[:, ADP], pools[:, PI], float(p.dg0_kj), float(p.temperature_k), xp=np))
    expected = born * float(p.birth_cost) * abs_dg * float(p.volume_l)
    for name, sign in (("heat_j", 1), ("hydrolysis_energy_j", 1), ("stored_energy_j", -1)):
        got = np.asarray(getattr(s1.ledger, name) - getattr(s0.ledger, name))
        np.testing.assert_allclose(got, sign * expected, rtol=1e-12, atol=0)
    assert expected.max() > 0
