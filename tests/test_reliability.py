"""Reliability: numerical guards, checkpoint/resume (also after SIGKILL), atomic outputs, determinism.

In-process runs go through ``sim.app.execute`` (the job body of ``python -m sim``); the SIGKILL and
exit-code tests start real processes. The kill is deterministic: the child process sends itself
SIGKILL at a chosen point (after a chunk that was not checkpointed, or in the middle of writing a
checkpoint), so the test never races a timer.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from hydra import compose, initialize_config_dir

import sim  # noqa: F401  (float64)
from _support import Stop as _Stop
from _support import KILL_BETWEEN_CHECKPOINTS, TISSUE, assert_same_results, run_child
from _support import stop_after_checkpoint as _stop_after
from _support import fault_child_script, inject, with_fault
import sim.api
VALIDATE = importlib.import_module("sim.config.validate")
from sim import checkpoint
from sim.core import engine
from sim.substrates.bio import SUBSTRATE as BIO
from sim.app import CONF_DIR, EXIT_CONFIG, EXIT_NUMERICAL, execute, resume_run
from sim.errors import ConfigError
from sim.io import atomic_path, write_json
from sim.pytree import replace
from sim.substrates.bio.state import ATP, GLC

ROOT = Path(__file__).resolve().parent.parent
# a small stochastic tissue: producers fail and are rebuilt, so the PRNG stream matters
SMALL = [
    TISSUE, "topology=ring", "topology.n_cells=8", "replicates=2", "steps=600", "record_every=10",
    "chunk_records=10", "figures=false", "+params.hazard0=0.05", "+params.birth_rate=0.5",
]
KILL_RUN = SMALL + ["checkpoint_every=2"]  # 6 chunks of 100 steps; checkpoints after chunks 2, 4, 6


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        return compose(config_name="config", overrides=list(overrides))


def load(path) -> xr.Dataset:
    return xr.load_dataset(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of KILL_RUN (in-process), the yardstick for every resumed run."""
    out = tmp_path_factory.mktemp("reference")
    assert execute(compose_cfg(*KILL_RUN), out, quiet=True) == 0
    assert not (out / "checkpoint").exists()  # removed once the results hold everything
    return out


# ------------------------------------------------------------------------------ numerical guards


def _inject(monkeypatch, process: str, at_step: int, cell: int, species: int, value: float) -> None:
    """Register a biology substrate whose ``process`` writes ``value`` into one pool at one step."""

    def change(s):
        return replace(s, cells=replace(s.cells, pools=s.cells.pools.at[cell, species].set(value)))

    inject(monkeypatch, with_fault("bio", process, at_step, change))


@pytest.fixture
def clean_compiled():
    yield
    engine.clear_caches()


@pytest.mark.parametrize(
    "process, step, cell, species, value, name",
    [
        ("adenylate_kinase", 25, 3, ATP, float("nan"), "atp"),
        ("cell_stress", 39, 5, GLC, -1.0, "glucose"),  # a negative pool at the last step of a record
        ("transport", 31, 0, ATP, float("inf"), "atp"),
    ],
)
def test_bad_pool_stops_run_naming_step_cell_species_process(
    monkeypatch, clean_compiled, tmp_path, process, step, cell, species, value, name
):
    _inject(monkeypatch, process, step, cell, species, value)
    cfg = compose_cfg(*SMALL[:-2], "steps=100", "chunk_records=1", "checkpoint_every=1")  # chunks of 10 steps
    code = execute(cfg, tmp_path, quiet=True)
    assert code == EXIT_NUMERICAL
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert (summary["failure_step"], summary["failure_cell"], summary["failure_quantity"], summary["failure_process"]) == (
        step, cell, name, process
    )
    reason = summary["reason"]
    for part in (f"step {step}", f"cell {cell}", f"quantity {name}", f"process {process}"):
        assert part in reason, reason
    # everything computed before the bad chunk is kept: chunks end at steps 10, 20, ...
    good_chunks = step // 10
    ds = load(tmp_path / "results.nc")
    assert ds.sizes["time"] == good_chunks
    np.testing.assert_allclose(ds["time"].values, np.arange(1, good_chunks + 1) * 10 * 0.02)
    assert np.isfinite(ds["pools"].values).all() and (ds["pools"].values >= 0).all()
    assert summary["simulated_time_s"] == pytest.approx(good_chunks * 10 * 0.02)
    # the checkpoint of the failed run stays (for inspection); it holds the good chunks
    ck = checkpoint.load(tmp_path)
    assert ck.steps_done == good_chunks * 10


def test_params_override_that_makes_nan_is_named(monkeypatch, clean_compiled, tmp_path):
    """dG0 = nan is refused by the validation; with the validation bypassed (a test hook) the
    engine stops the run in its first step and names metabolism."""
    with pytest.raises(ConfigError) as info:
        sim.api.prepare(compose_cfg(*SMALL, "+params.dg0_kj=nan"))
    assert info.value.key == "params.dg0_kj"
    monkeypatch.setattr(VALIDATE, "validate", lambda cfg: None)
    code = execute(compose_cfg(*SMALL, "+params.dg0_kj=nan"), tmp_path, quiet=True)
    assert code == EXIT_NUMERICAL
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["failure_process"] == "metabolism" and summary["failure_step"] == 0
    assert summary["failure_cell"] == 0 and summary["failure_quantity"] in ("glucose", "atp", "adp", "pi")
    assert not (tmp_path / "results.nc").exists()  # the first chunk failed: nothing good to keep


