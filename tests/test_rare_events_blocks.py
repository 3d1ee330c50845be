"""The candidate loop under vmap keeps each batch's rows apart: batches with fewer rows than a
window, windows clamped at the end of the rows; every candidate is resolved exactly once and gets
what it gets alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.core import rare_events


def _resolve(rows, carry, pending):
    u_w, rates_w = rows
    fails, seen = carry
    return fails | rare_events.pattern(u_w, rates_w, 0.3, pending), seen + pending


def _one(window):
    def one(u, rates, cand):
        carry = (jnp.zeros(rates.shape, bool), jnp.zeros(u.shape))
        return rare_events.resolve_candidates(cand, (u, rates), carry, _resolve, window=window)
    return one


@pytest.mark.parametrize("r,n,window", [(7, 5, 16), (5, 3, 8), (4, 20, 8), (3, 1, 4), (1, 9, 32), (6, 16, 16)])
def test_batched_blocks_resolve_each_candidate_once(r, n, window):
    # (7, 5, 16): 3 batches a block, the last block clamped back over batches resolved before
    rng = np.random.default_rng(r * 100 + n)
    rates = rng.exponential(1.0, (r, n, 4))
    u = rng.random((r, n))
    cand = rng.random((r, n)) < 0.4
    cand[-1, -1] = cand[0, 0] = True
    fails, seen = map(np.asarray, jax.jit(jax.vmap(_one(window)))(u, rates, cand))
    np.testing.assert_array_equal(seen, cand.astype(float))  # every candidate once, nothing else
    dense = rare_events.pattern(u.reshape(-1), rates.reshape(-1, 4), 0.3, xp=np).reshape(rates.shape)
    np.testing.assert_array_equal(fails, dense & cand[..., None])
    nested = jax.jit(jax.vmap(jax.vmap(_one(window))))(u[None], rates[None], cand[None])
    np.testing.assert_array_equal(np.asarray(nested[1])[0], seen)
    np.testing.assert_array_equal(np.asarray(nested[0])[0], fails)
