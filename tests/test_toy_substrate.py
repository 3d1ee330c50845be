"""A substrate defined in this file, with no edit anywhere else, runs through the whole core:
``sim.simulate`` (engine and reference backends), the numerical guard, checkpoint/resume and the
run folder of ``sim.app.execute``. It is the proof that a new substrate costs a spec, kernels and a
reference, and one ``register`` call.

The toy economy: each cell makes a currency ``x`` at a noisy rate (one uniform draw per cell and
step from the engine's counter-based stream), loses a fraction to decay, and exchanges it with its
ring neighbours by diffusion (a segment sum over an edge list).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest
import xarray as xr

import sim
from _support import Stop, assert_same_results, stop_after_checkpoint, with_fault
from sim import rng, substrates
from sim.app import EXIT_CONFIG, EXIT_NUMERICAL, execute, resume_run
from sim.core.substrate import Built, EntitySpec, Quantity, Substrate
from sim.errors import ConfigError, NumericalError
from sim.pytree import pytree_dataclass, replace

MAKE = 91  # the toy's draw purpose


@pytree_dataclass
class ToyCells:
    x: object  # (C,) currency
    alive: object  # (C,) bool


@pytree_dataclass
class ToyLedger:
    made: object  # (C,) cumulative currency made
    decayed: object  # (C,) cumulative currency lost to decay


@pytree_dataclass
class ToyState:
    cells: ToyCells
    ledger: ToyLedger
    step: object


@pytree_dataclass
class ToyParams:
    dt: object
    rate: object
    decay: object
    coupling: object
    noise: object
    src: object
    dst: object


def make(state, params, key):
    n = state.cells.x.shape[0]
    u = rng.uniforms(key, state.step, MAKE, jnp.arange(n, dtype=jnp.uint32), dtype=state.cells.x.dtype)
    dx = params.dt * params.rate * (1.0 + params.noise * (u - 0.5))
    return replace(state, cells=replace(state.cells, x=state.cells.x + dx),
                   ledger=replace(state.ledger, made=state.ledger.made + dx))


def decay(state, params, key):
    lost = params.dt * params.decay * state.cells.x
    return replace(state, cells=replace(state.cells, x=state.cells.x - lost),
                   ledger=replace(state.ledger, decayed=state.ledger.decayed + lost))


def exchange(state, params, key):
    x = state.cells.x
    flux = params.dt * params.coupling * (x[params.src] - x[params.dst])
    n = x.shape[0]
    delta = jax.ops.segment_sum(flux, params.dst, n) - jax.ops.segment_sum(flux, params.src, n)
    return replace(state, cells=replace(state.cells, x=x + delta))


def observe(state):
    return {"x": state.cells.x, "made": state.ledger.made, "decayed": state.ledger.decayed}


def invariants(obs, previous=None):
    out = {}
    for name in ("x", "made", "decayed"):
        v = np.asarray(obs[name])
        with np.errstate(invalid="ignore"):
            out[name] = (~np.isfinite(v) | (v < 0), v)
    if previous is not None:
        change = np.asarray(obs["made"]) - np.asarray(previous["made"])
        out["made (decreased)"] = (change < 0, change)
    return out


def validate(cfg):
    sub = cfg["substrate"]
    for key in ("rate", "decay", "coupling", "noise"):
        v = sub.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ConfigError(f"substrate.{key}", v, "a number >= 0")


def build(cfg):
    sub, n = cfg["substrate"], int(cfg["topology"]["n_cells"])
    graph = nx.cycle_graph(n)
    src, dst = (np.array(a, np.int32) for a in zip(*graph.edges())) if n > 1 else (np.zeros(0, np.int32),) * 2
    f = np.float64
    state = ToyState(ToyCells(np.full(n, f(sub.get("x0", 1.0))), np.ones(n, bool)),
                     ToyLedger(np.zeros(n), np.zeros(n)), np.int32(0))
    params = ToyParams(f(cfg["dt"]), f(sub["rate"]), f(sub["decay"]), f(sub["coupling"]), f(sub["noise"]), src, dst)
    return Built(state, params, graph, int(cfg["seed"]))


class ToyReference:
    """The same economy in plain Python floats, cell by cell (same draws, same order)."""

    def __init__(self, built, replicate=0):
        self.built, p = built, built.params
        self.key = rng.replicate_keys(built.seed, 1, replicate)[0]
        self.x = [float(v) for v in np.asarray(built.state.cells.x)]
        self.made = [0.0] * len(self.x)
        self.decayed = [0.0] * len(self.x)
        self.t = 0
        self.dt, self.rate, self.k, self.g, self.noise = (float(v) for v in (p.dt, p.rate, p.decay, p.coupling, p.noise))
        self.edges = list(zip(np.asarray(p.src).tolist(), np.asarray(p.dst).tolist()))

    def step(self):
        n = len(self.x)
        u = np.asarray(rng.uniforms(self.key, jnp.int32(self.t), MAKE, jnp.arange(n, dtype=jnp.uint32))).tolist()
        for i in range(n):
            dx = self.dt * self.rate * (1.0 + self.noise * (u[i] - 0.5))
            self.x[i] += dx
            self.made[i] += dx
        for i in range(n):
            lost = self.dt * self.k * self.x[i]
            self.x[i] -= lost
            self.decayed[i] += lost
        delta = [0.0] * n
        for s, d in self.edges:
            f = self.dt * self.g * (self.x[s] - self.x[d])
            delta[d] += f
            delta[s] -= f
        self.x = [a + b for a, b in zip(self.x, delta)]
        self.t += 1

    def state(self):
        n = len(self.x)
        return ToyState(ToyCells(np.array(self.x), np.ones(n, bool)),
                        ToyLedger(np.array(self.made), np.array(self.decayed)), np.int32(self.t))


def to_dataset(built, result, cfg):
    first = int(cfg.get("first_replicate", 0) or 0)
    rec = result.records
    coords = {"replicate": first + np.arange(rec["x"].shape[0]), "time": result.times, "cell": np.arange(rec["x"].shape[2])}
    return xr.Dataset({q.name: (("replicate", "time", "cell"), rec[q.name], {"units": q.unit}) for q in RECORDS},
                      coords=coords)


def summarize(built, result, cfg):
    st = result.state
    return {"status": "ok", "x_mean": float(np.mean(np.asarray(st.cells.x))),
            "made": float(np.mean(np.sum(np.asarray(st.ledger.made), -1))),
            "wall_s": float(result.wall_s), "compile_s": float(result.compile_s)}


RECORDS = (Quantity("x", "1", "currency"), Quantity("made", "1", "cumulative made"),
           Quantity("decayed", "1", "cumulative decayed"))

TOY = Substrate(
    name="toy", build=build, processes=(("make", make), ("decay", decay), ("exchange", exchange)),
    observe=observe, records=RECORDS, invariants=invariants, to_dataset=to_dataset, summarize=summarize,
    validate=validate, reference=ToyReference, demand_knob="rate",
    entities=(EntitySpec("cell", "cells", (("x", "x"), ("alive", "alive"))),),
)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(substrates._REGISTRY, "toy", TOY)
    yield


def toy_cfg(**changes):
    cfg = {
        "seed": 3, "steps": 40, "dt": 0.1, "replicates": 2, "first_replicate": 0, "backend": "jax",
        "record_every": 5, "chunk_records": 2, "precision": "float64", "debug": False,
        "deterministic_reductions": False, "figures": False, "checkpoint_every": 0, "resume": None,
        "experiment": {"name": "toy", "kind": "tissue"},
        "substrate": {"name": "toy", "rate": 1.0, "decay": 0.5, "coupling": 0.3, "noise": 0.5},
        "topology": {"name": "ring", "n_cells": 4},
    }
    for key, value in changes.items():
        node, *path = key.split("__")
        if path:
            cfg[node] = dict(cfg[node], **{path[0]: value})
        else:
            cfg[key] = value
    return cfg


def test_simulate_runs_the_toy_on_the_engine_and_the_reference_alike():
    ds = sim.simulate(toy_cfg())
    assert dict(ds.sizes) == {"replicate": 2, "time": 8, "cell": 4}
    ref = sim.simulate(toy_cfg(backend="mesa"))
    for name in ("x", "made", "decayed"):
        np.testing.assert_allclose(ds[name].values, ref[name].values, rtol=1e-12, atol=1e-15)
    # the noise is real and per replicate: replicates differ, and the ledger balances
    assert not np.allclose(ds["x"].values[0], ds["x"].values[1])
    total = ds["x"].sum("cell") - 4 * 1.0 - ds["made"].sum("cell") + ds["decayed"].sum("cell")
    assert float(np.max(np.abs(total.values))) < 1e-12


def test_guard_names_step_cell_quantity_and_process_of_the_toy():
    faulty = with_fault("toy", "decay", 17, lambda s: replace(s, cells=replace(s.cells, x=s.cells.x.at[2].set(-1.0))))
    with substrates.override(faulty):
        out = sim.api.run(toy_cfg())
    err = out.result.error
    assert isinstance(err, NumericalError)
    assert (err.step, err.cell, err.quantity, err.process) == (17, 2, "x", "decay")
    assert out.summary["failure_quantity"] == "x" and out.summary["status"] == "failed"
    # chunks of 10 steps: the first one (steps 0..9) is kept
    assert out.dataset.sizes["time"] == 2 and np.isfinite(out.dataset["x"].values).all()


def test_toy_checkpoints_and_resumes_bit_identically(monkeypatch, tmp_path):
    ref_dir, run_dir = tmp_path / "whole", tmp_path / "killed"
    cfg = toy_cfg(checkpoint_every=1)
    assert execute(cfg, ref_dir, quiet=True) == 0
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, 2)
        with pytest.raises(Stop):
            execute(cfg, run_dir, quiet=True)
    assert (run_dir / "checkpoint").is_dir() and not (run_dir / "results.nc").exists()
    assert resume_run(run_dir, quiet=True) == 0
    assert_same_results(ref_dir, run_dir)


def test_toy_refusals_and_numerical_exit_code(tmp_path):
    with pytest.raises(ConfigError) as info:
        sim.api.run(toy_cfg(substrate__rate=-1.0))
    assert info.value.key == "substrate.rate"
    assert execute(toy_cfg(substrate__rate=-1.0), tmp_path / "bad", quiet=True) == EXIT_CONFIG
    faulty = with_fault("toy", "make", 3, lambda s: replace(s, cells=replace(s.cells, x=s.cells.x.at[0].set(jnp.nan))))
    with substrates.override(faulty):
        assert execute(toy_cfg(), tmp_path / "nan", quiet=True) == EXIT_NUMERICAL


def test_a_changed_substrate_is_a_new_program_and_same_shapes_reuse_it():
    from sim.core import engine

    built = TOY.build(toy_cfg())
    kw = dict(seed=0, steps=20, record_every=5, replicates=2)
    engine.run(TOY, built.state, built.params, **kw)
    before = engine.CACHE.compiles
    faster = dataclasses.replace(built.params, rate=np.float64(3.0))  # a value, not a shape: no compile
    out = engine.run(TOY, built.state, faster, **kw)
    assert engine.CACHE.compiles == before and out.error is None
    other = dataclasses.replace(TOY, processes=TOY.processes[:2])  # another program: compiles
    engine.run(other, built.state, built.params, **kw)
    assert engine.CACHE.compiles == before + 1


def test_toy_runs_in_the_mesa_layer_with_agents_from_its_entity_specs():
    from sim.mesa_model import SubstrateModel

    fast, ref = (SubstrateModel(toy_cfg(), backend=b, replicate=1) for b in ("jax", "mesa"))
    fast.run(12)
    for _ in range(12):
        ref.step()
    np.testing.assert_allclose(fast.state.cells.x, ref.state.cells.x, rtol=1e-12)
    cells = fast.agents_of("cell")
    assert len(cells) == 4 and all(a.alive for a in cells)
    np.testing.assert_allclose(sorted(a.x for a in cells), sorted(fast.state.cells.x))
    assert len(cells.select(lambda a: a.x > 0)) == 4
    assert len(fast.datacollector.get_model_vars_dataframe()) >= 1