def test_unstable_transport_is_stopped_naming_transport(monkeypatch, clean_compiled, tmp_path):
    """A deliberately unstable tissue (junction conductance far past the explicit-step limit) is
    refused by the validation; with the validation bypassed the engine stops it at the step where a
    pool goes negative and names transport, the cell and the species."""
    over = ("substrate.transport.conductance_per_s=40", "substrate.consumers.demand_cv=1.0")
    with pytest.raises(ConfigError) as info:
        sim.api.prepare(compose_cfg(*SMALL, *over))
    assert info.value.key == "dt"
    monkeypatch.setattr(VALIDATE, "check_stability", lambda model, cfg: None)
    code = execute(compose_cfg(*SMALL, *over), tmp_path, quiet=True)
    assert code == EXIT_NUMERICAL
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failure_process"] == "transport"
    assert summary["failure_quantity"] in ("glucose", "atp", "adp", "amp", "pi")
    assert 0 <= summary["failure_cell"] and 0 <= summary["failure_step"]


def test_unstable_dt_is_refused_before_compiling(monkeypatch, tmp_path):
    def no_compile(*a, **k):
        raise AssertionError("compiled an invalid config")

    monkeypatch.setattr(engine, "run", no_compile)
    code = execute(compose_cfg(*SMALL, "dt=10"), tmp_path, quiet=True)
    assert code == EXIT_CONFIG
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "invalid config: dt=10.0" in summary["reason"]


NUMERICAL_CHILD_CHANGE = """
def change(s):
    return replace(s, cells=replace(s.cells, pools=s.cells.pools.at[2, 1].set(jnp.nan)))
"""


def test_numerical_failure_exit_code_3_from_the_command_line(tmp_path):
    script = fault_child_script(tmp_path / "child.py", "bio", "transport", 25, NUMERICAL_CHILD_CHANGE)
    out = tmp_path / "run"
    res = run_child([str(script), *SMALL[:-2], "steps=100", "chunk_records=1", f"hydra.run.dir={out}"])
    assert res.returncode == EXIT_NUMERICAL, res.stderr
    assert "numerical failure at step 25, replicate 0, cell 2, quantity atp, process transport" in res.stderr
    assert "Traceback" not in res.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert load(out / "results.nc").sizes["time"] == 2


# ------------------------------------------------------------------------------ checkpoint / resume

KILL_WHILE_WRITING_CHECKPOINT = """
import os, signal, sys
import numpy as np
import sim.checkpoint as ck
from sim.io import atomic_path
original = ck._write_npz
writes = []
def write(path, arrays):
    if path.name == ck.STATE_FILE:
        writes.append(path)
        if len(writes) == 2:  # second checkpoint: its records file is written, state.npz half-way
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
                os.kill(os.getpid(), signal.SIGKILL)
    original(path, arrays)
ck._write_npz = write
from sim.app import entry
sys.argv = ["sim"] + sys.argv[1:]
entry()
"""


