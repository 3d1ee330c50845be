"""Hydra launchers run a sweep end to end: ``python -m sim -m hydra/launcher=joblib|submitit_local|ray_local ...``.

One 2-job sweep per launcher (the cheapest run: a 4-cell generic ring, 20 steps, 2 replicates),
each in its own ``python -m sim`` process. Each must exit 0, write both job
folders and the sweep table, and show that its launcher ran the jobs (the launcher's ``_target_``
in ``multirun.yaml``; submitit's per-job logs in ``<sweep>/.submitit/``). The same job run by two
launchers is the same computation in a fresh process, so its ``results.nc`` is bit for bit the
same. The project's own launcher configs (``conf/hydra/launcher/local.yaml``, ``slurm.yaml``)
compose and instantiate; the Slurm one is not run (no cluster here).

The Ray launcher (``conf/hydra/launcher/ray_local.yaml``: a local Ray cluster started by the sweep's
process) needs the extra ``distributed`` (``make test-distributed`` installs it and runs this file);
without it those tests skip. Its sweep is slow (25-35 s here: Ray's start-up and two fresh workers) and
must leave no process behind: every process it starts carries a marker in its environment, and none
may be alive once the sweep has exited.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _support import CONF_DIR, ROOT, TISSUE, assert_same_results, child_env, run_child

SWEEP = [TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4", "steps=20", "replicates=2",
         "figures=false", "seed=1,2"]
LAUNCHERS = {  # hydra/launcher choice -> the launcher class Hydra instantiates
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launchers")

    def sweep(launcher):
        args = ["-m", "sim", "-m", f"hydra/launcher={launcher}", *SWEEP, f"hydra.sweep.dir={tmp / launcher}"]
        return run_child(args, timeout=300, cwd=ROOT)

    # one after the other: the second sweep's jobs load the executable the first one compiled from
    # the persistent compilation cache (tests/conftest.py gives the session one), which saves more
    # CPU than running both at once on two cores would save wall time
    return tmp, {name: sweep(name) for name in LAUNCHERS}


def assert_two_job_sweep(folder, res):
    """The seed=1,2 sweep ended well: exit 0, a table of two ok jobs, each job's run folder complete."""
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_parquet(folder / "summary.parquet")
    assert sorted(table["job"]) == [0, 1] and (table["status"] == "ok").all(), table.to_string()
    assert sorted(table["override.seed"].astype(str)) == ["1", "2"]
    for job in ("0", "1"):
        assert {"results.nc", "summary.json", ".hydra"} <= {p.name for p in (folder / job).iterdir()}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_two_job_sweep_runs_end_to_end(sweeps, launcher):
    tmp, done = sweeps
    res, folder = done[launcher], tmp / launcher
    assert_two_job_sweep(folder, res)
    multirun = yaml.safe_load((folder / "multirun.yaml").read_text())
    assert multirun["hydra"]["launcher"]["_target_"] == LAUNCHERS[launcher]


