"""The chains' compile-time shortcuts (issue 10, round two) change no number.

* ``chain_draws`` made once and handed to ``chain_demand`` and ``chain_step`` (``draws=``) gives the
  numbers each draws alone, and a quote-then-step traces the Threefry hash once (the biology step
  does this);
* ``ops.prefix_sum``, now without stacked running sums, is still the left-to-right chain of adds
  the budget's "cumulative cost fits" test compares, signed zeros, infinities and NaN included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import sim  # noqa: F401  (float64)
from sim.core import chains as ck
from sim.core.ops import prefix_sum


def _setup(n=4, slots=6):
    chains, ledger = ck.empty(n, slots)
    chains = ck.ChainSlots(active=np.arange(n * slots).reshape(n, slots) % 3 == 0,
                           length=np.full((n, slots), 7.0), made=np.full((n, slots), 7.0),
                           tool_wait=np.zeros((n, slots), np.int32))
    p = ck.biology_params(0.5, init_rate=1.5, init_cost=2.0, p_stop=1 / 20)
    return chains, ledger, p, jax.random.PRNGKey(3)


def _leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_draws_handed_over_equal_the_draws_made_inside():
    chains, ledger, p, key = _setup()
    budget = jnp.array([1e9, 3.0, 1.0, 0.0])
    step = jnp.int32(4)
    n, s = chains.active.shape
    draws = ck.chain_draws(key, step, n, s)
    np.testing.assert_array_equal(ck.chain_demand(chains, ledger, p, key, step, draws=draws),
                                  ck.chain_demand(chains, ledger, p, key, step))
    shared = ck.chain_step(chains, ledger, p, key, step, budget, draws=draws)
    alone = ck.chain_step(chains, ledger, p, key, step, budget)
    _leaves_equal(shared, alone)
    assert np.asarray(alone[1].initiated).sum() > 0  # the draws decided something
    other = ck.chain_step(chains, ledger, p, key, step, budget, draws=ck.chain_draws(key, step + 1, n, s))
    assert not all(np.array_equal(np.asarray(x), np.asarray(y))
                   for x, y in zip(jax.tree.leaves(other), jax.tree.leaves(alone)))  # the draws are used


def _count(jaxpr, name):
    n = 0
    for e in jaxpr.eqns:
        n += e.primitive.name == name
        for v in e.params.values():
            for sub in v if isinstance(v, (tuple, list)) else [v]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    n += _count(inner, name)
    return n


def test_quote_then_step_traces_the_hash_once():
    chains, ledger, p, key = _setup()
    n, s = chains.active.shape

    def both(c, k, t):
        u = ck.chain_draws(k, t, n, s)
        w = ck.chain_demand(c, ledger, p, k, t, draws=u)
        return ck.chain_step(c, ledger, p, k, t, 0.5 * w, draws=u)

    def step_only(c, k, t):
        return ck.chain_step(c, ledger, p, k, t, jnp.ones(c.active.shape[0]))

    def drawn_twice(c, k, t):
        w = ck.chain_demand(c, ledger, p, k, t)
        return ck.chain_step(c, ledger, p, k, t, 0.5 * w)

    args = (chains, key, jnp.int32(1))
    hashes = {f.__name__: _count(jax.make_jaxpr(f)(*args).jaxpr, "shift_right_logical")
              for f in (both, step_only, drawn_twice)}
    assert hashes["step_only"] > 0
    assert hashes["both"] == hashes["step_only"]
    one = _count(jax.make_jaxpr(lambda k, t: ck.chain_draws(k, t, n, s))(key, jnp.int32(1)).jaxpr, "shift_right_logical")
    assert hashes["drawn_twice"] == hashes["both"] + one  # the count sees a second hash


def test_the_biology_step_traces_the_chain_hash_once():
    """The biology step quotes and steps its chains on one set of draws (metabolism)."""
    from bench.run_bench import bio_cfg
    from sim.substrates.bio import SUBSTRATE as BIO
    from sim.substrates.bio.build import build

    from sim.core import engine

    m = build(bio_cfg(20))
    key = jax.random.PRNGKey(0)
    state, params = engine.cast(m.state, np.float64), engine.cast(m.params, np.float64)
    jaxpr = jax.make_jaxpr(BIO.step)(state, params, key).jaxpr
    shifts = _count(jaxpr, "shift_right_logical")
    n, s = m.state.chains.active.shape
    one_hash = _count(jax.make_jaxpr(lambda k: ck.chain_draws(k, jnp.int32(0), n, s))(key).jaxpr, "shift_right_logical")
    # three draws per step: the chains' (once, not for the quote and again for the step), the
    # failures' and the births' (a few shifts besides the hashes turn words into uniforms)
    assert 3 * one_hash <= shifts < 4 * one_hash


def test_budget_prefix_test_equals_the_running_chain():
    """The budget's "cumulative cost fits" booleans (``ops.prefix_sum(x) <= bound``, traced as the
    chains trace it) and the running sums themselves equal the left-to-right chain out_0 = x_0,
    out_k = out_(k-1) + x_k, every bit: signed zeros, infinities and NaN included (the adds past a
    position are selected away, not added as zeros)."""
    rng = np.random.default_rng(0)
    x = rng.choice([0.0, -0.0, 0.5, 1.25, 3.0, np.inf, -np.inf, np.nan, 1e-300], size=(400, 8))
    bound = rng.choice([0.0, 1.0, 2.5, 4.0, np.inf, np.nan], size=400)
    ref = x.copy()
    for k in range(1, x.shape[1]):
        ref[:, k] = ref[:, k - 1] + x[:, k]
    want = ref <= bound[:, None]
    got = np.asarray(jax.jit(lambda v, b: prefix_sum(v) <= b[:, None])(x, bound))
    np.testing.assert_array_equal(got, want)
    assert want.any() and not want.all()
    sums = np.asarray(jax.jit(prefix_sum)(x))
    np.testing.assert_array_equal(np.isnan(sums), np.isnan(ref))
    real = ~np.isnan(ref)  # a NaN's sign bit is not an arithmetic result
    np.testing.assert_array_equal(sums[real], ref[real])
    np.testing.assert_array_equal(np.signbit(sums[real]), np.signbit(ref[real]))  # -0.0 stays -0.0
    assert (real & (ref == 0) & np.signbit(ref)).any()
    assert prefix_sum(jnp.zeros((3, 0))).shape == (3, 0)
