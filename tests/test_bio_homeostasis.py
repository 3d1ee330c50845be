"""Heart-like homeostasis options of the biology substrate (issue 11, item 3).

Parallel activation of ATP supply with demand (Korzeniewski 1998, 2017) and the creatine kinase
buffer (Lawson & Veech 1979 K_CK; Wallimann et al. 1992), in the directions the literature gives
(Balaban et al. 1986: ATP, PCr, Pi and dG nearly constant over a ~3-fold range of heart work):
- feedback only: ATP and |dG| fall noticeably between 1x and 3x work, PCr falls and Pi rises;
- parallel activation: ATP and dG stay within a few percent;
- the buffer: after a work step PCr falls first and ATP stays up (a temporal buffer).
Steady states come from the independent root finder and are checked against the engine (the
experiment's own batched call) at the extreme work rates; the transient runs the engine.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sim  # noqa: F401  (float64)
from sim.analysis import supply_demand as sd
from sim.core import engine
from sim.experiments import homeostasis as hs
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.state import ATP, ADP, AMP, GLC, PI

WORKS = (1.0, 3.0)
CREATINE = 25.0  # mM, heart (Wallimann et al. 1992)
SUPPLY = 2.0  # the experiment's heart-like oxidative capacity


def _cfg():
    from sim.core.config import compose

    return compose(["experiment=homeostasis", "dt=0.02"])


@pytest.fixture(scope="module")
def models():
    cfg = _cfg()
    opt = hs.options(cfg)
    assert opt["creatine_total_mm"] == CREATINE and opt["supply_scale"] == SUPPLY
    return hs.heart_models(cfg, opt)


@pytest.fixture(scope="module")
def roots(models):
    return {c: hs.root_steady_states(m, WORKS, (0.0, 1.0)) for c, m in models.items()}


def rel(x):
    return x[-1] / x[0] - 1.0


def test_feedback_only_lets_atp_and_dg_fall(roots):
    r = roots[0.0]
    assert rel(r["flux"][0]) > 1.9  # the flux follows work (x2.9: not supply-saturated)
    assert rel(r["atp"][0]) < -0.05, r["atp"][0]  # ATP falls noticeably (~ -9%)
    assert rel(-r["dg_atp"][0]) < -0.05, r["dg_atp"][0]  # |dG| falls (~ -55 -> -50 kJ/mol)
    assert rel(r["adp"][0]) > 3.0  # free ADP carries the feedback (x5.8)
    b = roots[CREATINE]
    assert rel(b["pcr"][0]) < -0.5, b["pcr"][0]  # PCr falls (~ -70%) and Pi rises (x3.5)
    assert rel(b["pi"][0]) > 1.0, b["pi"][0]


@pytest.mark.parametrize("creatine", [0.0, CREATINE])
def test_parallel_activation_holds_atp_and_dg(roots, creatine):
    r = roots[creatine]
    assert rel(r["flux"][1]) > 1.9
    for k in ("atp", "dg_atp", "pi", "energy_charge"):
        assert abs(rel(r[k][1])) < 0.02, (k, r[k][1])
    if creatine:
        assert abs(rel(r["pcr"][1])) < 0.02, r["pcr"][1]


@pytest.mark.slow  # ~40 s here (a batched compile and 200 s of simulated time)
def test_engine_steady_states_equal_the_roots(models, roots):
    """The experiment's batched engine call (no buffer: relaxation in seconds) lands on the roots."""
    m = models[0.0]
    got = hs.engine_steady_states(m, WORKS, (0.0, 1.0), settle_steps=10_000)  # 200 s: 10 glucose time constants
    for k in ("atp", "adp", "pi", "dg_atp", "flux"):
        np.testing.assert_allclose(got[k], roots[0.0][k], rtol=1e-6, err_msg=k)


def test_buffer_keeps_atp_up_while_pcr_falls(models):
    """Feedback only, a 3x work step from rest: over the first 3 s the buffer spends PCr and ATP
    stays within a few percent, while without it ATP falls by several times more."""
    dips, pcr_drop = {}, None
    for c, m in models.items():
        cm = sd.cell_from_model(m)
        ss = sd.solve_steady_state(cm)  # the resting steady state of this cell
        pools = np.asarray(m.state.cells.pools).copy()
        pools[0, [GLC, ATP, ADP, AMP, PI]] = [ss.glucose, ss.atp, ss.adp, ss.amp, ss.pi]
        cells = dataclasses.replace(m.state.cells, pools=pools, pcr=np.full(1, ss.pcr))
        state = dataclasses.replace(m.state, cells=cells)
        params = dataclasses.replace(m.params, demand_scale=np.asarray(3.0))
        r = engine.run(BIO, state, params, seed=0, steps=150, record_every=5)
        assert r.error is None
        atp = np.asarray(r.records["pools"])[0, :, 0, ATP]
        dips[c] = 1.0 - atp.min() / ss.atp
        if c:
            pcr = np.asarray(r.records["pcr"])[0, :, 0]
            pcr_drop = 1.0 - pcr[-1] / ss.pcr
    assert dips[0.0] > 0.05, dips  # no buffer: ATP falls ~8.5% within 3 s
    assert dips[CREATINE] < 0.04 and dips[CREATINE] < 0.5 * dips[0.0], dips  # the buffer holds ATP (~2.8%)
    assert pcr_drop > 0.1, pcr_drop  # by spending phosphocreatine
