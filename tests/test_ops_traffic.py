"""The array helpers that cut the biology step's memory traffic (issue 10, ``sim.core.ops``) change no
number: ``materialize`` returns its argument bit for bit (NaN, infinities, signed zeros, booleans),
``prefix_sum`` is ``jnp.cumsum`` bit for bit, both inside ``jit`` as the engine traces them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.core.ops import materialize, prefix_sum


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_materialize_returns_every_bit(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 7)) * 10.0 ** rng.integers(-300 if dtype == np.float64 else -30, 30, (50, 7)))
    x = x.astype(dtype)
    x[0, :5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    x[1, 0] = np.finfo(dtype).tiny / 4  # subnormal
    got = np.asarray(jax.jit(materialize)(x))
    assert got.dtype == dtype
    assert np.array_equal(got.view(np.uint8), x.view(np.uint8))  # bit for bit, -0.0 and NaN included


def test_materialize_of_a_mask_is_the_mask():
    mask = np.random.default_rng(1).random((40, 8)) < 0.3
    got = np.asarray(jax.jit(lambda m: materialize(m & True))(mask))
    assert got.dtype == np.bool_ and np.array_equal(got, mask)


@pytest.mark.parametrize("shape", [(30, 8), (30, 1), (5, 16, 3), (4, 0)])
def test_prefix_sum_is_cumsum_bit_for_bit(shape):
    rng = np.random.default_rng(2)
    x = rng.random(shape) * 10.0 ** rng.integers(-8, 8, shape)  # mixed magnitudes: round-off shows
    want = np.asarray(jax.jit(lambda v: jnp.cumsum(v, axis=1))(x))
    got = np.asarray(jax.jit(prefix_sum)(x))
    assert got.shape == want.shape
    assert np.array_equal(got, want)
