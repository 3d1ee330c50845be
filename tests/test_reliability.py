"""Reliability, written once for every registered substrate (biology, LLM serving, generic), then
what only one substrate has.

For every substrate: a bad value stops the run naming step, replicate, compartment, quantity and
process, and what was computed before it is kept (results, summary, checkpoint), also from the
command line (exit 3); SIGKILL between checkpoints or in the middle of writing one, then
``python -m sim resume=DIR``, ends bit-identical to a run never interrupted, and so does an
in-process resume mid-run or of a finished checkpoint, over the temporaries a killed write leaves;
a resume refuses what it cannot continue, one line each; the same config and seed give the same run
however it is chunked, another seed another one; replicate k alone (``first_replicate=k``, through
the run path) is replicate k of a batch.

Biology only: a NaN parameter and an unstable transport are refused by the validation and, with
the validation bypassed, named by the guard; an unstable dt is refused before compiling; every file
of a run folder arrives atomically. LLM serving only: a KV cache booked without a chain holding it
is named by the chunk check; the experiments that are not plain runs refuse checkpoints.

Each substrate contributes a small stochastic run, its faults and a checkpoint edit (:data:`CASES`);
a substrate added to ``sim.substrates.BUILTIN`` without a case fails
:func:`test_every_builtin_substrate_has_a_case`. In-process runs go through ``sim.app.execute`` (the
job body of ``python -m sim``); the kill is deterministic (the child SIGKILLs itself at a chosen
point, never racing a timer).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import json
import os
import signal
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import sim  # noqa: F401  (float64)
import sim.api
from _support import KILL_AT_CHECKPOINT, KILL_BETWEEN_CHECKPOINTS, TISSUE, Stop, assert_same_results, inject
from _support import kill_at_checkpoint, run_child, run_entries, run_faulty_entries, stop_after_checkpoint, with_fault
from sim import checkpoint, substrates
from sim.app import EXIT_CONFIG, EXIT_NUMERICAL, execute, resume_run
from sim.core import engine
from sim.core.config import compose
from sim.errors import ConfigError, NumericalError
from sim.io import atomic_path, write_json
from sim.pytree import replace
from sim.substrates.bio.state import ATP, GLC

VALIDATE = importlib.import_module("sim.config.validate")


def _change(source: str):
    """``change(state) -> state`` from an expression of the state ``s``: a fault is written once, as
    source, so the command line's child process (:func:`_support.run_faulty_entries`) injects the
    very same program and loads its executable from the persistent compilation cache."""
    return eval("lambda s: " + source, {"jnp": jnp, "replace": replace})  # noqa: S307 (test-defined text)


def _pool(cell, species, value: str) -> str:  # biology: one pool of one cell
    return f"replace(s, cells=replace(s.cells, pools=s.cells.pools.at[{cell}, {species}].set({value})))"


def _kv_free(cell, value: str) -> str:  # LLM: the free KV cache of one model instance
    return f"replace(s, cells=replace(s.cells, kv_free=s.cells.kv_free.at[{cell}].set({value})))"


def _energy(cell, value: str) -> str:  # LLM: the energy ledger of one model instance goes back (and below zero)
    return f"replace(s, ledger=replace(s.ledger, energy_j=s.ledger.energy_j.at[{cell}].set({value})))"


def _charged(cell, value: str) -> str:  # generic: the charged currency of one cell
    return f"replace(s, cells=replace(s.cells, a=s.cells.a.at[{cell}].set({value})))"


@dataclasses.dataclass(frozen=True)
class Case:
    run: tuple  # a small stochastic run of 2 replicates, a record every 10 steps, figures off
    rechunked: int  # another chunk length dividing the records (the run must not depend on it)
    faults: tuple  # (process, step, cell, quantity, source of the change: an expression of the state s)
    cli: int  # the fault also injected through the command line
    kept: tuple  # dataset variables a failed run keeps finite and >= 0
    events: tuple  # summary keys of random events the run must show (the PRNG stream matters)
    counts: tuple  # records of random events (a batch of replicates must show them)
    batch: int  # replicates of the batch replicate k alone is compared with (k = 0, 7, batch - 1)
    edit: tuple  # (section, key, value) of checkpoint/config.json that no longer fits the checkpoint's state

    def value(self, key: str) -> int:
        return int(next(a for a in self.run if a.startswith(f"{key}=")).split("=")[1])

    @property
    def records(self) -> int:
        return self.value("steps") // 10

    @property
    def chunk_records(self) -> int:
        return self.value("chunk_records")

    @property
    def n_chunks(self) -> int:
        return self.records // self.chunk_records

    @property
    def chunk_steps(self) -> int:
        return 10 * self.chunk_records


CASES = {
    "bio": Case(
        run=(TISSUE, "topology=ring", "topology.n_cells=8", "replicates=2", "steps=600", "record_every=10",
             "chunk_records=10", "figures=false", "+params.hazard0=0.05", "+params.birth_rate=0.5"),
        rechunked=3,
        faults=(
            ("adenylate_kinase", 25, 3, "atp", _pool(3, ATP, "jnp.nan")),
            ("cell_stress", 39, 5, "glucose", _pool(5, GLC, "-1.0")),  # a negative pool at the last step of a record
            ("transport", 31, 0, "atp", _pool(0, ATP, "jnp.inf")),
        ),
        cli=2,
        kept=("pools",), events=("producer_failures", "producer_births"), counts=("failures", "births"), batch=256,
        edit=("topology", "n_cells", 9),
    ),
    # busy on purpose: Poisson arrivals above the stability limit (queues overflow, requests are dropped),
    # routing, tools, agent loops, agentic hops and a memory module all act
    "llm": Case(
        run=("experiment=serving", "topology=ring", "topology.n_cells=3", "replicates=2", "steps=400",
             "record_every=10", "chunk_records=5", "substrate.chain_slots=16", "substrate.queue_slots=32",
             "substrate.max_batch=12", "substrate.arrivals.rate_per_s=20", "substrate.tools.p_per_token=0.01",
             "substrate.agent.followup_prob=0.3", "substrate.agent.max_turns=3", "substrate.agent.hops=2",
             "substrate.memory.threshold_tokens=2000", "figures=false"),
        rechunked=4,
        faults=(
            ("admission", 52, 1, "energy_j", _energy(1, "-5.0")),
            ("decode", 33, 1, "kv_free", _kv_free(1, "jnp.nan")),
            ("finish", 25, 1, "kv_free", _kv_free(1, "jnp.inf")),
        ),
        cli=1,
        kept=("energy_j",), events=("dropped", "routed", "tool_calls", "memory_compressions"),
        counts=("dropped", "routed_out", "tool_calls", "compressions"), batch=32, edit=("substrate", "chain_slots", 8),
    ),
    "generic": Case(
        run=(TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4", "replicates=2", "steps=600",
             "record_every=10", "chunk_records=10", "figures=false"),
        rechunked=3,
        faults=(("transport", 33, 1, "a", _charged(1, "-1.0")),),
        cli=0,
        kept=("s", "a", "d"), events=("failures", "births"), counts=("failures", "births"), batch=256,
        edit=("topology", "n_cells", 9),
    ),
}
NAMES = sorted(CASES)


def kill_run(name) -> list:
    """The case's run with a checkpoint after every second chunk; results.nc in float64, so that
    "bit-identical" covers every bit of the records (the default float32 would round them)."""
    return [*CASES[name].run, "checkpoint_every=2", "output.float32=false"]


def fault_run(name) -> list:
    """100 steps in chunks of one record (10 steps), a checkpoint after each."""
    return [*CASES[name].run, "steps=100", "chunk_records=1", "checkpoint_every=1"]


def load(path) -> xr.Dataset:
    return xr.load_dataset(path)


def test_every_builtin_substrate_has_a_case():
    assert sorted(substrates.BUILTIN) == NAMES


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """name -> the run folder of an uninterrupted run of ``kill_run(name)`` (in-process, made once):
    the yardstick of every resumed run."""
    done = {}

    def get(name):
        if name not in done:
            out = tmp_path_factory.mktemp(f"reference-{name}")
            assert execute(compose(kill_run(name)), out, quiet=True) == 0
            assert not (out / "checkpoint").exists()  # removed once the results hold everything
            summary = json.loads((out / "summary.json").read_text())
            # the run exercises what the bit-identity is to cover
            assert all(summary[k] > 0 for k in CASES[name].events), {k: summary[k] for k in CASES[name].events}
            assert load(out / "results.nc").sizes["time"] == CASES[name].records
            done[name] = out
        return done[name]

    return get


@pytest.fixture
def clean_compiled():
    yield
    engine.clear_caches()


# ------------------------------------------------------------------------------ the numerical guard


def _named(name, fault) -> str:
    """How the guard names ``fault`` of substrate ``name`` (compartment "cell" goes unsaid)."""
    process, step, cell, quantity, _ = fault
    compartment = substrates.get(name).compartment
    where = f"cell {cell}" if compartment == "cell" else f"cell {cell} ({compartment})"
    return f"step {step}, replicate 0, {where}, quantity {quantity}, process {process}"


FAULTS = [pytest.param(name, fault, id=f"{name}-{fault[0]}-{fault[3]}") for name in NAMES for fault in CASES[name].faults]


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:All-NaN slice")  # (LLM: no completions yet)
@pytest.mark.parametrize("name, fault", FAULTS)
def test_a_bad_value_stops_the_run_naming_it_and_keeps_what_came_before(monkeypatch, clean_compiled, tmp_path,
                                                                          name, fault):
    process, step, cell, quantity, change = fault
    inject(monkeypatch, with_fault(name, process, step, _change(change)))
    cfg = compose(fault_run(name))
    assert execute(cfg, tmp_path, quiet=True) == EXIT_NUMERICAL
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    got = tuple(summary[f"failure_{k}"] for k in ("step", "replicate", "cell", "quantity", "process"))
    assert got == (step, 0, cell, quantity, process)
    assert _named(name, fault) in summary["reason"]
    # everything computed before the bad chunk is kept: chunks end at steps 10, 20, ...
    good, dt = step // 10, float(cfg["dt"])
    ds = load(tmp_path / "results.nc")
    assert ds.sizes["time"] == good
    np.testing.assert_allclose(ds["time"].values, np.arange(1, good + 1) * 10 * dt)
    for var in CASES[name].kept:
        assert np.isfinite(ds[var].values).all() and (ds[var].values >= 0).all(), var
    if not (name == "llm" and good < 3):  # (a serving summary fits a steady window: 3 records at least)
        assert summary.get("simulated_time_s", summary.get("simulated_time")) == pytest.approx(good * 10 * dt)
    # the checkpoint of the failed run stays (for inspection); it holds the good chunks
    assert checkpoint.load(tmp_path).steps_done == good * 10


@pytest.fixture(scope="module")
def cli_failures(tmp_path_factory):
    """{name: {code, stderr, folder}}: ``python -m sim`` of each substrate's fault run with its
    ``cli`` fault injected, all in one child process."""
    folder = tmp_path_factory.mktemp("cli_failures")
    cases = {}
    for name in NAMES:
        process, step, _, _, change = CASES[name].faults[CASES[name].cli]
        argv = [*fault_run(name), f"hydra.run.dir={folder / name}"]
        cases[name] = dict(substrate=name, process=process, at_step=step, change=change, argv=argv)
    got = run_faulty_entries(cases, folder)
    return {name: dict(got[name], folder=folder / name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_a_numerical_failure_exits_3_from_the_command_line(cli_failures, name):
    got, fault = cli_failures[name], CASES[name].faults[CASES[name].cli]
    assert got["code"] == EXIT_NUMERICAL, got["stderr"][-2000:]
    assert f"numerical failure at {_named(name, fault)}" in got["stderr"], got["stderr"]
    assert "Traceback" not in got["stderr"]
    summary = json.loads((got["folder"] / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failure_process"] == fault[0]
    assert load(got["folder"] / "results.nc").sizes["time"] == fault[1] // 10


# ------------------------------------------------------------------------------ kill and resume

KILLS = [("bio", "between"), ("bio", "mid-write"), ("llm", "between")]  # (other kill points: test_kill_resume_property.py)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, reference):
    """(name, phase) -> what a SIGKILLed ``python -m sim`` left (checked before resuming), its run
    folder and the exit code of ``python -m sim resume=DIR`` (every resume in one child process).
    ``between``: the child kills itself after chunk 3, whose checkpoint is not due; ``mid-write``:
    while writing its second checkpoint's state (its records file written, state.npz half-way)."""
    folder = tmp_path_factory.mktemp("killed")
    for name in {n for n, _ in KILLS}:
        reference(name)
    between = folder / "between.py"
    between.write_text(textwrap.dedent(KILL_BETWEEN_CHECKPOINTS))
    mid_write = folder / "mid-write.py"
    mid_write.write_text(KILL_AT_CHECKPOINT)

    def kill(case):
        name, phase = case
        run_dir = folder / f"{name}-{phase}"
        if phase == "between":
            res = run_child([str(between), *kill_run(name), f"hydra.run.dir={run_dir}"])
        else:
            res = kill_at_checkpoint(mid_write, kill_run(name), run_dir, 2, "mid-write")
        return case, run_dir, res

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        runs = list(pool.map(kill, KILLS))
    out = {}
    for case, run_dir, res in runs:
        state = checkpoint.load(run_dir)  # (also clears the leftovers of an interrupted write)
        out[case] = dict(
            run_dir=run_dir, returncode=res.returncode, stderr=res.stderr, results=(run_dir / "results.nc").exists(),
            steps_done=state.steps_done, n_chunks=state.n_chunks, config=state.config,
            shapes={k: np.shape(v) for k, v in state.records.items()},
            files=sorted(p.name for p in (run_dir / "checkpoint").iterdir()),
        )
    resumed = run_entries({f"{n}-{p}": [f"resume={out[(n, p)]['run_dir']}"] for n, p in KILLS}, folder, timeout=600)
    for (n, p), facts in out.items():
        facts["resumed"] = resumed[f"{n}-{p}"]
    return out