def test_submitit_ran_each_job_in_its_own_process(sweeps):
    tmp, _ = sweeps
    logs = sorted(p.name for p in (tmp / "submitit_local" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2, logs  # one folder per job, named by the process id of its controller
    assert len({name.split("_")[0] for name in logs}) == 2


def test_the_same_job_gives_the_same_results_under_both_launchers(sweeps):
    tmp, _ = sweeps
    for job in ("0", "1"):
        assert_same_results(tmp / "joblib" / job, tmp / "submitit_local" / job)


@pytest.mark.parametrize("choice, target, fields", [
    ("local", LAUNCHERS["submitit_local"], {"cpus_per_task": 1, "gpus_per_node": 0, "timeout_min": 1440}),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
     {"partition": None, "timeout_min": 120, "cpus_per_task": 2, "mem_gb": 8, "nodes": 1}),
])
def test_the_project_launcher_configs_compose_and_instantiate(choice, target, fields):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sim"):
        cfg = compose("config", overrides=[f"hydra/launcher={choice}", TISSUE, "hydra.launcher.timeout_min=7"],
                      return_hydra_config=True)
    node = cfg.hydra.launcher
    assert node._target_ == target
    assert {k: node[k] for k in fields} == {**fields, "timeout_min": 7}  # defaults, overridable on the command line
    launcher = instantiate(node)
    assert type(launcher).__name__ == target.rsplit(".", 1)[1]
    assert launcher.params["timeout_min"] == 7 and launcher.params["name"] == "sim"


# --- Ray (extra distributed) -------------------------------------------------------------------------

def _ray_missing() -> str | None:
    """Why the Ray launcher cannot run here (None when it can)."""
    for module in ("hydra_plugins.hydra_ray_launcher", "ray"):
        try:
            if importlib.util.find_spec(module) is None:
                raise ImportError(module)
        except ImportError:
            return (f"the Ray launcher is not installed ({module} is not importable): "
                    "pip install -e '.[distributed]', or make test-distributed")
    return None


needs_ray = pytest.mark.skipif(_ray_missing() is not None, reason=_ray_missing() or "")
RAY_TARGET = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"


def _marked_processes(marker: str) -> list[str]:
    """``pid state name`` of every live process (zombies aside) whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() not in (proc / "environ").read_bytes():
                continue
            pid, rest = (proc / "stat").read_text().split(" (", 1)
            name, state = rest.rsplit(") ", 1)[0], rest.rsplit(") ", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
        if state != "Z":
            found.append(f"{pid} {state} {name}")
    return found


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory):
    """The 2-job sweep through ``hydra/launcher=ray_local`` (the shipped config: 2 CPUs, no dashboard,
    a 75 MiB object store, one worker per job): (sweep folder, completed process, seconds, processes
    still alive 30 s after it exited)."""
    folder = tmp_path_factory.mktemp("ray") / "sweep"
    session = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    tag = uuid.uuid4().hex  # the marker: CURRENCY_SIM_RAY_TEST=<tag> in the environment of every process
    args = ["-m", "sim", "-m", "hydra/launcher=ray_local", *SWEEP, f"hydra.sweep.dir={folder}",
            f"hydra.launcher.ray.init._temp_dir={session}"]
    start = time.monotonic()
    try:
        res = run_child(args, timeout=300, cwd=ROOT, env=child_env(CURRENCY_SIM_RAY_TEST=tag))
        seconds = time.monotonic() - start
        # Ray's processes end when the sweep's process shuts Ray down at exit; its idle workers notice a
        # moment later (a few seconds on a loaded machine)
        marker = f"CURRENCY_SIM_RAY_TEST={tag}"
        left = _marked_processes(marker) if Path("/proc/self/environ").exists() else []
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = _marked_processes(marker)
    finally:
        shutil.rmtree(session, ignore_errors=True)
    return folder, res, seconds, left


@needs_ray
@pytest.mark.slow  # 25-35 s on the loaded 2-core machine (ray.init, then two fresh workers starting JAX)
def test_a_two_job_sweep_runs_end_to_end_on_ray(ray_sweep):
    folder, res, seconds, _ = ray_sweep
    assert_two_job_sweep(folder, res)
    for job in ("0", "1"):
        assert yaml.safe_load((folder / job / "summary.json").read_text())["status"] == "ok"
    launcher = yaml.safe_load((folder / "multirun.yaml").read_text())["hydra"]["launcher"]
    assert launcher["_target_"] == RAY_TARGET
    assert launcher["ray"]["init"]["num_cpus"] == 2 and launcher["ray"]["remote"]["max_calls"] == 1
    assert "Started a local Ray instance" in res.stderr + res.stdout  # Ray ran the jobs, not a fallback
    print(f"ray sweep: {seconds:.1f} s")


@needs_ray
@pytest.mark.slow
def test_the_ray_sweep_leaves_no_process_behind(ray_sweep):
    _, res, _, left = ray_sweep
    assert res.returncode == 0, res.stderr[-3000:]
    assert not left, f"processes of the Ray sweep still alive 30 s after it exited: {left}"


@needs_ray
@pytest.mark.slow
def test_the_same_job_gives_the_same_results_under_ray_and_joblib(ray_sweep, sweeps):
    folder, res, _, _ = ray_sweep
    tmp, _ = sweeps
    assert res.returncode == 0, res.stderr[-3000:]
    for job in ("0", "1"):
        assert_same_results(tmp / "joblib" / job, folder / job)


@needs_ray
def test_the_ray_launcher_config_composes_and_instantiates():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sim"):
        cfg = compose("config", overrides=["hydra/launcher=ray_local", TISSUE, "hydra.launcher.ray.init.num_cpus=1"],
                      return_hydra_config=True)
    node = cfg.hydra.launcher
    assert node._target_ == RAY_TARGET
    assert dict(node.ray.init) == {"address": None, "num_cpus": 1, "num_gpus": 0, "include_dashboard": False,
                                   "object_store_memory": 78643200, "_temp_dir": None}
    assert dict(node.ray.remote) == {"num_cpus": 1, "num_gpus": 0, "max_calls": 1}
    launcher = instantiate(node)  # (starts nothing: Ray is initialised when the sweep launches)
    assert type(launcher).__name__ == "RayLauncher" and launcher.ray_cfg.init.num_cpus == 1
