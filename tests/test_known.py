"""Facts the engine reads from the concrete parameters before it traces a chunk (``sim.core.known``,
issue 10: compile time): the biology chunk leaves out the creatine kinase branch no row takes, with
the same bits as the run-time branch, and a run whose parameters say otherwise gets its own program."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import yaml

import sim  # noqa: F401  (float64 on)
from sim.core import engine, known
from sim.core.config import CONF_DIR
from sim.rng import replicate_keys
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.build import build
from sim.substrates.bio.kernels.adenylate import CREATINE


def _tissue(creatine_mm: float, n_cells: int = 20):
    sub = yaml.safe_load((CONF_DIR / "substrate/bio.yaml").read_text())
    sub["buffer"]["creatine_total_mm"] = creatine_mm
    model = build({"substrate": sub, "topology": {"kind": "small_world", "n_cells": n_cells, "k": 4, "p": 0.1},
                   "seed": 2, "dt": 0.02})
    return model.state, model.params


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                                      for x, y in zip(la, lb))


def test_biology_knows_the_buffer_only_when_every_row_agrees():
    _, none = _tissue(0.0)
    _, some = _tissue(25.0)
    assert BIO.known(none) == ((CREATINE, False),)
    assert BIO.known(some) == ((CREATINE, True),)
    mixed = dataclasses.replace(some, creatine_total=np.asarray([0.0, 25.0]))  # two parameter points
    assert BIO.known(mixed) == ()
    assert known.get(CREATINE) is None  # outside a traced chunk nothing is known
    with known.tracing(BIO.known(some)):
        assert known.get(CREATINE) is True
    assert known.get(CREATINE) is None


@pytest.mark.parametrize("creatine_mm", [0.0, 25.0])
def test_the_known_branch_gives_the_bits_of_the_run_time_branch_and_a_smaller_program(creatine_mm):
    state, params = _tissue(creatine_mm)
    states, keys = engine.broadcast_state(state, 2), replicate_keys(4, 2)
    fn = engine.chunk_function(BIO.step, BIO.observe, n_records=2, record_every=25, check_fn=BIO.step_check)
    run_time = jax.jit(fn).lower(states, params, keys)  # nothing known: the lax.cond on creatine_total
    fn_known = engine.chunk_function(BIO.step, BIO.observe, n_records=2, record_every=25, check_fn=BIO.step_check)
    with known.tracing(BIO.known(params)):
        with_facts = jax.jit(fn_known).lower(states, params, keys)
    a, b = run_time.compile(), with_facts.compile()
    assert _leaves_equal(a(states, params, keys), b(states, params, keys))
    # the creatine branch (or the plain one) is not in the program: one conditional fewer
    assert b.as_text().count(" conditional(") == a.as_text().count(" conditional(") - 1
    if creatine_mm > 0:  # the buffer did something: PCr moved and creatine kinase made ATP
        out = b(states, params, keys)[0]
        assert np.any(np.asarray(out.ledger.ck_atp) != 0)


def test_a_run_whose_facts_differ_gets_its_own_program_with_the_same_shapes():
    state, off = _tissue(0.0)
    on = dataclasses.replace(off, creatine_total=np.asarray(25.0))  # same shapes, other fact
    engine.clear_caches()
    r_off = engine.run(BIO, state, off, seed=1, steps=50, record_every=25, replicates=1)
    before = engine.CACHE.compiles
    r_on = engine.run(BIO, state, on, seed=1, steps=50, record_every=25, replicates=1)
    assert engine.CACHE.compiles == before + 1  # not the creatine-free program again
    assert np.all(np.asarray(r_off.state.ledger.ck_atp) == 0)
    assert np.any(np.asarray(r_on.state.ledger.ck_atp) != 0)
    # and each equals the program that decides at run time
    for p, r in ((off, r_off), (on, r_on)):
        states, keys = engine.broadcast_state(state, 1), replicate_keys(1, 1)
        fn = engine.chunk_function(BIO.step, BIO.observe, n_records=2, record_every=25, check_fn=BIO.step_check)
        final, _ = jax.jit(fn)(states, p, keys)
        assert _leaves_equal(final, r.state)