@pytest.mark.parametrize("name, phase", KILLS, ids=[f"{n}-{p}" for n, p in KILLS])
def test_sigkill_then_resume_from_the_command_line_is_bit_identical(killed, reference, name, phase):
    k, case = killed[(name, phase)], CASES[name]
    assert k["returncode"] == -signal.SIGKILL, k["stderr"][-2000:]
    assert not k["results"]
    # the checkpoint after chunks 1-2 (of 2 replicates, 2 chunks of records, every cell)
    assert (k["steps_done"], k["n_chunks"]) == (2 * case.chunk_steps, 2)
    kind = "serving" if name == "llm" else "tissue"
    assert k["config"]["substrate"]["name"] == name and k["config"]["experiment"]["kind"] == kind
    n_cells = case.value("topology.n_cells")
    assert all(s[:3] == (2, 2 * case.chunk_records, n_cells) for s in k["shapes"].values()), k["shapes"]
    assert k["files"] == ["config.json", "records-0000000-0000002.npz", "state.npz"]
    assert k["resumed"]["code"] == 0, k["resumed"]["stderr"][-2000:]
    assert_same_results(reference(name), k["run_dir"])
    assert not (k["run_dir"] / "checkpoint").exists()


@pytest.mark.parametrize("name", NAMES)
def test_resume_in_process_mid_run_and_of_a_finished_checkpoint(monkeypatch, tmp_path, reference, name):
    case = CASES[name]
    for stop_at, label in ((case.n_chunks - 1, "mid"), (case.n_chunks, "end")):
        run_dir = tmp_path / label
        with monkeypatch.context() as m:
            stop_after_checkpoint(m, stop_at)
            with pytest.raises(Stop):
                execute(compose(kill_run(name)), run_dir, quiet=True)
        assert checkpoint.load(run_dir).steps_done == (stop_at - stop_at % 2) * case.chunk_steps
        # what a kill in the middle of writing results.nc or a figure leaves: temporaries, no half files
        leftovers = [run_dir / ".tmp-results.nc.k1ll3d", run_dir / "figures" / ".tmp-pools.png.k1ll3d"]
        for p in leftovers:
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"CDF\x01 half")
        assert resume_run(run_dir, quiet=True) == 0
        assert_same_results(reference(name), run_dir)
        assert not any(p.exists() for p in leftovers)


