"""Counter-based random draws shared by the JAX engine and the Mesa reference.

Every draw is derived from (seed, replicate, step, purpose, agent id) with ``jax.random.fold_in``:
the replicate key is ``fold_in(PRNGKey(seed), r)`` (:func:`replicate_keys`), then the step
and the purpose are folded in once per step, then each agent's id. A number therefore depends only
on *which* agent asks *what* at *which* step: not on agent order, on the batch layout, or on how
many other agents exist. The two 32-bit words of the per-agent key ``fold_in(k, id)`` (one
Threefry-2x32 hash) are turned straight into a uniform, so a draw costs one hash rather than the
two of ``uniform(fold_in(k, id))``. The Mesa reference asks for a whole step's draws of one purpose
at once (one vectorised call of the same function) and hands each agent the number for its id.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Purposes are small integers folded into the key; never renumber them (it changes results).
PRODUCER_FAILURE = 1
PRODUCER_BIRTH = 2


def base_key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(int(seed))


def replicate_keys(seed: int, replicates: int, first: int = 0) -> jax.Array:
    """Keys of replicates ``first .. first+replicates-1`` of a seed's ensemble: ``fold_in(PRNGKey(seed), r)``."""
    base = base_key(seed)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(first, first + replicates, dtype=jnp.uint32))


def _words_to_uniform(words, dtype):
    """Two uint32 words -> uniform in [0, 1): 53 random bits for float64, 24 for float32."""
    if jnp.dtype(dtype) == jnp.float64:
        hi = (words[..., 0] >> 5).astype(jnp.float64)  # 27 bits
        lo = (words[..., 1] >> 6).astype(jnp.float64)  # 26 bits
        return (hi * 67108864.0 + lo) * (1.0 / 9007199254740992.0)
    return (words[..., 0] >> 8).astype(dtype) * jnp.asarray(1.0 / 16777216.0, dtype)


def uniforms(key: jax.Array, step, purpose: int, ids: jax.Array, dtype=None) -> jax.Array:
    """Uniform [0, 1) draws, one per id, for ``(key, step, purpose)``; traceable, any id layout."""
    dtype = dtype or jnp.result_type(float)
    k = jax.random.fold_in(jax.random.fold_in(key, step), purpose)
    words = jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(k, i)))(ids)
    return _words_to_uniform(words, dtype)


@functools.partial(jax.jit, static_argnames=("purpose", "n"))
def _host_uniforms(key, step, purpose: int, n: int):
    return uniforms(key, step, purpose, jnp.arange(n, dtype=jnp.uint32))


def host_uniforms(key, step: int, purpose: int, n: int):
    """The engine's draws for ids ``0..n-1`` at ``step`` as a numpy array (one vectorised call):
    what the plain-Python references hand to their agents, each taking the number for its id."""
    import numpy as np

    if n == 0:
        return np.zeros(0)
    return np.asarray(_host_uniforms(key, jnp.int32(step), purpose, int(n)))
