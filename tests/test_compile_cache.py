"""JAX's persistent compilation cache (``compile_cache``, :mod:`sim.core.cache`): a second process
running the same shapes loads every executable from disk (no cache miss; the engine's chunk program
whole from the executable store, :mod:`sim.core.executable_store`, the others from JAX's cache) and
writes bit-identical results; ``compile_cache=null`` leaves no cache behind; a bad setting is refused."""

import json

import numpy as np
import pytest

from _support import TISSUE, run_child
from sim.core import cache
from sim.errors import ConfigError

CHILD = """
import json, sys, jax
counts = {"hits": 0, "misses": 0, "compiles": 0}
def event(name, **kw):
    if name.endswith("/cache_hits"): counts["hits"] += 1
    if name.endswith("/cache_misses"): counts["misses"] += 1
def duration(name, secs, **kw):
    if "backend_compile" in name: counts["compiles"] += 1
jax.monitoring.register_event_listener(event)
jax.monitoring.register_event_duration_secs_listener(duration)
import sim.api
from sim.core import engine
from sim.core.config import compose
out = sim.api.run(compose(sys.argv[1:]))
counts["traced"], counts["loaded"] = engine.CACHE.traced, engine.CACHE.loaded
np = __import__("numpy")
counts["checksum"] = [float(np.asarray(out.dataset[v].values, float).sum()) for v in sorted(out.dataset.data_vars)]
counts["compile_s"] = out.summary["compile_s"]
print(json.dumps(counts))
"""


def _run(tmp_path, *over):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    res = run_child([str(script), TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=5", "steps=60",
                     "replicates=2", "figures=false", *over])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_warm_second_process_compiles_nothing_and_gets_the_same_numbers(tmp_path):
    where = tmp_path / "cache"
    cold = _run(tmp_path, f"compile_cache={where}")
    warm = _run(tmp_path, f"compile_cache={where}")
    assert cold["misses"] > 0 and cold["compiles"] > 0 and cold["traced"] == 1 and cold["loaded"] == 0
    # every executable of the warm process came from disk (JAX still reports a "backend compile"
    # duration for a cache hit, the time to load it, so the hit/miss events are what is counted):
    # the engine's chunk program from the executable store, without tracing it, the rest from JAX's cache
    assert warm["misses"] == 0 and warm["traced"] == 0 and warm["loaded"] == 1
    assert warm["hits"] + warm["loaded"] >= cold["misses"]
    assert warm["checksum"] == cold["checksum"]
    assert any(where.glob("*-cache")) and len(list((where / "executables").glob("*.exe"))) == 1


def test_the_cache_can_be_switched_off(tmp_path):
    off = _run(tmp_path, "compile_cache=null")
    assert off["hits"] == 0 and off["misses"] == 0 and off["compiles"] > 0
    assert off["loaded"] == 0 and off["traced"] == 1


def test_compile_cache_settings_are_resolved_or_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.resolve("auto") == tmp_path / "currency-sim" / "jax"
    assert cache.resolve(None) is None and cache.resolve(False) is None
    assert cache.resolve("~/x").name == "x"
    with pytest.raises(ConfigError) as info:
        cache.resolve(3)
    assert info.value.key == "compile_cache"
    np.testing.assert_equal(cache.resolve(str(tmp_path / "c")), tmp_path / "c")
