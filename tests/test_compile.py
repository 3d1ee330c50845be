"""No recompilation inside a run, across chunks, or between runs that only change parameter values.

Counts XLA backend compilations with ``jax.monitoring`` (every executable JAX builds reports a
backend-compile duration event) as well as the engine's own executable cache.
"""

import dataclasses

import jax
import numpy as np
import pytest

import sim  # noqa: F401
from _support import TISSUE
from sim.core import engine
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.llm.build import compose
from sim.substrates.bio.build import build

_events: list[str] = []


def _listener(event: str, duration: float, **kwargs) -> None:
    if "backend_compile" in event:
        _events.append(event)


jax.monitoring.register_event_duration_secs_listener(_listener)


@pytest.fixture(scope="module")
def tissue():
    cfg = compose([TISSUE, "topology=small_world", "topology.n_cells=12", "steps=40", "record_every=4"])
    return build(cfg)


def _run(model, params, steps=40, chunk=2, replicates=2):
    return engine.run(BIO, model.state, params, seed=0, steps=steps, record_every=4,
                      replicates=replicates, chunk_records=chunk)


def test_sweep_of_parameter_values_compiles_once(tissue):
    _run(tissue, tissue.params)  # warm: may compile
    before_events, before_count = len(_events), engine.CACHE.compiles
    results = []
    for demand, cond, hazard in [(0.5, 1.0, 1e-5), (1.5, 2.0, 1e-3), (2.0, 0.5, 0.0)]:
        p = dataclasses.replace(
            tissue.params,
            demand_scale=np.float64(demand),
            conductance_scale=np.float64(cond),
            hazard0=np.float64(hazard),
        )
        r = _run(tissue, p)
        assert r.error is None and r.compile_s == 0.0
        results.append(r.records["pools"][:, -1])
    assert engine.CACHE.compiles == before_count
    assert len(_events) == before_events, _events[before_events:]
    # the parameter values really changed the dynamics (the test could fail)
    assert not np.allclose(results[0], results[1])


def test_long_run_is_one_executable_over_many_chunks(tissue):
    _run(tissue, tissue.params, steps=40, chunk=2)
    before_events, before_count = len(_events), engine.CACHE.compiles
    r = _run(tissue, tissue.params, steps=400, chunk=2)  # 50 chunks of the same executable
    assert r.steps_done == 400
    assert engine.CACHE.compiles == before_count
    assert len(_events) == before_events


def test_new_shape_compiles(tissue):
    """The counters do see a compilation when there is one (so the tests above can fail). (7
    replicates: a shape no other test of the session compiles, so the session's persistent
    compilation cache, tests/conftest.py, cannot serve it from disk.)"""
    before, before_events = engine.CACHE.compiles, len(_events)
    _run(tissue, tissue.params, replicates=7)
    assert engine.CACHE.compiles == before + 1
    assert len(_events) > before_events


SHARDED_CHILD = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import sim.api
from sim import rng
from sim.core import engine
from sim.core.config import compose
cfg, sub, built = sim.api.prepare(compose([
    "experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=4", "compile_cache=null"]))
kw = dict(seed=1, steps=40, record_every=10, replicates=4)
plain = engine.run(sub, built.state, built.params, **kw)
over = NamedSharding(Mesh(np.array(jax.devices()), ("replicate",)), P("replicate"))
state = jax.tree_util.tree_map(lambda x: jax.device_put(x, over), engine.broadcast_state(built.state, 4))
sharded = engine.run(sub, state, built.params, keys=jax.device_put(rng.replicate_keys(1, 4), over), **kw)
same = all(np.array_equal(plain.records[k], sharded.records[k]) for k in sub.record_fields)
print(len(jax.devices()), engine.CACHE.compiles, same)
"""


def test_replicates_sharded_over_two_devices_compile_their_own_executable_and_agree(tmp_path):
    """The executable cache keys on placement too: the same shapes sharded over two (forced host)
    devices get their own executable instead of failing on the single-device one, with equal records."""
    from _support import run_child

    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_CHILD)
    res = run_child([str(script)])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["2", "2", "True"]
