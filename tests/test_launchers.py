"""Hydra launchers run a sweep end to end: ``python -m sim -m hydra/launcher=joblib|submitit_local ...``.

One 2-job sweep per launcher (the cheapest run: a 4-cell generic ring, 20 steps, 2 replicates),
each in its own ``python -m sim`` process. Each must exit 0, write both job
folders and the sweep table, and show that its launcher ran the jobs (the launcher's ``_target_``
in ``multirun.yaml``; submitit's per-job logs in ``<sweep>/.submitit/``). The same job run by two
launchers is the same computation in a fresh process, so its ``results.nc`` is bit for bit the
same. The project's own launcher configs (``conf/hydra/launcher/local.yaml``, ``slurm.yaml``)
compose and instantiate; the Slurm one is not run (no cluster here).
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from _support import CONF_DIR, ROOT, TISSUE, assert_same_results, run_child

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


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_two_job_sweep_runs_end_to_end(sweeps, launcher):
    tmp, done = sweeps
    res, folder = done[launcher], tmp / launcher
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_parquet(folder / "summary.parquet")
    assert sorted(table["job"]) == [0, 1] and (table["status"] == "ok").all(), table.to_string()
    assert sorted(table["override.seed"].astype(str)) == ["1", "2"]
    for job in ("0", "1"):
        assert {"results.nc", "summary.json", ".hydra"} <= {p.name for p in (folder / job).iterdir()}
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
