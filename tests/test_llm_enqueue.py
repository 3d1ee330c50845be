"""The LLM engine's compact paths equal its full-width paths bit for bit: ``finish`` with few finished
chains per instance (``kernels._finish_few``) against ``_finish_all``, ``admission`` with few waiting
requests against ``_admission_all``, ``same_either`` running one branch for a vmapped batch; and
``sim.rng.uniforms_many`` (several purposes from one traced hash, the LLM step's draws) equals
``sim.rng.uniforms`` of each purpose, alone and under vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim  # noqa: F401  (float64)
from sim.pytree import replace
from sim.substrates.llm import kernels as K
from sim.substrates.llm.build import build_llm, compose
C, S, Q = 6, 24, 16  # instances, chain slots, queue slots


def _finishing_state(overrides, pattern, seed=0):
    """A built state with chains active at t = 0 whose ``out`` reaches ``target`` at the slots
    given per instance by ``pattern`` (a list of slot lists), and some queued requests."""
    cfg = compose(["experiment=serving", "topology=ring", f"topology.n_cells={C}", f"substrate.chain_slots={S}",
                   f"substrate.max_batch={S}", f"substrate.queue_slots={Q}", "substrate.initial.active=12",
                   "substrate.initial.queued=5"] + overrides)
    llm = build_llm(cfg)
    st = llm.state
    rs = np.random.default_rng(seed)
    target = np.asarray(st.chains.target).copy()
    out = np.where(np.asarray(st.chains.active), np.floor(target * rs.random(target.shape) * 0.9), 0.0)
    for c, slots in enumerate(pattern):
        out[c, slots] = target[c, slots]
    born = rs.integers(0, 5, target.shape).astype(np.int32)
    turn = rs.integers(0, 2, target.shape).astype(np.int32)
    ch = replace(st.chains, out=jnp.asarray(out), born=jnp.asarray(born), turn=jnp.asarray(turn))
    return replace(st, chains=ch, step=jnp.asarray(7, st.step.dtype)), llm.params


_FINISH_CASES = {
    "plain": [],
    "agents": ["substrate.agent.followup_prob=0.5", "substrate.agent.max_turns=3", "substrate.agent.hops=2"],
    "memory_kinds": ["substrate.agent.followup_prob=0.5", "substrate.agent.max_turns=3",
                     "substrate.memory.threshold_tokens=900", "substrate.kinds.n=3", "substrate.kinds.theta=0.3"],
}


def _assert_same_state(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("case", sorted(_FINISH_CASES))
def test_finish_few_is_finish_all(case):
    """At most two finished chains per instance (none, one, two: adjacent, apart, first and last
    active slot): the compact path gives the full-width finish bit for bit, and ``finish`` takes it."""
    pattern = [[], [3], [0, 11], [4, 5], [7], [1, 9]]
    state, params = _finishing_state(_FINISH_CASES[case], pattern)
    done = np.asarray(state.chains.active & (state.chains.out >= state.chains.target))
    assert sorted(done.sum(axis=1)) == [0, 1, 1, 2, 2, 2]
    key = jax.random.PRNGKey(3)
    few = jax.jit(K._finish_few)(state, params, key)
    full = jax.jit(K._finish_all)(state, params, key)
    _assert_same_state(few, full)
    _assert_same_state(jax.jit(K.finish)(state, params, key), full)
    assert float(np.sum(np.asarray(full.ledger.turns_done))) == 8


def test_finish_with_many_done_takes_the_full_width_path():
    """An instance finishing three or more chains: ``finish`` is the full-width one (the compact
    path would miss the middle ones), also under ``vmap`` beside a replicate that finishes few."""
    few_state, params = _finishing_state(_FINISH_CASES["agents"], [[2], [], [0, 1], [], [], [5]])
    many_state, _ = _finishing_state(_FINISH_CASES["agents"], [[0, 1, 2, 3, 4], [], [6], [], [], []], seed=1)
    key = jax.random.PRNGKey(4)
    full = jax.jit(K._finish_all)(many_state, params, key)
    _assert_same_state(jax.jit(K.finish)(many_state, params, key), full)
    assert float(np.asarray(full.ledger.turns_done)[0]) == 5
    few_compact = jax.jit(K._finish_few)(many_state, params, key)
    assert float(np.asarray(few_compact.ledger.turns_done)[0]) == 5  # counted, but only two handled:
    assert not np.array_equal(np.asarray(few_compact.queue.active), np.asarray(full.queue.active))
    both = jax.tree_util.tree_map(lambda *x: jnp.stack(x), few_state, many_state)
    keys = jnp.stack([key, key])
    out = jax.jit(jax.vmap(K.finish, in_axes=(0, None, 0)))(both, params, keys)
    for i, st in enumerate((few_state, many_state)):
        _assert_same_state(jax.tree_util.tree_map(lambda x: x[i], out), jax.jit(K._finish_all)(st, params, key))


def test_same_either_runs_one_branch_for_the_batch():
    """Under ``vmap`` the predicate is any over the batch: the slow branch for every member."""
    slow = lambda x: x * 2.0  # noqa: E731
    fast = lambda x: x * 3.0  # noqa: E731
    f = jax.jit(jax.vmap(lambda p, x: K.same_either(p, slow, fast, x)))
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(np.asarray(f(jnp.array([False, False, False]), x)), [0.0, 3.0, 6.0])
    np.testing.assert_array_equal(np.asarray(f(jnp.array([False, True, False]), x)), [0.0, 2.0, 4.0])
    assert float(jax.jit(lambda p, x: K.same_either(p, slow, fast, x))(True, 2.0)) == 4.0


# ---- admission's compact path (kernels._admission_few: at most two queued requests per instance) -------------


def _queued_state(overrides, queued, active, seed=0):
    """A built state with ``active`` chains and ``queued[c]`` queued requests at instance ``c``
    (the queue's head moved on, so the ring wraps), chains freed at random slots."""
    cfg = compose(["experiment=serving", "topology=ring", f"topology.n_cells={C}", f"substrate.chain_slots={S}",
                   f"substrate.max_batch={S}", f"substrate.queue_slots={Q}", f"substrate.initial.active={active}",
                   f"substrate.initial.queued={max(queued)}"] + overrides)
    llm = build_llm(cfg)
    st = llm.state
    rs = np.random.default_rng(seed)
    q = st.queue
    act = np.zeros((C, Q), bool)
    fields = {k: np.asarray(getattr(q, k)).copy() for k in ("prompt", "target", "born", "turn", "hop", "seq", "kind")}
    head = rs.integers(0, 3 * Q, C)
    for c in range(C):
        for j in range(queued[c]):
            slot = (head[c] + j) % Q
            act[c, slot] = True
            fields["prompt"][c, slot] = rs.integers(100, 3000)
            fields["target"][c, slot] = rs.integers(1, 300)
            fields["born"][c, slot] = rs.integers(0, 5)
            fields["turn"][c, slot] = rs.integers(0, 2)
            fields["seq"][c, slot] = head[c] + j
    q = replace(q, active=jnp.asarray(act), **{k: jnp.asarray(v) for k, v in fields.items()})
    cells = replace(st.cells, next_seq=jnp.asarray((head + np.asarray(queued)).astype(np.int32)))
    ch_active = np.asarray(st.chains.active) & (rs.random((C, S)) < 0.7)
    ch = replace(st.chains, active=jnp.asarray(ch_active))
    return replace(st, queue=q, cells=cells, chains=ch), llm.params


@pytest.mark.parametrize("overrides", [[], ["substrate.kinds.n=3", "substrate.kinds.theta=0.3"],
                                       ["small_kv"], ["batch_limit"]],
                         ids=["plain", "kinds", "small_kv", "batch_limit"])
def test_admission_few_is_admission_all(overrides):
    """At most two queued per instance (none, one, two; a full KV cache or batch admitting only
    the first or none): the compact admission is the full-width one bit for bit, and ``admission``
    takes it."""
    small_kv = overrides == ["small_kv"]
    marker = overrides in (["small_kv"], ["batch_limit"])
    state, params = _queued_state([] if marker else overrides, [0, 1, 2, 2, 1, 2], active=10)
    if overrides == ["batch_limit"]:  # one more decoding stream at instances with 7 active, none at 8 or more
        params = replace(params, max_batch=jnp.asarray(8, np.asarray(params.max_batch).dtype))
    if small_kv:  # room for about one more request: the running sum of the need decides
        ch = state.chains
        reserved = np.sum(np.where(np.asarray(ch.active), np.asarray(ch.base + ch.target), 0.0), axis=1)
        state = replace(state, cells=replace(state.cells, kv_capacity=jnp.asarray(reserved + 2500.0)))
    few = jax.jit(K._admission_few)(state, params)
    full = jax.jit(K._admission_all)(state, params)
    _assert_same_state(few, full)
    _assert_same_state(jax.jit(K.admission)(state, params), full)
    if not overrides:
        assert float(np.sum(np.asarray(full.ledger.admitted))) == 8
    if marker:
        assert 0 < float(np.sum(np.asarray(full.ledger.admitted))) < 8  # some stay queued


def test_admission_with_longer_queues_takes_the_full_width_path():
    """Three or more queued at some instance: ``admission`` is the full-width one, also under
    ``vmap`` beside a replicate with short queues."""
    short, params = _queued_state([], [1, 2, 0, 1, 0, 2], active=10)
    long, _ = _queued_state([], [5, 0, 3, 1, 0, 2], active=10, seed=1)
    full = jax.jit(K._admission_all)(long, params)
    _assert_same_state(jax.jit(K.admission)(long, params), full)
    assert float(np.asarray(full.ledger.admitted)[0]) == 5
    both = jax.tree_util.tree_map(lambda *x: jnp.stack(x), short, long)
    out = jax.jit(jax.vmap(K.admission, in_axes=(0, None)))(both, params)
    for i, st in enumerate((short, long)):
        _assert_same_state(jax.tree_util.tree_map(lambda x: x[i], out), jax.jit(K._admission_all)(st, params))


@pytest.mark.parametrize("shape", [(7,), (5, 2), (64, 256)])
@pytest.mark.parametrize("purposes", [(K.ARRIVAL_COUNT,), (K.FOLLOWUP, K.FOLLOWUP_LEN),
                                      (K.KIND, K.KIND_ROUTE, K.KIND_PICK, K.KIND_SERVE)])
def test_uniforms_many_are_uniforms_of_each_purpose(shape, purposes):
    from sim import rng

    keys = rng.replicate_keys(3, 4)
    ids = jnp.arange(int(np.prod(shape)), dtype=jnp.uint32).reshape(shape) * 3 + 1
    many = jax.jit(jax.vmap(lambda k, s: rng.uniforms_many(k, s, purposes, ids), in_axes=(0, None)))(keys, 17)
    each = jax.jit(jax.vmap(lambda k, s: [rng.uniforms(k, s, p, ids) for p in purposes], in_axes=(0, None)))(keys, 17)
    assert all(np.array_equal(a, b) for a, b in zip(many, each))
    one = jax.jit(lambda k: rng.uniforms_many(k, 5, purposes, ids))(keys[1])
    assert all(np.array_equal(a, rng.uniforms(keys[1], 5, p, ids)) for a, p in zip(one, purposes))
