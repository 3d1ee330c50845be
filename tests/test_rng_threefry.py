"""The unrolled Threefry of ``sim.rng`` is ``jax.random.fold_in`` bit for bit (issue 10: the engine's
draws are computed in fused kernels, never changed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim  # noqa: F401  (float64 on)
from sim import rng


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_uniforms_equal_jax_fold_in(dtype):
    keys = rng.replicate_keys(7, 3)
    ids = jnp.asarray(np.r_[np.arange(300), [2**31 - 1, 2**31, 2**32 - 1]], jnp.uint32)
    new = jax.jit(jax.vmap(lambda k, s: rng.uniforms(k, s, 42, ids, dtype), in_axes=(0, None)))
    old = jax.jit(jax.vmap(lambda k, s: rng.uniforms_reference(k, s, 42, ids, dtype), in_axes=(0, None)))
    for step in (0, 1, 12345, 2**31 - 1):
        a, b = np.asarray(new(keys, jnp.int32(step))), np.asarray(old(keys, jnp.int32(step)))
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_fold_in_words_equal_jax():
    key = rng.base_key(123)
    for data in (0, 1, 41, 2**32 - 1):
        y0, y1 = rng.fold_in(key, jnp.uint32(data))
        want = np.asarray(jax.random.fold_in(key, jnp.uint32(data)))
        assert [int(y0), int(y1)] == [int(w) for w in want]


def test_typed_key_falls_back():
    key = jax.random.key(5)
    ids = jnp.arange(10, dtype=jnp.uint32)
    a = rng.uniforms(key, 3, rng.PRODUCER_FAILURE, ids)
    b = rng.uniforms(jax.random.key_data(key), 3, rng.PRODUCER_FAILURE, ids)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_host_uniforms_unchanged():
    key = rng.replicate_keys(0, 1)[0]
    a = rng.host_uniforms(key, 17, rng.PRODUCER_BIRTH, 50)
    b = np.asarray(rng.uniforms_reference(key, jnp.int32(17), rng.PRODUCER_BIRTH, jnp.arange(50, dtype=jnp.uint32)))
    assert np.array_equal(a, b)
