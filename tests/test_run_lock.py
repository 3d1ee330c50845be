"""Run-folder lock (sim.runlock) and the atomic ``.hydra`` files of a run folder.

A second process that wants a run folder in use (``resume=`` of a run still going, a run given the
same ``hydra.run.dir``) is refused with exit code 2 before anything is computed or written; once
the holder is SIGKILLed the kernel has dropped its flock and the resume goes ahead. The holder is
a child process that takes the lock through ``sim.runlock`` and says so on stdout, so the tests
wait for that line and never race a timer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _support import TISSUE, child_env, run_child
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sim import checkpoint, runlock
from sim.app import CONF_DIR, EXIT_CONFIG, execute, resume_run
from sim.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TINY = [TISSUE, "topology=ring", "topology.n_cells=4", "steps=100", "record_every=10", "figures=false", "replicates=1"]
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")

HOLDER = """
import sys, time
from sim import runlock
with runlock.hold(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        return compose(config_name="config", overrides=list(overrides))


def _sim(args, cwd=ROOT, timeout=300):
    return run_child(args, timeout=timeout, cwd=cwd)


@pytest.fixture
def holder(tmp_path):
    """Start a child process holding the lock of a folder; yields (start, list of started children)."""
    children = []

    def start(run_dir: Path) -> subprocess.Popen:
        script = tmp_path / "holder.py"
        script.write_text(textwrap.dedent(HOLDER))
        proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], cwd=ROOT, env=child_env(),
                                stdout=subprocess.PIPE, text=True)
        children.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


class _Stop(BaseException):
    """Stands for a kill (execute does not catch BaseException)."""


def _killed_run(monkeypatch, run_dir: Path) -> None:
    """A run that stopped after its second checkpoint (chunks of 20 steps, 5 chunks in all)."""
    original = checkpoint.Checkpointer.__call__

    def call(self, state, done, keys, rec):
        original(self, state, done, keys, rec)
        if self.n_chunks == 2:
            raise _Stop

    with monkeypatch.context() as m:
        m.setattr(checkpoint.Checkpointer, "__call__", call)
        with pytest.raises(_Stop):
            execute(compose_cfg(*TINY, "chunk_records=2", "checkpoint_every=1"), run_dir, quiet=True)
    assert checkpoint.load(run_dir).steps_done == 40


def _one_refusal(stderr: str, key: str, run_dir: Path, pid: int) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: invalid config: {key}={str(run_dir)!r}; allowed: "), lines[0]
    assert f"held by pid {pid} on host " in lines[0] and " since " in lines[0], lines[0]


# ------------------------------------------------------------------------------ the lock itself


def test_hold_records_holder_is_reentrant_and_leaves_no_file(tmp_path):
    run_dir = tmp_path / "new" / "run"  # created by hold
    with runlock.hold(run_dir):
        info = runlock.holder(run_dir)
        assert info["pid"] == os.getpid() and info["host"] and info["since"]
        with runlock.hold(run_dir):  # the same process (python -m sim, then execute) may nest
            pass
        assert (run_dir / runlock.LOCK_FILE).is_file()  # still held after the inner block
    assert not (run_dir / runlock.LOCK_FILE).exists()  # a released lock leaves no file
    # a stale lock file (its holder was killed) is simply taken over
    (run_dir / runlock.LOCK_FILE).write_text("garbage")
    with runlock.hold(run_dir):
        assert runlock.holder(run_dir)["pid"] == os.getpid()
    assert not (run_dir / runlock.LOCK_FILE).exists()


def test_lock_held_by_another_process_is_refused_until_it_is_killed(tmp_path, holder):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    with pytest.raises(ConfigError) as err:
        with runlock.hold(run_dir, key="resume"):
            pass
    assert err.value.key == "resume" and f"held by pid {proc.pid} on host" in str(err.value)
    assert runlock.busy(run_dir) is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run_dir / runlock.LOCK_FILE).is_file()  # the file stays, the lock does not
    assert runlock.busy(run_dir) is None
    with runlock.hold(run_dir):
        assert runlock.holder(run_dir)["pid"] == os.getpid()


# ------------------------------------------------------------------------------ resume / execute