@pytest.mark.parametrize("name", NAMES)
def test_resume_refusals(monkeypatch, tmp_path, capsys, name):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, 2)
        with pytest.raises(Stop):
            execute(compose(kill_run(name)), run_dir, quiet=True)
    capsys.readouterr()

    def refused(path, overrides=None, key="resume", why=""):
        assert resume_run(path, overrides, quiet=True) == EXIT_CONFIG
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: invalid config: {key}=") and why in err[0], err

    refused(tmp_path / "nowhere")
    refused(tmp_path)  # a folder without a checkpoint
    refused(run_dir, {"steps": 10 * CASES[name].records * 2}, key="steps")  # a resumed run keeps its config
    # a checkpoint that does not fit its model (the stored config was edited) is refused
    cfg_file = run_dir / "checkpoint" / "config.json"
    good = cfg_file.read_text()
    cfg = json.loads(good)
    section, key, value = CASES[name].edit
    cfg[section][key] = value
    cfg_file.write_text(json.dumps(cfg))
    refused(run_dir, why="a checkpoint of this model")
    cfg_file.write_text(good)
    # a damaged state file is refused, never half-used
    state_file = run_dir / "checkpoint" / "state.npz"
    state_file.write_bytes(state_file.read_bytes()[:100])
    refused(run_dir, why="an intact checkpoint")


