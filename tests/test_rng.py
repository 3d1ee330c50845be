"""Counter-based draws: layout independence, distinct streams, and uniformity."""

import jax.numpy as jnp
import numpy as np
from scipy import stats

import sim  # noqa: F401  (x64)
from sim import rng
from sim.rng import replicate_keys


def test_draw_depends_only_on_id_not_layout():
    key = replicate_keys(7, 1)[0]
    full = np.asarray(rng.uniforms(key, 3, rng.PRODUCER_FAILURE, jnp.arange(1000, dtype=jnp.uint32)))
    ids = jnp.array([999, 5, 17, 5], dtype=jnp.uint32)
    some = np.asarray(rng.uniforms(key, 3, rng.PRODUCER_FAILURE, ids))
    np.testing.assert_array_equal(some, full[[999, 5, 17, 5]])


def test_streams_differ_by_step_purpose_replicate():
    keys = replicate_keys(0, 2)
    ids = jnp.arange(256, dtype=jnp.uint32)
    a = np.asarray(rng.uniforms(keys[0], 1, rng.PRODUCER_FAILURE, ids))
    for other in (
        rng.uniforms(keys[0], 2, rng.PRODUCER_FAILURE, ids),
        rng.uniforms(keys[0], 1, rng.PRODUCER_BIRTH, ids),
        rng.uniforms(keys[1], 1, rng.PRODUCER_FAILURE, ids),
    ):
        other = np.asarray(other)
        assert not np.any(a == other)
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.25


def test_uniform_distribution_float64_and_float32():
    key = replicate_keys(1, 1)[0]
    ids = jnp.arange(200_000, dtype=jnp.uint32)
    for dtype in (jnp.float64, jnp.float32):
        u = np.asarray(rng.uniforms(key, 0, rng.PRODUCER_FAILURE, ids, dtype=dtype))
        assert u.dtype == dtype
        assert u.min() >= 0.0 and u.max() < 1.0
        assert stats.kstest(u, "uniform").pvalue > 1e-3
        assert len(np.unique(u)) > 0.99 * u.size
