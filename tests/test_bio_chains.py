"""Protein synthesis as chains (ribosome cohorts) in the biology preset (float64).

Textbook numbers (docs/references.md, "Translation"): ~4 ATP-equivalents per amino acid
whatever the length (c1 = 0), elongation ~5 aa/s in mammals, mean protein ~400 aa; at rest
protein synthesis is ~25-30% of a cell's ATP use (Rolfe & Brown 1997). When ATP is short the
chains are served in tier 1 (biosynthesis): they slow by the same factor as the other tier-1
consumers, after the ion pumps (tier 0) are served, and stop below the tier-1 reserve.
Also: the chain reference (``sim.substrates.bio.reference.step_chains``, which the Mesa backend
runs) equals ``sim.core.chains.chain_step`` with tools, memory compressions and budgets switched
on (the bio preset runs none of them).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

from _support import quiet_bio_substrate

import sim  # noqa: F401  (float64)
from sim import rng
from sim.core import engine
from sim.substrates.bio import SUBSTRATE as BIO
from sim.analysis import supply_demand as sd
from sim.constants import AVOGADRO_PER_MOL
from sim.core import chains as ck
from sim.substrates.bio.kernels.metabolism import metabolism
from sim.substrates.bio.build import build
from sim.substrates.bio.state import ATP
from sim.core.chains import CHAIN_LEDGER_FIELDS, Chain, ChainStep, step_chains

SLOTS = 8
RATE = 5.0  # aa/s at saturating ATP
ATP_PER_AA = 4.0
RESERVE, KM = 1.0, 0.1  # tier-1 reserve and K_ATP of protein synthesis (mM)


substrate = quiet_bio_substrate


def sat(a):
    ap = max(a - RESERVE, 0.0)
    return ap / (KM + ap)


def cohort_mm(sub):
    """Ribosomes per chain slot (mM), from the config alone: the protein-synthesis capacity
    (share x total demand) over slots x elongation rate x ATP per aa."""
    c = sub["consumers"]
    shares = {k: v["share"] for k, v in c["kinds"].items()}
    v = c["demand_total_mm_per_s"] * shares["protein_synthesis"] / sum(shares.values())
    return v / (SLOTS * RATE * ATP_PER_AA)


# ------------------------------------------------------------------ deterministic chains, one cell
@pytest.fixture(scope="module")
def one_cell():
    """One resting cell, chains that never terminate; ledgers read at steps 500, 1000, 40000, 40500."""
    dt = 0.02
    sub = substrate()
    model = build(dict(substrate=sub, topology=dict(kind="single"), seed=0, dt=dt, params=dict(chain_p_stop=0.0)))
    marks, state, done = {}, model.state, 0
    keys = rng.replicate_keys(0, 1)
    for until in (500, 1000, 40_000, 40_500):
        r = engine.run(BIO, state, model.params, seed=0, steps=until - done, record_every=500, chunk_records=1,
                       start_step=done, keys=keys)  # one compiled shape
        state, done = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], r.state), until
        marks[until] = state
    return model, sub, marks, dt


def _window(marks, a, b):
    s0, s1 = marks[a], marks[b]
    d = lambda f: float(getattr(s1.chain_ledger, f)[0] - getattr(s0.chain_ledger, f)[0])  # noqa: E731
    return d("elongation_spent"), d("units"), s0, s1


def test_cost_per_amino_acid_is_4_atp_whatever_the_length(one_cell):
    model, sub, marks, _ = one_cell
    k = model.consumer_kinds.index("protein_synthesis")
    per_ribosome = cohort_mm(sub)
    molecules = per_ribosome * 1e-3 * AVOGADRO_PER_MOL * float(model.params.volume_l)
    assert 1.0e6 < molecules < 1.3e6  # ribosomes per cohort; x 8 = 9e6, within 5-10 million per cell
    assert 5e6 <= SLOTS * molecules <= 1e7
    short_ = _window(marks, 500, 1000)  # chains 50-100 aa long
    long_ = _window(marks, 40_000, 40_500)  # chains ~3,800 aa long
    assert marks[40_000].chains.length.min() > 30 * marks[1000].chains.length.max()
    # (windows are differences of cumulative ledgers: ~1e-12 of round-off after 40,000 steps)
    for spent, units, s0, s1 in (short_, long_):
        assert units > 0
        # ATP molecules per amino-acid molecule: (mM ATP) / (units x ribosomes per cohort in mM)
        assert spent / (units * per_ribosome) == pytest.approx(ATP_PER_AA, rel=1e-10)
        # booked on the protein-synthesis ledger line: ATP spent and amino acids made (work)
        dspent = s1.ledger.spent[0, k] - s0.ledger.spent[0, k]
        dwork = s1.ledger.work[0, k] - s0.ledger.work[0, k]
        assert dspent == pytest.approx(spent, rel=1e-10)  # no initiation: all slots keep translating
        assert dwork == pytest.approx(units * per_ribosome, rel=1e-10)
    # the cost of a unit does not depend on the length of the chain making it (c1 = 0)
    assert short_[0] / short_[1] == pytest.approx(long_[0] / long_[1], rel=1e-10)


def test_elongation_is_about_5_aa_per_s_when_atp_is_ample(one_cell):
    model, _, marks, dt = one_cell
    _, units, s0, s1 = _window(marks, 40_000, 40_500)
    a = float(s0.cells.pools[0, ATP])
    assert a > 3.0  # a resting cell: ATP well above the tier-1 reserve (1 mM)
    per_chain = units / (SLOTS * 500 * dt)  # aa/s per chain
    assert per_chain == pytest.approx(RATE * sat(a), rel=1e-6)  # steady state: ATP constant
    assert 4.75 <= per_chain <= 5.0
    assert s1.chains.active.all() and s1.chain_ledger.delivered[0] == 0
    np.testing.assert_allclose(s1.chains.length[0], s1.chain_ledger.units[0] / SLOTS, rtol=1e-12)


# ------------------------------------------------------------------ stochastic chains, many cells
@pytest.fixture(scope="module")
def tissue():
    """256 independent resting cells (no junctions), 300 s: ~7,000 proteins completed."""
    dt, steps = 0.05, 6000
    sub = substrate()
    sub["transport"]["conductance_per_s"] = 0.0
    model = build(dict(substrate=sub, topology=dict(kind="ring", n_cells=256), seed=1, dt=dt))
    half = engine.run(BIO, model.state, model.params, seed=1, steps=steps // 2, record_every=steps // 2)
    r = engine.run(BIO, half.state, model.params, seed=1, steps=steps // 2, record_every=steps // 2,
                   start_step=steps // 2, keys=rng.replicate_keys(1, 1))
    h = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], half.state)
    s = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], r.state)
    return model, h, s, dt * steps / 2


def test_mean_protein_length_is_400_aa(tissue):
    model, _, s, _ = tissue
    led = s.chain_ledger
    delivered, units = led.delivered.sum(), led.units.sum()
    assert delivered > 5000
    # geometric lengths: the MLE of the mean under censoring (chains still running at the end) is
    # units made / chains finished; its standard error is ~ mean / sqrt(finished)
    mean_len = units / delivered
    se = 400.0 / math.sqrt(delivered)
    assert abs(mean_len - 400.0) < 4 * se, (mean_len, se)
    # finished chains alone are biased short (long ones are still running), but not by much here
    assert 250.0 < led.delivered_units.sum() / delivered < mean_len
    # every termination freed a slot that was restarted (initiation ~1/s per free slot)
    assert 0 <= led.initiated.sum() - (delivered - (s.chains.active.size - s.chains.active.sum())) <= 1e-9
    # constant cost per unit in the stochastic run too
    assert led.elongation_spent.sum() / units == pytest.approx(
        ATP_PER_AA * cohort_mm(substrate()), rel=1e-12)
    assert led.init_spent.sum() == pytest.approx(led.initiated.sum() * 2.0 * cohort_mm(substrate()), rel=1e-12)


def test_resting_share_and_the_expected_chain_demand(tissue):
    model, h, s, window = tissue
    k = model.consumer_kinds.index("protein_synthesis")
    spent = (s.ledger.spent - h.ledger.spent) / window  # (C, K) mM/s
    share = spent[:, k].sum() / spent.sum()
    assert 0.27 <= share <= 0.32, share  # Rolfe & Brown 1997: 25-30%
    # the independent solver's expectation (renewal of each slot, at the steady-state ATP)
    ss = sd.solve_steady_state(sd.cell_from_model(model))
    occupancy = sd.cell_from_model(model).chain_factor(sat(ss.atp))
    assert 0.98 < occupancy < 1.0
    assert spent[:, k].mean() == pytest.approx(ss.consumer_rates[k], rel=0.01)
    assert s.chains.active.mean() == pytest.approx(occupancy, abs=0.01)
    assert s.cells.pools[:, ATP].mean() == pytest.approx(ss.atp, rel=0.01)


# ------------------------------------------------------------------ rationing in tier 1
@pytest.mark.parametrize("demand_scale, atp", [(1.0, 2.0), (100.0, 2.0), (1.0, 0.9)],
                         ids=["ample", "short", "below_reserve"])
def test_chains_slow_with_tier_1_when_atp_is_short(demand_scale, atp):
    dt = 0.1
    model = build(dict(substrate=substrate(), topology=dict(kind="single"), seed=0, dt=dt,
                       params=dict(chain_p_stop=0.0, demand_scale=demand_scale)))
    st = model.state
    pools = np.array(st.cells.pools)
    pools[0, ATP] = atp
    st = dataclasses.replace(st, cells=dataclasses.replace(st.cells, pools=pools))
    out = jax.tree_util.tree_map(np.asarray, jax.jit(metabolism)(st, model.params, jax.random.PRNGKey(0)))
    cons = st.consumers
    tier, vmax, km = cons.tier[0], demand_scale * cons.vmax[0], cons.km[0]
    reserve = np.asarray(model.params.tier_reserve)[tier]
    ap = np.maximum(atp - reserve, 0.0)
    want = vmax * ap / (km + ap) * dt  # what each consumer (and the chains, in full) would take
    served = out.ledger.spent[0]
    k = model.consumer_kinds.index("protein_synthesis")
    is_tier1 = (tier == 1) & (np.arange(len(tier)) != k)
    assert out.cells.pools[0, ATP] >= 0.0
    np.testing.assert_allclose(served[tier == 0], want[tier == 0], rtol=1e-12)  # pumps first, in full
    units = out.chain_ledger.units[0]
    full_units = SLOTS * RATE * sat(atp) * dt
    if atp < RESERVE:  # below the tier-1 reserve: no translation, no initiation, pumps still served
        assert units == 0 and served[k] == 0 and served[tier == 0].sum() > 0
        return
    frac = served[is_tier1] / want[is_tier1]
    np.testing.assert_allclose(frac, frac[0], rtol=1e-12)
    if demand_scale == 1.0:
        assert frac[0] == pytest.approx(1.0, abs=1e-15)
    else:  # energy-limited within the step: tier 1 shares what the pumps left
        assert frac[0] < 0.5
        assert served.sum() == pytest.approx(atp, rel=1e-12)
    # the chains slow by the same factor as the other tier-1 consumers, at 4 ATP per aa
    assert units == pytest.approx(frac[0] * full_units, rel=1e-12)
    assert served[k] == pytest.approx(frac[0] * want[k], rel=1e-12)
    assert out.ledger.work[0, k] == pytest.approx(served[k] / ATP_PER_AA, rel=1e-12)


# ------------------------------------------------------------------ chain reference, generic
def test_chain_agents_equal_the_kernel_with_tools_memory_and_budgets():
    n, slots, dt, steps = 3, 8, 0.5, 120
    p = ck.biology_params(dt, init_rate=0.2, init_cost=2.0, p_tool=0.01, tool_steps=3, r_tool=20.0,
                          mem_threshold=150.0, mem_cost=0.5, p_stop=1 / 100, n_max=500.0,
                          c1=np.array([0.0, 0.01, 0.02]))
    budget = np.array([1e9, 60.0, 30.0])
    key = jax.random.PRNGKey(5)
    chains, ledger = ck.empty(n, slots)
    step = jax.jit(lambda c, l, t: ck.chain_step(c, l, p, key, t, budget))

    agents = [[Chain.from_state(chains, c, s) for s in range(slots)] for c in range(n)]
    leds = [{f: 0.0 for f in CHAIN_LEDGER_FIELDS} for _ in range(n)]
    g = lambda name, c: float(np.broadcast_to(np.asarray(getattr(p, name)), (n,))[c])  # noqa: E731
    for t in range(steps):
        chains, ledger, spent = step(chains, ledger, t)
        u = np.asarray(rng.uniforms(key, t, ck.CHAIN_DRAW, jax.numpy.arange(n * slots, dtype=jax.numpy.uint32))).tolist()
        for c in range(n):
            P = ChainStep(rate_dt=g("rate", c) * dt, c0=g("c0", c), c1=g("c1", c), p_stop=g("p_stop", c),
                          n_max=g("n_max", c), l0=g("l0", c), p_init=-math.expm1(-g("init_rate", c) * dt),
                          init_cost=g("init_cost", c), p_tool=g("p_tool", c), tool_steps=int(p.tool_steps),
                          r_tool=g("r_tool", c), mem_threshold=g("mem_threshold", c), mem_factor=g("mem_factor", c),
                          mem_cost=g("mem_cost", c))
            sp, _ = step_chains(agents[c], P, leds[c], u, float(budget[c]))
            assert sp == pytest.approx(float(spent[c]), rel=1e-9, abs=1e-9)
    flat = [a for row in agents for a in row]
    got = dict(active=[a.active for a in flat], length=[a.length for a in flat], made=[a.made for a in flat],
               tool_wait=[a.tool_wait for a in flat])
    for name, vals in got.items():
        np.testing.assert_allclose(np.asarray(vals, float), np.asarray(getattr(chains, name), float).ravel(),
                                   rtol=1e-9, atol=1e-12, err_msg=name)
    for f in CHAIN_LEDGER_FIELDS:
        np.testing.assert_allclose([leds[c][f] for c in range(n)], np.asarray(getattr(ledger, f)), rtol=1e-9,
                                   atol=1e-12, err_msg=f)
    assert all(sum(led[f] for led in leds) > 0 for f in ("tool_calls", "compressions", "delivered", "initiated"))