# ------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", NAMES)
def test_same_config_and_seed_give_the_same_run_however_it_is_chunked(tmp_path, reference, name):
    case = CASES[name]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert execute(compose(kill_run(name)), a, quiet=True) == 0
    assert_same_results(reference(name), a)  # same config, same seed: bit-identical
    assert execute(compose([*case.run, f"chunk_records={case.rechunked}", "output.float32=false"]), b, quiet=True) == 0
    ds_a, ds_b = load(a / "results.nc"), load(b / "results.nc")
    for var in ds_a.data_vars:
        x, y = ds_a[var].values, ds_b[var].values
        assert np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.floating)), var
    assert execute(compose([*case.run, "seed=1"]), c, quiet=True) == 0
    sa, sc = (json.loads((p / "summary.json").read_text()) for p in (a, c))
    assert any(sa[k] != sc[k] for k in case.events)


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:All-NaN slice")  # (LLM: few completions alone)
@pytest.mark.parametrize("name", NAMES)
def test_replicate_alone_is_the_replicate_of_a_batch(name):
    """Replicate k draws from fold_in(PRNGKey(seed), k): run alone through the run path
    (``replicates=1 first_replicate=k``) or in a batch (256 replicates; 32 of LLM serving), the same
    random events happen and every record agrees, integers exactly, the rest to round-off (the
    default fast reductions; bitwise with deterministic_reductions=true: tests/test_determinism.py)."""
    sub, n = substrates.get(name), CASES[name].batch
    over = [*CASES[name].run, "seed=11", "steps=200", "chunk_records=20", "checkpoint_every=0"]
    _, _, built = sim.api.prepare(compose(over))
    big = engine.run(sub, built.state, built.params, seed=11, steps=200, record_every=10, chunk_records=20,
                     replicates=n)
    assert all(big.records[k][:, -1].sum() > 0 for k in CASES[name].counts)  # random events happen
    for k in (0, 7, n - 1):
        alone = sim.api.run(compose([*over, "replicates=1", f"first_replicate={k}"]))
        assert alone.summary["status"] == "ok" and list(alone.dataset["replicate"].values) == [k]
        one = alone.result.records
        assert one.keys() == big.records.keys()
        for field, values in big.records.items():
            x, y = np.asarray(one[field][0]), np.asarray(values[k])
            if np.issubdtype(x.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15, err_msg=f"{name}: {field}, replicate {k}")
            else:
                assert np.array_equal(x, y), (name, field, k)
    assert not all(np.array_equal(big.records[f][0], big.records[f][7]) for f in big.records)