@pytest.mark.parametrize("child", [KILL_BETWEEN_CHECKPOINTS, KILL_WHILE_WRITING_CHECKPOINT], ids=["between", "mid-write"])
def test_sigkill_and_resume_is_bit_identical(tmp_path, reference, child):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(child))
    run_dir = tmp_path / "run"
    killed = run_child([str(script), *KILL_RUN, f"hydra.run.dir={run_dir}"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run_dir / "results.nc").exists()
    ck_dir = run_dir / "checkpoint"
    state = checkpoint.load(run_dir)  # (also clears the leftovers of an interrupted write)
    assert state.steps_done == 200 and state.n_chunks == 2  # the checkpoint after chunks 1-2
    assert sorted(p.name for p in ck_dir.iterdir()) == ["config.json", "records-0000000-0000002.npz", "state.npz"]

    resumed = run_child(["-m", "sim", f"resume={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_results(reference, run_dir)
    assert not ck_dir.exists()


def test_resume_in_process_and_of_a_finished_checkpoint(monkeypatch, tmp_path, reference):
    for stop_at, name in ((5, "mid"), (6, "end")):
        run_dir = tmp_path / name
        with monkeypatch.context() as m:
            _stop_after(m, stop_at)
            with pytest.raises(_Stop):
                execute(compose_cfg(*KILL_RUN), run_dir, quiet=True)
        assert checkpoint.load(run_dir).steps_done == (400 if stop_at == 5 else 600)
        # what a kill in the middle of writing results.nc or a figure leaves: temporaries, no half files
        leftovers = [run_dir / ".tmp-results.nc.k1ll3d", run_dir / "figures" / ".tmp-pools.png.k1ll3d"]
        for p in leftovers:
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"CDF\x01 half")
        assert resume_run(run_dir, quiet=True) == 0
        assert_same_results(reference, run_dir)
        assert not any(p.exists() for p in leftovers)


def test_resume_refusals(monkeypatch, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(_Stop):
            execute(compose_cfg(*KILL_RUN), run_dir, quiet=True)
    capsys.readouterr()

    def refused(path, overrides=None, key="resume"):
        assert resume_run(path, overrides, quiet=True) == EXIT_CONFIG
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: invalid config: {key}="), err

    refused(tmp_path / "nowhere")
    refused(tmp_path)  # a folder without a checkpoint
    refused(run_dir, {"steps": 1200}, key="steps")  # a resumed run keeps its config
    # a checkpoint that does not fit its model (the stored config was edited) is refused
    cfg_file = run_dir / "checkpoint" / "config.json"
    good = cfg_file.read_text()
    cfg = json.loads(good)
    cfg["topology"]["n_cells"] = 9
    cfg_file.write_text(json.dumps(cfg))
    assert resume_run(run_dir, quiet=True) == EXIT_CONFIG
    assert "a checkpoint of this model" in capsys.readouterr().err
    cfg_file.write_text(good)
    # a damaged state file is refused, never half-used
    state_file = run_dir / "checkpoint" / "state.npz"
    state_file.write_bytes(state_file.read_bytes()[:100])
    assert resume_run(run_dir, quiet=True) == EXIT_CONFIG
    assert "an intact checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------ atomic outputs


def test_every_file_of_a_run_folder_is_written_atomically(monkeypatch, clean_compiled, tmp_path):
    """All files (results, summary, figures, checkpoint) arrive by os.replace from a temporary
    next to them, never by writing in place: a run killed mid-write leaves no truncated file."""
    renamed = {}
    real_replace = os.replace

    def replace_spy(src, dst, *a, **k):
        renamed[Path(dst)] = Path(src)
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace_spy)
    _inject(monkeypatch, "transport", 45, 1, ATP, float("nan"))  # fail late: the checkpoint stays
    cfg = compose_cfg(*SMALL[:-3], "steps=100", "chunk_records=1", "checkpoint_every=1", "figures=true")
    assert execute(cfg, tmp_path, quiet=True) == EXIT_NUMERICAL
    files = {p for p in tmp_path.rglob("*") if p.is_file()}
    names = {str(p.relative_to(tmp_path)) for p in files}
    assert {"results.nc", "summary.json", "checkpoint/state.npz", "checkpoint/config.json"} <= names
    assert any(n.startswith("figures/") for n in names) and any(n.startswith("checkpoint/records-") for n in names)
    assert files <= set(renamed), files - set(renamed)
    for f in files:  # each came from a temporary next to it
        assert renamed[f].parent == f.parent and renamed[f].name.startswith(f".tmp-{f.name}.")
    assert not [n for n in names if ".tmp-" in n]


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"status": "ok", "n": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"status": "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"n": 1, "status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ------------------------------------------------------------------------------ determinism


def test_same_config_and_seed_give_identical_runs_and_chunking_does_not_matter(tmp_path, reference):
    a, b = tmp_path / "a", tmp_path / "b"
    assert execute(compose_cfg(*KILL_RUN), a, quiet=True) == 0
    assert_same_results(reference, a)  # same config, same seed: bit-identical
    assert execute(compose_cfg(*SMALL, "chunk_records=3"), b, quiet=True) == 0  # 20 chunks of 3 records
    ds_a, ds_b = load(a / "results.nc"), load(b / "results.nc")
    for name in ds_a.data_vars:
        assert np.array_equal(ds_a[name].values, ds_b[name].values), name
    c = tmp_path / "c"
    assert execute(compose_cfg(*SMALL, "seed=1"), c, quiet=True) == 0
    assert not np.array_equal(load(c / "results.nc")["failures"].values, ds_a["failures"].values)


@pytest.fixture(scope="module")
def batch_runs():
    cfg, _, model = sim.api.prepare(compose_cfg(*SMALL[:2], "topology.n_cells=4", "+params.hazard0=0.5", "+params.birth_rate=2.0"))
    kw = dict(seed=11, steps=200, record_every=10, chunk_records=20)
    big = engine.run(BIO, model.state, model.params, replicates=256, **kw)
    alone = {k: engine.run(BIO, model.state, model.params, replicates=1, first_replicate=k, **kw) for k in (0, 7, 255)}
    return big, alone


def test_replicate_alone_equals_replicate_in_batch_of_256(batch_runs):
    """Replicate k draws from fold_in(PRNGKey(seed), k): alone or in a batch, the same random
    events happen (failures, births, deaths) and the pools agree to round-off (the default fast
    reductions; bitwise with deterministic_reductions=true: tests/test_determinism.py)."""
    big, alone = batch_runs
    assert big.records["failures"][:, -1].sum() > 0 and big.records["births"][:, -1].sum() > 0
    for k, one in alone.items():
        for name in ("failures", "births", "alive", "n_producers"):
            assert np.array_equal(big.records[name][k], one.records[name][0]), (k, name)
        for name in BIO.record_fields:
            np.testing.assert_allclose(one.records[name][0], big.records[name][k], rtol=1e-12, atol=1e-15)
