"""Counter-based random draws shared by the JAX engine and the Mesa reference.

Every draw is derived from (seed, step, purpose, agent id) with ``jax.random.fold_in``, so a
number depends only on *which* agent asks *what* at *which* step: not on agent order, on the
batch layout, or on how many other agents exist. The Mesa reference asks for a whole step's
draws of one purpose at once (one vectorised call) and hands each agent the number for its id,
which keeps its per-agent Python step honest while sharing the exact same stream.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# Purposes are small integers folded into the key; never renumber them (it changes results).
PRODUCER_FAILURE = 1
PRODUCER_BIRTH = 2
CELL_INIT = 3


def base_key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(int(seed))


def uniforms(key: jax.Array, step, purpose: int, ids: jax.Array, dtype=None) -> jax.Array:
    """Uniform [0, 1) draws, one per id, for ``(key, step, purpose)``; traceable."""
    dtype = dtype or jnp.result_type(float)
    k = jax.random.fold_in(jax.random.fold_in(key, step), purpose)
    return jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(k, i), dtype=dtype))(ids)


@functools.partial(jax.jit, static_argnames=("purpose", "n"))
def _uniforms_range(key, step, purpose: int, n: int):
    return uniforms(key, step, purpose, jnp.arange(n, dtype=jnp.uint32))


def uniforms_np(seed: int, step: int, purpose: int, n: int) -> np.ndarray:
    """Host copy of the draws for ids ``0..n-1`` (used by the Mesa reference backend)."""
    return np.asarray(_uniforms_range(base_key(seed), np.uint32(step), purpose, int(n)))
