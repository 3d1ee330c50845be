"""One uniform per row decides every slot's independent event exactly (sim.core.rare_events), and
the biology failure process built on it equals the dense per-cell evaluation (issue 10)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.core import rare_events

jax.config.update("jax_enable_x64", True)


def _pattern_measure(rates, dt, n_grid):
    """The measure of each pattern over a midpoint grid of u in [0, 1)."""
    u = (np.arange(n_grid) + 0.5) / n_grid
    got = rare_events.pattern(u, np.broadcast_to(rates, (n_grid, rates.size)), dt, xp=np)
    codes = got @ (1 << np.arange(rates.size))
    return np.bincount(codes, minlength=2 ** rates.size) / n_grid


def _exact(rates, dt):
    p = -np.expm1(-rates * dt)
    out = np.zeros(2 ** rates.size)
    for bits in itertools.product([0, 1], repeat=rates.size):
        b = np.array(bits[::-1], bool)  # slot s is bit s
        out[int(b @ (1 << np.arange(rates.size)))] = np.prod(np.where(b, p, 1 - p))
    return out


@pytest.mark.parametrize("rates", [[0.5, 2.0, 0.0, 1.0], [3.0, 3.0, 3.0, 3.0, 3.0], [0.1, 0.0, 0.0, 7.0]])
def test_every_pattern_has_its_product_probability(rates):
    rates = np.array(rates)
    measure = _pattern_measure(rates, 0.2, 2 ** 20)
    exact = _exact(rates, 0.2)
    # u -> pattern is piecewise constant over a few intervals per pattern: grid error ~ 1/N each
    np.testing.assert_allclose(measure, exact, atol=2e-5)
    assert measure[exact == 0].sum() == 0  # a slot with no hazard never has the event


def test_rare_rates_conditional_on_an_event():
    # rates of the biology preset's order (1e-5..1e-3 per s, dt 0.02 s): at least one event has
    # probability q ~ 1e-4, so a u grid cannot see it; the pattern given u = q v must have the
    # conditional probabilities prob / q for v uniform
    rates = np.array([1e-3, 2e-5, 0.0, 5e-4, 1e-5])
    dt = 0.02
    q = -np.expm1(-rates.sum() * dt)
    n = 2 ** 20
    v = (np.arange(n) + 0.5) / n
    got = rare_events.pattern(q * v, np.broadcast_to(rates, (n, rates.size)), dt, xp=np)
    codes = got @ (1 << np.arange(rates.size))
    measure = np.bincount(codes, minlength=2 ** rates.size) / n
    exact = _exact(rates, dt) / q
    exact[0] = 0.0  # u < q: never no event
    np.testing.assert_allclose(measure, exact, atol=3e-6)
    singles = [1 << s for s in range(rates.size)]
    assert np.isclose(measure[singles].sum(), 1.0, atol=1e-3)  # almost always exactly one
    assert not got[q * v >= q].any()


def test_jax_and_numpy_samplers_agree():
    rng = np.random.default_rng(1)
    rates = rng.exponential(2.0, (5000, 16)) * (rng.random((5000, 16)) < 0.7)
    u = rng.random(5000)
    a = rare_events.pattern(u, rates, 0.05, xp=np)
    b = np.asarray(jax.jit(lambda u, r: rare_events.pattern(u, r, 0.05))(u, rates))
    np.testing.assert_array_equal(a, b)
    assert 0 < a.sum() < a.size


@pytest.mark.parametrize("n_rows", [1, 31, 100, 257])
def test_candidate_loop_resolves_each_candidate_once(n_rows):
    rng = np.random.default_rng(n_rows)
    rates = rng.exponential(1.0, (n_rows, 6))
    u = rng.random(n_rows)
    cand = rng.random(n_rows) < 0.3
    cand[-1] = True  # a window clamped at the end overlaps rows resolved before
    counts = np.zeros(n_rows)

    @jax.jit
    def run(u, rates, cand):
        def resolve(rows, carry, pending):
            u_w, rates_w = rows
            fails, seen = carry
            return fails | rare_events.pattern(u_w, rates_w, 0.3, pending), seen + pending

        return rare_events.resolve_candidates(cand, (u, rates), (jnp.zeros(rates.shape, bool), jnp.asarray(counts)),
                                              resolve, window=32)

    fails, seen = map(np.asarray, run(u, rates, cand))
    np.testing.assert_array_equal(seen, cand.astype(float))  # every candidate once, nothing else
    dense = rare_events.pattern(u, rates, 0.3, xp=np)
    np.testing.assert_array_equal(fails, dense & cand[:, None])


def test_bound_is_never_below_the_exact_probability():
    rng = np.random.default_rng(3)
    health = rng.random((2000, 16))
    alive = rng.random((2000, 16)) < 0.6
    h0, beta, dt = 1e-3, 5.0, 0.02
    rates = np.where(alive, h0 * np.exp(beta * (1 - health)), 0.0)
    h_min = np.where(alive, health, 1.0).min(1)
    bound = rare_events.bound_probability(16 * h0 * np.exp(beta * (1 - h_min)), dt, xp=np)
    q = -np.expm1(-rates.sum(1) * dt)
    assert np.all(bound >= q) and np.all(bound > 0)


@pytest.mark.parametrize("hazard, many", [(0.5, True), (1e-3, False)])
def test_biology_failures_equal_the_dense_evaluation_and_their_rates(hazard, many):
    """The failure kernel (bound + candidates resolved window by window) gives, cell by cell, the
    pattern of the dense sampler on every cell, and over many cells each slot fails at
    1 - exp(-hazard dt); with few candidates (one window each) and with most cells candidates."""
    from _support import bio_substrate

    from sim.rng import PRODUCER_FAILURE_CELL, uniforms
    from sim.substrates.bio.build import build
    from sim.substrates.bio.kernels.fate import producer_failure

    sub = bio_substrate()
    sub["producers"]["hazard_per_s"] = hazard
    b = build(dict(substrate=sub, topology=dict(kind="ring", n_cells=4000), seed=0, dt=0.02))
    state, params = b.state, b.params
    rng = np.random.default_rng(0)
    health = rng.uniform(0.5, 1.0, state.producers.health.shape)
    alive = rng.random(health.shape) < 0.8
    from sim.pytree import replace

    state = replace(state, producers=replace(state.producers, health=jnp.asarray(health), alive=jnp.asarray(alive)))
    key = jax.random.PRNGKey(7)
    out = jax.jit(producer_failure)(state, params, key)
    failed = alive & ~np.asarray(out.producers.alive)
    assert not (np.asarray(out.producers.alive) & ~alive).any()  # no producer comes back
    c, p = alive.shape
    u = np.asarray(uniforms(key, state.step, PRODUCER_FAILURE_CELL, jnp.arange(c, dtype=jnp.uint32)))
    slot_hazard = float(params.hazard0) * np.exp(float(params.hazard_beta) * (1 - health))
    rates = np.where(alive, slot_hazard, 0.0)
    expected = rare_events.pattern(u, rates, float(params.dt), xp=np)
    np.testing.assert_array_equal(failed, expected)
    np.testing.assert_array_equal(np.asarray(out.ledger.failures) - np.asarray(state.ledger.failures), expected.sum(1))
    h_min = np.where(alive, health, 1.0).min(1)
    bound = rare_events.bound_probability(p * float(params.hazard0) * np.exp(float(params.hazard_beta) * (1 - h_min)),
                                          float(params.dt), xp=np)
    n_cand = (u < bound).sum()
    assert (n_cand > c // 2) if many else (0 < n_cand < 64), n_cand  # the regime this case is about
    assert failed.sum() > 0
    # rates: the expected number of failures and its binomial spread
    prob = np.where(alive, -np.expm1(-slot_hazard * float(params.dt)), 0.0)
    mean, sd = prob.sum(), np.sqrt((prob * (1 - prob)).sum())
    assert abs(failed.sum() - mean) < 5 * sd + 3, (failed.sum(), mean, sd)


def test_candidate_loop_under_vmap_equals_each_replicate_alone():
    """The batching rule folds replicates into rows (one loop for the whole batch): every
    replicate's result is what it gets alone, with batched and unbatched operands, nested vmap too."""
    rng = np.random.default_rng(5)
    r, n, s = 6, 50, 4
    rates = rng.exponential(1.0, (r, n, s))
    u = rng.random((r, n))
    cand = rng.random((r, n)) < 0.2
    cand[2] = False  # a replicate without candidates

    def one(u, rates, cand, scale):
        def resolve(rows, carry, pending):
            u_w, rates_w, scale_w = rows
            return carry | rare_events.pattern(u_w, rates_w * scale_w[:, None], 0.3, pending)

        rows = (u, rates, jnp.broadcast_to(scale, u.shape))
        return rare_events.resolve_candidates(cand, rows, jnp.zeros(rates.shape, bool), resolve, window=8)

    alone = np.stack([np.asarray(jax.jit(one)(u[i], rates[i], cand[i], 1.0 + i)) for i in range(r)])
    batched = np.asarray(jax.jit(jax.vmap(one))(u, rates, cand, 1.0 + np.arange(r)))
    np.testing.assert_array_equal(batched, alone)
    shared = np.asarray(jax.jit(jax.vmap(one, in_axes=(0, None, 0, None)))(u, rates[0], cand, 2.0))
    np.testing.assert_array_equal(shared, np.stack([np.asarray(one(u[i], rates[0], cand[i], 2.0)) for i in range(r)]))
    nested = np.asarray(jax.jit(jax.vmap(jax.vmap(one)))(u.reshape(2, 3, n), rates.reshape(2, 3, n, s),
                                                         cand.reshape(2, 3, n), (1.0 + np.arange(r)).reshape(2, 3)))
    np.testing.assert_array_equal(nested.reshape(alone.shape), alone)
    assert alone.any() and not alone[2].any()