# ------------------------------------------------------------------------------ biology only


def _bio_small(*extra) -> dict:
    return compose([*CASES["bio"].run, *extra])


def test_bio_nan_parameter_is_refused_and_named_by_the_guard_when_let_through(monkeypatch, clean_compiled, tmp_path):
    """dG0 = nan is refused by the validation; with the validation bypassed (a test hook) the
    engine stops the run in its first step and names metabolism."""
    with pytest.raises(ConfigError) as info:
        sim.api.prepare(_bio_small("+params.dg0_kj=nan"))
    assert info.value.key == "params.dg0_kj"
    monkeypatch.setattr(VALIDATE, "validate", lambda cfg: None)
    assert execute(_bio_small("+params.dg0_kj=nan"), tmp_path, quiet=True) == EXIT_NUMERICAL
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["failure_process"] == "metabolism" and summary["failure_step"] == 0
    assert summary["failure_cell"] == 0 and summary["failure_quantity"] in ("glucose", "atp", "adp", "pi")
    assert not (tmp_path / "results.nc").exists()  # the first chunk failed: nothing good to keep


def test_bio_unstable_transport_is_refused_and_named_by_the_guard_when_let_through(monkeypatch, clean_compiled,
                                                                                    tmp_path):
    """A deliberately unstable tissue (junction conductance far past the explicit-step limit) is
    refused by the validation; with the validation bypassed the engine stops it at the step where a
    pool goes negative and names transport, the cell and the species."""
    over = ("substrate.transport.conductance_per_s=40", "substrate.consumers.demand_cv=1.0")
    with pytest.raises(ConfigError) as info:
        sim.api.prepare(_bio_small(*over))
    assert info.value.key == "dt"
    monkeypatch.setattr(VALIDATE, "check_stability", lambda model, cfg: None)
    assert execute(_bio_small(*over), tmp_path, quiet=True) == EXIT_NUMERICAL
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failure_process"] == "transport"
    assert summary["failure_quantity"] in ("glucose", "atp", "adp", "amp", "pi")
    assert 0 <= summary["failure_cell"] and 0 <= summary["failure_step"]


