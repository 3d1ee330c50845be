"""Property-based tests (hypothesis) over random small tissues and parameters.

Array shapes are fixed across examples (a fixed number of cells and of edge slots; a random graph
is a random choice of slot endpoints and conductances, absent junctions having conductance 0), so
each jitted function compiles once and the 200 examples per property only change values.

Properties, for every configuration the validation accepts (``check_stability`` is the filter):
- pools stay finite and never go negative;
- transport creates nothing from nothing, on any topology (self-loops and parallel junctions
  included): per species, what cells hold plus what leaked is what they held before; cells
  without an open junction keep their pools exactly; ATP sent = ATP received + ATP leaked;
- over whole steps (metabolism, transport, adenylate kinase, failures, biogenesis, stress) the
  conserved carrier (adenine: ATP + ADP + AMP, plus leaks) and total phosphate balance, and each
  cell's currency ledger explains its ATP: dATP = produced - spent + AK + in - out.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import sim  # noqa: F401  (float64)
from sim.config.validate import check_stability
from sim.core.config import CONF_DIR
from sim.errors import ConfigError
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.kernels.transport import transport
from sim.substrates.bio.build import build
from sim.substrates.bio.state import ADP, AMP, ATP, N_SPECIES, PI

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
N_TRANSPORT_CELLS, N_EDGE_SLOTS, TRANSPORT_STEPS = 6, 12, 5
N_CELLS, STEPS = 5, 40
ADENINE = [ATP, ADP, AMP]
PHOSPHATE_WEIGHTS = np.zeros(N_SPECIES)
PHOSPHATE_WEIGHTS[[ATP, ADP, AMP, PI]] = [3.0, 2.0, 1.0, 1.0]


def _substrate(name):
    # OmegaConf, as Hydra loads it (PyYAML would read 1.0e6 as a string)
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "substrate" / f"{name}.yaml"), resolve=True)


def _model(n_cells, kind="complete", substrate="bio"):
    cfg = dict(substrate=_substrate(substrate), topology=dict(kind=kind, n_cells=n_cells), seed=0, dt=0.02)
    return build(cfg)


def _f64(x):
    return np.asarray(x, np.float64)


# ------------------------------------------------------------------------------- transport only


@jax.jit
def _transport_steps(state, params):
    def body(s, _):
        return transport(s, params), None

    return jax.lax.scan(body, state, None, length=TRANSPORT_STEPS)[0]


@pytest.fixture(scope="module")
def transport_model():
    return _model(N_TRANSPORT_CELLS, kind="ring")


# 0 or normal amounts: XLA on CPU flushes subnormals (5e-324 -> 0), which is no kernel's doing
_pools = st.lists(st.one_of(st.just(0.0), st.floats(1e-9, 10.0)),
                  min_size=N_TRANSPORT_CELLS * N_SPECIES, max_size=N_TRANSPORT_CELLS * N_SPECIES)
_ends = st.lists(st.integers(0, N_TRANSPORT_CELLS - 1), min_size=N_EDGE_SLOTS, max_size=N_EDGE_SLOTS)
_unit = st.lists(
    st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0, allow_subnormal=False)),
    min_size=N_EDGE_SLOTS, max_size=N_EDGE_SLOTS,
)


@PROPS
@given(
    pools=_pools, src=_ends, dst=_ends, g_raw=_unit,
    loss=st.lists(st.floats(0.0, 0.9), min_size=N_EDGE_SLOTS, max_size=N_EDGE_SLOTS),
    perm=st.lists(st.floats(0.0, 1.0), min_size=N_SPECIES, max_size=N_SPECIES),
    alive=st.lists(st.booleans(), min_size=N_TRANSPORT_CELLS, max_size=N_TRANSPORT_CELLS),
    courant=st.floats(0.0, 0.999), dt=st.sampled_from([1e-3, 0.02, 1.0, 50.0]), uniform=st.booleans(),
)
def test_transport_creates_nothing_from_nothing(
    transport_model, pools, src, dst, g_raw, loss, perm, alive, courant, dt, uniform
):
    m = transport_model
    src, dst, g_raw = np.array(src, np.int32), np.array(dst, np.int32), np.array(g_raw)
    if uniform:  # every present junction at the largest accepted conductance: the worst case
        g_raw = (g_raw > 0).astype(float)
    perm = np.array(perm)
    active = g_raw > 0
    deg = np.bincount(np.concatenate([src[active], dst[active]]), minlength=N_TRANSPORT_CELLS).max(initial=0)
    # the largest conductance the validation would accept, times a random Courant number < 1
    g_max = courant / (dt * max(deg, 1) * max(perm.max(), 1e-12))
    conductance = g_raw * g_max
    edges = dataclasses.replace(m.params.edges, src=src, dst=dst, conductance=conductance, loss=np.array(loss))
    params = dataclasses.replace(m.params, edges=edges, permeability=perm, dt=np.float64(dt))
    p0 = np.array(pools).reshape(N_TRANSPORT_CELLS, N_SPECIES)
    alive = np.array(alive)
    state = dataclasses.replace(m.state, cells=dataclasses.replace(m.state.cells, pools=p0, alive=alive))

    out = _transport_steps(state, params)
    p1, led = _f64(out.cells.pools), out.ledger
    assert np.isfinite(p1).all() and (p1 >= 0).all()
    lost = _f64(led.lost)
    # (an absolute floor: amounts below ~1e-300 underflow, which is not creation)
    np.testing.assert_array_less(np.abs(p1.sum(0) + lost.sum(0) - p0.sum(0)), 1e-12 * p0.sum(0) + 1e-250)
    atp_out, atp_in = _f64(led.transported_out).sum(), _f64(led.transported_in).sum()
    assert abs(atp_out - atp_in - lost[:, ATP].sum()) <= 1e-12 * atp_out + 1e-250
    # cells without an open junction (to another cell) hold exactly what they held
    open_ = active & alive[src] & alive[dst] & (src != dst)
    touched = np.zeros(N_TRANSPORT_CELLS, bool)
    touched[src[open_]] = touched[dst[open_]] = True
    np.testing.assert_array_equal(p1[~touched], p0[~touched])
    assert (lost >= 0).all()


# ------------------------------------------------------------------------------- whole steps


@jax.jit
def _steps(state, params, key):
    def body(s, _):
        return BIO.step(s, params, key), None

    return jax.lax.scan(body, state, None, length=STEPS)[0]


@pytest.fixture(scope="module", params=["bio"])  # generic: tests/test_generic_substrate.py
def step_model(request):
    return _model(N_CELLS, kind="complete", substrate=request.param)


def _amounts(hi, n):
    # 0 or a normal amount: XLA on CPU flushes subnormals, which no kernel is to blame for
    return st.lists(st.one_of(st.just(0.0), st.floats(1e-6, hi)), min_size=n, max_size=n).map(np.array)


@st.composite
def tissues(draw):
    c, e = N_CELLS, N_CELLS * (N_CELLS - 1) // 2
    fraction = st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-3, 1.0))
    return dict(
        edge_on=np.array(draw(st.lists(st.booleans(), min_size=e, max_size=e))),
        g=draw(st.one_of(st.just(0.0), st.floats(1e-6, 5.0))),
        loss=np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 0.05, 0.5]), min_size=e, max_size=e))),
        glc=draw(_amounts(10.0, c)),
        adenine=draw(_amounts(8.0, c)),
        charge=np.array(draw(st.lists(fraction, min_size=c, max_size=c))),
        amp_share=draw(st.one_of(st.just(0.0), st.floats(1e-3, 0.5))),
        pi=draw(_amounts(10.0, c)),
        cell_alive=np.array(draw(st.lists(st.sampled_from([True, True, True, False]), min_size=c, max_size=c))),
        health=draw(fraction),
        dt=draw(st.sampled_from([1e-3, 0.01, 0.02, 0.1])),
        scales={k: draw(st.floats(0.0, 3.0, allow_subnormal=False)) for k in ("supply_scale", "demand_scale", "uptake_scale")},
        rates={k: draw(st.sampled_from([0.0, 1e-3, 0.5, 5.0])) for k in ("hazard0", "birth_rate", "repair_rate")},
        external=draw(st.floats(0.0, 10.0, allow_subnormal=False)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _tissue_state(m, t):
    s = m.state
    a_plus_d = t["adenine"] * (1 - t["amp_share"])
    atp = a_plus_d * t["charge"]
    pools = np.stack([t["glc"], atp, a_plus_d - atp, t["adenine"] * t["amp_share"], t["pi"]], axis=1)
    cells = dataclasses.replace(s.cells, pools=pools, alive=t["cell_alive"])
    prod = dataclasses.replace(
        s.producers, health=np.full(s.producers.health.shape, t["health"]),
        alive=np.asarray(s.producers.alive) & t["cell_alive"][:, None],
    )
    state = dataclasses.replace(s, cells=cells, producers=prod)
    p = m.params
    edges = dataclasses.replace(p.edges, conductance=np.where(t["edge_on"], t["g"], 0.0), loss=t["loss"])
    changes = {k: np.float64(v) for k, v in {**t["scales"], **t["rates"]}.items()}
    params = dataclasses.replace(p, edges=edges, dt=np.float64(t["dt"]), external_substrate=np.float64(t["external"]), **changes)
    return state, params


@PROPS
@given(t=tissues())
def test_steps_keep_pools_and_ledgers_balanced(step_model, t):
    m = step_model
    state, params = _tissue_state(m, t)
    try:  # only what the validation accepts
        check_stability(dataclasses.replace(m, state=state, params=params), {})
    except ConfigError:
        assume(False)
    out = _steps(state, params, jax.random.PRNGKey(t["seed"]))
    p0, p1 = state.cells.pools, _f64(out.cells.pools)
    led = jax.tree_util.tree_map(_f64, out.ledger)
    assert np.isfinite(p1).all() and (p1 >= 0).all()
    assert int(np.asarray(out.step)) == STEPS

    # conserved carrier: adenine moves between ATP, ADP and AMP and cells, leaves only by leaks
    ad0 = p0[:, ADENINE].sum()
    ad1 = p1[:, ADENINE].sum() + led.lost[:, ADENINE].sum()
    assert abs(ad1 - ad0) <= 1e-12 * ad0 + 1e-250
    # total phosphate (Pi + 3 ATP + 2 ADP + AMP), leaks included
    ph0 = (p0 @ PHOSPHATE_WEIGHTS).sum()
    ph1 = (p1 @ PHOSPHATE_WEIGHTS).sum() + (led.lost @ PHOSPHATE_WEIGHTS).sum()
    assert abs(ph1 - ph0) <= 1e-12 * ph0 + 1e-250
    # each cell's currency ledger explains its ATP
    spent = led.spent.sum(1) + led.repair_spent + led.birth_spent
    booked = led.produced - spent + led.ak_atp + led.transported_in - led.transported_out
    scale = np.maximum(p0[:, ATP] + led.produced + spent + np.abs(led.ak_atp) + led.transported_in + led.transported_out, 1e-300)
    # (an absolute floor: amounts below ~1e-300 underflow in products such as ADP^2)
    np.testing.assert_array_less(np.abs((p1[:, ATP] - p0[:, ATP]) - booked), 1e-11 * scale + 1e-250)
    # junctions: what was sent arrived or leaked; ledgers only grow
    sent = led.transported_out.sum()
    assert abs(sent - led.transported_in.sum() - led.lost[:, ATP].sum()) <= 1e-12 * sent + 1e-250
    for name in ("produced", "repair_spent", "birth_spent", "transported_in", "transported_out", "substrate_uptake"):
        if name == "substrate_uptake":
            continue  # uptake is net exchange with the surroundings: it may be negative
        assert (getattr(led, name) >= 0).all(), name
    assert (led.spent >= 0).all() and (led.lost >= 0).all()
    # dead cells stay dead and make nothing
    dead0 = ~t["cell_alive"]
    assert not np.asarray(out.cells.alive)[dead0].any()
    assert (led.produced[dead0] == 0).all() and (led.spent[dead0] == 0).all()
