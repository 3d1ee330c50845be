"""Helpers shared by the test modules (not a test file: pytest puts tests/ on sys.path)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[1]


def bio_substrate() -> dict:
    """The shipped biology preset as a plain dict (a fresh copy each call)."""
    return yaml.safe_load((ROOT / "conf" / "substrate" / "bio.yaml").read_text())


def quiet_bio_substrate(**chains) -> dict:
    """The biology preset without producer wear, failure or biogenesis (a deterministic supply),
    with optional overrides of its ``chains`` section."""
    sub = bio_substrate()
    prod = sub["producers"]
    prod["hazard_per_s"] = 0.0
    prod["birth_per_s"] = 0.0
    for kind in prod["kinds"].values():
        kind["damage_per_s"] = 0.0
    sub["chains"].update(chains)
    return sub


def child_env(drop=(), **extra) -> dict:
    """The environment of a child process: this one's without the names in ``drop``, JAX on CPU,
    Hydra's short errors, this checkout importable from any working directory, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(HYDRA_FULL_ERROR="0", JAX_PLATFORMS="cpu", PYTHONPATH=path, **extra)
    return env


def run_child(args, timeout=180, cwd=ROOT, env=None):
    """``python ARGS`` in a fresh process (in ``cwd``, with ``env`` or :func:`child_env`)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)


def assert_same_results(a: Path, b: Path) -> None:
    """Bit-identical ``results.nc`` (every variable, coordinate and attribute) and ``summary.json``
    (but for the wall-clock and compile times) of run folders ``a`` and ``b``."""
    da, db = xr.load_dataset(a / "results.nc"), xr.load_dataset(b / "results.nc")
    xr.testing.assert_identical(da, db)
    for name in list(da.data_vars) + list(da.coords):
        assert np.array_equal(da[name].values, db[name].values), name
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for key in ("wall_s", "compile_s"):
        sa.pop(key), sb.pop(key)
    assert sa == sb


class Stop(BaseException):
    """Stands for a kill in in-process tests (``sim.app.execute`` does not catch BaseException)."""


def stop_after_checkpoint(monkeypatch, n_chunks: int) -> None:
    """Make the run stop (raise :class:`Stop`) right after its checkpoint of chunk ``n_chunks``."""
    from sim import checkpoint

    original = checkpoint.Checkpointer.__call__

    def call(self, state, done, keys, rec):
        original(self, state, done, keys, rec)
        if self.n_chunks == n_chunks:
            raise Stop

    monkeypatch.setattr(checkpoint.Checkpointer, "__call__", call)


# a child `python child.py OVERRIDES` that runs sim like `python -m sim` and SIGKILLs itself
KILL_BETWEEN_CHECKPOINTS = """
import os, signal, sys
import sim.checkpoint as ck
original = ck.Checkpointer.__call__
def call(self, state, done, keys, rec):
    original(self, state, done, keys, rec)
    if self.n_chunks == 3:  # chunk 3 computed, its checkpoint (after chunk 4) not yet written
        os.kill(os.getpid(), signal.SIGKILL)
ck.Checkpointer.__call__ = call
from sim.app import entry
sys.argv = ["sim"] + sys.argv[1:]
entry()
"""


def with_fault(substrate_name: str, process: str, at_step: int, change):
    """A copy of a registered substrate whose ``process`` is followed, at step ``at_step`` only, by
    ``change(state) -> state`` (fault injection: the engine compiles the copy as a new program)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from sim import substrates

    sub = substrates.get(substrate_name)
    procs = list(sub.processes)
    i = [n for n, _ in procs].index(process)
    original = procs[i][1]

    def faulty(state, params, key=None):
        s = original(state, params, key)
        bad = change(s)
        return jax.tree_util.tree_map(lambda x, y: jnp.where(s.step == at_step, x, y), bad, s)

    procs[i] = (process, faulty)
    return dataclasses.replace(sub, processes=tuple(procs))


def inject(monkeypatch, faulty_substrate) -> None:
    """Register ``faulty_substrate`` under its name for the rest of a test (restored at teardown)."""
    from sim import substrates

    substrates.get(faulty_substrate.name)  # (a built-in loads first, so teardown restores it)
    monkeypatch.setitem(substrates._REGISTRY, faulty_substrate.name, faulty_substrate)


FAULT_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from _support import with_fault
from sim import substrates
import jax.numpy as jnp
from sim.pytree import replace
{change}
substrates.register(with_fault({name!r}, {process!r}, {at_step}, change), replace=True)
from sim.app import entry
sys.argv = ["sim"] + sys.argv[1:]
entry()
"""


def fault_child_script(path, name: str, process: str, at_step: int, change_source: str):
    """Write a child script that runs ``python -m sim`` with a fault injected (``change_source``
    defines ``change(s) -> state``); returns the script's path."""
    path = Path(path)
    path.write_text(FAULT_CHILD.format(tests=str(ROOT / "tests"), change=change_source, name=name,
                                       process=process, at_step=at_step))
    return path