def test_dense_passes_equal_the_candidate_loops_bit_for_bit():
    """``rare_events.dense()`` (how the engine traces the rare events for rows on several devices)
    changes no bit of a biology tissue with many failures, births and deaths, batched over replicates:
    every state leaf after 150 steps equals the candidate loops'."""
    from _support import bio_substrate

    from sim.core import engine
    from sim.rng import replicate_keys
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    sub = bio_substrate()
    sub["producers"]["hazard_per_s"] = 0.05
    sub["producers"]["birth_per_s"] = 1.0
    b = build(dict(substrate=sub, topology=dict(kind="ring", n_cells=300), seed=0, dt=0.02))
    state = engine.broadcast_state(b.state, 3)
    keys = replicate_keys(5, 3)

    def run(s, p, k):
        return jax.lax.fori_loop(0, 150, lambda i, x: BIO.step(x, p, k), s)

    loops = jax.jit(jax.vmap(run, in_axes=(0, None, 0)))(state, b.params, keys)
    with rare_events.dense():
        dense = jax.jit(jax.vmap(run, in_axes=(0, None, 0)))(state, b.params, keys)
    assert int(np.sum(loops.ledger.failures)) > 100 and int(np.sum(loops.ledger.births)) > 100
    for a, d in zip(jax.tree_util.tree_leaves(loops), jax.tree_util.tree_leaves(dense)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(d))
