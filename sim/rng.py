"""Counter-based random draws shared by the JAX engine and the Mesa reference.

Every draw is derived from (seed, replicate, step, purpose, agent id) with ``jax.random.fold_in``:
the replicate key is ``fold_in(PRNGKey(seed), r)`` (:func:`replicate_keys`), then the step
and the purpose are folded in once per step, then each agent's id. A number therefore depends only
on *which* agent asks *what* at *which* step: not on agent order, on the batch layout, or on how
many other agents exist. The two 32-bit words of the per-agent key ``fold_in(k, id)`` (one
Threefry-2x32 hash) are turned straight into a uniform, so a draw costs one hash rather than the
two of ``uniform(fold_in(k, id))``. The Mesa reference asks for a whole step's draws of one purpose
at once (one vectorised call of the same function) and hands each agent the number for its id.

How the hash is computed (not which numbers): Threefry-2x32 is written out here in unrolled
``uint32`` operations (:func:`threefry2x32`), bit for bit ``jax.random.fold_in`` of a raw Threefry
key (``tests/test_rng_threefry.py``). JAX lowers its own Threefry on CPU as a rolled 5-iteration
loop, a chain of small kernels per draw purpose whose ``uint32`` arrays go to memory and back every
iteration; unrolled, each purpose's hash is one elementwise kernel (issue 10: ~840 fewer kernels and
~270 fewer bytes per agent in the biology step, ``bench/bench_step_work.py``). Keys that are not raw
Threefry keys (typed keys, another PRNG implementation) take ``jax.random.fold_in`` itself.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# Purposes are small integers folded into the key; never renumber them (it changes results).
PRODUCER_FAILURE = 1  # one per producer slot (the generic substrate)
PRODUCER_BIRTH = 2
PRODUCER_FAILURE_CELL = 3  # one per cell, deciding all its producers (biology; sim.core.rare_events)


def base_key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(int(seed))


def replicate_keys(seed: int, replicates: int, first: int = 0) -> jax.Array:
    """Keys of replicates ``first .. first+replicates-1`` of a seed's ensemble: ``fold_in(PRNGKey(seed), r)``."""
    base = base_key(seed)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(first, first + replicates, dtype=jnp.uint32))


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


