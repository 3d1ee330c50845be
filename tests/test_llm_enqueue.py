"""The compact enqueue of the LLM engine's ``finish`` (``kernels.enqueue_few``: only the finished
chains' entries, in chunks of ``m`` per instance) equals the full-width ``kernels.enqueue`` bit for bit:
tickets, ring slots, every queue field, drops and ``next_seq``, also when some instance has more
entries than one chunk holds (the loop over further chunks), when queues overflow (drops) and when
an instance's candidates repeat (no neighbour: its best neighbour is itself)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim  # noqa: F401  (float64)
from sim.pytree import replace
from sim.substrates.llm import kernels as K
from sim.substrates.llm.build import build_llm, compose

C, S, Q = 6, 24, 16


@pytest.fixture(scope="module")
def state0():
    cfg = compose(["experiment=serving", "topology=ring", f"topology.n_cells={C}", f"substrate.chain_slots={S}",
                   f"substrate.max_batch={S}", f"substrate.queue_slots={Q}"])
    return build_llm(cfg).state


def _case(state0, seed: int, p_done: float, queued: int):
    rs = np.random.default_rng(seed)
    done = rs.random((C, S)) < p_done
    valid = done & (rs.random((C, S)) < 0.8)  # next turns: a subset of the finished chains
    nb = rs.integers(0, C, C)
    nb[0] = 0  # an instance without neighbour hands on to itself: repeated candidates
    cands = np.stack([np.arange(C), nb], axis=1)
    more = rs.random((C, S)) < 0.5
    tcell = np.where(more, np.arange(C)[:, None], nb[:, None])
    n_q = rs.integers(0, queued + 1, C)
    head = rs.integers(0, 1000, C)
    slots = (head[:, None] + np.arange(Q)[None, :]) % Q
    active = np.zeros((C, Q), bool)
    for c in range(C):
        active[c, slots[c, :n_q[c]]] = True
    q = replace(state0.queue, active=jnp.asarray(active))
    cells = replace(state0.cells, next_seq=jnp.asarray((head + n_q).astype(np.int32)))
    state = replace(state0, queue=q, cells=cells)
    entries = {"prompt": jnp.asarray(rs.integers(1, 500, (C, S)).astype(float)),
               "target": jnp.asarray(rs.integers(1, 50, (C, S)).astype(float)),
               "born": jnp.asarray(rs.integers(0, 99, (C, S)).astype(np.int32)),
               "turn": jnp.asarray(rs.integers(0, 3, (C, S)).astype(np.int32)),
               "hop": jnp.asarray(rs.integers(0, 3, (C, S)).astype(np.int32)),
               "kind": jnp.zeros((C, S), np.int32)}
    rank = jnp.cumsum(jnp.asarray(done), axis=1, dtype=jnp.int32) - 1
    return state, entries, jnp.asarray(tcell), jnp.asarray(valid), jnp.asarray(cands), rank, done


@pytest.mark.parametrize("m", [2, 5, 16])
@pytest.mark.parametrize("seed,p_done,queued", [(0, 0.1, 4), (1, 0.5, 12), (2, 0.9, 0), (3, 0.3, 16)])
def test_enqueue_few_is_the_full_enqueue(state0, m, seed, p_done, queued):
    state, entries, tcell, valid, cands, rank, done = _case(state0, seed, p_done, queued)
    full, _, d_full = jax.jit(K.enqueue)(state, entries, tcell, valid, cands)
    few, d_few = jax.jit(K.enqueue_few, static_argnums=6)(state, entries, tcell, valid, cands, rank, m)
    for name in ("active", "prompt", "target", "born", "turn", "hop", "seq", "kind"):
        np.testing.assert_array_equal(np.asarray(getattr(few.queue, name)), np.asarray(getattr(full.queue, name)),
                                      err_msg=name)
    np.testing.assert_array_equal(np.asarray(few.cells.next_seq), np.asarray(full.cells.next_seq))
    np.testing.assert_array_equal(np.asarray(d_few), np.asarray(d_full))
    if seed == 1 and m < 7:  # the case is what it claims: more finished than one chunk, and drops
        assert done.sum(axis=1).max() > m and float(np.sum(d_full)) > 0


def test_enqueue_few_under_vmap(state0):
    """Replicates batched (the engine's ``vmap``): the extra chunks run for the replicate that needs them."""
    cases = [_case(state0, s, p, q) for s, p, q in ((4, 0.05, 3), (5, 0.8, 10))]
    stack = lambda i: jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[c[i] for c in cases])  # noqa: E731
    args = [stack(i) for i in range(6)]
    few, d_few = jax.jit(jax.vmap(lambda *a: K.enqueue_few(*a, 4)))(*args)
    full, _, d_full = jax.jit(jax.vmap(K.enqueue))(*args[:5])
    for a, b in zip(jax.tree_util.tree_leaves((few.queue, few.cells.next_seq, d_few)),
                    jax.tree_util.tree_leaves((full.queue, full.cells.next_seq, d_full))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
