"""The engine's chunk program (issue 10): the scan of a vmapped step (``engine.chunk_function``) is
``vmap(scan_records)`` bit for bit, and the CPU vector width (``sim.core.codegen``) changes speed
and compile time, never a number."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest
import yaml

import sim  # noqa: F401  (float64 on)
from sim import api
from sim.core import codegen, engine, ops
from sim.core.config import CONF_DIR, load_config
from sim.errors import ConfigError
from sim.rng import replicate_keys
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.build import build


def _stressed_tissue(n_cells=60):
    """A small biology tissue where the rare events happen: producers fail often (high hazard), cells
    divide their producers back (births) and chains start and finish every step."""
    cfg = {"substrate": yaml.safe_load((CONF_DIR / "substrate/bio.yaml").read_text()),
           "topology": {"kind": "small_world", "n_cells": n_cells, "k": 4, "p": 0.1}, "seed": 3, "dt": 0.02}
    model = build(cfg)
    params = dataclasses.replace(model.params, hazard0=np.asarray(0.5), birth_rate=np.asarray(2.0))
    return model.state, params


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                                      for x, y in zip(la, lb))


def test_chunk_function_is_vmap_of_scan_records_bit_for_bit():
    state, params = _stressed_tissue()
    states = engine.broadcast_state(state, 3)
    keys = replicate_keys(5, 3)
    kw = dict(n_records=3, record_every=40, check_fn=BIO.step_check)
    old = jax.jit(jax.vmap(functools.partial(engine.scan_records, BIO.step, BIO.observe, **kw), in_axes=(0, None, 0)))
    new = jax.jit(engine.chunk_function(BIO.step, BIO.observe, **kw))
    (fa, ra), (fb, rb) = old(states, params, keys), new(states, params, keys)
    assert set(ra) == set(rb) and all(np.shape(ra[k]) == np.shape(rb[k]) for k in ra)
    assert np.shape(rb["pools"])[:3] == (3, 3, 60)  # (replicate, record, cell, ...)
    assert _leaves_equal((fa, ra), (fb, rb))
    # something happened: failures and births in the 120 steps, so the rare-event loops ran
    assert np.sum(np.asarray(fb.ledger.failures)) > 0 and np.sum(np.asarray(fb.ledger.births)) > 0


def test_chunk_function_with_batched_parameter_points():
    state, params = _stressed_tissue(30)
    points = [dataclasses.replace(params, demand_scale=np.asarray(w, np.float64)) for w in (0.5, 1.0, 2.0)]
    batched = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *points)
    axes = BIO.params_axes(batched)
    states, keys = engine.broadcast_state(state, 3), replicate_keys(0, 3)
    kw = dict(n_records=2, record_every=25, check_fn=BIO.step_check)
    old = jax.jit(jax.vmap(functools.partial(engine.scan_records, BIO.step, BIO.observe, **kw), in_axes=(0, axes, 0)))
    new = jax.jit(engine.chunk_function(BIO.step, BIO.observe, params_axes=axes, **kw))
    out_new = new(states, batched, keys)
    assert _leaves_equal(old(states, batched, keys), out_new)
    atp = np.asarray(out_new[0].cells.pools)[:, :, 0].mean(axis=1)
    assert atp[0] != atp[2]  # the points differ: each row saw its own parameters


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (256, 256), (512, 512), ("512", 512), (" AUTO ", "auto")])
def test_vector_width_accepts(value, expected):
    assert codegen.parse(value) == expected


@pytest.mark.parametrize("value", [128, 1024, 512.0, True, "wide", None, [512]])
def test_vector_width_refuses_with_one_message(value):
    with pytest.raises(ConfigError) as err:
        codegen.parse(value)
    msg = str(err.value)
    assert "vector_width" in msg and repr(value) in msg and "auto, 256 or 512" in msg


def test_auto_width_pays_for_the_longer_compile_only_on_long_large_runs():
    state, _ = _stressed_tissue(40)
    nbytes = codegen.state_bytes(state)
    assert nbytes == sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(state))
    short = int(codegen.PAYBACK_BYTE_STEPS // nbytes) - 1
    assert codegen.choose("auto", short, state) == codegen.NARROW
    assert codegen.choose("auto", short + 2, state) == codegen.WIDE
    assert codegen.choose(256, 10**12, state) == codegen.NARROW  # an explicit width wins
    assert codegen.choose(512, 1, state) == codegen.WIDE
    assert codegen.compile_options(codegen.NARROW) == {}  # XLA's default: the program compiled before
    assert codegen.compile_options(codegen.WIDE) == {"xla_cpu_prefer_vector_width": 512}


def test_wide_and_narrow_code_give_the_same_bits_and_are_cached_apart():
    state, params = _stressed_tissue()
    runs = {w: engine.run(BIO, state, params, seed=1, steps=200, record_every=50, replicates=2, vector_width=w)
            for w in (256, 512)}
    assert runs[256].error is None and runs[512].error is None
    assert _leaves_equal(runs[256].state, runs[512].state)
    assert _leaves_equal(runs[256].records, runs[512].records)
    widths = {k[-2] for k in engine.CACHE._table if k[0] is BIO}
    assert {256, 512} <= widths  # two programs, one per width (the width is part of the key)


def test_a_bad_vector_width_is_refused_before_anything_runs():
    with pytest.raises(ConfigError) as err:
        api.prepare(load_config(["experiment=tissue", "vector_width=64"]))
    assert "vector_width=64" in str(err.value) and "auto, 256 or 512" in str(err.value)


def test_compile_options_reach_xla():
    """The extra option is passed to XLA's compile (a typo in its name would be dropped silently by
    ``ops.compile_lowered``, so the name is checked against what this jaxlib accepts)."""
    lowered = jax.jit(lambda x: x * 2.0).lower(np.ones(8))
    ops.compile_lowered(lowered, codegen.compile_options(codegen.WIDE))
    assert "xla_cpu_prefer_vector_width" not in ops._UNSUPPORTED
