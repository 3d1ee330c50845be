"""The package as users get it: a wheel that carries its configs and runs ``python -m sim`` outside
the checkout, and the Python API (``sim.load_config``, ``sim.simulate(overrides=...)``,
``CurrencyModel(**parameters)`` under ``mesa.batch_run``, the one JAX flag ``import sim`` sets).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import sim
from _support import ROOT
from sim.core.config import CONF_DIR, compose, load_config
from sim.errors import ConfigError

RUN = ["experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=4", "steps=20", "replicates=1",
       "figures=false"]


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the source tree (the checkout gets no build/ or egg-info of this test)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "sim", src / "sim", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(dist), "-q"]
    try:  # setuptools new enough here: build offline with it; else pip fetches the build requirements
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 77:
            cmd.append("--no-build-isolation")
    except ImportError:
        pass
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode and "No matching distribution found for setuptools" in done.stderr:
        pytest.skip("no package index to fetch setuptools>=77 (the build requirement) from: " + done.stderr[-300:])
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = list(dist.glob("currency_sim-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_carries_its_configs_and_runs_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("sim/conf/")}
    wanted = {f"sim/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert wanted and wanted == shipped, sorted(wanted ^ shipped)

    # A fresh venv gets the wheel (--no-deps); the dependencies come from this environment's
    # site-packages through a .pth line, which adds that folder to sys.path but runs none of its
    # .pth files: so not the editable install's finder, and `import sim` can only be the wheel's.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "_currency_sim_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"  # no sim/ or conf/ here: the configs must come from the wheel
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = subprocess.run([str(python), "-c", "import sim.core.config as c; print(c.CONF_DIR)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()) == purelib / "sim" / "conf"
    out = tmp_path / "run"
    done = subprocess.run([str(python), "-m", "sim", *RUN, f"hydra.run.dir={out}"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["substrate"] == "generic"
    assert (out / "results.nc").is_file() and (out / ".hydra" / "config.yaml").is_file()


# ---------------------------------------------------------------- the Python API


def test_load_config_composes_the_shipped_configs_without_a_path():
    cfg = sim.load_config(["experiment=tissue", "topology=ring", "topology.n_cells=5"])
    assert cfg == compose(["experiment=tissue", "topology=ring", "topology.n_cells=5"])
    assert cfg["topology"] == {"kind": "ring", "n_cells": 5} and cfg["experiment"]["kind"] == "tissue"
    assert sim.load_config()["experiment"]["kind"] == "analogy"  # the shipped default


@pytest.mark.parametrize("overrides, key, allowed", [
    (["topology=hexagonal"], "topology", "one of complete, erdos_renyi, file, grid"),
    (["topology.n_cells=[1"], "topology.n_cells", "Hydra override grammar"),
    (["+substrate.colour=1"], "substrate.colour", "a key of substrate"),
    ("steps=10", "overrides", "a list of Hydra override strings"),
])
def test_load_config_refuses_bad_overrides_in_one_line(overrides, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(overrides)
    assert info.value.key == key and allowed in info.value.allowed, str(info.value)
    assert "\n" not in str(info.value)


def test_simulate_takes_overrides_or_a_config():
    ds = sim.simulate(overrides=RUN[:-1] + ["steps=10", "record_every=5"])
    assert ds.sizes["cell"] == 4 and ds.sizes["time"] == 2 and ds.attrs["substrate"] == "generic"
    same = sim.simulate(sim.load_config(RUN[:-1] + ["steps=10", "record_every=5"]))
    assert same.identical(ds)
    with pytest.raises(ConfigError) as info:
        sim.simulate(sim.load_config(RUN), overrides=["steps=5"])
    assert info.value.key == "overrides"


def test_currency_model_takes_keyword_parameters_and_batch_runs():
    import mesa

    from sim.mesa_model import CurrencyModel

    model = CurrencyModel(n_cells=10, topology="ring", demand_scale=1.5, seed=0)
    assert model.n_cells == 10 and model.graph.number_of_edges() == 10 and float(model.params.demand_scale) == 1.5
    assert model.seed == 0
    rows = mesa.batch_run(CurrencyModel, parameters={"demand_scale": [1.0, 1.5], "n_cells": 6, "topology": "ring"},
                          iterations=1, max_steps=5, display_progress=False)
    # one row per run (Mesa 3.3) or per agent of each run (Mesa 3.5 adds the agent reporters): the model columns
    per_run = {}
    for r in rows:
        per_run.setdefault((float(r["demand_scale"]), int(r["Step"])), r)
    assert sorted(per_run) == [(1.0, 5), (1.5, 5)]
    low, high = per_run[(1.0, 5)], per_run[(1.5, 5)]
    assert low["n_alive_cells"] == 6 and low["total_work"] < high["total_work"]  # more demand, more work
    for bad, key in ((dict(n_cells=0), "topology.n_cells"), (dict(topology="hexagonal"), "topology"),
                     (dict(demand_scale=-1.0), "params.demand_scale"), (dict(seed=0.5), "seed"), (dict(dt=1e6), "dt")):
        with pytest.raises(ConfigError) as info:
            CurrencyModel(**bad)
        assert str(info.value).startswith(f"invalid config: {key}="), str(info.value)
    with pytest.raises(TypeError, match="demand_scale"):
        CurrencyModel(model=model.preset, demand_scale=2.0)


def test_import_sim_sets_only_jax_enable_x64():
    """The one process-wide change of ``import sim`` (sim/__init__.py says why it stays)."""
    code = ("import jax; before = dict(jax.config.values); import sim, sim.api, sim.mesa_model; "
            "after = dict(jax.config.values); print(sorted(k for k in after if before.get(k) != after[k]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['jax_enable_x64']"