def test_resume_refused_while_the_folder_is_held_and_proceeds_after_sigkill(monkeypatch, tmp_path, holder, capsys):
    run_dir = tmp_path / "run"
    _killed_run(monkeypatch, run_dir)
    proc = holder(run_dir)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))  # checkpoint/ and the holder's .lock

    # in-process: resume_run and execute are refused before computing or writing anything
    capsys.readouterr()
    assert resume_run(run_dir, quiet=True) == EXIT_CONFIG
    _one_refusal(capsys.readouterr().err, "resume", run_dir, proc.pid)
    assert execute(compose_cfg(*TINY), run_dir, quiet=True) == EXIT_CONFIG
    _one_refusal(capsys.readouterr().err, "hydra.run.dir", run_dir, proc.pid)
    # the command line: `python -m sim resume=RUN_DIR` and a fresh run aimed at the same folder
    cli = {
        key: subprocess.Popen([sys.executable, "-m", "sim", *args], cwd=ROOT, env=child_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for key, args in (("resume", [f"resume={run_dir}"]), ("hydra.run.dir", [*TINY, f"hydra.run.dir={run_dir}"]))
    }
    for key, child in cli.items():  # (the two run side by side: each is mostly interpreter start-up)
        _, stderr = child.communicate(timeout=300)
        assert child.returncode == EXIT_CONFIG, stderr
        _one_refusal(stderr, key, run_dir, proc.pid)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before  # (incl. no .hydra/)
    assert checkpoint.load(run_dir).steps_done == 40

    proc.send_signal(signal.SIGKILL)  # the holder dies without cleaning up: its flock goes with it
    proc.wait(timeout=30)
    assert resume_run(run_dir, quiet=True) == 0
    assert (run_dir / "results.nc").is_file() and json.loads((run_dir / "summary.json").read_text())["status"] == "ok"
    assert not (run_dir / "checkpoint").exists() and not (run_dir / runlock.LOCK_FILE).exists()


def test_resume_of_a_running_folder_without_checkpoint_names_the_holder(tmp_path, holder, capsys):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)  # a run still going (no checkpoint written yet)
    assert resume_run(run_dir, quiet=True) == EXIT_CONFIG
    _one_refusal(capsys.readouterr().err, "resume", run_dir, proc.pid)


# ------------------------------------------------------------------------------ atomic .hydra files

SPY = """
import json, os, runpy, sys
log = open(os.environ["REPLACE_LOG"], "a")
real_replace = os.replace
def replace(src, dst, *a, **k):
    log.write(json.dumps([str(src), str(dst)]) + "\\n"); log.flush()
    return real_replace(src, dst, *a, **k)
os.replace = replace
sys.argv = ["sim"] + sys.argv[1:]
runpy.run_module("sim", run_name="__main__", alter_sys=True)
"""


def test_python_m_sim_writes_the_hydra_files_atomically_with_hydras_content(tmp_path):
    """``python -m sim`` (with os.replace spied on) writes .hydra/{config,hydra,overrides}.yaml
    through sim.io (a temporary next to each, renamed onto it), with the content Hydra writes."""
    script, log, run_dir = tmp_path / "spy.py", tmp_path / "replace.log", tmp_path / "run"
    script.write_text(textwrap.dedent(SPY))
    env = child_env(REPLACE_LOG=str(log))
    res = subprocess.run([sys.executable, str(script), *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    renamed = {Path(dst): Path(src) for src, dst in map(json.loads, log.read_text().splitlines())}
    files = {p for p in run_dir.rglob("*") if p.is_file()}
    expected = {run_dir / ".hydra" / name for name in HYDRA_FILES} | {run_dir / "results.nc", run_dir / "summary.json"}
    assert files == expected
    for f in files:  # every file of the run folder came from a temporary next to it
        assert renamed[f].parent == f.parent and renamed[f].name.startswith(f".tmp-{f.name}."), f
    hydra_dir = run_dir / ".hydra"
    assert (hydra_dir / "config.yaml").read_text() == OmegaConf.to_yaml(compose_cfg(*TINY))
    assert (hydra_dir / "overrides.yaml").read_text() == OmegaConf.to_yaml(TINY)
    hyd = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]
    assert hyd["output_subdir"] == ".hydra" and hyd["runtime"]["output_dir"] == str(run_dir)
    assert hyd["overrides"]["task"] == TINY and f"hydra.run.dir={run_dir}" in hyd["overrides"]["hydra"]


def test_multirun_job_hydra_files_equal_hydras_own_and_sweep_is_collected(tmp_path):
    """In a sweep every job folder gets its .hydra files, byte-identical to those Hydra itself
    writes (asked here to write its own into .hydra_ref), and summary.parquet is still collected."""
    sweep = tmp_path / "sweep"
    res = _sim(["-m", "sim", "-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", "hydra.output_subdir=.hydra_ref"])
    assert res.returncode == 0, res.stderr
    for job in ("0", "1"):
        for name in HYDRA_FILES:
            ours, hydras = sweep / job / ".hydra" / name, sweep / job / ".hydra_ref" / name
            assert ours.read_bytes() == hydras.read_bytes(), (job, name)
        assert yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())[0] == f"seed={job}"
        assert not (sweep / job / runlock.LOCK_FILE).exists()
    df = pd.read_parquet(sweep / "summary.parquet")
    assert sorted(df["override.seed"]) == [0, 1] and (df["status"] == "ok").all()  # typed: ints
    assert not [p for p in sweep.rglob(".tmp-*")]
