"""The plain numpy baseline of ``make bench`` (``bench/numpy_step.py``) is the engine's step.

* its Threefry-2x32 and ``fold_in`` reproduce ``jax.random`` / ``sim.rng.uniforms`` bit for bit;
* a 24-cell small-world tissue run for 300 steps by the JAX engine (``sim.core.engine.run``) and by the
  numpy step agrees leaf by leaf to 1e-12 (relative to each field's scale; the adenylate-kinase
  ledger, a small net of large opposing flows, relative to the pools) in float64, with every
  discrete field (alive masks, chain slots, event counts) equal: once on the shipped preset (chains
  initiating and terminating) and once with test overrides that make producers fail, wear, get
  repaired and be reborn, junctions leak, and cells starve and die during the run (each event is
  asserted to have happened, so the comparison covers those branches);
* the PCG64 variant (timed by the bench, another random stream) keeps the books: adenine and
  ATP ledgers balance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _support import bio_substrate

import sim  # noqa: F401  (float64)
from sim import rng
from sim.core import engine
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.build import build
from sim.substrates.bio.state import ADP, AMP, ATP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.numpy_step import NumpyTissue, ThreefryDraws, fold_in  # noqa: E402

STEPS = 300
RTOL = 1e-12
# ledgers that accumulate a small net of large opposing flows each step (adenylate kinase makes and
# uses ATP every step; its net stays ~1e-2 mM while it moves ~mM): compared relative to the pools
NET_FLOWS = (".ledger.ak_atp",)


def events_cfg(seed=3):
    """Failures, wear and repair, births, leaky junctions, starving cells that die (as in
    tests/test_backends_agree.py)."""
    sub = bio_substrate()
    prod = sub["producers"]
    prod["hazard_per_s"] = 0.05
    prod["birth_per_s"] = 0.5
    prod["kinds"]["mitochondrion"]["damage_per_s"] = 0.05
    sub["consumers"]["demand_total_mm_per_s"] = 1.0
    sub["consumers"]["demand_cv"] = 1.0
    sub["supply"]["uptake_cv"] = 1.0
    sub["cell"]["stress_death_s"] = 2.0
    sub["cell"]["stress_threshold"] = 0.95
    sub["transport"]["loss_fraction"] = 0.05
    sub["transport"]["permeability"]["amp"] = 0.5
    return dict(substrate=sub, topology=dict(kind="small_world", n_cells=24, k=4, p=0.1), seed=seed, dt=0.05)


def preset_cfg(seed=1):
    return dict(substrate=bio_substrate(), topology=dict(kind="small_world", n_cells=24, k=4, p=0.1), seed=seed, dt=0.02)


def leaves(state):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state)}


def run_both(cfg, steps=STEPS):
    model = build(cfg)
    r = engine.run(BIO, model.state, model.params, seed=cfg["seed"], steps=steps, record_every=steps)
    assert r.error is None
    eng = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], jax.device_get(r.state))
    key = rng.replicate_keys(cfg["seed"], 1, 0)[0]
    tissue = NumpyTissue(model.state, model.params, key).run(steps)
    return model, eng, tissue.state()


def assert_agree(eng, ref):
    a, b = leaves(eng), leaves(ref)
    assert a.keys() == b.keys()
    worst = {}
    for k in a:
        x, y = a[k], np.asarray(b[k])
        assert x.shape == y.shape, k
        if x.dtype.kind in "biu":
            assert np.array_equal(x, y), f"{k}: {np.sum(x != y)} entries differ"
            continue
        scale = max(float(np.max(np.abs(x))), 1e-300) if x.size else 1.0
        if k in NET_FLOWS:  # a small net of opposing per-step flows: measured against the pools it moves
            scale = max(scale, float(np.max(a[".cells.pools"])))
        worst[k] = float(np.max(np.abs(x - y))) / scale if x.size else 0.0
    bad = {k: v for k, v in worst.items() if not v <= RTOL}
    assert not bad, bad
    return max(worst.values())


def test_threefry_is_jax():
    key = rng.replicate_keys(11, 4, 0)[3]
    words = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    k2 = fold_in(words, np.uint32(7))
    assert [int(v) for v in k2] == [int(v) for v in np.asarray(jax.random.fold_in(key, 7))]
    ids = np.arange(5000, dtype=np.uint32)
    draws = ThreefryDraws(key)
    for step, purpose in ((0, rng.PRODUCER_FAILURE), (12345, rng.PRODUCER_BIRTH), (2**31 - 1, 41)):
        want = np.asarray(rng.uniforms(key, jnp.int32(step), purpose, jnp.asarray(ids)))
        got = draws(step, purpose, ids.size)
        assert np.array_equal(want, got), (step, purpose)


def test_preset_agrees_with_engine():
    model, eng, ref = run_both(preset_cfg())
    assert_agree(eng, ref)
    led = eng.chain_ledger
    assert led.delivered.sum() > 0 and led.initiated.sum() > 0  # chains terminated and restarted


def test_events_agree_with_engine():
    model, eng, ref = run_both(events_cfg())
    worst = assert_agree(eng, ref)
    led, cells = eng.ledger, eng.cells
    assert led.failures.sum() > 50 and led.births.sum() > 20  # failures and biogenesis happened
    assert led.repair_health.sum() > 0 and led.lost.sum() > 0  # wear + repair, leaky junctions
    assert 0 < cells.alive.sum() < cells.alive.size  # some cells starved to death, some live
    assert eng.chain_ledger.delivered.sum() > 0
    assert worst < RTOL


def test_pcg64_variant_keeps_the_books():
    cfg = events_cfg(seed=5)
    model = build(cfg)
    t = NumpyTissue(model.state, model.params, draws="pcg64", seed=0).run(200)
    s0, s = model.state, t.state()
    n0 = s0.cells.pools[:, [ATP, ADP, AMP]].sum()
    lost = s.ledger.lost[:, [ATP, ADP, AMP]].sum()
    assert s.cells.pools[:, [ATP, ADP, AMP]].sum() + lost == pytest.approx(n0, rel=1e-12)
    led = s.ledger
    atp_in = led.produced + led.ak_atp + led.transported_in
    atp_out = led.spent.sum(axis=1) + led.repair_spent + led.birth_spent + led.transported_out
    np.testing.assert_allclose(s.cells.pools[:, ATP] - s0.cells.pools[:, ATP], atp_in - atp_out, atol=1e-11)
    assert led.failures.sum() > 0 and led.births.sum() > 0