@jax.jit
def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds) of the counter pair ``(x0, x1)`` under the key ``(k0, k1)``, all
    ``uint32`` (broadcast together): JAX's ``threefry2x32`` primitive written out unrolled, so XLA
    fuses it with what uses the words instead of running a rolled loop of separate kernels.

    Jitted so that a step traces the ~130 operations once per shape of its arguments instead of at
    every call (and, under the engine's vmap, batches them once): XLA inlines the call before it
    fuses, so the program and its bits are the same (issue 10: the biology step hashes at nine
    places; tracing them was ~15% of its trace time)."""
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _raw_threefry(key):
    """``key`` as a raw Threefry key ``uint32[2]``, or None (a typed key or another PRNG: the
    caller then takes ``jax.random`` itself)."""
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32 or key.shape != (2,):
        return None
    return key


def fold_in(key, data):
    """``jax.random.fold_in(key, data)`` of a raw Threefry key and a scalar: (word 0, word 1)."""
    zero = jnp.zeros((), jnp.uint32)
    return threefry2x32(key[0], key[1], zero, jnp.asarray(data).astype(jnp.uint32))


def _words_to_uniform(w0, w1, dtype):
    """Two uint32 words -> uniform in [0, 1): 53 random bits for float64, 24 for float32."""
    if jnp.dtype(dtype) == jnp.float64:
        hi = (w0 >> 5).astype(jnp.float64)  # 27 bits
        lo = (w1 >> 6).astype(jnp.float64)  # 26 bits
        return (hi * 67108864.0 + lo) * (1.0 / 9007199254740992.0)
    return (w0 >> 8).astype(dtype) * jnp.asarray(1.0 / 16777216.0, dtype)


def uniforms(key: jax.Array, step, purpose: int, ids: jax.Array, dtype=None) -> jax.Array:
    """Uniform [0, 1) draws, one per id, for ``(key, step, purpose)``; traceable, any id layout."""
    dtype = dtype or jnp.result_type(float)
    raw = _raw_threefry(key)
    if raw is None:
        return uniforms_reference(key, step, purpose, ids, dtype)
    k0, k1 = fold_in(raw, step)
    k0, k1 = fold_in(jnp.stack([k0, k1]), purpose)
    ids = jnp.asarray(ids).astype(jnp.uint32)
    w0, w1 = threefry2x32(k0, k1, jnp.zeros_like(ids), ids)
    return _uniform_once(w0, w1, dtype)


def _uniform_once(w0, w1, dtype):
    """The uniforms of the hash words ``w0, w1``, kept in one kernel (see the comment below)."""
    u = _words_to_uniform(w0, w1, dtype)
    # One kernel per purpose: without this XLA copies the ~100 integer ops of the hash into every
    # fusion that reads the draw (98 hashes per cell instead of 33 in the biology step, 1.2-1.3x
    # slower). XLA's CPU pipeline drops optimization barriers before fusing, but never duplicates an
    # "expensive" instruction (a float divide) into several consumers: u / one, with one = 1 exactly
    # at run time (x * 0 + 1 is not folded for floats), changes no bit and keeps the hash in one fusion.
    # ``one`` is built elementwise from the draw's own words, not from ``ids``: a scalar divisor, or
    # one broadcast along an axis ``u`` has and it lacks (the replicate axis under the engine's vmap:
    # ``ids`` is the same for every replicate), becomes a multiply by its reciprocal, which is cheap
    # and duplicated again (issue 10: 256 replicates of 100 cells ran at 0.67 of the per-agent rate of
    # one 25,600-cell replicate, each draw hashed again in all ~8 of its consumer kernels)
    one = w0.astype(u.dtype) * jnp.asarray(0.0, u.dtype) + jnp.asarray(1.0, u.dtype)
    return u / one


def uniforms_many(key: jax.Array, step, purposes, ids: jax.Array, dtype=None) -> list:
    """``[uniforms(key, step, p, ids) for p in purposes]``, every bit, from one traced hash: the
    step's key derived once, the purposes' keys by one Threefry over the purposes, the ids hashed
    under all of them in one ``(P, *ids.shape)`` Threefry. Each :func:`uniforms` call traces three
    unrolled Threefry hashes (~700 lines of StableHLO): the LLM step draws for up to four purposes on
    the same ids, and tracing them one by one was most of its program and of the LLM experiments'
    compile time (issue 10). A key that is not a raw Threefry key takes :func:`uniforms` per purpose."""
    dtype = dtype or jnp.result_type(float)
    raw = _raw_threefry(key)
    if raw is None:
        return [uniforms(key, step, p, ids, dtype) for p in purposes]
    k0, k1 = fold_in(raw, step)
    pur = jnp.asarray(purposes, jnp.uint32)
    p0, p1 = threefry2x32(k0, k1, jnp.zeros_like(pur), pur)  # fold_in of each purpose
    ids = jnp.asarray(ids).astype(jnp.uint32)
    shape = (len(purposes),) + (1,) * ids.ndim
    w0, w1 = threefry2x32(p0.reshape(shape), p1.reshape(shape), jnp.zeros_like(ids)[None], ids[None])
    u = _uniform_once(w0, w1, dtype)
    return [u[i] for i in range(len(purposes))]


def uniforms_reference(key: jax.Array, step, purpose: int, ids: jax.Array, dtype=None) -> jax.Array:
    """:func:`uniforms` through ``jax.random.fold_in`` itself (the definition of the stream; JAX's
    rolled Threefry on CPU): the same numbers, bit for bit."""
    dtype = dtype or jnp.result_type(float)
    k = jax.random.fold_in(jax.random.fold_in(key, step), purpose)
    words = jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(k, i)))(ids)
    return _words_to_uniform(words[..., 0], words[..., 1], dtype)


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