def test_bio_unstable_dt_is_refused_before_compiling(monkeypatch, tmp_path):
    def no_compile(*a, **k):
        raise AssertionError("compiled an invalid config")

    monkeypatch.setattr(engine, "run", no_compile)
    assert execute(_bio_small("dt=10"), tmp_path, quiet=True) == EXIT_CONFIG
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "invalid config: dt=10.0" in summary["reason"]


def test_every_file_of_a_run_folder_is_written_atomically(monkeypatch, clean_compiled, tmp_path):
    """All files (results, summary, figures, checkpoint) arrive by os.replace from a temporary
    next to them, never by writing in place: a run killed mid-write leaves no truncated file."""
    renamed = {}
    real_replace = os.replace

    def replace_spy(src, dst, *a, **k):
        renamed[Path(dst)] = Path(src)
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace_spy)
    process, step, _, _, change = CASES["bio"].faults[2]  # (fails after 3 chunks: the checkpoint stays)
    inject(monkeypatch, with_fault("bio", process, step, _change(change)))
    cfg = compose([*fault_run("bio"), "figures=true"])
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


# ------------------------------------------------------------------------------ LLM serving only


def test_llm_chunk_check_names_the_kv_balance(monkeypatch, clean_compiled):
    """A process that books KV without a chain holding it (occupied + free != capacity, both still
    finite and >= 0) is named too, with the imbalance as the value."""
    from sim.substrates.llm.build import build_llm

    def leak(s):
        return replace(s, cells=replace(s.cells, kv_free=s.cells.kv_free.at[0].add(-100.0)))

    inject(monkeypatch, with_fault("llm", "tools", 14, leak))
    llm = build_llm(compose(fault_run("llm")))
    res = engine.run(substrates.get("llm"), llm.state, llm.params, seed=llm.seed, steps=100, record_every=10,
                     replicates=2, chunk_records=1)
    err = res.error
    assert isinstance(err, NumericalError) and err.compartment == "model instance"
    assert (err.step, err.cell, err.quantity, err.process) == (14, 0, "kv_balance", "tools")
    assert err.value == pytest.approx(-100.0, abs=1e-6)
    assert res.steps_done == 10 and res.records["kv_free"].shape == (2, 1, 3)


def test_llm_experiments_that_are_not_plain_runs_refuse_checkpoints():
    for kind in ("roofline", "cascade"):
        for key, value in (("checkpoint_every", 2), ("resume", "/tmp/somewhere")):
            cfg = compose([f"experiment={kind}", f"{key}={value}"])
            with pytest.raises(ConfigError) as info:
                sim.api.run(cfg)
            assert info.value.key == key and "only tissue, serving runs checkpoint and resume" in str(info.value)
