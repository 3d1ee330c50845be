"""Physiology of one resting cell of the biology preset, simulated with the JAX engine (float64).

Reference ranges are those of docs/references.md ("Biology" and the supply-demand
sketch). The engine's pools are the FREE nucleotides (dG and kinetics); the energy charge and the
ADP/AMP contents are checked on the TOTALS, bound pools included (``bio.yaml: bound.*``). Damage, hazard and biogenesis are switched off, so the cell has a true
steady state; it is compared with the independent scipy root of ``sim.analysis.supply_demand``.
Protein synthesis runs as chains (ribosome cohorts) in their deterministic mode: no termination
(``params.chain_p_stop = 0``), so all 8 cohorts translate throughout and the chains' demand is
``c0 x rate x A'/(K + A') x slots`` per step, rationed in tier 1 like the other consumers; the
solver derives the same demand from the chain parameters (slots, elongation rate, occupancy 1).
The stochastic chains (termination, initiation) are tested in tests/test_bio_chains.py.
Every simulated point runs in one batched engine call (``batched_params``), once per module.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

from _support import quiet_bio_substrate

import sim  # noqa: F401  (switches on float64)
from sim.core import engine
from sim.substrates.bio import SUBSTRATE as BIO
from sim.analysis import supply_demand as sd
from sim.substrates.bio.kernels.thermo import adenylate_equilibrium, dg_atp_kj, energy_charge, energy_charge_of
from sim.substrates.bio.build import build
from sim.substrates.bio.state import ADP, AMP, ATP, GLC, PI

DT = 0.02  # s
RECORD_EVERY = 500
SETTLE_STEPS = 20_000  # 400 s: glucose relaxes with tau ~ 1/uptake = 20 s, so e^-20 of the start
WINDOW_STEPS = 20_000  # a second 400 s at steady state, over which fluxes are averaged
DELTA = 1e-3  # relative perturbation for the simulated control coefficients
DEMAND_GRID = tuple(np.round(np.linspace(1.0, 2.0, 11), 10))
FLUX_RANGE = (0.375, 0.5, 0.75, 1.0, 1.5)  # 4x range of flux
NO_DEATH = 1e12  # s: stress never kills (the energy-limited cells are kept alive to be measured)

POINTS = (
    [dict(demand_scale=d) for d in DEMAND_GRID]
    + [dict(demand_scale=d) for d in FLUX_RANGE if d not in DEMAND_GRID]
    + [
        dict(supply_scale=1 + DELTA),
        dict(supply_scale=1 - DELTA),
        dict(demand_scale=1 + DELTA),
        dict(demand_scale=1 - DELTA),
        # energy-limited cells: supply capacity 0.15 mM/s against 0.5 (or 10) mM/s of demand
        dict(supply_scale=0.1, demand_scale=1.0, stress_death_s=NO_DEATH),
        dict(supply_scale=0.1, demand_scale=20.0, stress_death_s=NO_DEATH),
    ]
)


def key(**kw):
    full = dict(supply_scale=1.0, demand_scale=1.0, stress_death_s=None)
    full.update(kw)
    return tuple(sorted((k, v) for k, v in full.items()))


substrate = quiet_bio_substrate


def stack_params(plist):
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *plist)


@pytest.fixture(scope="module")
def model():
    cfg = dict(substrate=substrate(), topology=dict(kind="single"), seed=0, dt=DT, params=dict(chain_p_stop=0.0))
    return build(cfg)


@pytest.fixture(scope="module")
def sims(model):
    """Steady states of every point: pools, per-consumer spent rate, and the flux (mM/s)."""
    plist = [
        dataclasses.replace(model.params, **{k: np.asarray(v, np.float64) for k, v in pt.items()})
        for pt in POINTS
    ]
    params = stack_params(plist)
    assert params.supply_scale.dtype == np.float64
    r1 = engine.run(
        BIO, model.state, params, seed=0, steps=SETTLE_STEPS, record_every=RECORD_EVERY,
        replicates=len(POINTS), batched_params=True,
    )
    assert r1.error is None
    r2 = engine.run(
        BIO, r1.state, params, seed=0, steps=WINDOW_STEPS, record_every=RECORD_EVERY,
        replicates=len(POINTS), batched_params=True, start_step=SETTLE_STEPS,
    )
    assert r2.error is None
    window_s = WINDOW_STEPS * DT
    spent = (np.asarray(r2.state.ledger.spent) - np.asarray(r1.state.ledger.spent))[:, 0, :] / window_s
    produced = (np.asarray(r2.state.ledger.produced) - np.asarray(r1.state.ledger.produced))[:, 0] / window_s
    pools = np.asarray(r2.state.cells.pools)[:, 0, :]
    out = {}
    for i, pt in enumerate(POINTS):
        out[key(**pt)] = dict(
            pools=pools[i],
            consumer_rates=spent[i],
            flux=spent[i].sum(),
            produced=produced[i],
            alive=bool(np.asarray(r2.state.cells.alive)[i, 0]),
            # drift of the pools over the last record interval (convergence check)
            drift=np.abs(r2.records["pools"][i, -1, 0] - r2.records["pools"][i, -2, 0]),
            chains_active=int(np.asarray(r2.state.chains.active)[i, 0].sum()),
            chain_aa_per_s=float(np.asarray(r2.state.chain_ledger.units - r1.state.chain_ledger.units)[i, 0]) / window_s,
            params=pt,
        )
    return out


def ec_dg(pools, model):
    """Energy charge of the total pools and dG (kJ/mol) of the free ones."""
    a, d, pi = pools[ATP], pools[ADP], pools[PI]
    ec = float(energy_charge_of(pools, model.params, xp=np))
    dg = float(dg_atp_kj(a, d, pi, float(model.params.dg0_kj), float(model.params.temperature_k), xp=np))
    return ec, dg


def test_resting_cell_is_converged_and_in_physiological_ranges(sims, model):
    rest = sims[key()]
    p = rest["pools"]
    assert rest["alive"]
    assert np.all(rest["drift"] <= 1e-12 * np.maximum(p, 1.0)), rest["drift"]
    ec, dg = ec_dg(p, model)
    flux = rest["flux"]
    turnover = p[ATP] / flux
    adp_total = p[ADP] + float(model.params.adp_bound)
    amp_total = p[AMP] + float(model.params.amp_bound)
    # the bands of issue 11: energy charge 0.80-0.95 (Atkinson 1968), AMP tens of uM, dG -50..-60
    assert 0.80 <= ec <= 0.95, ec
    assert 0.01 <= amp_total <= 0.1, amp_total
    assert -60.0 <= dg <= -50.0, dg
    assert 1.0 <= turnover <= 60.0, turnover
    # most ADP and AMP is bound: the free pools alone would read a charge of ~0.98
    assert float(energy_charge(p[ATP], p[ADP], p[AMP], xp=np)) > 0.97
    assert p[ADP] < 0.5 * adp_total and p[AMP] < 0.2 * amp_total
    # literature ranges (docs/references.md)
    assert 1.0 <= p[ATP] <= 8.0  # cytosolic ATP ~5 mM; survey 3.15 +- 1.70 mM (Traut 1994)
    assert 0.3 <= adp_total <= 1.0  # ~0.5 mM total ADP in tissue
    assert p[ADP] <= 0.25  # free ADP well below the total (Veech 1979)
    assert 1.0 <= p[PI] <= 5.0  # ~1-5 mM (Traut 1994)
    assert 4.0 - 1e-9 <= p[ATP] + adp_total + amp_total <= 8.0  # total adenine 4-8 mM (Beard lab)
    assert -60.0 <= dg <= -50.0  # in vivo -50 to -60 kJ/mol
    assert 0.3 <= flux <= 1.2  # 0.4 mM/s resting heart, 0.5 neocortex (1.2 exercise)
    assert 6.0 <= turnover <= 18.0  # ~6 s neocortex, 6-18 s heart
    assert 2.0 <= p[GLC] <= 5.0  # between the K_S of hexokinase and plasma glucose
    # production balances consumption at the steady state
    assert rest["produced"] == pytest.approx(flux, rel=1e-12)
    # protein synthesis ran as chains: 8 cohorts at ~5 aa/s (A'/(K + A') of 5 aa/s), ~30% of ATP use
    slots = model.state.chains.active.shape[1]
    assert rest["chains_active"] == slots == 8
    k_ps = model.consumer_kinds.index("protein_synthesis")
    sat = (p[ATP] - 1.0) / (0.1 + p[ATP] - 1.0)
    assert rest["chain_aa_per_s"] / slots == pytest.approx(5.0 * sat, rel=1e-9)
    assert 0.27 <= rest["consumer_rates"][k_ps] / flux <= 0.33


def test_demand_lowers_energy_charge_smoothly(sims, model):
    ecs, dgs, atps = [], [], []
    for d in DEMAND_GRID:
        s = sims[key(demand_scale=d)]
        assert s["alive"]
        ec, dg = ec_dg(s["pools"], model)
        ecs.append(ec)
        dgs.append(dg)
        atps.append(s["pools"][ATP])
    ecs, dgs = np.array(ecs), np.array(dgs)
    steps = -np.diff(ecs)
    assert np.all(steps > 0), ecs  # strictly monotone
    assert np.all(np.diff(dgs) > 0), dgs  # |dG| falls as demand rises
    assert ecs[-1] > 0.7, ecs  # no collapse at 2x demand
    # no jump: no 0.1 step of demand carries a third of the fall, nor twice its neighbour's drop
    assert steps.max() < (ecs[0] - ecs[-1]) / 3.0, steps
    assert np.all(steps[1:] < 2.0 * steps[:-1]), steps
    # and the sketch's numbers (docs/references.md): EC of the free pools ~0.87 (0.82 with the
    # bound pools) and dG ~ -47 at 2x, turnover ~3 s
    assert 0.8 <= ecs[-1] <= 0.9
    assert -50.0 <= dgs[-1] <= -44.0
    s2 = sims[key(demand_scale=2.0)]
    assert 2.0 <= s2["pools"][ATP] / s2["flux"] <= 4.0


def test_atp_is_homeostatic_over_a_4x_range_of_flux(sims, model):
    rest = sims[key()]["pools"][ATP]
    fluxes, atps = [], []
    for d in FLUX_RANGE:
        s = sims[key(demand_scale=d)]
        fluxes.append(s["flux"])
        atps.append(s["pools"][ATP])
    fluxes, atps = np.array(fluxes), np.array(atps)
    assert fluxes[-1] / fluxes[0] >= 3.9, fluxes
    assert np.all(np.abs(atps / rest - 1.0) <= 0.20), atps / rest
    # still below supply saturation: the flux keeps following demand
    assert fluxes[-1] / sims[key()]["flux"] > 1.45
    cm = sd.cell_from_model(model)
    ceiling = sd.supply_capacity(cm)  # ~1.14 mM/s, reached near 2.5x resting demand
    assert fluxes[-1] < 0.75 * ceiling, (fluxes[-1], ceiling)


@pytest.mark.parametrize(
    "pt",
    [
        dict(),
        dict(demand_scale=0.375),
        dict(demand_scale=1.5),
        dict(demand_scale=2.0),
        dict(supply_scale=1 + DELTA),
    ],
    ids=["rest", "d0.375", "d1.5", "d2", "s+"],
)
def test_simulation_equals_independent_root(sims, model, pt):
    s = sims[key(**pt)]
    ss = sd.solve_steady_state(sd.cell_from_model(model, **pt))
    assert abs(ss.residual_atp) < 1e-12 and abs(ss.residual_glucose) < 1e-12
    p = s["pools"]
    got = dict(atp=p[ATP], adp=p[ADP], amp=p[AMP], pi=p[PI], glucose=p[GLC], flux=s["flux"])
    want = dict(atp=ss.atp, adp=ss.adp, amp=ss.amp, pi=ss.pi, glucose=ss.glucose, flux=ss.flux)
    for name in got:
        assert got[name] == pytest.approx(want[name], rel=1e-6), name
    np.testing.assert_allclose(s["consumer_rates"], ss.consumer_rates, rtol=1e-6)


def test_flux_control_coefficients(sims, model):
    lnr = math.log(1 + DELTA) - math.log(1 - DELTA)

    def c(name):
        up, dn = sims[key(**{name: 1 + DELTA})]["flux"], sims[key(**{name: 1 - DELTA})]["flux"]
        return (math.log(up) - math.log(dn)) / lnr

    c_supply, c_demand = c("supply_scale"), c("demand_scale")
    assert abs(c_supply + c_demand - 1.0) < 1e-3, (c_supply, c_demand)
    assert c_demand > 0.9
    assert 0.0 < c_supply < 0.1
    # the independent solver: elasticities (Hofmeyr & Cornish-Bowden 2000) and re-solving
    cm = sd.cell_from_model(model)
    el = sd.elasticities(cm)
    assert el["e_supply"] < 0 < el["e_demand"]
    cs, cd = sd.control_coefficients(el["e_supply"], el["e_demand"])
    num = sd.numerical_control_coefficients(cm)
    assert sum(num.values()) == pytest.approx(1.0, abs=1e-6)  # summation theorem
    assert cs == pytest.approx(num["supply_scale"] + num["uptake_scale"], abs=1e-6)  # supply block
    assert cd == pytest.approx(num["demand_scale"], abs=1e-6)
    assert c_supply == pytest.approx(num["supply_scale"], abs=1e-5)
    assert c_demand == pytest.approx(num["demand_scale"], abs=1e-5)
    assert cd > 0.99  # the sketch: demand carries ~99.8% of the flux control


def test_priority_tiers_ration_an_energy_limited_cell(sims, model):
    """Supply 0.15 mM/s against 10 mM/s of demand: one step's demand (0.2 mM) exceeds the ATP pool,
    so tier 0 (ion pumps) is served first and tier 1 (biosynthesis) gets what is left
    (Buttgereit & Brand 1995 Biochem J 312:163)."""
    s = sims[key(supply_scale=0.1, demand_scale=20.0, stress_death_s=NO_DEATH)]
    tier = np.asarray(model.state.consumers.tier)[0]
    vmax = 20.0 * np.asarray(model.state.consumers.vmax)[0]
    km = np.asarray(model.state.consumers.km)[0]
    served = s["consumer_rates"] / vmax  # fraction of each consumer's capacity it gets
    a = s["pools"][ATP]
    assert vmax.sum() * DT > a  # energy-limited within a step
    f0, f1 = served[tier == 0], served[tier == 1]
    np.testing.assert_allclose(f0, a / (km[tier == 0] + a), rtol=1e-9)  # tier 0 gets its full demand
    assert f1.max() < 0.5 * f0.min(), (f0, f1)  # tier 1 is cut proportionally more
    np.testing.assert_allclose(f1, f1[0], rtol=1e-9)  # proportionally within a tier
    assert s["flux"] == pytest.approx(s["produced"], rel=1e-9)


def test_priority_tiers_at_a_supply_limited_steady_state(sims, model):
    """Buttgereit & Brand 1995: an energy-limited cell cuts biosynthesis before ion pumping."""
    s = sims[key(supply_scale=0.1, demand_scale=1.0, stress_death_s=NO_DEATH)]
    tier = np.asarray(model.state.consumers.tier)[0]
    served = s["consumer_rates"] / np.asarray(model.state.consumers.vmax)[0]
    assert served[tier == 1].max() < 0.9 * served[tier == 0].min(), served


def test_adenylate_kinase_equilibrium_random():
    rng = np.random.default_rng(12345)
    n_samples = 20_000
    k_ak = np.concatenate([rng.uniform(0.05, 3.0, n_samples - 2), [0.25, 0.45]])
    # arbitrary (not equilibrated) adenylate pools; the kernel takes (ATP, ADP, AMP)
    pools = rng.uniform(0.0, 1.0, (n_samples, 3)) * rng.uniform(0.01, 10.0, (n_samples, 1))
    a0, d0, m0 = pools.T
    n0, e0 = a0 + d0 + m0, 2 * a0 + d0
    fns = {
        "kernel": lambda: adenylate_equilibrium(a0, d0, m0, k_ak, xp=np),
        "kernel_jax": lambda: tuple(np.asarray(x) for x in adenylate_equilibrium(a0, d0, m0, k_ak)),
        "analysis": lambda: sd.ak_equilibrium(n0, e0, k_ak),
    }
    results = {}
    for name, fn in fns.items():
        a, d, m = (np.asarray(x, np.float64) for x in fn())
        assert np.all(a >= 0) and np.all(d >= 0) and np.all(m >= 0), name
        np.testing.assert_allclose(a + d + m, n0, rtol=1e-12, atol=0, err_msg=name)  # adenine N
        np.testing.assert_allclose(2 * a + d, e0, rtol=1e-12, atol=1e-15, err_msg=name)  # high-energy P
        ok = (d > 1e-6 * n0) & (m > 1e-6 * n0)  # K is ill-conditioned where D or AMP ~ 0
        assert ok.mean() > 0.9
        np.testing.assert_allclose((a * m / d**2)[ok], k_ak[ok], rtol=1e-8, err_msg=name)
        results[name] = np.stack([a, d, m])
    np.testing.assert_allclose(results["kernel"], results["analysis"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results["kernel_jax"], results["kernel"], rtol=1e-12, atol=1e-15)
    # the edges: E = 0 (all AMP) and E = 2N (all ATP)
    for e_frac, want in ((0.0, (0.0, 0.0, 1.0)), (1.0, (1.0, 0.0, 0.0))):
        got = sd.ak_equilibrium(4.0, 8.0 * e_frac, 0.45)
        np.testing.assert_allclose(np.array(got) / 4.0, want, atol=1e-15)
        a0, m0 = np.float64(4.0 * e_frac), np.float64(4.0 * (1 - e_frac))
        got = adenylate_equilibrium(a0, np.float64(0.0), m0, 0.45, xp=np)
        np.testing.assert_allclose(np.array(got, float) / 4.0, want, atol=1e-15)
